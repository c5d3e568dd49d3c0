//! The L1 hit ratio measured by interleaving: girder's `Cache::get_cached` and a bare
//! `quick_cache::sync::Cache::get` take turns, one batch of lookups each, for many
//! rounds, and each round yields one ratio (girder's time over quick_cache's). Rounds
//! come in pairs with the order swapped; a pair's ratio is the geometric mean of its two
//! rounds', so the cost of going second cancels (see `measure`).
//!
//! Why a second measurement beside `benches/cache.rs`: on a shared VM the machine's
//! speed drifts by ±20% over the seconds between two criterion groups, and a ratio of
//! two groups measured apart carries that drift. Batches a few milliseconds long,
//! alternating which contender goes first, see the same machine; the median of the
//! per-round ratios is what this prints.
//!
//! A third contender, quick_cache holding girder's value slot `(expiry, V)`, shows how
//! much of the gap is slot size rather than girder's code.
//!
//! Run: `cargo bench -p girder-bench --bench cache_interleaved` (`-- --rounds N`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use girder_cache::{Cache, CacheConfig, CacheValue, loader_fn};

/// Distinct keys, all resident in both caches (as in `benches/cache.rs`).
const KEYS: u64 = 100_000;
/// Capacity of both caches: room for every key, so every lookup is a hit.
const CAPACITY: u64 = 2 * KEYS;
/// Lookups per batch: a few milliseconds, long enough to dwarf timer overhead.
const BATCH: usize = 100_000;

/// Nanoseconds per lookup of `lookup` over `keys`.
fn time_batch(keys: &[u64], mut lookup: impl FnMut(u64) -> u64) -> f64 {
    let started = Instant::now();
    let mut sum = 0u64;
    for &key in keys {
        sum = sum.wrapping_add(lookup(black_box(key)));
    }
    black_box(sum);
    started.elapsed().as_secs_f64() * 1e9 / keys.len() as f64
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at]
}

/// Measures one value type and prints a line; `rounds` is rounded up to whole pairs.
fn measure<V>(label: &str, rounds: usize, make: fn(u64) -> V, touch: fn(&V) -> u64)
where
    V: CacheValue + PartialEq + std::fmt::Debug,
{
    let loader = loader_fn(move |key: u64| async move { Ok::<_, std::io::Error>(Some(make(key))) });
    let config = CacheConfig {
        name: "bench".into(),
        l1_capacity_entries: CAPACITY,
        ttl_ms: 3_600_000,
        ..CacheConfig::default()
    };
    let girder = Cache::new(config, loader).expect("valid config");
    let quick = quick_cache::sync::Cache::<u64, V>::new(CAPACITY as usize);
    let sized = quick_cache::sync::Cache::<u64, (u64, V)>::new(CAPACITY as usize);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    for key in 0..KEYS {
        runtime.block_on(girder.put(key, make(key))).expect("put");
        quick.insert(key, make(key));
        sized.insert(key, (u64::MAX, make(key)));
    }
    let order = girder_bench::scattered_keys(BATCH * 8, KEYS);
    for &key in &order {
        assert_eq!(girder.peek(&key), Some(Some(make(key))), "girder lost key {key}");
        assert_eq!(quick.get(&key), Some(make(key)), "quick_cache lost key {key}");
    }

    let girder_get = |key: u64| touch(&girder.get_cached(&key).flatten().expect("present"));
    let quick_get = |key: u64| touch(&quick.get(&key).expect("present"));
    let sized_get = |key: u64| {
        let (fresh_until_ms, value) = sized.get(&key).expect("present");
        touch(&Some(value).filter(|_| fresh_until_ms > 0).expect("present"))
    };
    // Warm both (page in, train predictors) before anything counts.
    for chunk in order.chunks(BATCH) {
        time_batch(chunk, girder_get);
        time_batch(chunk, quick_get);
        time_batch(chunk, sized_get);
    }

    // Rounds come in pairs over the same keys: girder then quick_cache, then quick_cache
    // then girder. Whichever goes second runs right after the other over the same keys,
    // and on this VM that position alone can cost a contender ~20% (for `u64` values).
    // A pair's ratio is the geometric mean of its two rounds' ratios, in which a
    // position effect that multiplies either contender's time cancels out.
    let (mut pairs, mut girder_first, mut quick_first) = (Vec::new(), Vec::new(), Vec::new());
    let (mut girder_ns, mut quick_ns, mut sized_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..rounds.div_ceil(2) {
        let keys = &order[(pair % 8) * BATCH..][..BATCH];
        let g1 = time_batch(keys, girder_get);
        let q2 = time_batch(keys, quick_get);
        sized_ratios.push(time_batch(keys, sized_get) / q2);
        let q1 = time_batch(keys, quick_get);
        let g2 = time_batch(keys, girder_get);
        sized_ratios.push(time_batch(keys, sized_get) / q1);
        girder_first.push(g1 / q2);
        quick_first.push(g2 / q1);
        pairs.push((g1 / q2 * (g2 / q1)).sqrt());
        girder_ns.extend([g1, g2]);
        quick_ns.extend([q1, q2]);
    }
    assert_eq!(girder.stats().l1_misses, 0, "girder missed during the benchmark");
    for v in [
        &mut pairs,
        &mut girder_first,
        &mut quick_first,
        &mut girder_ns,
        &mut quick_ns,
        &mut sized_ratios,
    ] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "| {label} | {} | {:.1} | {:.1} | {:.2}× | {:.2}–{:.2}× | {:.2}× / {:.2}× | {:.2}× |",
        pairs.len(),
        quantile(&girder_ns, 0.5),
        quantile(&quick_ns, 0.5),
        quantile(&pairs, 0.5),
        quantile(&pairs, 0.25),
        quantile(&pairs, 0.75),
        quantile(&girder_first, 0.5),
        quantile(&quick_first, 0.5),
        quantile(&sized_ratios, 0.5),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; the only option read here is `--rounds N`.
    let args: Vec<String> = std::env::args().collect();
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse::<usize>().expect("--rounds takes a positive integer"))
        .unwrap_or(201)
        .max(1);
    println!(
        "| values | pairs of rounds | girder get_cached, ns (median) | bare quick_cache get, ns (median) | ratio, median of pairs | ratio, middle half of pairs | ratio with girder first / second | quick_cache holding girder's slot, ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    measure("`u64`", rounds, |key| key, |value| *value);
    measure(
        "`Arc<str>`",
        rounds,
        |key| Arc::from(format!("https://example.com/{key}")),
        |value: &Arc<str>| value.len() as u64,
    );
}
