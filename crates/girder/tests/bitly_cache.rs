//! The redirect path's cache: warm redirects skip the store, and a changed or
//! deleted link is never served stale beyond the documented bound on any
//! instance — the pub/sub latency with Redis, the L1 TTL without it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TestDb, app_with, bitly, get, post_json, send};
use girder::app::App;
use girder_core::services::{Service, require};
use girder_core::{Clock, ManualClock, SystemClock};
use serde_json::json;

async fn shorten(app: &App, url: &str) -> String {
    let r = post_json(app, "/api/bitly/urls", &json!({ "url": url })).await;
    assert_eq!(r.status, StatusCode::CREATED);
    r.json()["code"].as_str().expect("code").to_owned()
}

async fn location(app: &App, code: &str) -> Option<String> {
    get(app, &format!("/{code}")).await.header("location").map(str::to_owned)
}

async fn patch_url(app: &App, code: &str, url: &str) {
    let request = Request::patch(format!("/api/bitly/urls/{code}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({ "url": url }).to_string()))
        .expect("request");
    assert_eq!(send(app, request).await.status, StatusCode::OK);
}

#[tokio::test]
async fn warm_redirects_are_served_from_l1() {
    let db = TestDb::sqlite();
    let (app, systems) = app_with(&db, Arc::new(SystemClock), &[]).await;
    let code = shorten(&app, "https://example.com/warm").await;
    for _ in 0..10 {
        assert_eq!(location(&app, &code).await.as_deref(), Some("https://example.com/warm"));
    }
    let stats = bitly(&systems).cache_stats();
    assert_eq!(stats.loader_calls, 1, "one store read, then L1: {stats:?}");
    assert_eq!(stats.l1_hits, 9);
    let layers = get(&app, "/api/bitly/cache").await.json();
    assert_eq!(layers[0]["layer"], "l1");
    assert_eq!(layers[0]["hits"], 9);
}

/// A redirect answered from L1 (the server's fast path, which skips the router) looks
/// exactly like one answered through the `/{code}` route: status, destination, a
/// request id (generated, or the caller's echoed), clicks counted; and what the fast
/// path cannot answer (unknown, expired) still gets the route's problems.
#[tokio::test]
async fn l1_redirects_answer_like_routed_ones() {
    let db = TestDb::sqlite();
    let clock = ManualClock::new(SystemClock.now_ms());
    let (app, systems) = app_with(&db, Arc::new(clock.clone()), &[]).await;
    let code = shorten(&app, "https://example.com/same").await;
    let expiring = post_json(
        &app,
        "/api/bitly/urls",
        &json!({ "url": "https://example.com/soon", "expires_at": "2999-01-01T00:00:00Z" }),
    )
    .await
    .json()["code"]
        .as_str()
        .expect("code")
        .to_owned();
    let routed = get(&app, &format!("/{code}")).await; // an L1 miss: the route answers
    let fast = get(&app, &format!("/{code}")).await; // an L1 hit: the fast path answers
    assert_eq!(bitly(&systems).cache_stats().l1_hits, 1);
    for reply in [&routed, &fast] {
        assert_eq!(reply.status, StatusCode::FOUND);
        assert_eq!(reply.header("location"), Some("https://example.com/same"));
        assert_eq!(reply.header("x-request-id").map(str::len), Some(36), "a UUID");
        assert!(reply.body.is_empty());
    }
    assert_ne!(routed.header("x-request-id"), fast.header("x-request-id"));
    let traced = send(
        &app,
        Request::get(format!("/{code}"))
            .header("x-request-id", "caller-42")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(
        (traced.status, traced.header("x-request-id")),
        (StatusCode::FOUND, Some("caller-42"))
    );
    let head =
        send(&app, Request::head(format!("/{code}")).body(Body::empty()).expect("req")).await;
    assert_eq!(head.status, StatusCode::FOUND);
    bitly(&systems).flush_clicks().await.expect("flush");
    let stats = get(&app, &format!("/api/bitly/urls/{code}/stats")).await.json();
    assert_eq!(stats["clicks"], 4, "every redirect counted, routed or not");

    // Cached, then past its expiry: the fast path declines and the route says 410.
    assert_eq!(get(&app, &format!("/{expiring}")).await.status, StatusCode::FOUND);
    clock.set_ms(32_503_680_000_000); // 3000-01-01
    let gone = get(&app, &format!("/{expiring}")).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(gone.header("content-type"), Some("application/problem+json"));
    let unknown = get(&app, "/zzzzzzz").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/zzzzzzz").await.status, StatusCode::NOT_FOUND, "cached absence too");
}

/// Without Redis, a second instance keeps its cached copy until its L1 TTL runs out:
/// the documented bound, shown with a manual clock.
#[tokio::test]
async fn without_redis_other_instances_are_stale_at_most_one_ttl() {
    let db = TestDb::sqlite();
    let clock = ManualClock::new(SystemClock.now_ms());
    let flags = ["--bitly-cache-ttl-ms", "10000"];
    let (a, _) = app_with(&db, Arc::new(clock.clone()), &flags).await;
    let (b, _) = app_with(&db, Arc::new(clock.clone()), &flags).await;
    let code = shorten(&a, "https://example.com/v1").await;
    assert_eq!(location(&b, &code).await.as_deref(), Some("https://example.com/v1"));

    patch_url(&a, &code, "https://example.com/v2").await;
    assert_eq!(
        location(&a, &code).await.as_deref(),
        Some("https://example.com/v2"),
        "writer sees its write"
    );
    assert_eq!(
        location(&b, &code).await.as_deref(),
        Some("https://example.com/v1"),
        "b: within its TTL"
    );
    // TTL 10 s with ±10% jitter: past 11 s the old copy is gone.
    clock.advance(Duration::from_millis(11_001));
    assert_eq!(location(&b, &code).await.as_deref(), Some("https://example.com/v2"));
}

/// With Redis, an update or delete on one instance evicts the link from every
/// other instance's L1 through pub/sub, long before any TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_updates_and_deletes_reach_every_instance() {
    let Some(redis) =
        require(Service::Redis, "with_redis_updates_and_deletes_reach_every_instance")
    else {
        return;
    };
    for db in TestDb::all("with_redis_updates_and_deletes_reach_every_instance").await {
        // A TTL far longer than the test: only invalidation can explain a fresh read.
        let flags = ["--bitly-cache-ttl-ms", "3600000", "--redis-url", &redis];
        let (a, _) = app_with(&db, Arc::new(SystemClock), &flags).await;
        let (b, systems_b) = app_with(&db, Arc::new(SystemClock), &flags).await;
        let code = shorten(&a, "https://example.com/one").await;
        assert_eq!(location(&b, &code).await.as_deref(), Some("https://example.com/one"));
        // Shortening also announced the new code (to clear any cached absence); if that
        // announcement reaches b after b's first read, it evicts b's fresh copy once.
        // Either way b settles on serving the link from its L1.
        wait_until(|| async {
            location(&b, &code).await.as_deref() == Some("https://example.com/one")
                && bitly(&systems_b).cache_stats().l1_hits >= 1
        })
        .await;

        patch_url(&a, &code, "https://example.com/two").await;
        wait_until(|| async {
            location(&b, &code).await.as_deref() == Some("https://example.com/two")
        })
        .await;

        let deleted = send(
            &a,
            Request::delete(format!("/api/bitly/urls/{code}")).body(Body::empty()).expect("req"),
        )
        .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        wait_until(|| async { get(&b, &format!("/{code}")).await.status == StatusCode::NOT_FOUND })
            .await;
        db.drop_db().await;
    }
}

/// Polls `done` until it holds; the bound is generous, the typical wait is one
/// pub/sub round trip. This waits on another task's I/O, not on a clock.
async fn wait_until<F, Fut>(done: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done().await {
        assert!(Instant::now() < deadline, "other instance still stale after 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
