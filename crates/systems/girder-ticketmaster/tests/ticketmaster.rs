//! Ticketmaster through its router, on SQLite and PostgreSQL: a seat is sold
//! once under heavy concurrency across two instances, no seat is sold without a
//! charge, one Idempotency-Key never charges twice, holds lapse on the clock, the
//! waiting room admits by position and time, and bad input gets a 4xx problem.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use girder_core::ManualClock;
use girder_http::identity::{Role, test_bearer as bearer, test_tokens};
use girder_sql::{Db, PoolConfig};
use girder_system::Context;
use girder_testkit::backends::TestDb;
use girder_ticketmaster::{Ticketmaster, TicketmasterConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const T0: u64 = 1_900_000_000_000;
const TTL_MS: u64 = 60_000;

/// One instance: its own pool of `max_connections` on `db`.
async fn open(db: &TestDb, clock: &ManualClock, max_connections: u32) -> Arc<Ticketmaster> {
    let pool = PoolConfig { max_connections, ..PoolConfig::default() };
    let pool = Db::connect(db.url(), pool).await.expect("database");
    girder_sql::migrate::run(&pool, girder_sql::migrate::server()).await.expect("migrations");
    girder_sql::migrate::run(&pool, girder_ticketmaster::migrations()).await.expect("migrations");
    let context = Context::new(pool, Arc::new(clock.clone()));
    let config = TicketmasterConfig { hold_ttl_ms: TTL_MS, ..TicketmasterConfig::new() };
    Ticketmaster::open_with(&context, config).await.expect("open ticketmaster")
}

struct Reply {
    status: StatusCode,
    body: Value,
    raw: Vec<u8>,
}

impl Reply {
    fn slug(&self) -> &str {
        self.body["type"].as_str().unwrap_or("").trim_start_matches("/problems/")
    }
}

/// The API as the server mounts it: behind the layer that verifies bearer tokens.
fn routed(tm: &Arc<Ticketmaster>) -> Router {
    tm.api_router().layer(test_tokens().layer())
}

/// Sends a request as a caller. Who calls is written where the tests read best: a
/// `"user"` field in a JSON body or a `?user=` query names the caller (both are
/// removed before sending: the API takes the caller only from its token); an explicit
/// `authorization` header is sent as given (empty: none); otherwise an operator calls.
async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut body = body.map(str::to_owned);
    let mut caller = None;
    if let Some(Ok(Value::Object(mut fields))) = body.as_deref().map(serde_json::from_str::<Value>)
        && let Some(Value::String(user)) = fields.remove("user")
    {
        caller = Some(user);
        body = Some(Value::Object(fields).to_string());
    }
    let mut uri = uri.to_owned();
    if let Some((path, query)) = uri.clone().split_once("?user=") {
        caller = Some(query.to_owned());
        uri = path.to_owned();
    }
    let mut request = Request::builder().method(method).uri(&uri);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let explicit = headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
    if !explicit {
        let authorization = match &caller {
            Some(user) => bearer(user, Role::User),
            None => bearer("operator", Role::Operator),
        };
        request = request.header("authorization", authorization);
    }
    for (name, value) in headers {
        if !value.is_empty() {
            request = request.header(*name, *value);
        }
    }
    let request = request.body(Body::from(body.unwrap_or_default())).expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let raw = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    let body = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw).unwrap_or(Value::Null)
    };
    Reply { status, body, raw }
}

async fn post(app: &Router, uri: &str, body: &Value) -> Reply {
    call(app, "POST", uri, Some(&body.to_string()), &[]).await
}

async fn get(app: &Router, uri: &str) -> Reply {
    call(app, "GET", uri, None, &[]).await
}

async fn confirm(app: &Router, reservation: &str, user: &str, token: &str, key: &str) -> Reply {
    let body = json!({"user": user, "payment_token": token}).to_string();
    let uri = format!("/reservations/{reservation}/confirm");
    call(app, "POST", &uri, Some(&body), &[("idempotency-key", key)]).await
}

/// A venue of `rows` × `per_row` seats in section `A` at 2,500 cents, and an event in it.
async fn event(app: &Router, rows: u32, per_row: u32, waiting_room: Option<u32>) -> String {
    let venue = post(
        app,
        "/venues",
        &json!({"name": "Hall", "city": "Oslo",
                "sections": [{"name": "A", "rows": rows, "seats_per_row": per_row, "price_cents": 2500}]}),
    )
    .await;
    assert_eq!(venue.status, StatusCode::CREATED, "{:?}", venue.body);
    let waiting_room = waiting_room.map(|r| json!({"admit_per_sec": r}));
    let event = post(
        app,
        "/events",
        &json!({"name": "Show", "venue_id": venue.body["id"], "starts_at": "2030-07-18T19:30:00Z",
                "waiting_room": waiting_room}),
    )
    .await;
    assert_eq!(event.status, StatusCode::CREATED, "{:?}", event.body);
    event.body["id"].as_str().expect("event id").to_owned()
}

async fn hold(app: &Router, event: &str, user: &str, seats: &[&str]) -> Reply {
    post(app, &format!("/events/{event}/reservations"), &json!({"user": user, "seats": seats}))
        .await
}

async fn seat_status(app: &Router, event: &str) -> HashMap<String, String> {
    let map = get(app, &format!("/events/{event}/seats")).await;
    assert_eq!(map.status, StatusCode::OK);
    map.body["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_owned(), s["status"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_attempts_sell_each_seat_exactly_once() {
    const ATTEMPTS: usize = 10_000;
    const IN_FLIGHT: usize = 256;
    for db in TestDb::all("ten_thousand_attempts_sell_each_seat_exactly_once").await {
        let clock = ManualClock::new(T0);
        // Two instances on one database: the promise must hold across them.
        let a = open(&db, &clock, 8).await;
        let b = open(&db, &clock, 8).await;
        let apps = [routed(&a), routed(&b)];
        let event = event(&apps[0], 10, 10, None).await;
        let started = Instant::now();
        let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..ATTEMPTS {
            let app = apps[i % 2].clone();
            let event = event.clone();
            let permit = Arc::clone(&gate).acquire_owned().await.expect("semaphore");
            tasks.spawn(async move {
                let _permit = permit;
                let user = format!("u{}", rand::random::<u32>() % 5_000);
                let seat = format!(
                    "A-{}-{}",
                    1 + rand::random::<u32>() % 10,
                    1 + rand::random::<u32>() % 10
                );
                let held = hold(&app, &event, &user, &[&seat]).await;
                match held.status {
                    StatusCode::CREATED => {
                        let id = held.body["id"].as_str().unwrap().to_owned();
                        let paid = confirm(&app, &id, &user, "tok_ok", &format!("k-{i}")).await;
                        assert_eq!(paid.status, StatusCode::OK, "{:?}", paid.body);
                        (1, 0)
                    }
                    StatusCode::CONFLICT => {
                        assert_eq!(held.slug(), "seats-taken");
                        (0, 1)
                    }
                    other => panic!("unexpected {other}: {:?}", held.body),
                }
            });
        }
        let (mut sold, mut conflicts) = (0, 0);
        while let Some(done) = tasks.join_next().await {
            let (s, c) = done.expect("task");
            sold += s;
            conflicts += c;
        }
        let elapsed = started.elapsed();
        eprintln!(
            "{}: {ATTEMPTS} attempts ({IN_FLIGHT} in flight, 2 instances) in {elapsed:?}: \
             {sold} confirmed, {conflicts} conflicts",
            db.engine()
        );
        assert_eq!(sold + conflicts, ATTEMPTS);
        assert_eq!(sold, 100, "every seat sells exactly once");

        let map = seat_status(&apps[1], &event).await;
        assert_eq!(map.len(), 100);
        assert!(map.values().all(|s| s == "sold"), "{map:?}");
        let rows = a.db().reservations_of_event(&event, 20_000).await.unwrap();
        let mut owner = HashMap::new();
        for r in rows.iter().filter(|r| r.state == girder_ticketmaster::ReservationState::Confirmed)
        {
            let charges = a.provider().charges_for_reference(&r.id).await.unwrap();
            assert_eq!(charges.len(), 1, "one charge per confirmed reservation");
            assert!(!charges[0].refunded);
            for seat in &r.seats {
                assert!(owner.insert(seat.clone(), r.id.clone()).is_none(), "{seat} sold twice");
            }
        }
        assert_eq!(owner.len(), 100, "every sold seat has exactly one confirmed reservation");
        assert_eq!(a.provider().totals().await.unwrap(), (100, 0), "charges == sold seats");
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_hold_frees_the_seat_and_charges_nothing() {
    for db in TestDb::all("a_lapsed_hold_frees_the_seat_and_charges_nothing").await {
        let clock = ManualClock::new(T0);
        let tm = open(&db, &clock, 4).await;
        let app = routed(&tm);
        let event = event(&app, 2, 2, None).await;

        let alice = hold(&app, &event, "alice", &["A-1-1"]).await;
        assert_eq!(alice.status, StatusCode::CREATED, "{:?}", alice.body);
        assert_eq!(alice.body["state"], "held");
        let alice_id = alice.body["id"].as_str().unwrap().to_owned();
        assert_eq!(seat_status(&app, &event).await["A-1-1"], "held");
        assert_eq!(hold(&app, &event, "bob", &["A-1-1"]).await.status, StatusCode::CONFLICT);

        clock.advance(Duration::from_millis(TTL_MS));
        assert_eq!(seat_status(&app, &event).await["A-1-1"], "available", "lapsed at once");
        let bob = hold(&app, &event, "bob", &["A-1-1"]).await;
        assert_eq!(bob.status, StatusCode::CREATED, "{:?}", bob.body);

        let late = confirm(&app, &alice_id, "alice", "tok_ok", "alice-late").await;
        assert_eq!(late.status, StatusCode::CONFLICT);
        assert_eq!(late.slug(), "hold-expired");
        assert!(tm.provider().charges_for("alice-late").await.unwrap().is_empty());
        let paid = confirm(&app, bob.body["id"].as_str().unwrap(), "bob", "tok_ok", "bob-1").await;
        assert_eq!(paid.status, StatusCode::OK, "{:?}", paid.body);
        assert_eq!(seat_status(&app, &event).await["A-1-1"], "sold");

        // A charge whose answer was lost, retried after the hold lapsed: the
        // charge exists, the sale cannot happen, so it is refunded.
        let carol = hold(&app, &event, "carol", &["A-1-2"]).await;
        let carol_id = carol.body["id"].as_str().unwrap().to_owned();
        let lost = confirm(&app, &carol_id, "carol", "tok_timeout_after", "carol-1").await;
        assert_eq!(lost.status, StatusCode::GATEWAY_TIMEOUT);
        clock.advance(Duration::from_millis(TTL_MS));
        let retry = confirm(&app, &carol_id, "carol", "tok_timeout_after", "carol-1").await;
        assert_eq!(retry.status, StatusCode::CONFLICT, "{:?}", retry.body);
        assert_eq!(retry.slug(), "hold-expired");
        let charges = tm.provider().charges_for("carol-1").await.unwrap();
        assert_eq!(charges.len(), 1);
        assert!(charges[0].refunded, "a charge whose hold was lost is refunded");
        assert_ne!(seat_status(&app, &event).await["A-1-2"], "sold");

        // Abandoned after a timeout: the sweeper expires the row and refunds.
        let dave = hold(&app, &event, "dave", &["A-2-1"]).await;
        let dave_id = dave.body["id"].as_str().unwrap().to_owned();
        let lost = confirm(&app, &dave_id, "dave", "tok_timeout_after", "dave-1").await;
        assert_eq!(lost.status, StatusCode::GATEWAY_TIMEOUT);
        clock.advance(Duration::from_millis(TTL_MS));
        assert!(tm.sweep_once().await.unwrap() >= 1);
        assert_eq!(get(&app, &format!("/reservations/{dave_id}")).await.body["state"], "expired");
        assert_eq!(get(&app, &format!("/reservations/{alice_id}")).await.body["state"], "expired");
        assert!(tm.provider().charges_for("dave-1").await.unwrap()[0].refunded);
        assert_eq!(tm.provider().totals().await.unwrap(), (1, 2), "only bob's charge stands");
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_never_charge_twice() {
    for db in TestDb::all("payments_never_charge_twice").await {
        let clock = ManualClock::new(T0);
        let tm = open(&db, &clock, 8).await;
        let app = routed(&tm);
        let event = event(&app, 5, 10, None).await;
        let reserve = |user: &'static str, seat: &'static str| {
            let app = app.clone();
            let event = event.clone();
            async move {
                let r = hold(&app, &event, user, &[seat]).await;
                assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
                r.body["id"].as_str().unwrap().to_owned()
            }
        };

        // Declined: 402, still held, nothing sold; the key replays 402 for the same
        // request and refuses another body; a new key may pay.
        let id = reserve("ann", "A-1-1").await;
        let declined = confirm(&app, &id, "ann", "tok_decline", "ann-1").await;
        assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(declined.slug(), "payment-declined");
        assert_eq!(get(&app, &format!("/reservations/{id}")).await.body["state"], "held");
        assert_eq!(seat_status(&app, &event).await["A-1-1"], "held");
        let replay = confirm(&app, &id, "ann", "tok_decline", "ann-1").await;
        assert_eq!((replay.status, &replay.raw), (StatusCode::PAYMENT_REQUIRED, &declined.raw));
        let other_token = confirm(&app, &id, "ann", "tok_ok", "ann-1").await;
        assert_eq!(other_token.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(other_token.slug(), "idempotency-key-reused");
        assert!(tm.provider().charges_for("ann-1").await.unwrap().is_empty());
        let paid = confirm(&app, &id, "ann", "tok_ok", "ann-2").await;
        assert_eq!(paid.status, StatusCode::OK, "{:?}", paid.body);
        assert_eq!(paid.body["state"], "confirmed");
        assert_eq!(paid.body["amount_cents"], 2500);

        // Charged but the answer was lost; the retry finds the same charge.
        for (user, seat, token) in
            [("ben", "A-1-2", "tok_timeout_after"), ("cat", "A-1-3", "tok_timeout_before")]
        {
            let id = reserve(user, seat).await;
            let key = format!("{user}-1");
            let first = confirm(&app, &id, user, token, &key).await;
            assert_eq!(first.status, StatusCode::GATEWAY_TIMEOUT, "{token}");
            assert_eq!(first.slug(), "payment-timeout");
            let second = confirm(&app, &id, user, token, &key).await;
            assert_eq!(second.status, StatusCode::OK, "{token}: {:?}", second.body);
            let third = confirm(&app, &id, user, token, &key).await;
            assert_eq!((third.status, &third.raw), (StatusCode::OK, &second.raw), "replayed");
            let charges = tm.provider().charges_for(&key).await.unwrap();
            assert_eq!(charges.len(), 1, "{token}: exactly one charge");
            assert_eq!(second.body["charge_id"].as_str(), Some(charges[0].id.as_str()));
            assert_eq!(tm.provider().charges_for_reference(&id).await.unwrap().len(), 1);
            // Another key cannot pay for it again.
            let again = confirm(&app, &id, user, "tok_ok", &format!("{user}-2")).await;
            assert_eq!(again.status, StatusCode::CONFLICT);
            assert_eq!(tm.provider().charges_for_reference(&id).await.unwrap().len(), 1);
        }

        // 20 concurrent confirms with one key: one charge, answers 200 or in-progress.
        let id = reserve("dan", "A-2-1").await;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (app, id) = (app.clone(), id.clone());
            tasks.spawn(async move { confirm(&app, &id, "dan", "tok_ok", "dan-1").await });
        }
        let mut ok_bodies = HashSet::new();
        while let Some(reply) = tasks.join_next().await {
            let reply = reply.unwrap();
            match reply.status {
                StatusCode::OK => {
                    ok_bodies.insert(reply.raw);
                }
                StatusCode::CONFLICT => assert_eq!(reply.slug(), "request-in-progress"),
                other => panic!("unexpected {other}: {:?}", reply.body),
            }
        }
        assert_eq!(ok_bodies.len(), 1, "every 200 is the same answer");
        assert_eq!(tm.provider().charges_for("dan-1").await.unwrap().len(), 1);
        let replay = confirm(&app, &id, "dan", "tok_ok", "dan-1").await;
        assert!(ok_bodies.contains(&replay.raw));

        // 10 concurrent confirms of one reservation with 10 different keys: one charge.
        let id = reserve("eve", "A-2-2").await;
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..10 {
            let (app, id) = (app.clone(), id.clone());
            tasks.spawn(
                async move { confirm(&app, &id, "eve", "tok_ok", &format!("eve-{k}")).await },
            );
        }
        let mut oks = 0;
        while let Some(reply) = tasks.join_next().await {
            let reply = reply.unwrap();
            match reply.status {
                StatusCode::OK => oks += 1,
                StatusCode::CONFLICT => {}
                other => panic!("unexpected {other}: {:?}", reply.body),
            }
        }
        assert_eq!(oks, 1);
        assert_eq!(tm.provider().charges_for_reference(&id).await.unwrap().len(), 1);

        // The same key for another reservation: 422.
        let other = reserve("fay", "A-2-3").await;
        let reused = confirm(&app, &other, "fay", "tok_ok", "dan-1").await;
        assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reused.slug(), "idempotency-key-reused");

        let map = seat_status(&app, &event).await;
        let sold = map.values().filter(|s| *s == "sold").count();
        assert_eq!(sold, 5, "ann, ben, cat, dan, eve");
        assert_eq!(tm.provider().totals().await.unwrap(), (5, 0), "charges == sold seats");
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_waiting_room_admits_by_position_and_time() {
    for db in TestDb::all("the_waiting_room_admits_by_position_and_time").await {
        let clock = ManualClock::new(T0);
        let one = open(&db, &clock, 4).await;
        let two = open(&db, &clock, 4).await;
        let (a, b) = (routed(&one), routed(&two));
        let event = event(&a, 2, 10, Some(2)).await;
        let queue = format!("/events/{event}/queue");

        // Positions are dense, stable and agreed by both instances.
        for (i, user) in ["u1", "u2", "u3"].iter().enumerate() {
            let app = if i % 2 == 0 { &a } else { &b };
            let joined = post(app, &queue, &json!({"user": user})).await;
            assert_eq!(joined.status, StatusCode::OK, "{:?}", joined.body);
            assert_eq!(joined.body["position"], i + 1);
            assert_eq!(joined.body["admitted"], false);
        }
        assert_eq!(post(&b, &queue, &json!({"user": "u1"})).await.body["position"], 1);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40 {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            let queue = queue.clone();
            tasks.spawn(async move {
                post(&app, &queue, &json!({"user": format!("m{}", i % 20)})).await.body["position"]
                    .as_i64()
                    .unwrap()
            });
        }
        let mut positions = HashSet::new();
        while let Some(p) = tasks.join_next().await {
            positions.insert(p.unwrap());
        }
        assert_eq!(
            positions,
            (4..=23).collect::<HashSet<i64>>(),
            "20 users, dense, joined twice each"
        );

        // 2 per second from T0: position 1 at +500 ms, 3 at +1500 ms.
        let u3 = get(&a, &format!("{queue}?user=u3")).await;
        assert_eq!(u3.body["estimated_wait_ms"], 1500);
        assert!(u3.body["admission"].is_null());
        let reserve = format!("/events/{event}/reservations");
        let denied = post(&a, &reserve, &json!({"user": "u1", "seats": ["A-1-1"]})).await;
        assert_eq!((denied.status, denied.slug()), (StatusCode::FORBIDDEN, "admission-required"));
        let forged = post(
            &a,
            &reserve,
            &json!({"user": "u1", "seats": ["A-1-1"], "admission": "00".repeat(32)}),
        )
        .await;
        assert_eq!((forged.status, forged.slug()), (StatusCode::FORBIDDEN, "admission-invalid"));

        clock.advance(Duration::from_millis(499));
        assert_eq!(get(&b, &format!("{queue}?user=u1")).await.body["admitted"], false);
        clock.advance(Duration::from_millis(1));
        let u1 = get(&b, &format!("{queue}?user=u1")).await;
        assert_eq!(u1.body["admitted"], true);
        assert_eq!(get(&a, &format!("{queue}?user=u2")).await.body["admitted"], false);
        let token = u1.body["admission"].as_str().unwrap().to_owned();
        let stolen =
            post(&a, &reserve, &json!({"user": "u2", "seats": ["A-1-2"], "admission": token}))
                .await;
        assert_eq!(stolen.status, StatusCode::FORBIDDEN, "a token is for one user");
        let held =
            post(&a, &reserve, &json!({"user": "u1", "seats": ["A-1-1"], "admission": token}))
                .await;
        assert_eq!(held.status, StatusCode::CREATED, "{:?}", held.body);

        clock.advance(Duration::from_millis(1_000));
        let u3 = get(&a, &format!("{queue}?user=u3")).await;
        assert_eq!(
            (u3.body["admitted"].clone(), u3.body["estimated_wait_ms"].clone()),
            (json!(true), json!(0))
        );
        let other = post(&a, &format!("/events/{}/queue", event), &json!({"user": "late"})).await;
        assert_eq!(other.body["position"], 24);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_searched_and_paged() {
    for db in TestDb::all("events_are_searched_and_paged").await {
        let clock = ManualClock::new(T0);
        let tm = open(&db, &clock, 4).await;
        let app = routed(&tm);
        let venue = post(
            &app,
            "/venues",
            &json!({"name": "Arena", "city": "Rome",
            "sections": [{"name": "Floor", "rows": 1, "seats_per_row": 5, "price_cents": 100}]}),
        )
        .await;
        assert_eq!(venue.status, StatusCode::CREATED);
        assert_eq!(venue.body["seat_count"], 5);
        let vid = venue.body["id"].as_str().unwrap();
        assert_eq!(get(&app, &format!("/venues/{vid}")).await.body["name"], "Arena");
        let names = ["Rock Night", "Jazz Brunch", "ROCK Opera", "100% Pop", "Folk_Rock"];
        for (day, name) in names.iter().enumerate() {
            let made = post(
                &app,
                "/events",
                &json!({"name": name, "venue_id": vid,
                "starts_at": format!("2030-01-{:02}T20:00:00Z", day + 1)}),
            )
            .await;
            assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
            assert_eq!(
                get(&app, &format!("/events/{}", made.body["id"].as_str().unwrap())).await.body["name"],
                *name
            );
        }
        let list = |q: &str| {
            let app = app.clone();
            let q = q.to_owned();
            async move {
                let mut seen = Vec::new();
                let mut cursor = String::new();
                loop {
                    let uri = format!("/events?limit=2{q}{cursor}");
                    let page = get(&app, &uri).await;
                    assert_eq!(page.status, StatusCode::OK, "{uri}: {:?}", page.body);
                    for e in page.body["items"].as_array().unwrap() {
                        seen.push(e["name"].as_str().unwrap().to_owned());
                    }
                    match page.body["next_cursor"].as_str() {
                        Some(c) => cursor = format!("&cursor={c}"),
                        None => return seen,
                    }
                }
            }
        };
        assert_eq!(list("").await, names);
        assert_eq!(list("&q=rock").await, ["Rock Night", "ROCK Opera", "Folk_Rock"]);
        assert_eq!(list("&q=100%25").await, ["100% Pop"]);
        assert_eq!(list("&q=k_r").await, ["Folk_Rock"], "_ is literal");
        assert_eq!(list("&q=%25").await, ["100% Pop"], "% is literal");
        assert_eq!(
            list("&from=2030-01-02T00:00:00Z&to=2030-01-04T00:00:00Z").await,
            ["Jazz Brunch", "ROCK Opera"]
        );
        // A cursor only continues its own list.
        let page = get(&app, "/events?limit=1&q=rock").await;
        let cursor = page.body["next_cursor"].as_str().unwrap();
        assert_eq!(
            get(&app, &format!("/events?limit=1&cursor={cursor}")).await.status,
            StatusCode::BAD_REQUEST
        );
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_releases_the_seats() {
    for db in TestDb::all("cancel_releases_the_seats").await {
        let clock = ManualClock::new(T0);
        let tm = open(&db, &clock, 4).await;
        let app = routed(&tm);
        let event = event(&app, 1, 5, None).await;
        let r = hold(&app, &event, "ivy", &["A-1-1", "A-1-2"]).await;
        assert_eq!(r.status, StatusCode::CREATED);
        let id = r.body["id"].as_str().unwrap().to_owned();
        let map = seat_status(&app, &event).await;
        assert_eq!(
            (map["A-1-1"].as_str(), map["A-1-2"].as_str(), map["A-1-3"].as_str()),
            ("held", "held", "available")
        );
        // All or nothing: one taken seat refuses the whole hold, naming it.
        let partial = hold(&app, &event, "joe", &["A-1-3", "A-1-2"]).await;
        assert_eq!(partial.status, StatusCode::CONFLICT);
        assert!(partial.body["detail"].as_str().unwrap().contains("A-1-2"));
        assert_eq!(seat_status(&app, &event).await["A-1-3"], "available");

        let uri = format!("/reservations/{id}");
        assert_eq!(
            call(&app, "DELETE", &format!("{uri}?user=joe"), None, &[]).await.status,
            StatusCode::FORBIDDEN
        );
        let done = call(&app, "DELETE", &uri, Some(r#"{"user":"ivy"}"#), &[]).await;
        assert_eq!(done.status, StatusCode::NO_CONTENT);
        assert_eq!(get(&app, &uri).await.body["state"], "cancelled");
        assert!(seat_status(&app, &event).await.values().all(|s| s == "available"));
        let again = call(&app, "DELETE", &format!("{uri}?user=ivy"), None, &[]).await;
        assert_eq!((again.status, again.slug()), (StatusCode::CONFLICT, "reservation-not-held"));
        let late = confirm(&app, &id, "ivy", "tok_ok", "ivy-1").await;
        assert_eq!(late.status, StatusCode::CONFLICT);
        assert_eq!(
            hold(&app, &event, "joe", &["A-1-3", "A-1-2"]).await.status,
            StatusCode::CREATED
        );
        assert_eq!(tm.provider().totals().await.unwrap(), (0, 0));
        db.drop_db().await;
    }
}

/// Method, path, body, headers, expected status and problem type.
type Case<'a> = (&'a str, String, Option<String>, Vec<(&'a str, &'a str)>, StatusCode, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_problem() {
    for db in TestDb::all("bad_input_gets_a_4xx_problem").await {
        let clock = ManualClock::new(T0);
        let tm = open(&db, &clock, 4).await;
        let app = routed(&tm);
        let event = event(&app, 2, 2, None).await;
        let queued = event_with_room(&app).await;
        let reservations = format!("/events/{event}/reservations");
        let mine =
            hold(&app, &event, "amy", &["A-1-1"]).await.body["id"].as_str().unwrap().to_owned();
        let lapsing =
            hold(&app, &event, "amy", &["A-2-2"]).await.body["id"].as_str().unwrap().to_owned();
        let confirm_uri = format!("/reservations/{mine}/confirm");
        let pay = r#"{"user":"amy","payment_token":"tok_ok"}"#;
        let long_key = "k".repeat(129);
        let venue =
            |sections: Value| json!({"name": "V", "city": "C", "sections": sections}).to_string();
        let section = |name: &str, rows: u32, per_row: u32| json!({"name": name, "rows": rows, "seats_per_row": per_row, "price_cents": 1});

        let cases: Vec<Case<'_>> = vec![
            ("POST", "/events/e_nope/reservations".into(), Some(r#"{"user":"x","seats":["A-1-1"]}"#.into()), vec![], StatusCode::NOT_FOUND, "unknown-event"),
            ("POST", reservations.clone(), Some(r#"{"user":"x","seats":["A-9-1"]}"#.into()), vec![], StatusCode::NOT_FOUND, "unknown-seat"),
            ("POST", reservations.clone(), Some(r#"{"user":"x","seats":["Z-1-1"]}"#.into()), vec![], StatusCode::NOT_FOUND, "unknown-seat"),
            ("POST", reservations.clone(), Some(r#"{"user":"x","seats":["A-1-1"]}"#.into()), vec![], StatusCode::CONFLICT, "seats-taken"),
            ("POST", reservations.clone(), Some(r#"{"user":"x","seats":[]}"#.into()), vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("POST", reservations.clone(), Some(json!({"user": "x", "seats": (1..=11).map(|i| format!("A-1-{i}")).collect::<Vec<_>>()}).to_string()), vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("POST", reservations.clone(), Some(r#"{"user":"x","seats":["A-1-2","A-1-2"]}"#.into()), vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("POST", reservations.clone(), Some(r#"{"seats":["A-1-2"]}"#.into()), vec![("authorization", "")], StatusCode::UNAUTHORIZED, "unauthenticated"),
            ("POST", reservations.clone(), Some(r#"{"seats":["A-1-2"]}"#.into()), vec![("authorization", "Bearer forged")], StatusCode::UNAUTHORIZED, "unauthenticated"),
            ("POST", reservations.clone(), Some(r#"{"seats":["A-1-2"]}"#.into()), vec![("authorization", "Basic YTpi")], StatusCode::UNAUTHORIZED, "unauthenticated"),
            ("POST", reservations.clone(), Some(r#"{"user":"x","seats":["A-1-2"],"extra":1}"#.into()), vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-body"),
            ("POST", reservations.clone(), Some(r#"{"seats":["#.into()), vec![], StatusCode::BAD_REQUEST, "malformed-json"),
            ("POST", format!("/events/{queued}/reservations"), Some(r#"{"user":"x","seats":["A-1-1"]}"#.into()), vec![], StatusCode::FORBIDDEN, "admission-required"),
            ("POST", confirm_uri.clone(), Some(pay.into()), vec![], StatusCode::BAD_REQUEST, "idempotency-key-missing"),
            ("POST", confirm_uri.clone(), Some(pay.into()), vec![("idempotency-key", long_key.as_str())], StatusCode::BAD_REQUEST, "invalid-idempotency-key"),
            ("POST", confirm_uri.clone(), Some(pay.into()), vec![("idempotency-key", "has space")], StatusCode::BAD_REQUEST, "invalid-idempotency-key"),
            ("POST", confirm_uri.clone(), Some(r#"{"payment_token":"tok_ok""#.into()), vec![("idempotency-key", "k1")], StatusCode::BAD_REQUEST, "malformed-json"),
            ("POST", confirm_uri.clone(), Some(r#"{"user":"bo","payment_token":"tok_ok"}"#.into()), vec![("idempotency-key", "k2")], StatusCode::FORBIDDEN, "not-your-reservation"),
            ("POST", "/reservations/r_nope/confirm".into(), Some(pay.into()), vec![("idempotency-key", "k3")], StatusCode::NOT_FOUND, "unknown-reservation"),
            ("POST", confirm_uri.clone(), Some(r#"{"user":"amy","payment_token":""}"#.into()), vec![("idempotency-key", "k4")], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("DELETE", format!("/reservations/{mine}?user=bo"), None, vec![], StatusCode::FORBIDDEN, "not-your-reservation"),
            ("DELETE", format!("/reservations/{mine}"), None, vec![("authorization", "")], StatusCode::UNAUTHORIZED, "unauthenticated"),
            ("GET", format!("/reservations/{mine}?user=bo"), None, vec![], StatusCode::FORBIDDEN, "not-your-reservation"),
            ("GET", format!("/reservations/{mine}"), None, vec![("authorization", "")], StatusCode::UNAUTHORIZED, "unauthenticated"),
            ("POST", "/venues?user=bo".into(), Some(venue(json!([section("A", 1, 1)]))), vec![], StatusCode::FORBIDDEN, "forbidden"),
            ("POST", "/events".into(), Some(r#"{"name":"x","venue_id":"v","starts_at":"2030-01-01T00:00:00Z"}"#.into()), vec![("authorization", "")], StatusCode::UNAUTHORIZED, "unauthenticated"),
            ("GET", "/reservations/r_nope".into(), None, vec![], StatusCode::NOT_FOUND, "unknown-reservation"),
            ("GET", "/events/e_nope".into(), None, vec![], StatusCode::NOT_FOUND, "unknown-event"),
            ("GET", "/events/e_nope/seats".into(), None, vec![], StatusCode::NOT_FOUND, "unknown-event"),
            ("GET", "/venues/v_nope".into(), None, vec![], StatusCode::NOT_FOUND, "unknown-venue"),
            ("GET", "/events?limit=0".into(), None, vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("GET", "/events?cursor=forged".into(), None, vec![], StatusCode::BAD_REQUEST, "invalid-cursor"),
            ("GET", "/events?from=yesterday".into(), None, vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("GET", "/events?bogus=1".into(), None, vec![], StatusCode::BAD_REQUEST, "bad-query"),
            ("POST", format!("/events/{event}/queue"), Some(r#"{"user":"x"}"#.into()), vec![], StatusCode::NOT_FOUND, "no-waiting-room"),
            ("GET", format!("/events/{queued}/queue?user=nobody"), None, vec![], StatusCode::NOT_FOUND, "not-in-queue"),
            ("POST", "/venues".into(), Some(venue(json!((0..21).map(|i| section(&format!("S{i}"), 1, 1)).collect::<Vec<_>>()))), vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("POST", "/venues".into(), Some(venue(json!([section("A", 101, 1)]))), vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("POST", "/venues".into(), Some(venue(json!([section("A", 1, 101)]))), vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("POST", "/venues".into(), Some(venue(json!([section("A", 100, 100), section("B", 100, 100), section("C", 1, 1)]))), vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("POST", "/venues".into(), Some(venue(json!([section("A-B", 1, 1)]))), vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("POST", "/venues".into(), Some(venue(json!([section("A", 1, 1), section("A", 1, 1)]))), vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("POST", "/venues".into(), Some(venue(json!([]))), vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("POST", "/events".into(), Some(r#"{"name":"x","venue_id":"v_nope","starts_at":"2030-01-01T00:00:00Z"}"#.into()), vec![], StatusCode::NOT_FOUND, "unknown-venue"),
            ("POST", "/events".into(), Some(r#"{"name":"x","venue_id":"v_nope","starts_at":"soon"}"#.into()), vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
            ("POST", "/events".into(), Some(r#"{"name":"x","venue_id":"v","starts_at":"2030-01-01T00:00:00Z","waiting_room":{"admit_per_sec":0}}"#.into()), vec![], StatusCode::UNPROCESSABLE_ENTITY, "invalid-request"),
        ];
        for (method, uri, body, headers, status, slug) in &cases {
            let reply = call(&app, method, uri, body.as_deref(), headers).await;
            assert_eq!(
                (reply.status, reply.slug()),
                (*status, *slug),
                "{} {method} {uri} {body:?}: {}",
                db.engine(),
                String::from_utf8_lossy(&reply.raw)
            );
        }

        // A lapsed hold cannot be confirmed or cancelled.
        clock.advance(Duration::from_millis(TTL_MS));
        let late = confirm(&app, &lapsing, "amy", "tok_ok", "late-1").await;
        assert_eq!((late.status, late.slug()), (StatusCode::CONFLICT, "hold-expired"));
        assert!(tm.provider().charges_for("late-1").await.unwrap().is_empty());
        assert_eq!(tm.provider().totals().await.unwrap(), (0, 0), "no bad input charged");
        db.drop_db().await;
    }
}

async fn event_with_room(app: &Router) -> String {
    event(app, 1, 1, Some(1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_survive_a_restart_and_still_lapse_on_time() {
    for db in TestDb::all("holds_survive_a_restart_and_still_lapse_on_time").await {
        let clock = ManualClock::new(T0);
        let first = open(&db, &clock, 4).await;
        let app = routed(&first);
        let event = event(&app, 1, 3, None).await;
        let r = hold(&app, &event, "kim", &["A-1-1"]).await;
        let id = r.body["id"].as_str().unwrap().to_owned();
        let paid = hold(&app, &event, "lee", &["A-1-2"]).await;
        let paid_id = paid.body["id"].as_str().unwrap().to_owned();
        // Lee's payment answer is lost just before the instance dies.
        let lost = confirm(&app, &paid_id, "lee", "tok_timeout_after", "lee-1").await;
        assert_eq!(lost.status, StatusCode::GATEWAY_TIMEOUT);
        drop(app);
        drop(first);

        let second = open(&db, &clock, 4).await;
        let app = routed(&second);
        assert_eq!(get(&app, &format!("/reservations/{id}")).await.body["state"], "held");
        assert_eq!(seat_status(&app, &event).await["A-1-1"], "held");
        assert_eq!(hold(&app, &event, "max", &["A-1-1"]).await.status, StatusCode::CONFLICT);
        // The retry on the new instance finds the charge the old one made.
        let retry = confirm(&app, &paid_id, "lee", "tok_timeout_after", "lee-1").await;
        assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
        assert_eq!(second.provider().charges_for("lee-1").await.unwrap().len(), 1);

        clock.advance(Duration::from_millis(TTL_MS - 1));
        assert_eq!(seat_status(&app, &event).await["A-1-1"], "held");
        clock.advance(Duration::from_millis(1));
        assert_eq!(seat_status(&app, &event).await["A-1-1"], "available");
        assert_eq!(second.sweep_once().await.unwrap(), 1);
        assert_eq!(get(&app, &format!("/reservations/{id}")).await.body["state"], "expired");
        assert_eq!(get(&app, &format!("/reservations/{paid_id}")).await.body["state"], "confirmed");
        assert_eq!(seat_status(&app, &event).await["A-1-2"], "sold");
        db.drop_db().await;
    }
}
