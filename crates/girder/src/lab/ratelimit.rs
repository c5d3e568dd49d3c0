//! `girder lab ratelimit` — "Pattern: Token Bucket for Rate Limiting" and the
//! Distributed Rate Limiter, measured with `girder-ratelimit`'s five algorithms under
//! one rule (100 per 1,000 ms, burst 100 for the buckets):
//!
//! 1. **bursty**: quiet periods, 300-request bursts and a steady trickle, on a manual
//!    clock — what each algorithm admits over time (the plot).
//! 2. **edge burst**: a limit's worth of requests at the end of one fixed window and
//!    more at the start of the next — the most each admits in any 1,000 ms, against
//!    its documented bound.
//! 3. **batching** (`--redis`): four `BatchedLimiter`s sharing a hot key admit locally
//!    and sync every 50 ms — admitted per window vs the limit and the documented
//!    overshoot bound; the exact `RedisLimiter` for comparison.
//! 4. **cost**: sequential decisions per second and p50/p99 of the in-process check
//!    vs the Redis check.
//! 5. **coalescing** (`--redis`): GCRA checks from 64 concurrent callers, one script
//!    call each vs coalesced into shared calls — decisions per second and checks per
//!    call.
//!
//! Parts 1 and 2 (and the batched part of 3) run on simulated time: deterministic,
//! and instant however long the simulated span.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use girder_core::{Clock, ManualClock, SystemClock};
use girder_ratelimit::{
    BatchedConfig, BatchedLimiter, Coalescing, Kind, MemoryConfig, MemoryLimiter, RateLimiter,
    RedisConfig, RedisLimiter, Rule,
};
use redis::aio::ConnectionManager;
use serde_json::json;

use super::{LabContext, Plot, Report, Series, percentile_us};

/// The rule every algorithm gets: `LIMIT` per `PERIOD_MS`, bursts of `BURST` for the
/// bucket algorithms.
const LIMIT: u64 = 100;
const PERIOD_MS: u64 = 1_000;
const BURST: u64 = 100;

/// Simulated time starts here: a multiple of the period, so fixed windows begin at
/// whole simulated seconds.
const T0_MS: u64 = 1_000_000;

fn rule(kind: Kind) -> Rule {
    let rule = Rule::new(kind, LIMIT, PERIOD_MS);
    if kind.has_burst() { rule.with_burst(BURST) } else { rule }
}

const fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::TokenBucket => "token bucket",
        Kind::Gcra => "gcra",
        Kind::FixedWindow => "fixed window",
        Kind::SlidingLog => "sliding log",
        Kind::SlidingWindow => "sliding window",
    }
}

fn memory_limiter(kind: Kind, clock: Arc<dyn Clock>) -> anyhow::Result<MemoryLimiter> {
    MemoryLimiter::from_rule(&rule(kind), MemoryConfig::default(), clock)
        .with_context(|| format!("rule for {}", name(kind)))
}

fn row(part: &str, algorithm: &str, metric: &str, value: String, note: String) -> Vec<String> {
    vec![part.to_owned(), algorithm.to_owned(), metric.to_owned(), value, note]
}

/// Part 1's workload: cycles of `quiet_ms` without bursts then `burst_requests` spread
/// over `burst_ms`, on top of `background_per_s` throughout.
struct Bursty {
    sim_ms: u64,
    step_ms: u64,
    bucket_ms: u64,
    quiet_ms: u64,
    burst_ms: u64,
    burst_requests: u64,
    background_per_s: u64,
}

const BURSTY: Bursty = Bursty {
    sim_ms: 10_000,
    step_ms: 10,
    bucket_ms: 100,
    quiet_ms: 2_000,
    burst_ms: 100,
    burst_requests: 300,
    background_per_s: 50,
};

impl Bursty {
    /// Background and burst requests arriving in the step starting `t` ms in.
    fn offered(&self, t: u64) -> (u64, u64) {
        let spread = |at: u64, n: u64, over: u64| (at + self.step_ms) * n / over - at * n / over;
        let background = spread(t, self.background_per_s, 1_000);
        let offset = t % (self.quiet_ms + self.burst_ms);
        let burst = if offset >= self.quiet_ms {
            spread(offset - self.quiet_ms, self.burst_requests, self.burst_ms)
        } else {
            0
        };
        (background, burst)
    }
}

/// What one algorithm admitted of the bursty workload.
struct BurstyOutcome {
    offered: u64,
    admitted: u64,
    burst_offered: u64,
    burst_admitted: u64,
    /// Admitted per `bucket_ms`.
    buckets: Vec<u64>,
}

fn run_bursty(kind: Kind) -> anyhow::Result<BurstyOutcome> {
    let w = &BURSTY;
    let clock = ManualClock::new(T0_MS);
    let limiter = memory_limiter(kind, Arc::new(clock.clone()))?;
    let mut out = BurstyOutcome {
        offered: 0,
        admitted: 0,
        burst_offered: 0,
        burst_admitted: 0,
        buckets: vec![0; (w.sim_ms / w.bucket_ms) as usize],
    };
    for t in (0..w.sim_ms).step_by(w.step_ms as usize) {
        clock.set_ms(T0_MS + t);
        let (background, burst) = w.offered(t);
        for i in 0..background + burst {
            let allowed = limiter.check_now("client", 1)?.allowed;
            let admitted = u64::from(allowed);
            out.offered += 1;
            out.admitted += admitted;
            out.buckets[(t / w.bucket_ms) as usize] += admitted;
            if i >= background {
                out.burst_offered += 1;
                out.burst_admitted += admitted;
            }
        }
    }
    Ok(out)
}

/// Part 2: quiet until `LIMIT` ms before a window edge, then one request per ms for
/// two periods. Returns the most admitted in any `PERIOD_MS` span and the total.
fn run_edge_burst(kind: Kind) -> anyhow::Result<(u64, u64)> {
    let edge = T0_MS + PERIOD_MS;
    let start = edge - LIMIT;
    let end = edge + 2 * PERIOD_MS;
    let clock = ManualClock::new(T0_MS);
    let limiter = memory_limiter(kind, Arc::new(clock.clone()))?;
    let mut admitted_at = Vec::with_capacity((end - start) as usize);
    for t in start..end {
        clock.set_ms(t);
        admitted_at.push(u64::from(limiter.check_now("client", 1)?.allowed));
    }
    let span = PERIOD_MS as usize;
    let mut in_span: u64 = admitted_at.iter().take(span).sum();
    let mut most = in_span;
    for i in span..admitted_at.len() {
        in_span = in_span + admitted_at[i] - admitted_at[i - span];
        most = most.max(in_span);
    }
    Ok((most, admitted_at.iter().sum()))
}

/// The documented bound on admissions within any span of `PERIOD_MS` (first to last
/// admission at most `PERIOD_MS - 1` apart), with its formula.
fn edge_bound(kind: Kind) -> (u64, String) {
    let delta = PERIOD_MS - 1;
    let rate_part = LIMIT * delta / PERIOD_MS;
    match kind {
        Kind::TokenBucket | Kind::Gcra => (
            BURST + rate_part,
            format!("burst + ⌊limit·{delta}/{PERIOD_MS}⌋ (≤ limit + burst = {})", LIMIT + BURST),
        ),
        Kind::FixedWindow => (2 * LIMIT, "2·limit across an edge; limit per aligned window".into()),
        Kind::SlidingLog => (LIMIT, "limit, exactly".into()),
        Kind::SlidingWindow => {
            (LIMIT + rate_part, format!("⌊limit·(1 + {delta}/{PERIOD_MS})⌋ (approximation)"))
        }
    }
}

/// Part 3's shape: `INSTANCES` batched limiters on one hot key, syncing every
/// `SYNC_INTERVAL_MS`; instance `i` starts each window `i · SYNC_INTERVAL_MS /
/// INSTANCES` ms late (its clients arrive later), so their syncs interleave.
const INSTANCES: u64 = 4;
const SYNC_INTERVAL_MS: u64 = 50;

/// The most any window admitted across `windows` windows of simulated time, and the
/// mean.
async fn run_batched(
    conns: &[ConnectionManager],
    prefix: &str,
    share: u64,
    windows: u64,
) -> anyhow::Result<(u64, f64)> {
    // Start at a real, period-aligned time so the counters' expiry (server time) is
    // sensible; advance by hand from there.
    let now = SystemClock.now_ms();
    let t0 = now - now % PERIOD_MS + PERIOD_MS;
    let clock = ManualClock::new(t0);
    let limiters = conns
        .iter()
        .map(|conn| {
            let config = BatchedConfig {
                key_prefix: format!("{prefix}batched:{share}:"),
                limit: LIMIT,
                period_ms: PERIOD_MS,
                local_share: share,
                sync_interval_ms: SYNC_INTERVAL_MS,
                max_keys: 1_000,
            };
            Ok(Arc::new(BatchedLimiter::new(conn.clone(), config, Arc::new(clock.clone()))?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut per_window = vec![0_u64; windows as usize];
    for ms in 0..windows * PERIOD_MS {
        clock.set_ms(t0 + ms);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, limiter) in (0_u64..).zip(&limiters) {
            if ms % PERIOD_MS < i * SYNC_INTERVAL_MS / INSTANCES {
                continue;
            }
            let limiter = Arc::clone(limiter);
            tasks.spawn(async move { limiter.check("hot", 1).await });
        }
        while let Some(done) = tasks.join_next().await {
            per_window[(ms / PERIOD_MS) as usize] += u64::from(done??.allowed);
        }
    }
    let most = per_window.iter().copied().max().unwrap_or(0);
    let mean = per_window.iter().sum::<u64>() as f64 / windows as f64;
    Ok((most, mean))
}

/// The exact distributed limiter for comparison: every instance hammers one fresh
/// sliding-log key for `run_for` (less than a period); returns (admitted, decisions,
/// elapsed ms).
///
/// A slow machine may not reach `2 · LIMIT` decisions in `run_for`: the instances then
/// go on until they have, but never past `EXACT_HARD_STOP` (still inside one period, so
/// the exact answer stays `LIMIT`).
async fn run_redis_exact(
    conns: &[ConnectionManager],
    prefix: &str,
    run_for: Duration,
) -> anyhow::Result<(u64, u64, u128)> {
    const EXACT_HARD_STOP: Duration = Duration::from_millis(PERIOD_MS * 9 / 10);
    let start = Instant::now();
    let (deadline, hard_stop) = (start + run_for, start + EXACT_HARD_STOP);
    let decisions = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for conn in conns {
        let config = RedisConfig { key_prefix: format!("{prefix}exact:") };
        let limiter = RedisLimiter::new(conn.clone(), &rule(Kind::SlidingLog), config)?;
        let decisions = Arc::clone(&decisions);
        tasks.spawn(async move {
            let mut admitted = 0_u64;
            loop {
                let now = Instant::now();
                let enough = decisions.load(Ordering::Relaxed) >= 2 * LIMIT;
                if now >= hard_stop || (now >= deadline && enough) {
                    break;
                }
                admitted += u64::from(limiter.check("hot", 1).await?.allowed);
                decisions.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(admitted)
        });
    }
    let mut admitted = 0;
    while let Some(done) = tasks.join_next().await {
        admitted += done??;
    }
    Ok((admitted, decisions.load(Ordering::Relaxed), start.elapsed().as_millis()))
}

/// Sequential decisions over `keys`: (decisions per second, p50 µs, p99 µs).
async fn measure_cost<L: RateLimiter>(
    limiter: &L,
    keys: &[String],
    count: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let mut samples = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        limiter.check(&keys[i % keys.len()], 1).await?;
        samples.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    Ok((rate, percentile_us(&mut samples, 0.5), percentile_us(&mut samples, 0.99)))
}

/// Callers in part 5.
const COALESCING_CALLERS: usize = 64;

/// `count` checks of `limiter` from [`COALESCING_CALLERS`] concurrent callers, each
/// sending its next check when its last is answered: decisions per second.
async fn measure_concurrent(
    limiter: Arc<RedisLimiter>,
    keys: Arc<Vec<String>>,
    count: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..COALESCING_CALLERS {
        let (limiter, keys, next) = (Arc::clone(&limiter), Arc::clone(&keys), Arc::clone(&next));
        callers.spawn(async move {
            loop {
                let i = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap_or(usize::MAX);
                if i >= count {
                    return Ok::<_, girder_ratelimit::LimitError>(());
                }
                limiter.check(&keys[i % keys.len()], 1).await?;
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done.context("a caller panicked")??;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

fn format_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0}/s")
    }
}

pub(super) async fn run(ctx: &LabContext) -> anyhow::Result<Report> {
    let quick = ctx.options.quick;
    let (memory_checks, redis_checks, batched_windows, exact_for) = if quick {
        (20_000, 2_000, 2_u64, Duration::from_millis(300))
    } else {
        (200_000, 20_000, 5, Duration::from_millis(800))
    };
    let mut rows = Vec::new();
    let mut findings = Vec::new();

    // Part 1: the bursty workload, one plot series per algorithm.
    ctx.phase("bursty workload (simulated)", Kind::ALL.len() as u64);
    let mut series = Vec::new();
    let mut summary = Vec::new();
    for kind in Kind::ALL {
        let out = run_bursty(kind)?;
        ctx.progress.inc(1);
        let per_s = 1_000 / BURSTY.bucket_ms;
        let points = (0_u64..)
            .zip(&out.buckets)
            .map(|(i, &n)| ((i * BURSTY.bucket_ms) as f64 / 1_000.0, (n * per_s) as f64))
            .collect();
        series.push(Series { name: name(kind).to_owned(), points });
        let peak = out.buckets.iter().max().copied().unwrap_or(0) * per_s;
        rows.push(row(
            "1 bursty",
            name(kind),
            "admitted / offered",
            format!("{} / {}", out.admitted, out.offered),
            format!(
                "bursts {} / {}; peak {peak}/s (100 ms buckets)",
                out.burst_admitted, out.burst_offered
            ),
        ));
        summary.push(format!(
            "{} {} ({} of {} burst requests)",
            name(kind),
            out.admitted,
            out.burst_admitted,
            out.burst_offered
        ));
    }
    let offered = (0..BURSTY.sim_ms)
        .step_by(BURSTY.step_ms as usize)
        .map(|t| {
            let (a, b) = BURSTY.offered(t);
            a + b
        })
        .sum::<u64>();
    findings.push(format!(
        "Bursty workload ({} requests in {} ms every {} ms over {}/s background, {} s \
         simulated, {offered} offered): admitted {}.",
        BURSTY.burst_requests,
        BURSTY.burst_ms,
        BURSTY.quiet_ms + BURSTY.burst_ms,
        BURSTY.background_per_s,
        BURSTY.sim_ms / 1_000,
        summary.join(", ")
    ));

    // Part 2: the fixed-window edge burst.
    ctx.phase("window-edge burst (simulated)", Kind::ALL.len() as u64);
    let mut summary = Vec::new();
    for kind in Kind::ALL {
        let (most, total) = run_edge_burst(kind)?;
        ctx.progress.inc(1);
        let (bound, formula) = edge_bound(kind);
        let verdict = if most <= bound { "within" } else { "EXCEEDED" };
        rows.push(row(
            "2 edge burst",
            name(kind),
            &format!("most admitted in any {PERIOD_MS} ms"),
            most.to_string(),
            format!("≤ {bound}: {formula}; {verdict} ({total} admitted in all)"),
        ));
        summary.push(format!("{} {most} (bound {bound})", name(kind)));
    }
    findings.push(format!(
        "Window-edge burst ({LIMIT} requests in the last {LIMIT} ms of a window, then 1/ms \
         for two periods): most admitted in any {PERIOD_MS} ms: {}.",
        summary.join(", ")
    ));

    // Redis, when given: parts 3 and 4 share the connections (one per instance).
    let mut conns = Vec::new();
    if let Some(url) = &ctx.options.redis_url {
        let client = redis::Client::open(url.as_str())?;
        for _ in 0..INSTANCES {
            conns.push(client.get_connection_manager().await?);
        }
    }
    let prefix = format!("girder:lab:ratelimit:{}:{}:", std::process::id(), SystemClock.now_ms());
    let shares = [LIMIT / INSTANCES, LIMIT / 2];

    // Part 3: local batching vs exact Redis decisions.
    if conns.is_empty() {
        rows.push(row(
            "3 batching",
            "-",
            "batched vs exact redis",
            "-".into(),
            "needs --redis".into(),
        ));
        findings.push("Local batching was not measured: it needs --redis.".into());
    } else {
        ctx.phase("batched instances on one hot key", shares.len() as u64 + 1);
        let mut summary = Vec::new();
        for share in shares {
            let (most, mean) = run_batched(&conns, &prefix, share, batched_windows).await?;
            ctx.progress.inc(1);
            let bound = LIMIT + 2 * (INSTANCES - 1) * share;
            let verdict = if most <= bound { "within" } else { "EXCEEDED" };
            rows.push(row(
                "3 batching",
                &format!("batched, {INSTANCES} × share {share}"),
                "most admitted per window",
                most.to_string(),
                format!(
                    "≤ {bound} (limit + 2·(N−1)·share); {verdict}; limit {LIMIT}; mean {mean:.1} \
                     over {batched_windows} windows, sync every {SYNC_INTERVAL_MS} ms"
                ),
            ));
            summary.push(format!(
                "share {share}: at most {most} per window (+{}% over the limit; bound {bound})",
                (most.saturating_sub(LIMIT)) * 100 / LIMIT
            ));
        }
        let (admitted, decisions, elapsed_ms) = run_redis_exact(&conns, &prefix, exact_for).await?;
        ctx.progress.inc(1);
        rows.push(row(
            "3 batching",
            &format!("redis sliding log, {INSTANCES} instances"),
            &format!("admitted in {elapsed_ms} ms (< {PERIOD_MS})"),
            admitted.to_string(),
            format!(
                "= limit {LIMIT} (exact: one script per decision); {}; {decisions} decisions",
                if admitted == LIMIT { "exact" } else { "NOT EXACT" }
            ),
        ));
        findings.push(format!(
            "Local batching ({INSTANCES} instances, one hot key, sync every \
             {SYNC_INTERVAL_MS} ms, limit {LIMIT}/window): {}; the exact RedisLimiter admitted \
             {admitted} of {decisions} decisions in {elapsed_ms} ms.",
            summary.join("; "),
        ));
    }

    // Part 4: the cost of a decision, in process and in Redis.
    let keys: Vec<String> = (0..1_000).map(|i| format!("user:{i}")).collect();
    let steps = Kind::ALL.len() * (1 + usize::from(!conns.is_empty()));
    ctx.phase("decision cost", steps as u64);
    let mut memory_summary = Vec::new();
    let mut redis_summary = Vec::new();
    for kind in Kind::ALL {
        let limiter = memory_limiter(kind, Arc::new(SystemClock))?;
        let (rate, p50, p99) = measure_cost(&limiter, &keys, memory_checks).await?;
        ctx.progress.inc(1);
        rows.push(row(
            "4 cost",
            name(kind),
            "in-process check",
            format_rate(rate),
            format!("p50 {p50:.2} µs, p99 {p99:.2} µs ({memory_checks} sequential)"),
        ));
        memory_summary.push(format!("{} {} (p99 {p99:.2} µs)", name(kind), format_rate(rate)));
        if let Some(conn) = conns.first() {
            let config = RedisConfig { key_prefix: format!("{prefix}cost:{}:", kind as u8) };
            let limiter = RedisLimiter::new(conn.clone(), &rule(kind), config)?;
            let (rate, p50, p99) = measure_cost(&limiter, &keys, redis_checks).await?;
            ctx.progress.inc(1);
            rows.push(row(
                "4 cost",
                name(kind),
                "redis check",
                format_rate(rate),
                format!("p50 {p50:.1} µs, p99 {p99:.1} µs ({redis_checks} sequential)"),
            ));
            redis_summary.push(format!("{} {} (p99 {p99:.0} µs)", name(kind), format_rate(rate)));
        }
    }
    let redis_part = if redis_summary.is_empty() {
        "Redis not measured (needs --redis)".to_owned()
    } else {
        format!("one Redis round trip each: {}", redis_summary.join(", "))
    };
    findings.push(format!(
        "Decision cost (sequential, {} keys): in process {}; {redis_part}.",
        keys.len(),
        memory_summary.join(", ")
    ));

    // Part 5: concurrent Redis checks, one script call each vs coalesced.
    if let Some(conn) = conns.first() {
        ctx.phase("coalescing", 2);
        let checks = redis_checks * 5;
        let keys = Arc::new(keys.clone());
        let mut rates = Vec::new();
        for coalesce in [false, true] {
            let config = RedisConfig { key_prefix: format!("{prefix}coalesce:{coalesce}:") };
            let limiter = RedisLimiter::new(conn.clone(), &rule(Kind::Gcra), config)?;
            let limiter = Arc::new(if coalesce {
                limiter.coalescing(Coalescing::default())
            } else {
                limiter
            });
            let rate = measure_concurrent(Arc::clone(&limiter), Arc::clone(&keys), checks).await?;
            ctx.progress.inc(1);
            let per_call =
                limiter.coalescing_stats().map_or(1.0, |s| s.checks as f64 / s.calls.max(1) as f64);
            let label = if coalesce { "coalesced" } else { "one call per check" };
            rows.push(row(
                "5 coalescing",
                name(Kind::Gcra),
                label,
                format_rate(rate),
                format!(
                    "{per_call:.1} checks per script call ({checks} checks, {COALESCING_CALLERS} callers)"
                ),
            ));
            rates.push((rate, per_call));
        }
        findings.push(format!(
            "Coalescing ({COALESCING_CALLERS} concurrent callers, GCRA on Redis): one script \
             call per check {}; coalesced {} ({:.1} checks per call), {:.2}× the decisions \
             per second.",
            format_rate(rates[0].0),
            format_rate(rates[1].0),
            rates[1].1,
            rates[1].0 / rates[0].0,
        ));
    }

    Ok(Report {
        experiment: "ratelimit".into(),
        ran_at: super::now_rfc3339(),
        parameters: json!({
            "quick": quick,
            "limit": LIMIT,
            "period_ms": PERIOD_MS,
            "burst": BURST,
            "bursty": {
                "simulated_ms": BURSTY.sim_ms,
                "step_ms": BURSTY.step_ms,
                "bucket_ms": BURSTY.bucket_ms,
                "quiet_ms": BURSTY.quiet_ms,
                "burst_ms": BURSTY.burst_ms,
                "burst_requests": BURSTY.burst_requests,
                "background_per_s": BURSTY.background_per_s,
            },
            "edge_burst": {
                "quiet_until_ms_before_edge": LIMIT,
                "requests_per_ms": 1,
                "simulated_ms": LIMIT + 2 * PERIOD_MS,
            },
            "batching": (!conns.is_empty()).then(|| json!({
                "instances": INSTANCES,
                "sync_interval_ms": SYNC_INTERVAL_MS,
                "local_shares": shares,
                "windows": batched_windows,
                "exact_run_ms": exact_for.as_millis() as u64,
            })),
            "cost": {
                "keys": keys.len(),
                "memory_checks": memory_checks,
                "redis_checks": (!conns.is_empty()).then_some(redis_checks),
            },
        }),
        columns: ["part", "algorithm", "metric", "value", "bound / note"]
            .map(String::from)
            .to_vec(),
        rows,
        plot: Some(Plot {
            title: format!(
                "Admitted under bursts of {} in {} ms ({LIMIT} per {PERIOD_MS} ms, burst {BURST})",
                BURSTY.burst_requests, BURSTY.burst_ms
            ),
            x_label: "simulated time (s)".into(),
            y_label: "admitted per second (100 ms buckets)".into(),
            series,
            log_x: false,
            log_y: false,
        }),
        findings,
        more_plots: Vec::new(),
    })
}
