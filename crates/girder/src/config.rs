//! Configuration of `girder serve`: flags, then `GIRDER_*` environment
//! variables, then an optional TOML file, then defaults — first one wins.
//!
//! One struct serves as both the clap arguments and the TOML shape, so a
//! setting has the same name everywhere (`--id-batch-size`, `GIRDER_ID_BATCH_SIZE`,
//! `id_batch_size = ...`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use girder_systems::bitly::{BitlyConfig, ClickBufferConfig, CodeStyle, RedirectKind, Reserved};
use girder_systems::gopuff::{GoPuffConfig, Strategy};
use girder_systems::ratelimiter::{FailurePolicy, RateLimiterConfig};
use girder_systems::ticketmaster::TicketmasterConfig;
use serde::Deserialize;

/// Settings of `girder serve`; every field optional so sources can be layered.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "GIRDER_BIND")]
    pub bind: Option<SocketAddr>,
    /// Directory for embedded data (the SQLite file) [default: ./girder-data].
    #[arg(long, env = "GIRDER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// System-of-record database: `sqlite:PATH` or `postgres://...`
    /// [default: sqlite:<data-dir>/girder.db].
    #[arg(long, env = "GIRDER_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Database connections per instance [default: 16].
    #[arg(long, env = "GIRDER_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// Origin of short links, e.g. https://sho.rt [default: http://<bind>].
    #[arg(long, env = "GIRDER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Redirect status for short links: `found` (302) or `permanent` (301) [default: found].
    #[arg(long, env = "GIRDER_BITLY_REDIRECT")]
    pub bitly_redirect: Option<String>,
    /// Short code style: `sequential` or `scrambled` (keyed permutation) [default: sequential].
    #[arg(long, env = "GIRDER_BITLY_CODES")]
    pub bitly_codes: Option<String>,
    /// Ids leased from the shared counter at a time [default: 1000].
    #[arg(long, env = "GIRDER_ID_BATCH_SIZE")]
    pub id_batch_size: Option<u64>,
    /// How often buffered click counts are flushed, in ms [default: 1000].
    #[arg(long, env = "GIRDER_CLICK_FLUSH_INTERVAL_MS")]
    pub click_flush_interval_ms: Option<u64>,
    /// Largest accepted request body, in bytes [default: 16384].
    #[arg(long, env = "GIRDER_BODY_BYTES_MAX")]
    pub body_bytes_max: Option<usize>,
    /// How long shutdown waits for in-flight requests, in ms [default: 10000].
    #[arg(long, env = "GIRDER_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// How long a link stays fresh in the redirect cache, in ms; also the staleness
    /// bound across instances when Redis invalidation is unavailable [default: 30000].
    #[arg(long, env = "GIRDER_CACHE_TTL_MS")]
    pub cache_ttl_ms: Option<u64>,
    /// Links held in each instance's in-process cache [default: 100000].
    #[arg(long, env = "GIRDER_CACHE_CAPACITY")]
    pub cache_capacity: Option<u64>,
    /// Redis for the shared cache layer and cross-instance invalidation (off if unset).
    #[arg(long, env = "GIRDER_REDIS_URL")]
    pub redis_url: Option<String>,
    /// How GoPuff orders that name no strategy avoid overselling: `row_lock`
    /// (`SELECT … FOR UPDATE`) or `optimistic` (version check and retry) [default: row_lock].
    #[arg(long, env = "GIRDER_GOPUFF_STRATEGY")]
    pub gopuff_strategy: Option<String>,
    /// How long GoPuff's cached availability answers stay fresh, in ms; the staleness
    /// bound across instances without Redis [default: 2000].
    #[arg(long, env = "GIRDER_GOPUFF_AVAILABILITY_TTL_MS")]
    pub gopuff_availability_ttl_ms: Option<u64>,
    /// How long a Ticketmaster seat hold lasts before the seats return to the pool,
    /// in ms [default: 600000, ten minutes].
    #[arg(long, env = "GIRDER_TICKETMASTER_HOLD_TTL_MS")]
    pub ticketmaster_hold_ttl_ms: Option<u64>,
    /// How often lapsed Ticketmaster holds are swept (they read as available at once
    /// regardless), in ms [default: 1000].
    #[arg(long, env = "GIRDER_TICKETMASTER_SWEEP_INTERVAL_MS")]
    pub ticketmaster_sweep_interval_ms: Option<u64>,
    /// Rate limits on every system's API: a rules file (TOML), `builtin` (a generous
    /// per-IP ceiling on `/api`) or `off`; SIGHUP reloads a file [default: builtin].
    #[arg(long, env = "GIRDER_RATELIMIT_RULES")]
    pub ratelimit_rules: Option<String>,
    /// What the rate limiter does when its backend (Redis) fails: `open` lets requests
    /// through, `closed` answers 503 [default: open].
    #[arg(long, env = "GIRDER_RATELIMIT_FAILURE")]
    pub ratelimit_failure: Option<String>,
    /// Rules the Distributed Rate Limiter service (`/api/ratelimiter`) starts with, a
    /// TOML file; SIGHUP reloads it [default: none, rules are added through the API].
    #[arg(long, env = "GIRDER_RATELIMITER_RULES")]
    pub ratelimiter_rules: Option<PathBuf>,
    /// The prefix of the Distributed Rate Limiter service's Redis keys (its budgets
    /// and its shared rule edits); instances with the same prefix share both
    /// [default: girder:rl:svc:].
    #[arg(long, env = "GIRDER_RATELIMITER_KEY_PREFIX")]
    pub ratelimiter_key_prefix: Option<String>,
    /// Where `girder lab` results are read from for the dashboard [default: ./girder-lab].
    #[arg(long, env = "GIRDER_LAB_DIR")]
    pub lab_dir: Option<PathBuf>,
}

impl ServeSettings {
    /// Fills every unset field from `other`.
    #[must_use]
    pub fn or(self, other: Self) -> Self {
        Self {
            bind: self.bind.or(other.bind),
            data_dir: self.data_dir.or(other.data_dir),
            database_url: self.database_url.or(other.database_url),
            db_max_connections: self.db_max_connections.or(other.db_max_connections),
            public_url: self.public_url.or(other.public_url),
            bitly_redirect: self.bitly_redirect.or(other.bitly_redirect),
            bitly_codes: self.bitly_codes.or(other.bitly_codes),
            id_batch_size: self.id_batch_size.or(other.id_batch_size),
            click_flush_interval_ms: self.click_flush_interval_ms.or(other.click_flush_interval_ms),
            body_bytes_max: self.body_bytes_max.or(other.body_bytes_max),
            shutdown_grace_ms: self.shutdown_grace_ms.or(other.shutdown_grace_ms),
            lab_dir: self.lab_dir.or(other.lab_dir),
            cache_ttl_ms: self.cache_ttl_ms.or(other.cache_ttl_ms),
            cache_capacity: self.cache_capacity.or(other.cache_capacity),
            redis_url: self.redis_url.or(other.redis_url),
            gopuff_strategy: self.gopuff_strategy.or(other.gopuff_strategy),
            ratelimit_rules: self.ratelimit_rules.or(other.ratelimit_rules),
            ratelimit_failure: self.ratelimit_failure.or(other.ratelimit_failure),
            ratelimiter_rules: self.ratelimiter_rules.or(other.ratelimiter_rules),
            ratelimiter_key_prefix: self.ratelimiter_key_prefix.or(other.ratelimiter_key_prefix),
            ticketmaster_hold_ttl_ms: self
                .ticketmaster_hold_ttl_ms
                .or(other.ticketmaster_hold_ttl_ms),
            ticketmaster_sweep_interval_ms: self
                .ticketmaster_sweep_interval_ms
                .or(other.ticketmaster_sweep_interval_ms),
            gopuff_availability_ttl_ms: self
                .gopuff_availability_ttl_ms
                .or(other.gopuff_availability_ttl_ms),
        }
    }

    /// Reads a TOML file of settings.
    ///
    /// # Errors
    /// The file is unreadable or not valid settings.
    pub fn from_toml_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Applies defaults and validates.
    ///
    /// # Errors
    /// A setting is out of range or unparsable.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let bind = self.bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from("girder-data"));
        let database_url = match self.database_url {
            Some(url) => url,
            None => format!("sqlite:{}", data_dir.join("girder.db").display()),
        };
        let redirect = match self.bitly_redirect.as_deref().unwrap_or("found") {
            "found" | "302" => RedirectKind::Found,
            "permanent" | "301" => RedirectKind::Permanent,
            other => bail!("bitly_redirect must be `found` or `permanent`, got {other:?}"),
        };
        let code_style = match self.bitly_codes.as_deref().unwrap_or("sequential") {
            "sequential" => CodeStyle::Sequential,
            "scrambled" => CodeStyle::Scrambled,
            other => bail!("bitly_codes must be `sequential` or `scrambled`, got {other:?}"),
        };
        let id_batch_size = self.id_batch_size.unwrap_or(1_000);
        if !(1..=1_000_000).contains(&id_batch_size) {
            bail!("id_batch_size must be 1..=1000000, got {id_batch_size}");
        }
        let db_max_connections = self.db_max_connections.unwrap_or(16);
        if !(1..=1_024).contains(&db_max_connections) {
            bail!("db_max_connections must be 1..=1024, got {db_max_connections}");
        }
        let click_flush_interval_ms = self.click_flush_interval_ms.unwrap_or(1_000);
        if !(1..=3_600_000).contains(&click_flush_interval_ms) {
            bail!("click_flush_interval_ms must be 1..=3600000, got {click_flush_interval_ms}");
        }
        let body_bytes_max = self.body_bytes_max.unwrap_or(16 * 1024);
        if !(256..=64 * 1024 * 1024).contains(&body_bytes_max) {
            bail!("body_bytes_max must be 256..=67108864, got {body_bytes_max}");
        }
        let cache = girder_cache::CacheConfig {
            name: "bitly_links".to_owned(),
            ttl_ms: self.cache_ttl_ms.unwrap_or(30_000),
            l1_capacity_entries: self.cache_capacity.unwrap_or(100_000),
            ..girder_cache::CacheConfig::default()
        };
        cache.validate().map_err(|e| anyhow::anyhow!("cache settings: {e}"))?;
        let default_strategy = match self.gopuff_strategy.as_deref().unwrap_or("row_lock") {
            "row_lock" => Strategy::RowLock,
            "optimistic" => Strategy::Optimistic,
            other => bail!("gopuff_strategy must be `row_lock` or `optimistic`, got {other:?}"),
        };
        let availability_ttl_ms = self.gopuff_availability_ttl_ms.unwrap_or(2_000);
        if !(1..=3_600_000).contains(&availability_ttl_ms) {
            bail!("gopuff_availability_ttl_ms must be 1..=3600000, got {availability_ttl_ms}");
        }
        let gopuff = GoPuffConfig {
            max_connections: db_max_connections,
            default_strategy,
            availability_ttl_ms,
            redis_url: self.redis_url.clone(),
            ..GoPuffConfig::new(database_url.clone())
        };
        let hold_ttl_ms = self.ticketmaster_hold_ttl_ms.unwrap_or(600_000);
        if !(1_000..=86_400_000).contains(&hold_ttl_ms) {
            bail!("ticketmaster_hold_ttl_ms must be 1000..=86400000, got {hold_ttl_ms}");
        }
        let sweep_interval_ms = self.ticketmaster_sweep_interval_ms.unwrap_or(1_000);
        if !(10..=3_600_000).contains(&sweep_interval_ms) {
            bail!("ticketmaster_sweep_interval_ms must be 10..=3600000, got {sweep_interval_ms}");
        }
        let ticketmaster = TicketmasterConfig {
            max_connections: db_max_connections,
            hold_ttl_ms,
            sweep_interval_ms,
            ..TicketmasterConfig::new(database_url.clone())
        };
        let ratelimit_rules = match self.ratelimit_rules.as_deref().unwrap_or("builtin") {
            "builtin" => RateLimitRules::Builtin,
            "off" => RateLimitRules::Off,
            "" => bail!("ratelimit_rules must be a file, `builtin` or `off`"),
            path => RateLimitRules::File(PathBuf::from(path)),
        };
        let ratelimit_failure = match self.ratelimit_failure.as_deref().unwrap_or("open") {
            "open" => FailurePolicy::Open,
            "closed" => FailurePolicy::Closed,
            other => bail!("ratelimit_failure must be `open` or `closed`, got {other:?}"),
        };
        let defaults = RateLimiterConfig::default();
        let key_prefix = self.ratelimiter_key_prefix.unwrap_or(defaults.key_prefix);
        if key_prefix.is_empty()
            || key_prefix.len() > 64
            || key_prefix.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            bail!(
                "ratelimiter_key_prefix must be 1 to 64 bytes without spaces, got {key_prefix:?}"
            );
        }
        let ratelimiter = RateLimiterConfig {
            rules_path: self.ratelimiter_rules,
            redis_url: self.redis_url.clone(),
            key_prefix,
        };
        let public_url = self.public_url.unwrap_or_else(|| format!("http://{bind}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            bail!("public_url must start with http:// or https://, got {public_url:?}");
        }
        Ok(Config {
            bind,
            data_dir,
            body_bytes_max,
            shutdown_grace_ms: self.shutdown_grace_ms.unwrap_or(10_000),
            lab_dir: self.lab_dir.unwrap_or_else(|| PathBuf::from("girder-lab")),
            bitly: BitlyConfig {
                database_url,
                max_connections: db_max_connections,
                public_url,
                redirect,
                code_style,
                id_batch_size,
                clicks: ClickBufferConfig {
                    flush_interval_ms: click_flush_interval_ms,
                    ..Default::default()
                },
                reserved: Reserved::server_paths(),
                cache,
                redis_url: self.redis_url,
            },
            gopuff,
            ticketmaster,
            ratelimit: RateLimitSettings { rules: ratelimit_rules, failure: ratelimit_failure },
            ratelimiter,
        })
    }
}

/// Resolved, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub bind: SocketAddr,
    /// Embedded data directory.
    pub data_dir: PathBuf,
    /// Body size bound.
    pub body_bytes_max: usize,
    /// Shutdown grace period.
    pub shutdown_grace_ms: u64,
    /// Lab results directory.
    pub lab_dir: PathBuf,
    /// Bit.ly's configuration.
    pub bitly: BitlyConfig,
    /// GoPuff's configuration.
    pub gopuff: GoPuffConfig,
    /// Ticketmaster's configuration.
    pub ticketmaster: TicketmasterConfig,
    /// The rate limits every system's API gets.
    pub ratelimit: RateLimitSettings,
    /// The Distributed Rate Limiter service's configuration.
    pub ratelimiter: RateLimiterConfig,
}

/// Where the middleware's rate limits come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitRules {
    /// `assets/ratelimit.toml`, compiled in.
    Builtin,
    /// No rate limiting.
    Off,
    /// A rules file, reloaded on SIGHUP.
    File(PathBuf),
}

/// The rate-limit middleware's settings.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// The rules.
    pub rules: RateLimitRules,
    /// What happens when the limiter's backend fails.
    pub failure: FailurePolicy,
}

/// Loads settings: `cli` (flags and env, already merged by clap), then the TOML
/// file at `config_path` (or `./girder.toml` if it exists), then defaults.
///
/// # Errors
/// An explicitly named file is missing, or any file or value is invalid.
pub fn load(cli: ServeSettings, config_path: Option<&Path>) -> anyhow::Result<Config> {
    let file = match config_path {
        Some(path) => ServeSettings::from_toml_file(path)?,
        None if Path::new("girder.toml").exists() => {
            ServeSettings::from_toml_file(Path::new("girder.toml"))?
        }
        None => ServeSettings::default(),
    };
    cli.or(file).resolve()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let cli = ServeSettings { id_batch_size: Some(7), ..Default::default() };
        let file: ServeSettings =
            toml::from_str("id_batch_size = 9\nbitly_redirect = \"permanent\"").unwrap();
        let config = cli.or(file).resolve().unwrap();
        assert_eq!(config.bitly.id_batch_size, 7);
        assert_eq!(config.bitly.redirect, RedirectKind::Permanent);
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert!(config.bitly.database_url.starts_with("sqlite:girder-data"));
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let check = |toml_text: &str, want: &str| {
            let err = toml::from_str::<ServeSettings>(toml_text)
                .map_err(anyhow::Error::from)
                .and_then(ServeSettings::resolve)
                .unwrap_err();
            let text = format!("{err:#}");
            assert!(text.contains(want), "{toml_text}: {text}");
        };
        check("id_batch_size = 0", "id_batch_size must be");
        check("bitly_redirect = \"307\"", "bitly_redirect must be");
        check("bitly_codes = \"random\"", "bitly_codes must be");
        check("gopuff_strategy = \"pray\"", "gopuff_strategy must be");
        check("ticketmaster_hold_ttl_ms = 5", "ticketmaster_hold_ttl_ms must be");
        check("ratelimit_failure = \"maybe\"", "ratelimit_failure must be");
        check("ratelimiter_key_prefix = \"\"", "ratelimiter_key_prefix must be");
        check("ratelimiter_key_prefix = \"a b\"", "ratelimiter_key_prefix must be");
        check("gopuff_availability_ttl_ms = 0", "gopuff_availability_ttl_ms must be");
        check("public_url = \"ftp://x\"", "public_url must start");
        check("no_such_setting = 1", "unknown field");
        check("bind = \"not an address\"", "invalid");
    }
}
