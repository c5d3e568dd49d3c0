//! Key hashing shared by the sketches: XXH3 (frozen output since xxHash 0.8.0), so
//! a sketch built in one process means the same thing in every other, and serialized
//! sketches from different instances and releases can be merged.

use xxhash_rust::xxh3::{xxh3_64_with_seed, xxh3_128_with_seed};

/// Two independent 64-bit hashes of `key` (the halves of one XXH3-128), the inputs of
/// Kirsch–Mitzenmacher double hashing: `g_i = h1 + i·h2`.
#[inline]
pub(crate) fn hash_pair(key: &[u8], seed: u64) -> (u64, u64) {
    let h = xxh3_128_with_seed(key, seed);
    (h as u64, (h >> 64) as u64)
}

/// One 64-bit hash of `key`.
#[inline]
pub(crate) fn hash64(key: &[u8], seed: u64) -> u64 {
    xxh3_64_with_seed(key, seed)
}

/// Maps a uniformly distributed `x` onto `0..n` without a division (Lemire's
/// multiply-shift): the high 64 bits of `x · n`.
#[inline]
pub(crate) fn reduce(x: u64, n: u64) -> u64 {
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}
