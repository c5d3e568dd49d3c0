//! Configuration of `girder serve`: flags, then `GIRDER_*` environment variables,
//! then an optional TOML file, then defaults — first one wins.
//!
//! The engines (database, Redis) and the server's own settings are top-level
//! (`--database-url`, `database_url = …`) and configured once for every system. Each
//! system adds its own section: `--bitly-codes`, `GIRDER_BITLY_CODES`, `[bitly] codes`.
//! The sections come from the list of systems ([`crate::systems::SYSTEMS`]); this file
//! names none of them, except in [`RENAMED`], the settings that moved.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{ArgMatches, Args, FromArgMatches};
use girder_http::ratelimit::FailurePolicy;
use serde::Deserialize;

use crate::systems::SYSTEMS;

/// The server's own settings; every field optional so sources can be layered.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "GIRDER_BIND")]
    pub bind: Option<SocketAddr>,
    /// Directory for embedded data (the SQLite file) [default: ./girder-data].
    #[arg(long, env = "GIRDER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// System of record for every system: `sqlite:PATH` or `postgres://...`
    /// [default: sqlite:<data-dir>/girder.db].
    #[arg(long, env = "GIRDER_DATABASE_URL", help_heading = "Engines")]
    pub database_url: Option<String>,
    /// Connections this instance holds to the database, over all systems (1–1024);
    /// keep instances × this under the server's limit (PostgreSQL: 100) [default: 16].
    #[arg(long, env = "GIRDER_DB_MAX_CONNECTIONS", help_heading = "Engines")]
    pub db_max_connections: Option<u32>,
    /// How long a statement waits for a connection (and, on SQLite, for the write
    /// lock), in ms (100–600,000) [default: 10000].
    #[arg(long, env = "GIRDER_DB_ACQUIRE_TIMEOUT_MS", help_heading = "Engines")]
    pub db_acquire_timeout_ms: Option<u64>,
    /// A PostgreSQL streaming replica of the database to send reads to; repeat the
    /// flag for several (comma-separated in the environment, a list in TOML). Needs
    /// a postgres:// database [default: none].
    #[arg(
        long = "database-replica-url",
        env = "GIRDER_DATABASE_REPLICA_URLS",
        value_delimiter = ',',
        help_heading = "Engines"
    )]
    #[serde(rename = "database_replica_urls")]
    pub database_replica_url: Option<Vec<String>>,
    /// Connections this instance holds to each replica (1–1024) [default: 4].
    #[arg(long, env = "GIRDER_DB_REPLICA_MAX_CONNECTIONS", help_heading = "Engines")]
    pub db_replica_max_connections: Option<u32>,
    /// How long a read after a write waits for a replica to replay it before going
    /// to the primary, in ms (0–60,000) [default: 50].
    #[arg(long, env = "GIRDER_DB_READ_YOUR_WRITES_WAIT_MS", help_heading = "Engines")]
    pub db_read_your_writes_wait_ms: Option<u64>,
    /// Redis, shared by every system: cache L2 and invalidation, rate-limit state,
    /// shared rule edits (off if unset: everything stays in process).
    #[arg(long, env = "GIRDER_REDIS_URL", help_heading = "Engines")]
    pub redis_url: Option<String>,
    /// NATS with JetStream, shared by every system that keeps a queue (News Feed's
    /// fan-out): queues shared by every instance (off if unset: each instance keeps
    /// embedded queues in its data dir).
    #[arg(long, env = "GIRDER_NATS_URL", help_heading = "Engines")]
    pub nats_url: Option<String>,
    /// Origin of short links and other absolute URLs, e.g. https://sho.rt
    /// [default: http://<bind>].
    #[arg(long, env = "GIRDER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest accepted request body, in bytes (256–67,108,864) [default: 16384].
    #[arg(long, env = "GIRDER_BODY_BYTES_MAX")]
    pub body_bytes_max: Option<usize>,
    /// How long shutdown waits for background work to finish, in ms [default: 10000].
    #[arg(long, env = "GIRDER_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Rate limits on every system's API: a rules file (TOML), `builtin` (a generous
    /// per-IP ceiling on `/api`) or `off`; SIGHUP reloads a file [default: builtin].
    #[arg(long, env = "GIRDER_RATELIMIT_RULES")]
    pub ratelimit_rules: Option<String>,
    /// What the rate limits do when their backend (Redis) fails: `open` lets requests
    /// through, `closed` answers 503 [default: open].
    #[arg(long, env = "GIRDER_RATELIMIT_FAILURE", value_enum)]
    pub ratelimit_failure: Option<Failure>,
    /// Where `girder lab` results are read from for the dashboard [default: ./girder-lab].
    #[arg(long, env = "GIRDER_LAB_DIR")]
    pub lab_dir: Option<PathBuf>,
    /// The operator's password (kept only as an argon2 hash): operators sign in at
    /// `POST /api/auth/token`. Unset: any caller may take a demo operator token at
    /// `POST /api/auth/demo`, which suits a demo and nothing else [default: unset].
    #[arg(
        long,
        env = "GIRDER_OPERATOR_PASSWORD",
        help_heading = "Identity",
        hide_env_values = true
    )]
    pub operator_password: Option<String>,
    /// How long a bearer token stays valid, in seconds (60–2,592,000) [default: 86400].
    #[arg(long, env = "GIRDER_TOKEN_TTL_SECS", help_heading = "Identity")]
    pub token_ttl_secs: Option<u64>,
}

/// What the rate limits do when Redis fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    /// Let requests through, unlimited.
    Open,
    /// Answer 503.
    Closed,
}

/// Settings that moved, as (old name, new name). An old flag keeps working as an
/// alias; an old environment variable or top-level TOML key is refused with a message
/// naming its replacement.
pub const RENAMED: &[(&str, &str)] = &[
    ("id_batch_size", "bitly.id_batch_size"),
    ("click_flush_interval_ms", "bitly.click_flush_interval_ms"),
    ("cache_ttl_ms", "bitly.cache_ttl_ms"),
    ("cache_capacity", "bitly.cache_capacity"),
    ("bitly_redirect", "bitly.redirect"),
    ("bitly_codes", "bitly.codes"),
    ("gopuff_strategy", "gopuff.strategy"),
    ("gopuff_availability_ttl_ms", "gopuff.availability_ttl_ms"),
    ("ticketmaster_hold_ttl_ms", "ticketmaster.hold_ttl_ms"),
    ("ticketmaster_sweep_interval_ms", "ticketmaster.sweep_interval_ms"),
    ("ratelimiter_rules", "ratelimiter.rules"),
    ("ratelimiter_key_prefix", "ratelimiter.key_prefix"),
];

/// Environment variables that were renamed: only these four changed name.
const RENAMED_ENV: &[(&str, &str)] = &[
    ("GIRDER_ID_BATCH_SIZE", "GIRDER_BITLY_ID_BATCH_SIZE"),
    ("GIRDER_CLICK_FLUSH_INTERVAL_MS", "GIRDER_BITLY_CLICK_FLUSH_INTERVAL_MS"),
    ("GIRDER_CACHE_TTL_MS", "GIRDER_BITLY_CACHE_TTL_MS"),
    ("GIRDER_CACHE_CAPACITY", "GIRDER_BITLY_CACHE_CAPACITY"),
];

/// The `serve` command's arguments: the server's own, then each system's section.
#[must_use]
pub fn serve_command(command: clap::Command) -> clap::Command {
    let command = ServeSettings::augment_args(command.next_help_heading("Server"));
    let command = SYSTEMS.iter().fold(command, |command, plan| plan.augment(command));
    // Each section's doc comment would otherwise become the command's description.
    command.about("Serve every reference system, the API and the dashboard.").long_about(None)
}

/// Resolved, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub bind: SocketAddr,
    /// Embedded data directory.
    pub data_dir: PathBuf,
    /// The system of record, shared by every system.
    pub database_url: String,
    /// The one pool.
    pub pool: girder_sql::PoolConfig,
    /// Streaming replicas of the database that reads may go to.
    pub replica_urls: Vec<String>,
    /// How replicas are pooled, probed and waited for.
    pub replica: girder_sql::replica::ReplicaConfig,
    /// Redis, shared by every system.
    pub redis_url: Option<String>,
    /// NATS, shared by every system.
    pub nats_url: Option<String>,
    /// Origin of absolute URLs.
    pub public_url: String,
    /// Body size bound.
    pub body_bytes_max: usize,
    /// Shutdown grace period.
    pub shutdown_grace_ms: u64,
    /// Lab results directory.
    pub lab_dir: PathBuf,
    /// The rate limits every system's API gets.
    pub ratelimit: RateLimitSettings,
    /// The operator's password; `None`: demo operator tokens.
    pub operator_password: Option<String>,
    /// Bearer token lifetime.
    pub token_ttl_secs: u64,
    /// The `serve` arguments, from which each system reads its flags.
    pub matches: ArgMatches,
    /// The config file, from which each system reads its `[<slug>]` table.
    pub file: Option<toml::Table>,
}

/// Where the middleware's rate limits come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitRules {
    /// `girder_http::ratelimit::BUILTIN_RULES`, compiled in.
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

impl ServeSettings {
    /// Fills every unset field from `other`.
    #[must_use]
    pub fn or(self, other: Self) -> Self {
        Self {
            bind: self.bind.or(other.bind),
            data_dir: self.data_dir.or(other.data_dir),
            database_url: self.database_url.or(other.database_url),
            db_max_connections: self.db_max_connections.or(other.db_max_connections),
            db_acquire_timeout_ms: self.db_acquire_timeout_ms.or(other.db_acquire_timeout_ms),
            database_replica_url: self.database_replica_url.or(other.database_replica_url),
            db_replica_max_connections: self
                .db_replica_max_connections
                .or(other.db_replica_max_connections),
            db_read_your_writes_wait_ms: self
                .db_read_your_writes_wait_ms
                .or(other.db_read_your_writes_wait_ms),
            redis_url: self.redis_url.or(other.redis_url),
            nats_url: self.nats_url.or(other.nats_url),
            public_url: self.public_url.or(other.public_url),
            body_bytes_max: self.body_bytes_max.or(other.body_bytes_max),
            shutdown_grace_ms: self.shutdown_grace_ms.or(other.shutdown_grace_ms),
            ratelimit_rules: self.ratelimit_rules.or(other.ratelimit_rules),
            ratelimit_failure: self.ratelimit_failure.or(other.ratelimit_failure),
            lab_dir: self.lab_dir.or(other.lab_dir),
            operator_password: self.operator_password.or(other.operator_password),
            token_ttl_secs: self.token_ttl_secs.or(other.token_ttl_secs),
        }
    }

    /// Applies defaults and validates.
    ///
    /// # Errors
    /// A setting is out of range or unparsable.
    fn resolve(self, matches: ArgMatches, file: Option<toml::Table>) -> anyhow::Result<Config> {
        let bind = self.bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from("girder-data"));
        let database_url = match self.database_url {
            Some(url) => url,
            None => format!("sqlite:{}", data_dir.join("girder.db").display()),
        };
        let max_connections = self.db_max_connections.unwrap_or(16);
        if !(1..=1_024).contains(&max_connections) {
            bail!("db_max_connections must be 1..=1024, got {max_connections}");
        }
        let acquire_timeout_ms = self.db_acquire_timeout_ms.unwrap_or(10_000);
        if !(100..=600_000).contains(&acquire_timeout_ms) {
            bail!("db_acquire_timeout_ms must be 100..=600000, got {acquire_timeout_ms}");
        }
        let replica_urls = self.database_replica_url.unwrap_or_default();
        if !replica_urls.is_empty() && database_url.starts_with("sqlite:") {
            bail!("database_replica_urls need a postgres:// database_url (SQLite has no replicas)");
        }
        let defaults = girder_sql::replica::ReplicaConfig::default();
        let replica = girder_sql::replica::ReplicaConfig {
            max_connections: self.db_replica_max_connections.unwrap_or(defaults.max_connections),
            read_your_writes_wait_ms: self
                .db_read_your_writes_wait_ms
                .unwrap_or(defaults.read_your_writes_wait_ms),
            ..defaults
        };
        replica.validate()?;
        let body_bytes_max = self.body_bytes_max.unwrap_or(16 * 1024);
        if !(256..=64 * 1024 * 1024).contains(&body_bytes_max) {
            bail!("body_bytes_max must be 256..=67108864, got {body_bytes_max}");
        }
        let rules = match self.ratelimit_rules.as_deref().unwrap_or("builtin") {
            "builtin" => RateLimitRules::Builtin,
            "off" => RateLimitRules::Off,
            "" => bail!("ratelimit_rules must be a file, `builtin` or `off`"),
            path => RateLimitRules::File(PathBuf::from(path)),
        };
        let failure = match self.ratelimit_failure.unwrap_or(Failure::Open) {
            Failure::Open => FailurePolicy::Open,
            Failure::Closed => FailurePolicy::Closed,
        };
        let token_ttl_secs = self.token_ttl_secs.unwrap_or(86_400);
        if !(60..=2_592_000).contains(&token_ttl_secs) {
            bail!("token_ttl_secs must be 60..=2592000, got {token_ttl_secs}");
        }
        if self.operator_password.as_deref().is_some_and(|p| p.len() < 8 || p.len() > 1024) {
            bail!("operator_password must be 8 to 1024 bytes");
        }
        let public_url = self.public_url.unwrap_or_else(|| format!("http://{bind}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            bail!("public_url must start with http:// or https://, got {public_url:?}");
        }
        Ok(Config {
            bind,
            data_dir,
            database_url,
            pool: girder_sql::PoolConfig { max_connections, acquire_timeout_ms },
            replica_urls,
            replica,
            redis_url: self.redis_url,
            nats_url: self.nats_url,
            public_url,
            body_bytes_max,
            shutdown_grace_ms: self.shutdown_grace_ms.unwrap_or(10_000),
            lab_dir: self.lab_dir.unwrap_or_else(|| PathBuf::from("girder-lab")),
            ratelimit: RateLimitSettings { rules, failure },
            operator_password: self.operator_password,
            token_ttl_secs,
            matches,
            file,
        })
    }
}

/// Reads the TOML file into the server's settings and the systems' tables.
fn read_file(path: &Path) -> anyhow::Result<(ServeSettings, toml::Table)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    parse_file(&text).with_context(|| format!("config file {}", path.display()))
}

fn parse_file(text: &str) -> anyhow::Result<(ServeSettings, toml::Table)> {
    let mut table: toml::Table = toml::from_str(text)?;
    for (old, new) in RENAMED {
        if table.contains_key(*old) {
            let (section, key) = new.split_once('.').unwrap_or(("", new));
            bail!("`{old}` has moved: write `{key} = …` under `[{section}]`");
        }
    }
    let mut systems = toml::Table::new();
    for plan in &SYSTEMS {
        if let Some(section) = table.remove(plan.info().slug) {
            systems.insert(plan.info().slug.to_owned(), section);
        }
    }
    let server = ServeSettings::deserialize(toml::Value::Table(table))?;
    Ok((server, systems))
}

/// Loads the configuration from parsed `serve` arguments: flags and environment, then
/// the TOML file at `config_path` (or `./girder.toml` if it exists), then defaults.
///
/// # Errors
/// A renamed environment variable is set, an explicitly named file is missing, or any
/// file or value is invalid.
pub fn load(matches: &ArgMatches, config_path: Option<&Path>) -> anyhow::Result<Config> {
    for (old, new) in RENAMED_ENV {
        if std::env::var_os(old).is_some() {
            bail!("{old} has been renamed: set {new} instead");
        }
    }
    let cli = ServeSettings::from_arg_matches(matches)?;
    let (file_settings, file) = match config_path {
        Some(path) => read_file(path).map(|(s, t)| (s, Some(t)))?,
        None if Path::new("girder.toml").exists() => {
            read_file(Path::new("girder.toml")).map(|(s, t)| (s, Some(t)))?
        }
        None => (ServeSettings::default(), None),
    };
    cli.or(file_settings).resolve(matches.clone(), file)
}

/// The configuration `girder serve ARGS…` would run with (tests and tools): `args`
/// are the flags after `serve`, the file is `toml_text` if given.
///
/// # Errors
/// As [`load`], plus flags that do not parse.
pub fn from_args(args: &[&str], toml_text: Option<&str>) -> anyhow::Result<Config> {
    let command = serve_command(clap::Command::new("serve").no_binary_name(true));
    let matches = command.try_get_matches_from(args)?;
    let cli = ServeSettings::from_arg_matches(&matches)?;
    let (file_settings, file) = match toml_text {
        Some(text) => parse_file(text).map(|(s, t)| (s, Some(t)))?,
        None => (ServeSettings::default(), None),
    };
    cli.or(file_settings).resolve(matches, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let config = from_args(
            &["--body-bytes-max", "4096"],
            Some("body_bytes_max = 9999\nshutdown_grace_ms = 5\n[bitly]\ncodes = \"scrambled\""),
        )
        .expect("valid");
        assert_eq!(config.body_bytes_max, 4096);
        assert_eq!(config.shutdown_grace_ms, 5);
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert!(config.database_url.starts_with("sqlite:girder-data"));
        let bitly = config.file.as_ref().and_then(|f| f.get("bitly")).expect("bitly table");
        assert_eq!(bitly.get("codes").and_then(|v| v.as_str()), Some("scrambled"));
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let check = |args: &[&str], toml_text: Option<&str>, want: &str| {
            let err = from_args(args, toml_text).expect_err("invalid");
            let text = format!("{err:#}");
            assert!(text.contains(want), "{args:?} {toml_text:?}: {text}");
        };
        check(&["--db-max-connections", "0"], None, "db_max_connections must be");
        check(&["--ratelimit-failure", "maybe"], None, "invalid value 'maybe'");
        check(&["--bitly-codes", "random"], None, "invalid value 'random'");
        check(&["--gopuff-strategy", "pray"], None, "invalid value 'pray'");
        check(&["--public-url", "ftp://x"], None, "public_url must start");
        check(&[], Some("no_such_setting = 1"), "unknown field");
        check(&[], Some("bind = \"not an address\""), "invalid");
        check(&[], Some("id_batch_size = 5"), "`id_batch_size` has moved");
        check(&[], Some("cache_ttl_ms = 5"), "under `[bitly]`");
    }

    #[test]
    fn replicas_come_from_flags_env_lists_or_toml() {
        let pg = ["--database-url", "postgres://p@127.0.0.1/g"];
        let none = from_args(&pg, None).expect("valid");
        assert!(none.replica_urls.is_empty());
        let flags = [
            &pg[..],
            &[
                "--database-replica-url",
                "postgres://r1/g",
                "--database-replica-url",
                "postgres://r2/g",
            ],
        ]
        .concat();
        let two = from_args(&flags, None).expect("valid");
        assert_eq!(two.replica_urls, ["postgres://r1/g", "postgres://r2/g"]);
        let listed = from_args(
            &[&pg[..], &["--database-replica-url", "postgres://a/g,postgres://b/g"]].concat(),
            None,
        )
        .expect("valid");
        assert_eq!(listed.replica_urls, ["postgres://a/g", "postgres://b/g"]);
        let toml = "database_url = \"postgres://p/g\"\ndatabase_replica_urls = [\"postgres://t/g\"]\n\
                    db_replica_max_connections = 2\ndb_read_your_writes_wait_ms = 0";
        let file = from_args(&[], Some(toml)).expect("valid");
        assert_eq!(file.replica_urls, ["postgres://t/g"]);
        assert_eq!(file.replica.max_connections, 2);
        assert_eq!(file.replica.read_your_writes_wait_ms, 0);
        let err =
            from_args(&["--database-replica-url", "postgres://r/g"], None).expect_err("sqlite");
        assert!(format!("{err:#}").contains("SQLite has no replicas"), "{err:#}");
        let err = from_args(&[&pg[..], &["--db-replica-max-connections", "0"]].concat(), None)
            .expect_err("range");
        assert!(format!("{err:#}").contains("max_connections"), "{err:#}");
    }

    #[test]
    fn old_flags_still_work() {
        let config = from_args(&["--id-batch-size", "7", "--cache-ttl-ms", "500"], None)
            .expect("aliases parse");
        assert_eq!(config.matches.get_one::<u64>("bitly_id_batch_size"), Some(&7));
        assert_eq!(config.matches.get_one::<u64>("bitly_cache_ttl_ms"), Some(&500));
    }
}
