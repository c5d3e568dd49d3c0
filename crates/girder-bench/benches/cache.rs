//! The L1 hit path: `girder_cache::Cache::get_cached` (the synchronous hit path:
//! expiry check against the ticking clock, hit counters) and `Cache::get` (the same,
//! wrapped in the returned future, polled once and dropped) against a bare `quick_cache::sync::Cache::get` and a bare `moka::sync::Cache::get`, on
//! the same 100k keys in the same pseudo-random order, single-threaded, in the same run,
//! for `u64` values and for `Arc<str>` URLs. Girder's target: at most 1.2x the faster
//! bare get. A fourth contender, quick_cache holding girder's value slot
//! `(expiry, V)`, shows how much of the gap is slot size rather than code.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, Throughput, criterion_main};

/// Distinct keys, all resident in every cache.
const KEYS: u64 = 100_000;
/// Capacity of every cache: room for all keys, so every lookup is a hit.
const CAPACITY: u64 = 2 * KEYS;
/// Length of the access sequence (a multiple of nothing in particular).
const ACCESSES: usize = 1 << 20;

/// Polls a future once, in place (as `.await` does), with a no-op waker: every L1 hit
/// is an already-completed future, so a runtime would only add its own overhead.
///
/// In place matters: passing the future by value to a helper function makes the
/// helper reload it with a wider load than the stores that wrote it, a
/// store-forwarding stall that serialises consecutive lookups and roughly doubled the
/// measured time of a hit in this benchmark.
macro_rules! poll_once {
    ($fut:expr) => {{
        let fut = pin!($fut);
        match fut.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("an L1 hit did not complete on its first poll"),
        }
    }};
}

/// Benchmarks one value type: `make(key)` builds the value stored under `key`, and
/// `touch` reads what a caller would (so every contender pays for the same value).
fn l1_hit<V>(c: &mut Criterion, group_name: &str, make: fn(u64) -> V, touch: fn(&V) -> u64)
where
    V: girder_cache::CacheValue + PartialEq + std::fmt::Debug,
{
    let order = girder_bench::scattered_keys(ACCESSES, KEYS);
    let girder = girder_bench::l1_bench_cache(CAPACITY, make);
    let quick = quick_cache::sync::Cache::<u64, V>::new(CAPACITY as usize);
    let moka = moka::sync::Cache::<u64, V>::new(CAPACITY);
    // The floor for any cache that keeps an expiry beside each value on quick_cache:
    // the same map holding girder's value slot, (expiry, value).
    let quick_sized = quick_cache::sync::Cache::<u64, (u64, V)>::new(CAPACITY as usize);
    for key in 0..KEYS {
        poll_once!(girder.put(key, make(key))).expect("put");
        quick.insert(key, make(key));
        moka.insert(key, make(key));
        quick_sized.insert(key, (u64::MAX, make(key)));
    }
    moka.run_pending_tasks();
    for &key in &order {
        assert_eq!(girder.peek(&key), Some(Some(make(key))), "girder lost key {key}");
        assert_eq!(quick.get(&key), Some(make(key)), "quick_cache lost key {key}");
        assert_eq!(moka.get(&key), Some(make(key)), "moka lost key {key}");
    }

    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % ACCESSES;
        black_box(order[i])
    };
    group.bench_function("girder_cache::Cache::get", |b| {
        b.iter(|| {
            let value = poll_once!(girder.get(&next())).expect("loader never fails");
            touch(&value.expect("every key is present"))
        });
    });
    group.bench_function("girder_cache::Cache::get_cached", |b| {
        b.iter(|| touch(&girder.get_cached(&next()).flatten().expect("every key is present")));
    });
    group.bench_function("quick_cache::sync::Cache::get", |b| {
        b.iter(|| touch(&quick.get(&next()).expect("every key is present")));
    });
    group.bench_function("quick_cache::sync::Cache::get,girder-sized_entry", |b| {
        b.iter(|| {
            let (expires_at_ms, value) = quick_sized.get(&next()).expect("every key is present");
            touch(&Some(value).filter(|_| expires_at_ms > 0).expect("every key is present"))
        });
    });
    group.bench_function("moka::sync::Cache::get", |b| {
        b.iter(|| touch(&moka.get(&next()).expect("every key is present")));
    });
    group.finish();

    // (A filtered run may have measured nothing of girder's; a miss is wrong either way.)
    assert_eq!(girder.stats().l1_misses, 0, "girder missed during the benchmark");
}

/// `u64` values: the smallest value, where Girder's per-entry expiry (8 extra bytes per
/// slot) weighs most.
fn l1_hit_u64(c: &mut Criterion) {
    l1_hit(c, "cache_l1_hit_u64", |key| key, |value| *value);
}

/// `Arc<str>` values holding a URL, as on a redirect path: the clone is a reference
/// count increment and the caller reads the string.
fn l1_hit_arc_str(c: &mut Criterion) {
    l1_hit(
        c,
        "cache_l1_hit_arc_str",
        |key| Arc::from(format!("https://example.com/{key}")),
        |value: &Arc<str>| value.len() as u64,
    );
}

mod group {
    // criterion_group! defines an undocumented `pub fn`.
    #![allow(missing_docs)]
    use super::{l1_hit_arc_str, l1_hit_u64};
    criterion::criterion_group!(benches, l1_hit_u64, l1_hit_arc_str);
}
criterion_main!(group::benches);
