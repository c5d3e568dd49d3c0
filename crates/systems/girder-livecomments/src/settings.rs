//! Live Comments' settings: the `[livecomments]` table, `--livecomments-*` flags and
//! `GIRDER_LIVECOMMENTS_*` variables, resolved to a validated [`LiveCommentsConfig`].

use girder_system::SettingsError;
use serde::{Deserialize, Serialize};

use crate::LiveCommentsConfig;

/// Live Comments' settings as given; unset fields take the defaults.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Live Comments")]
#[serde(deny_unknown_fields)]
pub struct LiveCommentsSettings {
    /// Comments per video kept in memory for viewers who reconnect (0–100,000)
    /// [default: 1000].
    #[arg(long, env = "GIRDER_LIVECOMMENTS_HISTORY")]
    #[serde(rename = "history", skip_serializing_if = "Option::is_none")]
    pub livecomments_history: Option<usize>,
    /// How long a viewer counts as watching after their connection's last beat, in
    /// ms (1,000–600,000) [default: 30000].
    #[arg(long, env = "GIRDER_LIVECOMMENTS_PRESENCE_TTL_MS")]
    #[serde(rename = "presence_ttl_ms", skip_serializing_if = "Option::is_none")]
    pub livecomments_presence_ttl_ms: Option<u64>,
}

impl LiveCommentsSettings {
    /// Applies the defaults and checks every bound.
    ///
    /// # Errors
    /// A value out of range, named as in the TOML file.
    pub fn resolve(self) -> Result<LiveCommentsConfig, SettingsError> {
        let d = LiveCommentsConfig::new();
        let history = self.livecomments_history.unwrap_or(d.history);
        if history > 100_000 {
            return Err(SettingsError::invalid(
                "livecomments.history",
                format!("{history} is more than 100000"),
            ));
        }
        let presence_ttl_ms = self.livecomments_presence_ttl_ms.unwrap_or(d.presence_ttl_ms);
        if !(1_000..=600_000).contains(&presence_ttl_ms) {
            return Err(SettingsError::invalid(
                "livecomments.presence_ttl_ms",
                format!("{presence_ttl_ms} is not in 1000..=600000"),
            ));
        }
        Ok(LiveCommentsConfig { history, presence_ttl_ms, ..d })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let c = LiveCommentsSettings::default().resolve().unwrap();
        assert_eq!((c.history, c.presence_ttl_ms), (1_000, 30_000));
        assert!(
            LiveCommentsSettings { livecomments_history: Some(100_001), ..Default::default() }
                .resolve()
                .is_err()
        );
        assert!(
            LiveCommentsSettings { livecomments_presence_ttl_ms: Some(10), ..Default::default() }
                .resolve()
                .is_err()
        );
    }
}
