//! Tinder's settings: the `[tinder]` table, `--tinder-*` flags and `GIRDER_TINDER_*`
//! variables, resolved to a validated [`TinderConfig`].

use girder_system::SettingsError;
use serde::{Deserialize, Serialize};

use crate::TinderConfig;

/// Tinder's settings as given; unset fields take the defaults.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Tinder")]
#[serde(deny_unknown_fields)]
pub struct TinderSettings {
    /// Hours a seen filter stays current; a profile wrongly held by one is hidden for
    /// less than twice this (1–720) [default: 24].
    #[arg(long, env = "GIRDER_TINDER_SEEN_GENERATION_HOURS")]
    #[serde(rename = "seen_generation_hours", skip_serializing_if = "Option::is_none")]
    pub tinder_seen_generation_hours: Option<u64>,
    /// Profiles a seen filter is sized for; a current filter holding this many rotates
    /// early (100–100000) [default: 2000].
    #[arg(long, env = "GIRDER_TINDER_SEEN_ITEMS")]
    #[serde(rename = "seen_items", skip_serializing_if = "Option::is_none")]
    pub tinder_seen_items: Option<u64>,
    /// The false-positive rate of one full seen filter (0.000001–0.05) [default: 0.001].
    #[arg(long, env = "GIRDER_TINDER_SEEN_FALSE_POSITIVE_RATE")]
    #[serde(rename = "seen_false_positive_rate", skip_serializing_if = "Option::is_none")]
    pub tinder_seen_false_positive_rate: Option<f64>,
    /// Candidates a feed page reads from the table, at most (10–10000) [default: 1000].
    #[arg(long, env = "GIRDER_TINDER_SCAN_MAX")]
    #[serde(rename = "scan_max", skip_serializing_if = "Option::is_none")]
    pub tinder_scan_max: Option<u64>,
    /// Hits one geo index search returns, at most: how deep a feed reaches (at least
    /// scan_max, at most 100000) [default: 10000].
    #[arg(long, env = "GIRDER_TINDER_DEPTH_MAX")]
    #[serde(rename = "depth_max", skip_serializing_if = "Option::is_none")]
    pub tinder_depth_max: Option<u64>,
    /// Between refreshes of the geo index from the profiles table, ms (100–600000)
    /// [default: 2000].
    #[arg(long, env = "GIRDER_TINDER_INDEX_REFRESH_MS")]
    #[serde(rename = "index_refresh_ms", skip_serializing_if = "Option::is_none")]
    pub tinder_index_refresh_ms: Option<u64>,
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl TinderSettings {
    /// Applies the defaults and checks every bound.
    ///
    /// # Errors
    /// A value out of range, named as in the TOML file.
    pub fn resolve(self) -> Result<TinderConfig, SettingsError> {
        let d = TinderConfig::new();
        let hours = self.tinder_seen_generation_hours.unwrap_or(d.seen.generation_ms / 3_600_000);
        SettingsError::check_range("tinder.seen_generation_hours", signed(hours), 1, 720)?;
        let items = self.tinder_seen_items.unwrap_or(d.seen.items_per_generation);
        SettingsError::check_range("tinder.seen_items", signed(items), 100, 100_000)?;
        let rate = self.tinder_seen_false_positive_rate.unwrap_or(d.seen.false_positive_rate);
        if !(1e-6..=0.05).contains(&rate) {
            return Err(SettingsError::invalid(
                "tinder.seen_false_positive_rate",
                format!("{rate} is outside 0.000001–0.05"),
            ));
        }
        let scan_max = self.tinder_scan_max.unwrap_or(d.feed.scan_max as u64);
        SettingsError::check_range("tinder.scan_max", signed(scan_max), 10, 10_000)?;
        let depth_max = self.tinder_depth_max.unwrap_or(d.feed.depth_max as u64);
        SettingsError::check_range(
            "tinder.depth_max",
            signed(depth_max),
            signed(scan_max),
            100_000,
        )?;
        let refresh_ms = self.tinder_index_refresh_ms.unwrap_or(d.index_refresh_ms);
        SettingsError::check_range("tinder.index_refresh_ms", signed(refresh_ms), 100, 600_000)?;
        Ok(TinderConfig {
            seen: crate::seen::SeenConfig {
                generation_ms: hours * 3_600_000,
                items_per_generation: items,
                false_positive_rate: rate,
            },
            feed: crate::feed::FeedConfig {
                scan_max: scan_max as usize,
                depth_max: depth_max as usize,
            },
            index_refresh_ms: refresh_ms,
            ..d
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let c = TinderSettings::default().resolve().unwrap();
        assert_eq!(c.seen.generation_ms, 24 * 3_600_000);
        assert_eq!(c.seen.items_per_generation, 2_000);
        assert_eq!(c.feed.scan_max, 1_000);
        for bad in [
            TinderSettings { tinder_seen_generation_hours: Some(0), ..Default::default() },
            TinderSettings { tinder_seen_items: Some(99), ..Default::default() },
            TinderSettings { tinder_seen_false_positive_rate: Some(0.5), ..Default::default() },
            TinderSettings {
                tinder_seen_false_positive_rate: Some(f64::NAN),
                ..Default::default()
            },
            TinderSettings {
                tinder_scan_max: Some(5_000),
                tinder_depth_max: Some(4_000),
                ..Default::default()
            },
            TinderSettings { tinder_index_refresh_ms: Some(10), ..Default::default() },
        ] {
            assert!(bad.resolve().is_err());
        }
    }
}
