//! Pattern: Count-Min Sketch for Frequency Estimation.
//!
//! **Guarantee.** [`CountMinSketch::estimate`] never underestimates: it is at least
//! the true total added for the key (also with conservative update, after a merge and
//! after a serialization round trip). With probability at least `1 − δ` it overestimates
//! by at most `ε·N`, where `N` is the total of all counts added
//! ([`CountMinSketch::error_bound`]).
//!
//! **Trade-off.** Memory is `w·d` counters, fixed: `w = ⌈e/ε⌉`, `d = ⌈ln(1/δ)⌉` (the
//! catalogue's ε = 0.001, δ = 0.01 gives 2719 × 5, 106 KiB of `u64`s — the
//! catalogue's "~2 KB" for ε = δ = 0.01 holds for 272 × 5 counters of 16 bits, not for
//! counters that cannot overflow). Counts only grow; the error grows with `N`, so rare
//! keys in a big stream are estimated poorly while heavy hitters are estimated well.
//!
//! **Conservative update** (optional): an add raises each of the key's counters only
//! as far as the new lower bound `min + count` needs. Estimates are never worse and
//! usually much better on skewed streams, but the sketch is then no longer linear:
//! merging conservative sketches keeps the no-underestimate guarantee, yet the result
//! is not the sketch of the concatenated stream.
//!
//! Row `i` hashes a key to `h1 + i·h2` (double hashing over one XXH3-128, mapped to
//! `0..w` by multiply-shift) — no allocation per update, one hash per key. Counters
//! saturate at `u64::MAX` instead of wrapping.

use crate::codec::{self, Kind, Reader, Writer};
use crate::error::{DecodeError, MergeError, ParamError};
use crate::hash::{hash_pair, reduce};

/// The most rows (`d`); `δ = e^(−32)` is far below any useful failure rate.
pub const DEPTH_MAX: u32 = 32;
/// The most columns (`w`); `ε ≈ 1.6·10⁻⁷`.
pub const WIDTH_MAX: u32 = 1 << 24;

/// What a [`CountMinSketch`] is sized for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountMinConfig {
    /// The error as a fraction of the stream's total (`ε`), strictly between 0 and 1.
    pub epsilon: f64,
    /// The probability that an estimate misses the bound (`δ`), strictly between 0 and 1.
    pub delta: f64,
    /// Whether adds use conservative update (see the module docs).
    pub conservative: bool,
    /// The hash seed; sketches only merge when their seeds are equal.
    pub seed: u64,
}

impl CountMinConfig {
    /// A sketch with error `ε·N` at probability `1 − δ`, plain updates, seed 0.
    pub fn new(epsilon: f64, delta: f64) -> Self {
        Self { epsilon, delta, conservative: false, seed: 0 }
    }

    /// The same, with conservative update on or off.
    pub fn conservative(self, conservative: bool) -> Self {
        Self { conservative, ..self }
    }

    /// The same, with another seed.
    pub fn seed(self, seed: u64) -> Self {
        Self { seed, ..self }
    }
}

/// A Count-Min sketch over byte-string keys with `u64` counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountMinSketch {
    width: u32,
    depth: u32,
    conservative: bool,
    seed: u64,
    total: u64,
    /// Row-major: row `i` is `counters[i·w .. (i+1)·w]`.
    counters: Vec<u64>,
}

impl CountMinSketch {
    /// A sketch sized from `(ε, δ)`: `w = ⌈e/ε⌉`, `d = ⌈ln(1/δ)⌉`.
    pub fn new(config: &CountMinConfig) -> Result<Self, ParamError> {
        for (name, value) in [("epsilon", config.epsilon), ("delta", config.delta)] {
            if !(value > 0.0 && value < 1.0) {
                return Err(ParamError::Probability { name, value });
            }
        }
        let width = (std::f64::consts::E / config.epsilon).ceil();
        let depth = (1.0 / config.delta).ln().ceil().max(1.0);
        // Saturating float-to-int casts: an out-of-range size is reported as is.
        Self::with_shape(width as u64, depth as u64, config.conservative, config.seed)
    }

    /// A sketch of exactly `width` columns and `depth` rows.
    pub fn with_shape(
        width: u64,
        depth: u64,
        conservative: bool,
        seed: u64,
    ) -> Result<Self, ParamError> {
        let (width, depth) = check_shape(width, depth)
            .map_err(|(name, value, min, max)| ParamError::OutOfRange { name, value, min, max })?;
        Ok(Self {
            width,
            depth,
            conservative,
            seed,
            total: 0,
            counters: vec![0; width as usize * depth as usize],
        })
    }

    /// Adds `count` occurrences of `key`.
    pub fn add(&mut self, key: impl AsRef<[u8]>, count: u64) {
        let (h1, h2) = hash_pair(key.as_ref(), self.seed);
        self.total = self.total.saturating_add(count);
        if self.conservative {
            let estimate = self.min_cell(h1, h2);
            let target = estimate.saturating_add(count);
            for row in 0..self.depth {
                let i = self.index(row, h1, h2);
                let cell = &mut self.counters[i];
                *cell = (*cell).max(target);
            }
        } else {
            for row in 0..self.depth {
                let i = self.index(row, h1, h2);
                let cell = &mut self.counters[i];
                *cell = cell.saturating_add(count);
            }
        }
    }

    /// An estimate of the total added for `key`: never below it, and above it by at
    /// most [`CountMinSketch::error_bound`] with probability `1 − δ`.
    pub fn estimate(&self, key: impl AsRef<[u8]>) -> u64 {
        let (h1, h2) = hash_pair(key.as_ref(), self.seed);
        self.min_cell(h1, h2)
    }

    /// The overestimate bound `ε·N`, with `ε = e/w` for this sketch's width and `N`
    /// the total of all counts added.
    pub fn error_bound(&self) -> f64 {
        self.epsilon() * self.total as f64
    }

    /// The error fraction `ε = e/w` this sketch's width gives.
    pub fn epsilon(&self) -> f64 {
        std::f64::consts::E / f64::from(self.width)
    }

    /// The probability `δ = e^(−d)` that an estimate exceeds the bound.
    pub fn delta(&self) -> f64 {
        (-f64::from(self.depth)).exp()
    }

    /// The total of all counts added (`N`), saturating.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The number of columns, `w`.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// The number of rows, `d`.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Whether adds use conservative update.
    pub fn is_conservative(&self) -> bool {
        self.conservative
    }

    /// Adds every count of `other` to `self`, cell by cell. For plain sketches the
    /// result equals the sketch of both streams; for conservative ones it still never
    /// underestimates. Width, depth, update mode and seed must match; on error `self`
    /// is unchanged.
    pub fn merge(&mut self, other: &Self) -> Result<(), MergeError> {
        if self.width != other.width || self.depth != other.depth {
            return Err(MergeError::ShapeMismatch("widths or depths differ"));
        }
        if self.conservative != other.conservative {
            return Err(MergeError::ShapeMismatch("update modes differ"));
        }
        if self.seed != other.seed {
            return Err(MergeError::ShapeMismatch("seeds differ"));
        }
        for (a, b) in self.counters.iter_mut().zip(&other.counters) {
            *a = a.saturating_add(*b);
        }
        self.total = self.total.saturating_add(other.total);
        Ok(())
    }

    /// The serialized form: the shared frame (see the crate docs) around
    /// `width (4) | depth (4) | conservative (1) | seed (8) | total (8) | counters (8 each, LE, row-major)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Kind::CountMin, 25 + self.counters.len() * 8);
        w.u32(self.width);
        w.u32(self.depth);
        w.u8(u8::from(self.conservative));
        w.u64(self.seed);
        w.u64(self.total);
        for c in &self.counters {
            w.u64(*c);
        }
        w.finish()
    }

    /// Reads a sketch written by [`CountMinSketch::to_bytes`]. Damaged, truncated or
    /// foreign bytes are a [`DecodeError`], never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::open(bytes, Kind::CountMin)?;
        let width = r.u32()?;
        let depth = r.u32()?;
        let (width, depth) = check_shape(u64::from(width), u64::from(depth))
            .map_err(|(field, value, _, _)| DecodeError::Invalid { field, value })?;
        let conservative = match r.u8()? {
            0 => false,
            1 => true,
            other => {
                return Err(DecodeError::Invalid {
                    field: "conservative",
                    value: u64::from(other),
                });
            }
        };
        let seed = r.u64()?;
        let total = r.u64()?;
        let cells = u64::from(width) * u64::from(depth);
        let counters = codec::words_from_le(r.rest_exact(cells * 8)?);
        // Every add puts its count into each row once (or less, when conservative),
        // so no row can sum past the total unless the total saturated.
        if total != u64::MAX {
            for row in counters.chunks_exact(width as usize) {
                let sum: u128 = row.iter().map(|&c| u128::from(c)).sum();
                if sum > u128::from(total) {
                    return Err(DecodeError::Invalid {
                        field: "row sum above total",
                        value: total,
                    });
                }
            }
        }
        Ok(Self { width, depth, conservative, seed, total, counters })
    }

    #[inline]
    fn index(&self, row: u32, h1: u64, h2: u64) -> usize {
        let x = h1.wrapping_add(u64::from(row).wrapping_mul(h2));
        row as usize * self.width as usize + reduce(x, u64::from(self.width)) as usize
    }

    #[inline]
    fn min_cell(&self, h1: u64, h2: u64) -> u64 {
        (0..self.depth).map(|row| self.counters[self.index(row, h1, h2)]).min().unwrap_or(0)
    }
}

/// Checks a shape; on failure, the offending field, its value and its bounds.
fn check_shape(width: u64, depth: u64) -> Result<(u32, u32), (&'static str, u64, u64, u64)> {
    if !(1..=u64::from(WIDTH_MAX)).contains(&width) {
        return Err(("width", width, 1, u64::from(WIDTH_MAX)));
    }
    if !(1..=u64::from(DEPTH_MAX)).contains(&depth) {
        return Err(("depth", depth, 1, u64::from(DEPTH_MAX)));
    }
    Ok((width as u32, depth as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_sizing(epsilon: f64, delta: f64, width: u32, depth: u32) {
        let s =
            CountMinSketch::new(&CountMinConfig::new(epsilon, delta)).expect("valid parameters");
        assert_eq!((s.width(), s.depth()), (width, depth), "ε={epsilon} δ={delta}");
    }

    #[test]
    fn sizing_follows_the_catalogue() {
        // The catalogue: ε = 0.001, δ = 0.01 → w ≈ 2718 (⌈2718.28⌉ = 2719), d ≈ 5.
        check_sizing(0.001, 0.01, 2719, 5);
        check_sizing(0.01, 0.01, 272, 5);
        check_sizing(0.5, 0.5, 6, 1);
        check_sizing(0.1, 0.9, 28, 1);
    }

    #[test]
    fn bad_parameters_are_typed_errors() {
        for bad in [0.0, 1.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                CountMinSketch::new(&CountMinConfig::new(bad, 0.1)),
                Err(ParamError::Probability { name: "epsilon", .. })
            ));
            assert!(matches!(
                CountMinSketch::new(&CountMinConfig::new(0.1, bad)),
                Err(ParamError::Probability { name: "delta", .. })
            ));
        }
        assert!(matches!(
            CountMinSketch::new(&CountMinConfig::new(1e-12, 0.1)),
            Err(ParamError::OutOfRange { name: "width", .. })
        ));
        assert!(matches!(
            CountMinSketch::new(&CountMinConfig::new(0.1, 1e-30)),
            Err(ParamError::OutOfRange { name: "depth", .. })
        ));
        assert!(CountMinSketch::with_shape(0, 3, false, 0).is_err());
    }

    #[test]
    fn merge_refuses_other_shapes_and_leaves_self_alone() {
        let mut a = CountMinSketch::with_shape(64, 3, false, 0).expect("shape");
        a.add("x", 3);
        let before = a.clone();
        for other in [
            CountMinSketch::with_shape(65, 3, false, 0),
            CountMinSketch::with_shape(64, 4, false, 0),
            CountMinSketch::with_shape(64, 3, true, 0),
            CountMinSketch::with_shape(64, 3, false, 9),
        ] {
            let other = other.expect("shape");
            assert!(matches!(a.merge(&other), Err(MergeError::ShapeMismatch(_))));
            assert_eq!(a, before);
        }
    }

    #[test]
    fn counters_saturate() {
        let mut s = CountMinSketch::with_shape(8, 2, false, 0).expect("shape");
        s.add("x", u64::MAX - 1);
        s.add("x", 5);
        assert_eq!((s.estimate("x"), s.total()), (u64::MAX, u64::MAX));
    }
}
