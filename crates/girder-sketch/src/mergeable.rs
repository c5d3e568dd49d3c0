//! The one trait every mergeable sketch shares, so code that ships sketches between
//! instances (the Redis "per-instance sketches merged on read" store) is written once.

use crate::bloom::{BloomFilter, CountingBloomFilter};
use crate::count_min::CountMinSketch;
use crate::error::{DecodeError, MergeError};
use crate::hyperloglog::HyperLogLog;
use crate::topk::SpaceSaving;

/// A sketch with a serialized form and a merge.
///
/// **Guarantee.** `from_bytes(&s.to_bytes())` gives back a sketch equal to `s`; any
/// other bytes give a [`DecodeError`], never a panic. `a.merge(&b)` makes `a` summarize
/// both inputs with the sketch's own guarantee (for Bloom filters, HyperLogLog and
/// plain Count-Min, exactly the sketch of both inputs; for Space-Saving and
/// conservative Count-Min, the bound of a combined summary: see each type).
///
/// **Failure.** Sketches of different shapes or seeds do not merge:
/// [`MergeError::ShapeMismatch`], with `a` unchanged.
pub trait Mergeable: Sized {
    /// The serialized form (the crate's checksummed frame).
    fn to_bytes(&self) -> Vec<u8>;

    /// Reads bytes written by [`Mergeable::to_bytes`].
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError>;

    /// Makes `self` summarize both sketches' inputs.
    fn merge(&mut self, other: &Self) -> Result<(), MergeError>;
}

macro_rules! mergeable {
    ($ty:ty, $merge:ident) => {
        impl Mergeable for $ty {
            fn to_bytes(&self) -> Vec<u8> {
                <$ty>::to_bytes(self)
            }

            fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
                <$ty>::from_bytes(bytes)
            }

            fn merge(&mut self, other: &Self) -> Result<(), MergeError> {
                <$ty>::$merge(self, other)
            }
        }
    };
}

mergeable!(BloomFilter, union);
mergeable!(CountingBloomFilter, merge);
mergeable!(CountMinSketch, merge);
mergeable!(HyperLogLog, merge);
mergeable!(SpaceSaving, merge);
