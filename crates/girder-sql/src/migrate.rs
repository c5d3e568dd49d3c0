//! Schema migrations: each system keeps its files in its own crate, embedded with
//! `sqlx::migrate!` — one `migrations/` directory when the dialects agree, or
//! `migrations/sqlite/` and `migrations/postgres/` when they do not — and they are
//! applied at start-up, before the system opens.
//!
//! All systems share one `_sqlx_migrations` table, so versions are unique across the
//! workspace: a system's versions are its catalogue number times 1,000 plus a
//! sequence (`3001_links.sql` is Bit.ly's first); the server's own tables are
//! versions below 900 ([`server`]), and pattern crates with tables of their own take
//! 900–999 (girder-stream's partitions and members are 901). Each migrator ignores
//! the versions of the others.
//!
//! On PostgreSQL every migrator takes the same advisory lock (sqlx derives it from
//! the database name), so instances starting together apply each migration once, one
//! after another. The first migration of each system creates its tables with
//! `IF NOT EXISTS`, so a database created before migrations existed upgrades in place.

use sqlx::migrate::{MigrateError, Migrator};

use crate::Db;

/// One system's migrations, one set per engine.
#[derive(Debug)]
pub struct Migrations {
    /// The system's slug, for errors and logs.
    pub system: &'static str,
    /// The SQLite dialect.
    pub sqlite: Migrator,
    /// The PostgreSQL dialect.
    pub postgres: Migrator,
}

/// The server's own tables: `girder_settings` (the token signing key), version 1;
/// `girder_idempotency` (girder-http's Idempotency-Key records), version 2.
#[must_use]
pub fn server() -> Migrations {
    Migrations {
        system: "server",
        sqlite: sqlx::migrate!("migrations/sqlite"),
        postgres: sqlx::migrate!("migrations/postgres"),
    }
}

/// The settings table the server's own shared keys live in.
pub const SERVER_SETTINGS_TABLE: &str = "girder_settings";

/// Why migrations could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("migrating {system}'s tables")]
pub struct Error {
    /// The system whose migrations failed.
    pub system: &'static str,
    /// sqlx's error: a failed statement, a changed checksum, a dirty version.
    #[source]
    pub source: MigrateError,
}

/// Applies `migrations` for the engine `db` runs on.
///
/// # Errors
/// A statement failed, an applied migration's file changed, or a previous run left
/// a migration half applied.
pub async fn run(db: &Db, migrations: Migrations) -> Result<(), Error> {
    let Migrations { system, mut sqlite, mut postgres } = migrations;
    let result = match db {
        Db::Sqlite(pool) => sqlite.set_ignore_missing(true).run(pool).await,
        Db::Postgres(pool) => postgres.set_ignore_missing(true).run(pool).await,
    };
    result.map_err(|source| Error { system, source })
}
