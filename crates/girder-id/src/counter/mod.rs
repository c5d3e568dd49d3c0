//! A shared counter leased in ranges ("Pattern: Counter with Base62 Encoding",
//! "counter batching"): each server leases a block of ids from one backend counter
//! and hands them out locally, so the backend sees one round trip per block.
//!
//! [`RangeSource`] is the backend trait; [`IdAllocator`] is the per-process cache
//! in front of it. Backends: [`MemorySource`] always, `SqliteSource`,
//! `PostgresSource` and `RedisSource` behind the features of those names.

mod allocator;
mod backend;
mod cursor;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::future::Future;
use std::ops::Range;

use thiserror::Error;

pub use allocator::{AllocatorConfig, IdAllocator};
pub use backend::BackendError;
pub use memory::MemorySource;
#[cfg(feature = "postgres")]
pub use postgres::PostgresSource;
#[cfg(feature = "redis")]
pub use redis::RedisSource;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteSource;

/// The largest number of ids one lease may ask for (2^32 - 1).
///
/// A bound rather than a convenience: a lease of "everything" would exhaust a shared
/// counter for every other process in one call. The exact value lets [`IdAllocator`]
/// keep its position in a lease in 32 bits of one atomic word.
pub const MAX_LEASE_SIZE: u64 = u32::MAX as u64;

/// Every backend hands out ids below this value (`i64::MAX`).
///
/// PostgreSQL `BIGINT`, SQLite `INTEGER` and Redis integers are signed 64-bit, so the
/// id space is the same on every backend and an app can move between them.
pub const ID_LIMIT: u64 = i64::MAX as u64;

/// Why a lease failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The counter cannot grant the requested ids without passing [`ID_LIMIT`].
    #[error("id counter exhausted")]
    Exhausted,
    /// The backend failed (connection, query, refused command); the source is the
    /// engine's own error.
    #[error("id counter backend")]
    Backend(#[from] BackendError),
    /// The backend holds a counter this crate cannot have written (edited or dropped
    /// by hand); nothing was granted.
    #[error("id counter {counter:?} is corrupt: {problem}")]
    Corrupt {
        /// The counter's name (SQL row) or key (Redis).
        counter: String,
        /// What is wrong with it.
        problem: Corruption,
    },
    /// A [`RangeSource`] granted a range of the wrong length; [`IdAllocator`] hands out
    /// none of it.
    #[error("source granted {granted:?} for a lease of {requested} ids")]
    WrongLength {
        /// The range the source returned.
        granted: Range<u64>,
        /// The number of ids asked for.
        requested: u64,
    },
    /// The requested lease size is 0 or above [`MAX_LEASE_SIZE`].
    #[error("lease size {requested} outside 1..={max}")]
    InvalidSize {
        /// The size asked for.
        requested: u64,
        /// The largest size allowed.
        max: u64,
    },
}

/// What is wrong with a corrupt counter ([`LeaseError::Corrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The counter's row was deleted after the source created it.
    #[error("its row disappeared")]
    Missing,
    /// More than one row carries the counter's name (the table lost its primary key).
    #[error("its name is not unique")]
    DuplicateName,
    /// The counter holds a negative value.
    #[error("it holds the negative value {value}")]
    Negative {
        /// The value after the increment.
        value: i64,
    },
    /// After the increment the counter holds less than the increment: it was negative
    /// before.
    #[error("its value {value} is below the increment {increment}")]
    BelowIncrement {
        /// The value after the increment.
        value: u64,
        /// The number of ids leased.
        increment: u64,
    },
}

/// Checks a lease size against `1..=MAX_LEASE_SIZE`.
pub(crate) fn check_lease_size(n: u64) -> Result<(), LeaseError> {
    if n == 0 || n > MAX_LEASE_SIZE {
        return Err(LeaseError::InvalidSize { requested: n, max: MAX_LEASE_SIZE });
    }
    Ok(())
}

/// A backend counter that grants disjoint ranges of ids.
///
/// Guarantee: a granted range is never granted again by any source sharing the same
/// backend counter — across processes, restarts and crashes. Gaps are allowed (a
/// process that crashes loses the rest of its lease); duplicates never are.
pub trait RangeSource: Send + Sync {
    /// Leases `n` fresh ids; the returned range is never returned again by any source
    /// sharing the same backend counter, across processes, restarts and crashes (gaps
    /// allowed, duplicates never). The range holds exactly `n` ids, all below
    /// [`ID_LIMIT`].
    ///
    /// Fails with [`LeaseError::InvalidSize`] for `n == 0` or `n > MAX_LEASE_SIZE`,
    /// [`LeaseError::Exhausted`] when the counter is spent, [`LeaseError::Backend`]
    /// when the backend cannot be reached or refuses, and [`LeaseError::Corrupt`] when
    /// it holds a counter this crate cannot have written.
    fn lease(&self, n: u64) -> impl Future<Output = Result<Range<u64>, LeaseError>> + Send;
}

impl<S: RangeSource + ?Sized> RangeSource for std::sync::Arc<S> {
    fn lease(&self, n: u64) -> impl Future<Output = Result<Range<u64>, LeaseError>> + Send {
        (**self).lease(n)
    }
}

/// Any of the built-in backends, chosen at start-up (from configuration), without `dyn`.
#[derive(Debug)]
#[non_exhaustive]
// Built once per process; boxing the larger variants would only add an indirection.
#[allow(clippy::large_enum_variant)]
pub enum AnySource {
    /// The in-process counter.
    Memory(MemorySource),
    /// A row in a SQLite table.
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteSource),
    /// A row in a PostgreSQL table.
    #[cfg(feature = "postgres")]
    Postgres(PostgresSource),
    /// A Redis integer key.
    #[cfg(feature = "redis")]
    Redis(RedisSource),
}

impl RangeSource for AnySource {
    async fn lease(&self, n: u64) -> Result<Range<u64>, LeaseError> {
        match self {
            Self::Memory(s) => s.lease(n).await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => s.lease(n).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(s) => s.lease(n).await,
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.lease(n).await,
        }
    }
}

/// Turns the counter value after an increment by `n` into the granted range,
/// rejecting values a healthy counter cannot produce (someone edited the row/key).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn range_ending_at(counter: &str, end: i64, n: u64) -> Result<Range<u64>, LeaseError> {
    let end =
        u64::try_from(end).map_err(|_| corrupt(counter, Corruption::Negative { value: end }))?;
    let start = end
        .checked_sub(n)
        .ok_or_else(|| corrupt(counter, Corruption::BelowIncrement { value: end, increment: n }))?;
    Ok(start..end)
}

/// [`LeaseError::Corrupt`] for `counter`.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn corrupt(counter: &str, problem: Corruption) -> LeaseError {
    LeaseError::Corrupt { counter: counter.to_owned(), problem }
}
