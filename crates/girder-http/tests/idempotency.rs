//! The Idempotency-Key layer on both engines: one execution per caller and key, the
//! stored answer replayed byte for byte, a different request under a used key
//! refused, concurrent duplicates told to retry, unknown outcomes released, and
//! expired records taken over and purged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use girder_core::ManualClock;
use girder_http::idempotency::{Idempotency, IdempotencyKey};
use girder_http::identity::{Caller, Role, test_bearer, test_tokens};
use girder_sql::{Db, PoolConfig};
use girder_testkit::backends::TestDb;
use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tower::ServiceExt;

const T0: u64 = 1_800_000_000_000;

struct Handler {
    runs: AtomicU64,
    /// `"slow"` bodies take a permit before answering.
    gate: Semaphore,
}

impl Default for Handler {
    fn default() -> Self {
        Self { runs: AtomicU64::new(0), gate: Semaphore::new(0) }
    }
}

/// Answers by its body: `decline` 402, `fail` 500, `slow` waits on the gate, else 201
/// with a run number in the body and a header.
async fn charge(
    handler: Arc<Handler>,
    caller: Caller,
    key: Option<IdempotencyKey>,
    body: String,
) -> Response {
    let run = handler.runs.fetch_add(1, Ordering::SeqCst) + 1;
    match body.as_str() {
        "decline" => return (StatusCode::PAYMENT_REQUIRED, "declined").into_response(),
        "fail" => return (StatusCode::INTERNAL_SERVER_ERROR, "lost").into_response(),
        "slow" => handler.gate.acquire().await.expect("open").forget(),
        _ => {}
    }
    let key = key.map_or_else(|| "-".to_owned(), |k| k.0);
    let body = format!("{{\"run\":{run},\"caller\":\"{}\",\"key\":\"{key}\"}}", caller.id);
    (StatusCode::CREATED, [("x-run", run.to_string())], body).into_response()
}

fn app(records: &Idempotency, handler: &Arc<Handler>) -> Router {
    let (a, b) = (handler.clone(), handler.clone());
    Router::new()
        .route(
            "/required",
            post(move |caller: Caller, key: IdempotencyKey, body: String| {
                charge(a.clone(), caller, Some(key), body)
            })
            .route_layer(records.required()),
        )
        .route(
            "/optional",
            post(move |caller: Caller, body: String| charge(b.clone(), caller, None, body))
                .route_layer(records.optional()),
        )
        .layer(test_tokens().layer())
}

struct Reply {
    status: StatusCode,
    content_type: Option<String>,
    replayed: bool,
    run: Option<String>,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn slug(&self) -> String {
        let value: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        value["type"].as_str().unwrap_or("").trim_start_matches("/problems/").to_owned()
    }
}

async fn send(
    app: &Router,
    path: &str,
    user: Option<&str>,
    key: Option<&str>,
    body: &str,
) -> Reply {
    let mut request = Request::post(path);
    if let Some(user) = user {
        request = request.header("authorization", test_bearer(user, Role::User));
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response =
        app.clone().oneshot(request.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let (status, run, retry_after, replayed) = {
        let header =
            |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        (response.status(), header("x-run"), header("retry-after"), header("idempotent-replayed"))
    };
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let replayed = replayed.is_some();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Reply { status, content_type, replayed, run, retry_after, body }
}

async fn setup(db: &TestDb, clock: &ManualClock) -> (Db, Idempotency) {
    let pool = Db::connect(db.url(), PoolConfig::default()).await.expect("database");
    girder_sql::migrate::run(&pool, girder_sql::migrate::server()).await.expect("migrations");
    let records = Idempotency::new(pool.clone(), Arc::new(clock.clone()))
        .with_pending_ttl_ms(5_000)
        .with_retention_ms(60_000);
    (pool, records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_runs_once_and_replays_its_answer() {
    for db in TestDb::all("one_key_runs_once_and_replays_its_answer").await {
        let clock = ManualClock::new(T0);
        let (_pool, records) = setup(&db, &clock).await;
        let handler = Arc::new(Handler::default());
        let app = app(&records, &handler);
        let engine = db.engine();

        let first = send(&app, "/required", Some("amy"), Some("k1"), "{}").await;
        assert_eq!((first.status, first.replayed), (StatusCode::CREATED, false), "{engine}");
        let again = send(&app, "/required", Some("amy"), Some("k1"), "{}").await;
        assert_eq!(again.status, StatusCode::CREATED, "{engine}");
        assert!(again.replayed, "{engine}: marked as replayed");
        assert_eq!((&again.body, &again.run), (&first.body, &first.run), "{engine}: same answer");
        assert_eq!(again.content_type, first.content_type, "{engine}: same content type");
        assert_eq!(
            again.content_type.as_deref(),
            Some("text/plain; charset=utf-8"),
            "{engine}: one content type, the handler's"
        );
        assert_eq!(handler.runs.load(Ordering::SeqCst), 1, "{engine}: ran once");

        // The same key for another body or another path names another request: 422.
        let other_body = send(&app, "/required", Some("amy"), Some("k1"), "{\"x\":1}").await;
        assert_eq!(other_body.status, StatusCode::UNPROCESSABLE_ENTITY, "{engine}");
        assert_eq!(other_body.slug(), "idempotency-key-reused");
        let other_path = send(&app, "/optional", Some("amy"), Some("k1"), "{}").await;
        assert_eq!(other_path.status, StatusCode::UNPROCESSABLE_ENTITY, "{engine}");
        assert_eq!(handler.runs.load(Ordering::SeqCst), 1, "{engine}");

        // Keys are the caller's own: bob's k1 is a different request.
        let bob = send(&app, "/required", Some("bob"), Some("k1"), "{}").await;
        assert_eq!((bob.status, bob.replayed), (StatusCode::CREATED, false), "{engine}");
        assert!(String::from_utf8_lossy(&bob.body).contains("\"caller\":\"bob\""));
        assert_eq!(handler.runs.load(Ordering::SeqCst), 2, "{engine}");

        // A definite refusal is stored like a success.
        let declined = send(&app, "/required", Some("amy"), Some("k2"), "decline").await;
        assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED, "{engine}");
        let replayed = send(&app, "/required", Some("amy"), Some("k2"), "decline").await;
        assert_eq!((replayed.status, replayed.replayed), (StatusCode::PAYMENT_REQUIRED, true));
        assert_eq!(handler.runs.load(Ordering::SeqCst), 3, "{engine}");

        // An unknown outcome releases the key: the retry runs again.
        let failed = send(&app, "/required", Some("amy"), Some("k3"), "fail").await;
        assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR, "{engine}");
        let retried = send(&app, "/required", Some("amy"), Some("k3"), "fail").await;
        assert_eq!((retried.status, retried.replayed), (StatusCode::INTERNAL_SERVER_ERROR, false));
        assert_eq!(handler.runs.load(Ordering::SeqCst), 5, "{engine}: ran twice");
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_and_missing_keys_get_problems_and_anonymous_calls_pass() {
    for db in TestDb::all("bad_and_missing_keys_get_problems_and_anonymous_calls_pass").await {
        let clock = ManualClock::new(T0);
        let (_pool, records) = setup(&db, &clock).await;
        let handler = Arc::new(Handler::default());
        let app = app(&records, &handler);

        let missing = send(&app, "/required", Some("amy"), None, "{}").await;
        assert_eq!(
            (missing.status, missing.slug().as_str()),
            (StatusCode::BAD_REQUEST, "idempotency-key-missing")
        );
        for bad in ["has space", &"k".repeat(129)] {
            let reply = send(&app, "/required", Some("amy"), Some(bad), "{}").await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert_eq!(reply.slug(), "invalid-idempotency-key");
        }
        let too_big = "x".repeat(girder_http::idempotency::BODY_BYTES_MAX + 1);
        let reply = send(&app, "/required", Some("amy"), Some("big"), &too_big).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(handler.runs.load(Ordering::SeqCst), 0, "{}: nothing ran", db.engine());

        // Where keys are optional, a request without one runs every time.
        for _ in 0..2 {
            let reply = send(&app, "/optional", Some("amy"), None, "{}").await;
            assert_eq!((reply.status, reply.replayed), (StatusCode::CREATED, false));
        }
        assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
        // Without a token the layer steps aside and the handler refuses.
        let anonymous = send(&app, "/required", None, Some("k1"), "{}").await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_in_flight_is_told_to_retry_and_orphans_are_taken_over() {
    for db in TestDb::all("a_duplicate_in_flight_is_told_to_retry_and_orphans_are_taken_over").await
    {
        let clock = ManualClock::new(T0);
        let (_pool, records) = setup(&db, &clock).await;
        let handler = Arc::new(Handler::default());
        let app = app(&records, &handler);
        let engine = db.engine();

        // The first holds the key while it waits on the gate; eight duplicates get 409.
        let slow = tokio::spawn({
            let app = app.clone();
            async move { send(&app, "/required", Some("amy"), Some("slow-1"), "slow").await }
        });
        while handler.runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let mut duplicates = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let app = app.clone();
            duplicates.spawn(async move {
                send(&app, "/required", Some("amy"), Some("slow-1"), "slow").await
            });
        }
        while let Some(reply) = duplicates.join_next().await {
            let reply = reply.unwrap();
            assert_eq!(reply.status, StatusCode::CONFLICT, "{engine}");
            assert_eq!(reply.slug(), "request-in-progress");
            assert_eq!(reply.retry_after.as_deref(), Some("1"));
        }
        handler.gate.add_permits(1);
        let first = slow.await.unwrap();
        assert_eq!(first.status, StatusCode::CREATED, "{engine}");
        assert_eq!(handler.runs.load(Ordering::SeqCst), 1, "{engine}: duplicates never ran");

        // A claim older than the pending TTL is an orphan: the next request takes it
        // over, and the orphan's late answer does not overwrite the new one.
        let orphan = tokio::spawn({
            let app = app.clone();
            async move { send(&app, "/required", Some("amy"), Some("slow-2"), "slow").await }
        });
        while handler.runs.load(Ordering::SeqCst) == 1 {
            tokio::task::yield_now().await;
        }
        clock.advance(Duration::from_millis(5_000));
        let taken = tokio::spawn({
            let app = app.clone();
            async move { send(&app, "/required", Some("amy"), Some("slow-2"), "slow").await }
        });
        while handler.runs.load(Ordering::SeqCst) == 2 {
            tokio::task::yield_now().await;
        }
        handler.gate.add_permits(2);
        let (orphan, taken) = (orphan.await.unwrap(), taken.await.unwrap());
        assert_eq!((orphan.status, taken.status), (StatusCode::CREATED, StatusCode::CREATED));
        let replay = send(&app, "/required", Some("amy"), Some("slow-2"), "slow").await;
        assert!(replay.replayed, "{engine}");
        assert_eq!(replay.run, taken.run, "{engine}: the taker's answer is the stored one");
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_expire_after_the_retention_and_are_purged() {
    for db in TestDb::all("answers_expire_after_the_retention_and_are_purged").await {
        let clock = ManualClock::new(T0);
        let (_pool, records) = setup(&db, &clock).await;
        let handler = Arc::new(Handler::default());
        let app = app(&records, &handler);

        assert_eq!(
            send(&app, "/required", Some("amy"), Some("k"), "{}").await.status,
            StatusCode::CREATED
        );
        send(&app, "/required", Some("amy"), Some("old"), "{}").await;
        clock.advance(Duration::from_millis(59_999));
        assert!(send(&app, "/required", Some("amy"), Some("k"), "{}").await.replayed);
        assert_eq!(records.purge_expired().await.unwrap(), 0, "nothing is due yet");
        clock.advance(Duration::from_millis(1));
        // Expired: the key is free again, even for another request.
        let fresh = send(&app, "/required", Some("amy"), Some("k"), "{\"new\":true}").await;
        assert_eq!((fresh.status, fresh.replayed), (StatusCode::CREATED, false));
        assert_eq!(handler.runs.load(Ordering::SeqCst), 3);
        assert_eq!(records.purge_expired().await.unwrap(), 1, "{}: `old` is purged", db.engine());
        db.drop_db().await;
    }
}
