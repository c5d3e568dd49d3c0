//! Ticketmaster as real `girder serve` processes: three instances sharing
//! PostgreSQL and Redis sell each seat exactly once under 10,000 concurrent
//! attempts, and a SIGKILLed instance's holds still lapse on time while its
//! confirmed sales survive.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Server, TestDb, client};
use girder_core::services::{Service, require};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// A bearer token for a fresh demo identity from the server at `base` (`role`: `user`
/// or `operator`). The signing key is shared through the database, so the token
/// works on every instance.
async fn sign_in(http: &reqwest::Client, base: &str, role: &str) -> String {
    let reply = http
        .post(format!("{base}/api/auth/demo"))
        .json(&json!({ "role": role }))
        .send()
        .await
        .expect("sign in");
    assert_eq!(reply.status().as_u16(), 201);
    let token: Value = reply.json().await.expect("token");
    format!("Bearer {}", token["token"].as_str().expect("token"))
}

async fn post(http: &reqwest::Client, url: String, auth: &str, body: Value) -> (u16, Value) {
    let reply =
        http.post(url).header("authorization", auth).json(&body).send().await.expect("request");
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or(Value::Null))
}

/// A venue with `sections` sections of one row of `per_row` seats, and an event there.
async fn event(http: &reqwest::Client, base: &str, sections: usize, per_row: u32) -> String {
    let operator = sign_in(http, base, "operator").await;
    let names = ["A", "B", "C", "D", "E", "F", "G", "H", "J", "K"];
    let sections: Vec<Value> = names[..sections]
        .iter()
        .map(|n| json!({"name": n, "rows": 1, "seats_per_row": per_row, "price_cents": 5_000}))
        .collect();
    let (status, venue) = post(
        http,
        format!("{base}/api/ticketmaster/venues"),
        &operator,
        json!({"name": "Arena", "city": "Springfield", "sections": sections}),
    )
    .await;
    assert_eq!(status, 201, "{venue}");
    let (status, event) = post(
        http,
        format!("{base}/api/ticketmaster/events"),
        &operator,
        json!({"name": "Finals", "venue_id": venue["id"], "starts_at": "2999-06-01T20:00:00Z", "waiting_room": null}),
    )
    .await;
    assert_eq!(status, 201, "{event}");
    event["id"].as_str().expect("event id").to_owned()
}

async fn seat_states(http: &reqwest::Client, base: &str, event: &str) -> HashMap<String, String> {
    let map: Value = http
        .get(format!("{base}/api/ticketmaster/events/{event}/seats"))
        .send()
        .await
        .expect("seat map")
        .json()
        .await
        .expect("json");
    map["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().expect("id").to_owned(),
                s["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect()
}

/// 10,000 attempts, at most 256 in flight, spread over three instances sharing
/// PostgreSQL (and Redis, for the caches): exactly 100 seats sold, each to exactly one
/// reservation, each with exactly one charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_sell_each_seat_exactly_once() {
    let Some(redis) = require(Service::Redis, "three_instances_sell_each_seat_exactly_once") else {
        return;
    };
    let Some(db) = TestDb::postgres("three_instances_sell_each_seat_exactly_once").await else {
        return;
    };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let servers: Vec<Server> = dirs
        .iter()
        .map(|d| {
            Server::start(
                d.path(),
                db.url(),
                &["--redis-url", &redis, "--db-max-connections", "24"],
            )
        })
        .collect();
    let bases: Arc<Vec<String>> = Arc::new(servers.iter().map(|s| s.base.clone()).collect());
    let http = client();
    let event = Arc::new(event(&http, &bases[0], 10, 10).await);
    let seats: Arc<Vec<String>> =
        Arc::new(seat_states(&http, &bases[1], &event).await.into_keys().collect());
    assert_eq!(seats.len(), 100);

    const ATTEMPTS: usize = 10_000;
    let in_flight = Arc::new(Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for attempt in 0..ATTEMPTS {
        let permit = Arc::clone(&in_flight).acquire_owned().await.expect("semaphore");
        let (http, bases, event, seats) =
            (http.clone(), Arc::clone(&bases), Arc::clone(&event), Arc::clone(&seats));
        tasks.spawn(async move {
            let _permit = permit;
            let base = &bases[attempt % bases.len()];
            let seat = &seats[(attempt * 7_919) % seats.len()];
            let user = sign_in(&http, base, "user").await;
            let (status, held) = post(
                &http,
                format!("{base}/api/ticketmaster/events/{event}/reservations"),
                &user,
                json!({"seats": [seat]}),
            )
            .await;
            match status {
                409 => return None,
                201 => {}
                other => panic!("reserve answered {other}: {held}"),
            }
            // Confirm on another instance than the one that took the hold.
            let other = &bases[(attempt + 1) % bases.len()];
            let id = held["id"].as_str().expect("reservation id");
            let reply = http
                .post(format!("{other}/api/ticketmaster/reservations/{id}/confirm"))
                .header("idempotency-key", format!("pay-{attempt}"))
                .header("authorization", &user)
                .json(&json!({"payment_token": "tok_ok"}))
                .send()
                .await
                .expect("confirm");
            let status = reply.status().as_u16();
            let body: Value = reply.json().await.expect("json");
            assert_eq!(status, 200, "{body}");
            Some((
                seat.clone(),
                id.to_owned(),
                body["charge_id"].as_str().expect("charge").to_owned(),
            ))
        });
    }
    let mut sold: HashMap<String, Vec<(String, String)>> = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        if let Some((seat, reservation, charge)) = done.expect("attempt task") {
            sold.entry(seat).or_default().push((reservation, charge));
        }
    }
    assert_eq!(sold.len(), 100, "every seat sold");
    let double: Vec<_> = sold.iter().filter(|(_, r)| r.len() > 1).collect();
    assert!(double.is_empty(), "seats confirmed to two buyers: {double:?}");
    let charges: std::collections::HashSet<_> =
        sold.values().flatten().map(|(_, c)| c.clone()).collect();
    assert_eq!(charges.len(), 100, "one distinct charge per sale");
    // Every instance agrees on the final map.
    for base in bases.iter() {
        let states = seat_states(&http, base, &event).await;
        assert!(states.values().all(|s| s == "sold"), "{base}: {states:?}");
    }
    drop(servers);
    db.drop_db().await;
}

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis())
        .expect("ms")
}

fn rfc3339_ms(text: &str) -> u64 {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).expect("ms")
}

/// SIGKILL an instance holding one reservation and having sold another; a new
/// instance on the same database still shows the sale, shows the hold until its
/// expiry, and the seat free right after it — on SQLite and on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_holds_lapse_on_time_and_its_sales_survive() {
    for db in TestDb::all("a_killed_instances_holds_lapse_on_time_and_its_sales_survive").await {
        let dir = tempfile::tempdir().expect("dir");
        // Long enough that the sale and the hold are made before it lapses on a loaded
        // machine; short enough to wait out.
        let hold_ms = "8000";
        let mut first =
            Server::start(dir.path(), db.url(), &["--ticketmaster-hold-ttl-ms", hold_ms]);
        let http = client();
        let event = event(&http, &first.base, 1, 4).await;
        let base = first.base.clone();
        let buyer = sign_in(&http, &base, "user").await;
        let holder = sign_in(&http, &base, "user").await;
        let reserve = |seat: &'static str, user: String| {
            let (http, base, event) = (http.clone(), base.clone(), event.clone());
            async move {
                let (status, body) = post(
                    &http,
                    format!("{base}/api/ticketmaster/events/{event}/reservations"),
                    &user,
                    json!({"seats": [seat]}),
                )
                .await;
                assert_eq!(status, 201, "{body}");
                body
            }
        };
        let sold = reserve("A-1-1", buyer.clone()).await;
        let reply = http
            .post(format!(
                "{base}/api/ticketmaster/reservations/{}/confirm",
                sold["id"].as_str().expect("id")
            ))
            .header("idempotency-key", "kill-test-pay")
            .header("authorization", &buyer)
            .json(&json!({"payment_token": "tok_ok"}))
            .send()
            .await
            .expect("confirm");
        assert_eq!(reply.status().as_u16(), 200, "{}", reply.text().await.unwrap_or_default());
        let held = reserve("A-1-2", holder).await;
        let expires_ms = rfc3339_ms(held["expires_at"].as_str().expect("expires_at"));
        first.kill();

        let second = Server::start(dir.path(), db.url(), &["--ticketmaster-hold-ttl-ms", hold_ms]);
        let states = seat_states(&http, &second.base, &event).await;
        assert_eq!(states["A-1-1"], "sold", "a confirmed sale survives SIGKILL ({})", db.engine());
        if now_ms() + 200 < expires_ms {
            assert_eq!(states["A-1-2"], "held", "the hold outlives its instance until it lapses");
        }
        // Poll (bounded) until the seat is free again; it must not free early.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let states = seat_states(&http, &second.base, &event).await;
            let seen_at = now_ms();
            if states["A-1-2"] == "available" {
                assert!(
                    seen_at >= expires_ms,
                    "freed {} ms before its expiry",
                    expires_ms - seen_at
                );
                assert!(seen_at <= expires_ms + 2_000, "freed {} ms late", seen_at - expires_ms);
                break;
            }
            assert_eq!(states["A-1-2"], "held", "before it lapses the seat stays held");
            assert!(
                seen_at <= expires_ms + 2_000,
                "still held {} ms after its expiry",
                seen_at - expires_ms
            );
            assert!(Instant::now() < deadline, "hold never lapsed: {states:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // And the freed seat can be held again, on the new instance.
        let (status, _) = post(
            &http,
            format!("{}/api/ticketmaster/events/{event}/reservations", second.base),
            &sign_in(&http, &second.base, "user").await,
            json!({"seats": ["A-1-2"]}),
        )
        .await;
        assert_eq!(status, 201);
        drop(second);
        db.drop_db().await;
    }
}
