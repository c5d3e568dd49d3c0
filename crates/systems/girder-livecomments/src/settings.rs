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
    /// How long the comments feed waits between polls of the comments table, in ms
    /// (10–5,000): how late another instance's comment reaches this instance's
    /// viewers (this instance's own comments go out at once) [default: 150].
    #[arg(long, env = "GIRDER_LIVECOMMENTS_FEED_POLL_MS")]
    #[serde(rename = "feed_poll_ms", skip_serializing_if = "Option::is_none")]
    pub livecomments_feed_poll_ms: Option<u64>,
    /// How long another instance's comments feed may go unread before it is
    /// dropped (on PostgreSQL, its replication slot, which holds WAL until then), in
    /// ms (60,000–2,592,000,000) [default: 3600000, an hour].
    #[arg(long, env = "GIRDER_LIVECOMMENTS_FEED_STALE_MS")]
    #[serde(rename = "feed_stale_ms", skip_serializing_if = "Option::is_none")]
    pub livecomments_feed_stale_ms: Option<u64>,
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
        let mut feed = d.feed.clone();
        feed.poll_interval_ms = self.livecomments_feed_poll_ms.unwrap_or(feed.poll_interval_ms);
        SettingsError::check_range(
            "livecomments.feed_poll_ms",
            i64::try_from(feed.poll_interval_ms).unwrap_or(i64::MAX),
            10,
            5_000,
        )?;
        feed.stale_ms = self.livecomments_feed_stale_ms.unwrap_or(feed.stale_ms);
        SettingsError::check_range(
            "livecomments.feed_stale_ms",
            i64::try_from(feed.stale_ms).unwrap_or(i64::MAX),
            60_000,
            2_592_000_000,
        )?;
        Ok(LiveCommentsConfig { history, presence_ttl_ms, feed, ..d })
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
        assert_eq!((c.feed.poll_interval_ms, c.feed.stale_ms), (150, 3_600_000));
        let feed = |poll: u64, stale: u64| {
            LiveCommentsSettings {
                livecomments_feed_poll_ms: Some(poll),
                livecomments_feed_stale_ms: Some(stale),
                ..Default::default()
            }
            .resolve()
            .map(|c| (c.feed.poll_interval_ms, c.feed.stale_ms))
            .map_err(|e| e.to_string())
        };
        assert_eq!(feed(10, 60_000), Ok((10, 60_000)));
        assert_eq!(feed(5_000, 2_592_000_000), Ok((5_000, 2_592_000_000)));
        assert!(feed(9, 60_000).unwrap_err().contains("livecomments.feed_poll_ms"));
        assert!(feed(5_001, 60_000).unwrap_err().contains("livecomments.feed_poll_ms"));
        assert!(feed(100, 59_999).unwrap_err().contains("livecomments.feed_stale_ms"));
        assert!(feed(100, u64::MAX).unwrap_err().contains("livecomments.feed_stale_ms"));
    }
}
