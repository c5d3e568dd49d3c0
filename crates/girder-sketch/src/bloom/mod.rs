//! Pattern: Bloom Filter for Membership Testing.
//!
//! **Guarantee.** No false negatives: after `insert(x)`, `contains(x)` is `true`,
//! also after a [`BloomFilter::union`] and a serialization round trip. A key never
//! inserted is reported present with probability about `(1 − e^(−kn/m))^k` for the
//! classic layout (`m` bits, `k` hashes, `n` keys) — the catalogue's formula.
//!
//! **Trade-off.** Memory is fixed at construction and the rate is only met while no
//! more than the expected number of keys are inserted; past that it climbs. Keys cannot
//! be removed or listed. Two variants lift one limit each, at a price:
//! [`CountingBloomFilter`] (4-bit counters: keys can be removed, for 4× the memory) and
//! [`ScalableBloomFilter`] (stages added as keys arrive: no `n` up front, the rate still
//! at most `p`, for more memory than a filter sized in advance). The two layouts trade
//! rate for speed:
//! - [`Layout::Classic`] spreads a key's `k` bits over the whole array: the formula
//!   holds, but a query touches up to `k` cache lines.
//! - [`Layout::Blocked`] puts all `k` bits of a key in one 64-byte block (512 bits)
//!   chosen by the key: one cache line per query, at the price of a higher
//!   false-positive rate at the same memory, because blocks fill unevenly
//!   ([`expected_false_positive_rate_blocked`]). Sized from `(n, p)`, a blocked filter
//!   is grown until that formula meets `p`: at a million keys, 6% more memory than the
//!   classic layout at 1%, 9% more at 0.1%, 19% more at 0.01%.
//!
//! **Sizing.** The catalogue's optimum: `m = −n·ln p / (ln 2)²` bits and
//! `k = (m/n)·ln 2` hashes, rounded (`m` up to whole 64-bit words, or whole blocks).
//! The `k` positions come from one XXH3-128 by double hashing (Kirsch–Mitzenmacher,
//! `g_i = h1 + i·h2`), which keeps the asymptotic rate of `k` independent hashes; no
//! allocation happens per insert or query.

mod counting;
mod scalable;

pub use counting::{COUNTER_MAX, CountingBloomConfig, CountingBloomFilter};
pub use scalable::{GROWTH_MAX, STAGES_MAX, ScalableBloomConfig, ScalableBloomFilter};

use crate::codec::{self, Kind, Reader, Writer};
use crate::error::{DecodeError, MergeError, ParamError};
use crate::hash::{hash_pair, reduce};

/// The most hash functions a filter may use (the optimum for a rate of 10⁻⁹ is 30).
pub const HASHES_MAX: u32 = 32;
/// The largest filter, in bits (4 GiB of memory).
pub const BITS_MAX: u64 = 1 << 35;
const BLOCK_BITS: u64 = 512;
const BLOCK_WORDS: usize = 8;

/// Where a key's bits go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Anywhere in the array: the textbook filter, whose rate the formula predicts.
    Classic,
    /// All in one 64-byte block: one cache line per operation, a slightly higher rate.
    Blocked,
}

/// What a [`BloomFilter`] is sized for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BloomConfig {
    /// How many distinct keys the filter should hold at the target rate (`n`).
    pub items_expected: u64,
    /// The target false-positive rate (`p`), strictly between 0 and 1.
    pub false_positive_rate: f64,
    /// The bit layout; [`Layout::Blocked`] by default.
    pub layout: Layout,
    /// The hash seed; filters only combine when their seeds are equal.
    pub seed: u64,
}

impl BloomConfig {
    /// A blocked-layout filter for `items_expected` keys at `false_positive_rate`,
    /// seed 0.
    pub fn new(items_expected: u64, false_positive_rate: f64) -> Self {
        Self { items_expected, false_positive_rate, layout: Layout::Blocked, seed: 0 }
    }

    /// The same, with another layout.
    pub fn layout(self, layout: Layout) -> Self {
        Self { layout, ..self }
    }

    /// The same, with another seed.
    pub fn seed(self, seed: u64) -> Self {
        Self { seed, ..self }
    }
}

/// The false-positive rate the catalogue's formula predicts for a classic filter of
/// `bits` bits and `hashes` hashes holding `items` keys: `(1 − e^(−kn/m))^k`.
pub fn expected_false_positive_rate(bits: u64, hashes: u32, items: u64) -> f64 {
    if bits == 0 {
        return 1.0;
    }
    let k = f64::from(hashes);
    (1.0 - (-k * items as f64 / bits as f64).exp()).powf(k)
}

/// The false-positive rate of a blocked filter (512-bit blocks) of `bits` bits and
/// `hashes` hashes holding `items` keys. A block's load is Poisson with mean
/// `λ = 512·n/m`, and a block holding `j` keys answers wrongly with the classic
/// formula for 512 bits and `j` keys; the rate is the average over the loads. Higher
/// than [`expected_false_positive_rate`] at the same size, more so at low rates.
pub fn expected_false_positive_rate_blocked(bits: u64, hashes: u32, items: u64) -> f64 {
    let blocks = bits / BLOCK_BITS;
    if blocks == 0 {
        return 1.0;
    }
    let lambda = items as f64 / blocks as f64;
    if lambda == 0.0 {
        return 0.0;
    }
    // Sum the Poisson terms in log space (e^(−λ) underflows for big λ) out to
    // λ + 12σ, past which the terms are below 1e-30.
    let last = (lambda + 12.0 * lambda.sqrt() + 20.0).ceil() as u64;
    let first = (lambda - 12.0 * lambda.sqrt()).floor().max(0.0) as u64;
    let ln_lambda = lambda.ln();
    // Only the ~24σ terms around λ are visited: ln(first!) comes from Stirling's
    // series, so a huge λ (a filter far past capacity) costs O(√λ), not O(λ).
    let mut ln_factorial = ln_factorial(first);
    // The sum is divided by the mass visited: for a huge λ the log-space terms lose
    // ~1e-7 each to rounding, and normalizing cancels that and the truncated tails.
    let mut rate = 0.0;
    let mut mass = 0.0;
    for j in first..=last {
        if j > first {
            ln_factorial += (j as f64).ln();
        }
        let pmf = (-lambda + j as f64 * ln_lambda - ln_factorial).exp();
        rate += pmf * expected_false_positive_rate(BLOCK_BITS, hashes, j);
        mass += pmf;
    }
    (rate / mass).min(1.0)
}

/// The shape `(bits, hashes)` a filter sized from `config` gets: the optimum for
/// `(n, p)`, and for the blocked layout grown until its own formula meets `p` (see
/// the module docs). Computed without allocating, so decoders can check a stored
/// shape against its config before trusting it.
pub(crate) fn optimal_shape(config: &BloomConfig) -> Result<(u64, u32), ParamError> {
    let n = config.items_expected;
    let p = config.false_positive_rate;
    if !(p > 0.0 && p < 1.0) {
        return Err(ParamError::Probability { name: "false_positive_rate", value: p });
    }
    if n == 0 {
        return Err(ParamError::OutOfRange {
            name: "items_expected",
            value: 0,
            min: 1,
            max: u64::MAX,
        });
    }
    let ln2 = std::f64::consts::LN_2;
    let bits_f = (-(n as f64) * p.ln() / (ln2 * ln2)).ceil();
    let unit = match config.layout {
        Layout::Classic => 64.0,
        Layout::Blocked => BLOCK_BITS as f64,
    };
    let mut bits_f = (bits_f / unit).ceil() * unit;
    let too_big = |bits_f: f64| ParamError::OutOfRange {
        name: "bits",
        value: bits_f as u64, // saturates
        min: 1,
        max: BITS_MAX,
    };
    if bits_f > BITS_MAX as f64 {
        return Err(too_big(bits_f));
    }
    // The optimum for the bits actually used (slightly more than asked for).
    let hashes_for =
        |bits: f64| (bits / n as f64 * ln2).round().clamp(1.0, f64::from(HASHES_MAX)) as u32;
    if config.layout == Layout::Blocked {
        // Blocks fill unevenly, so the classic size misses the target; grow by
        // steps of ~3% until the blocked layout's own formula meets it. The rate
        // falls geometrically with size, so this ends within a few dozen steps.
        while expected_false_positive_rate_blocked(bits_f as u64, hashes_for(bits_f), n) > p {
            bits_f = (bits_f * 1.03 / unit).ceil() * unit;
            if bits_f > BITS_MAX as f64 {
                return Err(too_big(bits_f));
            }
        }
    }
    Ok((bits_f as u64, hashes_for(bits_f)))
}

/// `ln(n!)`: summed exactly below 32, Stirling's series (error < 1e-12) above.
fn ln_factorial(n: u64) -> f64 {
    if n < 32 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x * x)
}

/// A Bloom filter over byte-string keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BloomFilter {
    words: Vec<u64>,
    bits: u64,
    hashes: u32,
    layout: Layout,
    seed: u64,
}

impl BloomFilter {
    /// A filter sized from `(n, p)` with the optimal number of bits and hashes.
    pub fn new(config: &BloomConfig) -> Result<Self, ParamError> {
        let (bits, hashes) = optimal_shape(config)?;
        Self::with_shape(bits, hashes, config.layout, config.seed)
    }

    /// A filter of exactly `bits` bits and `hashes` hashes. A blocked filter's `bits`
    /// must be a multiple of 512.
    pub fn with_shape(
        bits: u64,
        hashes: u32,
        layout: Layout,
        seed: u64,
    ) -> Result<Self, ParamError> {
        check_shape(bits, hashes, layout)
            .map_err(|(name, value, min, max)| ParamError::OutOfRange { name, value, min, max })?;
        let words = bits.div_ceil(64) as usize;
        Ok(Self { words: vec![0; words], bits, hashes, layout, seed })
    }

    /// Adds `key`. Returns `true` when at least one of its bits was clear, that is
    /// when the key was certainly not in the filter before.
    pub fn insert(&mut self, key: impl AsRef<[u8]>) -> bool {
        let (h1, h2) = hash_pair(key.as_ref(), self.seed);
        self.insert_hashed(h1, h2)
    }

    /// [`BloomFilter::insert`] for a key already hashed with this filter's seed.
    pub(crate) fn insert_hashed(&mut self, h1: u64, h2: u64) -> bool {
        let mut was_absent = false;
        match self.layout {
            Layout::Classic => {
                for i in 0..self.hashes {
                    was_absent |= set_bit(&mut self.words, classic_position(h1, h2, i, self.bits));
                }
            }
            Layout::Blocked => {
                let base = self.block_base(h1);
                let block = &mut self.words[base..base + BLOCK_WORDS];
                let mut x = h2 | 1;
                for _ in 0..self.hashes {
                    x = next_in_block(x);
                    was_absent |= set_bit(block, x >> 55);
                }
            }
        }
        was_absent
    }

    /// Whether `key` may be in the filter: `false` is certain, `true` is wrong with
    /// about the filter's false-positive rate.
    pub fn contains(&self, key: impl AsRef<[u8]>) -> bool {
        let (h1, h2) = hash_pair(key.as_ref(), self.seed);
        self.contains_hashed(h1, h2)
    }

    /// [`BloomFilter::contains`] for a key already hashed with this filter's seed.
    pub(crate) fn contains_hashed(&self, h1: u64, h2: u64) -> bool {
        match self.layout {
            Layout::Classic => (0..self.hashes)
                .all(|i| get_bit(&self.words, classic_position(h1, h2, i, self.bits))),
            Layout::Blocked => {
                let base = self.block_base(h1);
                let block = &self.words[base..base + BLOCK_WORDS];
                let mut x = h2 | 1;
                (0..self.hashes).all(|_| {
                    x = next_in_block(x);
                    get_bit(block, x >> 55)
                })
            }
        }
    }

    /// Adds every key of `other` to `self`: afterwards `self` equals the filter built
    /// from both key sets. Both must have the same shape and seed; on error `self` is
    /// unchanged.
    pub fn union(&mut self, other: &Self) -> Result<(), MergeError> {
        if self.bits != other.bits {
            return Err(MergeError::ShapeMismatch("bits differ"));
        }
        if self.hashes != other.hashes {
            return Err(MergeError::ShapeMismatch("hash counts differ"));
        }
        if self.layout != other.layout {
            return Err(MergeError::ShapeMismatch("layouts differ"));
        }
        if self.seed != other.seed {
            return Err(MergeError::ShapeMismatch("seeds differ"));
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
        }
        Ok(())
    }

    /// An estimate of how many distinct keys were inserted, from the number of set
    /// bits `X` (Swamidass & Baldi): `−(m/k)·ln(1 − X/m)`. Infinite when every bit is
    /// set. Exact enough for a classic filter below its capacity; for the blocked
    /// layout it reads low as the filter fills.
    pub fn estimated_len(&self) -> f64 {
        let m = self.bits as f64;
        let x = self.ones() as f64;
        -(m / f64::from(self.hashes)) * (1.0 - x / m).ln()
    }

    /// The false-positive rate of the filter as it is now, `(X/m)^k` from the number
    /// of set bits `X` (for the classic layout; a lower bound for the blocked one).
    pub fn current_false_positive_rate(&self) -> f64 {
        (self.ones() as f64 / self.bits as f64).powf(f64::from(self.hashes))
    }

    /// The number of bits, `m`.
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// The number of hashes per key, `k`.
    pub fn hashes(&self) -> u32 {
        self.hashes
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Clears every bit, keeping the shape.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// The serialized form: the shared frame (see the crate docs) around
    /// `layout (1) | hashes (4) | bits (8) | seed (8) | words (8 each, LE)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Kind::Bloom, 21 + self.words.len() * 8);
        w.u8(match self.layout {
            Layout::Classic => 0,
            Layout::Blocked => 1,
        });
        w.u32(self.hashes);
        w.u64(self.bits);
        w.u64(self.seed);
        for word in &self.words {
            w.u64(*word);
        }
        w.finish()
    }

    /// Reads a filter written by [`BloomFilter::to_bytes`]. Damaged, truncated or
    /// foreign bytes are a [`DecodeError`], never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::open(bytes, Kind::Bloom)?;
        let layout = match r.u8()? {
            0 => Layout::Classic,
            1 => Layout::Blocked,
            other => {
                return Err(DecodeError::Invalid { field: "layout", value: u64::from(other) });
            }
        };
        let hashes = r.u32()?;
        let bits = r.u64()?;
        let seed = r.u64()?;
        check_shape(bits, hashes, layout)
            .map_err(|(field, value, _, _)| DecodeError::Invalid { field, value })?;
        let word_count = bits.div_ceil(64);
        let words = codec::words_from_le(r.rest_exact(word_count * 8)?);
        // Bits past `m` are never set by this code; a set one means foreign bytes, and
        // accepting it would make two equal filters compare unequal.
        let tail = bits % 64;
        if tail != 0 && words.last().is_some_and(|w| w >> tail != 0) {
            return Err(DecodeError::Invalid { field: "bits past the end", value: bits });
        }
        Ok(Self { words, bits, hashes, layout, seed })
    }

    fn block_base(&self, h1: u64) -> usize {
        let blocks = self.bits / BLOCK_BITS;
        debug_assert!(blocks > 0);
        reduce(h1, blocks) as usize * BLOCK_WORDS
    }

    fn ones(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// Checks a shape; on failure, the offending field, its value and its bounds.
fn check_shape(
    bits: u64,
    hashes: u32,
    layout: Layout,
) -> Result<(), (&'static str, u64, u64, u64)> {
    if !(1..=HASHES_MAX).contains(&hashes) {
        return Err(("hashes", u64::from(hashes), 1, u64::from(HASHES_MAX)));
    }
    let min = match layout {
        Layout::Classic => 1,
        Layout::Blocked => BLOCK_BITS,
    };
    if !(min..=BITS_MAX).contains(&bits) {
        return Err(("bits", bits, min, BITS_MAX));
    }
    if layout == Layout::Blocked && bits & (BLOCK_BITS - 1) != 0 {
        return Err(("bits (a multiple of 512 for the blocked layout)", bits, min, BITS_MAX));
    }
    Ok(())
}

/// The `i`-th of a key's `k` positions in `0..m` for the classic layout (and the
/// counting filter, whose counters sit where a classic filter's bits would):
/// `g_i = h1 + i·h2`, reduced by multiply-shift.
#[inline]
pub(crate) fn classic_position(h1: u64, h2: u64, i: u32, m: u64) -> u64 {
    reduce(h1.wrapping_add(u64::from(i).wrapping_mul(h2)), m)
}

/// The next position source inside a block: one xorshift64 step, whose top 9 bits
/// pick the bit. Double hashing (`h1 + i·h2`) is not used here: reduced to 512
/// positions, its arithmetic progressions make keys' bit patterns overlap more than
/// independent positions would, which measured at nearly twice the formula's rate at
/// 0.1%.
#[inline]
fn next_in_block(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[inline]
fn set_bit(words: &mut [u64], bit: u64) -> bool {
    let (w, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
    let was_clear = words[w] & mask == 0;
    words[w] |= mask;
    was_clear
}

#[inline]
fn get_bit(words: &[u64], bit: u64) -> bool {
    words[(bit / 64) as usize] & (1u64 << (bit % 64)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_sizing(n: u64, p: f64, layout: Layout, bits: u64, hashes: u32) {
        let f = BloomFilter::new(&BloomConfig::new(n, p).layout(layout)).expect("valid parameters");
        assert_eq!((f.bits(), f.hashes()), (bits, hashes), "n={n} p={p} {layout:?}");
    }

    #[test]
    fn sizing_follows_the_optimum() {
        // m = -n ln p / ln²2: 1000 keys at 1% need 9585.06 bits, rounded up to words
        // (9600); k = (m/n) ln 2 ≈ 6.65 → 7. The blocked layout grows to 20 blocks,
        // where its own formula first meets 1%.
        check_sizing(1000, 0.01, Layout::Classic, 9600, 7);
        check_sizing(1000, 0.01, Layout::Blocked, 10_240, 7);
        // 1M keys at 0.1%: 14,377,588 bits, k = 10.
        check_sizing(1_000_000, 0.001, Layout::Classic, 14_377_600, 10);
        check_sizing(1, 0.5, Layout::Classic, 64, 32);
    }

    #[test]
    fn bad_parameters_are_typed_errors() {
        for p in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
            assert!(matches!(
                BloomFilter::new(&BloomConfig::new(10, p)),
                Err(ParamError::Probability { .. })
            ));
        }
        assert!(matches!(
            BloomFilter::new(&BloomConfig::new(0, 0.01)),
            Err(ParamError::OutOfRange { name: "items_expected", .. })
        ));
        assert!(BloomFilter::new(&BloomConfig::new(u64::MAX, 1e-9)).is_err());
        assert!(BloomFilter::with_shape(1000, 3, Layout::Blocked, 0).is_err());
        assert!(BloomFilter::with_shape(0, 3, Layout::Classic, 0).is_err());
        assert!(BloomFilter::with_shape(64, 0, Layout::Classic, 0).is_err());
        assert!(BloomFilter::with_shape(64, HASHES_MAX + 1, Layout::Classic, 0).is_err());
    }

    #[test]
    fn ln_factorial_is_continuous_at_the_switch() {
        let exact = |n: u64| (2..=n).map(|i| (i as f64).ln()).sum::<f64>();
        for n in [32, 33, 100, 1000] {
            assert!((ln_factorial(n) - exact(n)).abs() < 1e-9 * exact(n), "n = {n}");
        }
    }

    #[test]
    fn blocked_formula_handles_overfull_filters() {
        // λ = 2.5·10⁸ keys per block: the rate is 1 (to rounding), computed from the
        // terms around λ only.
        let rate = expected_false_positive_rate_blocked(1 << 20, 3, 1 << 39);
        assert!(rate > 0.999_999 && rate <= 1.0, "{rate}");
        assert_eq!(expected_false_positive_rate_blocked(1 << 20, 3, 0), 0.0);
        assert_eq!(expected_false_positive_rate_blocked(100, 3, 10), 1.0);
        // A target near 1 and a huge n still sizes (by growing) and stays in range.
        // Past the size limit, the growth stops with a typed error.
        let f = BloomFilter::new(&BloomConfig::new(1 << 30, 0.999_999)).expect("valid parameters");
        assert!(expected_false_positive_rate_blocked(f.bits(), f.hashes(), 1 << 30) <= 0.999_999);
        assert!(matches!(
            BloomFilter::new(&BloomConfig::new(1 << 40, 0.999_999)),
            Err(ParamError::OutOfRange { name: "bits", .. })
        ));
    }

    #[test]
    fn union_refuses_other_shapes_and_leaves_self_alone() {
        let mut a = BloomFilter::with_shape(1024, 3, Layout::Classic, 0).expect("shape");
        a.insert("x");
        let before = a.clone();
        for other in [
            BloomFilter::with_shape(2048, 3, Layout::Classic, 0),
            BloomFilter::with_shape(1024, 4, Layout::Classic, 0),
            BloomFilter::with_shape(1024, 3, Layout::Blocked, 0),
            BloomFilter::with_shape(1024, 3, Layout::Classic, 1),
        ] {
            let other = other.expect("shape");
            assert!(matches!(a.union(&other), Err(MergeError::ShapeMismatch(_))));
            assert_eq!(a, before);
        }
    }
}
