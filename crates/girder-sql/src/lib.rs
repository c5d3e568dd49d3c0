//! The system of record every Girder system shares: **one pool per instance**, on
//! SQLite (the embedded default) or PostgreSQL (shared by several instances), chosen
//! by the URL. Pool size, acquire timeout and durability settings are decided here,
//! once, for every system.
//!
//! - [`Db`]: the pool, an enum because the set of engines is known; [`on_db!`] runs one
//!   body on whichever pool it holds, so a statement written once with `$n`
//!   placeholders (both engines accept them) serves both.
//! - [`migrate`]: each system's `sqlx::migrate!` files, applied at start-up.
//! - [`keys`]: random keys instances share through a settings table (MAC keys,
//!   the code permutation's key).
//! - [`replica`]: [`replica::ReadRouter`], writes to the primary and reads to
//!   PostgreSQL streaming replicas with read-your-writes (Pattern: Database Read
//!   Replicas). On SQLite every read goes to the one database.
//!
//! Why one pool: PostgreSQL's default `max_connections` is 100. With a pool per
//! system, sixteen systems at sixteen connections would need 256 per instance; with
//! one pool an instance holds at most [`PoolConfig::max_connections`], whatever the
//! number of systems, and `instances × max_connections` is the whole budget.

pub mod keys;
pub mod migrate;
pub mod replica;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use keys::{KeyError, shared_key};

/// A connection pool on one of the two engines. Clones share the pool.
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite, the embedded default (one file, WAL mode).
    Sqlite(SqlitePool),
    /// PostgreSQL, shared by several instances.
    Postgres(PgPool),
}

/// Runs the same body on whichever pool a [`Db`] holds. The body is type-checked
/// once per engine, so it may use engine-specific row types, and one SQL text with
/// `$n` placeholders serves both engines.
///
/// ```
/// # async fn f(db: &girder_sql::Db) -> Result<i64, sqlx::Error> {
/// let n: i64 = girder_sql::on_db!(db, |pool| {
///     sqlx::query_scalar("SELECT $1 + 1").bind(41_i64).fetch_one(pool).await?
/// });
/// # Ok(n) }
/// ```
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::Db::Sqlite($pool) => $body,
            $crate::Db::Postgres($pool) => $body,
        }
    };
}

/// How the one pool is sized and how long a statement waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most connections this instance holds, over every system. Default 16.
    pub max_connections: u32,
    /// How long a statement waits for a connection (and, on SQLite, for the write
    /// lock) before failing. Default 10,000 ms.
    pub acquire_timeout_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self { max_connections: 16, acquire_timeout_ms: 10_000 }
    }
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL names neither engine.
    #[error("unsupported database URL {0:?}: use sqlite:PATH or postgres://...")]
    UnsupportedUrl(String),
    /// The pool settings are out of range.
    #[error("max_connections must be at least 1")]
    NoConnections,
    /// The URL is malformed or the engine cannot be reached.
    #[error("opening the database")]
    Database(#[from] sqlx::Error),
}

impl Db {
    /// Opens the pool on `url` (`sqlite:PATH` or `postgres://...`).
    ///
    /// # Errors
    /// An unsupported or malformed URL, an empty pool, or an engine that cannot be
    /// reached.
    pub async fn connect(url: &str, config: PoolConfig) -> Result<Self, ConnectError> {
        if config.max_connections == 0 {
            return Err(ConnectError::NoConnections);
        }
        let timeout = Duration::from_millis(config.acquire_timeout_ms);
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // NORMAL in WAL mode loses nothing on a process crash, only on power loss.
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(timeout);
            let pool = SqlitePoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(timeout)
                .connect_with(options)
                .await?;
            Ok(Self::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(timeout)
                .connect_with(PgConnectOptions::from_str(url)?)
                .await?;
            Ok(Self::Postgres(pool))
        } else {
            Err(ConnectError::UnsupportedUrl(url.to_owned()))
        }
    }

    /// The engine's name, for logs and metrics.
    #[must_use]
    pub const fn engine(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Whether the database answers a trivial query.
    ///
    /// # Errors
    /// The database is unreachable or the pool is closed.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_db!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.map(drop))
    }

    /// Closes the pool, waiting for statements in flight.
    pub async fn close(&self) {
        on_db!(self, |pool| pool.close().await);
    }

    /// Returns setting `name` of `table` (a `(name TEXT PRIMARY KEY, value TEXT)`
    /// table), storing `init` first if it has none. Every instance sharing the
    /// database sees the same value, whichever wrote first.
    ///
    /// `table` is a static name chosen by the calling system, never input.
    ///
    /// # Errors
    /// Database failures.
    pub async fn setting_or_init(
        &self,
        table: &'static str,
        name: &str,
        init: &str,
    ) -> Result<String, sqlx::Error> {
        debug_assert!(table.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{table}");
        let insert = format!(
            "INSERT INTO {table} (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
        );
        let select = format!("SELECT value FROM {table} WHERE name = $1");
        let value = on_db!(self, |pool| {
            sqlx::query(&insert).bind(name).bind(init).execute(pool).await?;
            sqlx::query_scalar::<_, String>(&select).bind(name).fetch_one(pool).await?
        });
        Ok(value)
    }
}

/// The directory a `sqlite:` URL's file lives in, so it can be created before the
/// pool opens. `None` for other engines, in-memory databases and bare file names.
#[must_use]
pub fn sqlite_parent_dir(url: &str) -> Option<std::path::PathBuf> {
    let path = url.strip_prefix("sqlite:")?;
    let path = path.strip_prefix("//").unwrap_or(path);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()).map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_url_picks_the_engine_and_anything_else_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite:{}", dir.path().join("t.db").display());
        let config = PoolConfig { max_connections: 2, acquire_timeout_ms: 1_000 };
        let opened = Db::connect(&url, config).await.expect("sqlite opens");
        assert_eq!(opened.engine(), "sqlite");
        opened.ping().await.expect("ping");
        for url in ["mysql://root@localhost/db", "", "sqlite", "http://x"] {
            let refused = Db::connect(url, config).await;
            assert!(
                matches!(refused, Err(ConnectError::UnsupportedUrl(ref u)) if u == url),
                "{url}"
            );
        }
        let empty = PoolConfig { max_connections: 0, ..config };
        assert!(matches!(Db::connect(&url, empty).await, Err(ConnectError::NoConnections)));
    }

    #[test]
    fn sqlite_parent_dirs() {
        let check = |url: &str, want: Option<&str>| {
            assert_eq!(sqlite_parent_dir(url), want.map(std::path::PathBuf::from), "{url}");
        };
        check("sqlite:girder-data/girder.db", Some("girder-data"));
        check("sqlite://tmp/x/y.db?mode=rwc", Some("tmp/x"));
        check("sqlite::memory:", None);
        check("sqlite:g.db", None);
        check("postgres://x/y", None);
    }
}
