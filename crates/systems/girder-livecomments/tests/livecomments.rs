//! Live Comments through its router, on SQLite and PostgreSQL: history pages, SSE
//! streams that receive new comments through the comments feed (change data capture
//! on the table) and resume after a reconnect, two instances sharing one database,
//! a feed that starts from now and resumes after a restart, a failing feed reported
//! by readiness and recovering, stale feeds dropped, viewer counts, and bad input
//! answered with problems.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use girder_core::{Clock, ManualClock, SystemClock};
use girder_http::identity::{Role, test_bearer as bearer, test_tokens};
use girder_livecomments::{FeedState, LiveComments, LiveCommentsConfig};
use girder_realtime::cdc::DropError;
use girder_sql::{Db, PoolConfig, on_db};
use girder_system::{Context, Shutdown, ShutdownTrigger, System};
use girder_testkit::backends::TestDb;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// One instance: Live Comments on its own pool and data directory (so its own
/// instance id and change consumer), its router, and — once started — its feed.
struct Instance {
    lc: Arc<LiveComments>,
    router: Router,
    pool: Db,
    data: tempfile::TempDir,
    running: Option<(ShutdownTrigger, tokio::task::JoinHandle<()>)>,
}

impl Instance {
    /// Opens an instance on `db` keeping its data in `data` (a fresh directory when
    /// `None`); its feed does not run yet.
    async fn open(db: &str, clock: Arc<dyn Clock>, data: Option<tempfile::TempDir>) -> Self {
        let pool = Db::connect(db, PoolConfig::default()).await.expect("database");
        girder_sql::migrate::run(&pool, girder_livecomments::migrations())
            .await
            .expect("migrations");
        let data = data.unwrap_or_else(|| tempfile::tempdir().expect("data dir"));
        let context = Context::new(pool.clone(), clock).with_data_dir(data.path());
        let mut config = LiveCommentsConfig::new();
        // Quick recovery after a failure, and quick heartbeats, for the tests of both.
        config.feed.retry_max_ms = 200;
        config.feed.heartbeat_ms = 200;
        let lc = LiveComments::open_with(&context, config).await.expect("open");
        let router = lc.api_router().layer(test_tokens().layer());
        Self { lc, router, pool, data, running: None }
    }

    /// Runs its feed (`System::run`) and waits until it reads.
    async fn start(&mut self) {
        self.spawn();
        self.until_live().await;
    }

    fn spawn(&mut self) {
        let (stop, shutdown) = Shutdown::new();
        let task = tokio::spawn(Arc::clone(&self.lc).run(shutdown));
        self.running = Some((stop, task));
    }

    async fn until_live(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.lc.feed_state() != FeedState::Live {
            assert!(Instant::now() < deadline, "the feed never read: {:?}", self.lc.feed_state());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops its feed (the consumer stays) and returns its data directory.
    async fn stop(mut self) -> tempfile::TempDir {
        if let Some((stop, task)) = self.running.take() {
            stop.fire();
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the feed stops on shutdown")
                .expect("the feed task");
        }
        self.pool.close().await;
        self.data
    }
}

async fn started(db: &str) -> Instance {
    let mut instance = Instance::open(db, Arc::new(SystemClock), None).await;
    instance.start().await;
    instance
}

/// Runs `body` on a fresh database of each engine, then stops the instances it
/// returns and drops every consumer left on the database — also when `body` panics
/// (its instances' feeds end when their shutdown triggers drop): on PostgreSQL a
/// consumer is a replication slot, which nobody else would drop and which holds WAL
/// for ever.
async fn on_each_engine<F, Fut>(test: &str, body: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Vec<Instance>> + Send + 'static,
{
    for db in TestDb::all(test).await {
        let outcome = tokio::spawn(body(db.url().to_owned())).await;
        let outcome = match outcome {
            Ok(instances) => {
                for instance in instances {
                    drop(instance.stop().await);
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
        drop_consumers(&db).await;
        db.drop_db().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// Drops every consumer on `db` (waiting for a feed still stopping to let its slot
/// go) and checks that no slot is left.
async fn drop_consumers(db: &TestDb) {
    let pool = Db::connect(db.url(), PoolConfig::default()).await.expect("database");
    let capture = girder_realtime::cdc::Capture::open(pool.clone(), Arc::new(SystemClock))
        .await
        .expect("capture");
    let deadline = Instant::now() + Duration::from_secs(10);
    for name in capture_names(&capture).await {
        loop {
            match capture.drop_consumer(&name).await {
                Ok(_) => break,
                Err(DropError::Active(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("dropping consumer {name}: {e}"),
            }
        }
    }
    if let Db::Postgres(p) = &pool {
        let slots: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()",
        )
        .fetch_one(p)
        .await
        .expect("slots");
        assert_eq!(slots, 0, "every slot of the test is dropped");
    }
    pool.close().await;
}

/// Every consumer registered on the database.
async fn capture_names(capture: &girder_realtime::cdc::Capture) -> Vec<String> {
    on_db!(capture.db(), |pool| {
        sqlx::query_scalar("SELECT name FROM girder_cdc_consumers ORDER BY name")
            .fetch_all(pool)
            .await
            .expect("consumers")
    })
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

async fn post(router: &Router, user: &str, video: &str, body: &str) -> Value {
    let uri = format!("/videos/{video}/comments");
    let (status, comment) = call(router, user, "POST", &uri, Some(json!({ "body": body }))).await;
    assert_eq!(status, StatusCode::CREATED, "{comment}");
    comment
}

/// Where each of `bodies` first shows in `text`, asserting they are in that order.
fn assert_in_order(text: &str, bodies: &[String]) {
    let at: Vec<usize> = bodies
        .iter()
        .map(|b| text.find(&format!("\"body\":\"{b}\"")).unwrap_or_else(|| panic!("{b} in {text}")))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "in order {bodies:?}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_page_newest_first_and_reach_open_streams() {
    on_each_engine("comments_page_newest_first_and_reach_open_streams", |db| async move {
        let instance = started(&db).await;
        let router = &instance.router;
        let mut first = Stream::open(router, "launch", None).await;
        first.until("{\"recovered\":true}").await;
        let bodies: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
        for body in &bodies {
            post(router, "ann", "launch", body).await;
        }
        first.until("c4").await;
        assert_in_order(&first.text, &bodies);
        assert!(first.text.contains("event: comment\nid: "), "{}", first.text);
        // History, newest first, a page at a time.
        let (_, page) = call(router, "", "GET", "/videos/launch/comments?limit=3", None).await;
        let got: Vec<&str> =
            page["items"].as_array().unwrap().iter().map(|c| c["body"].as_str().unwrap()).collect();
        assert_eq!(got, ["c4", "c3", "c2"]);
        let before = page["next_before"].as_i64().unwrap();
        let (_, page) = call(
            router,
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
        let mut second = Stream::open(router, "launch", Some(&after)).await;
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
        let mut third = Stream::open(router, "launch", Some("garbage")).await;
        third.until("{\"recovered\":false}").await;
        // Three streams, one anonymous viewer each.
        let (_, viewers) = call(router, "", "GET", "/videos/launch/viewers", None).await;
        assert_eq!(viewers, json!({"viewers": 3, "streams": 3}));
        drop((first, second, third));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, viewers) = call(router, "", "GET", "/videos/launch/viewers", None).await;
            if viewers["streams"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "closed streams still count: {viewers}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Shutdown ends open streams with `closed` and leaves the feed's consumer.
        let mut last = Stream::open(router, "launch", None).await;
        last.until("recovered").await;
        instance.running.as_ref().expect("running").0.fire();
        last.until("event: closed").await;
        vec![instance]
    })
    .await;
}

/// Two instances on one database, no broker between them: comments posted on either
/// reach the streams of both, each in commit order, and a position from one instance
/// does not resume on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_comments_through_the_table() {
    on_each_engine("two_instances_share_comments_through_the_table", |db| async move {
        let a = started(&db).await;
        let b = started(&db).await;
        let mut on_a = Stream::open(&a.router, "match", None).await;
        let mut on_b = Stream::open(&b.router, "match", None).await;
        let mut other_video = Stream::open(&b.router, "other", None).await;
        on_a.until("recovered").await;
        on_b.until("recovered").await;
        other_video.until("recovered").await;
        let bodies: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
        for (i, body) in bodies.iter().enumerate() {
            let on = if i % 2 == 0 { &a.router } else { &b.router };
            post(on, "ann", "match", body).await;
        }
        post(&a.router, "bob", "other", "elsewhere").await;
        on_a.until("m7").await;
        on_b.until("m7").await;
        assert_in_order(&on_a.text, &bodies);
        assert_in_order(&on_b.text, &bodies);
        other_video.until("elsewhere").await;
        assert!(!other_video.text.contains("\"m0\""), "{}", other_video.text);
        // Each comment once per stream.
        for body in &bodies {
            assert_eq!(on_b.text.matches(&format!("\"body\":\"{body}\"")).count(), 1, "{body}");
        }
        // B's position resumes on B, not on A.
        let after = on_b.id_of("\"body\":\"m5\"");
        let mut again = Stream::open(&b.router, "match", Some(&after)).await;
        again.until("m7").await;
        assert!(again.text.contains("{\"recovered\":true}") && !again.text.contains("\"m5\""));
        let mut moved = Stream::open(&a.router, "match", Some(&after)).await;
        moved.until("{\"recovered\":false}").await;
        drop((on_a, on_b, other_video, again, moved));
        vec![a, b]
    })
    .await;
}

/// A new feed begins after the newest committed comment; a restarted one resumes
/// after what it acknowledged, so comments committed while it was down reach its
/// (new) hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_begins_from_now_and_a_restart_resumes_it() {
    on_each_engine("a_feed_begins_from_now_and_a_restart_resumes_it", |db| async move {
        let a = started(&db).await;
        post(&a.router, "ann", "v", "before b").await;
        // B's first start: its stream (opened before the feed runs) gets only what
        // is committed after the feed opened.
        let mut b = Instance::open(&db, Arc::new(SystemClock), None).await;
        let mut on_b = Stream::open(&b.router, "v", None).await;
        on_b.until("recovered").await;
        b.start().await;
        post(&a.router, "ann", "v", "after b").await;
        on_b.until("after b").await;
        assert!(!on_b.text.contains("before b"), "{}", on_b.text);
        // B goes down; comments go on; B comes back on the same data directory.
        drop(on_b);
        let data = b.stop().await;
        post(&a.router, "ann", "v", "while b was down 1").await;
        post(&a.router, "ann", "v", "while b was down 2").await;
        let mut b = Instance::open(&db, Arc::new(SystemClock), Some(data)).await;
        let mut on_b = Stream::open(&b.router, "v", None).await;
        on_b.until("recovered").await;
        b.start().await;
        on_b.until("while b was down 2").await;
        assert_in_order(&on_b.text, &["while b was down 1".into(), "while b was down 2".into()]);
        assert!(!on_b.text.contains("after b"), "acknowledged before the restart: {}", on_b.text);
        drop(on_b);
        vec![a, b]
    })
    .await;
}

/// A feed that cannot open its consumer reports the instance not ready, retries, and
/// recovers by itself; the server never stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_feed_is_not_ready_and_recovers() {
    on_each_engine("a_failing_feed_is_not_ready_and_recovers", |db| async move {
        let mut instance = Instance::open(&db, Arc::new(SystemClock), None).await;
        assert!(instance.lc.ready().await.is_ok(), "a feed that is not running is no failure");
        on_db!(&instance.pool, |p| {
            sqlx::query("ALTER TABLE girder_cdc_consumers RENAME TO girder_cdc_consumers_away")
                .execute(p)
                .await
                .expect("rename");
        });
        instance.spawn();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(instance.lc.feed_state(), FeedState::Failing(_)) {
            assert!(Instant::now() < deadline, "{:?}", instance.lc.feed_state());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let why = instance.lc.ready().await.expect_err("not ready").to_string();
        assert!(why.contains("comments feed is failing"), "{why}");
        // Posting still works: the comment is stored (and sent once the feed reads).
        let mut stream = Stream::open(&instance.router, "v", None).await;
        stream.until("recovered").await;
        on_db!(&instance.pool, |p| {
            sqlx::query("ALTER TABLE girder_cdc_consumers_away RENAME TO girder_cdc_consumers")
                .execute(p)
                .await
                .expect("rename back");
        });
        instance.until_live().await;
        // Ready again once a read succeeds (a loaded machine may take a retry more).
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = instance.lc.ready().await {
            assert!(Instant::now() < deadline, "never ready again: {e}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        post(&instance.router, "ann", "v", "after recovery").await;
        stream.until("after recovery").await;
        drop(stream);
        vec![instance]
    })
    .await;
}

/// A feed nobody has read for `stale_ms` (an instance that never came back) is
/// dropped by a live instance, which keeps its own; on PostgreSQL that frees the
/// dead instance's slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_of_instances_that_never_come_back_are_dropped() {
    on_each_engine("feeds_of_instances_that_never_come_back_are_dropped", |db| async move {
        let clock = ManualClock::new(1_900_000_000_000);
        let mut a = Instance::open(&db, Arc::new(clock.clone()), None).await;
        a.start().await;
        let mut dead = Instance::open(&db, Arc::new(clock.clone()), None).await;
        dead.start().await;
        drop(dead.stop().await);
        let before = capture_names(a.lc.capture()).await;
        assert_eq!(before.len(), 2, "{before:?}");
        assert!(a.lc.drop_stale_feeds().await.expect("sweep").is_empty(), "nothing stale yet");
        clock.advance(Duration::from_secs(3_600));
        let dropped = a.lc.drop_stale_feeds().await.expect("sweep");
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        let after = capture_names(a.lc.capture()).await;
        assert_eq!(after.len(), 1);
        assert!(!after.contains(&dropped[0]) && before.contains(&dropped[0]));
        // The live instance still delivers.
        let mut stream = Stream::open(&a.router, "v", None).await;
        stream.until("recovered").await;
        post(&a.router, "ann", "v", "still here").await;
        stream.until("still here").await;
        drop(stream);
        vec![a]
    })
    .await;
}

/// A quiet feed still moves its PostgreSQL slot: after `heartbeat_ms` without a
/// change it rewrites its heartbeat row, and acknowledging that moves the slot past
/// the WAL that tables it does not capture wrote meanwhile. SQLite writes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_feed_moves_its_slot_past_other_tables() {
    on_each_engine("a_quiet_feed_moves_its_slot_past_other_tables", |db| async move {
        let instance = started(&db).await;
        let name = capture_names(instance.lc.capture()).await.pop().expect("the consumer");
        let Db::Postgres(p) = &instance.pool else {
            let beats: i64 = on_db!(&instance.pool, |p| {
                sqlx::query_scalar("SELECT count(*) FROM lc_feed_beats").fetch_one(p).await.unwrap()
            });
            assert_eq!(beats, 0, "SQLite needs no heartbeat");
            return vec![instance];
        };
        sqlx::raw_sql(
            "CREATE TABLE not_captured (n BIGINT); \
             INSERT INTO not_captured SELECT generate_series(1, 20000)",
        )
        .execute(p)
        .await
        .expect("other writes");
        let written: i64 = sqlx::query_scalar("SELECT (pg_current_wal_lsn() - '0/0')::bigint")
            .fetch_one(p)
            .await
            .expect("lsn");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let confirmed: i64 = sqlx::query_scalar(
                "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots \
                 WHERE slot_name = $1",
            )
            .bind(&name)
            .fetch_one(p)
            .await
            .expect("the slot");
            if confirmed >= written {
                break;
            }
            assert!(Instant::now() < deadline, "the slot stays at {confirmed} < {written}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        vec![instance]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problems() {
    let db = TestDb::sqlite();
    let instance = Instance::open(db.url(), Arc::new(SystemClock), None).await;
    let router = &instance.router;
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
        let (status, problem) = call(router, user, method, &uri, body).await;
        assert_eq!(status, want, "{method} {uri}: {problem}");
    }
    let (_, page) = call(router, "", "GET", "/videos/v/comments", None).await;
    assert_eq!(page["items"], json!([]), "nothing refused was stored");
}
