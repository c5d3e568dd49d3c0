//! Bit.ly's settings: the `[bitly]` table, `--bitly-*` flags and `GIRDER_BITLY_*`
//! variables, and the validated [`BitlyConfig`] they resolve to.

use girder_system::SettingsError;
use serde::{Deserialize, Serialize};

use crate::ClickBufferConfig;

/// Which redirect status `GET /{code}` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RedirectKind {
    /// 302 Found: every click reaches the server and is counted. The default.
    #[default]
    #[value(alias = "302")]
    Found,
    /// 301 Moved Permanently: browsers cache it, so repeat clicks go uncounted.
    #[value(alias = "301")]
    Permanent,
}

/// How generated codes are derived from the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CodeStyle {
    /// Base62 of the counter: ordered and guessable.
    #[default]
    Sequential,
    /// Base62 of a keyed permutation of the counter: unique, not enumerable.
    Scrambled,
}

/// Bit.ly's settings as given; unset fields take the defaults.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Bit.ly")]
#[serde(deny_unknown_fields)]
pub struct BitlySettings {
    /// Redirect status for short links: `found` (302) or `permanent` (301, browsers
    /// cache it, so repeat clicks go uncounted) [default: found].
    #[arg(long, env = "GIRDER_BITLY_REDIRECT", value_enum)]
    #[serde(rename = "redirect", skip_serializing_if = "Option::is_none")]
    pub bitly_redirect: Option<RedirectKind>,
    /// Short code style: `sequential`, or `scrambled` (a keyed permutation: unique
    /// but not enumerable) [default: sequential].
    #[arg(long, env = "GIRDER_BITLY_CODES", value_enum)]
    #[serde(rename = "codes", skip_serializing_if = "Option::is_none")]
    pub bitly_codes: Option<CodeStyle>,
    /// Ids leased from the shared counter per round trip, 1–1,000,000 [default: 1000].
    #[arg(long, env = "GIRDER_BITLY_ID_BATCH_SIZE", alias = "id-batch-size")]
    #[serde(rename = "id_batch_size", skip_serializing_if = "Option::is_none")]
    pub bitly_id_batch_size: Option<u64>,
    /// How often buffered click counts are written, in ms (1–3,600,000; also on
    /// shutdown) [default: 1000].
    #[arg(long, env = "GIRDER_BITLY_CLICK_FLUSH_INTERVAL_MS", alias = "click-flush-interval-ms")]
    #[serde(rename = "click_flush_interval_ms", skip_serializing_if = "Option::is_none")]
    pub bitly_click_flush_interval_ms: Option<u64>,
    /// How long a link stays fresh in an instance's L1, in ms; without Redis, the
    /// longest another instance can serve a changed link [default: 30000].
    #[arg(long, env = "GIRDER_BITLY_CACHE_TTL_MS", alias = "cache-ttl-ms")]
    #[serde(rename = "cache_ttl_ms", skip_serializing_if = "Option::is_none")]
    pub bitly_cache_ttl_ms: Option<u64>,
    /// New links written per statement: concurrent shortens share one INSERT and one
    /// commit, and each 201 is sent after its batch committed; 1 writes each link in
    /// its own statement (1–1,000) [default: 128].
    #[arg(long, env = "GIRDER_BITLY_SHORTEN_BATCH_MAX")]
    #[serde(rename = "shorten_batch_max", skip_serializing_if = "Option::is_none")]
    pub bitly_shorten_batch_max: Option<usize>,
    /// Links held in each instance's L1 [default: 100000].
    #[arg(long, env = "GIRDER_BITLY_CACHE_CAPACITY", alias = "cache-capacity")]
    #[serde(rename = "cache_capacity", skip_serializing_if = "Option::is_none")]
    pub bitly_cache_capacity: Option<u64>,
}

/// Bit.ly's validated configuration.
#[derive(Debug, Clone)]
pub struct BitlyConfig {
    /// Redirect status.
    pub redirect: RedirectKind,
    /// Code derivation.
    pub code_style: CodeStyle,
    /// Ids leased from the counter at a time.
    pub id_batch_size: u64,
    /// Click buffering.
    pub clicks: ClickBufferConfig,
    /// The link cache on the redirect path.
    pub cache: girder_cache::CacheConfig,
    /// Top-level paths no code or alias may take.
    pub reserved: crate::Reserved,
    /// The most new links in one INSERT.
    pub shorten_batch_max: usize,
}

impl BitlySettings {
    /// Applies the defaults and checks every bound.
    ///
    /// # Errors
    /// A value out of range, named as in the TOML file (`bitly.id_batch_size`).
    pub fn resolve(self) -> Result<BitlyConfig, SettingsError> {
        let id_batch_size = self.bitly_id_batch_size.unwrap_or(1_000);
        if !(1..=1_000_000).contains(&id_batch_size) {
            return Err(SettingsError::invalid(
                "bitly.id_batch_size",
                format!("must be 1..=1000000, got {id_batch_size}"),
            ));
        }
        let flush_interval_ms = self.bitly_click_flush_interval_ms.unwrap_or(1_000);
        if !(1..=3_600_000).contains(&flush_interval_ms) {
            return Err(SettingsError::invalid(
                "bitly.click_flush_interval_ms",
                format!("must be 1..=3600000, got {flush_interval_ms}"),
            ));
        }
        let cache = girder_cache::CacheConfig {
            name: "bitly_links".to_owned(),
            ttl_ms: self.bitly_cache_ttl_ms.unwrap_or(30_000),
            l1_capacity_entries: self.bitly_cache_capacity.unwrap_or(100_000),
            ..girder_cache::CacheConfig::default()
        };
        let shorten_batch_max = self.bitly_shorten_batch_max.unwrap_or(128);
        if !(1..=1_000).contains(&shorten_batch_max) {
            return Err(SettingsError::invalid(
                "bitly.shorten_batch_max",
                format!("must be 1..=1000, got {shorten_batch_max}"),
            ));
        }
        cache
            .validate()
            .map_err(|e| SettingsError::invalid("bitly.cache_ttl_ms", e.to_string()))?;
        Ok(BitlyConfig {
            redirect: self.bitly_redirect.unwrap_or_default(),
            code_style: self.bitly_codes.unwrap_or_default(),
            id_batch_size,
            clicks: ClickBufferConfig { flush_interval_ms, ..ClickBufferConfig::default() },
            cache,
            reserved: crate::Reserved::server_paths(),
            shorten_batch_max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let config = BitlySettings::default().resolve().expect("defaults are valid");
        assert_eq!(config.redirect, RedirectKind::Found);
        assert_eq!(config.code_style, CodeStyle::Sequential);
        assert_eq!(config.id_batch_size, 1_000);
        let check = |settings: BitlySettings, want: &str| {
            let err = settings.resolve().expect_err("invalid").to_string();
            assert!(err.contains(want), "{err}");
        };
        check(
            BitlySettings { bitly_id_batch_size: Some(0), ..Default::default() },
            "bitly.id_batch_size",
        );
        check(
            BitlySettings { bitly_click_flush_interval_ms: Some(0), ..Default::default() },
            "bitly.click_flush_interval_ms",
        );
        check(BitlySettings { bitly_cache_capacity: Some(0), ..Default::default() }, "bitly.cache");
    }

    #[test]
    fn the_toml_table_drops_the_prefix() {
        let settings: BitlySettings =
            toml::from_str("codes = \"scrambled\"\nredirect = \"permanent\"").expect("parses");
        assert_eq!(settings.bitly_codes, Some(CodeStyle::Scrambled));
        assert_eq!(settings.bitly_redirect, Some(RedirectKind::Permanent));
        assert!(toml::from_str::<BitlySettings>("bitly_codes = \"scrambled\"").is_err());
    }
}
