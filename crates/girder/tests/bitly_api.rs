//! Bit.ly through its HTTP surface, in-process, against every storage engine:
//! shorten, redirect, stats, aliases, expiry, and the problem every bad input gets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TestDb, app, app_with, bitly, get, post_json, send};
use girder_core::{Clock, ManualClock, SystemClock};
use serde_json::json;

#[tokio::test]
async fn shorten_redirect_and_count_clicks() {
    for db in TestDb::all("shorten_redirect_and_count_clicks").await {
        let (app, systems) = app(&db).await;
        let created =
            post_json(&app, "/api/bitly/urls", &json!({"url": "https://example.com/a?b=c"})).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", db.engine());
        let body = created.json();
        let code = body["code"].as_str().expect("code").to_owned();
        assert_eq!(code.len(), 7);
        assert_eq!(body["short_url"], format!("http://sho.rt/{code}"));
        assert_eq!(created.header("location"), Some(format!("http://sho.rt/{code}").as_str()));

        for _ in 0..3 {
            let hop = get(&app, &format!("/{code}")).await;
            assert_eq!(hop.status, StatusCode::FOUND);
            assert_eq!(hop.header("location"), Some("https://example.com/a?b=c"));
        }
        let stats = get(&app, &format!("/api/bitly/urls/{code}/stats")).await.json();
        assert_eq!(stats["clicks"], 3);
        assert_eq!(stats["clicks_buffered"], 3);

        // After a flush the counts live in the store, not the buffer.
        assert_eq!(bitly(&systems).flush_clicks().await.expect("flush"), 1);
        let stats = get(&app, &format!("/api/bitly/urls/{code}/stats")).await.json();
        assert_eq!(stats["clicks"], 3);
        assert_eq!(stats["clicks_buffered"], 0);

        let view = get(&app, &format!("/api/bitly/urls/{code}")).await;
        assert_eq!(view.status, StatusCode::OK);
        assert_eq!(view.json()["url"], "https://example.com/a?b=c");
        db.drop_db().await;
    }
}

#[tokio::test]
async fn sequential_codes_are_distinct_and_ordered() {
    for db in TestDb::all("sequential_codes_are_distinct_and_ordered").await {
        let (app, _) = app(&db).await;
        let mut codes = Vec::new();
        for i in 0..50 {
            let r =
                post_json(&app, "/api/bitly/urls", &json!({"url": format!("https://e.com/{i}")}))
                    .await;
            assert_eq!(r.status, StatusCode::CREATED);
            codes.push(r.json()["code"].as_str().expect("code").to_owned());
        }
        let mut sorted = codes.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, codes, "{}: fixed-width base62 codes sort in issue order", db.engine());
        db.drop_db().await;
    }
}

#[tokio::test]
async fn scrambled_codes_are_unique_and_not_sequential() {
    let db = TestDb::sqlite();
    let (app, _) = app_with(&db, Arc::new(SystemClock), &["--bitly-codes", "scrambled"]).await;
    let mut codes = Vec::new();
    for i in 0..200 {
        let r =
            post_json(&app, "/api/bitly/urls", &json!({"url": format!("https://e.com/{i}")})).await;
        assert_eq!(r.status, StatusCode::CREATED);
        let code = r.json()["code"].as_str().expect("code").to_owned();
        assert_eq!(code.len(), 7);
        let hop = get(&app, &format!("/{code}")).await;
        assert_eq!(hop.header("location"), Some(format!("https://e.com/{i}").as_str()));
        codes.push(code);
    }
    let mut unique = codes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), codes.len());
    assert_ne!(unique, codes, "scrambled codes must not come out in order");
}

#[tokio::test]
async fn aliases_are_validated_and_unique() {
    for db in TestDb::all("aliases_are_validated_and_unique").await {
        let (app, _) = app(&db).await;
        let ok = post_json(
            &app,
            "/api/bitly/urls",
            &json!({"url": "https://a.example", "alias": "launch-2026"}),
        )
        .await;
        assert_eq!(ok.status, StatusCode::CREATED);
        assert_eq!(ok.json()["code"], "launch-2026");
        let taken = post_json(
            &app,
            "/api/bitly/urls",
            &json!({"url": "https://b.example", "alias": "launch-2026"}),
        )
        .await;
        assert_eq!(taken.status, StatusCode::CONFLICT);
        assert_eq!(taken.json()["type"], "/problems/alias-taken");
        // The first link is untouched by the failed attempt.
        let hop = get(&app, "/launch-2026").await;
        assert_eq!(hop.header("location"), Some("https://a.example/"));
        db.drop_db().await;
    }
}

/// Concurrent shortens share batched INSERTs: each 201 names its own stored link, and
/// of several requests racing for one alias (in one batch or across batches) exactly
/// one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_shortens_are_batched_and_each_answer_is_its_own() {
    for db in TestDb::all("concurrent_shortens_are_batched_and_each_answer_is_its_own").await {
        let (app, systems) = app(&db).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200 {
            let app = app.clone();
            tasks.spawn(async move {
                let body = if i % 20 == 0 {
                    json!({"url": format!("https://race.example/{i}"), "alias": "contested"})
                } else {
                    json!({"url": format!("https://many.example/{i}")})
                };
                (i, post_json(&app, "/api/bitly/urls", &body).await)
            });
        }
        let mut codes = std::collections::HashSet::new();
        let mut alias_winner = None;
        while let Some(done) = tasks.join_next().await {
            let (i, reply) = done.expect("task");
            if i % 20 == 0 {
                match reply.status {
                    StatusCode::CREATED => {
                        assert!(alias_winner.replace(i).is_none(), "{}: two winners", db.engine());
                    }
                    StatusCode::CONFLICT => {
                        assert_eq!(reply.json()["type"], "/problems/alias-taken")
                    }
                    other => panic!("{}: alias request {i}: {other}", db.engine()),
                }
                continue;
            }
            assert_eq!(reply.status, StatusCode::CREATED, "{}: {i}", db.engine());
            let code = reply.json()["code"].as_str().expect("code").to_owned();
            let hop = get(&app, &format!("/{code}")).await;
            let want = format!("https://many.example/{i}");
            assert_eq!(hop.header("location"), Some(want.as_str()), "{}", db.engine());
            assert!(codes.insert(code), "codes are distinct");
        }
        let winner = alias_winner.expect("one alias request won");
        let hop = get(&app, "/contested").await;
        let want = format!("https://race.example/{winner}");
        assert_eq!(hop.header("location"), Some(want.as_str()));
        let stats = bitly(&systems).link_writer_stats();
        assert_eq!(stats.items, 200, "{}: every shorten went through the writer", db.engine());
        assert!(stats.batches < 200, "{}: shortens shared batches ({stats:?})", db.engine());
        db.drop_db().await;
    }
}

#[tokio::test]
async fn expired_links_answer_410() {
    for db in TestDb::all("expired_links_answer_410").await {
        let clock = ManualClock::new(SystemClock.now_ms());
        let (app, _) = app_with(&db, Arc::new(clock.clone()), &[]).await;
        let in_a_minute = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(clock.now_ms() + 60_000) * 1_000_000,
        )
        .expect("time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
        let r = post_json(
            &app,
            "/api/bitly/urls",
            &json!({"url": "https://e.com", "expires_at": in_a_minute}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let code = r.json()["code"].as_str().expect("code").to_owned();
        assert_eq!(get(&app, &format!("/{code}")).await.status, StatusCode::FOUND);
        clock.advance(Duration::from_secs(59));
        assert_eq!(get(&app, &format!("/{code}")).await.status, StatusCode::FOUND);
        clock.advance(Duration::from_secs(1));
        let gone = get(&app, &format!("/{code}")).await;
        assert_eq!(gone.status, StatusCode::GONE);
        assert_eq!(gone.json()["type"], "/problems/expired");
        db.drop_db().await;
    }
}

#[tokio::test]
async fn permanent_redirects_when_configured() {
    let db = TestDb::sqlite();
    let (app, _) = app_with(&db, Arc::new(SystemClock), &["--bitly-redirect", "permanent"]).await;
    let code =
        post_json(&app, "/api/bitly/urls", &json!({"url": "https://e.com"})).await.json()["code"]
            .as_str()
            .expect("code")
            .to_owned();
    assert_eq!(get(&app, &format!("/{code}")).await.status, StatusCode::MOVED_PERMANENTLY);
}

/// One row per bad input: what is sent, the status, and the problem type.
#[tokio::test]
async fn bad_input_gets_a_problem_never_a_5xx() {
    let db = TestDb::sqlite();
    let (app, _) = app(&db).await;
    let long_url = format!("https://e.com/{}", "a".repeat(2_100));
    let huge_body = format!("{{\"url\": \"https://e.com/{}\"}}", "a".repeat(20_000));
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "javascript url",
            json_post(&json!({"url": "javascript:alert(1)"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-url",
        ),
        (
            "data url",
            json_post(&json!({"url": "data:text/html,hi"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-url",
        ),
        (
            "relative url",
            json_post(&json!({"url": "/just/a/path"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-url",
        ),
        (
            "too long url",
            json_post(&json!({"url": long_url}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "url-too-long",
        ),
        (
            "bad alias chars",
            json_post(&json!({"url": "https://e.com", "alias": "a/b"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-alias",
        ),
        (
            "short alias",
            json_post(&json!({"url": "https://e.com", "alias": "ab"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-alias",
        ),
        (
            "reserved alias",
            json_post(&json!({"url": "https://e.com", "alias": "healthz"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-alias",
        ),
        (
            "reserved alias, other case",
            json_post(&json!({"url": "https://e.com", "alias": "MeTrIcS"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-alias",
        ),
        (
            "past expiry",
            json_post(
                &json!({"url": "https://e.com", "expires_at": "2001-01-01T00:00:00Z"}).to_string(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-expiry",
        ),
        (
            "garbage expiry",
            json_post(&json!({"url": "https://e.com", "expires_at": "tomorrow"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-expiry",
        ),
        ("malformed json", json_post("{\"url\": "), StatusCode::BAD_REQUEST, "malformed-json"),
        (
            "wrong shape",
            json_post("{\"url\": 5}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
        ),
        ("missing url", json_post("{}"), StatusCode::UNPROCESSABLE_ENTITY, "invalid-body"),
        (
            "unknown field",
            json_post("{\"url\": \"https://e.com\", \"x\": 1}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
        ),
        (
            "wrong content type",
            Request::post("/api/bitly/urls")
                .header("content-type", "text/plain")
                .body(Body::from("https://e.com"))
                .expect("req"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        ),
        (
            "no content type",
            Request::post("/api/bitly/urls").body(Body::from("{}")).expect("req"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        ),
        ("oversized body", json_post(&huge_body), StatusCode::PAYLOAD_TOO_LARGE, "body-too-large"),
        (
            "unknown code",
            Request::get("/zzzzzzz").body(Body::empty()).expect("req"),
            StatusCode::NOT_FOUND,
            "unknown-code",
        ),
        (
            "impossible code",
            Request::get("/%F0%9F%92%A9").body(Body::empty()).expect("req"),
            StatusCode::NOT_FOUND,
            "unknown-code",
        ),
        (
            "unknown code stats",
            Request::get("/api/bitly/urls/nope123/stats").body(Body::empty()).expect("req"),
            StatusCode::NOT_FOUND,
            "unknown-code",
        ),
        (
            "unknown route",
            Request::get("/a/b/c").body(Body::empty()).expect("req"),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            "wrong method",
            Request::delete("/api/bitly/urls").body(Body::empty()).expect("req"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
        ),
        (
            "reserved path is not a code",
            Request::get("/api").body(Body::empty()).expect("req"),
            StatusCode::NOT_FOUND,
            "unknown-code",
        ),
    ];
    for (name, request, status, problem) in cases {
        let reply = send(&app, request).await;
        assert_eq!(reply.status, status, "{name}: {}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{name}");
        let body = reply.json();
        assert_eq!(body["type"], format!("/problems/{problem}"), "{name}: {body}");
        assert_eq!(body["status"], status.as_u16(), "{name}");
    }
}

fn json_post(body: &str) -> Request<Body> {
    Request::post("/api/bitly/urls")
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request")
}

#[tokio::test]
async fn operational_endpoints() {
    let db = TestDb::sqlite();
    let (app, systems) = app(&db).await;
    assert_eq!(get(&app, "/healthz").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/readyz").await.status, StatusCode::OK);
    let _ = get(&app, "/healthz").await;
    let code = post_json(&app, "/api/bitly/urls", &json!({"url": "https://e.com/m"})).await.json()
        ["code"]
        .as_str()
        .expect("code")
        .to_owned();
    assert_eq!(get(&app, &format!("/{code}")).await.status, StatusCode::FOUND);
    // Redirects are counted with their clicks, when the click buffer flushes.
    bitly(&systems).flush_clicks().await.expect("flush");
    let metrics = get(&app, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("girder_http_requests_total"), "{text}");
    assert!(text.contains("girder_bitly_redirects_total"), "{text}");
    let openapi = get(&app, "/openapi.json").await.json();
    for path in ["/api/bitly/urls", "/{code}", "/api/bitly/urls/{code}/stats", "/healthz"] {
        assert!(openapi["paths"][path].is_object(), "openapi lacks {path}");
    }
    let systems = get(&app, "/api/systems").await.json();
    assert_eq!(systems.as_array().map(Vec::len), Some(16));
    let page = get(&app, "/").await;
    assert!(String::from_utf8_lossy(&page.body).contains("/dashboard/bitly"));
    let page = get(&app, "/dashboard/bitly").await;
    assert!(String::from_utf8_lossy(&page.body).contains("id=\"shorten\""));
    let css = get(&app, "/assets/app.css").await;
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    let reply = get(&app, "/healthz").await;
    assert!(reply.header("x-request-id").is_some_and(|id| !id.is_empty()));
}

async fn patch_json(app: &girder::app::App, path: &str, body: &serde_json::Value) -> common::Reply {
    let request = Request::patch(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    send(app, request).await
}

#[tokio::test]
async fn links_can_be_updated_and_deleted() {
    for db in TestDb::all("links_can_be_updated_and_deleted").await {
        let (app, _) = app(&db).await;
        let code = post_json(&app, "/api/bitly/urls", &json!({"url": "https://old.example/"}))
            .await
            .json()["code"]
            .as_str()
            .expect("code")
            .to_owned();
        assert_eq!(
            get(&app, &format!("/{code}")).await.header("location"),
            Some("https://old.example/")
        );

        let updated = patch_json(
            &app,
            &format!("/api/bitly/urls/{code}"),
            &json!({"url": "https://new.example/"}),
        )
        .await;
        assert_eq!(updated.status, StatusCode::OK, "{}", db.engine());
        assert_eq!(
            get(&app, &format!("/{code}")).await.header("location"),
            Some("https://new.example/")
        );

        let past = patch_json(
            &app,
            &format!("/api/bitly/urls/{code}"),
            &json!({"expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
        assert_eq!(past.status, StatusCode::UNPROCESSABLE_ENTITY);
        let bad = patch_json(
            &app,
            &format!("/api/bitly/urls/{code}"),
            &json!({"url": "javascript:alert(1)"}),
        )
        .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        // Failed updates changed nothing.
        assert_eq!(
            get(&app, &format!("/{code}")).await.header("location"),
            Some("https://new.example/")
        );

        let deleted = send(
            &app,
            Request::delete(format!("/api/bitly/urls/{code}")).body(Body::empty()).expect("req"),
        )
        .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert_eq!(get(&app, &format!("/{code}")).await.status, StatusCode::NOT_FOUND);
        let again = send(
            &app,
            Request::delete(format!("/api/bitly/urls/{code}")).body(Body::empty()).expect("req"),
        )
        .await;
        assert_eq!(again.status, StatusCode::NOT_FOUND);
        let missing =
            patch_json(&app, "/api/bitly/urls/nope123", &json!({"url": "https://x.example"})).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        db.drop_db().await;
    }
}
