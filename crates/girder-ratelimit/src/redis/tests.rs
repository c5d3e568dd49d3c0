//! Redis backend tests: agreement with the in-process limiter (time overridden), real
//! concurrency checked by a history checker (server time), batching's overshoot bound.
//! Skipped with a SKIPPED line when Redis is unreachable, failed under `CI=true`.

use std::error::Error as _;
use std::sync::Arc;

use ::redis::aio::ConnectionManager;
use girder_core::ManualClock;
use girder_core::services::{Service, require};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::{AnyAlgorithm, MemoryConfig, MemoryLimiter, UnavailableError};

async fn connect(test: &str) -> Option<ConnectionManager> {
    let url = require(Service::Redis, test)?;
    let client = ::redis::Client::open(url).expect("redis url");
    Some(ConnectionManager::new(client).await.expect("redis connection"))
}

fn prefix() -> String {
    format!("girder:test:rl:{:016x}:", rand::random::<u64>())
}

fn rules() -> Vec<Rule> {
    vec![
        Rule::new(Kind::TokenBucket, 7, 1_000).with_burst(5),
        Rule::new(Kind::Gcra, 7, 1_000).with_burst(5),
        Rule::new(Kind::FixedWindow, 5, 1_000),
        Rule::new(Kind::SlidingLog, 5, 1_000),
        Rule::new(Kind::SlidingWindow, 5, 1_000),
    ]
}

/// A Redis limiter under a fresh prefix, the in-process limiter with the same rule
/// (time given per check), and the largest cost the rule accepts.
fn twins(
    conn: &ConnectionManager,
    rule: &Rule,
) -> (RedisLimiter, MemoryLimiter<AnyAlgorithm>, u64) {
    let redis =
        RedisLimiter::new(conn.clone(), rule, RedisConfig { key_prefix: prefix() }).unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let memory = MemoryLimiter::from_rule(rule, MemoryConfig::default(), clock).unwrap();
    let max_cost = if rule.kind.has_burst() { rule.burst } else { rule.limit };
    (redis, memory, max_cost)
}

#[tokio::test]
async fn same_decisions_as_the_memory_limiter_through_a_script_flush() {
    let Some(conn) = connect("same_decisions_as_the_memory_limiter").await else { return };
    for rule in rules() {
        let (redis, memory, max_cost) = twins(&conn, &rule);
        let mut rng = StdRng::seed_from_u64(7);
        let mut now = 1_700_000_000_000_u64;
        for step in 0..400 {
            if step == 200 {
                // EVALSHA now fails with NOSCRIPT; `invoke_async` reloads the script.
                let mut c = conn.clone();
                let () = ::redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut c).await.unwrap();
            }
            now += match rng.random_range(0..10) {
                0..=3 => 0,
                4..=7 => rng.random_range(1..200),
                _ => rng.random_range(200..3_000),
            };
            let key = ["a", "b", "c"][rng.random_range(0..3)];
            let cost = if rng.random_bool(0.8) { 1 } else { rng.random_range(1..=max_cost) };
            let want = memory.check_at(key, cost, now).unwrap();
            let got = redis.check_at(key, cost, now).await.unwrap();
            assert_eq!(got, want, "{rule:?} step {step}: {key} cost {cost} at {now}");
        }
    }
}

/// One script call deciding many checks gives exactly the decisions of the same
/// checks made one by one, in order, at the batch's time — for every algorithm, with
/// repeated keys inside a batch.
#[tokio::test]
async fn a_batch_decides_as_its_checks_would_one_by_one() {
    let Some(conn) = connect("a_batch_decides_as_its_checks_would_one_by_one").await else {
        return;
    };
    for rule in rules() {
        let (redis, memory, max_cost) = twins(&conn, &rule);
        let mut rng = StdRng::seed_from_u64(11);
        let mut now = 1_700_000_000_000_u64;
        for step in 0..60 {
            now += rng.random_range(0..400);
            let size = rng.random_range(1..=40);
            let checks: Vec<(String, u64)> = (0..size)
                .map(|_| {
                    let key = ["a", "b", "c"][rng.random_range(0..3)];
                    let cost =
                        if rng.random_bool(0.8) { 1 } else { rng.random_range(1..=max_cost) };
                    (key.to_owned(), cost)
                })
                .collect();
            let want: Vec<Decision> =
                checks.iter().map(|(k, c)| memory.check_at(k, *c, now).unwrap()).collect();
            let redis_checks: Vec<(String, u64)> =
                checks.iter().map(|(k, c)| (redis.redis_key(k), *c)).collect();
            let got = redis.target().run(&redis_checks, Some(now)).await.unwrap();
            let got: Vec<Decision> = got
                .into_iter()
                .map(|(d, at)| {
                    assert_eq!(at, now);
                    d
                })
                .collect();
            assert_eq!(got, want, "{rule:?} step {step}: {checks:?} at {now}");
        }
    }
}

/// State that does not parse (written by something else under the prefix) is a
/// backend error for every algorithm, on both paths, and is left as found.
#[tokio::test]
async fn corrupt_state_is_a_backend_error() {
    let Some(conn) = connect("corrupt_state_is_a_backend_error").await else { return };
    for rule in rules() {
        let l =
            RedisLimiter::new(conn.clone(), &rule, RedisConfig { key_prefix: prefix() }).unwrap();
        let mut c = conn.clone();
        if rule.kind == Kind::SlidingLog {
            let () = ::redis::cmd("RPUSH")
                .arg(l.redis_key("k"))
                .arg("x y")
                .query_async(&mut c)
                .await
                .unwrap();
        } else {
            let () = ::redis::cmd("SET")
                .arg(l.redis_key("k"))
                .arg("12 oops")
                .query_async(&mut c)
                .await
                .unwrap();
        }
        let coalesced = l.clone().coalescing(Coalescing::default());
        for l in [&l, &coalesced] {
            let err = l.check("k", 1).await.unwrap_err();
            assert!(
                matches!(err, LimitError::Backend(BackendError::Redis(_))),
                "{rule:?}: {err:?}"
            );
            assert_eq!(err.to_string(), "rate-limit backend");
            // The chain reaches the server's own words.
            let driver = err.source().and_then(|e| e.source()).and_then(|e| e.downcast_ref());
            let driver: &RedisError = driver.expect("the redis error is the source's source");
            assert!(driver.to_string().contains("corrupt"), "{rule:?}: {driver}");
        }
        let kind: String =
            ::redis::cmd("TYPE").arg(l.redis_key("k")).query_async(&mut c).await.unwrap();
        assert_eq!(kind, if rule.kind == Kind::SlidingLog { "list" } else { "string" });
    }
}

#[tokio::test]
async fn bad_input_never_reaches_redis() {
    let Some(conn) = connect("bad_input_never_reaches_redis").await else { return };
    let rule = Rule::new(Kind::Gcra, 10, 1_000).with_burst(3);
    let l = RedisLimiter::new(conn, &rule, RedisConfig { key_prefix: prefix() }).unwrap();
    assert_eq!(l.check("k", 4).await, Err(LimitError::InvalidCost { cost: 4, max: 3 }));
    assert_eq!(l.check("k", 0).await, Err(LimitError::InvalidCost { cost: 0, max: 3 }));
    let long = "k".repeat(300);
    assert_eq!(l.check(&long, 1).await, Err(LimitError::KeyTooLong { len: 300 }));
    let l = l.coalescing(Coalescing::default());
    assert_eq!(l.check("k", 4).await, Err(LimitError::InvalidCost { cost: 4, max: 3 }));
    assert_eq!(l.check(&long, 1).await, Err(LimitError::KeyTooLong { len: 300 }));
    assert_eq!(l.coalescing_stats().unwrap().checks, 0, "bad input was queued");
}

#[tokio::test]
async fn idle_keys_expire_when_their_state_is_fresh_again() {
    let Some(conn) = connect("idle_keys_expire").await else { return };
    for rule in rules() {
        let l =
            RedisLimiter::new(conn.clone(), &rule, RedisConfig { key_prefix: prefix() }).unwrap();
        let d = l.check("k", 1).await.unwrap();
        assert!(d.allowed);
        let mut c = conn.clone();
        let pttl: i64 =
            ::redis::cmd("PTTL").arg(l.redis_key("k")).query_async(&mut c).await.unwrap();
        assert!(
            pttl > 0 && pttl <= i64::try_from(d.reset_after_ms).unwrap(),
            "{rule:?}: {pttl} vs {d:?}"
        );
    }
}

#[test]
fn connection_errors_are_unavailable() {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    let err = map_error(RedisError::from(io));
    let LimitError::Unavailable(UnavailableError::Redis(_)) = &err else { panic!("{err:?}") };
    // The driver's error is in the chain, for logs and downcasts.
    let cause = err.source().and_then(|s| s.source()).and_then(|s| s.downcast_ref::<RedisError>());
    assert!(cause.is_some_and(RedisError::is_connection_refusal), "{err:?}");
    let script = RedisError::from((::redis::ErrorKind::ResponseError, "ERR script"));
    let err = map_error(script);
    assert!(matches!(err, LimitError::Backend(BackendError::Redis(_))), "{err:?}");
    assert_eq!(err, err.clone(), "a clone is the same failure");
}

/// Checks the admitted `(server_ms, cost)` history of one key against `rule`'s bound.
fn check_history(rule: &Rule, mut admitted: Vec<(u64, u64)>) {
    admitted.sort_unstable();
    let (limit, period, burst) = (rule.limit, rule.period_ms, rule.burst);
    let n = admitted.len();
    for j in 0..n {
        let tj = admitted[j].0;
        let mut sum = 0;
        for i in (0..=j).rev() {
            let ti = admitted[i].0;
            sum += admitted[i].1;
            let span = tj - ti;
            let ok = match rule.kind {
                Kind::TokenBucket | Kind::Gcra => sum <= burst + limit * span / period,
                Kind::FixedWindow => ti / period != tj / period || sum <= limit,
                Kind::SlidingLog => span >= period || sum <= limit,
                Kind::SlidingWindow => span >= period || sum * period <= limit * (period + span),
            };
            assert!(ok, "{rule:?}: {sum} admitted in [{ti}, {tj}]");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admissions_stay_within_the_bound() {
    let Some(first) = connect("concurrent_admissions_stay_within_the_bound").await else {
        return;
    };
    let mut conns = vec![first];
    for _ in 1..4 {
        conns.push(connect("concurrent_admissions_stay_within_the_bound").await.unwrap());
    }
    let rules = [
        Rule::new(Kind::TokenBucket, 20, 100).with_burst(10),
        Rule::new(Kind::Gcra, 20, 100).with_burst(10),
        Rule::new(Kind::FixedWindow, 20, 100),
        Rule::new(Kind::SlidingLog, 20, 100),
        Rule::new(Kind::SlidingWindow, 20, 100),
    ];
    for (rule, coalesce) in rules.into_iter().flat_map(|r| [(r, false), (r, true)]) {
        let config = RedisConfig { key_prefix: prefix() };
        let limiters: Vec<_> = conns
            .iter()
            .map(|c| {
                let l = RedisLimiter::new(c.clone(), &rule, config.clone()).unwrap();
                Arc::new(if coalesce { l.coalescing(Coalescing::default()) } else { l })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let l = Arc::clone(&limiters[i % 4]);
                tokio::spawn(async move {
                    let mut admitted = Vec::new();
                    let mut decisions = 0_u64;
                    while std::time::Instant::now() < deadline {
                        let cost = 1 + (decisions % 2) * u64::from(i % 3 == 0);
                        let (d, at) = l.check_timed("hot", cost).await.unwrap();
                        decisions += 1;
                        if d.allowed {
                            admitted.push((at, cost));
                        }
                    }
                    (admitted, decisions)
                })
            })
            .collect();
        let mut history = Vec::new();
        let mut decisions = 0;
        for t in tasks {
            let (a, d) = t.await.unwrap();
            history.extend(a);
            decisions += d;
        }
        let total: u64 = history.iter().map(|a| a.1).sum();
        eprintln!(
            "{:?} (coalescing {coalesce}): {decisions} decisions, {total} admitted in 300 ms",
            rule.kind
        );
        if coalesce {
            let stats: Vec<_> = limiters.iter().map(|l| l.coalescing_stats().unwrap()).collect();
            let checks: u64 = stats.iter().map(|s| s.checks).sum();
            let calls: u64 = stats.iter().map(|s| s.calls).sum();
            assert_eq!(checks, decisions, "every check went through a batch");
            // 50 callers per limiter and 4 calls in flight: batches must form.
            assert!(calls * 2 < checks, "{calls} script calls for {checks} checks");
        }
        assert!(total >= rule.limit.min(rule.burst), "{rule:?}: only {total} admitted");
        check_history(&rule, history);
    }
}

#[tokio::test]
async fn batched_overshoot_is_bounded() {
    let Some(conn) = connect("batched_overshoot_is_bounded").await else { return };
    const N: u64 = 4;
    for local_share in [25, 10, 5] {
        let clock = ManualClock::new(1_000_000);
        let config = BatchedConfig {
            key_prefix: prefix(),
            limit: 100,
            period_ms: 1_000,
            local_share,
            sync_interval_ms: 50,
            max_keys: 16,
        };
        let instances: Vec<_> = (0..N)
            .map(|_| {
                BatchedLimiter::new(conn.clone(), config.clone(), Arc::new(clock.clone())).unwrap()
            })
            .collect();
        let bound = config.limit + 2 * (N - 1) * config.local_share;
        let mut rng = StdRng::seed_from_u64(11);
        let mut worst = 0;
        let mut windows = 0_u32;
        for window in 0..20 {
            let start = 1_000_000 + window * 1_000;
            let mut admitted = 0;
            // Heavy traffic: 2 000 requests over the window, a random instance each.
            for i in 0..2_000 {
                clock.set_ms(start + i / 2);
                let inst = &instances[rng.random_range(0..N as usize)];
                if inst.check("hot", 1).await.unwrap().allowed {
                    admitted += 1;
                }
            }
            assert!(
                admitted <= bound,
                "share {local_share}, window {window}: {admitted} > {bound}"
            );
            assert!(admitted >= config.limit / 2, "window {window}: only {admitted}");
            worst = worst.max(admitted);
            windows += 1;
        }
        eprintln!(
            "batched: {N} instances, limit {}, share {local_share}, sync {} ms: worst window \
             admitted {worst} (bound {bound}) over {windows} windows",
            config.limit, config.sync_interval_ms
        );
    }
}

#[tokio::test]
async fn batched_rejects_bad_input_and_routes_overflow_keys_to_redis() {
    let Some(conn) = connect("batched_overflow").await else { return };
    let clock = ManualClock::new(5_000);
    let config = BatchedConfig {
        key_prefix: prefix(),
        limit: 3,
        period_ms: 1_000,
        local_share: 3,
        sync_interval_ms: 50,
        max_keys: 1,
    };
    let l = BatchedLimiter::new(conn, config, Arc::new(clock.clone())).unwrap();
    assert_eq!(l.check("a", 4).await, Err(LimitError::InvalidCost { cost: 4, max: 3 }));
    assert!(l.check("a", 1).await.unwrap().allowed);
    // `a` has pending counts, so `b` finds no room and is decided in Redis, exactly.
    for _ in 0..3 {
        assert!(l.check("b", 1).await.unwrap().allowed);
    }
    let d = l.check("b", 1).await.unwrap();
    assert_eq!((d.allowed, d.retry_after_ms), (false, 1_000));
}

/// A private `redis-server` child on a free port (so the shared server is untouched)
/// and a connection to it with bounded reconnects and `response_timeout`, as a server
/// configures them. `None` (after a SKIPPED line) without a `redis-server` binary.
async fn private_server(
    test: &str,
    response_timeout: std::time::Duration,
) -> Option<(std::process::Child, ConnectionManager)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let spawned = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = spawned else {
        assert!(!girder_core::services::in_ci(), "CI=true and no redis-server binary");
        eprintln!("SKIPPED {test}: no redis-server binary");
        return None;
    };
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    for _ in 0..100 {
        // Without bounded reconnects, a check after the server died waits on
        // reconnection attempts for minutes.
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(std::time::Duration::from_millis(500))
            .set_response_timeout(response_timeout)
            .set_number_of_retries(1)
            .set_max_delay(50);
        if let Ok(conn) = ConnectionManager::new_with_config(client.clone(), config).await {
            return Some((child, conn));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    panic!("private redis-server did not start on port {port}");
}

/// A Redis that dies under a live limiter: the check fails with `Unavailable` (for the
/// caller's fail-open/closed policy), not a decision.
#[tokio::test]
async fn a_dead_server_is_unavailable() {
    if connect("a_dead_server_is_unavailable").await.is_none() {
        return;
    }
    let timeout = std::time::Duration::from_millis(500);
    let Some((mut child, conn)) = private_server("a_dead_server_is_unavailable", timeout).await
    else {
        return;
    };
    let rule = Rule::new(Kind::TokenBucket, 10, 1_000);
    let l = RedisLimiter::new(conn, &rule, RedisConfig::default()).unwrap();
    let coalesced = l.clone().coalescing(Coalescing::default());
    assert!(l.check("k", 1).await.unwrap().allowed);
    assert!(coalesced.check("k", 1).await.unwrap().allowed);
    child.kill().unwrap();
    child.wait().unwrap();
    for l in [l, coalesced] {
        let err = l.check("k", 1).await.unwrap_err();
        assert!(matches!(err, LimitError::Unavailable(_)), "{err:?}");
    }
}

/// A Redis that stops answering (SIGSTOP): one check holds the only call slot until
/// its response timeout, `max_queued` checks wait, and every further check fails at
/// once with `Unavailable` instead of growing the queue. Nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_bounds_the_queue() {
    if connect("a_stalled_server_bounds_the_queue").await.is_none() {
        return;
    }
    let timeout = std::time::Duration::from_secs(2);
    let Some((mut child, conn)) =
        private_server("a_stalled_server_bounds_the_queue", timeout).await
    else {
        return;
    };
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig}");
    };
    let rule = Rule::new(Kind::Gcra, 1_000, 1_000).with_burst(1_000);
    let one = std::num::NonZeroUsize::MIN;
    let settings = Coalescing {
        max_batch: std::num::NonZeroUsize::new(4).unwrap(),
        max_in_flight: one,
        max_queued: std::num::NonZeroUsize::new(8).unwrap(),
    };
    let l = Arc::new(
        RedisLimiter::new(conn, &rule, RedisConfig::default()).unwrap().coalescing(settings),
    );
    assert!(l.check("k", 1).await.unwrap().allowed);
    signal("-STOP");
    let first = tokio::spawn({
        let l = Arc::clone(&l);
        async move { l.check("k", 1).await }
    });
    // The first check has taken the slot (it is waiting on the stopped server).
    let started = std::time::Instant::now();
    while l.coalescing_stats().unwrap().calls < 2 {
        assert!(started.elapsed() < timeout, "the first check never went out");
        tokio::task::yield_now().await;
    }
    let checks: Vec<_> = (0..40)
        .map(|_| {
            let l = Arc::clone(&l);
            tokio::spawn(async move { l.check("k", 1).await })
        })
        .collect();
    let mut refused_at_once = 0;
    let mut results = Vec::new();
    for check in checks {
        let result = tokio::time::timeout(timeout * 10, check).await.expect("no check hangs");
        results.push(result.unwrap());
    }
    for result in &results {
        match result {
            Err(LimitError::Unavailable(UnavailableError::QueueFull { max_queued: 8 })) => {
                refused_at_once += 1;
            }
            Err(LimitError::Unavailable(_)) => {}
            other => panic!("a stopped server decided: {other:?}"),
        }
    }
    let first = tokio::time::timeout(timeout * 10, first).await.expect("no hang").unwrap();
    assert!(matches!(first, Err(LimitError::Unavailable(_))), "{first:?}");
    signal("-CONT");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(refused_at_once, 40 - 8, "8 wait, the rest are refused");
}

/// With the server's own clock (no override): after a denial, waiting `retry_after_ms`
/// is enough for the same request to pass — for every algorithm, with short periods
/// and bounded waiting.
#[tokio::test]
async fn retry_after_is_honoured_by_the_server_clock() {
    let Some(conn) = connect("retry_after_is_honoured_by_the_server_clock").await else { return };
    for rule in [
        Rule::new(Kind::TokenBucket, 5, 200).with_burst(2),
        Rule::new(Kind::Gcra, 5, 200).with_burst(2),
        Rule::new(Kind::FixedWindow, 3, 200),
        Rule::new(Kind::SlidingLog, 3, 200),
        Rule::new(Kind::SlidingWindow, 3, 200),
    ] {
        let l =
            RedisLimiter::new(conn.clone(), &rule, RedisConfig { key_prefix: prefix() }).unwrap();
        let mut denied = None;
        for _ in 0..100 {
            let d = l.check("k", 1).await.unwrap();
            if !d.allowed {
                denied = Some(d);
                break;
            }
        }
        let d = denied.expect("a denial within 100 immediate requests");
        assert!(d.retry_after_ms > 0 && d.retry_after_ms <= 2 * rule.period_ms, "{rule:?}: {d:?}");
        tokio::time::sleep(std::time::Duration::from_millis(d.retry_after_ms + 2)).await;
        let after = l.check("k", 1).await.unwrap();
        assert!(after.allowed, "{rule:?}: denied again after waiting {d:?}: {after:?}");
    }
}
