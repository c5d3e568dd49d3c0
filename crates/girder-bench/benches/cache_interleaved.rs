//! The L1 hit ratio measured by interleaving: girder's `Cache::get_cached`, a bare
//! `quick_cache::sync::Cache::get`, and quick_cache holding girder's value slot
//! `(expiry, V)` (the floor for any expiring cache built on quick_cache) take turns, one
//! batch of 100,000 lookups at a time, for many rounds. Each round yields one ratio per
//! contender (its time over bare quick_cache's); the medians are printed.
//!
//! Why not only `benches/cache.rs`: on a shared VM the machine's speed drifts by ±20%
//! over the seconds between two criterion groups, and a ratio of two groups measured
//! apart carries that drift. Batches a few milliseconds long, in an order that rotates
//! every round, see the same machine.
//!
//! A hit's cost depends on where the cache's memory is, so each round measures twice:
//! - **steady**: each contender runs one batch untimed, then the same batch timed, as
//!   in a loop that does nothing but look up (what criterion measures);
//! - **cold**: each contender's timed batch follows another contender's batch over other
//!   keys, so its slots have been pushed towards memory, as in a service that does
//!   other work between lookups.
//!
//! Run: `cargo bench -p girder-bench --bench cache_interleaved` (`-- --rounds N`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use girder_cache::CacheValue;

/// Distinct keys, all resident in both caches (as in `benches/cache.rs`).
const KEYS: u64 = 100_000;
/// Capacity of both caches: room for every key, so every lookup is a hit.
const CAPACITY: u64 = 2 * KEYS;
/// Lookups per batch: a few milliseconds, long enough to dwarf timer overhead.
const BATCH: usize = 100_000;
/// The contenders, by index.
const GIRDER: usize = 0;
const QUICK: usize = 1;
const SIZED: usize = 2;
/// The protocols, by index (see the module docs).
const STEADY: usize = 0;
const COLD: usize = 1;

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

/// Measures one value type and prints a line per protocol.
fn measure<V>(label: &str, rounds: usize, make: fn(u64) -> V, touch: fn(&V) -> u64)
where
    V: CacheValue + PartialEq + std::fmt::Debug,
{
    let girder = girder_bench::l1_bench_cache(CAPACITY, make);
    let quick = quick_cache::sync::Cache::<u64, V>::new(CAPACITY as usize);
    let sized = quick_cache::sync::Cache::<u64, (u64, V)>::new(CAPACITY as usize);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    // The contenders hold clones of one value per key: for `Arc<str>`, the same heap
    // string, so where the allocator put it cannot favour one contender.
    for key in 0..KEYS {
        let value = make(key);
        runtime.block_on(girder.put(key, value.clone())).expect("put");
        quick.insert(key, value.clone());
        sized.insert(key, (u64::MAX, value));
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
    // Page everything in and train the predictors before anything counts.
    for chunk in order.chunks(BATCH) {
        time_batch(chunk, girder_get);
        time_batch(chunk, quick_get);
        time_batch(chunk, sized_get);
    }
    let run = |contender: usize, keys: &[u64]| match contender {
        GIRDER => time_batch(keys, girder_get),
        QUICK => time_batch(keys, quick_get),
        _ => time_batch(keys, sized_get),
    };

    // Per protocol (steady, cold): bare quick_cache's nanoseconds, and girder's and the
    // floor's ratios to them, one of each per round.
    let mut quick_ns = [Vec::new(), Vec::new()];
    let mut girder_ratio = [Vec::new(), Vec::new()];
    let mut sized_ratio = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let keys = &order[(round % 8) * BATCH..][..BATCH];
        let other_keys = &order[((round + 4) % 8) * BATCH..][..BATCH];
        let mut ns = [[0.0; 3]; 2];
        for step in 0..3 {
            let contender = (round + step) % 3;
            run(contender, keys);
            ns[STEADY][contender] = run(contender, keys);
        }
        for step in 0..3 {
            let contender = (round + step) % 3;
            run((contender + 1) % 3, other_keys);
            ns[COLD][contender] = run(contender, keys);
        }
        for protocol in [STEADY, COLD] {
            let ns = ns[protocol];
            quick_ns[protocol].push(ns[QUICK]);
            girder_ratio[protocol].push(ns[GIRDER] / ns[QUICK]);
            sized_ratio[protocol].push(ns[SIZED] / ns[QUICK]);
        }
    }
    assert_eq!(girder.stats().l1_misses, 0, "girder missed during the benchmark");
    for (protocol, name) in [(STEADY, "steady"), (COLD, "cold")] {
        for v in [&mut quick_ns[protocol], &mut girder_ratio[protocol], &mut sized_ratio[protocol]]
        {
            v.sort_by(f64::total_cmp);
        }
        println!(
            "| {label} | {name} | {rounds} | {:.1} | {:.2}× | {:.2}–{:.2}× | {:.2}× |",
            quantile(&quick_ns[protocol], 0.5),
            quantile(&girder_ratio[protocol], 0.5),
            quantile(&girder_ratio[protocol], 0.25),
            quantile(&girder_ratio[protocol], 0.75),
            quantile(&sized_ratio[protocol], 0.5),
        );
    }
}

fn main() {
    let rounds = girder_bench::rounds_arg(201);
    println!(
        "| values | protocol | rounds | bare quick_cache get, ns (median) | girder get_cached, ratio (median) | girder, middle half of rounds | quick_cache holding girder's slot, ratio |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    measure("`u64`", rounds, |key| key, |value| *value);
    // A thin pointer to a string, 8 bytes like Bit.ly's `Arc<Link>` values.
    measure(
        "`Arc<String>`",
        rounds,
        |key| Arc::new(format!("https://example.com/{key}")),
        |value: &Arc<String>| value.len() as u64,
    );
    measure(
        "`Arc<str>`",
        rounds,
        |key| Arc::from(format!("https://example.com/{key}")),
        |value: &Arc<str>| value.len() as u64,
    );
}
