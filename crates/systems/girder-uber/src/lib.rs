//! Uber: drivers report where they are, riders ask for rides, and each ride is
//! offered to the nearest available driver, one at a time, until one accepts.
//!
//! **Where drivers are.** Drivers on duty send location fixes in batches over HTTP
//! or one by one over a WebSocket; each answer carries the interval the driver
//! should report at next (faster while an offer or a ride is under way). Positions
//! go into two geo indexes ([`girder_geo::index`]): every on-duty driver, and the
//! drivers free to take a ride. Both hold a member for a TTL only, so a driver
//! whose phone goes quiet drops out on its own. With Redis the indexes are one
//! shared sorted set each; without it each instance keeps its own in memory, fed
//! by its own drivers and by every other instance's through the hub.
//!
//! **Matching.** A requested ride is stored first ([`store`]), then any instance's
//! matcher claims it (a compare-and-set on the ride's claim, so one matcher at a
//! time), searches the free drivers nearest the pickup (or the airport queue's
//! head, for a pickup inside an airport zone), and offers it to one driver under a
//! lease on that driver ([`girder_lock::lease`]): a driver holds at most one offer
//! at a time. The lease's fencing token is stored with the offer and must come back
//! with the acceptance, so a stale offer cannot be accepted. An offer not answered
//! before its deadline lapses and the ride goes to the next driver, never back to
//! one who had it; a ride nobody accepts before its matching deadline is cancelled
//! (`no_driver`). If an instance dies mid-offer, its claim and its lease simply
//! run out and another instance's matcher carries on.
//!
//! **No double assignment.** The acceptance is one conditional update from the
//! offer it answers, and two unique indexes keep a driver on at most one ride under
//! way and a rider with at most one: the guarantees hold in the database whatever
//! happens to leases, caches or instances ([`store`]).
//!
//! **Watching.** A ride's rider and driver follow it over SSE: its state changes,
//! the driver's position while the ride is under way, and a "driver arriving"
//! notice when the driver comes within a roaming geofence around the pickup.
//!
//! **Zones.** Operators draw surge zones and airport zones ([`zones`]). Within a
//! surge zone the price multiplier follows demand over supply per H3 cell; an
//! airport zone keeps a first-in first-out queue of the free drivers inside it,
//! and rides picked up there go to the queue's head first.

mod api;
mod fleet;
mod matcher;
pub mod ride;
mod settings;
pub mod store;
mod zones;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use girder_core::Clock;
use girder_geo::index::{
    AnyGeoIndex, MemoryGeoIndex, MemoryIndexConfig, RedisGeoIndex, RedisIndexConfig,
};
use girder_lock::lease::{
    AnyLeaseStore, Lease, MemoryLeaseConfig, MemoryLeaseStore, RedisLeaseConfig, RedisLeaseStore,
};
use girder_realtime::nats::NatsBroker;
use girder_realtime::redis_broker::RedisBroker;
use girder_realtime::{Hub, HubConfig, Topic};
use girder_sql::Db;
use girder_system::{BoxError, Context, OpenError, Shutdown, System, SystemInfo};
use tokio::sync::Notify;

use ride::{Party, RideAction, RideState, Step};
use store::{AcceptOutcome, NewRide, RideRow, Store, StoreError};

pub use api::{
    AcceptRequest, CurrentOfferView, DriverClientFrame, DriverServerFrame, DriverStatusRequest,
    DriverView, FixView, LatLon, LocationsRequest, LocationsView, NearbyDriver, NearbyView,
    OfferView, PointQuery, QuoteView, RideActionRequest, RideRequest, RideView, RidesView,
    SurgeCell, SurgeView, UberApi, UberStatsView, ZoneRequest, ZoneView, ZonesView,
};
pub use settings::UberSettings;
pub use zones::{AirportQueueView, Shape, ZoneKind};

/// Uber's migrations on the instance's database.
#[must_use]
pub fn migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "uber",
        sqlite: sqlx::migrate!("migrations/sqlite"),
        postgres: sqlx::migrate!("migrations/postgres"),
    }
}

/// Everything Uber needs to start.
#[derive(Debug, Clone)]
pub struct UberConfig {
    /// How long a driver has to answer an offer, ms.
    pub offer_timeout_ms: u64,
    /// How long a ride waits for a driver before it is cancelled, ms.
    pub match_timeout_ms: u64,
    /// How far from the pickup drivers are searched, m.
    pub search_radius_m: f64,
    /// How many nearest drivers a matcher considers per round.
    pub candidates: usize,
    /// How long a driver's last fix keeps them in the indexes, ms.
    pub driver_ttl_ms: u64,
    /// The roaming fence around a pickup that tells the rider the driver is arriving, m.
    pub arriving_radius_m: f64,
    /// How often each instance's matcher looks for waiting rides, ms.
    pub match_tick_ms: u64,
    /// How long a matcher's claim on a ride lasts while it works, ms.
    pub claim_ms: u64,
    /// The H3 resolution surge is computed at.
    pub surge_resolution: u8,
    /// The window of requests counted as demand, ms.
    pub surge_window_ms: u64,
    /// The highest surge multiplier.
    pub surge_max: f64,
    /// How often the zone leader recomputes surge, ms.
    pub surge_interval_ms: u64,
    /// The NATS subject prefix (or Redis channel prefix) joining instances' hubs.
    pub broker_prefix: String,
    /// The Redis key prefix of the shared indexes and leases.
    pub redis_prefix: String,
    /// Most drivers held in an in-process index.
    pub drivers_max: usize,
}

impl UberConfig {
    /// The defaults: 15 s to answer an offer, 2 minutes to find a driver within 5 km,
    /// drivers dropped 30 s after their last fix, "arriving" at 300 m, surge per H3
    /// resolution-7 cell over the last 10 minutes, at most 3×.
    #[must_use]
    pub fn new() -> Self {
        Self {
            offer_timeout_ms: 15_000,
            match_timeout_ms: 120_000,
            search_radius_m: 5_000.0,
            candidates: 10,
            driver_ttl_ms: 30_000,
            arriving_radius_m: 300.0,
            match_tick_ms: 250,
            claim_ms: 5_000,
            surge_resolution: 7,
            surge_window_ms: 600_000,
            surge_max: 3.0,
            surge_interval_ms: 5_000,
            broker_prefix: "girder.uber".to_owned(),
            redis_prefix: "girder:uber:".to_owned(),
            drivers_max: 1_000_000,
        }
    }
}

impl Default for UberConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UberError {
    /// Bad input; the message says what.
    #[error("{0}")]
    Invalid(String),
    /// No such ride (or not the caller's).
    #[error("not found")]
    NotFound,
    /// The request conflicts with the current state; the message says how.
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The geo index or the lease store failed.
    #[error("{0}")]
    Backend(String),
}

impl From<girder_geo::index::GeoError> for UberError {
    fn from(e: girder_geo::index::GeoError) -> Self {
        match e {
            girder_geo::index::GeoError::Backend(_) => Self::Backend(e.to_string()),
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// How this instance's hub reaches the others.
enum Broker {
    Nats(NatsBroker),
    Redis(RedisBroker),
}

/// Counters for `/stats`.
#[derive(Debug, Default)]
struct Counters {
    fixes: AtomicU64,
    offers: AtomicU64,
    accepted: AtomicU64,
    lapsed: AtomicU64,
    no_driver: AtomicU64,
}

/// The Uber system.
pub struct Uber {
    store: Store,
    config: UberConfig,
    clock: Arc<dyn Clock>,
    hub: Hub,
    broker: Option<Broker>,
    /// Every on-duty driver's last position.
    positions: AnyGeoIndex,
    /// The drivers free to take a ride.
    available: AnyGeoIndex,
    /// Whether the indexes are shared (Redis) or this instance's own.
    shared_index: bool,
    leases: AnyLeaseStore,
    /// The leases of offers this instance made, by driver: released when the offer
    /// is answered, anywhere.
    held: parking_lot::Mutex<HashMap<String, Lease>>,
    wake_matcher: Notify,
    fleet: fleet::Fleet,
    zones: zones::Zones,
    counters: Counters,
    instance: String,
}

impl std::fmt::Debug for Uber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uber").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The hub topic of one user's notices (offers for a driver).
fn user_topic(user: &str) -> Topic {
    hashed_topic("uber.u", user)
}

/// The hub topic of one ride (its rider's and driver's streams).
fn ride_topic(ride: &str) -> Topic {
    hashed_topic("uber.r", ride)
}

fn hashed_topic(prefix: &str, id: &str) -> Topic {
    Topic::hashed(prefix, id).unwrap_or_else(|_| unreachable!("a valid prefix"))
}

fn fixed_topic(name: &str) -> Topic {
    Topic::new(name).unwrap_or_else(|_| unreachable!("a valid topic"))
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Uber {
    /// Opens on `context`: shared indexes and leases in Redis when it has Redis,
    /// leases in PostgreSQL when the database is PostgreSQL and there is no Redis,
    /// in memory otherwise; hubs joined through NATS, else Redis, when configured.
    ///
    /// # Errors
    /// NATS or Redis cannot be reached, or the tables cannot be read.
    pub async fn open_with(context: &Context, config: UberConfig) -> Result<Arc<Self>, OpenError> {
        let hub = Hub::new(HubConfig { history_per_topic: 0, ..HubConfig::default() })
            .map_err(OpenError::storage)?;
        let redis = match context.redis_url.as_deref() {
            Some(url) => {
                let client = redis::Client::open(url).map_err(OpenError::storage)?;
                Some(redis::aio::ConnectionManager::new(client).await.map_err(OpenError::storage)?)
            }
            None => None,
        };
        let broker = match (context.nats_url.as_deref(), context.redis_url.as_deref()) {
            (Some(url), _) => Some(Broker::Nats(
                NatsBroker::connect(url, hub.clone(), &config.broker_prefix)
                    .await
                    .map_err(OpenError::storage)?,
            )),
            (None, Some(url)) => Some(Broker::Redis(
                RedisBroker::connect(url, hub.clone(), &config.broker_prefix)
                    .await
                    .map_err(OpenError::storage)?,
            )),
            (None, None) => None,
        };
        let memory_index = || {
            AnyGeoIndex::Memory(MemoryGeoIndex::new(MemoryIndexConfig {
                members_max: config.drivers_max,
                clock: Arc::clone(&context.clock),
                ..MemoryIndexConfig::default()
            }))
        };
        let (positions, available, shared_index) = match &redis {
            Some(conn) => {
                let index = |name: &str| {
                    AnyGeoIndex::Redis(RedisGeoIndex::new(
                        conn.clone(),
                        // TTLs judged by the Redis server's clock, which every
                        // instance shares.
                        RedisIndexConfig {
                            key: format!("{}{{{name}}}", config.redis_prefix),
                            members_max: config.drivers_max,
                            ..RedisIndexConfig::default()
                        },
                    ))
                };
                (index("positions"), index("available"), true)
            }
            None => (memory_index(), memory_index(), false),
        };
        let leases = match (&redis, &context.db) {
            (Some(conn), _) => AnyLeaseStore::Redis(RedisLeaseStore::with_clock(
                conn.clone(),
                RedisLeaseConfig {
                    key_prefix: format!("{}lease:", config.redis_prefix),
                    ..RedisLeaseConfig::default()
                },
                Arc::clone(&context.clock),
            )),
            (None, Db::Postgres(pool)) => AnyLeaseStore::Postgres(
                girder_lock::lease::PostgresLeaseStore::with_clock(
                    pool.clone(),
                    Arc::clone(&context.clock),
                )
                .await
                .map_err(OpenError::storage)?,
            ),
            (None, Db::Sqlite(_)) => AnyLeaseStore::Memory(MemoryLeaseStore::new(
                MemoryLeaseConfig::default(),
                Arc::clone(&context.clock),
            )),
        };
        let store = Store::new(context.db.clone());
        let zones = zones::Zones::load(&store, &config).await.map_err(OpenError::storage)?;
        let instance = context.instance_id("uber").map_err(OpenError::storage)?;
        let uber = Arc::new(Self {
            store,
            fleet: fleet::Fleet::new(&config),
            config,
            clock: Arc::clone(&context.clock),
            hub,
            broker,
            positions,
            available,
            shared_index,
            leases,
            held: parking_lot::Mutex::new(HashMap::new()),
            wake_matcher: Notify::new(),
            zones,
            counters: Counters::default(),
            instance,
        });
        Ok(uber)
    }

    /// Its API (what the server nests at `/api/uber`).
    pub fn api_router(self: &Arc<Self>) -> girder_system::Router {
        api::router(Arc::clone(self))
    }

    /// Runs one matching round now (every instance's background matcher runs them on
    /// its tick): claims waiting rides, closes lapsed offers, cancels rides past their
    /// deadline and makes offers. Returns how many rides it worked on.
    ///
    /// # Errors
    /// The store, an index or the lease store failed.
    pub async fn match_round(&self) -> Result<usize, UberError> {
        matcher::round(self).await
    }

    /// The zones' names, as this instance holds them.
    #[must_use]
    pub fn zone_names(&self) -> Vec<String> {
        self.zones.list().iter().map(|z| z.name.clone()).collect()
    }

    /// The tables.
    #[must_use]
    pub const fn store(&self) -> &Store {
        &self.store
    }

    /// The settings in force.
    #[must_use]
    pub const fn config(&self) -> &UberConfig {
        &self.config
    }

    fn now_ms(&self) -> i64 {
        signed(self.clock.now_ms())
    }

    /// Publishes `payload` on `topic` here and, through the broker, on every instance.
    async fn publish(&self, topic: &Topic, payload: Vec<u8>) {
        let published = match &self.broker {
            Some(Broker::Nats(b)) => {
                b.publish(topic, payload).await.map(drop).map_err(|e| e.to_string())
            }
            Some(Broker::Redis(b)) => {
                b.publish(topic, payload).await.map(drop).map_err(|e| e.to_string())
            }
            None => self.hub.publish(topic, payload).map(drop).map_err(|e| e.to_string()),
        };
        if let Err(e) = published {
            // Streams are a fast path: the table has the truth, and clients reload it.
            tracing::warn!(error = %e, "an Uber notice was not published to every instance");
        }
    }

    /// Publishes a ride's current state to its stream.
    async fn publish_ride(&self, ride: &RideRow) {
        let view = RideView::from_row(ride);
        let frame = serde_json::json!({ "type": "ride", "ride": view });
        self.publish(&ride_topic(&ride.id), frame.to_string().into_bytes()).await;
        if let Some(driver) = &ride.driver {
            self.publish(&user_topic(driver), frame.to_string().into_bytes()).await;
        }
    }

    /// Asks for a ride. The rider may have one ride under way at a time.
    ///
    /// # Errors
    /// [`UberError::Conflict`] if the rider has a ride under way; the store failed.
    pub async fn request_ride(
        &self,
        rider: &str,
        pickup: girder_geo::Point,
        dropoff: girder_geo::Point,
    ) -> Result<RideRow, UberError> {
        pickup.check_indexable().map_err(|e| UberError::Invalid(format!("pickup: {e}")))?;
        dropoff.check_indexable().map_err(|e| UberError::Invalid(format!("dropoff: {e}")))?;
        let now = self.now_ms();
        let id = uuid::Uuid::now_v7().simple().to_string();
        let surge = self.zones.surge_at(pickup);
        let ride = NewRide {
            id: &id,
            rider,
            pickup: (pickup.lat(), pickup.lon()),
            dropoff: (dropoff.lat(), dropoff.lon()),
            surge,
            match_deadline_ms: now + signed(self.config.match_timeout_ms),
            now_ms: now,
        };
        if !self.store.insert_ride(&ride).await? {
            return Err(UberError::Conflict("you already have a ride under way".into()));
        }
        self.wake_matcher.notify_one();
        self.store.ride(&id).await?.ok_or(UberError::NotFound)
    }

    /// A ride, for its rider or its driver (or the driver it is offered to).
    ///
    /// # Errors
    /// [`UberError::NotFound`] for anyone else.
    pub async fn ride_for(&self, user: &str, id: &str) -> Result<RideRow, UberError> {
        let ride = self.store.ride(id).await?.ok_or(UberError::NotFound)?;
        let party = ride.rider == user
            || ride.driver.as_deref() == Some(user)
            || ride.offer_driver.as_deref() == Some(user);
        if party { Ok(ride) } else { Err(UberError::NotFound) }
    }

    /// The driver accepts the ride offered to them under `token`.
    ///
    /// # Errors
    /// [`UberError::Conflict`] if the offer lapsed, was withdrawn or is not theirs,
    /// or they already hold a ride; [`UberError::NotFound`] for a ride never offered
    /// to them.
    pub async fn accept(
        &self,
        driver: &str,
        ride_id: &str,
        token: i64,
    ) -> Result<RideRow, UberError> {
        let now = self.now_ms();
        match self.store.accept(ride_id, driver, token, now).await? {
            AcceptOutcome::Accepted => {}
            AcceptOutcome::DriverBusy => {
                return Err(UberError::Conflict("you already hold a ride under way".into()));
            }
            AcceptOutcome::OfferGone => {
                let ride = self.store.ride(ride_id).await?.ok_or(UberError::NotFound)?;
                if ride.rider != driver
                    && !self.store.offered_drivers(ride_id).await?.iter().any(|d| d == driver)
                {
                    return Err(UberError::NotFound);
                }
                return Err(UberError::Conflict("the offer is no longer open to you".into()));
            }
        }
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        // The driver is no longer free, here and on every instance, and leaves any
        // airport queue.
        self.mark_busy(driver).await?;
        self.offer_closed(driver).await;
        self.publish(&fixed_topic(zones::MATCHED_TOPIC), ride_id.as_bytes().to_vec()).await;
        let ride = self.store.ride(ride_id).await?.ok_or(UberError::NotFound)?;
        self.publish_ride(&ride).await;
        Ok(ride)
    }

    /// The driver declines the ride offered to them under `token`; it goes to the
    /// next driver at once.
    ///
    /// # Errors
    /// [`UberError::Conflict`] if the offer is no longer theirs.
    pub async fn decline(&self, driver: &str, ride_id: &str, token: i64) -> Result<(), UberError> {
        if !self.store.decline(ride_id, driver, token, self.now_ms()).await? {
            return Err(UberError::Conflict("the offer is no longer open to you".into()));
        }
        self.offer_closed(driver).await;
        self.wake_matcher.notify_one();
        Ok(())
    }

    /// Tells whichever instance holds the driver's offer lease that it can let go.
    async fn offer_closed(&self, driver: &str) {
        self.release_held(driver).await;
        if self.broker.is_some() {
            self.publish(&fixed_topic(zones::CLOSED_TOPIC), driver.as_bytes().to_vec()).await;
        }
    }

    /// Releases this instance's offer lease on `driver`, if it holds one.
    async fn release_held(&self, driver: &str) {
        let lease = self.held.lock().remove(driver);
        if let Some(lease) = lease {
            use girder_lock::lease::LeaseStore;
            if let Err(e) = self.leases.release(&lease).await {
                tracing::debug!(error = %e, "an offer lease was not released; it runs out on its own");
            }
        }
    }

    /// Applies `action` by `user` to a ride.
    ///
    /// # Errors
    /// [`UberError::NotFound`] for a ride that is not theirs, [`UberError::Forbidden`]
    /// for an action that is not their party's, [`UberError::Conflict`] for one the
    /// ride's state does not allow (or that a concurrent change beat).
    pub async fn act(
        &self,
        user: &str,
        ride_id: &str,
        action: RideAction,
    ) -> Result<RideRow, UberError> {
        let ride = self.store.ride(ride_id).await?.ok_or(UberError::NotFound)?;
        let party = if ride.rider == user {
            Party::Rider
        } else if ride.driver.as_deref() == Some(user) {
            Party::Driver
        } else {
            return Err(UberError::NotFound);
        };
        let from = ride.state()?;
        let step = ride::decide(from, party, action).map_err(|e| match e {
            ride::TransitionError::NotAllowed { .. } => UberError::Forbidden(e.to_string()),
            _ => UberError::Conflict(e.to_string()),
        })?;
        let now = self.now_ms();
        let changed = match step {
            Step::To(to) => {
                let reason = (to == RideState::Cancelled).then_some("rider");
                self.store.transition(ride_id, from, ride.version, to, reason, now).await?
            }
            Step::HandBack => {
                let deadline = now + signed(self.config.match_timeout_ms);
                self.store.hand_back(ride_id, from, ride.version, user, deadline, now).await?
            }
        };
        if !changed {
            return Err(UberError::Conflict("the ride changed meanwhile; read it again".into()));
        }
        if matches!(step, Step::HandBack) || from == RideState::Requested {
            if let Some(driver) = &ride.offer_driver {
                self.offer_closed(driver).await;
            }
            self.wake_matcher.notify_one();
        }
        let after = self.store.ride(ride_id).await?.ok_or(UberError::NotFound)?;
        // A driver whose ride ended, or who handed it back, is told on their topic too.
        if let Some(driver) = ride.driver.as_deref().filter(|_| after.driver.is_none()) {
            let frame = serde_json::json!({ "type": "ride", "ride": RideView::from_row(&after) });
            self.publish(&user_topic(driver), frame.to_string().into_bytes()).await;
        }
        if (after.state()?.is_final() || matches!(step, Step::HandBack))
            && let Some(driver) = &ride.driver
        {
            self.fleet.forget(driver);
        }
        self.publish_ride(&after).await;
        Ok(after)
    }

    /// The offer open to `driver` now, if any.
    ///
    /// # Errors
    /// The store failed.
    pub(crate) async fn open_offer(&self, driver: &str) -> Result<Option<OfferView>, UberError> {
        let ride = self.store.open_offer_of(driver, self.now_ms()).await?;
        Ok(ride.and_then(|r| {
            let (token, deadline) = (r.offer_token?, r.offer_deadline_ms?);
            Some(OfferView::new(&r, token, deadline))
        }))
    }

    /// What a ride from `at` would cost now, and how many free drivers are within
    /// `radius_m`.
    ///
    /// # Errors
    /// The index failed.
    pub(crate) async fn quote(
        &self,
        at: girder_geo::Point,
        radius_m: f64,
    ) -> Result<QuoteView, UberError> {
        use girder_geo::index::{Center, GeoIndex, Search};
        let hits = self.available.search(&Search::radius(Center::At(at), radius_m)).await?;
        Ok(QuoteView {
            surge: self.zones.surge_at(at),
            drivers_nearby: hits.len(),
            nearest_m: hits.first().map(|h| h.dist_m),
            airport: self.zones.airport_at(at),
        })
    }

    /// Drivers on duty within `radius_m` of `at`, nearest first, at most 200, under
    /// opaque ids.
    ///
    /// # Errors
    /// An index failed.
    pub(crate) async fn nearby(
        &self,
        at: girder_geo::Point,
        radius_m: f64,
    ) -> Result<Vec<api::NearbyDriver>, UberError> {
        use girder_geo::index::{Center, GeoIndex, Search};
        let count = std::num::NonZeroUsize::new(200).unwrap_or(std::num::NonZeroUsize::MIN);
        let query = Search::radius(Center::At(at), radius_m).limit(count);
        let hits = self.positions.search(&query).await?;
        // Which of them are free: one search of the free index over the same circle,
        // not a lookup per driver.
        let free: std::collections::HashSet<Arc<str>> = self
            .available
            .search(&Search {
                order: None,
                count: None,
                ..Search::radius(Center::At(at), radius_m)
            })
            .await?
            .into_iter()
            .map(|h| h.member)
            .collect();
        let mut out = Vec::with_capacity(hits.len());
        for hit in hits {
            let free = free.contains(&hit.member);
            let hash = blake3::hash(hit.member.as_bytes());
            let id: String = hash.as_bytes()[..6].iter().map(|b| format!("{b:02x}")).collect();
            out.push(api::NearbyDriver {
                id,
                lat: hit.point.lat(),
                lon: hit.point.lon(),
                dist_m: hit.dist_m,
                free,
            });
        }
        Ok(out)
    }

    /// What `/stats` shows.
    ///
    /// # Errors
    /// The store or an index failed.
    pub async fn stats(&self) -> Result<UberStatsView, UberError> {
        use girder_geo::index::GeoIndex;
        let rides = self.store.count_by_state().await?.into_iter().collect();
        Ok(UberStatsView {
            drivers_on_duty: self.positions.len().await?,
            drivers_free: self.available.len().await?,
            rides,
            fixes: self.counters.fixes.load(Ordering::Relaxed),
            offers: self.counters.offers.load(Ordering::Relaxed),
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            offers_lapsed: self.counters.lapsed.load(Ordering::Relaxed),
            no_driver: self.counters.no_driver.load(Ordering::Relaxed),
            shared_index: self.shared_index,
            instance: self.instance.clone(),
        })
    }
}

impl System for Uber {
    type Settings = UberSettings;

    const INFO: SystemInfo = SystemInfo {
        slug: "uber",
        name: "Uber",
        summary: "drivers stream locations into a geo index; rides are offered to the nearest free driver one at a time under a fenced lease; riders watch their driver live; surge and airport zones are geofences",
        patterns: &[
            "Redis Geospatial Indexes",
            "Geohashing for Proximity Search",
            "S2 Geometry for Precise Coverage",
            "Distributed Locks with TTL",
            "Status-Based Workflow",
            "WebSockets for Bi-directional Communication",
            "Server-Sent Events (SSE) for Server Push",
        ],
    };

    const DASHBOARD: &'static str = include_str!("../assets/uber.html");

    async fn open(context: &Context, settings: UberSettings) -> Result<Arc<Self>, OpenError> {
        let config = settings.resolve()?;
        girder_sql::migrate::run(&context.db, migrations()).await?;
        Self::open_with(context, config).await
    }

    fn router(self: &Arc<Self>) -> girder_system::Router {
        self.api_router()
    }

    fn openapi() -> utoipa::openapi::OpenApi {
        api::document()
    }

    async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let tasks = [
            tokio::spawn(matcher::run(Arc::clone(&self), shutdown.clone())),
            tokio::spawn(fleet::run_replica(Arc::clone(&self), shutdown.clone())),
            tokio::spawn(zones::run(Arc::clone(&self), shutdown.clone())),
        ];
        shutdown.wait().await;
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "an Uber task failed");
            }
        }
        self.hub.close();
    }

    async fn ready(&self) -> Result<(), BoxError> {
        use girder_geo::index::GeoIndex;
        self.store.db().ping().await?;
        self.available.len().await?;
        Ok(())
    }
}

/// The interval a driver should report at next.
const fn interval_for(on_ride: bool, offered: bool) -> Duration {
    if on_ride || offered { Duration::from_secs(2) } else { Duration::from_secs(5) }
}
