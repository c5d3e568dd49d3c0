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

/// A database for one test: a SQLite file in a temp dir, or a fresh PostgreSQL
/// database created for the test (`CREATE DATABASE girder_t_<uuid>`) and dropped by
/// [`TestDb::drop_db`].
#[derive(Debug)]
pub enum TestDb {
    /// A SQLite file in a directory removed when this value drops.
    Sqlite {
        /// The directory holding the file.
        dir: tempfile::TempDir,
        /// `sqlite:<dir>/girder.db`.
        url: String,
    },
    /// A database of its own on the configured PostgreSQL server.
    Postgres {
        /// The server's admin URL (from `GIRDER_POSTGRES_URL`).
        admin_url: String,
        /// The database's name.
        name: String,
        /// The URL of the test's database.
        url: String,
    },
}

impl TestDb {
    /// The URL a system opens.
    #[must_use]
    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url, .. } => url,
        }
    }

    /// `sqlite` or `postgres`, for assertion messages.
    #[must_use]
    pub const fn engine(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres { .. } => "postgres",
        }
    }

    /// A fresh SQLite file.
    ///
    /// # Panics
    /// If no temporary directory can be made.
    #[must_use]
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("girder.db").display());
        Self::Sqlite { dir, url }
    }

    /// A fresh database on the configured PostgreSQL, or `None` (a loud skip) when it
    /// is unreachable outside CI.
    ///
    /// # Panics
    /// Under `CI=true` when PostgreSQL is unreachable, or if the database cannot be made.
    pub async fn postgres(test: &str) -> Option<Self> {
        let admin_url =
            girder_core::services::require(girder_core::services::Service::Postgres, test)?;
        let name = format!("girder_t_{}", uuid::Uuid::new_v4().simple());
        let admin = PgPool::connect(&admin_url).await.expect("connect to postgres");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create db");
        admin.close().await;
        let base = admin_url.split('?').next().unwrap_or(&admin_url);
        let (server, _db) = base.rsplit_once('/').expect("postgres url has a path");
        let url = format!("{server}/{name}");
        Some(Self::Postgres { admin_url, name, url })
    }

    /// SQLite, plus PostgreSQL when reachable.
    pub async fn all(test: &str) -> Vec<Self> {
        let mut dbs = vec![Self::sqlite()];
        dbs.extend(Self::postgres(test).await);
        dbs
    }

    /// Drops the PostgreSQL database (closing its sessions; its logical replication
    /// slots go with it); removes the SQLite file. PostgreSQL refuses the drop while
    /// one of the database's slots is active — a session of a killed process can
    /// still be decoding for a moment — so the drop is retried for up to 10 s: a
    /// database left behind would keep its slots, and they the server's WAL, for ever.
    pub async fn drop_db(self) {
        /// PostgreSQL's "object in use": here, an active slot of the database.
        const OBJECT_IN_USE: &str = "55006";
        if let Self::Postgres { admin_url, name, .. } = self
            && let Ok(admin) = PgPool::connect(&admin_url).await
        {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&admin)
                    .await;
                match dropped {
                    Err(sqlx::Error::Database(e))
                        if e.code().as_deref() == Some(OBJECT_IN_USE)
                            && std::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ => break,
                }
            }
            admin.close().await;
        }
    }
}
