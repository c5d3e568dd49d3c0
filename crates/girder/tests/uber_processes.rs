//! Uber as two real `girder serve` processes on one PostgreSQL database, joined by
//! NATS and without Redis — so offer leases are PostgreSQL leases and each instance
//! keeps its own driver indexes, fed by the other's fixes through the hub. The
//! instance that offered a ride to the nearest driver is SIGKILLed while the driver
//! stays silent; the survivor offers the ride to the next driver once the offer
//! lapses (never back to the first), that driver accepts there, and the stored
//! history shows one driver per ride, no driver on two rides at once, and the
//! first driver's lapsed offer.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Server, TestDb, client};
use girder_core::services::{Service, require};
use girder_sql::{Db, PoolConfig};
use girder_uber::store::Store;
use serde_json::{Value, json};

/// How long a driver has to answer (the server's `--uber-offer-timeout-ms`).
const OFFER_TIMEOUT_MS: u64 = 3_000;
/// What the matcher adds after an offer's deadline before the next driver must
/// have the ride: the lease margin (1 s) and the retry of a ride it could not
/// place (1 s) — more than it needs, since the survivor claims the ride on its
/// first tick after the deadline — plus a second for the test's own polling on
/// a busy machine.
const AFTER_DEADLINE_MS: u64 = 1_000 + 1_000 + 1_000;

/// `girder serve` on `database_url` with NATS and never Redis, whatever the
/// environment says (`GIRDER_REDIS_URL` would make the indexes and leases shared
/// and the scenario a different one).
fn start(data_dir: &std::path::Path, database_url: &str, nats: &str) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let bind = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_girder"))
        .args(["serve", "--bind", &bind, "--database-url", database_url, "--data-dir"])
        .arg(data_dir)
        .args(["--nats-url", nats, "--db-max-connections", "8"])
        .args(["--uber-offer-timeout-ms", &OFFER_TIMEOUT_MS.to_string()])
        .args(["--uber-match-timeout-ms", "30000"])
        .env_remove("GIRDER_REDIS_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn girder");
    let server = Server { child, base: format!("http://{bind}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&bind).is_err() {
        assert!(Instant::now() < deadline, "girder did not start on {bind}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis())
        .expect("ms")
}

/// A fresh demo identity on `base`: (user id, bearer header).
async fn sign_in(http: &reqwest::Client, base: &str, role: &str) -> (String, String) {
    let reply = http
        .post(format!("{base}/api/auth/demo"))
        .json(&json!({ "role": role }))
        .send()
        .await
        .expect("sign in");
    assert_eq!(reply.status().as_u16(), 201);
    let token: Value = reply.json().await.expect("token");
    (
        token["user"].as_str().expect("user").to_owned(),
        format!("Bearer {}", token["token"].as_str().expect("token")),
    )
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    auth: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, &url).header("authorization", auth);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let reply = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or(Value::Null))
}

/// Metres north and east of `centre`, as (lat, lon).
fn at(centre: (f64, f64), north_m: f64, east_m: f64) -> (f64, f64) {
    let (lat0, lon0) = centre;
    (lat0 + north_m / 111_320.0, lon0 + east_m / (111_320.0 * lat0.to_radians().cos()))
}

async fn fix(http: &reqwest::Client, base: &str, auth: &str, p: (f64, f64)) {
    let body = json!({ "fixes": [{ "lat": p.0, "lon": p.1 }] });
    let url = format!("{base}/api/uber/drivers/me/locations");
    let (status, reply) = call(http, reqwest::Method::POST, url, auth, Some(body)).await;
    assert_eq!(status, 200, "a fix to {base}: {reply}");
}

/// The offer open to the driver as `base` reads it: (ride, token, expires_ms).
async fn offer(http: &reqwest::Client, base: &str, auth: &str) -> Option<(String, i64, u64)> {
    let url = format!("{base}/api/uber/drivers/me/offer");
    let (status, v) = call(http, reqwest::Method::GET, url, auth, None).await;
    assert_eq!(status, 200, "{base}: {v}");
    let o = &v["offer"];
    (!o.is_null()).then(|| {
        (
            o["ride"].as_str().expect("ride").to_owned(),
            o["token"].as_i64().expect("token"),
            o["expires_ms"].as_u64().expect("expires_ms"),
        )
    })
}

async fn stats(http: &reqwest::Client, base: &str, operator: &str) -> Value {
    let url = format!("{base}/api/uber/stats");
    let (status, v) = call(http, reqwest::Method::GET, url, operator, None).await;
    assert_eq!(status, 200, "{base}: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn a_killed_instances_offer_lapses_and_the_survivor_offers_the_ride_to_the_next_driver() {
    let test =
        "a_killed_instances_offer_lapses_and_the_survivor_offers_the_ride_to_the_next_driver";
    let Some(nats) = require(Service::Nats, test) else { return };
    let Some(db) = TestDb::postgres(test).await else { return };
    let started = Instant::now();
    let dirs = [tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir")];
    let mut servers =
        [start(dirs[0].path(), db.url(), &nats), start(dirs[1].path(), db.url(), &nats)];
    let bases = [servers[0].base.clone(), servers[1].base.clone()];
    let http = client();
    // Uber answers on both (not `/readyz`: it also waits for systems this test does
    // not use, such as change capture that needs a logical `wal_level`).
    let (_, operator) = sign_in(&http, &bases[0], "operator").await;
    for base in &bases {
        let ready = Instant::now();
        let s = loop {
            let url = format!("{base}/api/uber/stats");
            let (status, s) = call(&http, reqwest::Method::GET, url, &operator, None).await;
            if status == 200 {
                break s;
            }
            assert!(ready.elapsed() < Duration::from_secs(30), "{base}'s Uber never ready: {s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(s["shared_index"], false, "{base} must keep its own indexes: {s}");
    }
    // Somewhere no other test's drivers are: instances of every deployment on this
    // NATS server share the fix subjects.
    let centre = (rand::random_range(-50.0..50.0), rand::random_range(-170.0..170.0));
    let pickup = at(centre, 0.0, 0.0);
    let d1_at = at(centre, 300.0, 0.0);
    let d2_at = at(centre, 0.0, 1_500.0);
    let (d1, d1_auth) = sign_in(&http, &bases[0], "user").await;
    let (d2, d2_auth) = sign_in(&http, &bases[1], "user").await;
    let (_, rider) = sign_in(&http, &bases[0], "user").await;
    // d1 reports to A, d2 to B.
    for (base, auth, p) in [(&bases[0], &d1_auth, d1_at), (&bases[1], &d2_auth, d2_at)] {
        let url = format!("{base}/api/uber/drivers/me");
        let (status, v) =
            call(&http, reqwest::Method::PUT, url, auth, Some(json!({ "online": true }))).await;
        assert_eq!(status, 200, "{v}");
        fix(&http, base, auth, p).await;
    }
    // Both instances see both drivers free near the pickup: each index took one
    // driver's fixes directly and the other's through NATS.
    let seen = Instant::now();
    'both: loop {
        let mut nearby = Vec::new();
        for base in &bases {
            let url = format!("{base}/api/uber/quote?lat={}&lon={}", pickup.0, pickup.1);
            let (status, q) = call(&http, reqwest::Method::GET, url, &rider, None).await;
            assert_eq!(status, 200, "{q}");
            nearby.push(q["drivers_nearby"].as_u64().unwrap_or(0));
        }
        if nearby == [2, 2] {
            break 'both;
        }
        assert!(
            seen.elapsed() < Duration::from_secs(10),
            "the instances never both saw both drivers (free drivers near the pickup on A, B: \
             {nearby:?}): fixes do not cross between the instances' indexes"
        );
        fix(&http, &bases[0], &d1_auth, d1_at).await;
        fix(&http, &bases[1], &d2_auth, d2_at).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The rider asks on A; one of the matchers offers the ride to d1, the nearest.
    let body = json!({
        "pickup": { "lat": pickup.0, "lon": pickup.1 },
        "dropoff": { "lat": pickup.0 + 0.01, "lon": pickup.1 },
    });
    let url = format!("{}/api/uber/rides", bases[0]);
    let (status, ride) = call(&http, reqwest::Method::POST, url, &rider, Some(body)).await;
    assert_eq!(status, 201, "{ride}");
    let ride = ride["id"].as_str().expect("ride id").to_owned();
    let asked = Instant::now();
    let (d1_token, d1_expires_ms) = loop {
        if let Some((offered, token, expires)) = offer(&http, &bases[0], &d1_auth).await {
            assert_eq!(offered, ride);
            break (token, expires);
        }
        assert!(
            offer(&http, &bases[0], &d2_auth).await.is_none(),
            "the ride went to d2 before d1, who is nearer"
        );
        assert!(asked.elapsed() < Duration::from_secs(10), "the ride was never offered to d1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Kill the instance whose matcher made the offer (its counters say which).
    let mut offered_by = Vec::new();
    for base in &bases {
        offered_by.push(stats(&http, base, &operator).await["offers"].as_u64().unwrap_or(0));
    }
    let killed = match offered_by[..] {
        [1, 0] => 0,
        [0, 1] => 1,
        ref other => panic!("exactly one instance should have made one offer: {other:?}"),
    };
    let survivor = 1 - killed;
    servers[killed].kill();
    let survivor_base = &bases[survivor];

    // d1 never answers. The survivor offers the ride to d2 after d1's offer lapses,
    // and never to d1 again. Both drivers keep reporting, to the survivor now.
    let bound_ms = d1_expires_ms + AFTER_DEADLINE_MS;
    let d2_token = loop {
        fix(&http, survivor_base, &d1_auth, d1_at).await;
        fix(&http, survivor_base, &d2_auth, d2_at).await;
        let now = now_ms();
        match offer(&http, survivor_base, &d1_auth).await {
            None => {}
            Some((r, token, _)) if r == ride && token == d1_token => {
                // Read before the reply left the server: allow the request's span.
                assert!(now < d1_expires_ms, "d1's offer is still open after its deadline");
            }
            Some(other) => panic!("the ride (or another) went back to d1: {other:?}"),
        }
        if let Some((r, token, _)) = offer(&http, survivor_base, &d2_auth).await {
            assert_eq!(r, ride, "d2 was offered another ride");
            let seen_ms = now_ms();
            assert!(
                seen_ms >= d1_expires_ms,
                "d2 was offered the ride {} ms before d1's offer lapsed",
                d1_expires_ms - seen_ms
            );
            assert!(token > d1_token, "d2's fencing token {token} is not above d1's {d1_token}");
            break token;
        }
        assert!(
            now <= bound_ms,
            "the survivor ({survivor_base}) did not offer the ride to d2 within {} ms of d1's \
             offer lapsing (offer timeout {OFFER_TIMEOUT_MS} ms + lease margin + matcher retry)",
            now - d1_expires_ms
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let url = format!("{survivor_base}/api/uber/rides/{ride}/accept");
    let (status, matched) = call(
        &http,
        reqwest::Method::POST,
        url.clone(),
        &d2_auth,
        Some(json!({ "token": d2_token })),
    )
    .await;
    assert_eq!(status, 200, "d2 accepts on the survivor: {matched}");
    assert_eq!(matched["state"], "matched");
    assert_eq!(matched["driver"], d2.as_str());
    // d1's token is worthless now.
    let (status, late) =
        call(&http, reqwest::Method::POST, url, &d1_auth, Some(json!({ "token": d1_token }))).await;
    assert_eq!(status, 409, "d1's lapsed offer must not be accepted: {late}");

    // The history, read from PostgreSQL.
    let store = Store::new(Db::connect(db.url(), PoolConfig::default()).await.expect("database"));
    let events = store.all_events().await.expect("ride events");
    let mut by_ride: HashMap<&str, Vec<_>> = HashMap::new();
    for e in &events {
        by_ride.entry(e.ride_id.as_str()).or_default().push(e);
    }
    assert_eq!(by_ride.len(), 1, "one ride in the history: {events:?}");
    let mut spans: HashMap<&str, Vec<(i64, Option<i64>)>> = HashMap::new();
    for (id, mine) in &by_ride {
        // No ride with two drivers.
        let drivers: std::collections::BTreeSet<_> =
            mine.iter().filter_map(|e| e.driver.as_deref()).collect();
        assert!(drivers.len() <= 1, "ride {id} had drivers {drivers:?}: {mine:?}");
        let mut open: Option<(&str, i64)> = None;
        for e in mine {
            match (e.state.as_str(), open) {
                ("matched", None) => open = Some((e.driver.as_deref().expect("driver"), e.at_ms)),
                ("matched", Some(_)) => panic!("ride {id} matched twice: {mine:?}"),
                ("completed" | "cancelled" | "requested", Some((d, t0))) => {
                    spans.entry(d).or_default().push((t0, Some(e.at_ms)));
                    open = None;
                }
                _ => {}
            }
        }
        if let Some((d, t0)) = open {
            spans.entry(d).or_default().push((t0, None));
        }
    }
    // No driver on two rides at overlapping times.
    for (driver, mut s) in spans {
        s.sort_unstable();
        for w in s.windows(2) {
            let ended = w[0].1.unwrap_or(i64::MAX);
            assert!(ended <= w[1].0, "driver {driver} held two rides at once: {w:?}");
        }
    }
    let states: Vec<_> = by_ride[ride.as_str()].iter().map(|e| e.state.as_str()).collect();
    assert_eq!(states, ["requested", "matched"], "ride {ride}'s history");
    let offers = store.offers(&ride).await.expect("offers");
    let outcomes: Vec<_> = offers.iter().map(|o| (o.driver.as_str(), o.outcome.as_str())).collect();
    assert_eq!(
        outcomes,
        [(d1.as_str(), "expired"), (d2.as_str(), "accepted")],
        "d1's offer lapsed and is recorded; d2's was accepted"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the scenario took {:?}, over its 60 s bound",
        started.elapsed()
    );
    drop(servers);
    db.drop_db().await;
}
