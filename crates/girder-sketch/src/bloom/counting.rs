//! Pattern: Bloom Filter for Membership Testing — the counting variant (Fan et al.,
//! "Summary Cache", 2000), which can forget keys.
//!
//! **Guarantee.** Each bit of a classic filter becomes a 4-bit counter. After
//! `insert(x)`, `contains(x)` is `true` until `x` is removed as many times as it was
//! inserted — provided only keys that were inserted are ever removed. The counters
//! that are non-zero are exactly the bits a classic [`BloomFilter`] of the same shape
//! and seed would have set for the keys present ([`CountingBloomFilter::to_bloom`]), so
//! the false-positive rate is the classic formula's.
//!
//! **Trade-off.** Four times the memory of the classic filter. Two ways to get a false
//! negative, both documented rather than hidden:
//! - *Removing a key that was never inserted.* When such a key is a false positive
//!   (all its counters non-zero), [`CountingBloomFilter::remove`] cannot tell it from
//!   a present key and decrements counters that belong to others, who may then be
//!   reported absent. `remove` does refuse (and changes nothing) when the key is
//!   certainly absent — some counter is zero — so only false positives do harm.
//! - *None from saturation.* A counter that reaches 15 sticks there: it is never
//!   decremented again, because its true value is no longer known. A stuck counter
//!   cannot cause a false negative, but it stays set after every key behind it is gone,
//!   so the rate stops recovering there. With the optimal `k`, a counter reaches 16
//!   with probability about `1.37·10⁻¹⁵` per counter (Fan et al.), so this needs keys
//!   inserted many times over.
//!
//! **Why 4 bits, not 8.** Fan et al.'s bound makes 4 bits enough for a filter filled
//! to its capacity with distinct keys; a byte would double the memory to guard only
//! against the same key inserted more than 15 times, which saturation already makes
//! safe (no false negatives, a stuck counter).
//!
//! Positions are the classic layout's (double hashing over one XXH3-128); the blocked
//! layout is not offered, because its point — one cache line — is lost once a counter
//! takes 4 bits and a block 2,048 of them. When two of a key's positions coincide
//! (likely only in a small filter), the counter is raised once, so a key raises each
//! of its distinct counters by exactly one and `remove` undoes exactly that.

use super::{BITS_MAX, BloomConfig, BloomFilter, HASHES_MAX, Layout, classic_position};
use crate::codec::{Kind, Reader, Writer};
use crate::error::{DecodeError, MergeError, ParamError};
use crate::hash::hash_pair;

/// The value at which a counter sticks.
pub const COUNTER_MAX: u8 = 15;

/// What a [`CountingBloomFilter`] is sized for: the classic layout's `(n, p)` optimum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountingBloomConfig {
    /// How many keys the filter should hold at the target rate (`n`).
    pub items_expected: u64,
    /// The target false-positive rate (`p`), strictly between 0 and 1.
    pub false_positive_rate: f64,
    /// The hash seed; filters only combine when their seeds are equal.
    pub seed: u64,
}

impl CountingBloomConfig {
    /// A filter for `items_expected` keys at `false_positive_rate`, seed 0.
    pub fn new(items_expected: u64, false_positive_rate: f64) -> Self {
        Self { items_expected, false_positive_rate, seed: 0 }
    }

    /// The same, with another seed.
    pub fn seed(self, seed: u64) -> Self {
        Self { seed, ..self }
    }
}

/// A Bloom filter with 4-bit saturating counters, so keys can be removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountingBloomFilter {
    /// Two counters per byte: counter `i` is the low nibble of byte `i/2` when `i` is
    /// even, the high nibble when odd. A trailing high nibble past `counters` is 0.
    nibbles: Vec<u8>,
    counters: u64,
    hashes: u32,
    seed: u64,
}

impl CountingBloomFilter {
    /// A filter sized like a classic [`BloomFilter`] for the same `(n, p)`: as many
    /// counters as that filter has bits, and the same number of hashes.
    pub fn new(config: &CountingBloomConfig) -> Result<Self, ParamError> {
        let classic = BloomConfig::new(config.items_expected, config.false_positive_rate)
            .layout(Layout::Classic);
        let (counters, hashes) = super::optimal_shape(&classic)?;
        Self::with_shape(counters, hashes, config.seed)
    }

    /// A filter of exactly `counters` counters and `hashes` hashes.
    pub fn with_shape(counters: u64, hashes: u32, seed: u64) -> Result<Self, ParamError> {
        check_shape(counters, hashes)
            .map_err(|(name, value, min, max)| ParamError::OutOfRange { name, value, min, max })?;
        Ok(Self { nibbles: vec![0; counters.div_ceil(2) as usize], counters, hashes, seed })
    }

    /// Adds `key` once. Returns `true` when one of its counters was zero, that is when
    /// the key was certainly not in the filter before.
    pub fn insert(&mut self, key: impl AsRef<[u8]>) -> bool {
        let (positions, n) = self.positions(key.as_ref());
        let mut was_absent = false;
        for &at in &positions[..n] {
            let c = self.counter(at);
            was_absent |= c == 0;
            if c < COUNTER_MAX {
                self.set_counter(at, c + 1);
            }
        }
        was_absent
    }

    /// Whether `key` may be in the filter: `false` is certain, `true` is wrong with
    /// about the classic filter's false-positive rate.
    pub fn contains(&self, key: impl AsRef<[u8]>) -> bool {
        let (positions, n) = self.positions(key.as_ref());
        positions[..n].iter().all(|&at| self.counter(at) > 0)
    }

    /// Removes one insertion of `key`. When the key is certainly absent (a counter is
    /// zero) nothing changes and the result is `false`. Otherwise each of its counters
    /// below [`COUNTER_MAX`] is decremented (saturated ones stick) and the result is
    /// `true`.
    ///
    /// Removing a key that was never inserted but is a false positive cannot be
    /// detected, and may make keys that share its counters read as absent (see the
    /// module docs): only remove keys you inserted.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) -> bool {
        let (positions, n) = self.positions(key.as_ref());
        if positions[..n].iter().any(|&at| self.counter(at) == 0) {
            return false;
        }
        for &at in &positions[..n] {
            let c = self.counter(at);
            debug_assert!(c > 0, "checked above, and positions are distinct");
            if c < COUNTER_MAX {
                self.set_counter(at, c - 1);
            }
        }
        true
    }

    /// Adds every insertion counted in `other` to `self`, counter by counter, saturating
    /// at [`COUNTER_MAX`]: afterwards `self` is the filter of both insertion sequences
    /// (exactly, where no counter saturated). Shape and seed must match; on error `self`
    /// is unchanged.
    pub fn merge(&mut self, other: &Self) -> Result<(), MergeError> {
        if self.counters != other.counters {
            return Err(MergeError::ShapeMismatch("counter counts differ"));
        }
        if self.hashes != other.hashes {
            return Err(MergeError::ShapeMismatch("hash counts differ"));
        }
        if self.seed != other.seed {
            return Err(MergeError::ShapeMismatch("seeds differ"));
        }
        for (a, b) in self.nibbles.iter_mut().zip(&other.nibbles) {
            let low = ((*a & 0x0f) + (*b & 0x0f)).min(COUNTER_MAX);
            let high = ((*a >> 4) + (*b >> 4)).min(COUNTER_MAX);
            *a = low | high << 4;
        }
        Ok(())
    }

    /// The classic filter of the keys present: a bit for every non-zero counter.
    pub fn to_bloom(&self) -> BloomFilter {
        let mut words = vec![0u64; self.counters.div_ceil(64) as usize];
        for at in 0..self.counters {
            if self.counter(at) > 0 {
                words[(at / 64) as usize] |= 1 << (at % 64);
            }
        }
        BloomFilter {
            words,
            bits: self.counters,
            hashes: self.hashes,
            layout: Layout::Classic,
            seed: self.seed,
        }
    }

    /// The number of counters, `m`.
    pub fn counters(&self) -> u64 {
        self.counters
    }

    /// The number of hashes per key, `k`.
    pub fn hashes(&self) -> u32 {
        self.hashes
    }

    /// How many counters are stuck at [`COUNTER_MAX`].
    pub fn saturated(&self) -> u64 {
        (0..self.counters).filter(|&at| self.counter(at) == COUNTER_MAX).count() as u64
    }

    /// Clears every counter, keeping the shape.
    pub fn clear(&mut self) {
        self.nibbles.fill(0);
    }

    /// The serialized form: the shared frame (see the crate docs) around
    /// `hashes (4) | counters (8) | seed (8) | counters, two per byte (low nibble first)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Kind::CountingBloom, 20 + self.nibbles.len());
        w.u32(self.hashes);
        w.u64(self.counters);
        w.u64(self.seed);
        w.bytes(&self.nibbles);
        w.finish()
    }

    /// Reads a filter written by [`CountingBloomFilter::to_bytes`]. Damaged, truncated
    /// or foreign bytes are a [`DecodeError`], never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::open(bytes, Kind::CountingBloom)?;
        let hashes = r.u32()?;
        let counters = r.u64()?;
        let seed = r.u64()?;
        check_shape(counters, hashes)
            .map_err(|(field, value, _, _)| DecodeError::Invalid { field, value })?;
        let nibbles = r.rest_exact(counters.div_ceil(2))?.to_vec();
        // A nibble past the last counter is never set by this code.
        if counters % 2 == 1 && nibbles.last().is_some_and(|b| b >> 4 != 0) {
            return Err(DecodeError::Invalid { field: "counter past the end", value: counters });
        }
        Ok(Self { nibbles, counters, hashes, seed })
    }

    /// The key's distinct counter positions, in the first `n` slots.
    #[inline]
    fn positions(&self, key: &[u8]) -> ([u64; HASHES_MAX as usize], usize) {
        let (h1, h2) = hash_pair(key, self.seed);
        let mut positions = [0u64; HASHES_MAX as usize];
        let mut n = 0;
        for i in 0..self.hashes {
            let at = classic_position(h1, h2, i, self.counters);
            if !positions[..n].contains(&at) {
                positions[n] = at;
                n += 1;
            }
        }
        (positions, n)
    }

    #[inline]
    fn counter(&self, at: u64) -> u8 {
        let byte = self.nibbles[(at / 2) as usize];
        if at & 1 == 0 { byte & 0x0f } else { byte >> 4 }
    }

    #[inline]
    fn set_counter(&mut self, at: u64, value: u8) {
        debug_assert!(value <= COUNTER_MAX);
        let byte = &mut self.nibbles[(at / 2) as usize];
        *byte = if at & 1 == 0 { (*byte & 0xf0) | value } else { (*byte & 0x0f) | value << 4 };
    }
}

/// Checks a shape; on failure, the offending field, its value and its bounds. The
/// counter limit keeps the memory at the classic filter's limit (4 GiB).
fn check_shape(counters: u64, hashes: u32) -> Result<(), (&'static str, u64, u64, u64)> {
    if !(1..=HASHES_MAX).contains(&hashes) {
        return Err(("hashes", u64::from(hashes), 1, u64::from(HASHES_MAX)));
    }
    let max = BITS_MAX / 4;
    if !(1..=max).contains(&counters) {
        return Err(("counters", counters, 1, max));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_like_the_classic_filter() {
        let f = CountingBloomFilter::new(&CountingBloomConfig::new(1000, 0.01)).expect("valid");
        assert_eq!((f.counters(), f.hashes()), (9600, 7));
        assert_eq!(f.nibbles.len(), 4800);
        assert!(CountingBloomFilter::new(&CountingBloomConfig::new(0, 0.01)).is_err());
        assert!(CountingBloomFilter::new(&CountingBloomConfig::new(10, 1.0)).is_err());
        assert!(CountingBloomFilter::with_shape(0, 3, 0).is_err());
        assert!(CountingBloomFilter::with_shape(64, 0, 0).is_err());
        assert!(CountingBloomFilter::with_shape(BITS_MAX / 4 + 1, 3, 0).is_err());
    }

    #[test]
    fn counters_saturate_and_stick() {
        let mut f = CountingBloomFilter::with_shape(101, 3, 0).expect("shape");
        for _ in 0..20 {
            f.insert("hot");
        }
        let (positions, n) = f.positions(b"hot");
        assert!(positions[..n].iter().all(|&at| f.counter(at) == COUNTER_MAX));
        assert_eq!(f.saturated(), n as u64);
        // More removals than insertions: the stuck counters keep the key present.
        for _ in 0..40 {
            assert!(f.remove("hot"));
        }
        assert!(f.contains("hot"));
        // The odd counter count leaves the last byte's high nibble unused.
        assert_eq!(f.nibbles.len(), 51);
        assert_eq!(f.nibbles[50] >> 4, 0);
    }

    #[test]
    fn merge_saturates_and_refuses_other_shapes() {
        let mut a = CountingBloomFilter::with_shape(64, 2, 0).expect("shape");
        for _ in 0..10 {
            a.insert("x");
        }
        let b = a.clone();
        a.merge(&b).expect("same shape");
        assert_eq!(a.saturated(), b.positions(b"x").1 as u64);
        let before = a.clone();
        for other in [
            CountingBloomFilter::with_shape(65, 2, 0),
            CountingBloomFilter::with_shape(64, 3, 0),
            CountingBloomFilter::with_shape(64, 2, 1),
        ] {
            let other = other.expect("shape");
            assert!(matches!(a.merge(&other), Err(MergeError::ShapeMismatch(_))));
            assert_eq!(a, before);
        }
    }

    #[test]
    fn repeated_positions_count_once() {
        // m = 2 with 8 hashes: every key's positions repeat; each distinct counter must
        // rise by one per insert and fall by one per remove.
        let mut f = CountingBloomFilter::with_shape(2, 8, 0).expect("shape");
        f.insert("k");
        let (_, n) = f.positions(b"k");
        let total: u32 = (0..2).map(|at| u32::from(f.counter(at))).sum();
        assert_eq!(total, n as u32);
        assert!(f.remove("k"));
        assert!(!f.contains("k"));
        assert!(!f.remove("k"));
    }
}
