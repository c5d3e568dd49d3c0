//! What a distributed backend answered when it failed a check, kept whole: the
//! driver's own error as the `source()` of [`LimitError::Backend`](crate::LimitError),
//! so a caller can log the chain or downcast to `redis::RedisError`.

use std::error::Error;
use std::fmt;
#[cfg(feature = "redis")]
use std::sync::Arc;

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
