//! News Feed's settings: the `[newsfeed]` table, `--newsfeed-*` flags and
//! `GIRDER_NEWSFEED_*` variables, resolved to a validated [`NewsFeedConfig`].

use girder_system::SettingsError;
use serde::{Deserialize, Serialize};

use crate::NewsFeedConfig;

/// News Feed's settings as given; unset fields take the defaults.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "News Feed")]
#[serde(deny_unknown_fields)]
pub struct NewsFeedSettings {
    /// Authors with at least this many followers are merged in at read time instead
    /// of fanned out on write (0–100,000,000; 0 pulls everyone) [default: 1000].
    #[arg(long, env = "GIRDER_NEWSFEED_PUSH_THRESHOLD")]
    #[serde(rename = "push_threshold", skip_serializing_if = "Option::is_none")]
    pub newsfeed_push_threshold: Option<i64>,
    /// Feed shard databases, comma-separated `sqlite:PATH` or `postgres://…` (at most
    /// 64); every instance must list the same shards in the same order [default: the
    /// instance's own database].
    #[arg(long, env = "GIRDER_NEWSFEED_FEED_SHARDS", value_delimiter = ',')]
    #[serde(rename = "feed_shards", skip_serializing_if = "Option::is_none")]
    pub newsfeed_feed_shards: Option<Vec<String>>,
    /// Fan-out workers on this instance (1–64) [default: 2].
    #[arg(long, env = "GIRDER_NEWSFEED_WORKERS")]
    #[serde(rename = "workers", skip_serializing_if = "Option::is_none")]
    pub newsfeed_workers: Option<usize>,
    /// How long a fan-out job may run before it is handed to another worker, in ms
    /// (1,000–3,600,000) [default: 30000].
    #[arg(long, env = "GIRDER_NEWSFEED_VISIBILITY_MS")]
    #[serde(rename = "visibility_ms", skip_serializing_if = "Option::is_none")]
    pub newsfeed_visibility_ms: Option<u64>,
    /// How long a post's fan-out may stay outstanding before any instance's sweeper
    /// enqueues it again, in ms (1,000–86,400,000) [default: 30000].
    #[arg(long, env = "GIRDER_NEWSFEED_SWEEP_GRACE_MS")]
    #[serde(rename = "sweep_grace_ms", skip_serializing_if = "Option::is_none")]
    pub newsfeed_sweep_grace_ms: Option<u64>,
    /// How long a cached first page is served, in ms (1–60,000): the longest a pulled
    /// post takes to show on a first page [default: 2000].
    #[arg(long, env = "GIRDER_NEWSFEED_FIRST_PAGE_TTL_MS")]
    #[serde(rename = "first_page_ttl_ms", skip_serializing_if = "Option::is_none")]
    pub newsfeed_first_page_ttl_ms: Option<u64>,
}

impl NewsFeedSettings {
    /// Applies the defaults and checks every bound.
    ///
    /// # Errors
    /// A value out of range, named as in the TOML file.
    pub fn resolve(self) -> Result<NewsFeedConfig, SettingsError> {
        let d = NewsFeedConfig::new();
        let push_threshold = self.newsfeed_push_threshold.unwrap_or(d.push_threshold);
        SettingsError::check_range("newsfeed.push_threshold", push_threshold, 0, 100_000_000)?;
        let feed_shards = self.newsfeed_feed_shards.unwrap_or_default();
        if feed_shards.len() > 64 {
            return Err(SettingsError::invalid(
                "newsfeed.feed_shards",
                format!("at most 64 shards, got {}", feed_shards.len()),
            ));
        }
        for url in &feed_shards {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return Err(SettingsError::invalid(
                    "newsfeed.feed_shards",
                    format!("{url:?} is neither sqlite:PATH nor postgres://…"),
                ));
            }
        }
        let workers = self.newsfeed_workers.unwrap_or(d.workers);
        SettingsError::check_range("newsfeed.workers", workers as i64, 1, 64)?;
        let visibility_ms = self.newsfeed_visibility_ms.unwrap_or(d.visibility_ms);
        SettingsError::check_range(
            "newsfeed.visibility_ms",
            visibility_ms as i64,
            1_000,
            3_600_000,
        )?;
        let sweep_grace_ms = self.newsfeed_sweep_grace_ms.unwrap_or(d.sweep_grace_ms);
        SettingsError::check_range(
            "newsfeed.sweep_grace_ms",
            sweep_grace_ms as i64,
            1_000,
            86_400_000,
        )?;
        let first_page_ttl_ms = self.newsfeed_first_page_ttl_ms.unwrap_or(d.first_page_ttl_ms);
        SettingsError::check_range(
            "newsfeed.first_page_ttl_ms",
            first_page_ttl_ms as i64,
            1,
            60_000,
        )?;
        Ok(NewsFeedConfig {
            push_threshold,
            feed_shards,
            workers,
            visibility_ms,
            sweep_grace_ms,
            first_page_ttl_ms,
            ..d
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let config = NewsFeedSettings::default().resolve().expect("valid");
        assert_eq!(config.push_threshold, 1_000);
        assert!(config.feed_shards.is_empty());
        let err = NewsFeedSettings { newsfeed_workers: Some(0), ..Default::default() }
            .resolve()
            .expect_err("zero workers");
        assert!(err.to_string().contains("newsfeed.workers"), "{err}");
        let err = NewsFeedSettings {
            newsfeed_feed_shards: Some(vec!["mysql://x".into()]),
            ..Default::default()
        }
        .resolve()
        .expect_err("unknown engine");
        assert!(err.to_string().contains("newsfeed.feed_shards"), "{err}");
        let parsed: NewsFeedSettings =
            toml::from_str("push_threshold = 10\nfeed_shards = [\"sqlite:a.db\"]").expect("parses");
        assert_eq!(parsed.newsfeed_push_threshold, Some(10));
        assert!(toml::from_str::<NewsFeedSettings>("threshold = 1").is_err());
    }
}
