//! Lease throughput: acquire + release pairs on the in-process store (one thread), and
//! on Redis at concurrency 1 and 16 when a Redis is reachable — with the round trips
//! per pair counted from Redis's own command statistics (2 by design: one script each).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_main};
use girder_core::services::Service;
use girder_lock::lease::{
    LeaseStore, MemoryLeaseConfig, MemoryLeaseStore, RedisLeaseConfig, RedisLeaseStore,
};

/// Drives a future that never really waits (the memory store is always ready).
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

fn memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("lease_memory");
    group.throughput(Throughput::Elements(1));
    let store =
        MemoryLeaseStore::new(MemoryLeaseConfig::default(), Arc::new(girder_core::SystemClock));
    group.bench_function("acquire_release_pair_hot_key", |b| {
        b.iter(|| {
            let lease =
                block_on(store.try_acquire(black_box("seat-12A"), 30_000)).unwrap().unwrap();
            block_on(store.release(&lease)).unwrap();
        });
    });
    let keys: Vec<String> = (0..1024).map(|i| format!("seat-{i}")).collect();
    let mut i = 0;
    group.bench_function("acquire_release_pair_1024_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let lease = block_on(store.try_acquire(&keys[i], 30_000)).unwrap().unwrap();
            block_on(store.release(&lease)).unwrap();
        });
    });
    group.finish();
}

/// EVAL + EVALSHA calls Redis has served so far (from `INFO commandstats`).
async fn script_calls(conn: &mut redis::aio::ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

fn redis(c: &mut Criterion) {
    if !Service::Redis.reachable() {
        eprintln!("SKIPPED lease_redis: Redis unreachable at {}", Service::Redis.url());
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let url = Service::Redis.url();
    let (store, mut admin) = runtime.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let conn = client.get_connection_manager().await.unwrap();
        let admin = client.get_connection_manager().await.unwrap();
        let config = RedisLeaseConfig {
            key_prefix: "girder:bench:lease:".to_owned(),
            ..RedisLeaseConfig::default()
        };
        (Arc::new(RedisLeaseStore::new(conn, config)), admin)
    });

    // Round trips per pair, counted by the server (other clients may add noise; run the
    // bench on a quiet Redis).
    let pairs = 1_000;
    let (before, after) = runtime.block_on(async {
        let lease = store.try_acquire("warm", 1_000).await.unwrap().unwrap();
        store.release(&lease).await.unwrap();
        let before = script_calls(&mut admin).await;
        for _ in 0..pairs {
            let lease = store.try_acquire("count", 30_000).await.unwrap().unwrap();
            store.release(&lease).await.unwrap();
        }
        (before, script_calls(&mut admin).await)
    });
    #[allow(clippy::cast_precision_loss)]
    let per_pair = (after - before) as f64 / f64::from(pairs);
    eprintln!("lease_redis: {per_pair:.2} script round trips per acquire+release pair");

    let mut group = c.benchmark_group("lease_redis");
    for concurrency in [1_u64, 16] {
        group.throughput(Throughput::Elements(concurrency));
        group.bench_function(format!("acquire_release_pair_c{concurrency}"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    let tasks: Vec<_> = (0..concurrency)
                        .map(|t| {
                            let store = Arc::clone(&store);
                            tokio::spawn(async move {
                                let key = format!("k{t}");
                                for _ in 0..iters {
                                    let lease =
                                        store.try_acquire(&key, 30_000).await.unwrap().unwrap();
                                    store.release(&lease).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();

    // The fence counters are meant to live forever; the bench's are not.
    runtime.block_on(async {
        let mut keys: Vec<String> = ["warm", "count"].iter().map(|k| (*k).to_owned()).collect();
        keys.extend((0..16).map(|t| format!("k{t}")));
        let mut del = redis::cmd("DEL");
        for key in &keys {
            del.arg(store.lease_key(key)).arg(store.fence_key(key));
        }
        let _: i64 = del.query_async(&mut admin).await.unwrap();
    });
}

fn benches() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    memory(&mut c);
    redis(&mut c);
    c.final_summary();
}

criterion_main!(benches);
