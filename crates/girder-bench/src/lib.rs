//! Benchmarks live in `benches/`; this library holds what several of them share.

/// `n` keys in `0..keys` from splitmix64 with a fixed seed: consecutive lookups touch
/// unrelated memory, and every contender of a benchmark sees the same sequence.
#[must_use]
pub fn scattered_keys(n: usize, keys: u64) -> Vec<u64> {
    let mut state: u64 = 0x00C0_FFEE_CAC4_E001;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % keys
        })
        .collect()
}
