//! Uber's settings: the `[uber]` table, `--uber-*` flags and `GIRDER_UBER_*`
//! variables, resolved to a validated [`UberConfig`].

use girder_system::SettingsError;
use serde::{Deserialize, Serialize};

use crate::UberConfig;

/// Uber's settings as given; unset fields take the defaults.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Uber")]
#[serde(deny_unknown_fields)]
pub struct UberSettings {
    /// How long a driver has to answer an offer, ms (1000–120000) [default: 15000].
    #[arg(long, env = "GIRDER_UBER_OFFER_TIMEOUT_MS")]
    #[serde(rename = "offer_timeout_ms", skip_serializing_if = "Option::is_none")]
    pub uber_offer_timeout_ms: Option<u64>,
    /// How long a ride waits for a driver before it is cancelled, ms (more than the
    /// offer timeout, at most 3600000) [default: 120000].
    #[arg(long, env = "GIRDER_UBER_MATCH_TIMEOUT_MS")]
    #[serde(rename = "match_timeout_ms", skip_serializing_if = "Option::is_none")]
    pub uber_match_timeout_ms: Option<u64>,
    /// How far from a pickup drivers are searched, m (100–50000) [default: 5000].
    #[arg(long, env = "GIRDER_UBER_SEARCH_RADIUS_M")]
    #[serde(rename = "search_radius_m", skip_serializing_if = "Option::is_none")]
    pub uber_search_radius_m: Option<u64>,
    /// How long a driver's last fix keeps them in the indexes, ms (1000–600000)
    /// [default: 30000].
    #[arg(long, env = "GIRDER_UBER_DRIVER_TTL_MS")]
    #[serde(rename = "driver_ttl_ms", skip_serializing_if = "Option::is_none")]
    pub uber_driver_ttl_ms: Option<u64>,
    /// How near the pickup a driver is when the rider is told they are arriving, m
    /// (10–5000) [default: 300].
    #[arg(long, env = "GIRDER_UBER_ARRIVING_RADIUS_M")]
    #[serde(rename = "arriving_radius_m", skip_serializing_if = "Option::is_none")]
    pub uber_arriving_radius_m: Option<u64>,
    /// The H3 resolution surge is computed at (4–10) [default: 7].
    #[arg(long, env = "GIRDER_UBER_SURGE_RESOLUTION")]
    #[serde(rename = "surge_resolution", skip_serializing_if = "Option::is_none")]
    pub uber_surge_resolution: Option<u8>,
    /// How often each instance's matcher looks for waiting rides, ms (10–10000)
    /// [default: 250].
    #[arg(long, env = "GIRDER_UBER_MATCH_TICK_MS")]
    #[serde(rename = "match_tick_ms", skip_serializing_if = "Option::is_none")]
    pub uber_match_tick_ms: Option<u64>,
    /// The prefix of the NATS subjects (or Redis channels) joining this deployment's
    /// instances: dot-separated segments of A-Z a-z 0-9 _ -, at most 64 characters.
    /// Deployments sharing one NATS or Redis server need different ones [default:
    /// girder.uber].
    #[arg(long, env = "GIRDER_UBER_BROKER_PREFIX")]
    #[serde(rename = "broker_prefix", skip_serializing_if = "Option::is_none")]
    pub uber_broker_prefix: Option<String>,
    /// The prefix of the Redis keys of the shared indexes and leases, at most 64
    /// characters without spaces [default: girder:uber:].
    #[arg(long, env = "GIRDER_UBER_REDIS_PREFIX")]
    #[serde(rename = "redis_prefix", skip_serializing_if = "Option::is_none")]
    pub uber_redis_prefix: Option<String>,
}

/// Whether `p` is a subject prefix: dot-separated non-empty segments of A-Z a-z 0-9 _ -.
fn subject_prefix_ok(p: &str) -> bool {
    p.len() <= 64
        && p.split('.').all(|s| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl UberSettings {
    /// Applies the defaults and checks every bound.
    ///
    /// # Errors
    /// A value out of range, named as in the TOML file.
    pub fn resolve(self) -> Result<UberConfig, SettingsError> {
        let d = UberConfig::new();
        let offer = self.uber_offer_timeout_ms.unwrap_or(d.offer_timeout_ms);
        SettingsError::check_range("uber.offer_timeout_ms", signed(offer), 1_000, 120_000)?;
        let matching = self.uber_match_timeout_ms.unwrap_or(d.match_timeout_ms);
        SettingsError::check_range(
            "uber.match_timeout_ms",
            signed(matching),
            signed(offer) + 1,
            3_600_000,
        )?;
        let radius = self.uber_search_radius_m.unwrap_or(d.search_radius_m as u64);
        SettingsError::check_range("uber.search_radius_m", signed(radius), 100, 50_000)?;
        let ttl = self.uber_driver_ttl_ms.unwrap_or(d.driver_ttl_ms);
        SettingsError::check_range("uber.driver_ttl_ms", signed(ttl), 1_000, 600_000)?;
        let arriving = self.uber_arriving_radius_m.unwrap_or(d.arriving_radius_m as u64);
        SettingsError::check_range("uber.arriving_radius_m", signed(arriving), 10, 5_000)?;
        let resolution = self.uber_surge_resolution.unwrap_or(d.surge_resolution);
        SettingsError::check_range("uber.surge_resolution", i64::from(resolution), 4, 10)?;
        let tick = self.uber_match_tick_ms.unwrap_or(d.match_tick_ms);
        SettingsError::check_range("uber.match_tick_ms", signed(tick), 10, 10_000)?;
        let broker_prefix = self.uber_broker_prefix.unwrap_or(d.broker_prefix.clone());
        if !subject_prefix_ok(&broker_prefix) {
            return Err(SettingsError::invalid(
                "uber.broker_prefix",
                "dot-separated segments of A-Z a-z 0-9 _ -, at most 64 characters",
            ));
        }
        let redis_prefix = self.uber_redis_prefix.unwrap_or(d.redis_prefix.clone());
        if redis_prefix.is_empty()
            || redis_prefix.len() > 64
            || redis_prefix.bytes().any(|b| !b.is_ascii_graphic())
        {
            return Err(SettingsError::invalid(
                "uber.redis_prefix",
                "1–64 visible ASCII characters",
            ));
        }
        Ok(UberConfig {
            broker_prefix,
            redis_prefix,
            offer_timeout_ms: offer,
            match_timeout_ms: matching,
            search_radius_m: radius as f64,
            driver_ttl_ms: ttl,
            arriving_radius_m: arriving as f64,
            surge_resolution: resolution,
            match_tick_ms: tick,
            ..d
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let c = UberSettings::default().resolve().unwrap();
        assert_eq!(c.offer_timeout_ms, 15_000);
        assert_eq!(c.surge_resolution, 7);
        assert_eq!(
            (c.broker_prefix.as_str(), c.redis_prefix.as_str()),
            ("girder.uber", "girder:uber:")
        );
        let named =
            UberSettings { uber_broker_prefix: Some("prod.uber".into()), ..Default::default() };
        assert_eq!(named.resolve().unwrap().broker_prefix, "prod.uber");
        for bad in [
            UberSettings { uber_offer_timeout_ms: Some(10), ..Default::default() },
            UberSettings {
                uber_offer_timeout_ms: Some(20_000),
                uber_match_timeout_ms: Some(20_000),
                ..Default::default()
            },
            UberSettings { uber_search_radius_m: Some(1), ..Default::default() },
            UberSettings { uber_surge_resolution: Some(15), ..Default::default() },
            UberSettings { uber_match_tick_ms: Some(0), ..Default::default() },
            UberSettings { uber_broker_prefix: Some("a..b".into()), ..Default::default() },
            UberSettings { uber_broker_prefix: Some("a b".into()), ..Default::default() },
            UberSettings { uber_redis_prefix: Some(String::new()), ..Default::default() },
        ] {
            assert!(bad.resolve().is_err());
        }
    }
}
