//! Records with a version number and compare-and-set ("Pattern: Optimistic Locking
//! with Version Fields"): read a value with its version, compute, and write back only
//! if nobody wrote in between; the loser re-reads and retries
//! ([`crate::retry::update_with_retry`]).
//!
//! [`VersionStore`] is the trait; backends: [`MemoryVersionStore`] always,
//! `SqliteVersionStore`, `PostgresVersionStore` and `RedisVersionStore` behind the
//! features of those names.
//!
//! # The same pattern on your own table
//!
//! Real systems version their own rows (Ticketmaster's seats, GoPuff's inventory)
//! rather than a side table of opaque bytes. The whole pattern is one guarded
//! statement; "0 rows updated" is the conflict:
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn sell_one(pool: &sqlx::PgPool, item_id: i64) -> Result<bool, sqlx::Error> {
//! // Read the row with its version.
//! let (quantity, version): (i64, i64) =
//!     sqlx::query_as("SELECT quantity, version FROM inventory WHERE item_id = $1")
//!         .bind(item_id)
//!         .fetch_one(pool)
//!         .await?;
//! if quantity == 0 {
//!     return Ok(false);
//! }
//! // Write only if the version is still the one we read; bump it in the same statement.
//! let updated = sqlx::query(
//!     "UPDATE inventory SET quantity = $1, version = version + 1 \
//!      WHERE item_id = $2 AND version = $3",
//! )
//! .bind(quantity - 1)
//! .bind(item_id)
//! .bind(version)
//! .execute(pool)
//! .await?
//! .rows_affected();
//! // 0 rows: someone else wrote first. Re-read and retry (bounded, with backoff:
//! // see `girder_lock::retry::retry`), or report the conflict to the user.
//! Ok(updated == 1)
//! # }
//! ```

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::future::Future;

use thiserror::Error;

use crate::BackendError;

pub use memory::MemoryVersionStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresVersionStore;
#[cfg(feature = "redis")]
pub use redis::RedisVersionStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteVersionStore;

/// A value and the version it was stored at. Versions start at 1 and grow by one
/// per successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T = Vec<u8>> {
    /// The value.
    pub value: T,
    /// Its version.
    pub version: u64,
}

/// Why a versioned read or write failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VersionError {
    /// [`VersionStore::insert`] found a value already under the key.
    #[error("a value already exists under this key")]
    Exists,
    /// The stored version is not the expected one (`current` is `None` when the key
    /// holds no value): someone else wrote or deleted first.
    #[error("version conflict: expected {expected}, current {current:?}")]
    Conflict {
        /// The version the caller read.
        expected: u64,
        /// The version stored now, if any.
        current: Option<u64>,
    },
    /// The version does not fit the signed 64-bit integer every backend stores
    /// (above `i64::MAX`); nothing was sent.
    #[error("version {version} is above the largest storable version")]
    VersionTooLarge {
        /// The version given.
        version: u64,
    },
    /// The store holds, under `key`, data this crate never writes (a negative version,
    /// a half-written Redis hash, a duplicated key), or lacks a record the caller's
    /// own data requires; `problem` says which.
    #[error("corrupt versioned value under {key:?}: {problem}")]
    Corrupt {
        /// The key as the store names it (with the Redis prefix).
        key: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The backend failed (connection, query, script); the source is the driver's
    /// own error.
    #[error("version store backend")]
    Backend(#[from] BackendError),
}

/// Values under string keys, each with a version, written only by compare-and-set.
///
/// Guarantee: a write that names version `v` succeeds only if the stored version is
/// `v` at the instant of the write (one atomic statement or script), and then stores
/// `v + 1`. Two writers that read the same version cannot both succeed, so no update
/// is lost. It admits conflicts: under contention most writers must retry.
pub trait VersionStore: Send + Sync {
    /// The value under `key` and its version, or `None`.
    fn get(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Versioned>, VersionError>> + Send;

    /// Stores a first value under `key` at version 1.
    ///
    /// Fails with [`VersionError::Exists`] if the key holds a value.
    fn insert(
        &self,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<Versioned, VersionError>> + Send;

    /// Replaces the value if the stored version is `expected_version`, returning the
    /// new version (`expected_version + 1`).
    ///
    /// Fails with [`VersionError::Conflict`] if the version differs or the key is empty.
    fn compare_and_set(
        &self,
        key: &str,
        expected_version: u64,
        value: &[u8],
    ) -> impl Future<Output = Result<Versioned, VersionError>> + Send;

    /// Deletes the value if the stored version is `expected_version`.
    ///
    /// Fails with [`VersionError::Conflict`] if the version differs or the key is empty.
    fn delete(
        &self,
        key: &str,
        expected_version: u64,
    ) -> impl Future<Output = Result<(), VersionError>> + Send;
}

impl<S: VersionStore + ?Sized> VersionStore for std::sync::Arc<S> {
    fn get(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Versioned>, VersionError>> + Send {
        (**self).get(key)
    }

    fn insert(
        &self,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<Versioned, VersionError>> + Send {
        (**self).insert(key, value)
    }

    fn compare_and_set(
        &self,
        key: &str,
        expected_version: u64,
        value: &[u8],
    ) -> impl Future<Output = Result<Versioned, VersionError>> + Send {
        (**self).compare_and_set(key, expected_version, value)
    }

    fn delete(
        &self,
        key: &str,
        expected_version: u64,
    ) -> impl Future<Output = Result<(), VersionError>> + Send {
        (**self).delete(key, expected_version)
    }
}

/// A version as the signed 64-bit integer SQL and Redis store.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn to_db(version: u64) -> Result<i64, VersionError> {
    i64::try_from(version).map_err(|_| VersionError::VersionTooLarge { version })
}

/// The version stored under `key` back as `u64`, rejecting the negative values a
/// healthy store cannot hold.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn from_db(key: &str, version: i64) -> Result<u64, VersionError> {
    u64::try_from(version).map_err(|_| corrupt(key, "negative version"))
}

/// [`VersionError::Corrupt`] for `key`.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn corrupt(key: &str, problem: &'static str) -> VersionError {
    VersionError::Corrupt { key: key.to_owned(), problem }
}
