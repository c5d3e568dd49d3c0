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
//! Where the allocator puts each map, and each value, moves a contender's time by up
//! to ±10% from one process to the next (the same binary, run twice, measured
//! 1.09× and 1.23×), so one process is one sample: the bench runs itself in
//! `--processes` fresh processes (5 by default), prints each one's medians, and then
//! the median of those per-process medians with their range.
//!
//! Run: `cargo bench -p girder-bench --bench cache_interleaved`
//! (`-- --rounds N --processes P`).

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
        // One machine-readable line per protocol, for the parent process.
        println!(
            "{ROW} {label}\t{name}\t{}\t{}\t{}\t{}\t{}",
            quantile(&quick_ns[protocol], 0.5),
            quantile(&girder_ratio[protocol], 0.5),
            quantile(&girder_ratio[protocol], 0.25),
            quantile(&girder_ratio[protocol], 0.75),
            quantile(&sized_ratio[protocol], 0.5),
        );
    }
}

/// Values and protocol of a result line.
type Row = (String, String);

/// Marks a child's result lines.
const ROW: &str = "ROW";
/// Set in the environment of the processes that measure.
const CHILD: &str = "GIRDER_CACHE_INTERLEAVED_CHILD";

/// One child's measurements.
fn child(rounds: usize) {
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

fn main() {
    let rounds = girder_bench::rounds_arg(201);
    if std::env::var_os(CHILD).is_some() {
        child(rounds);
        return;
    }
    let processes = girder_bench::count_arg("--processes", 5);
    let exe = std::env::current_exe().expect("the bench's own path");
    // Per (values, protocol), in first-seen order: each process's row.
    let mut rows: Vec<(Row, Vec<[f64; 5]>)> = Vec::new();
    println!(
        "| process | values | protocol | bare quick_cache get, ns | girder get_cached, ratio | girder, middle half of rounds | quick_cache holding girder's slot, ratio |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|");
    for process in 1..=processes {
        let output = std::process::Command::new(&exe)
            .args(std::env::args().skip(1))
            .env(CHILD, "1")
            .output()
            .expect("a measuring process");
        assert!(output.status.success(), "process {process} failed: {output:?}");
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Some(row) = line.strip_prefix(ROW) else { continue };
            let fields: Vec<&str> = row.trim().split('\t').collect();
            let [label, protocol, numbers @ ..] = fields.as_slice() else { continue };
            let numbers: Vec<f64> = numbers.iter().map(|n| n.parse().expect("a number")).collect();
            let numbers: [f64; 5] = numbers.try_into().expect("five numbers");
            println!(
                "| {process} | {label} | {protocol} | {:.1} | {:.2}× | {:.2}–{:.2}× | {:.2}× |",
                numbers[0], numbers[1], numbers[2], numbers[3], numbers[4]
            );
            let key = ((*label).to_owned(), (*protocol).to_owned());
            match rows.iter_mut().find(|(k, _)| *k == key) {
                Some((_, samples)) => samples.push(numbers),
                None => rows.push((key, vec![numbers])),
            }
        }
    }
    println!();
    println!(
        "Across {processes} processes of {rounds} rounds each: the median of the per-process medians, and their range."
    );
    println!();
    println!(
        "| values | protocol | bare quick_cache get, ns | girder get_cached, ratio | girder, range over processes | quick_cache holding girder's slot, ratio |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for ((label, protocol), samples) in &rows {
        let column = |i: usize| {
            let mut v: Vec<f64> = samples.iter().map(|s| s[i]).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (quick, girder, sized) = (column(0), column(1), column(4));
        println!(
            "| {label} | {protocol} | {:.1} | **{:.2}×** | {:.2}–{:.2}× | {:.2}× |",
            quantile(&quick, 0.5),
            quantile(&girder, 0.5),
            girder[0],
            girder[girder.len() - 1],
            quantile(&sized, 0.5),
        );
    }
}
