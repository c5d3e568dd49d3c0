//! `girder lab`: the registry, the files a run writes, and clear errors for
//! bad experiment names.

mod common;

use std::process::Command;
use std::sync::Arc;

use girder::lab::{self, LabOptions};
use girder_core::SystemClock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_quick_run_writes_a_table_results_and_a_plot() {
    let out = tempfile::tempdir().expect("dir");
    let options = LabOptions {
        quick: true,
        postgres_url: None,
        redis_url: None,
        out_dir: out.path().to_owned(),
    };
    let experiment = lab::find("ids").expect("registered");
    let dir = lab::run(experiment, options).await.expect("run");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).expect("results.json"))
            .expect("json");
    assert_eq!(results["experiment"], "ids");
    let rows = results["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 4, "one row per id scheme");
    // Text lengths are facts of the encodings: 7 fixed, 22 for 128 bits; a Snowflake's
    // minimal base62 grows with the time since its epoch (10 digits until about 2030, then 11).
    let lengths: Vec<&str> = rows.iter().map(|r| r[1].as_str().expect("cell")).collect();
    assert_eq!((lengths[0], lengths[2], lengths[3]), ("7", "22", "22"));
    assert!(matches!(lengths[1], "10" | "11"), "{lengths:?}");
    let series = results["plot"]["series"].as_array().expect("series");
    assert_eq!(series.len(), 4);
    for s in series {
        let points = s["points"].as_array().expect("points");
        assert_eq!(points.len(), 6);
        assert!(points.iter().all(|p| p[1].as_f64().is_some_and(|rate| rate > 0.0)));
    }
    let svg = std::fs::read_to_string(dir.join("plot.svg")).expect("plot.svg");
    assert!(svg.contains("uuid v4 (sqlite)") && svg.contains("</svg>"));

    // The dashboard serves the latest results and plot.
    let db = common::TestDb::sqlite();
    let lab_dir = out.path().display().to_string();
    let (app, _) = common::app_with(&db, Arc::new(SystemClock), &["--lab-dir", &lab_dir]).await;
    let listed = common::get(&app, "/api/lab").await.json();
    assert_eq!(listed[0]["name"], "ids");
    assert_eq!(listed[0]["result"]["rows"].as_array().map(Vec::len), Some(4));
    let plot = common::get(&app, "/api/lab/ids/plot.svg").await;
    assert_eq!(plot.header("content-type"), Some("image/svg+xml"));
    assert!(String::from_utf8_lossy(&plot.body).starts_with("<svg"));
    for path in ["/api/lab/nope/plot.svg", "/api/lab/..%2F..%2Fetc/plot.svg"] {
        let missing = common::get(&app, path).await;
        assert_eq!(missing.status, axum::http::StatusCode::NOT_FOUND, "{path}");
        assert_eq!(missing.header("content-type"), Some("application/problem+json"));
    }
    let page = common::get(&app, "/dashboard/lab").await;
    assert!(String::from_utf8_lossy(&page.body).contains("/api/lab"));
}

#[test]
fn list_names_every_experiment_and_bad_names_fail_clearly() {
    let bin = env!("CARGO_BIN_EXE_girder");
    let list = Command::new(bin).args(["lab", "list"]).output().expect("run");
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    for experiment in lab::EXPERIMENTS {
        assert!(text.lines().any(|l| l.starts_with(experiment.name)), "{text}");
    }
    let bad = Command::new(bin).args(["lab", "no-such-thing"]).output().expect("run");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("no experiment named \"no-such-thing\"") && err.contains("ids"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Runs `name` quick and in process, without engines; returns its directory and results.
async fn quick_run(name: &str, out: &std::path::Path) -> (std::path::PathBuf, serde_json::Value) {
    let options =
        LabOptions { quick: true, postgres_url: None, redis_url: None, out_dir: out.to_owned() };
    let dir = lab::run(lab::find(name).expect("registered"), options).await.expect("run");
    let results =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).expect("results.json"))
            .expect("json");
    (dir, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_quick_run_measures_the_floors_and_every_configuration() {
    let out = tempfile::tempdir().expect("dir");
    let (dir, results) = quick_run("wal", out.path()).await;
    let rows = results["rows"].as_array().expect("rows");
    // Three disk floors, four writer counts, two commit delays, the 1 MiB run, the two
    // early-ack policies and the no-sync ceiling.
    assert_eq!(rows.len(), 13);
    assert!(rows[0][0].as_str().is_some_and(|c| c.starts_with("raw")));
    for row in rows {
        let rate: f64 = row[3].as_str().and_then(|c| c.parse().ok()).expect("a rate");
        assert!(rate > 0.0, "every configuration acknowledged appends: {row}");
    }
    let writers: Vec<&str> = rows[3..7].iter().map(|r| r[1].as_str().expect("cell")).collect();
    assert_eq!(writers, ["1", "4", "16", "64"]);
    assert!(std::fs::read_to_string(dir.join("plot.svg")).expect("plot").contains("</svg>"));
    // The scratch log is gone; only the results stay.
    let left: Vec<_> = std::fs::read_dir(out.path())
        .expect("out")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("wal")], "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_quick_run_shows_single_flight_and_skew() {
    let out = tempfile::tempdir().expect("dir");
    let (_, results) = quick_run("cache", out.path()).await;
    let rows = results["rows"].as_array().expect("rows");
    let cell = |row: &serde_json::Value, i: usize| row[i].as_str().expect("cell").to_owned();
    let single_flight = rows.iter().find(|r| cell(r, 0) == "stampede, single-flight").expect("row");
    assert_eq!(cell(single_flight, 5), "1", "1,000 concurrent misses, one store read");
    // Hit ratio never falls as the L1 grows, for every skew.
    for s in results["plot"]["series"].as_array().expect("series") {
        let ratios: Vec<f64> = s["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| p[1].as_f64().expect("y"))
            .collect();
        assert!(ratios.windows(2).all(|w| w[1] >= w[0]), "{}: {ratios:?}", s["name"]);
    }
}

/// The contention experiment on every engine CI has: each safe strategy sells a seat
/// at most once (zero double-bookings, sold ≤ seats), every attempt is accounted for,
/// and the unsafe strategy is in the table, labelled as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_quick_run_sells_each_seat_once_with_every_safe_strategy() {
    use girder_core::services::{Service, require};
    let out = tempfile::tempdir().expect("dir");
    let options = LabOptions {
        quick: true,
        postgres_url: require(Service::Postgres, "contention_quick_run (postgres)"),
        redis_url: require(Service::Redis, "contention_quick_run (redis)"),
        out_dir: out.path().to_owned(),
    };
    let engines =
        1 + usize::from(options.postgres_url.is_some()) + usize::from(options.redis_url.is_some());
    let dir = lab::run(lab::find("contention").expect("registered"), options).await.expect("run");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).expect("results.json"))
            .expect("json");
    let rows = results["rows"].as_array().expect("rows");
    let cell = |row: &serde_json::Value, i: usize| row[i].as_str().expect("cell").to_owned();
    let seat_counts = results["parameters"]["seat_counts"].as_array().expect("seat counts").len();
    // Five strategies per engine, row locks everywhere but Redis.
    let redis = usize::from(rows.iter().any(|r| cell(r, 0) == "redis"));
    assert_eq!(rows.len(), (engines * 5 - redis) * seat_counts, "{rows:?}");
    for row in rows {
        let seats: u64 = cell(row, 2).parse().expect("seats");
        let (sold, attempts) = cell(row, 8)
            .split_once('/')
            .map(|(a, b)| (a.parse::<u64>().expect("sold"), b.parse::<u64>().expect("attempts")))
            .expect("sold/attempts");
        assert_eq!(
            attempts,
            results["parameters"]["attempts_per_cell"].as_u64().expect("attempts")
        );
        assert!(sold <= seats && sold >= 1, "{row:?}");
        if cell(row, 1) != "naive (unsafe)" {
            assert_eq!(cell(row, 9), "0", "a safe strategy double-booked: {row:?}");
        }
    }
    let svg = std::fs::read_to_string(dir.join("plot.svg")).expect("plot.svg");
    assert!(svg.contains("reservation") && svg.contains("naive (unsafe)"));
}

/// The placement experiment: every scheme in the table with finite, positive numbers,
/// and the catalogue's `hash % N` moving far more keys than any consistent scheme, at
/// every shard count, with the consistent ones never moving a key needlessly. The key
/// sample and the schemes are deterministic, so these hold on every run; lookup rates
/// are only checked to be measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_quick_run_moves_few_keys_with_every_consistent_scheme() {
    let out = tempfile::tempdir().expect("dir");
    let (dir, results) = quick_run("shard", out.path()).await;
    let columns = results["columns"].as_array().expect("columns");
    assert_eq!(columns.len(), 12, "{columns:?}");
    let rows = results["rows"].as_array().expect("rows");
    let cell = |row: &serde_json::Value, i: usize| row[i].as_str().expect("cell").to_owned();
    let names: Vec<String> = rows.iter().map(|r| cell(r, 0)).collect();
    assert_eq!(names, ["ring (256 vnodes)", "ring (16 vnodes)", "rendezvous", "jump", "hash % N"]);
    let numbers = |row: &serde_json::Value, i: usize| -> Vec<f64> {
        cell(row, i).split('–').map(|n| n.parse().expect("a number")).collect()
    };
    for row in rows {
        assert_eq!(row.as_array().map(Vec::len), Some(columns.len()), "{row}");
        for i in (1..columns.len()).filter(|&i| i != 7) {
            let values = numbers(row, i);
            assert!(values.iter().all(|v| v.is_finite() && *v > 0.0), "column {i}: {row}");
        }
        // Spread is max/mean: never below 1.
        assert!(numbers(row, 8)[0] >= 1.0 && numbers(row, 9)[0] >= 1.0, "{row}");
    }
    let (consistent, modulo) = rows.split_at(4);
    let modulo = &modulo[0];
    for row in consistent {
        assert_eq!(cell(row, 7), "0", "a consistent scheme moved a key needlessly: {row}");
        for (add_or_remove, moved) in [(1, 2), (3, 4)] {
            assert!(
                numbers(modulo, add_or_remove)[0] > 3.0 * numbers(row, add_or_remove)[0],
                "hash % N vs {row}"
            );
            assert!(numbers(row, moved)[0] < 2.0, "within 2× the ideal at 8 shards: {row}");
        }
    }
    assert!(cell(modulo, 7).parse::<u64>().expect("count") > 0);

    // The plot: keys moved on a join per scheme, and the ideal; hash % N above every
    // consistent scheme at every shard count.
    let series = results["plot"]["series"].as_array().expect("series");
    assert_eq!(series.len(), 6);
    let points = |s: &serde_json::Value| -> Vec<(f64, f64)> {
        s["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| (p[0].as_f64().expect("x"), p[1].as_f64().expect("y")))
            .collect()
    };
    let modulo_points = points(&series[4]);
    assert_eq!(modulo_points.len(), 5, "the quick run's shard counts");
    for s in &series[..4] {
        for ((n, consistent), (_, naive)) in points(s).into_iter().zip(&modulo_points) {
            assert!(*naive > consistent, "{} at {n} shards", s["name"]);
        }
    }
    // The same join done for real, online: about K/5 keys moved to the fifth shard, and
    // the experiment fails outright if a read missed a key meanwhile.
    let online = &results["parameters"]["online_addition"];
    let keys = online["keys"].as_f64().expect("keys");
    let moved = online["keys_moved"].as_f64().expect("moved");
    assert!((moved / (keys / 5.0) - 1.0).abs() < 0.1, "{online}");
    assert!(online["reads_during"].as_u64().expect("reads") > 0, "{online}");
    let findings = results["findings"].as_array().expect("findings");
    assert!(findings.iter().any(|f| f.as_str().is_some_and(|f| f.contains("online"))));
    assert!(std::fs::read_to_string(dir.join("plot.svg")).expect("plot").contains("</svg>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sketches_quick_run_matches_the_formulas() {
    let out = tempfile::tempdir().expect("dir");
    let (_, results) = quick_run("sketches", out.path()).await;
    let bloom = results["parameters"]["bloom"]["points"].as_array().expect("bloom points");
    let example = bloom.iter().find(|p| p["n"] == 1_000).expect("the catalogue's n = 1,000");
    let (measured, formula) =
        (example["measured"].as_f64().expect("rate"), example["formula"].as_f64().expect("rate"));
    assert!((measured / formula - 1.0).abs() < 0.1, "{measured} vs {formula}");
    let hll = &results["parameters"]["hyperloglog"]["points"];
    for (feed, slack) in [("mixed", 1.3), ("keys", 1.5)] {
        let points = hll[feed].as_array().expect("hll points");
        assert_eq!(points.len(), 5, "the quick run's cardinalities, {feed}");
        for point in points {
            // 1.04/√16384 = 0.81%, with room for the sampling error of 100 (mixed) or
            // 20 (keys) sketches: about 4 of its standard deviations, 1/√(2T).
            assert!(point["rms"].as_f64().expect("rms") < 0.0081 * slack, "{point}");
        }
    }
    // Count-Min never underestimates; the share of keys past εN stays within δ;
    // conservative update, hashing alike, never estimates above plain update.
    let count_min = results["parameters"]["count_min"]["points"].as_array().expect("cm points");
    assert_eq!(count_min.len(), 4, "two (ε, δ), plain and conservative");
    let field = |p: &serde_json::Value, f: &str| p[f].as_f64().expect(f);
    for pair in count_min.chunks(2) {
        let [plain, conservative] = pair else { unreachable!("chunks of two") };
        for p in pair {
            assert!(field(p, "min_overestimate") >= 0.0, "{p}");
            assert!(field(p, "fraction_above_bound") <= field(p, "sketch_delta"), "{p}");
        }
        for f in ["mean_overestimate", "max_overestimate"] {
            assert!(field(conservative, f) <= field(plain, f), "{f}: {pair:?}");
        }
        assert!(field(conservative, "mean_overestimate") < field(plain, "mean_overestimate"));
    }
    // Top-K: certified keys are always in the true top 100; the largest summary finds
    // at least 99 of them in 1M events; every summary is smaller than exact counting.
    let topk = &results["parameters"]["topk"];
    let exact_bytes = topk["exact_memory_bytes"].as_f64().expect("exact memory");
    let points = topk["points"].as_array().expect("topk points");
    for p in points {
        assert_eq!(p["certified"], p["certified_hits"], "{p}");
        assert!(field(p, "memory_bytes") < exact_bytes, "{p} vs {exact_bytes}");
    }
    let largest = points.last().expect("a capacity");
    assert!(field(largest, "recall") >= 0.99, "{largest}");
    assert!(field(largest, "certified") >= 50.0, "{largest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_quick_run_orders_the_modes_by_write_amplification() {
    let out = tempfile::tempdir().expect("dir");
    let (_, results) = quick_run("fanout", out.path()).await;
    let rows = results["rows"].as_array().expect("rows");
    let cell = |row: &serde_json::Value, i: usize| row[i].as_str().expect("cell").to_owned();
    let by_mode = |mode: &str| {
        rows.iter().find(|r| cell(r, 0) == mode).unwrap_or_else(|| panic!("no {mode} row"))
    };
    let amp = |mode: &str| cell(by_mode(mode), 3).parse::<f64>().expect("entries/post");
    assert_eq!(amp("pull"), 0.0, "pull writes no feed entry");
    assert!(amp("push") > amp("hybrid T=300") && amp("hybrid T=300") > amp("hybrid T=30"));
    for row in rows {
        assert!(cell(row, 1).parse::<u64>().expect("posts") >= 500, "{row}");
        assert!(!cell(row, 8).contains("failed"), "every read answered: {row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_quick_run_counts_and_trades_lateness_for_completeness() {
    let out = tempfile::tempdir().expect("dir");
    let (_, results) = quick_run("stream", out.path()).await;
    let throughput = &results["parameters"]["throughput"];
    for what in ["operator", "floor", "pipeline"] {
        assert!(throughput[what].as_f64().expect("rate") > 0.0, "{what}");
    }
    // Every event is counted or refused as late, and more lateness never counts fewer.
    let points = results["parameters"]["lateness"]["points"].as_array().expect("points");
    let mut last = 0.0;
    for point in points {
        let (counted, late) =
            (point["counted"].as_f64().expect("counted"), point["late"].as_f64().expect("late"));
        assert!((counted + late - 1.0).abs() < 1e-9, "{point}");
        assert!(counted >= last, "{point}");
        last = counted;
    }
    assert!(last > 0.999, "30 s of lateness takes (nearly) every event: {last}");
}

/// `girder lab push --quick`: every transport delivers every update, long polling
/// asks far less often than short polling, and every viewer and peer gets every
/// message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_quick_run_delivers_everything_on_every_transport() {
    let out = tempfile::tempdir().expect("dir");
    let options = LabOptions {
        quick: true,
        postgres_url: None,
        redis_url: None,
        out_dir: out.path().to_owned(),
    };
    let dir = lab::run(lab::find("push").expect("registered"), options).await.expect("run");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).expect("results.json"))
            .expect("json");
    let rows = results["rows"].as_array().expect("rows");
    let cell = |row: usize, col: usize| rows[row][col].as_str().expect("cell").to_owned();
    for (row, name) in ["short polling", "long polling", "SSE", "WebSocket"].iter().enumerate() {
        assert_eq!(cell(row, 0), *name);
        let received = cell(row, 4);
        let (got, expected) = received.split_once('/').expect("n/m");
        assert_eq!(got, expected, "{name} delivered every update");
    }
    let short: f64 = cell(0, 2).parse().expect("requests");
    let long: f64 = cell(1, 2).parse().expect("requests");
    assert!(short > 4.0 * long, "short polling asks more: {short} vs {long}");
    for row in 4..6 {
        assert_eq!(cell(row, 4), "0 missing", "every viewer got every comment");
    }
    for row in 6..8 {
        let delivered = cell(row, 4);
        let (got, rest) = delivered.split_once('/').expect("n/m");
        let offered = rest.split_whitespace().next().expect("offered");
        assert_eq!(got, offered, "{}: every message reached its peer", cell(row, 0));
    }
}

/// `girder lab geo --quick`: every approach answers every query with brute force's
/// members (the run fails otherwise, and the table says so), examines at least the
/// members it finds, and the report, its three plots and the Markdown are written;
/// the Redis key is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_quick_run_agrees_across_approaches_and_writes_every_file() {
    use girder_core::services::Service;
    let out = tempfile::tempdir().expect("dir");
    let (dir, results) = quick_run("geo", out.path()).await;
    for file in ["results.json", "report.md", "plot.svg", "plot-2.svg", "plot-3.svg"] {
        let text = std::fs::read_to_string(dir.join(file)).expect(file);
        assert!(text.len() > 200, "{file}: {text}");
    }
    let markdown = std::fs::read_to_string(dir.join("report.md")).expect("report.md");
    assert!(markdown.contains("| points | radius (m) | approach |"), "{markdown}");
    assert!(markdown.contains("![") && markdown.contains("(plot-3.svg)"), "{markdown}");

    let rows = results["rows"].as_array().expect("rows");
    let cell = |row: &serde_json::Value, i: usize| row[i].as_str().expect("cell").to_owned();
    // Redis is measured when it answers, and its skipping is said in the results.
    let redis = results["parameters"]["redis"]["skipped"].is_null();
    assert!(redis || !results["findings"][0].as_str().expect("finding").is_empty());
    // Two densities, four radii, five in-process approaches and Redis when it answers.
    assert_eq!(rows.len(), 2 * 4 * if redis { 6 } else { 5 }, "{rows:?}");
    for row in rows {
        let (approach, hits) = (cell(row, 2), cell(row, 8).parse::<f64>().expect("hits"));
        if approach == "Redis GEOSEARCH" {
            assert_eq!(cell(row, 6), "not observable");
            let rim: usize = cell(row, 9).parse().expect("count");
            assert!(rim <= hits.ceil() as usize, "{row}");
        } else {
            assert_eq!(cell(row, 9), "0", "{approach} returned brute force's members: {row}");
            let candidates: f64 = cell(row, 6).parse().expect("candidates");
            assert!(candidates >= hits, "{approach} examined what it found: {row}");
        }
        let p50: f64 = cell(row, 4).parse().expect("p50");
        assert!(p50 > 0.0, "{row}");
    }
    // Every in-process approach finds the same members for one density and radius.
    for chunk in rows.chunks(if redis { 6 } else { 5 }) {
        let hits: Vec<String> = chunk[..5].iter().map(|r| cell(r, 8)).collect();
        assert!(hits.windows(2).all(|w| w[0] == w[1]), "{chunk:?}");
    }
    assert_eq!(results["more_plots"].as_array().map(Vec::len), Some(2));
    if redis {
        let client = redis::Client::open(Service::Redis.url()).expect("url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
        let pattern = format!("girder:lab:geo:{}:*", std::process::id());
        let left: Vec<String> =
            redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await.expect("keys");
        assert!(left.is_empty(), "{left:?}");
    }
}
