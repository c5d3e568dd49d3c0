//! Opening the engines the way tests need them: SQLite files shared by several
//! processes, PostgreSQL and Redis from their URLs, and names that never collide
//! between test runs.

use std::path::Path;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// A name unique to this call, for counters, keys and tables, so reruns and parallel
/// tests never share state: `prefix` followed by a random UUID.
#[must_use]
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A pool on the SQLite file at `path` (created if missing), in WAL mode, ready for
/// several processes writing at once.
///
/// # Errors
/// When the file cannot be opened.
pub async fn sqlite_pool(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a lease must survive power loss, not just a process crash.
        .synchronous(SqliteSynchronous::Full)
        // Other processes hold the write lock for microseconds at a time; waiting
        // long is harmless and failing would turn contention into test flakiness.
        .busy_timeout(Duration::from_secs(60));
    SqlitePoolOptions::new().max_connections(4).connect_with(options).await
}

/// A small pool on the PostgreSQL server at `url`.
///
/// # Errors
/// When the server cannot be reached.
pub async fn postgres_pool(url: &str) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new().max_connections(4).connect(url).await
}

/// A connection manager on the Redis server at `url`.
///
/// # Errors
/// When the server cannot be reached.
pub async fn redis_manager(url: &str) -> Result<redis::aio::ConnectionManager, redis::RedisError> {
    redis::Client::open(url)?.get_connection_manager().await
}
