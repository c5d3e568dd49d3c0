//! Top-K's settings: the `[topk]` table, `--topk-*` flags and `GIRDER_TOPK_*`
//! variables, resolved to a validated [`TopKConfig`].

use girder_system::SettingsError;
use serde::{Deserialize, Serialize};

use crate::TopKConfig;

/// Top-K's settings as given; unset fields take the defaults.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "YouTube Top-K")]
#[serde(deny_unknown_fields)]
pub struct TopKSettings {
    /// Partitions of this instance's view log, each counted by its own runner (1–64;
    /// fixed when the log is first created) [default: 2].
    #[arg(long, env = "GIRDER_TOPK_PARTITIONS")]
    #[serde(rename = "partitions", skip_serializing_if = "Option::is_none")]
    pub topk_partitions: Option<u32>,
    /// How often each partition commits its counts and checkpoint, in ms (10–60,000):
    /// how far the live minute trails the views [default: 1000].
    #[arg(long, env = "GIRDER_TOPK_CHECKPOINT_MS")]
    #[serde(rename = "checkpoint_ms", skip_serializing_if = "Option::is_none")]
    pub topk_checkpoint_ms: Option<u64>,
    /// How far behind the newest view the watermark trails, in ms (0–60,000)
    /// [default: 5000].
    #[arg(long, env = "GIRDER_TOPK_OUT_OF_ORDERNESS_MS")]
    #[serde(rename = "out_of_orderness_ms", skip_serializing_if = "Option::is_none")]
    pub topk_out_of_orderness_ms: Option<i64>,
    /// How long a closed minute still takes late views, in ms (0–3,600,000)
    /// [default: 60000].
    #[arg(long, env = "GIRDER_TOPK_ALLOWED_LATENESS_MS")]
    #[serde(rename = "allowed_lateness_ms", skip_serializing_if = "Option::is_none")]
    pub topk_allowed_lateness_ms: Option<i64>,
    /// How far ahead of this instance's clock a view's time may be, in ms (0–60,000)
    /// [default: 2000].
    #[arg(long, env = "GIRDER_TOPK_FUTURE_MS_MAX")]
    #[serde(rename = "future_ms_max", skip_serializing_if = "Option::is_none")]
    pub topk_future_ms_max: Option<i64>,
    /// Video-minute counts each partition holds open at once (1,000–10,000,000);
    /// views beyond it are refused and counted [default: 1000000].
    #[arg(long, env = "GIRDER_TOPK_SLOTS_MAX")]
    #[serde(rename = "slots_max", skip_serializing_if = "Option::is_none")]
    pub topk_slots_max: Option<usize>,
    /// Minutes of per-minute counts kept (1,440–525,600); all-time totals are kept
    /// forever [default: 2880].
    #[arg(long, env = "GIRDER_TOPK_RETENTION_MINUTES")]
    #[serde(rename = "retention_minutes", skip_serializing_if = "Option::is_none")]
    pub topk_retention_minutes: Option<i64>,
}

impl TopKSettings {
    /// Applies the defaults and checks every bound.
    ///
    /// # Errors
    /// A value out of range, named as in the TOML file.
    pub fn resolve(self) -> Result<TopKConfig, SettingsError> {
        let d = TopKConfig::new();
        let partitions = self.topk_partitions.unwrap_or(d.partitions);
        SettingsError::check_range("topk.partitions", i64::from(partitions), 1, 64)?;
        let checkpoint_ms = self.topk_checkpoint_ms.unwrap_or(d.checkpoint_ms);
        SettingsError::check_range(
            "topk.checkpoint_ms",
            i64::try_from(checkpoint_ms).unwrap_or(i64::MAX),
            10,
            60_000,
        )?;
        let out_of_orderness_ms = self.topk_out_of_orderness_ms.unwrap_or(d.out_of_orderness_ms);
        SettingsError::check_range("topk.out_of_orderness_ms", out_of_orderness_ms, 0, 60_000)?;
        let allowed_lateness_ms = self.topk_allowed_lateness_ms.unwrap_or(d.allowed_lateness_ms);
        SettingsError::check_range("topk.allowed_lateness_ms", allowed_lateness_ms, 0, 3_600_000)?;
        let future_ms_max = self.topk_future_ms_max.unwrap_or(d.future_ms_max);
        SettingsError::check_range("topk.future_ms_max", future_ms_max, 0, 60_000)?;
        let slots_max = self.topk_slots_max.unwrap_or(d.slots_max);
        SettingsError::check_range(
            "topk.slots_max",
            i64::try_from(slots_max).unwrap_or(i64::MAX),
            1_000,
            10_000_000,
        )?;
        let retention_minutes = self.topk_retention_minutes.unwrap_or(d.retention_minutes);
        SettingsError::check_range("topk.retention_minutes", retention_minutes, 1_440, 525_600)?;
        Ok(TopKConfig {
            partitions,
            checkpoint_ms,
            out_of_orderness_ms,
            allowed_lateness_ms,
            future_ms_max,
            slots_max,
            retention_minutes,
            ..d
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let config = TopKSettings::default().resolve().expect("valid");
        assert_eq!(config.partitions, 2);
        assert_eq!(config.allowed_lateness_ms, 60_000);
        for (settings, name) in [
            (TopKSettings { topk_partitions: Some(0), ..Default::default() }, "topk.partitions"),
            (
                TopKSettings { topk_checkpoint_ms: Some(5), ..Default::default() },
                "topk.checkpoint_ms",
            ),
            (
                TopKSettings { topk_future_ms_max: Some(-1), ..Default::default() },
                "topk.future_ms_max",
            ),
            (
                TopKSettings { topk_retention_minutes: Some(60), ..Default::default() },
                "topk.retention_minutes",
            ),
        ] {
            let err = settings.resolve().expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
        }
        let parsed: TopKSettings =
            toml::from_str("partitions = 4\ncheckpoint_ms = 250").expect("parses");
        assert_eq!(parsed.topk_partitions, Some(4));
        assert!(toml::from_str::<TopKSettings>("partition = 1").is_err());
    }
}
