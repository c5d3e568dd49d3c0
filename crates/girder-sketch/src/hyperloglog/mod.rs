//! Pattern: HyperLogLog for Cardinality Estimation.
//!
//! **Guarantee.** [`HyperLogLog::estimate`] approximates the number of distinct keys
//! added with a relative standard error of about `1.04/√m` for `m = 2^p` registers
//! (0.81% at the catalogue's `p = 14`), at every cardinality: from a handful of keys,
//! where it is nearly exact, to billions. Adding a key twice changes nothing; merging
//! two sketches gives exactly the sketch of the union of their keys.
//!
//! **Trade-off.** Memory is `2^p` bytes whatever the cardinality (16 KiB at
//! `p = 14`; one byte per register, where Redis packs 6 bits for 12 KiB, trading a
//! shift and mask per add for the 25%). The answer is an estimate, and nothing about
//! the keys themselves can be recovered.
//!
//! **Estimator.** The catalogue's raw formula `α·m²/Σ2^(−M[j])` is biased at small
//! and very large cardinalities, which HLL++ patches with empirical bias tables and a
//! switch to linear counting. This module uses Ertl's improved estimator ("New
//! cardinality estimation algorithms for HyperLogLog sketches", 2017), which corrects
//! both ends from the register histogram alone: no tables, no switch-over point, and
//! an error that stays flat across the range. Registers come from one XXH3-64 per key:
//! the top `p` bits pick the register, the rank of the first set bit in the remaining
//! `q = 64 − p` bits is stored (`q + 1` when they are all zero).
//!
//! Not yet: a sparse form for small cardinalities (the dense registers are always
//! allocated).

use crate::codec::{Kind, Reader, Writer};
use crate::error::{DecodeError, MergeError, ParamError};
use crate::hash::hash64;

/// The smallest precision: 16 registers, about 26% error.
pub const PRECISION_MIN: u8 = 4;
/// The largest precision: 262,144 registers, about 0.2% error.
pub const PRECISION_MAX: u8 = 18;

/// A HyperLogLog sketch over byte-string keys with dense registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HyperLogLog {
    precision: u8,
    seed: u64,
    registers: Vec<u8>,
}

impl HyperLogLog {
    /// An empty sketch with `2^precision` registers, `precision` in
    /// [`PRECISION_MIN`]`..=`[`PRECISION_MAX`].
    pub fn new(precision: u8, seed: u64) -> Result<Self, ParamError> {
        check_precision(precision).map_err(|()| ParamError::OutOfRange {
            name: "precision",
            value: u64::from(precision),
            min: u64::from(PRECISION_MIN),
            max: u64::from(PRECISION_MAX),
        })?;
        Ok(Self { precision, seed, registers: vec![0; 1 << precision] })
    }

    /// Adds `key`. Returns `true` when a register changed (so the estimate may have).
    pub fn add(&mut self, key: impl AsRef<[u8]>) -> bool {
        self.add_hash(hash64(key.as_ref(), self.seed))
    }

    /// Adds a key by its 64-bit hash, for callers that already hashed it. The hash must
    /// be uniformly distributed; sketches only merge when they hash the same way.
    pub fn add_hash(&mut self, hash: u64) -> bool {
        let p = u32::from(self.precision);
        let index = (hash >> (64 - p)) as usize;
        let rest = hash << p;
        // `rest` has its low p bits clear, so a non-zero `rest` has at most q − 1
        // leading zeros and the rank is at most q; all-zero is the rank q + 1.
        let rank = if rest == 0 { 65 - p } else { rest.leading_zeros() + 1 } as u8;
        debug_assert!(u32::from(rank) <= 65 - p);
        let register = &mut self.registers[index];
        if rank > *register {
            *register = rank;
            true
        } else {
            false
        }
    }

    /// The estimated number of distinct keys added (Ertl's improved estimator).
    /// Infinite only when every register holds the maximum rank, which takes about
    /// 2^64 keys: the sketch can no longer tell how many.
    pub fn estimate(&self) -> f64 {
        let m = self.registers.len() as f64;
        let q = 64 - usize::from(self.precision);
        let mut histogram = [0u32; 66];
        for &r in &self.registers {
            histogram[usize::from(r)] += 1;
        }
        let mut z = m * tau(1.0 - f64::from(histogram[q + 1]) / m);
        for k in (1..=q).rev() {
            z = 0.5 * (z + f64::from(histogram[k]));
        }
        z += m * sigma(f64::from(histogram[0]) / m);
        let alpha_inf = 0.5 / std::f64::consts::LN_2;
        alpha_inf * m * m / z
    }

    /// [`HyperLogLog::estimate`] rounded to a whole count.
    pub fn count(&self) -> u64 {
        // A saturating cast: the estimate is non-negative, infinite when saturated.
        self.estimate().round() as u64
    }

    /// The expected relative standard error, `1.04/√m`.
    pub fn relative_standard_error(&self) -> f64 {
        1.04 / (self.registers.len() as f64).sqrt()
    }

    /// The precision `p`.
    pub fn precision(&self) -> u8 {
        self.precision
    }

    /// Makes `self` the sketch of the union of both sketches' keys (register-wise
    /// maximum). Precision and seed must match; on error `self` is unchanged.
    pub fn merge(&mut self, other: &Self) -> Result<(), MergeError> {
        if self.precision != other.precision {
            return Err(MergeError::ShapeMismatch("precisions differ"));
        }
        if self.seed != other.seed {
            return Err(MergeError::ShapeMismatch("seeds differ"));
        }
        for (a, b) in self.registers.iter_mut().zip(&other.registers) {
            *a = (*a).max(*b);
        }
        Ok(())
    }

    /// The serialized form: the shared frame (see the crate docs) around
    /// `precision (1) | seed (8) | registers (1 each)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Kind::HyperLogLog, 9 + self.registers.len());
        w.u8(self.precision);
        w.u64(self.seed);
        w.bytes(&self.registers);
        w.finish()
    }

    /// Reads a sketch written by [`HyperLogLog::to_bytes`]. Damaged, truncated or
    /// foreign bytes are a [`DecodeError`], never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::open(bytes, Kind::HyperLogLog)?;
        let precision = r.u8()?;
        check_precision(precision).map_err(|()| DecodeError::Invalid {
            field: "precision",
            value: u64::from(precision),
        })?;
        let seed = r.u64()?;
        let registers = r.rest_exact(1 << precision)?.to_vec();
        let rank_max = 65 - precision;
        if let Some(&bad) = registers.iter().find(|&&r| r > rank_max) {
            return Err(DecodeError::Invalid { field: "register", value: u64::from(bad) });
        }
        Ok(Self { precision, seed, registers })
    }
}

fn check_precision(precision: u8) -> Result<(), ()> {
    if (PRECISION_MIN..=PRECISION_MAX).contains(&precision) { Ok(()) } else { Err(()) }
}

/// Ertl's σ(x) = x + Σ_{k≥1} x^(2^k)·2^(k−1), the small-range correction over the
/// fraction `x` of empty registers; infinite when every register is empty, which makes
/// the estimate 0.
fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

/// Ertl's τ(x), the large-range correction over the fraction `x` of registers below
/// the maximum rank.
fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_is_checked() {
        for p in [0, 3, 19, 255] {
            assert!(matches!(
                HyperLogLog::new(p, 0),
                Err(ParamError::OutOfRange { name: "precision", .. })
            ));
        }
        for p in PRECISION_MIN..=PRECISION_MAX {
            let h = HyperLogLog::new(p, 0).expect("valid precision");
            assert_eq!(h.registers.len(), 1 << p);
            assert_eq!(h.estimate(), 0.0);
        }
    }

    #[test]
    fn ranks_cover_the_extremes() {
        let mut h = HyperLogLog::new(4, 0).expect("valid precision");
        // Register 0, rest all zero: the rank q + 1 = 61.
        assert!(h.add_hash(0));
        assert_eq!(h.registers[0], 61);
        // Register 15, first rest bit set: rank 1.
        assert!(h.add_hash(u64::MAX));
        assert_eq!(h.registers[15], 1);
        // Register 1, only the last bit of the rest set: rank q = 60.
        assert!(h.add_hash((1 << 60) | 1));
        assert_eq!(h.registers[1], 60);
        assert!(!h.add_hash(u64::MAX));
        // Every register but one at the maximum: finite and huge. All of them: the
        // sketch is saturated (about 2^64 keys), the estimate infinite, the count
        // saturates.
        h.registers.fill(61);
        h.registers[3] = 60;
        assert!(h.estimate().is_finite() && h.estimate() > 1e18);
        h.registers[3] = 61;
        assert_eq!((h.estimate(), h.count()), (f64::INFINITY, u64::MAX));
    }

    #[test]
    fn merge_refuses_other_shapes_and_leaves_self_alone() {
        let mut a = HyperLogLog::new(10, 0).expect("valid precision");
        a.add("x");
        let before = a.clone();
        for other in [HyperLogLog::new(11, 0), HyperLogLog::new(10, 1)] {
            let other = other.expect("valid precision");
            assert!(matches!(a.merge(&other), Err(MergeError::ShapeMismatch(_))));
            assert_eq!(a, before);
        }
    }
}
