//! Sharing sketches through Redis (feature `redis`), two ways:
//!
//! - [`RedisHyperLogLog`]: Redis's own HyperLogLog (`PFADD`, `PFCOUNT`, `PFMERGE`), for
//!   counting distinct keys across instances with nothing held in process. Redis hashes
//!   with its own function at a fixed `p = 14`, so these counters do not merge with this
//!   crate's [`crate::hyperloglog::HyperLogLog`].
//! - [`SharedSketch`]: any [`crate::Mergeable`] sketch of this crate — Bloom,
//!   counting Bloom, Count-Min, HyperLogLog, Top-K — shared as *per-instance sketches
//!   merged on read*. Redis cannot run this crate's merges (a Lua script would have to
//!   re-implement every sketch), so each instance publishes its whole sketch under its
//!   own key and a reader fetches all of them and merges locally. Writes never
//!   conflict; a read costs one round trip for the list of instances and one for their
//!   sketches, and as much memory and merge work as there are instances.
//!
//! Both are async on the `redis` crate's [`ConnectionManager`] (tokio); this crate
//! starts no runtime and spawns nothing, the caller's runtime drives every call.
//!
//! [`ConnectionManager`]: ::redis::aio::ConnectionManager

mod hyperloglog;
mod shared;

pub use hyperloglog::{BATCH_KEYS_MAX, RedisHyperLogLog, RedisHyperLogLogConfig};
pub use shared::{INSTANCES_MAX, SharedSketch, SharedSketchConfig};

use thiserror::Error;

use crate::error::{DecodeError, MergeError};

/// Why a Redis sketch operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RedisSketchError {
    /// The command failed: connection, server error, or a reply of the wrong type.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// An instance's stored sketch is not a readable sketch of the expected kind.
    #[error("the sketch of instance {instance:?} is unreadable: {source}")]
    Decode {
        /// The instance whose bytes failed.
        instance: String,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// An instance's sketch has another shape than the others, so they cannot merge.
    #[error("the sketch of instance {instance:?} does not merge with the others: {source}")]
    Merge {
        /// The instance whose sketch did not merge.
        instance: String,
        /// Why.
        #[source]
        source: MergeError,
    },
    /// More instances are registered for a sketch than a read may fetch.
    #[error("{found} instances are registered, more than the {max} a read fetches")]
    TooManyInstances {
        /// The instances registered.
        found: usize,
        /// The configured limit.
        max: usize,
    },
}
