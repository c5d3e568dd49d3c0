//! What the storage engine behind a [`RangeSource`](super::RangeSource) failed with,
//! kept whole: the driver's own error is the `source()` of
//! [`LeaseError::Backend`](super::LeaseError::Backend), so a caller can log the chain
//! or downcast to `redis::RedisError` or `sqlx::Error` instead of parsing a message.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Why the engine behind a counter failed a lease.
///
/// Errors are held in an [`Arc`] so [`LeaseError`](super::LeaseError) stays `Clone`:
/// [`IdAllocator`](super::IdAllocator) hands the leader's error to every caller that
/// waited for the same lease. Equality is identity: an error equals only itself and
/// its clones (drivers give their errors no meaningful `==`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BackendError {
    /// Redis failed: connection refused or lost, or the command was refused.
    #[cfg(feature = "redis")]
    Redis(Arc<redis::RedisError>),
    /// SQLite failed: the pool is closed or exhausted, or a statement failed.
    #[cfg(feature = "sqlite")]
    Sqlite(Arc<sqlx::Error>),
    /// PostgreSQL failed: unreachable, the pool is closed or exhausted, or a statement
    /// failed.
    #[cfg(feature = "postgres")]
    Postgres(Arc<sqlx::Error>),
    /// The engine of a [`RangeSource`](super::RangeSource) implemented outside this
    /// crate failed; built with [`BackendError::other`].
    Other(Arc<dyn Error + Send + Sync + 'static>),
}

impl BackendError {
    /// The failure of an engine this crate does not know, for sources implemented
    /// elsewhere.
    pub fn other(err: impl Error + Send + Sync + 'static) -> Self {
        Self::Other(Arc::new(err))
    }

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
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The engine's message is the source's, not repeated here.
        f.write_str(match self {
            #[cfg(feature = "redis")]
            Self::Redis(_) => "redis",
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => "postgres",
            Self::Other(_) => "counter engine",
        })
    }
}

impl Error for BackendError {
    /// The engine's error itself (not its `Arc`), so it can be downcast.
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(err) => Some(&**err),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(err) => Some(&**err),
            #[cfg(feature = "postgres")]
            Self::Postgres(err) => Some(&**err),
            Self::Other(err) => Some(&**err),
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
            (Self::Other(a), Self::Other(b)) => Arc::ptr_eq(a, b),
            // Without engine features `Other` is the only variant.
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

impl Eq for BackendError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Down;

    impl fmt::Display for Down {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("down")
        }
    }

    impl Error for Down {}

    #[test]
    fn another_engines_error_is_the_source_and_equals_only_its_clones() {
        let a = BackendError::other(Down);
        assert_eq!(a, a.clone());
        assert_ne!(a, BackendError::other(Down), "errors compare by identity");
        assert_eq!(a.to_string(), "counter engine");
        assert_eq!(a.source().and_then(|s| s.downcast_ref::<Down>()), Some(&Down));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_redis_error_is_the_source() {
        let a = BackendError::redis(redis::RedisError::from((
            redis::ErrorKind::TypeError,
            "not an integer",
        )));
        assert_eq!(a.to_string(), "redis");
        let source = a.source().and_then(|s| s.downcast_ref::<redis::RedisError>());
        assert_eq!(source.map(redis::RedisError::kind), Some(redis::ErrorKind::TypeError));
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_sqlite_error_is_the_source() {
        let a = BackendError::sqlite(sqlx::Error::PoolClosed);
        assert!(matches!(
            a.source().and_then(|s| s.downcast_ref::<sqlx::Error>()),
            Some(sqlx::Error::PoolClosed)
        ));
    }
}
