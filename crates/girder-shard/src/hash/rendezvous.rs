//! Rendezvous, or highest-random-weight, hashing (Thaler & Ravishankar 1996): every
//! shard scores every key with a hash of the pair, and the highest score owns it.
//!
//! No table, no virtual nodes, and the most even spread of the three schemes (each
//! shard's load is a plain binomial), but a lookup scores every shard: `O(N)`, fine
//! for tens of shards, not for thousands. A shard that joins wins exactly the keys it
//! outscores everyone on; a shard that leaves hands each of its keys to that key's
//! runner-up.

use super::{
    AddError, BuildError, MAX_SHARDS, RemoveError, ShardId, ShardMap, id_hash, validate_ids,
};

/// Seed of the per-shard salts, so they are independent of key hashes.
const RENDEZVOUS_SEED: u64 = 0x6769_7264_6572_7277; // "girderrw"

/// Rendezvous (highest random weight) hashing. Any shard can join or leave.
///
/// ```
/// use girder_shard::hash::{Rendezvous, ShardId, ShardMap};
///
/// let mut shards = Rendezvous::new((0..8).map(ShardId))?;
/// let before = shards.shard_of(b"user:42");
/// shards.remove(ShardId(3))?;
/// let after = shards.shard_of(b"user:42");
/// assert!(after == before || before == ShardId(3)); // only shard 3's keys move
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// Members, ascending: a tie in score goes to the lower id, whatever the join order.
    shards: Vec<ShardId>,
    /// `salts[i]`: fixed-seed XXH3 of `shards[i]`, mixed with the key hash to score it.
    salts: Vec<u64>,
}

impl Rendezvous {
    /// Rendezvous hashing over `shards`.
    ///
    /// # Errors
    /// [`BuildError::Empty`], [`BuildError::Duplicate`], [`BuildError::TooManyShards`]
    /// (over [`MAX_SHARDS`]).
    pub fn new(shards: impl IntoIterator<Item = ShardId>) -> Result<Self, BuildError> {
        let shards = validate_ids(shards, MAX_SHARDS)?;
        let salts = shards.iter().map(|&s| salt(s)).collect();
        Ok(Self { shards, salts })
    }

    /// Adds `shard`: it takes the keys it scores highest on.
    ///
    /// # Errors
    /// [`AddError::Duplicate`] if it is a member; [`AddError::TooManyShards`] at
    /// [`MAX_SHARDS`]. The set is unchanged.
    pub fn add(&mut self, shard: ShardId) -> Result<(), AddError> {
        let Err(at) = self.shards.binary_search(&shard) else {
            return Err(AddError::Duplicate(shard));
        };
        if self.shards.len() >= MAX_SHARDS as usize {
            return Err(AddError::TooManyShards { max: MAX_SHARDS });
        }
        self.shards.insert(at, shard);
        self.salts.insert(at, salt(shard));
        Ok(())
    }

    /// Removes `shard`: each of its keys goes to the shard that scored second on it.
    ///
    /// # Errors
    /// [`RemoveError::Unknown`] if it is not a member; [`RemoveError::LastShard`] if it
    /// is the only one. The set is unchanged.
    pub fn remove(&mut self, shard: ShardId) -> Result<(), RemoveError> {
        let Ok(at) = self.shards.binary_search(&shard) else {
            return Err(RemoveError::Unknown(shard));
        };
        if self.shards.len() == 1 {
            return Err(RemoveError::LastShard(shard));
        }
        self.shards.remove(at);
        self.salts.remove(at);
        Ok(())
    }
}

fn salt(shard: ShardId) -> u64 {
    id_hash(RENDEZVOUS_SEED, shard, 0)
}

/// The weight of a key on a shard: the splitmix64 finalizer (Stafford's "Mix13") of
/// the key hash xor the shard's salt. A bijection with full avalanche, so for a fixed
/// key the shards' weights behave as independent uniform draws, at two multiplies.
#[inline]
fn weight(key_hash: u64, salt: u64) -> u64 {
    let mut z = key_hash ^ salt;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl ShardMap for Rendezvous {
    #[inline]
    fn shard_of_hash(&self, key_hash: u64) -> ShardId {
        debug_assert_eq!(self.shards.len(), self.salts.len());
        let mut best = 0;
        let mut best_weight = 0;
        for (i, &salt) in self.salts.iter().enumerate() {
            let w = weight(key_hash, salt);
            // Strictly greater: on a tie the earlier (lower) id keeps the key.
            if i == 0 || w > best_weight {
                best = i;
                best_weight = w;
            }
        }
        self.shards.get(best).copied().unwrap_or(ShardId(0))
    }

    fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn contains(&self, shard: ShardId) -> bool {
        self.shards.binary_search(&shard).is_ok()
    }

    fn shards(&self) -> Vec<ShardId> {
        self.shards.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_weight_owns_the_key() {
        // Brute force over the definition, for a handful of keys and sets.
        let sets: [&[u32]; 3] = [&[7], &[0, 1, 2, 3], &[10, 3, 99, 4, 1_000_000]];
        for set in sets {
            let map =
                Rendezvous::new(set.iter().map(|&i| ShardId(i))).unwrap_or_else(|e| panic!("{e}"));
            for key in 0..1000u64 {
                let h = super::super::key_hash(&key.to_le_bytes());
                let expected = set
                    .iter()
                    .map(|&i| ShardId(i))
                    .max_by_key(|&s| (weight(h, salt(s)), std::cmp::Reverse(s)));
                assert_eq!(Some(map.shard_of_hash(h)), expected, "set {set:?} key {key}");
            }
        }
    }
}
