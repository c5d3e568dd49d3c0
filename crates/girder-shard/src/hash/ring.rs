//! A consistent-hash ring with virtual nodes (Karger et al. 1997; the Dynamo and
//! Cassandra token ring): each shard hashes to `vnodes_per_shard` points on a 64-bit
//! circle, and a key belongs to the first point at or after its hash, wrapping around.
//!
//! One point per shard gives arcs whose lengths vary by 100% (exponentially
//! distributed); `v` points per shard average that out to about `1/sqrt(v)` (256 →
//! ~6%), at the cost of `12 · v` bytes per shard and a binary search over all points.
//! Adding a shard takes over only the arcs in front of its own points, so keys move
//! only to it; removing one hands its arcs to the following points.

use super::{
    AddError, BuildError, MAX_SHARDS, RemoveError, ShardId, ShardMap, id_hash, validate_ids,
};

/// Virtual nodes per shard unless configured: keeps each shard's share of keys within
/// about 6% (one standard deviation) of the mean, in 3 KiB per shard.
pub const DEFAULT_VNODES_PER_SHARD: u32 = 256;

/// The most virtual nodes per shard a ring accepts.
pub const MAX_VNODES_PER_SHARD: u32 = 4096;

/// The most points a ring holds (48 MiB): with `v` virtual nodes per shard, a ring
/// holds at most `min(MAX_SHARDS, MAX_RING_POINTS / v)` shards.
pub const MAX_RING_POINTS: u32 = 1 << 22;

/// Seed of the point hashes, so points are independent of key hashes.
const RING_SEED: u64 = 0x6769_7264_6572_7269; // "girderri"

/// How a [`Ring`] places shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Points per shard on the ring: 1 to [`MAX_VNODES_PER_SHARD`]. More points spread
    /// keys more evenly and cost memory and a little lookup time.
    pub vnodes_per_shard: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self { vnodes_per_shard: DEFAULT_VNODES_PER_SHARD }
    }
}

impl RingConfig {
    /// The most shards a ring with this configuration holds.
    #[must_use]
    pub fn max_shards(&self) -> u32 {
        (MAX_RING_POINTS / self.vnodes_per_shard.max(1)).min(MAX_SHARDS)
    }

    fn validate(&self) -> Result<(), BuildError> {
        match self.vnodes_per_shard {
            0 => Err(BuildError::ZeroVnodes),
            v if v > MAX_VNODES_PER_SHARD => {
                Err(BuildError::TooManyVnodes { vnodes: v, max: MAX_VNODES_PER_SHARD })
            }
            _ => Ok(()),
        }
    }
}

/// A consistent-hash ring with virtual nodes. Any shard can join or leave.
///
/// ```
/// use girder_shard::hash::{Ring, RingConfig, ShardId, ShardMap};
///
/// let mut ring = Ring::new((0..8).map(ShardId), RingConfig::default())?;
/// let before = ring.shard_of(b"user:42");
/// ring.add(ShardId(8))?;
/// let after = ring.shard_of(b"user:42");
/// assert!(after == before || after == ShardId(8)); // moves only to the new shard
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    config: RingConfig,
    /// Members, ascending.
    shards: Vec<ShardId>,
    /// Point positions, ascending; equal positions ordered by owner id, so the lower id
    /// wins a collision whatever order shards joined in.
    points: Vec<u64>,
    /// `owners[i]` owns the keys in `(points[i - 1], points[i]]`.
    owners: Vec<ShardId>,
    /// `owners[0]`, kept apart so a key past the last point wraps without an index that
    /// could fail.
    wrap_owner: ShardId,
}

impl Ring {
    /// A ring over `shards`.
    ///
    /// # Errors
    /// [`BuildError::Empty`], [`BuildError::Duplicate`], [`BuildError::TooManyShards`]
    /// (over [`RingConfig::max_shards`]), [`BuildError::ZeroVnodes`],
    /// [`BuildError::TooManyVnodes`].
    pub fn new(
        shards: impl IntoIterator<Item = ShardId>,
        config: RingConfig,
    ) -> Result<Self, BuildError> {
        config.validate()?;
        let shards = validate_ids(shards, config.max_shards())?;
        let mut ring =
            Self { config, shards, points: Vec::new(), owners: Vec::new(), wrap_owner: ShardId(0) };
        let pairs: Vec<(u64, ShardId)> =
            ring.shards.iter().flat_map(|&s| ring.points_of(s)).collect();
        ring.rebuild(pairs);
        Ok(ring)
    }

    /// Adds `shard`: it takes over the keys just before each of its points.
    ///
    /// # Errors
    /// [`AddError::Duplicate`] if it is a member; [`AddError::TooManyShards`] if the ring
    /// is full. The ring is unchanged.
    pub fn add(&mut self, shard: ShardId) -> Result<(), AddError> {
        let Err(at) = self.shards.binary_search(&shard) else {
            return Err(AddError::Duplicate(shard));
        };
        let max = self.config.max_shards();
        if self.shards.len() >= max as usize {
            return Err(AddError::TooManyShards { max });
        }
        self.shards.insert(at, shard);
        let mut pairs = self.pairs();
        pairs.extend(self.points_of(shard));
        self.rebuild(pairs);
        Ok(())
    }

    /// Removes `shard`: its keys go to the shards owning the points after its points.
    ///
    /// # Errors
    /// [`RemoveError::Unknown`] if it is not a member; [`RemoveError::LastShard`] if it
    /// is the only one. The ring is unchanged.
    pub fn remove(&mut self, shard: ShardId) -> Result<(), RemoveError> {
        let Ok(at) = self.shards.binary_search(&shard) else {
            return Err(RemoveError::Unknown(shard));
        };
        if self.shards.len() == 1 {
            return Err(RemoveError::LastShard(shard));
        }
        self.shards.remove(at);
        let pairs = self.pairs().into_iter().filter(|&(_, owner)| owner != shard).collect();
        self.rebuild(pairs);
        Ok(())
    }

    /// The ring's configuration.
    #[must_use]
    pub fn config(&self) -> RingConfig {
        self.config
    }

    /// How many points the ring holds: shards × virtual nodes.
    #[must_use]
    pub fn point_count(&self) -> usize {
        self.points.len()
    }

    /// The positions of `shard`'s virtual nodes: fixed-seed XXH3 of (id, vnode index),
    /// so they depend on nothing but the id.
    fn points_of(&self, shard: ShardId) -> impl Iterator<Item = (u64, ShardId)> + use<> {
        (0..self.config.vnodes_per_shard).map(move |v| (id_hash(RING_SEED, shard, v), shard))
    }

    fn pairs(&self) -> Vec<(u64, ShardId)> {
        self.points.iter().copied().zip(self.owners.iter().copied()).collect()
    }

    fn rebuild(&mut self, mut pairs: Vec<(u64, ShardId)>) {
        pairs.sort_unstable();
        (self.points, self.owners) = pairs.into_iter().unzip();
        self.wrap_owner = self.owners.first().copied().unwrap_or(self.wrap_owner);
        debug_assert_eq!(
            self.points.len(),
            self.shards.len() * self.config.vnodes_per_shard as usize
        );
        debug_assert!(self.points.is_sorted());
    }
}

impl ShardMap for Ring {
    #[inline]
    fn shard_of_hash(&self, key_hash: u64) -> ShardId {
        let at = self.points.partition_point(|&p| p < key_hash);
        self.owners.get(at).copied().unwrap_or(self.wrap_owner)
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
    fn a_key_belongs_to_the_first_point_at_or_after_it_wrapping_around() {
        let ring = Ring::new([ShardId(1), ShardId(2)], RingConfig { vnodes_per_shard: 1 })
            .unwrap_or_else(|e| panic!("{e}"));
        let (p1, p2) = (id_hash(RING_SEED, ShardId(1), 0), id_hash(RING_SEED, ShardId(2), 0));
        let ((lo, lo_owner), (hi, hi_owner)) = if p1 < p2 {
            ((p1, ShardId(1)), (p2, ShardId(2)))
        } else {
            ((p2, ShardId(2)), (p1, ShardId(1)))
        };
        for (key, owner) in [
            (0, lo_owner),
            (lo, lo_owner),
            (lo + 1, hi_owner),
            (hi, hi_owner),
            (hi + 1, lo_owner),
            (u64::MAX, lo_owner),
        ] {
            assert_eq!(ring.shard_of_hash(key), owner, "key {key:#x}");
        }
    }

    #[test]
    fn config_bounds() {
        let check = |vnodes, expected: Result<usize, BuildError>| {
            let got = Ring::new([ShardId(0), ShardId(1)], RingConfig { vnodes_per_shard: vnodes })
                .map(|r| r.point_count());
            assert_eq!(got, expected, "vnodes {vnodes}");
        };
        check(0, Err(BuildError::ZeroVnodes));
        check(1, Ok(2));
        check(256, Ok(512));
        check(MAX_VNODES_PER_SHARD, Ok(2 * MAX_VNODES_PER_SHARD as usize));
        check(
            MAX_VNODES_PER_SHARD + 1,
            Err(BuildError::TooManyVnodes { vnodes: 4097, max: MAX_VNODES_PER_SHARD }),
        );
        assert_eq!(RingConfig::default().max_shards(), 16_384);
        assert_eq!(RingConfig { vnodes_per_shard: 1 }.max_shards(), MAX_SHARDS);
    }

    #[test]
    fn a_full_ring_refuses_another_shard() {
        let config = RingConfig { vnodes_per_shard: MAX_VNODES_PER_SHARD };
        let max = config.max_shards();
        assert_eq!(max, 1024);
        assert_eq!(
            Ring::new((0..=max).map(ShardId), config),
            Err(BuildError::TooManyShards { max })
        );
        let mut ring = Ring::new((0..max).map(ShardId), config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ring.point_count(), MAX_RING_POINTS as usize);
        assert_eq!(ring.add(ShardId(max)), Err(AddError::TooManyShards { max }));
        assert_eq!(ring.shard_count(), max as usize);
    }
}
