//! One error per operation on a shard set: building it, adding a shard, removing one.
//! Every refusal leaves the set as it was.

use thiserror::Error;

use super::ShardId;

/// Why a shard set could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No shards were given: no key would have an owner.
    #[error("a shard set needs at least one shard")]
    Empty,
    /// The same id was given twice.
    #[error("{0} is listed twice")]
    Duplicate(ShardId),
    /// More shards than the scheme holds ([`super::MAX_SHARDS`], or fewer for a ring
    /// with many virtual nodes per shard, see [`super::MAX_RING_POINTS`]).
    #[error("too many shards: at most {max}")]
    TooManyShards {
        /// The most this scheme and configuration hold.
        max: u32,
    },
    /// A ring was configured with zero virtual nodes per shard: it would have no points.
    #[error("a ring needs at least one virtual node per shard")]
    ZeroVnodes,
    /// A ring was configured with more virtual nodes per shard than
    /// [`super::MAX_VNODES_PER_SHARD`].
    #[error("{vnodes} virtual nodes per shard is more than the maximum {max}")]
    TooManyVnodes {
        /// What was asked for.
        vnodes: u32,
        /// The maximum.
        max: u32,
    },
}

/// Why a shard could not be added. The set is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AddError {
    /// The shard is already in the set.
    #[error("{0} is already in the set")]
    Duplicate(ShardId),
    /// The set is full ([`super::MAX_SHARDS`], or fewer for a ring, see
    /// [`super::MAX_RING_POINTS`]).
    #[error("too many shards: at most {max}")]
    TooManyShards {
        /// The most this scheme and configuration hold.
        max: u32,
    },
}

/// Why a shard could not be removed. The set is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RemoveError {
    /// The shard is not in the set.
    #[error("{0} is not in the set")]
    Unknown(ShardId),
    /// The shard is the only one left: removing it would leave keys without an owner.
    #[error("{0} is the last shard; a shard set is never empty")]
    LastShard(ShardId),
}
