//! Pattern: HyperLogLog for Cardinality Estimation.
//!
//! **Guarantee.** [`HyperLogLog::estimate`] approximates the number of distinct keys
//! added with a relative standard error of about `1.04/√m` for `m = 2^p` registers
//! (0.81% at the catalogue's `p = 14`), at every cardinality: from a handful of keys,
//! where it is nearly exact, to billions. Adding a key twice changes nothing; merging
//! two sketches gives exactly the sketch of the union of their keys.
//!
//! **Trade-off.** Memory is at most `3·2^p/4` bytes whatever the cardinality (12 KiB
//! at `p = 14`): registers are packed 6 bits each, as Redis packs them, for a shift and
//! a mask per add. Below that, a sketch starts *sparse*: only its non-zero registers,
//! 4 bytes each (about 512 bytes for 100 keys at `p = 14`), and turns dense once the
//! list would pass a quarter of the dense size (768 registers at `p = 14`). Sparse and
//! dense hold the same registers at the same precision, so they give the same estimate;
//! an add to a sparse sketch costs a binary search and a shift of up to 3 KiB, more than
//! a dense add. [`HyperLogLog::new_dense`] skips the sparse phase. The answer is an
//! estimate, and nothing about the keys themselves can be recovered.
//!
//! **Estimator.** The catalogue's raw formula `α·m²/Σ2^(−M[j])` is biased at small
//! and very large cardinalities, which HLL++ patches with empirical bias tables and a
//! switch to linear counting. This module uses Ertl's improved estimator ("New
//! cardinality estimation algorithms for HyperLogLog sketches", 2017), which corrects
//! both ends from the register histogram alone: no tables, no switch-over point, and
//! an error that stays flat across the range. Registers come from one XXH3-64 per key:
//! the top `p` bits pick the register, the rank of the first set bit in the remaining
//! `q = 64 − p` bits is stored (`q + 1` when they are all zero).

mod dense;
mod sparse;

use crate::codec::{Kind, Reader, Writer};
use crate::error::{DecodeError, MergeError, ParamError};
use crate::hash::hash64;

use dense::Dense;
use sparse::Sparse;

/// The smallest precision: 16 registers, about 26% error.
pub const PRECISION_MIN: u8 = 4;
/// The largest precision: 262,144 registers, about 0.2% error.
pub const PRECISION_MAX: u8 = 18;

/// Format 1: one byte per register, always dense. Still read.
const VERSION_BYTES: u8 = 1;
/// Format 2: an encoding byte, then 6-bit packed registers or sparse entries.
const VERSION_PACKED: u8 = 2;
const ENCODING_DENSE: u8 = 0;
const ENCODING_SPARSE: u8 = 1;

/// A HyperLogLog sketch over byte-string keys: sparse while few registers are set,
/// 6-bit packed dense registers after.
#[derive(Debug, Clone)]
pub struct HyperLogLog {
    precision: u8,
    seed: u64,
    registers: Registers,
}

#[derive(Debug, Clone)]
enum Registers {
    Dense(Dense),
    Sparse(Sparse),
}

impl HyperLogLog {
    /// An empty sketch with `2^precision` registers, `precision` in
    /// [`PRECISION_MIN`]`..=`[`PRECISION_MAX`]. It starts sparse (see the module docs)
    /// and turns dense by itself.
    pub fn new(precision: u8, seed: u64) -> Result<Self, ParamError> {
        check_param(precision)?;
        let registers = if sparse_max(precision) == 0 {
            Registers::Dense(Dense::new(1 << precision))
        } else {
            Registers::Sparse(Sparse::default())
        };
        Ok(Self { precision, seed, registers })
    }

    /// An empty sketch that is dense from the start: its full memory up front, and no
    /// conversion later.
    pub fn new_dense(precision: u8, seed: u64) -> Result<Self, ParamError> {
        check_param(precision)?;
        Ok(Self { precision, seed, registers: Registers::Dense(Dense::new(1 << precision)) })
    }

    /// Adds `key`. Returns `true` when a register changed (so the estimate may have).
    pub fn add(&mut self, key: impl AsRef<[u8]>) -> bool {
        self.add_hash(hash64(key.as_ref(), self.seed))
    }

    /// Adds a key by its 64-bit hash, for callers that already hashed it. The hash must
    /// be uniformly distributed; sketches only merge when they hash the same way.
    #[inline]
    pub fn add_hash(&mut self, hash: u64) -> bool {
        let p = u32::from(self.precision);
        let index = (hash >> (64 - p)) as usize;
        let rest = hash << p;
        // `rest` has its low p bits clear, so a non-zero `rest` has at most q − 1
        // leading zeros and the rank is at most q; all-zero is the rank q + 1.
        let rank = if rest == 0 { 65 - p } else { rest.leading_zeros() + 1 } as u8;
        debug_assert!(u32::from(rank) <= 65 - p);
        match &mut self.registers {
            Registers::Dense(dense) => dense.raise(index, rank),
            Registers::Sparse(sparse) => {
                let changed = sparse.raise(index, rank);
                if sparse.len() > sparse_max(self.precision) {
                    self.densify();
                }
                changed
            }
        }
    }

    /// The estimated number of distinct keys added (Ertl's improved estimator), the same
    /// from the sparse and the dense form. Infinite only when every register holds the
    /// maximum rank, which takes about 2^64 keys: the sketch can no longer tell how many.
    pub fn estimate(&self) -> f64 {
        let m = 1usize << self.precision;
        let q = 64 - usize::from(self.precision);
        let mut histogram = [0u32; 66];
        match &self.registers {
            Registers::Dense(dense) => {
                for r in dense.iter() {
                    histogram[usize::from(r)] += 1;
                }
            }
            Registers::Sparse(sparse) => {
                histogram[0] = (m - sparse.len()) as u32;
                for &e in sparse.entries() {
                    histogram[usize::from(sparse::decode(e).1)] += 1;
                }
            }
        }
        let m = m as f64;
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
        1.04 / f64::from(1u32 << self.precision).sqrt()
    }

    /// The precision `p`.
    pub fn precision(&self) -> u8 {
        self.precision
    }

    /// Whether the registers are held sparse.
    pub fn is_sparse(&self) -> bool {
        matches!(self.registers, Registers::Sparse(_))
    }

    /// The heap bytes the registers take: 4 per non-zero register while sparse,
    /// `3·2^p/4` once dense (12,288 at `p = 14`).
    pub fn memory_bytes(&self) -> usize {
        match &self.registers {
            Registers::Dense(dense) => dense.memory_bytes(),
            Registers::Sparse(sparse) => sparse.memory_bytes(),
        }
    }

    /// The registers, one byte each, whatever the form (allocates `2^p` bytes).
    pub fn registers(&self) -> Vec<u8> {
        match &self.registers {
            Registers::Dense(dense) => dense.iter().collect(),
            Registers::Sparse(sparse) => {
                let mut all = vec![0; 1 << self.precision];
                for &e in sparse.entries() {
                    let (index, rank) = sparse::decode(e);
                    all[index] = rank;
                }
                all
            }
        }
    }

    /// Makes `self` the sketch of the union of both sketches' keys (register-wise
    /// maximum), whatever the forms. Precision and seed must match; on error `self` is
    /// unchanged.
    pub fn merge(&mut self, other: &Self) -> Result<(), MergeError> {
        if self.precision != other.precision {
            return Err(MergeError::ShapeMismatch("precisions differ"));
        }
        if self.seed != other.seed {
            return Err(MergeError::ShapeMismatch("seeds differ"));
        }
        if matches!(
            (&self.registers, &other.registers),
            (Registers::Sparse(_), Registers::Dense(_))
        ) {
            self.densify();
        }
        match (&mut self.registers, &other.registers) {
            (Registers::Dense(a), Registers::Dense(b)) => a.merge(b),
            (Registers::Dense(a), Registers::Sparse(b)) => b.raise_into(a),
            (Registers::Sparse(a), Registers::Sparse(b)) => {
                a.merge(b);
                if a.len() > sparse_max(self.precision) {
                    self.densify();
                }
            }
            (Registers::Sparse(_), Registers::Dense(_)) => unreachable!("densified above"),
        }
        Ok(())
    }

    /// Turns sparse registers dense (no change when dense already).
    fn densify(&mut self) {
        if let Registers::Sparse(sparse) = &self.registers {
            let mut dense = Dense::new(1 << self.precision);
            sparse.raise_into(&mut dense);
            self.registers = Registers::Dense(dense);
        }
    }

    /// The serialized form: the shared frame (see the crate docs), format version 2,
    /// around `precision (1) | seed (8) | encoding (1)` and then either (encoding 0,
    /// dense) the registers packed 6 bits each, four in three bytes (see `dense.rs`), or
    /// (encoding 1, sparse) `entries (4) | entry (4 each, LE)`, an entry being
    /// `index << 6 | rank`, sorted by index. Version 1 frames (one byte per register,
    /// written before the packed form) are still read.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = match &self.registers {
            Registers::Dense(dense) => dense.as_bytes().len(),
            Registers::Sparse(sparse) => 4 + 4 * sparse.len(),
        };
        let mut w = Writer::with_version(Kind::HyperLogLog, VERSION_PACKED, 10 + body);
        w.u8(self.precision);
        w.u64(self.seed);
        match &self.registers {
            Registers::Dense(dense) => {
                w.u8(ENCODING_DENSE);
                w.bytes(dense.as_bytes());
            }
            Registers::Sparse(sparse) => {
                w.u8(ENCODING_SPARSE);
                w.u32(sparse.len() as u32);
                for &e in sparse.entries() {
                    w.u32(e);
                }
            }
        }
        w.finish()
    }

    /// Reads a sketch written by [`HyperLogLog::to_bytes`], in either format version.
    /// Damaged, truncated or foreign bytes, ranks no key can produce, and sparse entries
    /// out of order or out of range, are a [`DecodeError`], never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (mut r, version) =
            Reader::open_versions(bytes, Kind::HyperLogLog, &[VERSION_BYTES, VERSION_PACKED])?;
        let precision = r.u8()?;
        check_precision(precision).map_err(|()| DecodeError::Invalid {
            field: "precision",
            value: u64::from(precision),
        })?;
        let seed = r.u64()?;
        let m = 1usize << precision;
        let rank_max = 65 - precision;
        let bad_rank = |rank: u8| DecodeError::Invalid { field: "register", value: rank.into() };
        let registers = if version == VERSION_BYTES {
            let unpacked = r.rest_exact(m as u64)?;
            if let Some(&bad) = unpacked.iter().find(|&&r| r > rank_max) {
                return Err(bad_rank(bad));
            }
            Registers::Dense(Dense::from_unpacked(unpacked).ok_or(bad_rank(64))?)
        } else {
            match r.u8()? {
                ENCODING_DENSE => {
                    let packed = r.rest_exact(dense::bytes_for(m) as u64)?;
                    let dense = Dense::from_packed(packed.to_vec());
                    if let Some(bad) = dense.iter().find(|&r| r > rank_max) {
                        return Err(bad_rank(bad));
                    }
                    Registers::Dense(dense)
                }
                ENCODING_SPARSE => {
                    let len = r.u32()?;
                    if len as usize > m {
                        return Err(DecodeError::Invalid {
                            field: "sparse entries",
                            value: len.into(),
                        });
                    }
                    let raw = r.rest_exact(u64::from(len) * 4)?;
                    let mut entries = Vec::with_capacity(len as usize);
                    for chunk in raw.chunks_exact(4) {
                        let e = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                        let (index, rank) = sparse::decode(e);
                        if index >= m {
                            return Err(DecodeError::Invalid {
                                field: "sparse index",
                                value: index as u64,
                            });
                        }
                        if rank == 0 || rank > rank_max {
                            return Err(bad_rank(rank));
                        }
                        if entries.last().is_some_and(|&last| last >> 6 >= e >> 6) {
                            return Err(DecodeError::Invalid {
                                field: "sparse order",
                                value: index as u64,
                            });
                        }
                        entries.push(e);
                    }
                    Registers::Sparse(Sparse::from_entries(entries))
                }
                other => {
                    return Err(DecodeError::Invalid { field: "encoding", value: other.into() });
                }
            }
        };
        let mut h = Self { precision, seed, registers };
        // A sparse list longer than this code keeps (another release's threshold) is
        // converted, so the sparse form stays bounded.
        if matches!(&h.registers, Registers::Sparse(s) if s.len() > sparse_max(precision)) {
            h.densify();
        }
        Ok(h)
    }
}

/// Two sketches are equal when precision, seed and every register are, whichever form
/// each holds its registers in.
impl PartialEq for HyperLogLog {
    fn eq(&self, other: &Self) -> bool {
        if self.precision != other.precision || self.seed != other.seed {
            return false;
        }
        match (&self.registers, &other.registers) {
            (Registers::Dense(a), Registers::Dense(b)) => a == b,
            (Registers::Sparse(a), Registers::Sparse(b)) => a == b,
            _ => self.registers() == other.registers(),
        }
    }
}

impl Eq for HyperLogLog {}

/// The most sparse entries at `precision`: a quarter of the dense form's bytes
/// (4 bytes an entry, `3·2^p/4` bytes dense), 768 entries at `p = 14`. Past it the
/// sketch turns dense. A quarter, not all: a new index costs a shift of the entries
/// after it, which this bounds to 3 KiB at `p = 14`.
fn sparse_max(precision: u8) -> usize {
    dense::bytes_for(1 << precision) / 4 / 4
}

fn check_param(precision: u8) -> Result<(), ParamError> {
    check_precision(precision).map_err(|()| ParamError::OutOfRange {
        name: "precision",
        value: u64::from(precision),
        min: u64::from(PRECISION_MIN),
        max: u64::from(PRECISION_MAX),
    })
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
            assert!(HyperLogLog::new_dense(p, 0).is_err());
        }
        for p in PRECISION_MIN..=PRECISION_MAX {
            let h = HyperLogLog::new(p, 0).expect("valid precision");
            assert_eq!(h.registers().len(), 1 << p);
            assert_eq!(h.estimate(), 0.0);
            let d = HyperLogLog::new_dense(p, 0).expect("valid precision");
            assert_eq!(d.memory_bytes(), 3 << (p - 2));
            assert_eq!(d, h);
        }
        assert_eq!(HyperLogLog::new_dense(14, 0).map(|h| h.memory_bytes()), Ok(12_288));
        assert_eq!(sparse_max(14), 768);
        assert!(!HyperLogLog::new(4, 0).expect("valid").is_sparse(), "no room to be sparse");
    }

    #[test]
    fn ranks_cover_the_extremes() {
        for mut h in
            [HyperLogLog::new(4, 0), HyperLogLog::new_dense(6, 0)].map(|h| h.expect("valid"))
        {
            let q = 64 - u32::from(h.precision);
            let p = u32::from(h.precision);
            // Register 0, rest all zero: the rank q + 1.
            assert!(h.add_hash(0));
            assert_eq!(u32::from(h.registers()[0]), q + 1);
            // The last register, first rest bit set: rank 1.
            assert!(h.add_hash(u64::MAX));
            assert_eq!(h.registers()[(1 << p) - 1], 1);
            // Register 1, only the last bit of the rest set: rank q.
            assert!(h.add_hash((1 << (64 - p)) | 1));
            assert_eq!(u32::from(h.registers()[1]), q);
            assert!(!h.add_hash(u64::MAX));
        }
        // Every register but one at the maximum: finite and huge. All of them: the
        // sketch is saturated (about 2^64 keys), the estimate infinite, the count
        // saturates.
        let mut all = vec![61u8; 16];
        all[3] = 60;
        let mut h = HyperLogLog::new_dense(4, 0).expect("valid");
        h.registers = Registers::Dense(Dense::from_unpacked(&all).expect("fits"));
        assert!(h.estimate().is_finite() && h.estimate() > 1e18);
        all[3] = 61;
        h.registers = Registers::Dense(Dense::from_unpacked(&all).expect("fits"));
        assert_eq!((h.estimate(), h.count()), (f64::INFINITY, u64::MAX));
    }

    #[test]
    fn turns_dense_past_a_quarter_of_the_dense_size() {
        let mut h = HyperLogLog::new(10, 0).expect("valid");
        let max = sparse_max(10);
        assert_eq!(max, 48);
        let mut i = 0u64;
        while h.is_sparse() {
            let sparse_len = h.registers().iter().filter(|&&r| r > 0).count();
            assert!(sparse_len <= max);
            assert!(h.memory_bytes() <= 4 * max.next_power_of_two());
            h.add(i.to_le_bytes());
            i += 1;
        }
        assert_eq!(h.registers().iter().filter(|&&r| r > 0).count(), max + 1);
        assert_eq!(h.memory_bytes(), 768);
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
