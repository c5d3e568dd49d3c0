//! The Distributed Rate Limiter's settings: the `[ratelimiter]` table,
//! `--ratelimiter-*` flags and `GIRDER_RATELIMITER_*` variables.

use std::path::PathBuf;

use girder_system::SettingsError;
use serde::{Deserialize, Serialize};

use crate::RateLimiterConfig;

/// The service's settings as given; unset fields take the defaults.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Distributed Rate Limiter")]
#[serde(deny_unknown_fields)]
pub struct RateLimiterSettings {
    /// Rules the service starts with, a TOML file; SIGHUP reloads it [default: none,
    /// rules are added through the API].
    #[arg(long, env = "GIRDER_RATELIMITER_RULES")]
    #[serde(rename = "rules", skip_serializing_if = "Option::is_none")]
    pub ratelimiter_rules: Option<PathBuf>,
    /// The prefix of the service's Redis keys (its budgets and its shared rule edits);
    /// instances with the same prefix share both, 1–64 bytes without spaces
    /// [default: girder:rl:svc:].
    #[arg(long, env = "GIRDER_RATELIMITER_KEY_PREFIX")]
    #[serde(rename = "key_prefix", skip_serializing_if = "Option::is_none")]
    pub ratelimiter_key_prefix: Option<String>,
}

impl RateLimiterSettings {
    /// Applies the defaults and checks every bound; the service shares its state
    /// through `redis_url` when there is one.
    ///
    /// # Errors
    /// A value out of range, named as in the TOML file.
    pub fn resolve(self, redis_url: Option<String>) -> Result<RateLimiterConfig, SettingsError> {
        let defaults = RateLimiterConfig::default();
        let key_prefix = self.ratelimiter_key_prefix.unwrap_or(defaults.key_prefix);
        if key_prefix.is_empty()
            || key_prefix.len() > 64
            || key_prefix.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(SettingsError::invalid(
                "ratelimiter.key_prefix",
                format!("must be 1 to 64 bytes without spaces, got {key_prefix:?}"),
            ));
        }
        Ok(RateLimiterConfig { rules_path: self.ratelimiter_rules, redis_url, key_prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefix_bounds() {
        assert_eq!(
            RateLimiterSettings::default().resolve(None).expect("valid").key_prefix,
            "girder:rl:svc:"
        );
        for bad in ["", "a b", &"x".repeat(65)] {
            let settings = RateLimiterSettings {
                ratelimiter_key_prefix: Some(bad.to_owned()),
                ..Default::default()
            };
            let err = settings.resolve(None).expect_err("invalid").to_string();
            assert!(err.contains("ratelimiter.key_prefix"), "{err}");
        }
    }
}
