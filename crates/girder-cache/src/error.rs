//! The errors of building a cache, reading through it and writing to it: one enum per
//! operation.

use std::sync::Arc;

use thiserror::Error;

use crate::{ConfigError, L2Error};

/// Why a cache could not be built.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration violates a bound.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An L2 was given but no Tokio runtime is running to host its invalidation
    /// listener; build the cache inside the runtime.
    #[error("a cache with an L2 must be built inside a Tokio runtime")]
    NoRuntime,
    /// The process already has `girder_core::coarse::FLUSHERS_MAX` live caches: the
    /// coarse clock's thread publishes each one's counters every second, and that
    /// work is bounded.
    #[error("too many live caches: {0}")]
    TooManyCaches(#[from] girder_core::coarse::FlushersFull),
}

/// Why a read through the cache failed.
///
/// L2 failures are not here: a read whose L2 call fails falls through to the loader.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GetError<E> {
    /// The loader failed (its error is the source). Every caller that waited on the
    /// same load gets the same error (`Arc::ptr_eq`), and nothing was cached: the next
    /// read loads again.
    #[error("cache loader failed")]
    Load(#[source] Arc<E>),
}

impl<E> Clone for GetError<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Load(e) => Self::Load(Arc::clone(e)),
        }
    }
}

/// Why a write (`put`) or invalidation did not reach every layer.
///
/// L1 of this instance is always updated first; the error says the shared layer (and
/// so other instances) may still hold the old value, until its L2 TTL or until the
/// caller retries.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The value could not be serialized for L2 (the encoder's error is the source);
    /// nothing was changed anywhere.
    #[error("cache value cannot be serialized")]
    Encode(#[source] postcard::Error),
    /// L2 failed or timed out; L1 of this instance is updated, other instances were
    /// not told.
    #[error(transparent)]
    L2(#[from] L2Error),
}
