//! Tinder through its router on SQLite and PostgreSQL: the feed holds exactly the
//! profiles within mutual distance and preferences, nearest first, over cursor pages
//! without duplicates or gaps; no profile is shown twice (across fresh feeds, moves
//! and pages served at once); a profile hidden by a Bloom false positive comes back
//! after rotation; swipes are idempotent and excluded exactly; two likes at once make
//! one match and both streams hear it once; a match made on one instance reaches a
//! stream on another through NATS; the feed's depth bound holds and is counted; the geo index follows the table across instances;
//! bad input is a problem.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use girder_core::{Clock, ManualClock};
use girder_geo::distance::EARTH_RADIUS_M;
use girder_http::identity::{Role, test_bearer, test_tokens};
use girder_sql::{Db, PoolConfig};
use girder_system::Context;
use girder_testkit::backends::TestDb;
use girder_tinder::feed::FeedConfig;
use girder_tinder::seen::SeenConfig;
use girder_tinder::{Tinder, TinderConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const T0: u64 = 1_700_000_000_000;
const HOUR: Duration = Duration::from_secs(3_600);
/// Where the viewers of these tests stand.
const ORIGIN: (f64, f64) = (52.5, 13.4);

struct Instance {
    tinder: Arc<Tinder>,
    router: Router,
}

struct Engines<'a> {
    redis: Option<&'a str>,
    nats: Option<(&'a str, &'a str)>,
}

const LOCAL: Engines<'static> = Engines { redis: None, nats: None };

async fn open_with(
    db: &str,
    clock: Arc<dyn Clock>,
    config: TinderConfig,
    engines: &Engines<'_>,
) -> Instance {
    let pool = Db::connect(db, PoolConfig::default()).await.expect("database");
    girder_sql::migrate::run(&pool, girder_tinder::migrations()).await.expect("migrations");
    let mut context = Context::new(pool, clock);
    let mut config = config;
    if let Some(url) = engines.redis {
        context = context.with_redis(url);
    }
    if let Some((url, prefix)) = engines.nats {
        context = context.with_nats(url);
        config.nats_prefix = prefix.to_owned();
    }
    let tinder = Tinder::open_with(&context, config).await.expect("open");
    let router = tinder.api_router().layer(test_tokens().layer());
    Instance { tinder, router }
}

async fn open(db: &str, clock: Arc<dyn Clock>) -> Instance {
    open_with(db, clock, TinderConfig::new(), &LOCAL).await
}

fn manual() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

impl Instance {
    fn request(user: &str, method: &str, path: &str, body: Option<&Value>) -> Request<Body> {
        let mut request = Request::builder().method(method).uri(path);
        if !user.is_empty() {
            let role = if user == "operator" { Role::Operator } else { Role::User };
            request = request.header("authorization", test_bearer(user, role));
        }
        match body {
            Some(b) => request
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => request.body(Body::empty()).unwrap(),
        }
    }

    /// One request as `user` ("" for none): the status and the JSON body (or Null).
    async fn call(
        &self,
        user: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let response = self
            .router
            .clone()
            .oneshot(Self::request(user, method, path, body.as_ref()))
            .await
            .unwrap();
        let status = response.status().as_u16();
        let problem = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status >= 400 {
            assert!(problem, "{method} {path}: a {status} must be a problem document: {value}");
        }
        (status, value)
    }

    async fn ok(&self, user: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(user, method, path, body).await;
        assert!((200..300).contains(&status), "{method} {path} as {user}: {status} {value}");
        value
    }

    async fn put_profile(&self, user: &str, profile: &Value) {
        self.ok(user, "PUT", "/profiles/me", Some(profile.clone())).await;
    }

    async fn page(&self, user: &str, limit: u32, cursor: Option<&str>) -> Value {
        let path = match cursor {
            Some(c) => format!("/feed?limit={limit}&cursor={c}"),
            None => format!("/feed?limit={limit}"),
        };
        self.ok(user, "GET", &path, None).await
    }

    /// Every page of `user`'s feed from a fresh start: the users in order, and the
    /// pages.
    async fn all_pages(&self, user: &str, limit: u32) -> (Vec<String>, Vec<Value>) {
        let mut users = Vec::new();
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1_000 {
            let page = self.page(user, limit, cursor.as_deref()).await;
            users.extend(ids(&page));
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            pages.push(page);
            if cursor.is_none() {
                return (users, pages);
            }
        }
        panic!("the feed never ended");
    }

    async fn swipe(&self, user: &str, target: &str, action: &str) -> (u16, Value) {
        self.call(user, "POST", "/swipes", Some(json!({"target": target, "action": action}))).await
    }

    async fn events(&self, user: &str) -> Events {
        let response = self
            .router
            .clone()
            .oneshot(Self::request(user, "GET", "/events/stream", None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut events = Events { body: response.into_body(), buffer: String::new() };
        let (name, data) = events.next().await.expect("the stream opens");
        assert_eq!(name, "resume", "{data}");
        events
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user"].as_str().unwrap().to_owned())
        .collect()
}

/// One user's event stream, read event by event.
struct Events {
    body: Body,
    buffer: String,
}

impl Events {
    /// The next event (name, data) within 10 s; heartbeats skipped.
    async fn next(&mut self) -> Option<(String, Value)> {
        self.next_within(Duration::from_secs(10)).await
    }

    /// The next event already written or written within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = "message".to_owned();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if !data.is_empty() {
                    return Some((name, serde_json::from_str(&data).unwrap_or(Value::Null)));
                }
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await.ok()??.ok()?;
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
    }

    /// The next `match` event within 10 s.
    async fn next_match(&mut self) -> Value {
        loop {
            let (name, data) = self.next().await.expect("a match event within 10 s");
            if name == "match" {
                return data;
            }
        }
    }
}

/// The point `dist_km` from `from` on `bearing_deg`, on the index's sphere.
fn offset(from: (f64, f64), dist_km: f64, bearing_deg: f64) -> (f64, f64) {
    let (lat1, lon1) = (from.0.to_radians(), from.1.to_radians());
    let d = dist_km * 1_000.0 / EARTH_RADIUS_M;
    let b = bearing_deg.to_radians();
    let lat2 = (lat1.sin() * d.cos() + lat1.cos() * d.sin() * b.cos()).asin();
    let lon2 = lon1 + (b.sin() * d.sin() * lat1.cos()).atan2(d.cos() - lat1.sin() * lat2.sin());
    (lat2.to_degrees(), lon2.to_degrees())
}

/// A profile JSON.
#[allow(clippy::too_many_arguments)]
fn profile(
    name: &str,
    age: i64,
    gender: &str,
    interested_in: &[&str],
    ages: (i64, i64),
    max_km: i64,
    at: (f64, f64),
) -> Value {
    json!({
        "name": name, "age": age, "gender": gender, "interested_in": interested_in,
        "age_min": ages.0, "age_max": ages.1, "max_distance_km": max_km,
        "lat": at.0, "lon": at.1,
    })
}

/// A profile that wants, and is wanted by, the standard viewer (a woman of 30 who
/// wants men of 25–40 within 30 km), `dist_km` from the origin.
fn match_for_viewer(name: &str, dist_km: f64, bearing: f64) -> Value {
    profile(name, 31, "man", &["woman"], (25, 35), 50, offset(ORIGIN, dist_km, bearing))
}

fn viewer() -> Value {
    profile("Viewer", 30, "woman", &["man"], (25, 40), 30, ORIGIN)
}

/// A well-mixed hash of `i` (SplitMix64's finalizer): the model test's attributes
/// vary independently of each other and of the distance.
fn mix(i: u64, salt: u64) -> u64 {
    let mut z = i
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A candidate of the model test.
struct Candidate {
    user: String,
    dist_km: f64,
    gender: &'static str,
    age: i64,
    wants: Vec<&'static str>,
    ages: (i64, i64),
    max_km: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_is_mutual_nearest_first_and_pages_without_duplicates_or_gaps() {
    for db in TestDb::all("tinder_feed_model").await {
        let clock = manual();
        let config = TinderConfig {
            // A small scan bound: pages end early and the cursor carries on.
            feed: FeedConfig { scan_max: 20, depth_max: 400 },
            ..TinderConfig::new()
        };
        let app = open_with(db.url(), clock, config, &LOCAL).await;
        // The viewer: a woman of 30 who wants men and nonbinary people of 25–40
        // within 30 km.
        let viewer = profile("Viewer", 30, "woman", &["man", "nonbinary"], (25, 40), 30, ORIGIN);
        app.put_profile("viewer", &viewer).await;
        let genders = ["woman", "man", "nonbinary", "man"];
        let wants: [&[&str]; 5] =
            [&["woman"], &["woman"], &["woman", "man"], &["man"], &["nonbinary", "woman"]];
        let ranges = [(25, 45), (18, 29), (28, 60)];
        let distances = [5, 10, 20, 50, 100, 100];
        let mut candidates = Vec::new();
        for i in 0..130_u64 {
            // 330 m apart: no two within the index's rounding of each other, none
            // within 40 m of a distance bound or on a whole kilometre.
            let dist_km = 0.254 + 0.33 * i as f64;
            let pick = |salt: u64, n: usize| (mix(i, salt) % n as u64) as usize;
            let c = Candidate {
                user: format!("c{i:03}"),
                dist_km,
                gender: genders[pick(1, genders.len())],
                age: 22 + pick(2, 24) as i64,
                wants: wants[pick(3, wants.len())].to_vec(),
                ages: ranges[pick(4, ranges.len())],
                max_km: distances[pick(5, distances.len())],
            };
            candidates.push(c);
        }
        // Two at the very same place: ordered by id, the cursor between them.
        for user in ["tie-b", "tie-a"] {
            candidates.push(Candidate {
                user: user.to_owned(),
                dist_km: 3.3,
                gender: "man",
                age: 33,
                wants: vec!["woman"],
                ages: (18, 99),
                max_km: 100,
            });
        }
        for (i, c) in candidates.iter().enumerate() {
            // The tied two share a bearing too: the very same point.
            let bearing = if c.user.starts_with("tie") { 200.0 } else { (i * 37 % 360) as f64 };
            let at = offset(ORIGIN, c.dist_km, bearing);
            let p = profile(&c.user, c.age, c.gender, &c.wants, c.ages, c.max_km, at);
            app.put_profile(&c.user, &p).await;
        }
        // The model: a brute-force scan with both sides' rules.
        let mut expected: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| {
                ["man", "nonbinary"].contains(&c.gender)
                    && (25..=40).contains(&c.age)
                    && c.wants.contains(&"woman")
                    && (c.ages.0..=c.ages.1).contains(&30)
                    && c.dist_km <= 30.0
                    && c.dist_km <= c.max_km as f64
            })
            .collect();
        expected.sort_by(|a, b| a.dist_km.total_cmp(&b.dist_km).then(a.user.cmp(&b.user)));
        assert!(expected.len() > 15, "a model worth the name: {}", expected.len());
        let want: Vec<&str> = expected.iter().map(|c| c.user.as_str()).collect();

        let (got, pages) = app.all_pages("viewer", 7).await;
        assert_eq!(got, want, "{}: every mutual profile, nearest first, once", db.engine());
        let early = pages
            .iter()
            .filter(|p| p["items"].as_array().unwrap().len() < 7 && p["next_cursor"].is_string());
        assert!(early.count() > 0, "some pages ended early on the scan bound");
        for page in &pages {
            assert!(page["items"].as_array().unwrap().len() <= 7);
            assert!(page["examined"].as_u64().unwrap() <= 20, "scan bound: {page}");
        }
        let shown: Vec<u64> = pages
            .iter()
            .flat_map(|p| p["items"].as_array().unwrap().iter())
            .map(|i| i["distance_km"].as_u64().unwrap())
            .collect();
        let model: Vec<u64> = expected.iter().map(|c| c.dist_km.ceil() as u64).collect();
        assert_eq!(shown, model, "whole km rounded up");
        // A fresh start finds nothing new: everything was shown.
        let again = app.page("viewer", 50, None).await;
        assert_eq!(ids(&again), Vec::<String>::new());
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_reaches_depth_max_profiles_deep_and_counts_where_it_stopped() {
    let db = TestDb::sqlite();
    let config =
        TinderConfig { feed: FeedConfig { scan_max: 10, depth_max: 10 }, ..TinderConfig::new() };
    let app = open_with(db.url(), manual(), config, &LOCAL).await;
    app.put_profile("viewer", &viewer()).await;
    for i in 0..25 {
        let user = format!("d{i:02}");
        app.put_profile(&user, &match_for_viewer(&user, 0.5 + 0.2 * f64::from(i), 10.0)).await;
    }
    // Every search returns at most the 10 nearest members, the viewer among them: the
    // feed ends after the nine others, as documented.
    let (users, _) = app.all_pages("viewer", 4).await;
    let nearest: Vec<String> = (0..9).map(|i| format!("d{i:02}")).collect();
    assert_eq!(users, nearest);
    let stats = app.ok("operator", "GET", "/stats", None).await;
    assert!(stats["depth_capped"].as_u64().unwrap() >= 1, "{stats}");
    // Swiping them leaves the rest beyond reach too: depth counts every hit, swiped
    // or not.
    for user in &nearest {
        app.swipe("viewer", user, "pass").await;
    }
    assert_eq!(ids(&app.page("viewer", 4, None).await), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_is_never_shown_twice_across_fresh_feeds_moves_and_concurrent_pages() {
    for db in TestDb::all("tinder_never_twice").await {
        let app = open(db.url(), manual()).await;
        app.put_profile("viewer", &viewer()).await;
        let n = 60;
        for i in 0..n {
            let user = format!("m{i:02}");
            app.put_profile(&user, &match_for_viewer(&user, 1.0 + 0.4 * f64::from(i), 90.0)).await;
        }
        let mut shown: Vec<String> = Vec::new();
        let mut round = 0;
        while shown.len() < n as usize {
            round += 1;
            assert!(round < 100, "the feed stopped showing new profiles: {shown:?}");
            // Two fresh first pages at once: disjoint.
            let (a, b) = tokio::join!(app.page("viewer", 3, None), app.page("viewer", 3, None));
            shown.extend(ids(&a));
            shown.extend(ids(&b));
            // Everyone shown so far moves next to the viewer: nearest again, still
            // not shown again.
            for user in shown.iter().rev().take(4) {
                let (lat, lon) = offset(ORIGIN, 0.05, 180.0);
                app.ok(user, "PUT", "/profiles/me/location", Some(json!({"lat": lat, "lon": lon})))
                    .await;
            }
            // And a page following a cursor.
            if let Some(c) = a["next_cursor"].as_str() {
                shown.extend(ids(&app.page("viewer", 2, Some(c)).await));
            }
        }
        let distinct: HashSet<&String> = shown.iter().collect();
        assert_eq!(distinct.len(), shown.len(), "{}: shown twice: {shown:?}", db.engine());
        assert_eq!(shown.len(), n as usize);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_hidden_by_a_false_positive_comes_back_after_rotation() {
    for db in TestDb::all("tinder_false_positive").await {
        let clock = manual();
        // A small filter at a high rate, so a colliding id is quick to find.
        let config = TinderConfig {
            seen: SeenConfig {
                generation_ms: 3_600_000,
                items_per_generation: 100,
                false_positive_rate: 0.05,
            },
            ..TinderConfig::new()
        };
        let app = open_with(db.url(), clock.clone(), config, &LOCAL).await;
        app.put_profile("viewer", &viewer()).await;
        for i in 0..90 {
            let user = format!("s{i:02}");
            app.put_profile(&user, &match_for_viewer(&user, 2.0 + 0.1 * f64::from(i), 45.0)).await;
        }
        let (first, _) = app.all_pages("viewer", 50).await;
        assert_eq!(first.len(), 90);
        // An id the viewer's filter wrongly holds, and one it does not.
        let seen = app.tinder.seen_of("viewer").await.unwrap();
        let colliding = (0..100_000)
            .map(|j| format!("fp{j}"))
            .find(|id| seen.contains(id))
            .expect("a 90% full filter at 5% has false positives");
        let clear = (0..100_000).map(|j| format!("ok{j}")).find(|id| !seen.contains(id)).unwrap();
        app.put_profile(&colliding, &match_for_viewer(&colliding, 0.1, 0.0)).await;
        app.put_profile(&clear, &match_for_viewer(&clear, 0.2, 0.0)).await;
        let page = app.page("viewer", 50, None).await;
        assert_eq!(ids(&page), [clear], "the colliding profile is hidden, the other not");
        // One generation on, the filter that collides is the previous one: still
        // consulted.
        clock.advance(HOUR);
        assert_eq!(ids(&app.page("viewer", 50, None).await), Vec::<String>::new());
        // Two generations after it became current, it is no longer consulted: the
        // colliding profile comes back (nearest first), and so do the shown ones.
        clock.advance(HOUR);
        let page = app.page("viewer", 50, None).await;
        let back = ids(&page);
        assert_eq!(back.first(), Some(&colliding), "{}: {back:?}", db.engine());
        assert!(back.contains(&"s00".to_owned()), "shown profiles may be shown again: {back:?}");
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swipes_are_idempotent_final_and_excluded_exactly() {
    for db in TestDb::all("tinder_swipes").await {
        let clock = manual();
        let app = open(db.url(), clock.clone()).await;
        app.put_profile("viewer", &viewer()).await;
        for user in ["bob", "cal"] {
            app.put_profile(user, &match_for_viewer(user, 1.0, 0.0)).await;
        }
        let (status, first) = app.swipe("viewer", "bob", "like").await;
        assert_eq!((status, first["matched"].as_bool()), (201, Some(false)));
        let (status, again) = app.swipe("viewer", "bob", "like").await;
        assert_eq!(status, 200, "a repeat is the stored swipe");
        assert_eq!(again["created_ms"], first["created_ms"]);
        let (status, changed) = app.swipe("viewer", "bob", "pass").await;
        assert_eq!((status, changed["action"].as_str()), (200, Some("like")), "swipes are final");
        let (status, _) = app.swipe("viewer", "cal", "pass").await;
        assert_eq!(status, 201);
        // Cal's like comes too late: the viewer passed; no match.
        let (_, cal) = app.swipe("cal", "viewer", "like").await;
        assert_eq!(cal["matched"], false);
        // Bob likes back: a match, for both.
        let (status, bob) = app.swipe("bob", "viewer", "like").await;
        assert_eq!((status, bob["matched"].as_bool()), (201, Some(true)));
        let (_, repeat) = app.swipe("viewer", "bob", "like").await;
        assert_eq!(repeat["match_id"], bob["match_id"], "the same match");
        for user in ["viewer", "bob"] {
            let page = app.ok(user, "GET", "/matches", None).await;
            assert_eq!(page["items"].as_array().unwrap().len(), 1, "{user}: {page}");
        }
        // Swiped profiles never come back, whatever the seen filters forget.
        clock.advance(HOUR * 24 * 5);
        assert_eq!(ids(&app.page("viewer", 50, None).await), Vec::<String>::new());
        // Unmatching: only its users, once.
        let id = bob["match_id"].as_i64().unwrap();
        assert_eq!(app.call("cal", "DELETE", &format!("/matches/{id}"), None).await.0, 404);
        assert_eq!(app.call("bob", "DELETE", &format!("/matches/{id}"), None).await.0, 204);
        assert_eq!(app.call("viewer", "DELETE", &format!("/matches/{id}"), None).await.0, 404);
        let page = app.ok("viewer", "GET", "/matches", None).await;
        assert_eq!(page["items"], json!([]));
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn likes_at_the_same_moment_make_one_match_and_both_streams_hear_it_once() {
    for db in TestDb::all("tinder_concurrent_likes").await {
        let app = open(db.url(), Arc::new(girder_core::SystemClock)).await;
        let pairs = 12;
        let mut streams = Vec::new();
        for i in 0..pairs {
            let (a, b) = (format!("a{i}"), format!("b{i}"));
            app.put_profile(&a, &viewer()).await;
            app.put_profile(&b, &match_for_viewer(&b, 1.0, 0.0)).await;
            streams.push((app.events(&a).await, app.events(&b).await));
        }
        let likes = (0..pairs).map(|i| {
            let app = &app;
            async move {
                let (a, b) = (format!("a{i}"), format!("b{i}"));
                tokio::join!(app.swipe(&a, &b, "like"), app.swipe(&b, &a, "like"))
            }
        });
        let results = futures_util::future::join_all(likes).await;
        for (i, ((sa, ra), (sb, rb))) in results.into_iter().enumerate() {
            assert_eq!((sa, sb), (201, 201));
            // Whichever came second saw the first: at least one says matched, and
            // any that do name the one match.
            let ids: BTreeSet<i64> =
                [ra, rb].iter().filter_map(|r| r["match_id"].as_i64()).collect();
            assert_eq!(ids.len(), 1, "pair {i}: one match: {ids:?}");
        }
        let stats = app.ok("operator", "GET", "/stats", None).await;
        assert_eq!(stats["matches"], pairs, "{}: one row per pair", db.engine());
        assert_eq!(stats["events_pushed"], 2 * pairs, "one event per user, not per like");
        for (i, (sa, sb)) in streams.iter_mut().enumerate() {
            let (ea, eb) = (sa.next_match().await, sb.next_match().await);
            assert_eq!(ea["user"], format!("b{i}"));
            assert_eq!(eb["user"], format!("a{i}"));
            assert_eq!(ea["match_id"], eb["match_id"]);
        }
        // The events were written before the likes answered: a second one would be
        // waiting already.
        let extras = streams
            .iter_mut()
            .flat_map(|(sa, sb)| [sa, sb])
            .map(|s| async { s.next_within(Duration::from_millis(200)).await });
        let extras: Vec<_> = futures_util::future::join_all(extras).await;
        assert!(extras.iter().all(Option::is_none), "a second event: {extras:?}");
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_made_on_one_instance_reaches_a_stream_on_another_through_nats() {
    let Some(nats) = girder_core::services::require(
        girder_core::services::Service::Nats,
        "a_match_made_on_one_instance_reaches_a_stream_on_another_through_nats",
    ) else {
        return;
    };
    for db in TestDb::all("tinder_two_instances").await {
        let prefix = format!("girder-test.tinder{}x{}", std::process::id(), db.engine());
        let engines = Engines { redis: None, nats: Some((&nats, &prefix)) };
        let clock: Arc<dyn Clock> = Arc::new(girder_core::SystemClock);
        let one = open_with(db.url(), clock.clone(), TinderConfig::new(), &engines).await;
        let two = open_with(db.url(), clock, TinderConfig::new(), &engines).await;
        one.put_profile("ann", &viewer()).await;
        one.put_profile("bob", &match_for_viewer("bob", 1.0, 0.0)).await;
        let mut bob_on_two = two.events("bob").await;
        let mut ann_on_one = one.events("ann").await;
        assert_eq!(one.swipe("ann", "bob", "like").await.0, 201);
        let (_, made) = one.swipe("bob", "ann", "like").await;
        let event = bob_on_two.next_match().await;
        assert_eq!((event["user"].as_str(), &event["match_id"]), (Some("ann"), &made["match_id"]));
        assert_eq!(ann_on_one.next_match().await["user"], "bob");
        // The other way round: made through two, heard on one.
        one.put_profile("cat", &match_for_viewer("cat", 2.0, 0.0)).await;
        two.swipe("cat", "ann", "like").await;
        two.swipe("ann", "cat", "like").await;
        assert_eq!(ann_on_one.next_match().await["user"], "cat");
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_geo_index_follows_the_table_on_every_instance() {
    let db = TestDb::sqlite();
    let clock: Arc<dyn Clock> = Arc::new(girder_core::SystemClock);
    // Without Redis: each instance's own index, rebuilt at open, refreshed.
    let one = open(db.url(), clock.clone()).await;
    one.put_profile("viewer", &viewer()).await;
    one.put_profile("early", &match_for_viewer("early", 1.0, 0.0)).await;
    let two = open(db.url(), clock.clone()).await;
    assert_eq!(ids(&two.page("viewer", 10, None).await), ["early"], "rebuilt from the table");
    one.put_profile("late", &match_for_viewer("late", 2.0, 0.0)).await;
    assert_eq!(ids(&two.page("viewer", 10, None).await), Vec::<String>::new(), "not refreshed yet");
    assert!(two.tinder.refresh_index().await.unwrap() >= 1);
    assert_eq!(ids(&two.page("viewer", 10, None).await), ["late"]);
    // A move through one reaches two's index with the refresh too.
    let far = offset(ORIGIN, 45.0, 0.0);
    one.ok("early", "PUT", "/profiles/me/location", Some(json!({"lat": far.0, "lon": far.1})))
        .await;
    two.tinder.refresh_index().await.unwrap();
    let position =
        girder_geo::index::GeoIndex::position(two.tinder.index(), "early").await.unwrap();
    assert!((position.unwrap().lat() - far.0).abs() < 1e-5, "moved in two's index");

    // With Redis: one index for all, current at once.
    let Some(redis) = girder_core::services::require(
        girder_core::services::Service::Redis,
        "the_geo_index_follows_the_table_on_every_instance",
    ) else {
        return;
    };
    let db = TestDb::sqlite();
    let key = format!("girder-test:tinder:{}:geo", std::process::id());
    let config = TinderConfig { geo_key: key.clone(), ..TinderConfig::new() };
    let engines = Engines { redis: Some(&redis), nats: None };
    let one = open_with(db.url(), clock.clone(), config.clone(), &engines).await;
    let two = open_with(db.url(), clock, config, &engines).await;
    one.put_profile("viewer", &viewer()).await;
    one.put_profile("near", &match_for_viewer("near", 1.0, 0.0)).await;
    assert_eq!(ids(&two.page("viewer", 10, None).await), ["near"], "shared: no refresh needed");
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () =
        redis::cmd("DEL").arg(&key).arg(format!("{key}:ttl")).query_async(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_problem_never_a_panic() {
    let db = TestDb::sqlite();
    let app = open(db.url(), manual()).await;
    // Before a profile exists.
    assert_eq!(app.call("ann", "GET", "/profiles/me", None).await.0, 404);
    assert_eq!(app.call("ann", "GET", "/feed", None).await.0, 409);
    assert_eq!(
        app.call("ann", "PUT", "/profiles/me/location", Some(json!({"lat": 1, "lon": 1}))).await.0,
        404
    );
    app.put_profile("ann", &viewer()).await;
    app.put_profile("bob", &match_for_viewer("bob", 1.0, 0.0)).await;
    assert_eq!(app.swipe("nobody", "bob", "like").await.0, 409, "no profile of one's own");
    let good = viewer();
    let with = |field: &str, value: Value| {
        let mut p = good.clone();
        p[field] = value;
        p
    };
    let other = app.page("bob", 1, None).await;
    let bobs_cursor = other["next_cursor"].as_str().map(str::to_owned);
    let mut cases: Vec<(&str, String, Option<Value>, u16)> = vec![
        ("PUT", "/profiles/me".into(), Some(with("age", json!(17))), 422),
        ("PUT", "/profiles/me".into(), Some(with("age", json!(121))), 422),
        ("PUT", "/profiles/me".into(), Some(with("lat", json!(91))), 422),
        ("PUT", "/profiles/me".into(), Some(with("lat", json!(85.1))), 422),
        ("PUT", "/profiles/me".into(), Some(with("lon", json!(-181))), 422),
        ("PUT", "/profiles/me".into(), Some(with("name", json!("  "))), 422),
        ("PUT", "/profiles/me".into(), Some(with("name", json!("x".repeat(51)))), 422),
        ("PUT", "/profiles/me".into(), Some(with("interested_in", json!([]))), 422),
        ("PUT", "/profiles/me".into(), Some(with("interested_in", json!(["man", "man"]))), 422),
        ("PUT", "/profiles/me".into(), Some(with("interested_in", json!(["robot"]))), 422),
        ("PUT", "/profiles/me".into(), Some(with("age_min", json!(41))), 422),
        ("PUT", "/profiles/me".into(), Some(with("max_distance_km", json!(0))), 422),
        ("PUT", "/profiles/me".into(), Some(with("max_distance_km", json!(501))), 422),
        ("PUT", "/profiles/me".into(), Some(with("bio", json!("a\u{0}b"))), 422),
        ("PUT", "/profiles/me".into(), Some(with("extra", json!(1))), 422),
        ("PUT", "/profiles/me".into(), Some(json!("not an object")), 422),
        ("PUT", "/profiles/me/location".into(), Some(json!({"lat": 91, "lon": 0})), 422),
        ("GET", "/feed?limit=0".into(), None, 422),
        ("GET", "/feed?limit=1000".into(), None, 422),
        ("GET", "/feed?limit=x".into(), None, 400),
        ("GET", "/feed?cursor=not-a-cursor".into(), None, 400),
        ("GET", "/feed?unknown=1".into(), None, 400),
        ("GET", "/matches?limit=0".into(), None, 422),
        ("GET", "/matches?cursor=AAAA".into(), None, 400),
        ("POST", "/swipes".into(), Some(json!({"target": "ann", "action": "like"})), 422),
        ("POST", "/swipes".into(), Some(json!({"target": "ghost", "action": "like"})), 404),
        ("POST", "/swipes".into(), Some(json!({"target": "bob", "action": "superlike"})), 422),
        ("POST", "/swipes".into(), Some(json!({"target": "", "action": "like"})), 422),
        ("POST", "/swipes".into(), Some(json!({"target": "x".repeat(129), "action": "like"})), 422),
        // Within the schema's 128 characters but over 128 bytes: no profile can have it.
        ("POST", "/swipes".into(), Some(json!({"target": "é".repeat(100), "action": "like"})), 404),
        ("DELETE", "/matches/0".into(), None, 422),
        ("DELETE", "/matches/abc".into(), None, 400),
        ("DELETE", "/matches/99".into(), None, 404),
        ("GET", "/stats".into(), None, 403),
    ];
    // Bob's cursor is bound to Bob.
    if let Some(c) = bobs_cursor {
        cases.push(("GET", format!("/feed?cursor={c}"), None, 400));
    }
    for (method, path, body, want) in cases {
        let (status, problem) = app.call("ann", method, &path, body.clone()).await;
        assert_eq!(status, want, "{method} {path} {body:?}: {problem}");
        assert_eq!(problem["status"], want);
    }
    // No token at all.
    for (method, path) in [("GET", "/profiles/me"), ("GET", "/feed"), ("GET", "/events/stream")] {
        assert_eq!(app.call("", method, path, None).await.0, 401, "{path}");
    }
    // The profile is unchanged by all that.
    let me = app.ok("ann", "GET", "/profiles/me", None).await;
    assert_eq!((me["age"].as_i64(), me["max_distance_km"].as_i64()), (Some(30), Some(30)));
}

/// Every bound the handlers enforce is stated in the document, where schemathesis and
/// clients read it.
#[test]
fn the_openapi_document_states_every_bound() {
    use girder_system::System;
    let doc = serde_json::to_value(<Tinder as System>::openapi()).unwrap();
    let schema = |name: &str| doc["components"]["schemas"][name]["properties"].clone();
    let profile = schema("ProfileRequest");
    let bounds = |field: &Value| (field["minimum"].as_f64(), field["maximum"].as_f64());
    assert_eq!(bounds(&profile["age"]), (Some(18.0), Some(120.0)));
    assert_eq!(bounds(&profile["age_min"]), (Some(18.0), Some(120.0)));
    assert_eq!(bounds(&profile["age_max"]), (Some(18.0), Some(120.0)));
    assert_eq!(bounds(&profile["max_distance_km"]), (Some(1.0), Some(500.0)));
    assert_eq!(bounds(&profile["lat"]), (Some(-85.051_128_78), Some(85.051_128_78)));
    assert_eq!(bounds(&profile["lon"]), (Some(-180.0), Some(180.0)));
    assert_eq!(bounds(&schema("LocationRequest")["lat"]), bounds(&profile["lat"]));
    let interested = &profile["interested_in"];
    assert_eq!(
        (&interested["minItems"], &interested["maxItems"], &interested["uniqueItems"]),
        (&json!(1), &json!(3), &json!(true))
    );
    assert_eq!(
        (&profile["name"]["minLength"], &profile["name"]["maxLength"]),
        (&json!(1), &json!(50))
    );
    assert!(profile["name"]["pattern"].is_string() && profile["bio"]["pattern"].is_string());
    assert_eq!(profile["bio"]["maxLength"], 500);
    let target = &schema("SwipeRequest")["target"];
    assert_eq!((&target["minLength"], &target["maxLength"]), (&json!(1), &json!(128)));
    assert!(target["pattern"].is_string());
    let param = |path: &str, method: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["schema"]
            .clone()
    };
    assert_eq!(bounds(&param("/api/tinder/feed", "get", "limit")), (Some(1.0), Some(50.0)));
    assert_eq!(bounds(&param("/api/tinder/matches", "get", "limit")), (Some(1.0), Some(100.0)));
    assert_eq!(param("/api/tinder/feed", "get", "cursor")["maxLength"], 512);
    assert_eq!(param("/api/tinder/matches/{id}", "delete", "id")["minimum"], 1);
    // Every operation authenticates and says so.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["security"].is_array(), "{method} {path} has no security");
            assert!(op["responses"]["401"].is_object(), "{method} {path} does not document 401");
        }
    }
}
