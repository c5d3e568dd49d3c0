//! Benchmarks live in `benches/`; this library holds what several of them share.

/// splitmix64 from `seed`: a cheap, well-mixed, reproducible stream of `u64`s.
pub fn splitmix64(seed: u64) -> impl Iterator<Item = u64> {
    let mut state = seed;
    std::iter::repeat_with(move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// `n` keys in `0..keys` from splitmix64 with a fixed seed: consecutive lookups touch
/// unrelated memory, and every contender of a benchmark sees the same sequence.
#[must_use]
pub fn scattered_keys(n: usize, keys: u64) -> Vec<u64> {
    splitmix64(0x00C0_FFEE_CAC4_E001).take(n).map(|z| z % keys).collect()
}

/// `--rounds N` from the command line (`cargo bench` passes its own `--bench`, which is
/// ignored), else `default`; at least 1.
///
/// # Panics
/// If `N` is not a non-negative integer.
#[must_use]
pub fn rounds_arg(default: usize) -> usize {
    count_arg("--rounds", default)
}

/// `FLAG N` from the command line, else `default`; at least 1.
///
/// # Panics
/// If `N` is not a non-negative integer.
#[must_use]
pub fn count_arg(flag: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |n| {
            n.parse::<usize>().unwrap_or_else(|_| panic!("{flag} takes a positive integer"))
        })
        .max(1)
}

/// A girder cache for L1 benchmarks: room for `capacity` values, an hour's TTL (nothing
/// expires during a run), loading `make(key)` on a miss.
///
/// # Panics
/// Never for a `capacity` of at least 1 (the configuration is otherwise fixed).
pub fn l1_bench_cache<V: girder_cache::CacheValue>(
    capacity: u64,
    make: fn(u64) -> V,
) -> girder_cache::Cache<u64, V, impl girder_cache::Loader<u64, V>> {
    let loader =
        girder_cache::loader_fn(
            move |key: u64| async move { Ok::<_, std::io::Error>(Some(make(key))) },
        );
    let config = girder_cache::CacheConfig {
        name: "bench".into(),
        l1_capacity_entries: capacity,
        ttl_ms: 3_600_000,
        ..girder_cache::CacheConfig::default()
    };
    girder_cache::Cache::new(config, loader).expect("valid config")
}
