//! The `uber` scenario of `girder loadtest`: a city of drivers on duty, each
//! reporting a fix every second over the driver WebSocket while it random-walks,
//! and a crowd of riders asking for rides all at once. It reports how many
//! requests were matched and how many were cleanly cancelled for want of a driver
//! (every request must end one of those ways within `--duration-secs` of being
//! made), the matching latency, the fixes ingested per second, and — from the
//! ride history in the server's database — how many times a driver held two rides
//! at once (must be 0).
//!
//! **Drivers.** Each signs in, goes on duty, opens `/api/uber/drivers/ws` and sends
//! one fix a second (ignoring the server's slower free-driver interval, to load the
//! geo index harder), moving up to [`STEP_M_MAX`] in a random direction each time
//! inside a [`CITY_M`] square. Offers are *pushed* over the socket; a driver accepts
//! every offer at once (no human delay: the latency is the system's), then departs,
//! picks up, drives for [`DRIVE_MS`] and completes the ride, and so is free again:
//! rides beyond the number of drivers wait for a driver to finish one, or for the
//! server's matching deadline.
//!
//! **Riders.** Each signs in, and all ask for a ride at the same moment (pickup and
//! drop-off uniform in the city), then follow their ride's SSE stream until it is
//! matched or cancelled; a stream that ends early is answered by one read of the
//! ride at the end.
//!
//! **Matching latency** is from the moment a rider's request was sent to the moment
//! the driver's acceptance was answered.
//!
//! **Double assignment** is counted on `uber_ride_events` of this run's rides:
//! two rides whose matched…ended spans overlap for one driver, or a ride matched
//! twice without being handed back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::LoadtestArgs;
use super::push::{histogram, quantile_ms};

/// The city's centre.
const CENTRE: (f64, f64) = (37.7749, -122.4194);
/// The side of the square city, m.
const CITY_M: f64 = 10_000.0;
/// The farthest a driver moves between two fixes, m (54 km/h).
const STEP_M_MAX: f64 = 15.0;
/// Between a driver's fixes.
const FIX_EVERY: Duration = Duration::from_secs(1);
/// How long a ride is driven before it is completed.
const DRIVE_MS: u64 = 2_000;
/// Between reads of a ride whose stream ended before it settled.
const RIDE_POLL: Duration = Duration::from_millis(500);
/// Most drivers and most riders.
const PARTIES_MAX: i64 = 20_000;
/// Sign-ins, duty changes and socket handshakes in flight at once while setting up.
const SETUP_IN_FLIGHT: usize = 64;
/// Offers a driver keeps waiting while it drives (it gets at most one at a time).
const OFFERS_QUEUED_MAX: usize = 8;
/// Most time for every driver to go on duty and open its socket.
const CONNECT_MAX: Duration = Duration::from_secs(60);
/// Most time for the server to close a driver's socket after the driver closed it.
const CLOSE_MAX: Duration = Duration::from_secs(5);
/// How long to wait for the drivers' first fixes to reach the indexes.
const SETTLE: Duration = Duration::from_secs(2);
/// Most time drivers get, after the last rider is done, to finish the ride they drive.
const FINISH_MAX: Duration = Duration::from_secs(30);

/// What an `uber` run saw.
#[derive(Debug, Clone, Serialize)]
pub struct UberReport {
    /// Drivers on duty.
    pub drivers: usize,
    /// Riders, each asking for one ride.
    pub riders: usize,
    /// Requests the server took (201).
    pub requested: u64,
    /// Requests the server refused, or that failed in transport.
    pub request_errors: u64,
    /// Requests that got a driver.
    pub matched: u64,
    /// Requests cancelled by the server for want of a driver (`no_driver`).
    pub no_driver: u64,
    /// Requests that ended any other way (must be 0).
    pub cancelled_otherwise: u64,
    /// Requests neither matched nor cancelled within the bound (must be 0).
    pub unresolved: u64,
    /// Rides driven to completion.
    pub completed: u64,
    /// Offers pushed to drivers.
    pub offers: u64,
    /// Acceptances refused because the offer was no longer open.
    pub accepts_refused: u64,
    /// Offers of this run's rides that lapsed unanswered (from the history).
    pub offers_lapsed: u64,
    /// Request → accepted, ms: median.
    pub match_p50_ms: f64,
    /// 99th percentile.
    pub match_p99_ms: f64,
    /// Largest.
    pub match_max_ms: f64,
    /// Times a driver held two rides at once, or a ride had two drivers, in the
    /// stored history (must be 0).
    pub double_assignments: u64,
    /// Rides of this run found in the history.
    pub rides_in_history: u64,
    /// Fixes the server acknowledged.
    pub fixes: u64,
    /// Fixes acknowledged per second while the drivers drove.
    pub fixes_per_sec: f64,
    /// From the requests to the last ride settled, s.
    pub seconds: f64,
    /// The bound on each request, s.
    pub bound_secs: u64,
    /// The server's database engine.
    pub database: String,
}

impl UberReport {
    /// What breaks the scenario's guarantees, if anything: requests that ended
    /// neither way within the bound, or double assignments.
    #[must_use]
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.unresolved > 0 {
            out.push(format!(
                "{} requests were neither matched nor cancelled within {} s",
                self.unresolved, self.bound_secs
            ));
        }
        if self.cancelled_otherwise > 0 {
            out.push(format!("{} requests ended another way", self.cancelled_otherwise));
        }
        if self.request_errors > 0 {
            out.push(format!("{} requests were refused or failed", self.request_errors));
        }
        if self.double_assignments > 0 {
            out.push(format!("{} double assignments in the history", self.double_assignments));
        }
        if self.rides_in_history != self.requested {
            out.push(format!(
                "{} of {} requested rides are in the history",
                self.rides_in_history, self.requested
            ));
        }
        out
    }
}

impl std::fmt::Display for UberReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "scenario uber · {} drivers · {} riders · {} · {:.1} s",
            self.drivers, self.riders, self.database, self.seconds
        )?;
        writeln!(
            f,
            "requests {} · matched {} · cancelled no_driver {} · otherwise {} · unresolved after {} s {} · errors {}",
            self.requested,
            self.matched,
            self.no_driver,
            self.cancelled_otherwise,
            self.bound_secs,
            self.unresolved,
            self.request_errors
        )?;
        writeln!(
            f,
            "matching (request → accepted) p50 {:.1} ms · p99 {:.1} ms · max {:.1} ms",
            self.match_p50_ms, self.match_p99_ms, self.match_max_ms
        )?;
        writeln!(
            f,
            "offers pushed {} · lapsed {} · acceptances refused {} · rides completed {}",
            self.offers, self.offers_lapsed, self.accepts_refused, self.completed
        )?;
        writeln!(
            f,
            "double assignments {} (over {} rides in the history)",
            self.double_assignments, self.rides_in_history
        )?;
        writeln!(f, "fixes {} · {:.0} fixes/s ingested", self.fixes, self.fixes_per_sec)
    }
}

/// The scenario's size and bounds, from the command line.
#[derive(Debug, Clone)]
struct Plan {
    base: String,
    drivers: usize,
    riders: usize,
    bound: Duration,
    database_url: String,
    seed: u64,
}

impl Plan {
    fn from_args(args: &LoadtestArgs) -> anyhow::Result<Self> {
        let refuse = |flag: &str| anyhow::anyhow!("{flag} does not apply to the uber scenario");
        if args.connections.is_some() {
            return Err(refuse("--connections"));
        }
        if args.rate.is_some() {
            return Err(refuse("--rate"));
        }
        if args.max_in_flight.is_some() {
            return Err(refuse("--max-in-flight"));
        }
        if args.path.is_some() {
            return Err(refuse("--path"));
        }
        if args.write_ratio.is_some() || args.seed_links.is_some() || args.zipf_s.is_some() {
            return Err(refuse("--write-ratio, --seed-links and --zipf-s"));
        }
        let count = |flag: &str, value: Option<i64>, default: i64| {
            let v = value.unwrap_or(default);
            if (1..=PARTIES_MAX).contains(&v) {
                Ok(v as usize)
            } else {
                Err(anyhow::anyhow!("{flag} must be 1..={PARTIES_MAX}, got {v}"))
            }
        };
        let drivers = count("--drivers", args.drivers, 500)?;
        let riders = count("--requests", args.requests, 1_000)?;
        anyhow::ensure!(
            (1..=3_600).contains(&args.duration_secs),
            "--duration-secs must be 1..=3600, got {}",
            args.duration_secs
        );
        let Some(database_url) = args.database_url.clone() else {
            anyhow::bail!(
                "the uber scenario needs --database-url, the server's database: the \
                 double-assignment count is read from the ride history there"
            );
        };
        let base = args.url.trim_end_matches('/').to_owned();
        anyhow::ensure!(base.starts_with("http://"), "--url must be http://, got {base:?}");
        Ok(Self {
            base,
            drivers,
            riders,
            bound: Duration::from_secs(args.duration_secs as u64),
            database_url,
            seed: args.seed,
        })
    }
}

/// Metres north and east of the centre, as (lat, lon).
fn point(north_m: f64, east_m: f64) -> (f64, f64) {
    let (lat0, lon0) = CENTRE;
    (lat0 + north_m / 111_320.0, lon0 + east_m / (111_320.0 * lat0.to_radians().cos()))
}

/// A position uniform in the city, as metres north and east of the centre.
fn anywhere(rng: &mut SmallRng) -> (f64, f64) {
    let half = CITY_M / 2.0;
    (rng.random_range(-half..half), rng.random_range(-half..half))
}

/// One random-walk step, kept inside the city by reflection at its edges.
fn step(rng: &mut SmallRng, at: (f64, f64)) -> (f64, f64) {
    let half = CITY_M / 2.0;
    let heading = rng.random_range(0.0..std::f64::consts::TAU);
    let len = rng.random_range(0.0..STEP_M_MAX);
    let reflect = |v: f64| {
        if v > half {
            2.0 * half - v
        } else if v < -half {
            -2.0 * half - v
        } else {
            v
        }
    };
    (reflect(at.0 + len * heading.cos()), reflect(at.1 + len * heading.sin()))
}

/// Counters every driver and rider adds to.
#[derive(Debug)]
struct Tally {
    fixes: AtomicU64,
    offers: AtomicU64,
    accepts_refused: AtomicU64,
    completed: AtomicU64,
    /// Accepted rides whose driver is done with them, completed or not.
    driven: AtomicU64,
    request_errors: AtomicU64,
    /// Ride id → when its acceptance was answered, µs since `epoch`.
    accepted_at: Mutex<HashMap<String, u64>>,
    /// Ride id → when its request was sent, µs since `epoch`.
    requested_at: Mutex<HashMap<String, u64>>,
    /// The run's start on the monotonic clock (latencies are differences of it).
    epoch: Instant,
}

/// How a rider's request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Matched,
    NoDriver,
    Otherwise,
    Unresolved,
    Refused,
}

/// Signs in `n` users, at most [`SETUP_IN_FLIGHT`] at a time.
async fn sign_in_many(
    http: &reqwest::Client,
    base: &str,
    n: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    futures_util::stream::iter(0..n)
        .map(|_| super::push::demo_token(http, base))
        .buffered(SETUP_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// The state and cancel reason of a `ride` frame or a ride read.
fn ride_state(ride: &Value) -> Option<(String, Option<String>)> {
    let state = ride["state"].as_str()?.to_owned();
    Some((state, ride["cancel_reason"].as_str().map(str::to_owned)))
}

fn outcome_of(state: &str, reason: Option<&str>) -> Option<Outcome> {
    match state {
        "requested" => None,
        "cancelled" if reason == Some("no_driver") => Some(Outcome::NoDriver),
        "cancelled" => Some(Outcome::Otherwise),
        // Matched, and maybe already driven on.
        _ => Some(Outcome::Matched),
    }
}

/// One driver's part: who it is and what it shares with the others.
struct Driver {
    http: reqwest::Client,
    base: String,
    auth: String,
    index: usize,
    seed: u64,
    tally: Arc<Tally>,
    /// Duty changes and handshakes in flight.
    setup: Arc<Semaphore>,
    /// Told once the socket is open.
    ready: mpsc::Sender<()>,
    stop: watch::Receiver<bool>,
}

/// A driver: on duty, a fix a second until `stop`, offers accepted and driven.
async fn drive(driver: Driver) -> anyhow::Result<()> {
    let Driver { http, base, auth, index, seed, tally, setup, ready, mut stop } = driver;
    let mut rng =
        SmallRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let permit = setup.acquire_owned().await?;
    let reply = http
        .put(format!("{base}/api/uber/drivers/me"))
        .header("authorization", &auth)
        .json(&json!({ "online": true }))
        .send()
        .await?;
    anyhow::ensure!(reply.status().is_success(), "going on duty: {}", reply.status());
    let mut request = format!("ws{}/api/uber/drivers/ws", base.trim_start_matches("http"))
        .into_client_request()?;
    request.headers_mut().insert("authorization", auth.parse()?);
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    drop(permit);
    let _ = ready.send(()).await;
    let (mut sink, mut source) = socket.split();
    let (offers, mut offered) = mpsc::channel::<(String, i64)>(OFFERS_QUEUED_MAX);
    // Rides are driven beside the fixes, one at a time.
    let worker = {
        let (http, base, auth, tally) =
            (http.clone(), base.clone(), auth.clone(), Arc::clone(&tally));
        tokio::spawn(async move {
            while let Some((ride, token)) = offered.recv().await {
                take(&http, &base, &auth, &ride, token, &tally).await;
            }
        })
    };
    let mut at = anywhere(&mut rng);
    // Spread the drivers' fixes over the second.
    let offset = FIX_EVERY.mul_f64((index as f64 * 0.618_034) % 1.0);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, FIX_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticks.tick() => {
                if !first {
                    at = step(&mut rng, at);
                }
                first = false;
                let (lat, lon) = point(at.0, at.1);
                let frame = json!({ "type": "fix", "lat": lat, "lon": lon }).to_string();
                if sink.send(Ws::text(frame)).await.is_err() {
                    break;
                }
            }
            message = source.next() => {
                let text = match message {
                    Some(Ok(Ws::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break,
                };
                let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                let offer = match frame["type"].as_str() {
                    Some("interval") => {
                        tally.fixes.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Some("hello" | "offer") => &frame["offer"],
                    _ => continue,
                };
                if let (Some(ride), Some(token)) = (offer["ride"].as_str(), offer["token"].as_i64()) {
                    tally.offers.fetch_add(1, Ordering::Relaxed);
                    // A full queue drops the offer: it lapses and goes to another driver.
                    let _ = offers.try_send((ride.to_owned(), token));
                }
            }
        }
    }
    drop(offers);
    // The server answers our close after every fix before it: once the socket
    // ends, no fix of ours can put the driver back into the indexes.
    let _ = sink.close().await;
    let _ = tokio::time::timeout(CLOSE_MAX, async { while source.next().await.is_some() {} }).await;
    let _ = worker.await;
    // Off duty, so a run that follows on the same server offers nothing to this
    // run's drivers while their last fixes are still in the indexes.
    let off = http
        .put(format!("{base}/api/uber/drivers/me"))
        .header("authorization", &auth)
        .json(&json!({ "online": false }))
        .send()
        .await?;
    anyhow::ensure!(off.status().is_success(), "going off duty: {}", off.status());
    Ok(())
}

/// Accepts a ride, then departs, picks up, drives and completes it.
async fn take(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    ride: &str,
    token: i64,
    tally: &Tally,
) {
    let accepted = http
        .post(format!("{base}/api/uber/rides/{ride}/accept"))
        .header("authorization", auth)
        .json(&json!({ "token": token }))
        .send()
        .await;
    match accepted.map(|r| r.status().as_u16()) {
        Ok(200) => {}
        Ok(409) => {
            tally.accepts_refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        _ => return,
    }
    tally.accepted_at.lock().insert(ride.to_owned(), super::push::micros_since(tally.epoch));
    drive_to_the_end(http, base, auth, ride, tally).await;
    tally.driven.fetch_add(1, Ordering::Relaxed);
}

async fn drive_to_the_end(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    ride: &str,
    tally: &Tally,
) {
    for action in ["depart", "pickup", "complete"] {
        if action == "complete" {
            tokio::time::sleep(Duration::from_millis(DRIVE_MS)).await;
        }
        let done = http
            .post(format!("{base}/api/uber/rides/{ride}/actions"))
            .header("authorization", auth)
            .json(&json!({ "action": action }))
            .send()
            .await;
        if !done.is_ok_and(|r| r.status().is_success()) {
            return;
        }
    }
    tally.completed.fetch_add(1, Ordering::Relaxed);
}

/// A rider: asks for a ride at `go`, then follows it until it is matched or
/// cancelled, for at most `bound`.
async fn ride(
    http: reqwest::Client,
    base: String,
    auth: String,
    trip: ((f64, f64), (f64, f64)),
    go: tokio::time::Instant,
    bound: Duration,
    tally: Arc<Tally>,
) -> (Option<String>, Outcome) {
    tokio::time::sleep_until(go).await;
    let (pickup, dropoff) = (point(trip.0.0, trip.0.1), point(trip.1.0, trip.1.1));
    let sent = super::push::micros_since(tally.epoch);
    let deadline = tokio::time::Instant::now() + bound;
    let reply = http
        .post(format!("{base}/api/uber/rides"))
        .header("authorization", &auth)
        .json(&json!({
            "pickup": { "lat": pickup.0, "lon": pickup.1 },
            "dropoff": { "lat": dropoff.0, "lon": dropoff.1 },
        }))
        .send()
        .await;
    let id = match reply {
        Ok(r) if r.status().as_u16() == 201 => {
            r.json::<Value>().await.ok().and_then(|v| v["id"].as_str().map(str::to_owned))
        }
        _ => None,
    };
    let Some(id) = id else {
        tally.request_errors.fetch_add(1, Ordering::Relaxed);
        return (None, Outcome::Refused);
    };
    tally.requested_at.lock().insert(id.clone(), sent);
    let followed = tokio::time::timeout_at(deadline, follow(&http, &base, &auth, &id)).await;
    if let Ok(Some(outcome)) = followed {
        return (Some(id), outcome);
    }
    // The stream ended early (or the bound passed): read the ride until the bound,
    // and once at it.
    loop {
        let at_bound = tokio::time::Instant::now() >= deadline;
        let now = http
            .get(format!("{base}/api/uber/rides/{id}"))
            .header("authorization", &auth)
            .send()
            .await;
        let state = match now {
            Ok(r) => r.json::<Value>().await.ok().as_ref().and_then(ride_state),
            Err(_) => None,
        };
        if let Some(outcome) = state.and_then(|(s, reason)| outcome_of(&s, reason.as_deref())) {
            return (Some(id), outcome);
        }
        if at_bound {
            return (Some(id), Outcome::Unresolved);
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + RIDE_POLL)).await;
    }
}

/// Reads the ride's SSE stream until it is matched or cancelled.
async fn follow(http: &reqwest::Client, base: &str, auth: &str, id: &str) -> Option<Outcome> {
    let mut stream = http
        .get(format!("{base}/api/uber/rides/{id}/stream"))
        .header("authorization", auth)
        .send()
        .await
        .ok()
        .filter(|r| r.status().is_success())?;
    let mut text = String::new();
    while let Ok(Some(chunk)) = stream.chunk().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            for data in frame.lines().filter_map(|l| l.strip_prefix("data: ")) {
                let Ok(v) = serde_json::from_str::<Value>(data) else { continue };
                if v["type"] != "ride" {
                    continue;
                }
                if let Some((state, reason)) = ride_state(&v["ride"])
                    && let Some(outcome) = outcome_of(&state, reason.as_deref())
                {
                    return Some(outcome);
                }
            }
        }
    }
    None
}

/// Counts double assignments among `rides` in the stored history: per ride, a
/// second `matched` before the first ended; per driver, a ride matched before the
/// previous one ended. Returns the double assignments, the rides found and their
/// offers that lapsed unanswered.
async fn history(database_url: &str, rides: &HashSet<String>) -> anyhow::Result<History> {
    let db = girder_sql::Db::connect(database_url, girder_sql::PoolConfig::default()).await?;
    let store = girder_uber::store::Store::new(db.clone());
    let events = store.all_events().await?;
    let mut by_ride: HashMap<&str, Vec<&girder_uber::store::RideEvent>> = HashMap::new();
    for e in events.iter().filter(|e| rides.contains(&e.ride_id)) {
        by_ride.entry(e.ride_id.as_str()).or_default().push(e);
    }
    let expired = store.expired_offer_rides().await?;
    let lapsed = expired.iter().filter(|r| by_ride.contains_key(r.as_str())).count() as u64;
    db.close().await;
    let mut doubles = 0u64;
    // Per driver: (matched at, ended at — `i64::MAX` while under way).
    let mut spans: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
    for mine in by_ride.values_mut() {
        mine.sort_by_key(|e| e.seq);
        let mut open: Option<(&str, i64)> = None;
        for e in mine.iter() {
            match (e.state.as_str(), open) {
                ("matched", Some(_)) => doubles += 1,
                ("matched", None) => open = e.driver.as_deref().map(|d| (d, e.at_ms)),
                ("completed" | "cancelled" | "requested", Some((d, t0))) => {
                    spans.entry(d).or_default().push((t0, e.at_ms));
                    open = None;
                }
                _ => {}
            }
        }
        if let Some((d, t0)) = open {
            spans.entry(d).or_default().push((t0, i64::MAX));
        }
    }
    for s in spans.values_mut() {
        s.sort_unstable();
        let mut ended = i64::MIN;
        for &(start, end) in s.iter() {
            if start < ended {
                doubles += 1;
            }
            ended = ended.max(end);
        }
    }
    Ok(History { double_assignments: doubles, rides: by_ride.len() as u64, offers_lapsed: lapsed })
}

/// What the stored history says about this run's rides.
#[derive(Debug, Clone, Copy)]
struct History {
    double_assignments: u64,
    rides: u64,
    offers_lapsed: u64,
}

/// Runs the scenario against the server at `--url`, whose database is at
/// `--database-url`.
///
/// # Errors
/// A flag is out of range, or the server refused a sign-in, a driver going on duty
/// or a socket, or the history could not be read. Requests that fail during the run
/// are counted, not errors.
#[allow(clippy::too_many_lines)]
pub async fn run(args: &LoadtestArgs) -> anyhow::Result<UberReport> {
    let plan = Plan::from_args(args)?;
    let _ = super::push::raise_nofile();
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let drivers = sign_in_many(&http, &plan.base, plan.drivers).await?;
    let riders = sign_in_many(&http, &plan.base, plan.riders).await?;
    let tally = Arc::new(Tally {
        fixes: AtomicU64::new(0),
        offers: AtomicU64::new(0),
        accepts_refused: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        driven: AtomicU64::new(0),
        request_errors: AtomicU64::new(0),
        accepted_at: Mutex::default(),
        requested_at: Mutex::default(),
        epoch: Instant::now(),
    });
    let (stop, stopped) = watch::channel(false);
    // Duty changes and handshakes at most SETUP_IN_FLIGHT at a time.
    let setup = Arc::new(Semaphore::new(SETUP_IN_FLIGHT));
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(plan.drivers);
    let mut fleet = Vec::with_capacity(plan.drivers);
    for (index, (_, auth)) in drivers.into_iter().enumerate() {
        fleet.push(tokio::spawn(drive(Driver {
            http: http.clone(),
            base: plan.base.clone(),
            auth,
            index,
            seed: plan.seed,
            tally: Arc::clone(&tally),
            setup: Arc::clone(&setup),
            ready: ready_tx.clone(),
            stop: stopped.clone(),
        })));
    }
    drop(ready_tx);
    let (mut ready, connecting) = (0, Instant::now() + CONNECT_MAX);
    while ready < plan.drivers {
        let failed = fleet.iter().position(tokio::task::JoinHandle::is_finished);
        if failed.is_some() || Instant::now() > connecting {
            let _ = stop.send(true);
            let mut first_error = None;
            for (i, task) in fleet.into_iter().enumerate() {
                if let Ok(Err(e)) = task.await
                    && first_error.is_none()
                {
                    first_error = Some(e.context(format!("driver {i}")));
                }
            }
            return Err(first_error.unwrap_or_else(|| {
                anyhow::anyhow!(
                    "{ready} of {} drivers connected within {CONNECT_MAX:?}",
                    plan.drivers
                )
            }));
        }
        if let Ok(Some(())) =
            tokio::time::timeout(Duration::from_millis(100), ready_rx.recv()).await
        {
            ready += 1;
        }
    }
    // The first fixes reach the indexes.
    tokio::time::sleep(SETTLE).await;
    let fixes_before = tally.fixes.load(Ordering::Relaxed);
    let driving_since = Instant::now();
    // Every rider asks at the same moment.
    let mut rng = SmallRng::seed_from_u64(plan.seed.wrapping_add(1));
    let go = tokio::time::Instant::now() + Duration::from_millis(200);
    let started = Instant::now() + Duration::from_millis(200);
    let mut crowd = Vec::with_capacity(plan.riders);
    for (_, auth) in riders {
        let trip = (anywhere(&mut rng), anywhere(&mut rng));
        crowd.push(tokio::spawn(ride(
            http.clone(),
            plan.base.clone(),
            auth,
            trip,
            go,
            plan.bound,
            Arc::clone(&tally),
        )));
    }
    let mut outcomes = Vec::with_capacity(plan.riders);
    for task in crowd {
        outcomes.push(task.await?);
    }
    // Rides under way are finished (each takes DRIVE_MS and a few requests).
    let finish = Instant::now() + FINISH_MAX;
    while tally.driven.load(Ordering::Relaxed) < tally.accepted_at.lock().len() as u64
        && Instant::now() < finish
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let fixes = tally.fixes.load(Ordering::Relaxed) - fixes_before;
    let driven = driving_since.elapsed().as_secs_f64();
    let _ = stop.send(true);
    for task in fleet {
        task.await??;
    }

    let count = |o: Outcome| outcomes.iter().filter(|(_, x)| *x == o).count() as u64;
    let ours: HashSet<String> = outcomes.iter().filter_map(|(id, _)| id.clone()).collect();
    let stored = history(&plan.database_url, &ours).await?;
    let mut latency: Histogram<u64> = histogram();
    {
        let requested = tally.requested_at.lock();
        for (ride, accepted) in tally.accepted_at.lock().iter() {
            if let Some(sent) = requested.get(ride) {
                let _ = latency.record(accepted.saturating_sub(*sent).max(1));
            }
        }
    }
    let database = if plan.database_url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    Ok(UberReport {
        drivers: plan.drivers,
        riders: plan.riders,
        requested: ours.len() as u64,
        request_errors: tally.request_errors.load(Ordering::Relaxed),
        matched: count(Outcome::Matched),
        no_driver: count(Outcome::NoDriver),
        cancelled_otherwise: count(Outcome::Otherwise),
        unresolved: count(Outcome::Unresolved),
        completed: tally.completed.load(Ordering::Relaxed),
        offers: tally.offers.load(Ordering::Relaxed),
        accepts_refused: tally.accepts_refused.load(Ordering::Relaxed),
        match_p50_ms: quantile_ms(&latency, 0.5),
        match_p99_ms: quantile_ms(&latency, 0.99),
        match_max_ms: latency.max() as f64 / 1_000.0,
        double_assignments: stored.double_assignments,
        rides_in_history: stored.rides,
        offers_lapsed: stored.offers_lapsed,
        fixes,
        fixes_per_sec: fixes as f64 / driven.max(1e-3),
        seconds,
        bound_secs: plan.bound.as_secs(),
        database: database.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_stays_inside_the_city() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut at = (CITY_M / 2.0 - 1.0, -CITY_M / 2.0 + 1.0);
        for _ in 0..100_000 {
            let next = step(&mut rng, at);
            let moved = ((next.0 - at.0).powi(2) + (next.1 - at.1).powi(2)).sqrt();
            assert!(moved <= STEP_M_MAX + 1e-9, "{moved}");
            assert!(next.0.abs() <= CITY_M / 2.0 && next.1.abs() <= CITY_M / 2.0, "{next:?}");
            at = next;
        }
    }

    #[test]
    fn outcomes_by_state() {
        let check = |state: &str, reason: Option<&str>, want: Option<Outcome>| {
            assert_eq!(outcome_of(state, reason), want, "{state} {reason:?}");
        };
        check("requested", None, None);
        check("matched", None, Some(Outcome::Matched));
        check("completed", None, Some(Outcome::Matched));
        check("cancelled", Some("no_driver"), Some(Outcome::NoDriver));
        check("cancelled", Some("rider"), Some(Outcome::Otherwise));
    }
}
