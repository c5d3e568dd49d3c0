//! Uber through its API on SQLite and PostgreSQL: the nearest free driver gets the
//! offer, one acceptance wins, a lapsed or declined offer goes to the next driver
//! and never back, a ride nobody takes is cancelled, the state machine refuses what
//! it must, concurrent matching never gives a driver two rides or a ride two
//! drivers (checked on the stored history), and bad input gets problems.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use girder_core::{Clock, ManualClock, SystemClock};
use girder_http::identity::{Role, test_bearer as bearer, test_tokens};
use girder_sql::{Db, PoolConfig};
use girder_system::Context;
use girder_testkit::backends::TestDb;
use girder_uber::{Uber, UberConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

// ---------------------------------------------------------------- plumbing

struct Instance {
    uber: Arc<Uber>,
    router: Router,
    _data: tempfile::TempDir,
}

async fn open(db: &str, clock: Arc<dyn Clock>, tweak: impl FnOnce(&mut UberConfig)) -> Instance {
    open_on(db, None, clock, tweak).await
}

/// An instance on `db`, with its indexes and leases in Redis when `redis` is given.
async fn open_on(
    db: &str,
    redis: Option<&str>,
    clock: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut UberConfig),
) -> Instance {
    let data = tempfile::tempdir().expect("data dir");
    let pool = Db::connect(db, PoolConfig::default()).await.expect("database");
    girder_sql::migrate::run(&pool, girder_sql::migrate::server()).await.expect("migrations");
    girder_sql::migrate::run(&pool, girder_uber::migrations()).await.expect("migrations");
    let mut context = Context::new(pool, clock).with_data_dir(data.path());
    if let Some(url) = redis {
        context = context.with_redis(url);
    }
    let mut config = UberConfig::new();
    tweak(&mut config);
    let uber = Uber::open_with(&context, config).await.expect("open uber");
    let router = uber.api_router().layer(test_tokens().layer());
    Instance { uber, router, _data: data }
}

/// One request as `user` (an operator when "operator", nobody when empty).
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
        let role = if user == "operator" { Role::Operator } else { Role::User };
        request = request.header(header::AUTHORIZATION, bearer(user, role));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body)).expect("request"))
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

/// Metres north and east of the test's centre, as (lat, lon).
fn at(north_m: f64, east_m: f64) -> (f64, f64) {
    let (lat0, lon0) = (37.7749, -122.4194);
    (lat0 + north_m / 111_320.0, lon0 + east_m / (111_320.0 * lat0.to_radians().cos()))
}

async fn on_duty(i: &Instance, driver: &str, pos: (f64, f64)) {
    let (s, v) =
        call(&i.router, driver, "PUT", "/drivers/me", Some(json!({ "online": true }))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    fix(i, driver, pos).await;
}

async fn fix(i: &Instance, driver: &str, pos: (f64, f64)) -> Value {
    let body = json!({ "fixes": [{ "lat": pos.0, "lon": pos.1 }] });
    let (s, v) = call(&i.router, driver, "POST", "/drivers/me/locations", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn request(i: &Instance, rider: &str, pickup: (f64, f64)) -> String {
    let body = json!({
        "pickup": { "lat": pickup.0, "lon": pickup.1 },
        "dropoff": { "lat": pickup.0 + 0.01, "lon": pickup.1 },
    });
    let (s, v) = call(&i.router, rider, "POST", "/rides", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "requested");
    v["id"].as_str().expect("id").to_owned()
}

/// The offer open to `driver`: (ride, token), if any.
async fn offer(i: &Instance, driver: &str) -> Option<(String, i64)> {
    let (s, v) = call(&i.router, driver, "GET", "/drivers/me/offer", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let o = &v["offer"];
    (!o.is_null()).then(|| (o["ride"].as_str().unwrap().to_owned(), o["token"].as_i64().unwrap()))
}

async fn ride(i: &Instance, user: &str, id: &str) -> Value {
    let (s, v) = call(&i.router, user, "GET", &format!("/rides/{id}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn act(i: &Instance, user: &str, id: &str, action: &str) -> (StatusCode, Value) {
    call(
        &i.router,
        user,
        "POST",
        &format!("/rides/{id}/actions"),
        Some(json!({ "action": action })),
    )
    .await
}

// ---------------------------------------------------------------- matching

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearest_driver_gets_the_offer_and_one_acceptance_wins() {
    for db in TestDb::all("uber_nearest_driver").await {
        let i = open(db.url(), Arc::new(SystemClock), |_| {}).await;
        on_duty(&i, "far", at(3_000.0, 0.0)).await;
        on_duty(&i, "near", at(400.0, 0.0)).await;
        on_duty(&i, "beyond", at(9_000.0, 0.0)).await;
        let id = request(&i, "rider", at(0.0, 0.0)).await;
        assert_eq!(i.uber.match_round().await.unwrap(), 1);
        let (ride_id, token) =
            offer(&i, "near").await.expect("the nearest driver is offered the ride");
        assert_eq!(ride_id, id);
        assert_eq!(offer(&i, "far").await, None, "one driver at a time");
        // A wrong token, or another driver, cannot accept.
        let wrong = json!({ "token": token + 1 });
        let (s, _) =
            call(&i.router, "near", "POST", &format!("/rides/{id}/accept"), Some(wrong)).await;
        assert_eq!(s, StatusCode::CONFLICT);
        let right = json!({ "token": token });
        let (s, _) =
            call(&i.router, "far", "POST", &format!("/rides/{id}/accept"), Some(right.clone()))
                .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "never offered to them");
        let (s, v) =
            call(&i.router, "near", "POST", &format!("/rides/{id}/accept"), Some(right.clone()))
                .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["state"], "matched");
        assert_eq!(v["driver"], "near");
        // Accepting again changes nothing.
        let (s, _) =
            call(&i.router, "near", "POST", &format!("/rides/{id}/accept"), Some(right)).await;
        assert_eq!(s, StatusCode::CONFLICT);
        assert_eq!(ride(&i, "rider", &id).await["driver"], "near");
        // The matched driver is no longer free: a second rider's ride goes to "far".
        fix(&i, "near", at(400.0, 0.0)).await;
        let second = request(&i, "rider2", at(0.0, 0.0)).await;
        i.uber.match_round().await.unwrap();
        assert_eq!(offer(&i, "far").await.map(|o| o.0), Some(second));
        assert_eq!(offer(&i, "near").await, None);
        // The map: on-duty drivers within the radius, nearest first, busy ones not free.
        let (lat, lon) = at(0.0, 0.0);
        let uri = format!("/drivers/nearby?lat={lat}&lon={lon}&radius_m=5000");
        let (s, v) = call(&i.router, "rider", "GET", &uri, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let free: Vec<bool> =
            v["drivers"].as_array().unwrap().iter().map(|d| d["free"].as_bool().unwrap()).collect();
        assert_eq!(free, [false, true], "near (busy), far (free); beyond is out of range: {v}");
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_offer_goes_to_the_next_driver_and_never_back() {
    for db in TestDb::all("uber_lapsed_offer").await {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let i = open(db.url(), clock.clone(), |c| {
            c.offer_timeout_ms = 10_000;
            c.match_timeout_ms = 60_000;
            c.driver_ttl_ms = 600_000;
        })
        .await;
        on_duty(&i, "a", at(100.0, 0.0)).await;
        on_duty(&i, "b", at(200.0, 0.0)).await;
        let id = request(&i, "rider", at(0.0, 0.0)).await;
        i.uber.match_round().await.unwrap();
        let (_, token_a) = offer(&i, "a").await.expect("a first");
        // Before the deadline nothing moves.
        clock.advance(Duration::from_millis(9_000));
        i.uber.match_round().await.unwrap();
        assert!(offer(&i, "a").await.is_some());
        assert_eq!(offer(&i, "b").await, None);
        // After it, b gets the ride and a's token is worthless.
        clock.advance(Duration::from_millis(1_001));
        assert_eq!(offer(&i, "a").await, None, "lapsed");
        i.uber.match_round().await.unwrap();
        let (ride_b, token_b) = offer(&i, "b").await.expect("b next");
        assert_eq!(ride_b, id);
        let late = json!({ "token": token_a });
        let (s, _) = call(&i.router, "a", "POST", &format!("/rides/{id}/accept"), Some(late)).await;
        assert_eq!(s, StatusCode::CONFLICT);
        // b lets it lapse too: it never goes back to a, and is cancelled at the deadline.
        clock.advance(Duration::from_millis(10_001));
        i.uber.match_round().await.unwrap();
        assert_eq!(offer(&i, "a").await, None);
        assert_eq!(offer(&i, "b").await, None);
        assert_eq!(ride(&i, "rider", &id).await["state"], "requested");
        clock.advance(Duration::from_millis(60_000));
        i.uber.match_round().await.unwrap();
        let v = ride(&i, "rider", &id).await;
        assert_eq!(v["state"], "cancelled");
        assert_eq!(v["cancel_reason"], "no_driver");
        let late = json!({ "token": token_b });
        let (s, _) = call(&i.router, "b", "POST", &format!("/rides/{id}/accept"), Some(late)).await;
        assert_eq!(s, StatusCode::CONFLICT);
        let offers = i.uber.store().offers(&id).await.unwrap();
        let outcomes: Vec<_> =
            offers.iter().map(|o| (o.driver.as_str(), o.outcome.as_str())).collect();
        assert_eq!(outcomes, [("a", "expired"), ("b", "expired")]);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_offer_goes_to_the_next_driver_at_once() {
    for db in TestDb::all("uber_declined_offer").await {
        let i = open(db.url(), Arc::new(SystemClock), |_| {}).await;
        on_duty(&i, "a", at(100.0, 0.0)).await;
        on_duty(&i, "b", at(200.0, 0.0)).await;
        let id = request(&i, "rider", at(0.0, 0.0)).await;
        i.uber.match_round().await.unwrap();
        let (_, token) = offer(&i, "a").await.expect("a first");
        let (s, _) = call(
            &i.router,
            "a",
            "POST",
            &format!("/rides/{id}/decline"),
            Some(json!({ "token": token })),
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = call(
            &i.router,
            "a",
            "POST",
            &format!("/rides/{id}/decline"),
            Some(json!({ "token": token })),
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "declined once");
        i.uber.match_round().await.unwrap();
        assert_eq!(offer(&i, "b").await.map(|o| o.0), Some(id));
        assert_eq!(offer(&i, "a").await, None);
        db.drop_db().await;
    }
}

/// A burst of more rides than one matching round claims (32) is offered at once:
/// the matcher goes on while its rounds come back full instead of leaving the rest
/// for its next tick, here 10 s away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_one_round_is_offered_without_waiting_for_the_tick() {
    for db in TestDb::all("uber_burst").await {
        let i = open(db.url(), Arc::new(SystemClock), |c| {
            c.match_tick_ms = 10_000;
            // Every driver is a candidate, so no ride waits for a retry.
            c.candidates = 40;
        })
        .await;
        let drivers: Vec<String> = (0..40).map(|d| format!("burst{d}")).collect();
        for (n, d) in drivers.iter().enumerate() {
            on_duty(&i, d, at(50.0 * n as f64, 0.0)).await;
        }
        for r in 0..40 {
            request(&i, &format!("rider{r}"), at(50.0 * f64::from(r), 10.0)).await;
        }
        let started = tokio::time::Instant::now();
        let bg = running(&i);
        for d in &drivers {
            eventually(&format!("an offer to {d}"), || async { offer(&i, d).await }).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "40 rides took {:?} to be offered: the rides past the first round waited for a tick",
            started.elapsed()
        );
        stop(bg).await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_machine_through_the_api() {
    for db in TestDb::all("uber_state_machine").await {
        let i = open(db.url(), Arc::new(SystemClock), |_| {}).await;
        on_duty(&i, "d", at(100.0, 0.0)).await;
        let id = request(&i, "r", at(0.0, 0.0)).await;
        // One ride under way per rider.
        let body = json!({ "pickup": { "lat": 37.0, "lon": -122.0 }, "dropoff": { "lat": 37.1, "lon": -122.0 } });
        let (s, _) = call(&i.router, "r", "POST", "/rides", Some(body)).await;
        assert_eq!(s, StatusCode::CONFLICT);
        i.uber.match_round().await.unwrap();
        let (_, token) = offer(&i, "d").await.unwrap();
        let (s, _) = call(
            &i.router,
            "d",
            "POST",
            &format!("/rides/{id}/accept"),
            Some(json!({ "token": token })),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        // A stranger sees nothing; the rider cannot drive; order is enforced.
        let (s, _) = call(&i.router, "x", "GET", &format!("/rides/{id}"), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(act(&i, "x", &id, "cancel").await.0, StatusCode::NOT_FOUND);
        assert_eq!(act(&i, "r", &id, "depart").await.0, StatusCode::FORBIDDEN);
        assert_eq!(act(&i, "d", &id, "complete").await.0, StatusCode::CONFLICT);
        assert_eq!(act(&i, "d", &id, "depart").await.1["state"], "en_route");
        assert_eq!(act(&i, "d", &id, "pickup").await.1["state"], "in_progress");
        assert_eq!(act(&i, "r", &id, "cancel").await.0, StatusCode::CONFLICT, "too late to cancel");
        assert_eq!(act(&i, "d", &id, "complete").await.1["state"], "completed");
        assert_eq!(act(&i, "d", &id, "complete").await.0, StatusCode::CONFLICT);
        let history: Vec<String> =
            i.uber.store().events(&id).await.unwrap().into_iter().map(|e| e.state).collect();
        assert_eq!(history, ["requested", "matched", "en_route", "in_progress", "completed"]);
        // The driver is free again, and the rider may ride again.
        fix(&i, "d", at(100.0, 0.0)).await;
        let next = request(&i, "r", at(0.0, 0.0)).await;
        i.uber.match_round().await.unwrap();
        let (_, token) = offer(&i, "d").await.unwrap();
        call(
            &i.router,
            "d",
            "POST",
            &format!("/rides/{next}/accept"),
            Some(json!({ "token": token })),
        )
        .await;
        // The driver hands it back: it is waiting again, never to be offered to them.
        let (s, v) = act(&i, "d", &next, "cancel").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["state"], "requested");
        assert!(v["driver"].is_null());
        fix(&i, "d", at(100.0, 0.0)).await;
        i.uber.match_round().await.unwrap();
        assert_eq!(offer(&i, "d").await, None);
        assert_eq!(act(&i, "r", &next, "cancel").await.1["state"], "cancelled");
        db.drop_db().await;
    }
}

/// Many rides, few drivers, every driver answering concurrently (accepting,
/// declining or ignoring), rides completed as they go: the stored history never
/// has a driver on two rides at once, a ride with two drivers, or an acceptance
/// that was not the ride's open offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_matching_never_double_assigns() {
    for db in TestDb::all("uber_no_double_assignment").await {
        let i = Arc::new(
            open(db.url(), Arc::new(SystemClock), |c| {
                c.offer_timeout_ms = 1_000;
                c.match_timeout_ms = 60_000;
            })
            .await,
        );
        let drivers: Vec<String> = (0..8).map(|d| format!("driver{d}")).collect();
        for (n, d) in drivers.iter().enumerate() {
            on_duty(&i, d, at(100.0 * n as f64, 50.0)).await;
        }
        let mut rides = Vec::new();
        for r in 0..24 {
            rides.push(request(&i, &format!("rider{r}"), at(10.0 * f64::from(r), 0.0)).await);
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (n, d) in drivers.iter().enumerate() {
            let (i, d, stop) = (Arc::clone(&i), d.clone(), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut k = n;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    k += 1;
                    if let Some((ride, token)) = offer(&i, &d).await {
                        let path = if k % 4 == 0 { "decline" } else { "accept" };
                        if k % 7 != 0 {
                            let (s, _) = call(
                                &i.router,
                                &d,
                                "POST",
                                &format!("/rides/{ride}/{path}"),
                                Some(json!({ "token": token })),
                            )
                            .await;
                            if path == "accept" && s == StatusCode::OK {
                                for step in ["depart", "pickup", "complete"] {
                                    assert_eq!(act(&i, &d, &ride, step).await.0, StatusCode::OK);
                                }
                            }
                        }
                    }
                    fix(&i, &d, at(100.0 * n as f64, 50.0)).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        // Matchers on two "instances" of the same tables race each other.
        let second = open(db.url(), Arc::new(SystemClock), |c| c.offer_timeout_ms = 1_000).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (a, b) = tokio::join!(i.uber.match_round(), second.uber.match_round());
            a.unwrap();
            b.unwrap();
            let open_rides = i.uber.store().count_by_state().await.unwrap();
            let waiting: i64 = open_rides
                .iter()
                .filter(|(s, _)| s != "completed" && s != "cancelled")
                .map(|(_, n)| n)
                .sum();
            if waiting == 0 || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        check_history(&i.uber, &rides).await;
        db.drop_db().await;
    }
}

/// The history checker: replays every ride's transitions in time order.
async fn check_history(uber: &Uber, rides: &[String]) {
    let events = uber.store().all_events().await.unwrap();
    let mut completed = 0;
    for ride in rides {
        let mine: Vec<_> = events.iter().filter(|e| &e.ride_id == ride).collect();
        // Sequence 1, 2, 3, … and a valid path.
        for (n, e) in mine.iter().enumerate() {
            assert_eq!(e.seq, n as i64 + 1);
        }
        let mut driver: Option<&str> = None;
        for e in &mine {
            match e.state.as_str() {
                "requested" => driver = None,
                "matched" => {
                    assert!(driver.is_none(), "ride {ride} matched twice without a hand-back");
                    driver = e.driver.as_deref();
                    assert!(driver.is_some());
                }
                "en_route" | "in_progress" | "completed" => assert_eq!(e.driver.as_deref(), driver),
                "cancelled" => {}
                other => panic!("unknown state {other}"),
            }
        }
        if mine.last().is_some_and(|e| e.state == "completed") {
            completed += 1;
        }
        // Every acceptance answered the offer of that driver.
        let offers = uber.store().offers(ride).await.unwrap();
        let accepted = offers.iter().filter(|o| o.outcome == "accepted").count();
        let matched = mine.iter().filter(|e| e.state == "matched").count();
        assert_eq!(accepted, matched, "ride {ride}: acceptances vs offers");
    }
    assert!(completed > 0, "the run completed no ride at all");
    // No driver on two rides at once: per driver, matched … completed intervals
    // never overlap in commit order.
    let mut spans: std::collections::HashMap<&str, Vec<(i64, i64)>> =
        std::collections::HashMap::new();
    for ride in rides {
        let mine: Vec<_> = events.iter().filter(|e| &e.ride_id == ride).collect();
        let mut start: Option<(&str, i64)> = None;
        for e in &mine {
            match (e.state.as_str(), start) {
                ("matched", _) => start = Some((e.driver.as_deref().unwrap(), e.at_ms)),
                ("completed" | "cancelled" | "requested", Some((d, t0))) => {
                    spans.entry(d).or_default().push((t0, e.at_ms));
                    start = None;
                }
                _ => {}
            }
        }
        assert!(start.is_none(), "ride {ride} still under way at the end");
    }
    for (driver, mut s) in spans {
        s.sort_unstable();
        for w in s.windows(2) {
            assert!(w[0].1 <= w[1].0, "driver {driver} held two rides at once: {w:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_every_instance_matches_from_one_shared_index() {
    let Some(redis) = girder_core::services::require(
        girder_core::services::Service::Redis,
        "with_redis_every_instance_matches_from_one_shared_index",
    ) else {
        return;
    };
    let db = TestDb::sqlite();
    let prefix = format!("girder-test:uber:{}:", std::process::id());
    let tweak = |c: &mut UberConfig| c.redis_prefix = prefix.clone();
    let a = open_on(db.url(), Some(&redis), Arc::new(SystemClock), tweak).await;
    let b = open_on(db.url(), Some(&redis), Arc::new(SystemClock), tweak).await;
    // A driver reporting to A is found by B's matcher, under a lease in Redis.
    on_duty(&a, "drv", at(300.0, 0.0)).await;
    let (_, stats) = call(&b.router, "operator", "GET", "/stats", None).await;
    assert_eq!(
        (stats["drivers_free"].as_u64(), stats["shared_index"].as_bool()),
        (Some(1), Some(true)),
        "{stats}"
    );
    let id = request(&b, "rider", at(0.0, 0.0)).await;
    assert_eq!(b.uber.match_round().await.unwrap(), 1);
    let (ride_id, token) = offer(&a, "drv").await.expect("offered through the shared index");
    assert_eq!(ride_id, id);
    let (s, v) = call(
        &a.router,
        "drv",
        "POST",
        &format!("/rides/{id}/accept"),
        Some(json!({ "token": token })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Busy on every instance at once.
    let (_, stats) = call(&b.router, "operator", "GET", "/stats", None).await;
    assert_eq!(stats["drivers_free"].as_u64(), Some(0), "{stats}");
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_off_duty_in_the_table_is_never_offered_a_ride_the_index_still_holds() {
    let db = TestDb::sqlite();
    let i = open(db.url(), Arc::new(SystemClock), |_| {}).await;
    on_duty(&i, "gone", at(100.0, 0.0)).await;
    on_duty(&i, "here", at(2_000.0, 0.0)).await;
    // As if a fix taken elsewhere had put "gone" back into the index after going off duty.
    i.uber.store().set_online("gone", false, 0).await.unwrap();
    let id = request(&i, "rider", at(0.0, 0.0)).await;
    i.uber.match_round().await.unwrap();
    assert_eq!(offer(&i, "gone").await, None);
    assert_eq!(offer(&i, "here").await.map(|o| o.0), Some(id));
    let (_, stats) = call(&i.router, "operator", "GET", "/stats", None).await;
    assert_eq!(stats["drivers_free"].as_u64(), Some(1), "dropped from the free index: {stats}");
}

// ---------------------------------------------------------------- zones

/// Runs the instance's background work (matcher, zone leader) until the trigger fires.
fn running(i: &Instance) -> (girder_system::ShutdownTrigger, tokio::task::JoinHandle<()>) {
    use girder_system::System;
    let (trigger, shutdown) = girder_system::Shutdown::new();
    let task = tokio::spawn(Arc::clone(&i.uber).run(shutdown));
    (trigger, task)
}

async fn stop(running: (girder_system::ShutdownTrigger, tokio::task::JoinHandle<()>)) {
    running.0.fire();
    tokio::time::timeout(Duration::from_secs(10), running.1).await.expect("stops").expect("task");
}

/// Polls `probe` until it returns `Some`, for at most 15 s.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn queue(i: &Instance, zone: &str) -> Vec<String> {
    let (s, v) = call(&i.router, "operator", "GET", &format!("/zones/{zone}/queue"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["driver"].as_str().unwrap().to_owned())
        .collect()
}

async fn put_zone(i: &Instance, name: &str, kind: &str, centre: (f64, f64), radius_m: f64) {
    let body = json!({ "kind": kind, "shape": { "type": "circle", "lat": centre.0, "lon": centre.1, "radius_m": radius_m } });
    let (s, v) = call(&i.router, "operator", "PUT", &format!("/zones/{name}"), Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// Waits until the zone leader has handled every fix sent before the call: a
/// sentinel driver leaves and enters an airport zone 50 km away, and the leader
/// handles fixes in the order they were sent, so once the sentinel's entry shows,
/// every earlier fix has been through the fences.
async fn fences_caught_up(i: &Instance) {
    let far = at(50_000.0, 0.0);
    if !i.uber.zone_names().iter().any(|z| z == "sync") {
        put_zone(i, "sync", "airport", far, 200.0).await;
        on_duty(i, "sentinel", at(60_000.0, 0.0)).await;
    }
    fix(i, "sentinel", at(60_000.0, 0.0)).await;
    eventually("the sentinel is out", || async { queue(i, "sync").await.is_empty().then_some(()) })
        .await;
    fix(i, "sentinel", far).await;
    eventually("the sentinel is in", || async {
        (queue(i, "sync").await == ["sentinel"]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_airport_queue_is_first_in_first_out_and_its_head_gets_the_pickups() {
    for db in TestDb::all("uber_airport_queue").await {
        let i = open(db.url(), Arc::new(SystemClock), |c| c.match_tick_ms = 50).await;
        let bg = running(&i);
        put_zone(&i, "sfo", "airport", at(10_000.0, 0.0), 1_000.0).await;
        on_duty(&i, "d1", at(10_000.0, 0.0)).await;
        eventually("d1 queues", || async { (queue(&i, "sfo").await == ["d1"]).then_some(()) })
            .await;
        // A fix dated long ago does not jump the queue: entry is by this server's clock.
        let (s, v) =
            call(&i.router, "d2", "PUT", "/drivers/me", Some(json!({ "online": true }))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (lat, lon) = at(10_200.0, 0.0);
        let early = json!({ "fixes": [{ "lat": lat, "lon": lon, "at_ms": 1 }] });
        let (s, v) = call(&i.router, "d2", "POST", "/drivers/me/locations", Some(early)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        eventually("d2 queues behind d1", || async {
            (queue(&i, "sfo").await == ["d1", "d2"]).then_some(())
        })
        .await;
        // Staying inside keeps one's place; leaving gives it up.
        fix(&i, "d2", at(10_100.0, 0.0)).await;
        fix(&i, "d1", at(12_000.0, 0.0)).await;
        eventually("d1 leaves", || async { (queue(&i, "sfo").await == ["d2"]).then_some(()) })
            .await;
        // A pickup just inside the zone goes to the queue's head, not to the free
        // driver just outside who is nearer.
        on_duty(&i, "d3", at(8_940.0, 0.0)).await;
        let id = request(&i, "rider", at(9_050.0, 0.0)).await;
        let token =
            eventually("the head is offered the ride", || async { offer(&i, "d2").await }).await;
        assert_eq!(token.0, id);
        assert_eq!(offer(&i, "d3").await, None);
        let (s, v) = call(
            &i.router,
            "d2",
            "POST",
            &format!("/rides/{id}/accept"),
            Some(json!({ "token": token.1 })),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        // A driver with a ride leaves the queue, and a busy driver inside does not join.
        assert!(queue(&i, "sfo").await.is_empty());
        fix(&i, "d2", at(10_000.0, 0.0)).await;
        fences_caught_up(&i).await;
        assert!(queue(&i, "sfo").await.is_empty());
        stop(bg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rider_hears_once_that_the_driver_is_arriving() {
    for db in TestDb::all("uber_arriving").await {
        let i = open(db.url(), Arc::new(SystemClock), |c| c.match_tick_ms = 50).await;
        let bg = running(&i);
        on_duty(&i, "drv", at(2_000.0, 0.0)).await;
        let id = request(&i, "rider", at(0.0, 0.0)).await;
        let (_, token) = eventually("an offer", || async { offer(&i, "drv").await }).await;
        let (s, v) = call(
            &i.router,
            "drv",
            "POST",
            &format!("/rides/{id}/accept"),
            Some(json!({ "token": token })),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        // Approaching but not yet within 300 m: nothing (the fence is drawn as the
        // leader hears of the acceptance, before these fixes).
        fix(&i, "drv", at(1_000.0, 0.0)).await;
        fix(&i, "drv", at(900.0, 0.0)).await;
        fences_caught_up(&i).await;
        assert!(ride(&i, "rider", &id).await["arriving_ms"].is_null());
        // Within it: the rider is told, once.
        fix(&i, "drv", at(250.0, 0.0)).await;
        let first = eventually("arriving", || async {
            ride(&i, "rider", &id).await["arriving_ms"].as_i64()
        })
        .await;
        fix(&i, "drv", at(600.0, 0.0)).await;
        fix(&i, "drv", at(100.0, 0.0)).await;
        fences_caught_up(&i).await;
        assert_eq!(ride(&i, "rider", &id).await["arriving_ms"].as_i64(), Some(first));
        stop(bg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surge_is_demand_over_supply_per_cell_inside_surge_zones() {
    for db in TestDb::all("uber_surge").await {
        let i = open(db.url(), Arc::new(SystemClock), |c| {
            c.surge_interval_ms = 100;
            c.match_tick_ms = 50;
        })
        .await;
        let bg = running(&i);
        // The middle of one resolution-7 cell, so every position below is in it.
        let centre = girder_geo::Point::new(at(0.0, 0.0).0, at(0.0, 0.0).1).unwrap();
        let cell = girder_geo::cells::Cell::of(centre, 7).unwrap().center();
        let near = |n: f64, e: f64| (cell.lat() + n / 111_320.0, cell.lon() + e / 88_000.0);
        put_zone(&i, "downtown", "surge", (cell.lat(), cell.lon()), 5_000.0).await;
        on_duty(&i, "s1", near(30.0, 0.0)).await;
        on_duty(&i, "s2", near(-30.0, 0.0)).await;
        for (k, rider) in ["r1", "r2", "r3", "r4"].into_iter().enumerate() {
            request(&i, rider, near(0.0, 20.0 * k as f64)).await;
        }
        let multiplier = |v: &Value| {
            v["cells"].as_array().and_then(|c| c.first()).map(|c| c["multiplier"].as_f64().unwrap())
        };
        let surge = eventually("surge 2x", || async {
            let (_, v) = call(&i.router, "rider", "GET", "/surge", None).await;
            (multiplier(&v) == Some(2.0)).then_some(v)
        })
        .await;
        assert_eq!(surge["cells"].as_array().unwrap().len(), 1, "{surge}");
        assert_eq!(surge["cells"][0]["demand"], 4);
        assert_eq!(surge["cells"][0]["supply"], 2);
        let (s, q) = call(
            &i.router,
            "r5",
            "GET",
            &format!("/quote?lat={}&lon={}", cell.lat(), cell.lon()),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{q}");
        assert_eq!(q["surge"], 2.0);
        // Outside every surge zone the price is plain.
        let far = at(20_000.0, 0.0);
        let (_, q) =
            call(&i.router, "r5", "GET", &format!("/quote?lat={}&lon={}", far.0, far.1), None)
                .await;
        assert_eq!(q["surge"], 1.0);
        stop(bg).await;
    }
}

// ---------------------------------------------------------------- streams

/// The next JSON text frame of a socket, within 10 s.
async fn next_frame<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
        match next.expect("a frame within 10 s").expect("open").expect("a frame") {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads an event stream until its text holds `want`, within 10 s.
async fn until(body: &mut Body, text: &mut String, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains(want) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = tokio::time::timeout(left, body.frame()).await;
        let Ok(Some(Ok(frame))) = frame else { panic!("no {want:?} in {text:?}") };
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_socket_and_the_ride_stream_carry_offers_states_and_positions() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let db = TestDb::sqlite();
    let i = open(db.url(), Arc::new(SystemClock), |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(axum::serve(listener, i.router.clone()).into_future());
    let connect = |user: &'static str| async move {
        let mut request = format!("ws://{addr}/drivers/ws").into_client_request().unwrap();
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, bearer(user, Role::User).parse().unwrap());
        tokio_tungstenite::connect_async(request).await.expect("upgrade").0
    };

    let (s, v) =
        call(&i.router, "drv", "PUT", "/drivers/me", Some(json!({ "online": true }))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut ws = connect("drv").await;
    let hello = next_frame(&mut ws).await;
    assert_eq!(
        (hello["type"].as_str(), hello["driver"].as_str()),
        (Some("hello"), Some("drv")),
        "{hello}"
    );
    assert!(hello["offer"].is_null());
    let (lat, lon) = at(500.0, 0.0);
    ws.send(Message::text(json!({ "type": "fix", "lat": lat, "lon": lon }).to_string()))
        .await
        .unwrap();
    let reply = next_frame(&mut ws).await;
    assert_eq!(reply["type"], "interval", "{reply}");
    assert_eq!(
        (reply["next_interval_ms"].as_u64(), reply["on_ride"].as_bool()),
        (Some(5_000), Some(false))
    );
    // A bad frame is answered and the socket stays open.
    ws.send(Message::text(r#"{"type":"fix","lat":91,"lon":0}"#)).await.unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "error");
    ws.send(Message::text(r#"{"type":"fly"}"#)).await.unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "error");

    // The offer is pushed to the socket.
    let id = request(&i, "rider", at(0.0, 0.0)).await;
    let mut stream = {
        let request = Request::get(format!("/rides/{id}/stream"))
            .header(header::AUTHORIZATION, bearer("rider", Role::User))
            .body(Body::empty())
            .unwrap();
        let response = i.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body()
    };
    let mut text = String::new();
    until(&mut stream, &mut text, "\"state\":\"requested\"").await;
    assert_eq!(i.uber.match_round().await.unwrap(), 1);
    let offer = next_frame(&mut ws).await;
    assert_eq!(
        (offer["type"].as_str(), offer["offer"]["ride"].as_str()),
        (Some("offer"), Some(id.as_str())),
        "{offer}"
    );
    let token = offer["offer"]["token"].as_i64().unwrap();
    let (s, v) = call(
        &i.router,
        "drv",
        "POST",
        &format!("/rides/{id}/accept"),
        Some(json!({ "token": token })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Both sides hear of the match; the rider then sees the driver move.
    let matched = next_frame(&mut ws).await;
    assert_eq!(
        (matched["type"].as_str(), matched["ride"]["state"].as_str()),
        (Some("ride"), Some("matched")),
        "{matched}"
    );
    until(&mut stream, &mut text, "\"state\":\"matched\"").await;
    let (lat, lon) = at(400.0, 0.0);
    ws.send(Message::text(json!({ "type": "fix", "lat": lat, "lon": lon }).to_string()))
        .await
        .unwrap();
    let reply = next_frame(&mut ws).await;
    assert_eq!(
        (reply["next_interval_ms"].as_u64(), reply["on_ride"].as_bool()),
        (Some(2_000), Some(true)),
        "{reply}"
    );
    until(&mut stream, &mut text, "\"type\":\"driver\"").await;
    assert!(text.contains(&format!("\"lat\":{lat}")), "{text}");

    // Nobody else may follow the ride; no token, no socket.
    let request = Request::get(format!("/rides/{id}/stream"))
        .header(header::AUTHORIZATION, bearer("someone", Role::User))
        .body(Body::empty())
        .unwrap();
    assert_eq!(i.router.clone().oneshot(request).await.unwrap().status(), StatusCode::NOT_FOUND);
    let anonymous = format!("ws://{addr}/drivers/ws").into_client_request().unwrap();
    assert!(tokio_tungstenite::connect_async(anonymous).await.is_err());
    // A binary frame ends the socket with 1003.
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    loop {
        use futures_util::StreamExt;
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a close") {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1003);
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
    server.abort();
}

// ---------------------------------------------------------------- bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problems() {
    let db = TestDb::sqlite();
    let i = open(db.url(), Arc::new(SystemClock), |_| {}).await;
    let (s, _) = call(&i.router, "", "GET", "/rides", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Fixes before going on duty.
    let body = json!({ "fixes": [{ "lat": 1.0, "lon": 1.0 }] });
    assert_eq!(
        call(&i.router, "d", "POST", "/drivers/me/locations", Some(body)).await.0,
        StatusCode::CONFLICT
    );
    on_duty(&i, "d", at(0.0, 0.0)).await;
    let long_id = "x".repeat(40);
    let cases: Vec<(&str, String, Option<Value>, StatusCode)> = vec![
        (
            "POST",
            "/drivers/me/locations".into(),
            Some(json!({ "fixes": [] })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/drivers/me/locations".into(),
            Some(json!({ "fixes": vec![json!({"lat": 1.0, "lon": 1.0}); 101] })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/drivers/me/locations".into(),
            Some(json!({ "fixes": [{ "lat": 86.0, "lon": 1.0 }] })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/drivers/me/locations".into(),
            Some(json!({ "fixes": [{ "lat": 1.0, "lon": 181.0 }] })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/drivers/me/locations".into(),
            Some(json!({ "fixes": [{ "lat": "NaN", "lon": 1.0 }] })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/drivers/me/locations".into(),
            Some(json!({ "fixes": [{ "lat": 1.0, "lon": 1.0, "at_ms": -1 }] })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/rides".into(),
            Some(
                json!({ "pickup": { "lat": 91.0, "lon": 0.0 }, "dropoff": { "lat": 0.0, "lon": 0.0 } }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/rides".into(),
            Some(json!({ "pickup": { "lat": 0.0, "lon": 0.0 } })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("GET", format!("/rides/{long_id}"), None, StatusCode::UNPROCESSABLE_ENTITY),
        ("GET", "/rides/0123456789abcdef0123456789abcdef".into(), None, StatusCode::NOT_FOUND),
        (
            "POST",
            "/rides/0123456789abcdef0123456789abcdef/actions".into(),
            Some(json!({ "action": "fly" })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("GET", "/quote?lat=100&lon=0".into(), None, StatusCode::UNPROCESSABLE_ENTITY),
        ("GET", "/quote?lat=0&lon=0&radius_m=0".into(), None, StatusCode::UNPROCESSABLE_ENTITY),
        (
            "GET",
            "/drivers/nearby?lat=0&lon=0&radius_m=60000".into(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "PUT",
            "/zones/ok".into(),
            Some(
                json!({ "kind": "surge", "shape": { "type": "circle", "lat": 0.0, "lon": 0.0, "radius_m": 10.0 } }),
            ),
            StatusCode::FORBIDDEN,
        ),
        ("GET", "/stats".into(), None, StatusCode::FORBIDDEN),
    ];
    for (method, uri, body, want) in cases {
        let (s, v) = call(&i.router, "d", method, &uri, body).await;
        assert_eq!(s, want, "{method} {uri}: {v}");
    }
    let operator_cases: Vec<(&str, String, Option<Value>, StatusCode)> = vec![
        (
            "PUT",
            "/zones/Bad%20Name".into(),
            Some(
                json!({ "kind": "surge", "shape": { "type": "circle", "lat": 0.0, "lon": 0.0, "radius_m": 10.0 } }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "PUT",
            "/zones/z".into(),
            Some(
                json!({ "kind": "surge", "shape": { "type": "circle", "lat": 0.0, "lon": 0.0, "radius_m": 0.0 } }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "PUT",
            "/zones/z".into(),
            Some(
                json!({ "kind": "airport", "shape": { "type": "polygon", "points": [{ "lat": 0.0, "lon": 0.0 }, { "lat": 1.0, "lon": 1.0 }] } }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "PUT",
            "/zones/z".into(),
            Some(
                json!({ "kind": "airport", "shape": { "type": "polygon", "points": [{ "lat": 0.0, "lon": 0.0 }, { "lat": 1.0, "lon": 1.0 }, { "lat": 0.0, "lon": 1.0 }, { "lat": 1.0, "lon": 0.0 }] } }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "PUT",
            "/zones/z".into(),
            Some(
                json!({ "kind": "moon", "shape": { "type": "circle", "lat": 0.0, "lon": 0.0, "radius_m": 10.0 } }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("DELETE", "/zones/none".into(), None, StatusCode::NOT_FOUND),
        ("GET", "/zones/none/queue".into(), None, StatusCode::NOT_FOUND),
    ];
    for (method, uri, body, want) in operator_cases {
        let (s, v) = call(&i.router, "operator", method, &uri, body).await;
        assert_eq!(s, want, "{method} {uri}: {v}");
    }
    // Nothing stored was touched by any of it.
    assert_eq!(i.uber.store().all_rides(10).await.unwrap().len(), 0);
    assert!(i.uber.zone_names().is_empty());
}
