//! Which shard owns a key: one trait, [`ShardMap`], and three consistent-hashing
//! schemes behind it — [`Ring`] (virtual nodes), [`Rendezvous`] (highest random
//! weight) and [`JumpHash`] (Lamping & Veach) — plus [`measure`], which counts how many
//! keys move when the shard set changes and how evenly keys spread.
//!
//! The catalogue's "Pattern: Database Sharding" shards by `hash(user_id) % num_shards`
//! and warns that it "can't easily add shards (requires rehashing)": going from 8 to 9
//! shards moves 8/9 of the keys. Every scheme here moves about 1/9 instead, and only
//! keys that have to move.

mod error;
mod jump;
pub mod measure;
mod rendezvous;
mod ring;

pub use error::{AddError, BuildError, RemoveError};
pub use jump::{JumpHash, jump_hash};
pub use rendezvous::Rendezvous;
pub use ring::{DEFAULT_VNODES_PER_SHARD, MAX_RING_POINTS, MAX_VNODES_PER_SHARD, Ring, RingConfig};

use std::fmt;

/// The most shards any scheme holds. Ring and rendezvous lookups cost memory or time in
/// proportion to the shard count, so it is bounded; a database fleet is far smaller.
pub const MAX_SHARDS: u32 = 1 << 16;

/// A shard's stable name: a number the operator assigns once and never reuses for
/// other data.
///
/// A `u32` rather than a string name, because the id is what the schemes hash, and
/// hashing it must be cheap and identical everywhere: [`Rendezvous`] mixes it into a
/// weight on every lookup, and [`JumpHash`] *is* a number (its shards are
/// `0..shard_count`). A `Copy` id also lets lookups return without allocating. Where
/// a shard lives (host, database, DSN) is the router's business, kept in a table keyed
/// by this id: moving a shard to another host changes that table and moves no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// Which shard owns a key, for one set of shards.
///
/// **Guarantee.** Total and deterministic: every key has exactly one owner, always a
/// member of the current set (the set is never empty: constructors and removals that
/// would empty it fail). The owner depends only on the key bytes, the set of shards
/// and the scheme's configuration — not on the order shards were added, the process,
/// the platform or the crate version (keys are hashed with [`key_hash`], ids with
/// fixed-seed XXH3; golden tests pin both).
///
/// **Consistency.** When one shard joins, keys move only to it; when one leaves, only
/// its keys move. About `1/N` of the keys move for a set of `N` after the change
/// (measured by [`measure::movement`]).
///
/// **What it admits.** Nothing about load: owners are spread by hashing, so a hot key
/// stays hot on its shard, and the spread over many keys is only as even as the scheme
/// makes it ([`measure::load`]). A scheme does not move data; it only says where data
/// belongs.
pub trait ShardMap {
    /// The owner of a key already hashed with [`key_hash`] (or any well-mixed 64-bit
    /// hash the caller uses consistently, such as an id that is already random).
    fn shard_of_hash(&self, key_hash: u64) -> ShardId;

    /// The owner of `key`: [`key_hash`] once, then [`ShardMap::shard_of_hash`].
    fn shard_of(&self, key: &[u8]) -> ShardId {
        self.shard_of_hash(key_hash(key))
    }

    /// How many shards the set holds; at least 1.
    fn shard_count(&self) -> usize;

    /// Whether `shard` is in the set.
    fn contains(&self, shard: ShardId) -> bool;

    /// The shards in the set, in ascending id order (allocates; not for the hot path).
    fn shards(&self) -> Vec<ShardId>;
}

/// The 64-bit hash every scheme places keys by: XXH3-64 with seed 0 (the "unseeded"
/// XXH3 of xxHash 0.8; `XXH3_64bits` in C, `xxh3_64` in Rust, `xxh3.Hash` in Go).
///
/// XXH3's output is frozen since xxHash 0.8.0 and does not depend on the platform's
/// endianness, so the same bytes hash to the same value in every process, language and
/// release — a requirement for a shard map, where a different hash means a different
/// owner. It is not keyed: an adversary who picks keys can pile them on one shard, so
/// shard by ids the server assigns, not by raw user input, when that matters.
#[must_use]
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Fixed-seed XXH3 of a shard id (little-endian) and a domain value; the seed keeps
/// these hashes apart from key hashes and from each other's uses.
#[inline]
fn id_hash(seed: u64, shard: ShardId, extra: u32) -> u64 {
    let mut bytes = [0u8; 8];
    let (id, rest) = bytes.split_at_mut(4);
    id.copy_from_slice(&shard.0.to_le_bytes());
    rest.copy_from_slice(&extra.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, seed)
}

/// Checks a set of ids given to a constructor: not empty, no duplicates, at most `max`.
/// Returns the ids sorted.
fn validate_ids(
    shards: impl IntoIterator<Item = ShardId>,
    max: u32,
) -> Result<Vec<ShardId>, BuildError> {
    let mut ids: Vec<ShardId> = Vec::new();
    for id in shards {
        // Checked while collecting, so a huge iterator is refused without being drained.
        if ids.len() >= max as usize {
            return Err(BuildError::TooManyShards { max });
        }
        ids.push(id);
    }
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(BuildError::Duplicate(pair[0]));
    }
    if ids.is_empty() {
        return Err(BuildError::Empty);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_xxh3_64_unseeded() {
        // The published XXH3_64bits sanity values for empty input (xxHash's own test
        // suite): if this changes, every key changes owner.
        assert_eq!(key_hash(b""), 0x2D06_8005_38D3_94C2);
    }

    #[test]
    fn validate_ids_refuses_bad_sets() {
        let check = |ids: &[u32], max, expected: Result<Vec<u32>, BuildError>| {
            let got = validate_ids(ids.iter().map(|&i| ShardId(i)), max)
                .map(|v| v.into_iter().map(|s| s.0).collect::<Vec<_>>());
            assert_eq!(got, expected, "ids {ids:?}, max {max}");
        };
        check(&[], 4, Err(BuildError::Empty));
        check(&[3, 1, 3], 4, Err(BuildError::Duplicate(ShardId(3))));
        check(&[1, 2, 3], 2, Err(BuildError::TooManyShards { max: 2 }));
        check(&[5, 1, 3], 3, Ok(vec![1, 3, 5]));
    }
}
