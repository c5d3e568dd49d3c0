//! Jump consistent hash (Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash
//! Algorithm", 2014): a key's bucket among `n`, computed from the key alone in
//! `O(ln n)` steps, with no table at all.
//!
//! The idea: follow one key as buckets are added one at a time. When the `(j+1)`-th
//! bucket appears, the key jumps to it with probability `1/(j+1)` — exactly the share
//! the new bucket must take for balance — and otherwise stays. A pseudo-random
//! generator seeded by the key decides each jump, and instead of testing every bucket
//! the algorithm draws where the key's *next* jump lands directly: if the last jump was
//! to bucket `b`, the next is to the first `j > b` whose test succeeds, and
//! `P(no jump in b+1..j) = (b+1)/(j+1)`, so `j = floor((b+1) / r)` for `r` uniform in
//! `(0, 1]`. The key ends in the last bucket it jumped to below `n`.
//!
//! The price is that buckets are *positions*: `n` buckets are always `0..n`. A shard
//! can join only as bucket `n` and only bucket `n-1` can leave. Removing a shard in the
//! middle would renumber every shard after it, and moving keys between every pair of
//! them — so [`JumpHash`] offers no way to name one: it only grows and shrinks at the
//! end. To retire a database in the middle, keep its bucket and point it at another
//! database in the router's bucket → database table (or move the last bucket's data
//! into it and shrink).

use std::num::NonZeroU32;

use super::{AddError, BuildError, MAX_SHARDS, RemoveError, ShardId, ShardMap};

/// The paper's 64-bit linear congruential generator multiplier (Knuth's MMIX constant
/// is different; this is the one the paper, Guava and every port use).
const LCG_MULTIPLIER: u64 = 2_862_933_555_777_941_757;

/// 2^31, the scale of the paper's `r = ((key >> 33) + 1) / 2^31`.
const TWO_POW_31: f64 = 2_147_483_648.0;

/// The bucket in `0..buckets` of a 64-bit key, by jump consistent hash.
///
/// Bit-for-bit the paper's `JumpConsistentHash` (and Guava's `Hashing.consistentHash`):
/// the same key and bucket count give the same bucket in every implementation, which
/// the golden tests check. `key` should be well mixed (a [`super::key_hash`]); the
/// generator it seeds is a plain LCG.
#[must_use]
#[inline]
pub fn jump_hash(mut key: u64, buckets: NonZeroU32) -> u32 {
    let n = i64::from(buckets.get());
    let mut b: i64 = 0;
    let mut j: i64 = 0;
    // Each round draws the next bucket the key jumps to; the first that is out of range
    // ends it. The expected number of rounds is H(n) ≈ ln(n) + 0.58 (2.7 for 8 buckets,
    // 4.7 for 64), each one f64 division: the division unit's throughput is what bounds
    // lookups per second.
    while j < n {
        b = j;
        key = key.wrapping_mul(LCG_MULTIPLIER).wrapping_add(1);
        // r in (0, 1] from the generator's top 31 bits; j = floor((b + 1) / r). The
        // paper's order of operations (divide first, then multiply by b + 1) is kept:
        // a different rounding would change buckets near the boundaries. At most
        // 2^32 · 2^31 = 2^63; `as` truncates like C's cast and saturates at the top.
        let inv_r = TWO_POW_31 / ((key >> 33) + 1) as f64;
        j = ((b + 1) as f64 * inv_r) as i64;
    }
    debug_assert!((0..n).contains(&b));
    b as u32
}

/// Jump consistent hash over shards `ShardId(0)` to `ShardId(n - 1)`.
///
/// No memory beyond the count and the fastest lookup of the three schemes, with a
/// near-perfect spread; but shards are positions, so the set only grows and shrinks at
/// the end ([`JumpHash::push`], [`JumpHash::pop`]) — there is deliberately no way to
/// remove a shard in the middle. See the module docs for what to do instead.
///
/// ```
/// use girder_shard::hash::{JumpHash, ShardId, ShardMap};
///
/// let mut shards = JumpHash::new(8)?;
/// let before = shards.shard_of(b"user:42");
/// assert_eq!(shards.push()?, ShardId(8));
/// let after = shards.shard_of(b"user:42");
/// assert!(after == before || after == ShardId(8));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JumpHash {
    buckets: NonZeroU32,
}

impl JumpHash {
    /// Shards `ShardId(0)` to `ShardId(shard_count - 1)`.
    ///
    /// # Errors
    /// [`BuildError::Empty`] for 0; [`BuildError::TooManyShards`] over [`MAX_SHARDS`].
    pub fn new(shard_count: u32) -> Result<Self, BuildError> {
        if shard_count > MAX_SHARDS {
            return Err(BuildError::TooManyShards { max: MAX_SHARDS });
        }
        let buckets = NonZeroU32::new(shard_count).ok_or(BuildError::Empty)?;
        Ok(Self { buckets })
    }

    /// Adds the next shard, `ShardId(n)`, and returns it. About `1/(n+1)` of the keys
    /// move to it, from every other shard evenly.
    ///
    /// # Errors
    /// [`AddError::TooManyShards`] at [`MAX_SHARDS`]; the set is unchanged.
    pub fn push(&mut self) -> Result<ShardId, AddError> {
        let n = self.buckets.get();
        if n >= MAX_SHARDS {
            return Err(AddError::TooManyShards { max: MAX_SHARDS });
        }
        self.buckets = self.buckets.saturating_add(1);
        Ok(ShardId(n))
    }

    /// Removes the last shard, `ShardId(n - 1)`, and returns it. Its keys spread evenly
    /// over the others; no other key moves.
    ///
    /// # Errors
    /// [`RemoveError::LastShard`] when it is the only shard; the set is unchanged.
    pub fn pop(&mut self) -> Result<ShardId, RemoveError> {
        let last = ShardId(self.buckets.get() - 1);
        self.buckets = NonZeroU32::new(last.0).ok_or(RemoveError::LastShard(last))?;
        Ok(last)
    }
}

impl ShardMap for JumpHash {
    #[inline]
    fn shard_of_hash(&self, key_hash: u64) -> ShardId {
        ShardId(jump_hash(key_hash, self.buckets))
    }

    fn shard_count(&self) -> usize {
        self.buckets.get() as usize
    }

    fn contains(&self, shard: ShardId) -> bool {
        shard.0 < self.buckets.get()
    }

    fn shards(&self) -> Vec<ShardId> {
        (0..self.buckets.get()).map(ShardId).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: u64, buckets: u32, expected: u32) {
        let n = NonZeroU32::new(buckets).unwrap_or(NonZeroU32::MIN);
        assert_eq!(jump_hash(key, n), expected, "jump_hash({key}, {buckets})");
    }

    #[test]
    fn matches_the_cross_language_golden_values() {
        // The values Guava's `Hashing.consistentHash` tests hold to check that ports of
        // the paper's algorithm agree, bit for bit.
        let golden100 =
            [0, 55, 62, 8, 45, 59, 86, 97, 82, 59, 73, 37, 17, 56, 86, 21, 90, 37, 38, 83];
        for (key, &bucket) in golden100.iter().enumerate() {
            check(key as u64, 100, bucket);
        }
        check(10_863_919_174_838_991, 11, 6);
        check(2_016_238_256_797_177_309, 11, 3);
        check(1_673_758_223_894_951_030, 11, 5);
        check(2, 100_001, 80_343);
        check(2201, 100_001, 22_152);
        check(2202, 100_001, 15_018);
    }

    #[test]
    fn one_bucket_takes_everything_and_extreme_keys_stay_in_range() {
        for key in [0, 1, u64::MAX, u64::MAX / 2, 1 << 63] {
            check(key, 1, 0);
            for buckets in [2, 3, 1000, MAX_SHARDS, u32::MAX] {
                let n = NonZeroU32::new(buckets).unwrap_or(NonZeroU32::MIN);
                assert!(jump_hash(key, n) < buckets, "key {key} buckets {buckets}");
            }
        }
    }

    #[test]
    fn grows_and_shrinks_only_at_the_end() {
        assert_eq!(JumpHash::new(0), Err(BuildError::Empty));
        assert_eq!(
            JumpHash::new(MAX_SHARDS + 1),
            Err(BuildError::TooManyShards { max: MAX_SHARDS })
        );
        let mut one = JumpHash::new(1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one.pop(), Err(RemoveError::LastShard(ShardId(0))));
        assert_eq!(one.shard_count(), 1);
        assert_eq!(one.push(), Ok(ShardId(1)));
        assert_eq!(one.pop(), Ok(ShardId(1)));
        let mut full = JumpHash::new(MAX_SHARDS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(full.push(), Err(AddError::TooManyShards { max: MAX_SHARDS }));
        assert_eq!(full.pop(), Ok(ShardId(MAX_SHARDS - 1)));
        assert_eq!(full.push(), Ok(ShardId(MAX_SHARDS - 1)));
    }
}
