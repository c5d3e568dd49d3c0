//! Ticketmaster's settings: the `[ticketmaster]` table, `--ticketmaster-*` flags and
//! `GIRDER_TICKETMASTER_*` variables, resolved to a validated [`TicketmasterConfig`].

use girder_system::SettingsError;
use serde::{Deserialize, Serialize};

use crate::TicketmasterConfig;

/// Ticketmaster's settings as given; unset fields take the defaults.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Ticketmaster")]
#[serde(deny_unknown_fields)]
pub struct TicketmasterSettings {
    /// How long a seat hold lasts before the seats return to the pool, in ms
    /// (1,000–86,400,000) [default: 600000, ten minutes].
    #[arg(long, env = "GIRDER_TICKETMASTER_HOLD_TTL_MS")]
    #[serde(rename = "hold_ttl_ms", skip_serializing_if = "Option::is_none")]
    pub ticketmaster_hold_ttl_ms: Option<u64>,
    /// How often lapsed holds are swept, in ms (10–3,600,000); they read as available
    /// at once regardless [default: 1000].
    #[arg(long, env = "GIRDER_TICKETMASTER_SWEEP_INTERVAL_MS")]
    #[serde(rename = "sweep_interval_ms", skip_serializing_if = "Option::is_none")]
    pub ticketmaster_sweep_interval_ms: Option<u64>,
    /// How long the seat feed waits between polls of the seat table, in ms
    /// (10–5,000): how late another instance's hold or sale reaches the seat maps
    /// open on this instance (this instance's own go out at once) [default: 150].
    #[arg(long, env = "GIRDER_TICKETMASTER_FEED_POLL_MS")]
    #[serde(rename = "feed_poll_ms", skip_serializing_if = "Option::is_none")]
    pub ticketmaster_feed_poll_ms: Option<u64>,
    /// How long another instance's seat feed may go unread before it is dropped (on
    /// PostgreSQL, its replication slot, which holds WAL until then), in ms
    /// (60,000–2,592,000,000) [default: 3600000, an hour].
    #[arg(long, env = "GIRDER_TICKETMASTER_FEED_STALE_MS")]
    #[serde(rename = "feed_stale_ms", skip_serializing_if = "Option::is_none")]
    pub ticketmaster_feed_stale_ms: Option<u64>,
}

impl TicketmasterSettings {
    /// Applies the defaults and checks every bound.
    ///
    /// # Errors
    /// A value out of range, named as in the TOML file.
    pub fn resolve(self) -> Result<TicketmasterConfig, SettingsError> {
        let defaults = TicketmasterConfig::new();
        let hold_ttl_ms = self.ticketmaster_hold_ttl_ms.unwrap_or(defaults.hold_ttl_ms);
        if !(1_000..=86_400_000).contains(&hold_ttl_ms) {
            return Err(SettingsError::invalid(
                "ticketmaster.hold_ttl_ms",
                format!("must be 1000..=86400000, got {hold_ttl_ms}"),
            ));
        }
        let sweep_interval_ms =
            self.ticketmaster_sweep_interval_ms.unwrap_or(defaults.sweep_interval_ms);
        if !(10..=3_600_000).contains(&sweep_interval_ms) {
            return Err(SettingsError::invalid(
                "ticketmaster.sweep_interval_ms",
                format!("must be 10..=3600000, got {sweep_interval_ms}"),
            ));
        }
        let mut feed = defaults.feed.clone();
        feed.poll_interval_ms = self.ticketmaster_feed_poll_ms.unwrap_or(feed.poll_interval_ms);
        SettingsError::check_range(
            "ticketmaster.feed_poll_ms",
            i64::try_from(feed.poll_interval_ms).unwrap_or(i64::MAX),
            10,
            5_000,
        )?;
        feed.stale_ms = self.ticketmaster_feed_stale_ms.unwrap_or(feed.stale_ms);
        SettingsError::check_range(
            "ticketmaster.feed_stale_ms",
            i64::try_from(feed.stale_ms).unwrap_or(i64::MAX),
            60_000,
            2_592_000_000,
        )?;
        Ok(TicketmasterConfig { hold_ttl_ms, sweep_interval_ms, feed, ..defaults })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let config = TicketmasterSettings::default().resolve().expect("valid");
        assert_eq!(config.hold_ttl_ms, 600_000);
        let check = |settings: TicketmasterSettings, want: &str| {
            let err = settings.resolve().expect_err("invalid").to_string();
            assert!(err.contains(want), "{err}");
        };
        check(
            TicketmasterSettings { ticketmaster_hold_ttl_ms: Some(5), ..Default::default() },
            "ticketmaster.hold_ttl_ms",
        );
        check(
            TicketmasterSettings { ticketmaster_sweep_interval_ms: Some(1), ..Default::default() },
            "ticketmaster.sweep_interval_ms",
        );
        assert_eq!((config.feed.poll_interval_ms, config.feed.stale_ms), (150, 3_600_000));
        let feed = |poll: u64, stale: u64| TicketmasterSettings {
            ticketmaster_feed_poll_ms: Some(poll),
            ticketmaster_feed_stale_ms: Some(stale),
            ..Default::default()
        };
        for (poll, stale) in [(10, 60_000), (5_000, 2_592_000_000)] {
            let config = feed(poll, stale).resolve().expect("in bounds");
            assert_eq!((config.feed.poll_interval_ms, config.feed.stale_ms), (poll, stale));
        }
        check(feed(9, 60_000), "ticketmaster.feed_poll_ms");
        check(feed(5_001, 60_000), "ticketmaster.feed_poll_ms");
        check(feed(100, 59_999), "ticketmaster.feed_stale_ms");
        check(feed(100, u64::MAX), "ticketmaster.feed_stale_ms");
    }
}
