//! What a storage engine behind a lock store failed with, kept whole: the driver's own
//! error (one variant per engine) as the `source()` of every operation's `Backend`
//! variant, so a caller can log the chain or downcast to `redis::RedisError` or
//! `sqlx::Error` instead of parsing a message.

use std::error::Error;
use std::fmt;
#[cfg(any(feature = "redis", feature = "sqlite", feature = "postgres"))]
use std::sync::Arc;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::txn::TxnError;

/// Why a storage engine failed an operation.
///
/// Driver errors are held in an [`Arc`](std::sync::Arc) so the operation errors that
/// carry this stay `Clone`. Equality is identity for them: a driver error equals only
/// itself and its clones (drivers give their errors no meaningful `==`), while the
/// other variants compare by value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BackendError {
    /// Redis failed: connection refused or lost, or a command or script error.
    #[cfg(feature = "redis")]
    Redis(Arc<redis::RedisError>),
    /// SQLite failed: the pool is closed or exhausted, or a statement failed.
    #[cfg(feature = "sqlite")]
    Sqlite(Arc<sqlx::Error>),
    /// PostgreSQL failed: unreachable, the pool is closed or exhausted, or a statement
    /// failed.
    #[cfg(feature = "postgres")]
    Postgres(Arc<sqlx::Error>),
    /// Every attempt of a transaction was aborted by a concurrent one (deadlock,
    /// serialization failure, busy database) until the retry policy was spent.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    Contended {
        /// Attempts made.
        attempts: u32,
    },
    /// The engine holds or returned data this crate never writes (a corrupt row or
    /// key, a negative counter, a malformed script reply); the text shows what.
    Unexpected(String),
}

impl BackendError {
    /// A Redis failure.
    #[cfg(feature = "redis")]
    pub(crate) fn redis(err: redis::RedisError) -> Self {
        Self::Redis(Arc::new(err))
    }

    /// A SQLite failure.
    #[cfg(feature = "sqlite")]
    pub(crate) fn sqlite(err: sqlx::Error) -> Self {
        Self::Sqlite(Arc::new(err))
    }

    /// A PostgreSQL failure.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(err: sqlx::Error) -> Self {
        Self::Postgres(Arc::new(err))
    }

    /// A SQLite transaction that did not commit.
    #[cfg(feature = "sqlite")]
    pub(crate) fn sqlite_txn(err: TxnError) -> Self {
        match err {
            TxnError::Db(err) => Self::sqlite(err),
            TxnError::RetriesExhausted { attempts } => Self::Contended { attempts },
        }
    }

    /// A PostgreSQL transaction that did not commit.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres_txn(err: TxnError) -> Self {
        match err {
            TxnError::Db(err) => Self::postgres(err),
            TxnError::RetriesExhausted { attempts } => Self::Contended { attempts },
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The driver's message is the source's, not repeated here.
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(_) => f.write_str("redis"),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => f.write_str("sqlite"),
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => f.write_str("postgres"),
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            Self::Contended { attempts } => {
                write!(f, "transaction aborted by contention {attempts} times; giving up")
            }
            Self::Unexpected(what) => write!(f, "unexpected data in the store: {what}"),
        }
    }
}

impl Error for BackendError {
    /// The driver's error itself (not its `Arc`), so it can be downcast.
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(err) => Some(&**err),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(err) => Some(&**err),
            #[cfg(feature = "postgres")]
            Self::Postgres(err) => Some(&**err),
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            Self::Contended { .. } => None,
            Self::Unexpected(_) => None,
        }
    }
}

impl PartialEq for BackendError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            #[cfg(feature = "redis")]
            (Self::Redis(a), Self::Redis(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "sqlite")]
            (Self::Sqlite(a), Self::Sqlite(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "postgres")]
            (Self::Postgres(a), Self::Postgres(b)) => Arc::ptr_eq(a, b),
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            (Self::Contended { attempts: a }, Self::Contended { attempts: b }) => a == b,
            (Self::Unexpected(a), Self::Unexpected(b)) => a == b,
            // Without engine features `Unexpected` is the only variant.
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

impl Eq for BackendError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unexpected_data_compares_by_value_and_has_no_source() {
        let a = BackendError::Unexpected("fence counter holds -1".to_owned());
        assert_eq!(a, a.clone());
        assert_ne!(a, BackendError::Unexpected("other".to_owned()));
        assert_eq!(a.to_string(), "unexpected data in the store: fence counter holds -1");
        assert!(a.source().is_none());
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_redis_error_is_the_source_and_equals_only_its_clones() {
        let err = || redis::RedisError::from((redis::ErrorKind::ResponseError, "WRONGTYPE"));
        let a = BackendError::redis(err());
        assert_eq!(a, a.clone());
        assert_ne!(a, BackendError::redis(err()), "driver errors compare by identity");
        assert_eq!(a.to_string(), "redis");
        let source = a.source().and_then(|s| s.downcast_ref::<redis::RedisError>());
        assert_eq!(source.map(redis::RedisError::kind), Some(redis::ErrorKind::ResponseError));
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn a_transaction_error_keeps_the_database_error() {
        let db = BackendError::postgres_txn(TxnError::Db(sqlx::Error::PoolClosed));
        assert!(matches!(
            db.source().and_then(|s| s.downcast_ref::<sqlx::Error>()),
            Some(sqlx::Error::PoolClosed)
        ));
        let contended = BackendError::postgres_txn(TxnError::RetriesExhausted { attempts: 3 });
        assert_eq!(contended, BackendError::Contended { attempts: 3 });
    }
}
