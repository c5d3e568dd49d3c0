//! The seat map's event stream, fed by change data capture on the seat table, on
//! SQLite and PostgreSQL: with two instances on one database, holds, sales,
//! cancellations and swept lapsed holds made on either reach the streams open on
//! both, in commit order, ending where the seat map is; a reconnect resumes with
//! `Last-Event-ID`; a failing feed is reported by readiness and recovers; the feed
//! of an instance that never comes back is dropped.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use girder_core::{ManualClock, SystemClock};
use girder_http::identity::{Role, test_bearer as bearer, test_tokens};
use girder_realtime::cdc::{Capture, DropError};
use girder_sql::{Db, PoolConfig, on_db};
use girder_system::{Context, Shutdown, ShutdownTrigger, System};
use girder_testkit::backends::TestDb;
use girder_ticketmaster::{FeedState, Ticketmaster, TicketmasterConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const T0: u64 = 1_900_000_000_000;
const TTL_MS: u64 = 60_000;

/// One instance: Ticketmaster on its own pool and data directory (so its own
/// instance id and change consumer), its router, and — once started — its
/// background work (sweeper and seat feed).
struct Instance {
    tm: Arc<Ticketmaster>,
    router: Router,
    pool: Db,
    _data: tempfile::TempDir,
    running: Option<(ShutdownTrigger, tokio::task::JoinHandle<()>)>,
}

impl Instance {
    async fn open(db: &str, clock: &ManualClock) -> Self {
        let pool = Db::connect(db, PoolConfig { max_connections: 6, ..PoolConfig::default() })
            .await
            .expect("database");
        girder_sql::migrate::run(&pool, girder_sql::migrate::server()).await.expect("migrations");
        girder_sql::migrate::run(&pool, girder_ticketmaster::migrations())
            .await
            .expect("migrations");
        let data = tempfile::tempdir().expect("data dir");
        let context =
            Context::new(pool.clone(), Arc::new(clock.clone())).with_data_dir(data.path());
        let mut config = TicketmasterConfig { hold_ttl_ms: TTL_MS, ..TicketmasterConfig::new() };
        // Quick recovery after a failure, and quick heartbeats, for the tests of both.
        config.feed.retry_max_ms = 200;
        config.feed.heartbeat_ms = 200;
        let tm = Ticketmaster::open_with(&context, config).await.expect("open ticketmaster");
        let router = tm.api_router().layer(test_tokens().layer());
        Self { tm, router, pool, _data: data, running: None }
    }

    fn spawn(&mut self) {
        let (stop, shutdown) = Shutdown::new();
        let task = tokio::spawn(Arc::clone(&self.tm).run(shutdown));
        self.running = Some((stop, task));
    }

    async fn until_live(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.tm.feed_state() != FeedState::Live {
            assert!(Instant::now() < deadline, "the feed never read: {:?}", self.tm.feed_state());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.fire();
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the background work stops on shutdown")
                .expect("the background task");
        }
        self.pool.close().await;
    }
}

async fn started(db: &str, clock: &ManualClock) -> Instance {
    let mut instance = Instance::open(db, clock).await;
    instance.spawn();
    instance.until_live().await;
    instance
}

/// Runs `body` on a fresh database of each engine, then stops the instances it
/// returns and drops every consumer left — also when `body` panics (its instances'
/// background work ends when their shutdown triggers drop): on PostgreSQL each is
/// a replication slot, which holds WAL for ever until someone drops it.
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
                    instance.stop().await;
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

async fn consumers(capture: &Capture) -> Vec<String> {
    on_db!(capture.db(), |pool| {
        sqlx::query_scalar("SELECT name FROM girder_cdc_consumers ORDER BY name")
            .fetch_all(pool)
            .await
            .expect("consumers")
    })
}

/// Drops every consumer on `db` (waiting for a feed still stopping to let its slot
/// go) and checks that no slot is left.
async fn drop_consumers(db: &TestDb) {
    let pool = Db::connect(db.url(), PoolConfig::default()).await.expect("database");
    let capture = Capture::open(pool.clone(), Arc::new(SystemClock)).await.expect("capture");
    let deadline = Instant::now() + Duration::from_secs(10);
    for name in consumers(&capture).await {
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

/// `method uri` as `user` (an operator when empty), with a JSON body and headers.
async fn call(
    router: &Router,
    user: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let authorization =
        if user.is_empty() { bearer("operator", Role::Operator) } else { bearer(user, Role::User) };
    request = request.header(header::AUTHORIZATION, authorization);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = router.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// An event in a venue of one row of `seats` seats, `A-1-1` …
async fn event(router: &Router, seats: u32) -> String {
    let venue = json!({"name": "Hall", "city": "Oslo",
        "sections": [{"name": "A", "rows": 1, "seats_per_row": seats, "price_cents": 2500}]});
    let (status, venue) = call(router, "", "POST", "/venues", Some(venue), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{venue}");
    let event =
        json!({"name": "Show", "venue_id": venue["id"], "starts_at": "2030-07-18T19:30:00Z"});
    let (status, event) = call(router, "", "POST", "/events", Some(event), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    event["id"].as_str().expect("event id").to_owned()
}

/// Holds `seats` for `user`; returns the reservation id.
async fn hold(router: &Router, event: &str, user: &str, seats: &[&str]) -> String {
    let uri = format!("/events/{event}/reservations");
    let (status, r) = call(router, user, "POST", &uri, Some(json!({ "seats": seats })), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    r["id"].as_str().expect("reservation id").to_owned()
}

/// The seat map's statuses.
async fn seat_map(router: &Router, event: &str) -> HashMap<String, String> {
    let (status, map) = call(router, "", "GET", &format!("/events/{event}/seats"), None, &[]).await;
    assert_eq!(status, StatusCode::OK, "{map}");
    map["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_owned(), s["status"].as_str().unwrap().to_owned()))
        .collect()
}

/// What a `seat` event's data starts with.
fn seat(id: &str, status: &str) -> String {
    format!("{{\"seat\":\"{id}\",\"status\":\"{status}\"")
}

/// An open seat-map stream, read frame by frame.
struct Stream {
    body: Body,
    text: String,
}

impl Stream {
    async fn open(router: &Router, event: &str, last_event_id: Option<&str>) -> Self {
        let mut request = Request::builder().uri(format!("/events/{event}/seats/stream"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
        Self { body: response.into_body(), text: String::new() }
    }

    /// Reads until the text read so far contains `want`.
    async fn until(&mut self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.text.contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.body.frame()).await;
            let Ok(Some(Ok(frame))) = frame else { panic!("no {want:?} in {:?}", self.text) };
            if let Ok(data) = frame.into_data() {
                self.text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// The `seat` events so far: (id, seat, status), in order.
    fn seats(&self) -> Vec<(String, String, String)> {
        self.text
            .split("\n\n")
            .filter(|block| block.starts_with("event: seat\n") || block.contains("\nevent: seat\n"))
            .map(|block| {
                let id = block.lines().find_map(|l| l.strip_prefix("id: ")).expect("an id");
                let data = block.lines().find_map(|l| l.strip_prefix("data: ")).expect("data");
                let change: Value = serde_json::from_str(data).expect("a seat change");
                let field = |name: &str| change[name].as_str().expect(name).to_owned();
                (id.to_owned(), field("seat"), field("status"))
            })
            .collect()
    }

    /// The statuses `seat` went through, in order.
    fn history(&self, seat: &str) -> Vec<String> {
        self.seats().into_iter().filter(|(_, s, _)| s == seat).map(|(_, _, st)| st).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seat_changes_on_either_instance_reach_every_open_seat_map() {
    on_each_engine("seat_changes_on_either_instance_reach_every_open_seat_map", |db| async move {
        let clock = ManualClock::new(T0);
        let a = started(&db, &clock).await;
        let b = started(&db, &clock).await;
        let event = event(&a.router, 6).await;
        let mut on_a = Stream::open(&a.router, &event, None).await;
        let mut on_b = Stream::open(&b.router, &event, None).await;
        on_a.until("{\"recovered\":true}").await;
        on_b.until("{\"recovered\":true}").await;

        // Held on A, then sold on A.
        let sold = hold(&a.router, &event, "ann", &["A-1-1", "A-1-2"]).await;
        on_b.until(&seat("A-1-2", "held")).await;
        assert!(on_b.text.contains("\"held_until\":\"2030-03-17T17:47:40Z\""), "{}", on_b.text);
        let uri = format!("/reservations/{sold}/confirm");
        let pay = json!({"payment_token": "tok_ok"});
        let (status, r) =
            call(&a.router, "ann", "POST", &uri, Some(pay), &[("idempotency-key", "k1")]).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        on_b.until(&seat("A-1-2", "sold")).await;
        // Held and cancelled on B.
        let cancelled = hold(&b.router, &event, "bob", &["A-1-3"]).await;
        let (status, _) =
            call(&b.router, "bob", "DELETE", &format!("/reservations/{cancelled}"), None, &[])
                .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        // Held on B and left to lapse: the sweeper's reset is what the stream sees.
        // Both streams see the hold before the clock passes it: a change handed
        // over after its hold lapsed reads as available.
        hold(&b.router, &event, "cat", &["A-1-4"]).await;
        on_a.until(&seat("A-1-4", "held")).await;
        on_b.until(&seat("A-1-4", "held")).await;
        clock.advance(Duration::from_millis(TTL_MS + 1));
        a.tm.sweep_once().await.expect("sweep");
        on_a.until(&seat("A-1-4", "available")).await;
        on_b.until(&seat("A-1-4", "available")).await;

        // Each seat's last change is what the seat map says.
        let map = seat_map(&a.router, &event).await;
        for stream in [&on_a, &on_b] {
            for (seat, want) in [
                ("A-1-1", vec!["held", "sold"]),
                ("A-1-2", vec!["held", "sold"]),
                ("A-1-3", vec!["held", "available"]),
                ("A-1-4", vec!["held", "available"]),
                ("A-1-5", vec![]),
            ] {
                assert_eq!(stream.history(seat), want, "{seat}: {}", stream.text);
            }
            for seat in ["A-1-1", "A-1-2", "A-1-3", "A-1-4"] {
                let last = stream.history(seat).pop();
                assert_eq!(last.as_deref(), Some(map[seat].as_str()), "{seat}");
            }
        }

        // A reconnect to B after its first change gets the rest, once; B's position
        // does not resume on A.
        let first = on_b.seats()[0].0.clone();
        let mut again = Stream::open(&b.router, &event, Some(&first)).await;
        again.until(&seat("A-1-4", "available")).await;
        assert!(again.text.contains("{\"recovered\":true}"), "{}", again.text);
        assert_eq!(again.seats().len(), on_b.seats().len() - 1, "{}", again.text);
        let mut moved = Stream::open(&a.router, &event, Some(&first)).await;
        moved.until("{\"recovered\":false}").await;
        // Another event's stream carries only its own event's seats.
        let second = self::event(&a.router, 2).await;
        let mut on_second = Stream::open(&b.router, &second, None).await;
        on_second.until("recovered").await;
        hold(&a.router, &event, "dan", &["A-1-5"]).await;
        hold(&a.router, &second, "dan", &["A-1-1"]).await;
        on_second.until(&seat("A-1-1", "held")).await;
        assert_eq!(on_second.seats().len(), 1, "{}", on_second.text);

        let (status, problem) =
            call(&a.router, "", "GET", "/events/e_nope/seats/stream", None, &[]).await;
        assert_eq!(
            (status, problem["type"].as_str()),
            (StatusCode::NOT_FOUND, Some("/problems/unknown-event"))
        );
        drop((on_a, on_b, again, moved, on_second));
        vec![a, b]
    })
    .await;
}

/// A feed that cannot open its consumer reports the instance not ready and
/// recovers by itself; a feed nobody has read for `stale_ms` is dropped by a live
/// instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_feed_is_not_ready_and_a_stale_one_is_dropped() {
    on_each_engine("a_failing_feed_is_not_ready_and_a_stale_one_is_dropped", |db| async move {
        let clock = ManualClock::new(T0);
        let mut a = Instance::open(&db, &clock).await;
        assert!(a.tm.ready().await.is_ok(), "a feed that is not running is no failure");
        let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
        let sql = rename("girder_cdc_consumers", "girder_cdc_consumers_away");
        on_db!(&a.pool, |p| sqlx::query(&sql).execute(p).await.map(drop).expect("rename"));
        a.spawn();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(a.tm.feed_state(), FeedState::Failing(_)) {
            assert!(Instant::now() < deadline, "{:?}", a.tm.feed_state());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let why = a.tm.ready().await.expect_err("not ready").to_string();
        assert!(why.contains("seat feed is failing"), "{why}");
        let sql = rename("girder_cdc_consumers_away", "girder_cdc_consumers");
        on_db!(&a.pool, |p| sqlx::query(&sql).execute(p).await.map(drop).expect("rename back"));
        a.until_live().await;
        assert!(a.tm.ready().await.is_ok());

        let dead = started(&db, &clock).await;
        dead.stop().await;
        let before = consumers(a.tm.capture()).await;
        assert_eq!(before.len(), 2, "{before:?}");
        assert!(a.tm.drop_stale_feeds().await.expect("sweep").is_empty(), "nothing stale yet");
        clock.advance(Duration::from_secs(3_600));
        let dropped = a.tm.drop_stale_feeds().await.expect("sweep");
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        let after = consumers(a.tm.capture()).await;
        assert!(after.len() == 1 && !after.contains(&dropped[0]), "{after:?}");
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
        let clock = ManualClock::new(T0);
        let instance = started(&db, &clock).await;
        let name = consumers(instance.tm.capture()).await.pop().expect("the consumer");
        let Db::Postgres(p) = &instance.pool else {
            let beats: i64 = on_db!(&instance.pool, |p| {
                sqlx::query_scalar("SELECT count(*) FROM tm_feed_beats").fetch_one(p).await.unwrap()
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
