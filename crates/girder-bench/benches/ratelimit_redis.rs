//! Redis rate-limit decisions per second against `redis-benchmark` running a plain
//! `EVALSHA` of `return 1` at the same concurrency, in one run.
//!
//! Contenders, each a closed loop (every caller sends its next check as soon as its
//! last is answered), at 1 and at 64 callers:
//! - `redis-benchmark -c C EVALSHA <sha of "return 1"> 0`: the peer, a C client
//!   pipelining nothing, one script call per request;
//! - the same `EVALSHA return 1` through girder's client (`redis` crate, one
//!   multiplexed connection): what the client alone costs;
//! - girder's `RedisLimiter` (GCRA), one script call per check;
//! - the same limiter with `coalescing`: concurrent checks share script calls.
//!
//! The contenders take turns, `--rounds` times (default 5), and the table shows each
//! one's median rate and its ratio to redis-benchmark's median. Keys: 1,000, each
//! check on the next; the limit (1,000,000/s, burst 1,000) admits nearly everything,
//! so the admitting path — read, compute, write — is what is measured.
//!
//! Run: `cargo bench -p girder-bench --bench ratelimit_redis` (needs Redis at
//! `GIRDER_REDIS_URL` or 127.0.0.1:6379, and `redis-benchmark` on the PATH).

use std::num::NonZeroUsize;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use girder_core::services::Service;
use girder_ratelimit::{Coalescing, Kind, RateLimiter, RedisConfig, RedisLimiter, Rule};

/// Checks per measurement per caller count.
fn total_for(callers: usize) -> u64 {
    if callers == 1 { 30_000 } else { 300_000 }
}

const KEYS: u64 = 1_000;

/// Runs `callers` closed-loop workers until `total` calls of `call` are done; calls/s.
async fn closed_loop<F, Fut>(callers: usize, total: u64, call: F) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..callers)
        .map(|_| {
            let (next, call) = (Arc::clone(&next), call.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    call(i).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// redis-benchmark's rate for `EVALSHA sha 0` with `callers` connections.
fn redis_benchmark(host: &str, port: u16, sha: &str, callers: usize) -> f64 {
    let out = Command::new("redis-benchmark")
        .args(["-h", host, "-p", &port.to_string(), "-c", &callers.to_string()])
        .args(["-n", &total_for(callers).to_string(), "--csv", "EVALSHA", sha, "0"])
        .output()
        .expect("run redis-benchmark");
    assert!(out.status.success(), "redis-benchmark: {}", String::from_utf8_lossy(&out.stderr));
    // CSV: a header line, then "\"EVALSHA ...\",\"<rps>\",...".
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("\"EVALSHA")).expect("a result line");
    line.split(',').nth(1).expect("rps column").trim_matches('"').parse().expect("rps number")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds = girder_bench::rounds_arg(5);
    if !Service::Redis.reachable() {
        eprintln!("SKIPPED ratelimit_redis: Redis unreachable at {}", Service::Redis.url());
        return;
    }
    let url = url::Url::parse(&Service::Redis.url()).expect("redis url");
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port().unwrap_or(6379);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let conn = rt.block_on(async {
        let client = redis::Client::open(Service::Redis.url()).expect("redis url");
        redis::aio::ConnectionManager::new(client).await.expect("connect")
    });
    let noop = Arc::new(redis::Script::new("return 1"));
    let sha = noop.get_hash().to_owned();
    rt.block_on(async {
        let mut c = conn.clone();
        let _: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg("return 1")
            .query_async(&mut c)
            .await
            .expect("load");
    });
    let rule = Rule::new(Kind::Gcra, 1_000_000, 1_000).with_burst(1_000);
    let prefix = format!("girder:bench:rlr:{}:", std::process::id());
    let plain = Arc::new(
        RedisLimiter::new(conn.clone(), &rule, RedisConfig { key_prefix: prefix.clone() })
            .expect("rule"),
    );
    let coalescing = |max_batch: usize, max_in_flight: usize| {
        let settings = Coalescing {
            max_batch: NonZeroUsize::new(max_batch).expect("non-zero"),
            max_in_flight: NonZeroUsize::new(max_in_flight).expect("non-zero"),
            ..Coalescing::default()
        };
        Arc::new(
            RedisLimiter::new(conn.clone(), &rule, RedisConfig { key_prefix: prefix.clone() })
                .expect("rule")
                .coalescing(settings),
        )
    };
    // The default first, then the shapes it was chosen against.
    let shapes = [(128, 2), (64, 4), (256, 2)];
    let coalesced: Vec<_> = shapes.iter().map(|&(b, f)| coalescing(b, f)).collect();
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|k| format!("k{k}")).collect());

    let shape_columns: Vec<String> =
        shapes.iter().map(|(b, f)| format!("coalescing, batch ≤ {b}, {f} in flight")).collect();
    println!(
        "| callers | redis-benchmark `EVALSHA return 1` | same, girder's client | girder GCRA | {} |",
        shape_columns.join(" | ")
    );
    println!("|---:|---:|---:|---:|{}", "---:|".repeat(shapes.len()));
    for callers in [1, 64] {
        let total = total_for(callers);
        let (mut peer, mut client, mut girder) = (vec![], vec![], vec![]);
        let mut batched: Vec<Vec<f64>> = vec![vec![]; coalesced.len()];
        let before: Vec<_> =
            coalesced.iter().map(|l| l.coalescing_stats().unwrap_or_default()).collect();
        for _ in 0..rounds {
            peer.push(redis_benchmark(&host, port, &sha, callers));
            client.push(rt.block_on({
                let (noop, conn) = (Arc::clone(&noop), conn.clone());
                closed_loop(callers, total, move |_| {
                    let (noop, mut conn) = (Arc::clone(&noop), conn.clone());
                    async move {
                        let one: i64 = noop.invoke_async(&mut conn).await.expect("evalsha");
                        assert_eq!(one, 1);
                    }
                })
            }));
            let limiters = std::iter::once(&plain).chain(&coalesced);
            let outs = std::iter::once(&mut girder).chain(batched.iter_mut());
            for (limiter, out) in limiters.zip(outs) {
                out.push(rt.block_on({
                    let (limiter, keys) = (Arc::clone(limiter), Arc::clone(&keys));
                    closed_loop(callers, total, move |i| {
                        let (limiter, keys) = (Arc::clone(&limiter), Arc::clone(&keys));
                        async move {
                            let key = &keys[(i % KEYS) as usize];
                            limiter.check(key, 1).await.expect("decision");
                        }
                    })
                }));
            }
        }
        let peer = median(peer);
        let cell = |v: Vec<f64>| {
            let m = median(v);
            format!("{:.1} k/s ({:.2}×)", m / 1e3, m / peer)
        };
        let batched: Vec<String> = batched
            .into_iter()
            .zip(&coalesced)
            .zip(before)
            .map(|((v, l), before)| {
                let after = l.coalescing_stats().unwrap_or_default();
                let per_call = (after.checks - before.checks) as f64
                    / (after.calls - before.calls).max(1) as f64;
                format!("{}, {per_call:.1} per call", cell(v))
            })
            .collect();
        println!(
            "| {callers} | {:.1} k/s | {} | {} | {} |",
            peer / 1e3,
            cell(client),
            cell(girder),
            batched.join(" | ")
        );
    }
}
