//! Rate-limit decisions: the in-process GCRA and token bucket against `governor` (one
//! hot key on one thread; 10 000 keys on two threads), and Redis decisions per second
//! on one connection, awaited one by one vs 64 in flight (pipelined on the multiplexed
//! connection) when a Redis is reachable.
//!
//! Both sides admit nearly everything (1 000 000 per second, burst 1 000) so the
//! admitted path is what is measured. governor reads its quanta clock (TSC); girder is
//! measured with `SystemClock` (a `clock_gettime` per decision), with its
//! `CoarseClock` (one atomic load, refreshed every ms — governor's `QuantaUpkeepClock`
//! trade), and with the time given, to show where the time goes.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_main};
use girder_core::services::Service;
use girder_core::{Clock, SystemClock};
use girder_ratelimit::{
    Algorithm, CoarseClock, Gcra, Kind, MemoryConfig, MemoryLimiter, RateLimiter, RedisConfig,
    RedisLimiter, Rule, TokenBucket,
};
use governor::{Quota, RateLimiter as Governor};

const RATE: u64 = 1_000_000;
const BURST: u64 = 1_000;
const KEYS: usize = 10_000;

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::new(RATE as u32).unwrap())
        .allow_burst(NonZeroU32::new(BURST as u32).unwrap())
}

fn memory<A: Algorithm>(algo: A) -> MemoryLimiter<A> {
    with_clock(algo, Arc::new(SystemClock))
}

fn with_clock<A: Algorithm>(algo: A, clock: Arc<dyn Clock>) -> MemoryLimiter<A> {
    MemoryLimiter::new(algo, MemoryConfig { max_keys: 2 * KEYS, shards: 16 }, clock)
}

fn coarse() -> Arc<dyn Clock> {
    Arc::new(CoarseClock::new(Duration::from_millis(1)))
}

fn hot_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit_hot_key_1_thread");
    group.throughput(Throughput::Elements(1));
    let gcra = memory(Gcra::new(RATE, 1_000, BURST).unwrap());
    group.bench_function("girder_gcra", |b| {
        b.iter(|| black_box(gcra.check_now(black_box("hot"), 1).unwrap()));
    });
    let tb = memory(TokenBucket::new(RATE, 1_000, BURST).unwrap());
    group.bench_function("girder_token_bucket", |b| {
        b.iter(|| black_box(tb.check_now(black_box("hot"), 1).unwrap()));
    });
    // Where the time goes: the same decision without reading the clock, and the clock.
    let mut now = SystemClock.now_ms();
    group.bench_function("girder_gcra_time_given", |b| {
        b.iter(|| {
            now += 1;
            black_box(gcra.check_at(black_box("hot"), 1, now).unwrap())
        });
    });
    group.bench_function("system_clock_now_ms", |b| b.iter(|| black_box(SystemClock.now_ms())));
    let gcra_coarse = with_clock(Gcra::new(RATE, 1_000, BURST).unwrap(), coarse());
    group.bench_function("girder_gcra_coarse_clock", |b| {
        b.iter(|| black_box(gcra_coarse.check_now(black_box("hot"), 1).unwrap()));
    });
    let tb_coarse = with_clock(TokenBucket::new(RATE, 1_000, BURST).unwrap(), coarse());
    group.bench_function("girder_token_bucket_coarse_clock", |b| {
        b.iter(|| black_box(tb_coarse.check_now(black_box("hot"), 1).unwrap()));
    });
    let gov_direct = Governor::direct(quota());
    group.bench_function("governor_direct", |b| {
        b.iter(|| black_box(gov_direct.check().is_ok()));
    });
    let gov_keyed = Governor::keyed(quota());
    let hot = "hot".to_owned();
    group.bench_function("governor_keyed", |b| {
        b.iter(|| black_box(gov_keyed.check_key(black_box(&hot)).is_ok()));
    });
    group.finish();
}

/// Runs `iters` decisions split over two threads, each cycling through the key indices.
fn two_threads(iters: u64, decide: &(dyn Fn(usize) + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2 {
            s.spawn(move || {
                for i in 0..iters / 2 {
                    decide((i as usize * 2 + t) % KEYS);
                }
            });
        }
    });
    start.elapsed()
}

fn many_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit_10k_keys_2_threads");
    group.throughput(Throughput::Elements(1));
    let keys: Vec<String> = (0..KEYS).map(|i| format!("user:{i:08}")).collect();
    let gcra = memory(Gcra::new(RATE, 1_000, BURST).unwrap());
    let tb = memory(TokenBucket::new(RATE, 1_000, BURST).unwrap());
    let gcra_coarse = with_clock(Gcra::new(RATE, 1_000, BURST).unwrap(), coarse());
    let tb_coarse = with_clock(TokenBucket::new(RATE, 1_000, BURST).unwrap(), coarse());
    let gov = Governor::<String, _, _>::keyed(quota());
    group.bench_function("girder_gcra", |b| {
        b.iter_custom(|n| {
            two_threads(n, &|i| {
                black_box(gcra.check_now(&keys[i], 1).unwrap());
            })
        });
    });
    group.bench_function("girder_token_bucket", |b| {
        b.iter_custom(|n| {
            two_threads(n, &|i| {
                black_box(tb.check_now(&keys[i], 1).unwrap());
            })
        });
    });
    group.bench_function("girder_gcra_coarse_clock", |b| {
        b.iter_custom(|n| {
            two_threads(n, &|i| {
                black_box(gcra_coarse.check_now(&keys[i], 1).unwrap());
            })
        });
    });
    group.bench_function("girder_token_bucket_coarse_clock", |b| {
        b.iter_custom(|n| {
            two_threads(n, &|i| {
                black_box(tb_coarse.check_now(&keys[i], 1).unwrap());
            })
        });
    });
    group.bench_function("governor_keyed", |b| {
        b.iter_custom(|n| {
            two_threads(n, &|i| {
                black_box(gov.check_key(&keys[i]).is_ok());
            })
        });
    });
    group.finish();
}

fn redis(c: &mut Criterion) {
    if !Service::Redis.reachable() {
        eprintln!("SKIPPED ratelimit redis benches: Redis unreachable at {}", Service::Redis.url());
        return;
    }
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let conn = rt.block_on(async {
        let client = redis::Client::open(Service::Redis.url()).unwrap();
        redis::aio::ConnectionManager::new(client).await.unwrap()
    });
    let rule = Rule::new(Kind::Gcra, RATE, 1_000).with_burst(BURST);
    let prefix = format!("girder:bench:rl:{}:", std::process::id());
    let limiter = Arc::new(
        RedisLimiter::new(conn.clone(), &rule, RedisConfig { key_prefix: prefix }).unwrap(),
    );
    // The peer: a plain EVALSHA of a script that does nothing, through the same client
    // and connection at the same concurrency — the ceiling any one-script limiter has.
    let noop = Arc::new(redis::Script::new("return 1"));
    let mut group = c.benchmark_group("ratelimit_redis_gcra");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_connection_sequential", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..n {
                    black_box(limiter.check(if i % 2 == 0 { "a" } else { "b" }, 1).await.unwrap());
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("one_connection_64_in_flight", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                let mut done = 0;
                while done < n {
                    let batch = (n - done).min(64);
                    let futs = (0..batch).map(|i| {
                        let l = Arc::clone(&limiter);
                        async move { l.check(if i % 2 == 0 { "a" } else { "b" }, 1).await.unwrap() }
                    });
                    black_box(futures_util::future::join_all(futs).await);
                    done += batch;
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("plain_evalsha_sequential", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let mut conn = conn.clone();
                let start = Instant::now();
                for _ in 0..n {
                    let one: i64 = noop.invoke_async(&mut conn).await.unwrap();
                    black_box(one);
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("plain_evalsha_64_in_flight", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                let mut done = 0;
                while done < n {
                    let batch = (n - done).min(64);
                    let futs = (0..batch).map(|_| {
                        let (noop, mut conn) = (Arc::clone(&noop), conn.clone());
                        async move {
                            let one: i64 = noop.invoke_async(&mut conn).await.unwrap();
                            one
                        }
                    });
                    black_box(futures_util::future::join_all(futs).await);
                    done += batch;
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    hot_key(&mut c);
    many_keys(&mut c);
    redis(&mut c);
}

criterion_main!(benches);
