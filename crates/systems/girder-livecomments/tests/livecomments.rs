//! Live Comments through its router: history pages, SSE streams that receive new
//! comments and resume after a reconnect, viewer counts, two instances joined through
//! NATS, and bad input answered with problems.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use girder_core::{Clock, SystemClock};
use girder_http::identity::{Role, test_bearer as bearer, test_tokens};
use girder_livecomments::{LiveComments, LiveCommentsConfig};
use girder_sql::{Db, PoolConfig};
use girder_system::Context;
use girder_testkit::backends::TestDb;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn open(db: &str, nats: Option<&str>) -> (Arc<LiveComments>, Router) {
    let pool = Db::connect(db, PoolConfig::default()).await.expect("database");
    girder_sql::migrate::run(&pool, girder_livecomments::migrations()).await.expect("migrations");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut context = Context::new(pool, clock);
    let mut config = LiveCommentsConfig::new();
    if let Some(url) = nats {
        context = context.with_nats(url);
        config.nats_prefix = format!("girder-test.lc{}", std::process::id());
    }
    let lc = LiveComments::open_with(&context, config).await.expect("open");
    let router = lc.api_router().layer(test_tokens().layer());
    (lc, router)
}

async fn call(
    router: &Router,
    user: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    if !user.is_empty() {
        request = request.header(header::AUTHORIZATION, bearer(user, Role::User));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = router.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// An open SSE stream, read frame by frame.
struct Stream {
    body: Body,
    text: String,
}

impl Stream {
    async fn open(router: &Router, video: &str, last_event_id: Option<&str>) -> Self {
        let mut request = Request::builder().uri(format!("/videos/{video}/stream"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
        Self { body: response.into_body(), text: String::new() }
    }

    /// Reads until the text read so far contains `want`.
    async fn until(&mut self, want: &str) -> &str {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.text.contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.body.frame()).await;
            let Ok(Some(Ok(frame))) = frame else { panic!("no {want:?} in {:?}", self.text) };
            if let Ok(data) = frame.into_data() {
                self.text.push_str(&String::from_utf8_lossy(&data));
            }
        }
        &self.text
    }

    /// The id of the event whose data contains `needle`.
    fn id_of(&self, needle: &str) -> String {
        let block = self.text.split("\n\n").find(|b| b.contains(needle)).expect("the event");
        block.lines().find_map(|l| l.strip_prefix("id: ")).expect("an id").to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_page_newest_first_and_reach_open_streams() {
    for db in TestDb::all("comments_page_newest_first_and_reach_open_streams").await {
        let (lc, router) = open(db.url(), None).await;
        let mut first = Stream::open(&router, "launch", None).await;
        first.until("{\"recovered\":true}").await;
        for i in 0..5 {
            let (status, c) = call(
                &router,
                "ann",
                "POST",
                "/videos/launch/comments",
                Some(json!({"body": format!("c{i}")})),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{c}");
        }
        first.until("c4").await;
        let text = first.text.clone();
        let order: Vec<usize> =
            (0..5).map(|i| text.find(&format!("\"body\":\"c{i}\"")).unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {text}");
        assert!(text.contains("event: comment\nid: "), "{text}");
        // History, newest first, a page at a time.
        let (_, page) = call(&router, "", "GET", "/videos/launch/comments?limit=3", None).await;
        let bodies: Vec<&str> =
            page["items"].as_array().unwrap().iter().map(|c| c["body"].as_str().unwrap()).collect();
        assert_eq!(bodies, ["c4", "c3", "c2"]);
        let before = page["next_before"].as_i64().unwrap();
        let (_, page) = call(
            &router,
            "",
            "GET",
            &format!("/videos/launch/comments?limit=3&before={before}"),
            None,
        )
        .await;
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        assert!(page["next_before"].is_null());
        // A reconnect after c1 gets c2..c4 and nothing before; a live one follows.
        let after = first.id_of("\"body\":\"c1\"");
        let mut second = Stream::open(&router, "launch", Some(&after)).await;
        second.until("c4").await;
        assert!(
            second.text.contains("{\"recovered\":true}") && !second.text.contains("\"c1\""),
            "{}",
            second.text
        );
        assert!(
            second.text.contains("\"c2\"") && second.text.contains("\"c3\""),
            "{}",
            second.text
        );
        // An id from elsewhere: not recovered.
        let mut third = Stream::open(&router, "launch", Some("garbage")).await;
        third.until("{\"recovered\":false}").await;
        // Three streams, one anonymous viewer each.
        let (_, viewers) = call(&router, "", "GET", "/videos/launch/viewers", None).await;
        assert_eq!(viewers, json!({"viewers": 3, "streams": 3}));
        drop((first, second, third));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, viewers) = call(&router, "", "GET", "/videos/launch/viewers", None).await;
            if viewers["streams"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "closed streams still count: {viewers}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(lc);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_a_comment_posted_on_one_instance_reaches_viewers_on_another() {
    let test = "with_nats_a_comment_posted_on_one_instance_reaches_viewers_on_another";
    let Some(url) = girder_core::services::require(girder_core::services::Service::Nats, test)
    else {
        return;
    };
    let db = TestDb::sqlite();
    let (_a, router_a) = open(db.url(), Some(&url)).await;
    let (_b, router_b) = open(db.url(), Some(&url)).await;
    let mut on_b = Stream::open(&router_b, "match", None).await;
    on_b.until("recovered").await;
    let (status, _) =
        call(&router_a, "ann", "POST", "/videos/match/comments", Some(json!({"body": "from A"})))
            .await;
    assert_eq!(status, StatusCode::CREATED);
    on_b.until("from A").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problems() {
    let db = TestDb::sqlite();
    let (_lc, router) = open(db.url(), None).await;
    let cases: Vec<(&str, &str, String, Option<Value>, StatusCode)> = vec![
        (
            "ann",
            "POST",
            "/videos/v/comments".into(),
            Some(json!({"body": ""})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "ann",
            "POST",
            "/videos/v/comments".into(),
            Some(json!({"body": "   "})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "ann",
            "POST",
            "/videos/v/comments".into(),
            Some(json!({"body": "a\u{0}b"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "ann",
            "POST",
            "/videos/v/comments".into(),
            Some(json!({"body": "x".repeat(501)})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "ann",
            "POST",
            "/videos/v/comments".into(),
            Some(json!({"body": "ok", "extra": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "ann",
            "POST",
            "/videos/bad%20id/comments".into(),
            Some(json!({"body": "ok"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "ann",
            "POST",
            format!("/videos/{}/comments", "v".repeat(65)),
            Some(json!({"body": "ok"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "",
            "POST",
            "/videos/v/comments".into(),
            Some(json!({"body": "ok"})),
            StatusCode::UNAUTHORIZED,
        ),
        ("", "GET", "/videos/v/comments?limit=0".into(), None, StatusCode::UNPROCESSABLE_ENTITY),
        ("", "GET", "/videos/v/comments?before=0".into(), None, StatusCode::UNPROCESSABLE_ENTITY),
        ("", "GET", "/videos/v/comments?limit=x".into(), None, StatusCode::BAD_REQUEST),
        ("", "GET", "/videos/bad.id/stream".into(), None, StatusCode::UNPROCESSABLE_ENTITY),
        ("", "GET", "/videos/bad.id/viewers".into(), None, StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (user, method, uri, body, want) in cases {
        let (status, problem) = call(&router, user, method, &uri, body).await;
        assert_eq!(status, want, "{method} {uri}: {problem}");
    }
    let (_, page) = call(&router, "", "GET", "/videos/v/comments", None).await;
    assert_eq!(page["items"], json!([]), "nothing refused was stored");
}
