//! YouTube Top-K through its router on SQLite and PostgreSQL: exact top-K against a
//! model of every view, approximate counts within their stated error of the exact
//! ones, two instances on one database answering with the union of their views, a
//! restart that neither loses nor doubles a view, the generator, and a table of bad
//! input that must all be 4xx problems.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use girder_core::{Clock, ManualClock};
use girder_http::identity::{Role, test_bearer as bearer, test_tokens};
use girder_sql::{Db, PoolConfig};
use girder_system::{Context, Shutdown, ShutdownTrigger, System};
use girder_testkit::backends::TestDb;
use girder_topk::{TopK, TopKSettings};
use http_body_util::BodyExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tower::ServiceExt;

// ---------------------------------------------------------------- plumbing

/// 2023-11-14 22:13:30 UTC: thirty seconds into a minute.
const NOW_MS: u64 = 1_699_999_980_000 + 30_000;
const NOW_MINUTE: i64 = (NOW_MS / 60_000) as i64;

struct Instance {
    topk: Arc<TopK>,
    router: Router,
    trigger: ShutdownTrigger,
    running: tokio::task::JoinHandle<()>,
}

/// Settings for tests: quick checkpoints, and an hour of lateness so views of the
/// whole last hour are counted whatever order they arrive in.
fn settings() -> TopKSettings {
    TopKSettings {
        topk_checkpoint_ms: Some(20),
        topk_allowed_lateness_ms: Some(3_600_000),
        ..TopKSettings::default()
    }
}

/// Opens Top-K on `db` with its data in `data`, and runs its pipeline.
async fn start(db: &str, data: &std::path::Path, clock: Arc<dyn Clock>) -> Instance {
    let pool = Db::connect(db, PoolConfig::default()).await.expect("database");
    let context = Context::new(pool, clock).with_data_dir(data);
    let topk = TopK::open(&context, settings()).await.expect("open topk");
    let router = topk.api_router().layer(test_tokens().layer());
    let (trigger, shutdown) = Shutdown::new();
    let running = tokio::spawn(Arc::clone(&topk).run(shutdown));
    Instance { topk, router, trigger, running }
}

/// Stops the pipeline after its last checkpoint and closes the log.
async fn stop(i: Instance) {
    let Instance { topk, router, trigger, running } = i;
    trigger.fire();
    running.await.expect("the pipeline stops");
    drop(router);
    Arc::try_unwrap(topk).expect("no other handle").close().await.expect("close");
}

/// Sends one request as `user` (an operator when `user` is "operator", nobody when
/// empty); returns the status and the JSON body (or `Null`).
async fn call(
    router: &Router,
    user: &str,
    method: &str,
    uri: &str,
    body: Option<String>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    if !user.is_empty() {
        let role = if user == "operator" { Role::Operator } else { Role::User };
        request = request.header(header::AUTHORIZATION, bearer(user, role));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body.unwrap_or_default())).expect("request"))
        .await
        .expect("router");
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_client_error() || status.is_server_error() {
        assert!(is_problem, "{method} {uri}: error {status} is not a problem document: {value}");
    }
    (status, value)
}

/// Posts `views` (video, time) in batches of 1,000; asserts every one is accepted.
async fn send(i: &Instance, views: &[(String, i64)]) {
    for chunk in views.chunks(1_000) {
        let batch: Vec<Value> =
            chunk.iter().map(|(v, at)| json!({ "video_id": v, "at_ms": at })).collect();
        let body = json!({ "views": batch }).to_string();
        let (status, v) = call(&i.router, "viewer", "POST", "/views", Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["accepted"], chunk.len(), "{v}");
    }
}

/// Waits until every view appended to `i`'s log is committed.
async fn settle(i: &Instance) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !i.topk.caught_up().await.expect("lag") {
        assert!(Instant::now() < deadline, "the pipeline did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` views of videos `vid-0…vid-{videos−1}` (lower numbers more popular) at times in
/// the last `minutes` minutes.
fn views(rng: &mut StdRng, n: usize, videos: u32, minutes: i64) -> Vec<(String, i64)> {
    (0..n)
        .map(|_| {
            // A cheap skew: the square of a uniform number favours small ids.
            let u: f64 = rng.random();
            let video = format!("vid-{}", (u * u * f64::from(videos)) as u32);
            let back = rng.random_range(0..minutes * 60_000);
            (video, NOW_MS as i64 - back)
        })
        .collect()
}

/// The exact counts of each video in minutes `first..=last` (`None`: all).
fn model(views: &[(String, i64)], range: Option<(i64, i64)>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (video, at) in views {
        let minute = at.div_euclid(60_000);
        if range.is_none_or(|(a, b)| (a..=b).contains(&minute)) {
            *counts.entry(video.clone()).or_default() += 1;
        }
    }
    counts
}

/// The model's top `k`, most first, ties by video id.
fn model_top(counts: &BTreeMap<String, u64>, k: usize) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = counts.iter().map(|(v, c)| (v.clone(), *c)).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

const WINDOWS: [(&str, Option<i64>); 4] =
    [("minute", Some(1)), ("hour", Some(60)), ("day", Some(1_440)), ("all", None)];

fn range_of(minutes: Option<i64>) -> Option<(i64, i64)> {
    minutes.map(|n| (NOW_MINUTE - (n - 1), NOW_MINUTE))
}

async fn top(i: &Instance, window: &str, mode: &str, k: u32) -> Value {
    let uri = format!("/top?window={window}&mode={mode}&k={k}");
    let (status, v) = call(&i.router, "viewer", "GET", &uri, None).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {v}");
    v
}

fn ranked(v: &Value) -> Vec<(String, u64)> {
    v["videos"]
        .as_array()
        .expect("videos")
        .iter()
        .map(|r| {
            (r["video_id"].as_str().expect("id").to_owned(), r["views"].as_u64().expect("views"))
        })
        .collect()
}

/// Checks every window's exact top-K against the model.
async fn check_exact(i: &Instance, all: &[(String, i64)], what: &str) {
    for (window, minutes) in WINDOWS {
        let counts = model(all, range_of(minutes));
        for k in [1, 10, 100] {
            let v = top(i, window, "exact", k).await;
            assert_eq!(ranked(&v), model_top(&counts, k as usize), "{what}: {window}, k = {k}");
            assert!(v["videos"].as_array().expect("videos").iter().all(|r| r["error"] == 0));
            assert_eq!(v["total_views"], counts.values().sum::<u64>(), "{what}: {window} total");
        }
    }
}

// ---------------------------------------------------------------- the top-K

/// Views spread over the last 50 minutes, in random order: each window's exact top-K
/// is the model's, to the view, for several K.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_top_k_equals_a_model_of_every_view() {
    for db in TestDb::all("exact_top_k_equals_a_model_of_every_view").await {
        let data = tempfile::tempdir().expect("data");
        let clock = Arc::new(ManualClock::new(NOW_MS));
        let i = start(db.url(), data.path(), clock).await;
        let mut rng = StdRng::seed_from_u64(1);
        let all = views(&mut rng, 5_000, 200, 50);
        send(&i, &all).await;
        settle(&i).await;
        check_exact(&i, &all, db.engine()).await;
        stop(i).await;
        db.drop_db().await;
    }
}

/// More distinct videos than a summary monitors: in approximate mode every reported
/// count is within its stated error of the exact count, every video the summary does
/// not report has at most the floor or the K-th count, and the totals are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approximate_counts_are_within_their_error_of_the_exact_ones() {
    for db in TestDb::all("approximate_counts_are_within_their_error_of_the_exact_ones").await {
        let data = tempfile::tempdir().expect("data");
        let clock = Arc::new(ManualClock::new(NOW_MS));
        let i = start(db.url(), data.path(), clock).await;
        let mut rng = StdRng::seed_from_u64(2);
        // 2,500 videos seen in the current minute alone: summaries of 1,000 keys evict.
        let mut all = views(&mut rng, 12_000, 2_500, 1);
        all.extend(views(&mut rng, 12_000, 5_000, 45));
        send(&i, &all).await;
        settle(&i).await;
        let mut evicted = false;
        for (window, minutes) in WINDOWS {
            let counts = model(&all, range_of(minutes));
            let k = 50;
            let v = top(&i, window, "approx", k).await;
            let floor = v["floor"].as_u64().expect("floor");
            evicted |= floor > 0;
            assert_eq!(
                v["total_views"],
                counts.values().sum::<u64>(),
                "{}: {window} total",
                db.engine()
            );
            let listed = v["videos"].as_array().expect("videos");
            assert_eq!(listed.len(), k as usize, "{window}");
            for r in listed {
                let video = r["video_id"].as_str().expect("id");
                let (views, error) =
                    (r["views"].as_u64().expect("views"), r["error"].as_u64().expect("error"));
                let truth = counts.get(video).copied().unwrap_or(0);
                assert!(
                    views - error <= truth && truth <= views,
                    "{}: {window}: {video} has {truth}, reported {views} ± {error}",
                    db.engine()
                );
            }
            let kth = listed.last().and_then(|r| r["views"].as_u64()).unwrap_or(0);
            for (video, truth) in &counts {
                if !listed.iter().any(|r| r["video_id"] == video.as_str()) {
                    assert!(*truth <= floor.max(kth), "{window}: unlisted {video} has {truth}");
                }
            }
            // The heaviest video is never missed.
            let (first, _) = &model_top(&counts, 1)[0];
            assert!(
                listed.iter().any(|r| r["video_id"] == first.as_str()),
                "{window}: {first} missing"
            );
        }
        assert!(evicted, "the summaries never had to evict: the test shows nothing");
        stop(i).await;
        db.drop_db().await;
    }
}

/// Two instances on one database, each with its own log and pipeline: either one
/// answers with the union of the views both took, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_answer_with_the_union_of_their_views() {
    for db in TestDb::all("two_instances_answer_with_the_union_of_their_views").await {
        let (da, db_dir) = (tempfile::tempdir().expect("data"), tempfile::tempdir().expect("data"));
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(NOW_MS));
        let a = start(db.url(), da.path(), Arc::clone(&clock)).await;
        let b = start(db.url(), db_dir.path(), clock).await;
        let mut rng = StdRng::seed_from_u64(3);
        let to_a = views(&mut rng, 3_000, 100, 30);
        let to_b = views(&mut rng, 3_000, 100, 30);
        send(&a, &to_a).await;
        send(&b, &to_b).await;
        settle(&a).await;
        settle(&b).await;
        let union: Vec<(String, i64)> = to_a.iter().chain(&to_b).cloned().collect();
        check_exact(&a, &union, "instance a").await;
        check_exact(&b, &union, "instance b").await;
        let (_, stats) = call(&b.router, "viewer", "GET", "/stats", None).await;
        assert_eq!(stats["pipelines"], 2, "{stats}");
        assert_eq!(stats["total_views"], 6_000, "{stats}");
        assert_ne!(a.topk.instance(), b.topk.instance());
        stop(a).await;
        stop(b).await;
        db.drop_db().await;
    }
}

/// Views counted before a restart, views appended to the log but not yet counted when
/// the instance stopped, and views after it: all counted once, by the same pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_nothing_and_counts_nothing_twice() {
    for db in TestDb::all("a_restart_loses_nothing_and_counts_nothing_twice").await {
        let data = tempfile::tempdir().expect("data");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(NOW_MS));
        let mut rng = StdRng::seed_from_u64(4);
        let first = views(&mut rng, 2_000, 80, 20);
        let pending = views(&mut rng, 2_000, 80, 20);
        let after = views(&mut rng, 2_000, 80, 20);

        let i = start(db.url(), data.path(), Arc::clone(&clock)).await;
        let id = i.topk.instance().to_owned();
        send(&i, &first).await;
        settle(&i).await;
        stop(i).await;

        // Appended to the log while no pipeline runs (as if the instance died right
        // after answering): the pipeline is shut down before anything reads them.
        let pool = Db::connect(db.url(), PoolConfig::default()).await.expect("database");
        let context = Context::new(pool, Arc::clone(&clock)).with_data_dir(data.path());
        let idle = TopK::open(&context, settings()).await.expect("open");
        let views: Vec<(&str, Option<i64>)> =
            pending.iter().map(|(v, at)| (v.as_str(), Some(*at))).collect();
        let done = idle.ingest(&views).await.expect("ingest");
        assert_eq!(done.accepted, 2_000);
        assert!(!idle.caught_up().await.expect("lag"));
        Arc::try_unwrap(idle).expect("one handle").close().await.expect("close");

        let i = start(db.url(), data.path(), clock).await;
        assert_eq!(i.topk.instance(), id, "the restarted instance resumes its own pipeline");
        send(&i, &after).await;
        settle(&i).await;
        let all: Vec<(String, i64)> = first.iter().chain(&pending).chain(&after).cloned().collect();
        check_exact(&i, &all, db.engine()).await;
        let (_, stats) = call(&i.router, "viewer", "GET", "/stats", None).await;
        assert_eq!(stats["pipelines"], 1, "{stats}");
        stop(i).await;
        db.drop_db().await;
    }
}

/// The operator starts the generator, stops it, and every view it made is counted;
/// a plain user may look but not start it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generator_makes_views_that_are_all_counted() {
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().expect("data");
    let i = start(db.url(), data.path(), Arc::new(ManualClock::new(NOW_MS))).await;
    let spec = json!({ "rate_per_sec": 2_000, "videos": 50, "skew": 1.1 }).to_string();
    let (status, _) = call(&i.router, "viewer", "POST", "/generator", Some(spec.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, v) = call(&i.router, "operator", "POST", "/generator", Some(spec)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["running"], true);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, g) = call(&i.router, "viewer", "GET", "/generator", None).await;
        if g["generated"].as_u64().expect("generated") >= 500 {
            break;
        }
        assert!(Instant::now() < deadline, "the generator made too few views: {g}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, v) = call(&i.router, "operator", "DELETE", "/generator", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["running"], false);
    let generated = v["generated"].as_u64().expect("generated");
    settle(&i).await;
    let all = top(&i, "all", "exact", 100).await;
    assert_eq!(all["total_views"], generated, "{all}");
    let videos = ranked(&all);
    assert!(videos.len() <= 50 && videos.iter().all(|(v, _)| v.starts_with("vid-")), "{videos:?}");
    assert_eq!(top(&i, "minute", "exact", 1).await["total_views"], generated);
    stop(i).await;
}

// ---------------------------------------------------------------- bad input

/// Every bad request is a 4xx problem, and nothing it carried is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problems_and_counts_nothing() {
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().expect("data");
    let i = start(db.url(), data.path(), Arc::new(ManualClock::new(NOW_MS))).await;
    let view = |id: &str| json!({ "video_id": id });
    let many: Vec<Value> = (0..1_001).map(|_| view("a")).collect();
    let huge = format!("{{\"views\":[{{\"video_id\":\"{}\"}}]}}", "a".repeat(300 * 1024));
    let cases: Vec<(&str, &str, &str, Option<String>, StatusCode)> = vec![
        (
            "viewer",
            "POST",
            "/views",
            Some(json!({ "views": [] }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "viewer",
            "POST",
            "/views",
            Some(json!({ "views": many }).to_string()),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        ("viewer", "POST", "/views", Some(huge), StatusCode::PAYLOAD_TOO_LARGE),
        (
            "viewer",
            "POST",
            "/views",
            Some(json!({ "views": [view("a b")] }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "viewer",
            "POST",
            "/views",
            Some(json!({ "views": [view("")] }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "viewer",
            "POST",
            "/views",
            Some(json!({ "views": [view(&"x".repeat(65))] }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "viewer",
            "POST",
            "/views",
            Some(json!({ "views": [{ "video_id": "a", "at_ms": -1 }] }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "viewer",
            "POST",
            "/views",
            Some(json!({ "views": [{ "video_id": "a", "at_ms": "now" }] }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "viewer",
            "POST",
            "/views",
            Some(json!({ "views": [{ "video_id": "a", "extra": 1 }] }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "viewer",
            "POST",
            "/views",
            Some(json!({ "video_id": "a" }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("viewer", "POST", "/views", Some("{not json".to_owned()), StatusCode::BAD_REQUEST),
        (
            "",
            "POST",
            "/views",
            Some(json!({ "views": [view("a")] }).to_string()),
            StatusCode::UNAUTHORIZED,
        ),
        ("viewer", "GET", "/top?k=0", None, StatusCode::UNPROCESSABLE_ENTITY),
        ("viewer", "GET", "/top?k=101", None, StatusCode::UNPROCESSABLE_ENTITY),
        ("viewer", "GET", "/top?k=ten", None, StatusCode::BAD_REQUEST),
        ("viewer", "GET", "/top?window=week", None, StatusCode::BAD_REQUEST),
        ("viewer", "GET", "/top?mode=fast", None, StatusCode::BAD_REQUEST),
        ("viewer", "GET", "/top?limit=5", None, StatusCode::BAD_REQUEST),
        ("", "GET", "/top", None, StatusCode::UNAUTHORIZED),
        ("", "GET", "/stats", None, StatusCode::UNAUTHORIZED),
        ("viewer", "DELETE", "/generator", None, StatusCode::FORBIDDEN),
        (
            "operator",
            "POST",
            "/generator",
            Some(json!({ "rate_per_sec": 0 }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "operator",
            "POST",
            "/generator",
            Some(json!({ "rate_per_sec": 20_001 }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "operator",
            "POST",
            "/generator",
            Some(json!({ "videos": 0 }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "operator",
            "POST",
            "/generator",
            Some(json!({ "skew": 3.5 }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "operator",
            "POST",
            "/generator",
            Some(json!({ "skew": -1 }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (user, method, uri, body, expected) in cases {
        let shown = body.as_deref().map(|b| b.chars().take(80).collect::<String>());
        let (status, v) = call(&i.router, user, method, uri, body).await;
        assert_eq!(status, expected, "{method} {uri} {shown:?}: {v}");
    }
    // Times out of bounds are answered, and counted as refused, not as views.
    let now = NOW_MS as i64;
    let body = json!({ "views": [
        { "video_id": "ok", "at_ms": now },
        { "video_id": "future", "at_ms": now + 60_000 },
        { "video_id": "old", "at_ms": now - 3 * 3_600_000 },
    ]})
    .to_string();
    let (status, v) = call(&i.router, "viewer", "POST", "/views", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected_in_future"].as_u64(), v["rejected_too_old"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{v}"
    );
    settle(&i).await;
    let all = top(&i, "all", "exact", 10).await;
    assert_eq!(ranked(&all), [("ok".to_owned(), 1)], "{all}");
    let (_, stats) = call(&i.router, "viewer", "GET", "/stats", None).await;
    assert_eq!(
        (
            stats["accepted"].as_u64(),
            stats["rejected_in_future"].as_u64(),
            stats["rejected_too_old"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{stats}"
    );
    stop(i).await;
}
