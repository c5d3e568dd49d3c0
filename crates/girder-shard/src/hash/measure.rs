//! Measuring a [`ShardMap`]: how many keys change owner between two shard sets
//! ([`movement`]) and how evenly keys spread over one ([`load`]). Shared by the tests,
//! the benchmarks and the lab, so they all count the same way.

use std::collections::BTreeMap;

use super::{ShardId, ShardMap, key_hash};

/// `count` sample key hashes: [`key_hash`] of the little-endian bytes of `0..count`,
/// the same sequence in every run, so measurements are reproducible.
pub fn sample_key_hashes(count: u64) -> impl Iterator<Item = u64> + Clone {
    (0..count).map(|i| key_hash(&i.to_le_bytes()))
}

/// What happened to a set of keys between two shard sets (see [`movement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Movement {
    /// Keys looked up.
    pub keys: u64,
    /// Keys whose owner differs.
    pub moved: u64,
    /// Moved keys that did not have to move: their old owner is still in the new set
    /// *and* their new owner was already in the old set. Zero for a consistent scheme.
    pub needless: u64,
}

impl Movement {
    /// `moved / keys` (0 for no keys).
    #[must_use]
    pub fn moved_fraction(&self) -> f64 {
        if self.keys == 0 { 0.0 } else { self.moved as f64 / self.keys as f64 }
    }
}

/// The fraction of keys a perfectly balanced, consistent scheme moves when one shard
/// joins or leaves, going from `shards_before` to `shards_after` shards:
/// `1 / max(before, after)` (the joining shard's share, or the leaving shard's).
/// `hash % N` moves `1 - 1/max` instead.
#[must_use]
pub fn ideal_moved_fraction(shards_before: usize, shards_after: usize) -> f64 {
    1.0 / shards_before.max(shards_after).max(1) as f64
}

/// Looks every key up in `before` and in `after` and counts those whose owner changed,
/// and among them those that moved needlessly.
pub fn movement<A, B>(before: &A, after: &B, key_hashes: impl IntoIterator<Item = u64>) -> Movement
where
    A: ShardMap + ?Sized,
    B: ShardMap + ?Sized,
{
    let mut m = Movement::default();
    for h in key_hashes {
        m.keys += 1;
        let (old, new) = (before.shard_of_hash(h), after.shard_of_hash(h));
        if old != new {
            m.moved += 1;
            if after.contains(old) && before.contains(new) {
                m.needless += 1;
            }
        }
    }
    m
}

/// How many keys each shard of one set owns (see [`load`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// Keys looked up.
    pub keys: u64,
    /// Every shard of the set, ascending, with the keys it owns (possibly 0).
    pub per_shard: Vec<(ShardId, u64)>,
}

impl Load {
    /// The largest number of keys on one shard.
    #[must_use]
    pub fn max(&self) -> u64 {
        self.per_shard.iter().map(|&(_, n)| n).max().unwrap_or(0)
    }

    /// The smallest number of keys on one shard.
    #[must_use]
    pub fn min(&self) -> u64 {
        self.per_shard.iter().map(|&(_, n)| n).min().unwrap_or(0)
    }

    /// Keys per shard on average.
    #[must_use]
    pub fn mean(&self) -> f64 {
        if self.per_shard.is_empty() { 0.0 } else { self.keys as f64 / self.per_shard.len() as f64 }
    }

    /// The spread: `max / mean`, 1.0 for a perfect split (and for no keys). The busiest
    /// shard sets the fleet's capacity, so this is the factor of hardware wasted.
    #[must_use]
    pub fn spread(&self) -> f64 {
        let mean = self.mean();
        if mean == 0.0 { 1.0 } else { self.max() as f64 / mean }
    }
}

/// Counts how many of the keys each shard of `map` owns.
pub fn load<M: ShardMap + ?Sized>(map: &M, key_hashes: impl IntoIterator<Item = u64>) -> Load {
    let mut counts: BTreeMap<ShardId, u64> = map.shards().into_iter().map(|s| (s, 0)).collect();
    let mut keys = 0;
    for h in key_hashes {
        keys += 1;
        // Always a member (the trait's guarantee); a stray owner would show up as an
        // extra shard and fail the caller's checks rather than vanish.
        *counts.entry(map.shard_of_hash(h)).or_insert(0) += 1;
    }
    Load { keys, per_shard: counts.into_iter().collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{JumpHash, Rendezvous};

    #[test]
    fn counts_moves_and_needless_moves() {
        let (jump8, jump9) = (JumpHash::new(8), JumpHash::new(9));
        let (Ok(jump8), Ok(jump9)) = (jump8, jump9) else { panic!("valid sizes") };
        let same = movement(&jump8, &jump8, sample_key_hashes(1000));
        assert_eq!(same, Movement { keys: 1000, moved: 0, needless: 0 });
        let grown = movement(&jump8, &jump9, sample_key_hashes(1000));
        assert!(grown.moved > 0 && grown.needless == 0, "{grown:?}");

        // Two unrelated sets of the same size: every move is needless unless it
        // involves a shard that is in only one of them.
        let a = Rendezvous::new([ShardId(0), ShardId(1)]);
        let b = Rendezvous::new([ShardId(1), ShardId(0)]);
        let c = Rendezvous::new([ShardId(0), ShardId(2)]);
        let (Ok(a), Ok(b), Ok(c)) = (a, b, c) else { panic!("valid sets") };
        assert_eq!(movement(&a, &b, sample_key_hashes(1000)).moved, 0, "order is irrelevant");
        let swap = movement(&a, &c, sample_key_hashes(1000));
        assert!(swap.moved > 0 && swap.needless < swap.moved, "{swap:?}");
        // Jump over 0..2 against rendezvous over {0, 1}: both sets are equal, so any
        // disagreement is needless.
        let Ok(jump2) = JumpHash::new(2) else { panic!("valid size") };
        let cross = movement(&jump2, &a, sample_key_hashes(1000));
        assert!(cross.moved > 0 && cross.needless == cross.moved, "{cross:?}");
    }

    #[test]
    fn load_counts_every_shard_even_empty_ones() {
        let Ok(one) = JumpHash::new(3) else { panic!("valid size") };
        let load = load(&one, sample_key_hashes(0));
        assert_eq!(load.per_shard, vec![(ShardId(0), 0), (ShardId(1), 0), (ShardId(2), 0)]);
        assert_eq!((load.max(), load.min(), load.spread()), (0, 0, 1.0));

        let l =
            Load { keys: 6, per_shard: vec![(ShardId(0), 1), (ShardId(1), 2), (ShardId(2), 3)] };
        assert_eq!((l.max(), l.min(), l.mean(), l.spread()), (3, 1, 2.0, 1.5));
        assert_eq!(ideal_moved_fraction(8, 9), 1.0 / 9.0);
        assert_eq!(ideal_moved_fraction(9, 8), 1.0 / 9.0);
    }
}
