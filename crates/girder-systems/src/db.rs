//! The system-of-record database every system opens: the engine follows the URL
//! (`sqlite:PATH` or `postgres://...`), with the same pool and durability settings
//! for every system, decided once here.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// A connection pool on one of the two engines.
#[derive(Debug, Clone)]
pub enum Database {
    /// SQLite, the embedded default (one file, WAL mode).
    Sqlite(SqlitePool),
    /// PostgreSQL, shared by several instances.
    Postgres(PgPool),
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL names neither engine.
    #[error("unsupported database URL {0:?}: use sqlite:PATH or postgres://...")]
    UnsupportedUrl(String),
    /// The URL is malformed or the engine cannot be reached.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Opens a pool of at most `max_connections` on `url`; a statement waits at most
/// `acquire_timeout` for a connection (and, on SQLite, for the write lock).
///
/// # Errors
/// An unsupported or malformed URL, or an engine that cannot be reached.
pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<Database, ConnectError> {
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode loses nothing on a process crash, only on power loss.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(acquire_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Database::Sqlite(pool))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(PgConnectOptions::from_str(url)?)
            .await?;
        Ok(Database::Postgres(pool))
    } else {
        Err(ConnectError::UnsupportedUrl(url.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_url_picks_the_engine_and_anything_else_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite:{}", dir.path().join("t.db").display());
        let opened = connect(&url, 2, Duration::from_secs(1)).await.expect("sqlite opens");
        assert!(matches!(opened, Database::Sqlite(_)));
        for url in ["mysql://root@localhost/db", "", "sqlite", "http://x"] {
            let refused = connect(url, 2, Duration::from_secs(1)).await;
            assert!(
                matches!(refused, Err(ConnectError::UnsupportedUrl(ref u)) if u == url),
                "{url}"
            );
        }
    }
}
