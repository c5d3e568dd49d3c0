//! Rate limiting as real `girder serve` processes: four instances sharing Redis
//! never admit more than each algorithm's bound to 200 concurrent clients (checked
//! over the recorded history), and the middleware answers 429 with `Retry-After`
//! and the `RateLimit` fields, keyed by the peer address, with rules reloaded on
//! SIGHUP.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Server, TestDb, client};
use girder_core::services::{Service, require};
use serde_json::json;

/// One `/check` as the client saw it: when it was sent, when the answer came back
/// (ms since the run began) and whether it was admitted.
#[derive(Debug, Clone, Copy)]
struct Call {
    sent_ms: f64,
    answered_ms: f64,
    allowed: bool,
}

/// The most admissions that certainly fell inside one span of `span_ms`: each
/// admission happened on the server somewhere between its send and its answer, so
/// one that was sent at or after the span's start and answered before its end was
/// decided inside it. Counting only those never overstates a window, so the check
/// cannot fail a correct limiter; a limiter that admits too much still shows.
fn most_admitted_in_any_span(calls: &[Call], span_ms: f64) -> usize {
    let admitted: Vec<&Call> = calls.iter().filter(|c| c.allowed).collect();
    let end = calls.iter().map(|c| c.answered_ms).fold(0.0, f64::max);
    let mut most = 0;
    let mut start = 0.0;
    while start <= end {
        let inside = admitted
            .iter()
            .filter(|c| c.sent_ms >= start && c.answered_ms < start + span_ms)
            .count();
        most = most.max(inside);
        start += 5.0;
    }
    most
}

const LIMIT: u64 = 40;
const PERIOD_MS: u64 = 1_000;

/// (rule name, algorithm, most admitted in any span of the period, in any 200 ms span)
const RULES: [(&str, &str, usize, usize); 5] = [
    // Token bucket and GCRA (burst = limit): burst + limit·Δ/period.
    ("tb", "token_bucket", 2 * LIMIT as usize, LIMIT as usize + LIMIT as usize / 5),
    ("gcra", "gcra", 2 * LIMIT as usize, LIMIT as usize + LIMIT as usize / 5),
    // Fixed window: up to twice the limit across an edge.
    ("fw", "fixed_window", 2 * LIMIT as usize, 2 * LIMIT as usize),
    // Sliding log: exactly the limit in every window of the period.
    ("sl", "sliding_log", LIMIT as usize, LIMIT as usize),
    // Sliding window counter: limit·(1 + Δ/period) for Δ < period.
    ("sw", "sliding_window", 2 * LIMIT as usize, LIMIT as usize + LIMIT as usize / 5),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_sharing_redis_stay_within_every_algorithms_bound() {
    let Some(redis) = require(Service::Redis, "four_instances_sharing_redis_stay_within") else {
        return;
    };
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    // A run id in every key: reruns and parallel runs never share a budget.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let rules_path = dir.path().join("service-rules.toml");
    let mut toml = String::new();
    for (name, algorithm, _, _) in RULES {
        toml.push_str(&format!(
            "[[rule]]\nname = \"{name}\"\nalgorithm = \"{algorithm}\"\nlimit = {LIMIT}\nperiod_ms = {PERIOD_MS}\n\n"
        ));
    }
    std::fs::write(&rules_path, toml).expect("rules file");
    let rules_arg = rules_path.display().to_string();
    // Shared rule edits live under the prefix too: a run sees only its own.
    let prefix = format!("girder:test:rl:svc:{run}:");
    let data: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
    let servers: Vec<Server> = data
        .iter()
        .map(|d| {
            Server::start(
                d.path(),
                db.url(),
                &[
                    "--redis-url",
                    &redis,
                    "--ratelimiter-rules",
                    &rules_arg,
                    "--ratelimiter-key-prefix",
                    &prefix,
                ],
            )
        })
        .collect();
    let bases: Arc<Vec<String>> = Arc::new(servers.iter().map(|s| s.base.clone()).collect());
    let http = client();

    for (rule, algorithm, bound_period, bound_200ms) in RULES {
        let key = Arc::new(format!("hot-{run}"));
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..200 {
            let (http, bases, key, stop) =
                (http.clone(), Arc::clone(&bases), Arc::clone(&key), Arc::clone(&stop));
            clients.spawn(async move {
                let mut calls = Vec::new();
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let base = &bases[i % bases.len()];
                    i += 1;
                    let sent_ms = started.elapsed().as_secs_f64() * 1_000.0;
                    let reply = http
                        .post(format!("{base}/api/ratelimiter/check"))
                        .json(&json!({"key": *key, "rule": rule, "cost": 1}))
                        .send()
                        .await
                        .expect("check");
                    assert_eq!(reply.status().as_u16(), 200, "{rule}");
                    let body: serde_json::Value = reply.json().await.expect("json");
                    let answered_ms = started.elapsed().as_secs_f64() * 1_000.0;
                    calls.push(Call { sent_ms, answered_ms, allowed: body["allowed"] == true });
                }
                calls
            });
        }
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        stop.store(true, Ordering::Relaxed);
        let mut calls = Vec::new();
        while let Some(done) = clients.join_next().await {
            calls.extend(done.expect("client"));
        }
        let admitted = calls.iter().filter(|c| c.allowed).count();
        let run_ms = calls.iter().map(|c| c.answered_ms).fold(0.0, f64::max);
        // The run was contended (most calls refused) and the limiter did admit: the
        // bounds below are about something.
        assert!(calls.len() > 4 * admitted, "{algorithm}: {admitted} of {} admitted", calls.len());
        assert!(admitted >= LIMIT as usize, "{algorithm}: only {admitted} admitted");
        // Over the whole run: at most the burst plus the rate for its length (plus one
        // window's worth for the window algorithms' edges).
        let whole = (2.0 * LIMIT as f64 + LIMIT as f64 * run_ms / PERIOD_MS as f64).ceil() as usize;
        assert!(admitted <= whole, "{algorithm}: {admitted} admitted in {run_ms:.0} ms");
        let in_period = most_admitted_in_any_span(&calls, PERIOD_MS as f64);
        assert!(in_period <= bound_period, "{algorithm}: {in_period} admitted within one period");
        let in_200 = most_admitted_in_any_span(&calls, 200.0);
        assert!(in_200 <= bound_200ms, "{algorithm}: {in_200} admitted within 200 ms");
        eprintln!(
            "{algorithm}: {} calls, {admitted} admitted in {run_ms:.0} ms; most in one period {in_period} (bound {bound_period}), in 200 ms {in_200} (bound {bound_200ms})",
            calls.len()
        );
    }
}

/// The middleware on a real server: a per-IP rule from a file limits the API by peer
/// address with 429 problems carrying `Retry-After` and the `RateLimit` fields;
/// redirects are not covered by it; a SIGHUP picks up an edited file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_limited_per_peer_and_rules_reload_on_sighup() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    let rules = dir.path().join("limits.toml");
    let write_rules = |limit: u64| {
        std::fs::write(
            &rules,
            format!(
                "[[rule]]\nname = \"per-ip\"\nalgorithm = \"fixed_window\"\nlimit = {limit}\nperiod_ms = 3600000\nkey = \"ip\"\nroute_prefix = \"/api/bitly\"\n"
            ),
        )
        .expect("rules");
    };
    write_rules(3);
    let server =
        Server::start(dir.path(), db.url(), &["--ratelimit-rules", &rules.display().to_string()]);
    let http = client();
    let list = || http.get(format!("{}/api/bitly/urls", server.base)).send();
    for remaining in [2, 1, 0] {
        let ok = list().await.expect("list");
        assert_eq!(ok.status().as_u16(), 200);
        let fields = ok
            .headers()
            .get("ratelimit")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(fields.contains(&format!("r={remaining}")), "{fields}");
        assert!(ok.headers().contains_key("ratelimit-policy"));
    }
    let limited = list().await.expect("list");
    assert_eq!(limited.status().as_u16(), 429);
    let retry: u64 =
        limited.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=3_600).contains(&retry), "{retry}");
    assert_eq!(limited.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = limited.json().await.expect("json");
    assert_eq!(problem["status"], 429);
    // Other paths are not covered by the rule.
    assert_eq!(
        http.get(format!("{}/healthz", server.base))
            .send()
            .await
            .expect("healthz")
            .status()
            .as_u16(),
        200
    );

    // A bad file on SIGHUP keeps the old rules; a good one replaces them. Each reload
    // attempt is counted in /metrics, which the test waits on (bounded).
    let reloads = |outcome: &'static str| {
        let (http, base) = (http.clone(), server.base.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            let line = format!("girder_ratelimit_reloads_total{{outcome=\"{outcome}\"}} 1");
            loop {
                let text = http.get(format!("{base}/metrics")).send().await.expect("metrics");
                if text.text().await.expect("body").lines().any(|l| l == line) {
                    return;
                }
                assert!(Instant::now() < deadline, "no {outcome} reload counted");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    std::fs::write(&rules, "[[rule]]\nname = \"\"\n").expect("bad rules");
    let hup = || {
        Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().expect("kill")
    };
    assert!(hup().success());
    reloads("rejected").await;
    assert_eq!(list().await.expect("list").status().as_u16(), 429, "a bad file changed nothing");
    write_rules(1_000);
    assert!(hup().success());
    reloads("applied").await;
    assert_eq!(list().await.expect("list").status().as_u16(), 200, "the edited rules apply");
}
