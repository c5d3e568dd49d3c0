//! Ad Click Aggregator's settings: the `[adclicks]` table, `--adclicks-*` flags and
//! `GIRDER_ADCLICKS_*` variables, resolved to a validated [`AdClicksConfig`].

use girder_system::SettingsError;
use serde::{Deserialize, Serialize};

use crate::AdClicksConfig;

/// Ad Click Aggregator's settings as given; unset fields take the defaults.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Ad Click Aggregator")]
#[serde(deny_unknown_fields)]
pub struct AdClicksSettings {
    /// Partitions of this instance's click log (1–64); fixed once the log exists
    /// [default: 4].
    #[arg(long, env = "GIRDER_ADCLICKS_PARTITIONS")]
    #[serde(rename = "partitions", skip_serializing_if = "Option::is_none")]
    pub adclicks_partitions: Option<u32>,
    /// How long after its end a minute still takes late clicks, in ms (0–3,600,000)
    /// [default: 60000].
    #[arg(long, env = "GIRDER_ADCLICKS_ALLOWED_LATENESS_MS")]
    #[serde(rename = "allowed_lateness_ms", skip_serializing_if = "Option::is_none")]
    pub adclicks_allowed_lateness_ms: Option<i64>,
    /// How often reconciliation recomputes the last hour's closed minutes from the raw
    /// clicks, in ms (1,000–86,400,000) [default: 60000].
    #[arg(long, env = "GIRDER_ADCLICKS_RECONCILE_INTERVAL_MS")]
    #[serde(rename = "reconcile_interval_ms", skip_serializing_if = "Option::is_none")]
    pub adclicks_reconcile_interval_ms: Option<u64>,
    /// How long an impression can be clicked and counted, in ms (60,000–2,592,000,000)
    /// [default: 86400000].
    #[arg(long, env = "GIRDER_ADCLICKS_IMPRESSION_TTL_MS")]
    #[serde(rename = "impression_ttl_ms", skip_serializing_if = "Option::is_none")]
    pub adclicks_impression_ttl_ms: Option<i64>,
}

impl AdClicksSettings {
    /// Applies the defaults and checks every bound.
    ///
    /// # Errors
    /// A value out of range, named as in the TOML file.
    pub fn resolve(self) -> Result<AdClicksConfig, SettingsError> {
        let d = AdClicksConfig::new();
        let partitions = self.adclicks_partitions.unwrap_or(d.partitions);
        SettingsError::check_range("adclicks.partitions", i64::from(partitions), 1, 64)?;
        let allowed_lateness_ms =
            self.adclicks_allowed_lateness_ms.unwrap_or(d.allowed_lateness_ms);
        SettingsError::check_range(
            "adclicks.allowed_lateness_ms",
            allowed_lateness_ms,
            0,
            3_600_000,
        )?;
        let reconcile_interval_ms =
            self.adclicks_reconcile_interval_ms.unwrap_or(d.reconcile_interval_ms);
        SettingsError::check_range(
            "adclicks.reconcile_interval_ms",
            reconcile_interval_ms as i64,
            1_000,
            86_400_000,
        )?;
        let impression_ttl_ms = self.adclicks_impression_ttl_ms.unwrap_or(d.impression_ttl_ms);
        SettingsError::check_range(
            "adclicks.impression_ttl_ms",
            impression_ttl_ms,
            60_000,
            2_592_000_000,
        )?;
        Ok(AdClicksConfig {
            partitions,
            allowed_lateness_ms,
            reconcile_interval_ms,
            impression_ttl_ms,
            ..d
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let c = AdClicksSettings::default().resolve().unwrap();
        assert_eq!((c.partitions, c.allowed_lateness_ms), (4, 60_000));
        for bad in [
            AdClicksSettings { adclicks_partitions: Some(0), ..Default::default() },
            AdClicksSettings { adclicks_partitions: Some(65), ..Default::default() },
            AdClicksSettings { adclicks_allowed_lateness_ms: Some(-1), ..Default::default() },
            AdClicksSettings { adclicks_reconcile_interval_ms: Some(10), ..Default::default() },
            AdClicksSettings { adclicks_impression_ttl_ms: Some(1), ..Default::default() },
        ] {
            assert!(bad.resolve().is_err());
        }
    }
}
