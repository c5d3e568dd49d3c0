//! Why a distributed backend failed a check, kept whole: the driver's own error is the
//! `source()` of [`LimitError::Backend`](crate::LimitError::Backend) (the backend
//! answered wrongly) or [`LimitError::Unavailable`](crate::LimitError::Unavailable)
//! (it did not answer), so a caller can log the chain or downcast to
//! `redis::RedisError` instead of parsing a message.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why a backend that was reached failed a check.
///
/// Driver errors are held in an [`Arc`](std::sync::Arc): one failed call answers every
/// check coalesced into it, and [`LimitError`](crate::LimitError) stays `Clone`.
/// Equality is identity for them (a driver error equals only itself and its clones);
/// [`BackendError::UnexpectedReply`] compares by value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BackendError {
    /// Redis answered with an error: a script error (e.g. a key holding corrupt
    /// state), a wrong type, an out-of-memory refusal.
    #[cfg(feature = "redis")]
    Redis(Arc<redis::RedisError>),
    /// The script answered with something it never returns; the text shows what.
    UnexpectedReply(String),
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for BackendError {
    fn from(err: redis::RedisError) -> Self {
        Self::Redis(Arc::new(err))
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The driver's message is the source's, not repeated here.
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(_) => f.write_str("redis"),
            Self::UnexpectedReply(what) => write!(f, "unexpected script reply: {what}"),
        }
    }
}

impl Error for BackendError {
    /// The driver's error itself (not its `Arc`), so it can be downcast.
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(err) => Some(&**err),
            Self::UnexpectedReply(_) => None,
        }
    }
}

impl PartialEq for BackendError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            #[cfg(feature = "redis")]
            (Self::Redis(a), Self::Redis(b)) => Arc::ptr_eq(a, b),
            (Self::UnexpectedReply(a), Self::UnexpectedReply(b)) => a == b,
            // Without the `redis` feature `UnexpectedReply` is the only variant.
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

impl Eq for BackendError {}

/// Why a backend could not be asked, or did not answer: the outcome of the check is
/// unknown, and whether to fail open or closed is the caller's policy.
///
/// Like [`BackendError`], errors are held in an [`Arc`] so
/// [`LimitError`](crate::LimitError) stays `Clone`, and equality is identity for them;
/// the other variants compare by value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum UnavailableError {
    /// The Redis driver could not reach the server: connection refused or dropped, an
    /// I/O error, or its response timeout.
    #[cfg(feature = "redis")]
    Redis(Arc<redis::RedisError>),
    /// The caller's own deadline passed before the backend answered (a wrapper such as
    /// an HTTP layer that bounds each check raises this).
    TimedOut {
        /// How long the check was given.
        after: Duration,
    },
    /// Coalescing: [`Coalescing::max_queued`](crate::Coalescing::max_queued) checks
    /// already wait for Redis, so this one is refused at once rather than queued.
    #[cfg(feature = "redis")]
    QueueFull {
        /// The configured bound on waiting checks.
        max_queued: usize,
    },
    /// Coalescing: the task that sends batches stopped (its runtime shut down) before
    /// it answered this check.
    #[cfg(feature = "redis")]
    CoalescerStopped,
    /// A backend implemented outside this crate could not be reached; built with
    /// [`UnavailableError::other`].
    Other(Arc<dyn Error + Send + Sync + 'static>),
}

impl UnavailableError {
    /// The failure of a backend this crate does not know (or a test's stand-in).
    pub fn other(err: impl Error + Send + Sync + 'static) -> Self {
        Self::Other(Arc::new(err))
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for UnavailableError {
    fn from(err: redis::RedisError) -> Self {
        Self::Redis(Arc::new(err))
    }
}

impl fmt::Display for UnavailableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A driver's message is the source's, not repeated here.
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(_) => f.write_str("redis"),
            Self::TimedOut { after } => write!(f, "no answer within {after:?}"),
            #[cfg(feature = "redis")]
            Self::QueueFull { max_queued } => {
                write!(f, "{max_queued} checks already wait for redis")
            }
            #[cfg(feature = "redis")]
            Self::CoalescerStopped => f.write_str("the coalescing task stopped before answering"),
            Self::Other(_) => f.write_str("limiter engine"),
        }
    }
}

impl Error for UnavailableError {
    /// The driver's error itself (not its `Arc`), so it can be downcast.
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(err) => Some(&**err),
            Self::Other(err) => Some(&**err),
            _ => None,
        }
    }
}

impl PartialEq for UnavailableError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            #[cfg(feature = "redis")]
            (Self::Redis(a), Self::Redis(b)) => Arc::ptr_eq(a, b),
            (Self::TimedOut { after: a }, Self::TimedOut { after: b }) => a == b,
            #[cfg(feature = "redis")]
            (Self::QueueFull { max_queued: a }, Self::QueueFull { max_queued: b }) => a == b,
            #[cfg(feature = "redis")]
            (Self::CoalescerStopped, Self::CoalescerStopped) => true,
            (Self::Other(a), Self::Other(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for UnavailableError {}

// The crate's tests always build the `redis` feature (see its dev-dependencies).
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
        let a = UnavailableError::other(Down);
        assert_eq!(a, a.clone());
        assert_ne!(a, UnavailableError::other(Down), "errors compare by identity");
        assert_eq!(a.to_string(), "limiter engine");
        assert_eq!(a.source().and_then(|s| s.downcast_ref::<Down>()), Some(&Down));
    }

    #[test]
    fn a_redis_error_is_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let a = UnavailableError::from(redis::RedisError::from(io));
        assert_eq!(a, a.clone());
        assert_eq!(a.to_string(), "redis");
        let source = a.source().and_then(|s| s.downcast_ref::<redis::RedisError>());
        assert!(source.is_some_and(redis::RedisError::is_connection_refusal), "{a:?}");
    }

    #[test]
    fn reasons_of_its_own_compare_by_value_and_have_no_source() {
        let after = Duration::from_millis(500);
        let cases = [
            (UnavailableError::TimedOut { after }, "no answer within 500ms"),
            (UnavailableError::QueueFull { max_queued: 8 }, "8 checks already wait for redis"),
            (UnavailableError::CoalescerStopped, "the coalescing task stopped before answering"),
        ];
        for (error, display) in cases {
            assert_eq!(error, error.clone());
            assert_eq!(error.to_string(), display);
            assert!(error.source().is_none(), "{error:?}");
        }
        assert_ne!(
            UnavailableError::TimedOut { after },
            UnavailableError::TimedOut { after: after * 2 }
        );
    }
}
