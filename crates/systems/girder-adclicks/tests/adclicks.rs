//! Ad Click Aggregator through its router and its library, on SQLite and PostgreSQL:
//! each impression counted once, per-minute aggregates from the stream, a pipeline
//! killed mid-stream and restarted without loss or double counting, reconciliation
//! repairing drift, and bad input answered with problems.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use girder_adclicks::{AdClicks, AdClicksConfig};
use girder_core::{Clock, SystemClock};
use girder_http::identity::{Role, test_bearer as bearer, test_tokens};
use girder_sql::{Db, PoolConfig};
use girder_system::{Context, Shutdown, System};
use girder_testkit::backends::TestDb;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn open_in(db: &str, data: &std::path::Path) -> Arc<AdClicks> {
    open_with(db, data, None, AdClicksConfig { checkpoint_ms: 50, ..AdClicksConfig::new() }).await
}

async fn open_with(
    db: &str,
    data: &std::path::Path,
    nats: Option<&str>,
    config: AdClicksConfig,
) -> Arc<AdClicks> {
    let pool = Db::connect(db, PoolConfig::default()).await.expect("database");
    girder_sql::migrate::run(&pool, girder_sql::migrate::server()).await.expect("migrations");
    girder_sql::migrate::run(&pool, girder_stream::sql::migrations()).await.expect("migrations");
    girder_sql::migrate::run(&pool, girder_adclicks::migrations()).await.expect("migrations");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut context = Context::new(pool, clock).with_data_dir(data);
    if let Some(url) = nats {
        context = context.with_nats(url);
    }
    // A killed instance's log writer lets go of its directory lock as it winds down
    // (a killed process, as it exits): a reopen waits for that, boundedly.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match AdClicks::open_with(&context, config.clone()).await {
            Ok(ads) => return ads,
            Err(e) if format!("{e:?}").contains("Locked") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("open adclicks: {e:?}"),
        }
    }
}

fn router(ads: &Arc<AdClicks>) -> Router {
    ads.api_router().layer(test_tokens().layer())
}

/// One request as `user` ("operator" is an operator, "" nobody): status, headers, JSON.
async fn call(
    router: &Router,
    user: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, header::HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    if !user.is_empty() {
        let role = if user == "operator" { Role::Operator } else { Role::User };
        request = request.header(header::AUTHORIZATION, bearer(user, role));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body)).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

async fn new_ad(router: &Router, owner: &str) -> i64 {
    let (status, _, ad) = call(
        router,
        owner,
        "POST",
        "/ads",
        Some(json!({"name": "Sale", "target_url": "https://shop.example/sale"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{ad}");
    ad["id"].as_i64().expect("id")
}

async fn impression(router: &Router, viewer: &str, ad: i64) -> String {
    let (status, _, imp) =
        call(router, viewer, "POST", &format!("/ads/{ad}/impressions"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{imp}");
    imp["click_url"].as_str().expect("url").trim_start_matches("/api/adclicks").to_owned()
}

async fn click(router: &Router, url: &str) -> String {
    let (status, headers, body) = call(router, "", "GET", url, None).await;
    assert_eq!(status, StatusCode::FOUND, "{body}");
    assert_eq!(headers[header::LOCATION], "https://shop.example/sale");
    headers["girder-click"].to_str().expect("ascii").to_owned()
}

async fn total(router: &Router, owner: &str, ad: i64) -> i64 {
    let (status, _, view) = call(router, owner, "GET", &format!("/ads/{ad}/clicks"), None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view["total"].as_i64().expect("total")
}

async fn wait_for_total(router: &Router, owner: &str, ad: i64, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = total(router, owner, ad).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "total {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_impression_is_counted_once_and_aggregated_per_minute() {
    for db in TestDb::all("each_impression_is_counted_once_and_aggregated_per_minute").await {
        let data = tempfile::tempdir().unwrap();
        let ads = open_in(db.url(), data.path()).await;
        let router = router(&ads);
        let (trigger, shutdown) = Shutdown::new();
        let run = tokio::spawn(Arc::clone(&ads).run(shutdown));
        let ad = new_ad(&router, "acme").await;
        let mut urls = Vec::new();
        for v in 0..30 {
            urls.push(impression(&router, &format!("viewer{v}"), ad).await);
        }
        for url in &urls {
            assert_eq!(click(&router, url).await, "counted");
        }
        // Every impression clicked again: redirected, never counted.
        for url in &urls {
            assert_eq!(click(&router, url).await, "duplicate");
        }
        wait_for_total(&router, "acme", ad, 30).await;
        let (status, _, stats) = call(&router, "operator", "GET", "/stats", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (stats["counted"].as_u64(), stats["duplicates"].as_u64()),
            (Some(30), Some(30)),
            "{stats}"
        );
        assert_eq!(
            stats["bloom_maybe"].as_u64(),
            Some(30),
            "every repeat was caught by the filter first"
        );
        trigger.fire();
        run.await.unwrap();
        // The exact count from the raw clicks agrees.
        let exact = ads.store().exact(0, i64::MAX).await.unwrap();
        assert_eq!(exact.values().sum::<i64>(), 30);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_killed_mid_stream_restarts_without_loss_or_double_counting() {
    for db in
        TestDb::all("a_pipeline_killed_mid_stream_restarts_without_loss_or_double_counting").await
    {
        let data = tempfile::tempdir().unwrap();
        let mut expected = 0;
        let mut ad = 0;
        for round in 0..3 {
            let ads = open_in(db.url(), data.path()).await;
            let router = router(&ads);
            if round == 0 {
                ad = new_ad(&router, "acme").await;
            }
            let (_trigger, shutdown) = Shutdown::new();
            let run = tokio::spawn(Arc::clone(&ads).run(shutdown));
            for v in 0..40 {
                let url = impression(&router, &format!("r{round}v{v}"), ad).await;
                assert_eq!(click(&router, &url).await, "counted");
                expected += 1;
                if v == 20 {
                    // Let a checkpoint or two land mid-round.
                    tokio::time::sleep(Duration::from_millis(120)).await;
                }
            }
            // Killed: the pipeline stops where it is, without its last flush, and the
            // instance's leases are left to expire (a new epoch takes over).
            run.abort();
            let _ = run.await;
            drop(router);
            // The aborted runners let go of the instance (and its log) as they unwind.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Arc::strong_count(&ads) > 1 {
                assert!(Instant::now() < deadline, "the killed pipeline still holds the instance");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            drop(ads);
        }
        let ads = open_in(db.url(), data.path()).await;
        let router = router(&ads);
        let (trigger, shutdown) = Shutdown::new();
        let run = tokio::spawn(Arc::clone(&ads).run(shutdown));
        wait_for_total(&router, "acme", ad, expected).await;
        // Stream counts alone (no reconciliation ran) equal the raw clicks, per minute.
        let exact = ads.store().exact(0, i64::MAX).await.unwrap();
        let streamed = ads.store().counted(0, i64::MAX, false).await.unwrap();
        assert_eq!(streamed, exact);
        trigger.fire();
        run.await.unwrap();
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_reports_and_repairs_clicks_the_stream_missed() {
    for db in TestDb::all("reconciliation_reports_and_repairs_clicks_the_stream_missed").await {
        let data = tempfile::tempdir().unwrap();
        let ads = open_in(db.url(), data.path()).await;
        let router = router(&ads);
        let ad = new_ad(&router, "acme").await;
        // Clicks recorded two hours ago by an instance that died before logging them.
        let old = ads.closed_before() - 60 * 60_000;
        for i in 0..5 {
            assert!(
                ads.store().record_click(&format!("{i:032x}"), ad, "v", old + i).await.unwrap()
            );
        }
        let from = old - 60_000;
        let to = ads.closed_before();
        let uri = format!("/reconcile?from={from}&to={to}");
        let (status, _, report) = call(&router, "operator", "POST", &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(
            (report["drifted"].as_u64(), report["drift"].as_i64(), report["repaired"].as_u64()),
            (Some(1), Some(5), Some(1)),
            "{report}"
        );
        let (_, _, view) = call(
            &router,
            "acme",
            "GET",
            &format!("/ads/{ad}/clicks?from={from}&to={to}&granularity=hour"),
            None,
        )
        .await;
        assert_eq!(view["total"].as_i64(), Some(5), "{view}");
        // Run again: the drift is still there in the stream's rows, already repaired.
        let (_, _, again) = call(&router, "operator", "POST", &uri, None).await;
        assert_eq!(
            (again["drifted"].as_u64(), again["repaired"].as_u64()),
            (Some(1), Some(0)),
            "{again}"
        );
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problems() {
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let ads = open_in(db.url(), data.path()).await;
    let router = router(&ads);
    let ad = new_ad(&router, "acme").await;
    let url = impression(&router, "v", ad).await;
    let forged = {
        let mut t = url.clone();
        let last = t.pop().unwrap();
        t.push(if last == 'A' { 'B' } else { 'A' });
        t
    };
    let long_url = format!("https://x.example/{}", "a".repeat(2_100));
    let cases: Vec<(&str, &str, String, Option<Value>, StatusCode)> = vec![
        (
            "acme",
            "POST",
            "/ads".into(),
            Some(json!({"name": "", "target_url": "https://a.example"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "acme",
            "POST",
            "/ads".into(),
            Some(json!({"name": "x\u{7}", "target_url": "https://a.example"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "acme",
            "POST",
            "/ads".into(),
            Some(json!({"name": "x", "target_url": "javascript:alert(1)"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "acme",
            "POST",
            "/ads".into(),
            Some(json!({"name": "x", "target_url": long_url})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "acme",
            "POST",
            "/ads".into(),
            Some(json!({"name": "x", "target_url": "https://a.example", "extra": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "",
            "POST",
            "/ads".into(),
            Some(json!({"name": "x", "target_url": "https://a.example"})),
            StatusCode::UNAUTHORIZED,
        ),
        ("", "GET", forged, None, StatusCode::BAD_REQUEST),
        ("", "GET", "/click/not-a-token".into(), None, StatusCode::BAD_REQUEST),
        ("", "GET", format!("/click/{}", "A".repeat(400)), None, StatusCode::BAD_REQUEST),
        ("v", "POST", "/ads/999999/impressions".into(), None, StatusCode::NOT_FOUND),
        ("v", "POST", "/ads/abc/impressions".into(), None, StatusCode::BAD_REQUEST),
        ("other", "GET", format!("/ads/{ad}"), None, StatusCode::FORBIDDEN),
        ("other", "GET", format!("/ads/{ad}/clicks"), None, StatusCode::FORBIDDEN),
        (
            "acme",
            "GET",
            format!("/ads/{ad}/clicks?from=10&to=5"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "acme",
            "GET",
            format!("/ads/{ad}/clicks?from=0&to=999999999999&granularity=minute"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "acme",
            "GET",
            format!("/ads/{ad}/clicks?granularity=week"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        ("acme", "GET", "/ads?limit=0".into(), None, StatusCode::UNPROCESSABLE_ENTITY),
        ("acme", "GET", "/stats".into(), None, StatusCode::FORBIDDEN),
        ("acme", "POST", "/reconcile".into(), None, StatusCode::FORBIDDEN),
        (
            "operator",
            "POST",
            "/reconcile?from=10&to=5".into(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (user, method, uri, body, want) in cases {
        let (status, headers, problem) = call(&router, user, method, &uri, body).await;
        assert_eq!(status, want, "{method} {uri}: {problem}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json", "{method} {uri}");
    }
    // Nothing above was counted; the genuine impression still counts once.
    assert_eq!(click(&router, &url).await, "counted");
    assert_eq!(ads.store().exact(0, i64::MAX).await.unwrap().values().sum::<i64>(), 1);
}

/// With NATS, instances share one click log and one pipeline: two instances split its
/// partitions; when one is killed, the other takes its partitions over once their
/// leases run out, and the counts still equal the raw clicks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_a_killed_instances_partitions_are_taken_over() {
    let test = "with_nats_a_killed_instances_partitions_are_taken_over";
    let Some(url) = girder_core::services::require(girder_core::services::Service::Nats, test)
    else {
        return;
    };
    let Some(db) = TestDb::postgres(test).await else { return };
    let config = AdClicksConfig {
        checkpoint_ms: 50,
        lease_ms: 1_000,
        heartbeat_ms: 100,
        partitions: 4,
        log_name: format!("adclicks-test-{}", std::process::id()),
        ..AdClicksConfig::new()
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open_with(db.url(), dir_a.path(), Some(&url), config.clone()).await;
    let b = open_with(db.url(), dir_b.path(), Some(&url), config.clone()).await;
    let (router_a, router_b) = (router(&a), router(&b));
    let (_trigger_a, shutdown_a) = Shutdown::new();
    let (trigger_b, shutdown_b) = Shutdown::new();
    let run_a = tokio::spawn(Arc::clone(&a).run(shutdown_a));
    let run_b = tokio::spawn(Arc::clone(&b).run(shutdown_b));
    // Clicks are partitioned by ad: eight ads spread them over the partitions.
    let mut ads = Vec::new();
    for _ in 0..8 {
        ads.push(new_ad(&router_a, "acme").await);
    }
    let click_on = |router: Router, v: usize, ad: i64| async move {
        let url = impression(&router, &format!("v{v}"), ad).await;
        assert_eq!(click(&router, &url).await, "counted");
    };
    for v in 0..40 {
        let router = if v % 2 == 0 { &router_a } else { &router_b };
        click_on(router.clone(), v, ads[v % 8]).await;
    }
    for &ad in &ads {
        wait_for_total(&router_a, "acme", ad, 5).await;
    }
    let owners = |rows: Vec<girder_stream::sql::PartitionRow>| {
        rows.into_iter().filter_map(|r| r.owner).collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        owners(b.stream().partitions().await.unwrap()).len(),
        2,
        "both instances hold partitions"
    );
    // A is killed: its runners stop where they are and its leases are left to expire.
    run_a.abort();
    let _ = run_a.await;
    for v in 40..80 {
        click_on(router_b.clone(), v, ads[v % 8]).await;
    }
    for &ad in &ads {
        wait_for_total(&router_b, "acme", ad, 10).await;
    }
    assert_eq!(owners(b.stream().partitions().await.unwrap()).len(), 1, "B holds every partition");
    let exact = b.store().exact(0, i64::MAX).await.unwrap();
    assert_eq!(b.store().counted(0, i64::MAX, false).await.unwrap(), exact);
    assert_eq!(exact.values().sum::<i64>(), 80);
    trigger_b.fire();
    run_b.await.unwrap();
    let client = async_nats::connect(&url).await.unwrap();
    let _ = async_nats::jetstream::new(client)
        .delete_stream(format!("girder_stream_{}", config.log_name))
        .await;
    db.drop_db().await;
}
