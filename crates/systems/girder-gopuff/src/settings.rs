//! GoPuff's settings: the `[gopuff]` table, `--gopuff-*` flags and `GIRDER_GOPUFF_*`
//! variables, resolved to a validated [`GoPuffConfig`].

use girder_system::SettingsError;
use serde::{Deserialize, Serialize};

use crate::{GoPuffConfig, Strategy};

/// GoPuff's settings as given; unset fields take the defaults.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "GoPuff")]
#[serde(deny_unknown_fields)]
pub struct GoPuffSettings {
    /// How orders that name no strategy avoid overselling: `row_lock` (`SELECT … FOR
    /// UPDATE`) or `optimistic` (version check and retry) [default: row_lock].
    #[arg(long, env = "GIRDER_GOPUFF_STRATEGY", value_enum)]
    #[serde(rename = "strategy", skip_serializing_if = "Option::is_none")]
    pub gopuff_strategy: Option<Strategy>,
    /// How long cached availability answers stay fresh, in ms (1–3,600,000); without
    /// Redis, the staleness bound across instances [default: 2000].
    #[arg(long, env = "GIRDER_GOPUFF_AVAILABILITY_TTL_MS")]
    #[serde(rename = "availability_ttl_ms", skip_serializing_if = "Option::is_none")]
    pub gopuff_availability_ttl_ms: Option<u64>,
}

impl GoPuffSettings {
    /// Applies the defaults and checks every bound.
    ///
    /// # Errors
    /// A value out of range, named as in the TOML file.
    pub fn resolve(self) -> Result<GoPuffConfig, SettingsError> {
        let defaults = GoPuffConfig::new();
        let availability_ttl_ms =
            self.gopuff_availability_ttl_ms.unwrap_or(defaults.availability_ttl_ms);
        if !(1..=3_600_000).contains(&availability_ttl_ms) {
            return Err(SettingsError::invalid(
                "gopuff.availability_ttl_ms",
                format!("must be 1..=3600000, got {availability_ttl_ms}"),
            ));
        }
        Ok(GoPuffConfig {
            default_strategy: self.gopuff_strategy.unwrap_or(defaults.default_strategy),
            availability_ttl_ms,
            ..defaults
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let config = GoPuffSettings::default().resolve().expect("valid");
        assert_eq!(config.default_strategy, Strategy::RowLock);
        assert_eq!(config.availability_ttl_ms, 2_000);
        let err = GoPuffSettings { gopuff_availability_ttl_ms: Some(0), ..Default::default() }
            .resolve()
            .expect_err("zero");
        assert!(err.to_string().contains("gopuff.availability_ttl_ms"), "{err}");
        let parsed: GoPuffSettings = toml::from_str("strategy = \"optimistic\"").expect("parses");
        assert_eq!(parsed.gopuff_strategy, Some(Strategy::Optimistic));
        assert!(toml::from_str::<GoPuffSettings>("strategy = \"pray\"").is_err());
    }
}
