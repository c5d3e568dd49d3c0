//! `girder lab ratelimit --quick`: the numbers in results.json keep each algorithm's
//! documented bound — and show the fixed window's edge burst — so a wrong limiter
//! fails here, not just a wrong table.

use girder::lab::{self, LabOptions};
use girder_core::services::{Service, require};
use serde_json::Value;

fn cell(row: &Value, i: usize) -> &str {
    row[i].as_str().expect("cell")
}

/// The value of the row of `part` whose algorithm is `algorithm`, as an integer.
fn value(rows: &[Value], part: &str, algorithm: &str) -> u64 {
    let row = rows
        .iter()
        .find(|r| cell(r, 0) == part && cell(r, 1) == algorithm)
        .unwrap_or_else(|| panic!("no row {part} / {algorithm}: {rows:?}"));
    cell(row, 3).parse().unwrap_or_else(|_| panic!("not an integer: {row:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratelimit_quick_run_keeps_every_bound_and_shows_the_edge_burst() {
    let out = tempfile::tempdir().expect("dir");
    let options = LabOptions {
        quick: true,
        postgres_url: None,
        redis_url: require(Service::Redis, "ratelimit_quick_run (redis)"),
        out_dir: out.path().to_owned(),
    };
    let with_redis = options.redis_url.is_some();
    let dir = lab::run(lab::find("ratelimit").expect("registered"), options).await.expect("run");
    let results: Value =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).expect("results.json"))
            .expect("json");
    assert_eq!(results["experiment"], "ratelimit");
    let params = &results["parameters"];
    let limit = params["limit"].as_u64().expect("limit");
    let burst = params["burst"].as_u64().expect("burst");
    let rows = results["rows"].as_array().expect("rows");

    // The edge burst: the fixed window admits more than its limit in some 1,000 ms
    // (two windows' worth across the edge) but never more than twice it; the sliding
    // log exactly its limit; the buckets at most limit + burst; the sliding window
    // counter at most its approximation bound, below 2·limit.
    let edge = |algorithm| value(rows, "2 edge burst", algorithm);
    let fixed = edge("fixed window");
    assert!(fixed > limit && fixed <= 2 * limit, "fixed window: {fixed}");
    assert_eq!(edge("sliding log"), limit);
    for bucket in ["token bucket", "gcra"] {
        assert!(edge(bucket) <= limit + burst, "{bucket}: {}", edge(bucket));
        assert!(edge(bucket) > limit, "{bucket} should show its burst: {}", edge(bucket));
    }
    assert_eq!(edge("token bucket"), edge("gcra"), "GCRA decides as the token bucket");
    let sliding = edge("sliding window");
    assert!(sliding >= limit && sliding < 2 * limit, "sliding window: {sliding}");

    // The bursty workload: nobody admits more than offered, and over the simulated
    // span no algorithm admits more than its rate allows plus one burst.
    let simulated_s = params["bursty"]["simulated_ms"].as_u64().expect("ms") / 1_000;
    for row in rows.iter().filter(|r| cell(r, 0) == "1 bursty") {
        let (admitted, offered) = cell(row, 3)
            .split_once(" / ")
            .map(|(a, o)| (a.parse::<u64>().expect("admitted"), o.parse::<u64>().expect("offered")))
            .expect("admitted / offered");
        assert!(admitted <= offered, "{row:?}");
        assert!(admitted <= limit * simulated_s + burst, "{row:?}");
        assert!(admitted >= limit, "{row:?}");
    }
    let series = results["plot"]["series"].as_array().expect("series");
    assert_eq!(series.len(), 5, "one series per algorithm");
    for s in series {
        let points = s["points"].as_array().expect("points");
        assert_eq!(points.len() as u64, simulated_s * 10, "100 ms buckets");
        let peak = points.iter().map(|p| p[1].as_f64().expect("y")).fold(0.0, f64::max);
        assert!(peak > 0.0, "{}", s["name"]);
    }

    // Batching: within its documented overshoot bound; the exact Redis limiter exact.
    let batched: Vec<&Value> = rows
        .iter()
        .filter(|r| cell(r, 0) == "3 batching" && cell(r, 1).starts_with("batched"))
        .collect();
    if with_redis {
        let instances = params["batching"]["instances"].as_u64().expect("instances");
        assert_eq!(batched.len(), 2, "{rows:?}");
        for row in batched {
            let share: u64 = cell(row, 1).rsplit(' ').next().expect("share").parse().expect("n");
            let most: u64 = cell(row, 3).parse().expect("most");
            assert!(most >= limit, "a hot key uses its limit: {row:?}");
            assert!(most <= limit + 2 * (instances - 1) * share, "{row:?}");
        }
        let exact = rows
            .iter()
            .find(|r| cell(r, 0) == "3 batching" && cell(r, 1).starts_with("redis"))
            .expect("exact row");
        assert_eq!(cell(exact, 3).parse::<u64>().expect("admitted"), limit, "{exact:?}");
        let redis_cost = rows.iter().filter(|r| cell(r, 2) == "redis check").count();
        assert_eq!(redis_cost, 5);
        let coalescing: Vec<&Value> =
            rows.iter().filter(|r| cell(r, 0) == "5 coalescing").collect();
        assert_eq!(coalescing.len(), 2, "{rows:?}");
        let per_call = |row: &Value| -> f64 {
            cell(row, 4).split(' ').next().expect("per call").parse().expect("a number")
        };
        // 64 callers and at most 2 calls in flight: checks must share calls.
        assert!(per_call(coalescing[1]) > 1.0, "{:?}", coalescing[1]);
    } else {
        assert!(batched.is_empty());
        assert!(rows.iter().any(|r| cell(r, 0) == "3 batching" && cell(r, 4) == "needs --redis"));
    }
    let memory_cost = rows.iter().filter(|r| cell(r, 2) == "in-process check").count();
    assert_eq!(memory_cost, 5);
    let findings = if with_redis { 5 } else { 4 };
    assert_eq!(results["findings"].as_array().map(Vec::len), Some(findings));
}
