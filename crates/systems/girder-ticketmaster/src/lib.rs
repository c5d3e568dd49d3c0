//! Ticketmaster: ticket booking under heavy contention. A seat is sold once, no
//! seat is sold without a successful charge, and one Idempotency-Key never
//! charges twice — under any concurrency, across instances sharing a database.
//!
//! - Seats move AVAILABLE → RESERVED(until) → SOLD in girder-lock's reservation
//!   store (Pattern: Status-Based Workflow; Distributed Locks with TTL): a hold is
//!   all-or-nothing and lapses on its own at `until`.
//! - Confirmation charges a payment provider that is idempotent per key, guarded
//!   by girder-http's `Idempotency-Key` layer (Pattern: Idempotent Operations)
//!   and by a per-reservation claim so two keys never both charge.
//! - A virtual waiting room admits users at a fixed rate, computed from shared
//!   data and the clock.
//! - The seat map follows holds and sales as they commit (Pattern: Change Data
//!   Capture (CDC) for Data Sync; Server-Sent Events (SSE) for Server Push): each
//!   instance runs its own change consumer on the reservation store's table
//!   (module `feed`, started by [`System::run`]) and publishes every seat whose row
//!   changed, with its new state, on the event's topic of its own hub;
//!   `GET /events/{id}/seats/stream` is that topic as an event stream, resumable
//!   with `Last-Event-ID`. A hold made on this instance wakes the consumer at once;
//!   another instance's arrives within the poll interval (`[ticketmaster]
//!   feed_poll_ms`, 150 ms). A hold that lapses changes no row by itself — it reads
//!   as available at once — so the stream learns of it when the sweeper resets the
//!   row, within `sweep_interval_ms` (a second) of the lapse while the sweeper keeps
//!   up. Seats put on sale (inserts) are not streamed: an event is visible only once
//!   all its seats are on sale. The consumer is `ticketmaster_<instance id>`, kept
//!   across restarts (on PostgreSQL, a replication slot); module `feed` says how it
//!   starts, fails (and reports `/readyz`), and drops the consumers of instances
//!   that never come back.
//!
//! HTTP surface under `/api/ticketmaster`: venues, events, seat map and its stream,
//! reservations (hold, confirm, cancel) and the queue; see [`TicketmasterApi`].

mod api;
mod booking;
mod feed;
mod payment;
mod seats;
mod settings;
mod store;
mod waiting_room;

use std::sync::Arc;
use std::time::Duration;

use girder_core::Clock;
use girder_realtime::cdc::{Capture, Change, Op};
use girder_realtime::{Hub, HubConfig, Topic};
use parking_lot::RwLock;

use girder_http::cursor::CursorCodec;
use girder_http::idempotency::Idempotency;
use girder_system::{BoxError, Context, OpenError, Shutdown, System, SystemInfo};

pub use api::{
    ConfirmRequest, CreateEventRequest, CreateVenueRequest, ErrorKind, EventPage, EventView,
    EventsQuery, PAGE_LIMIT_MAX, QueueView, ReservationView, ReserveRequest, SeatChange, SeatMap,
    SeatView, TicketmasterApi, VenueView, WaitingRoomSpec,
};
pub use booking::{SEATS_PER_RESERVATION_MAX, seat_id, seat_price};
pub use feed::{FeedConfig, FeedError, FeedState};
pub use payment::{Charge, FakeProvider, PaymentError};
pub use seats::{HoldError, SeatError, SeatHold, SeatState, Seats};
pub use settings::TicketmasterSettings;
pub use store::{Event, Reservation, ReservationState, Section, Store, StoreError, Venue};
pub use waiting_room::{Admissions, frontier, wait_ms};

/// Everything Ticketmaster needs to start.
#[derive(Debug, Clone)]
pub struct TicketmasterConfig {
    /// How long a hold lasts. Default 600,000 (ten minutes).
    pub hold_ttl_ms: u64,
    /// Pause between sweeps of lapsed holds. Default 1,000.
    pub sweep_interval_ms: u64,
    /// Most holds and reservation rows one sweep handles. Default 500.
    pub sweep_batch_max: u32,
    /// Age after which a confirmation's Idempotency-Key claim is presumed
    /// orphaned by a dead instance and may be taken over. Default 60,000.
    pub pending_ttl_ms: u64,
    /// Seat changes kept per event for seat-map streams that reconnect. Default
    /// 1,000.
    pub stream_history: usize,
    /// Events whose seat changes the hub keeps; beyond it, events nobody watches
    /// are forgotten, and when every one has a viewer a new stream is refused.
    /// Default 1,024.
    pub stream_events_max: usize,
    /// The seat feed: polling, retries, stale consumers.
    pub feed: FeedConfig,
}

impl TicketmasterConfig {
    /// The defaults.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            hold_ttl_ms: 600_000,
            sweep_interval_ms: 1_000,
            sweep_batch_max: 500,
            pending_ttl_ms: 60_000,
            stream_history: 1_000,
            stream_events_max: 1_024,
            feed: FeedConfig::new(),
        }
    }
}

/// The largest number of events and venues kept in the in-process catalogue
/// cache (they never change once created, so the cache needs no invalidation).
const CATALOG_CACHE_MAX: usize = 1_024;

/// A running Ticketmaster.
pub struct Ticketmaster {
    db: Store,
    seats: Seats,
    provider: FakeProvider,
    idempotency: Idempotency,
    admissions: Admissions,
    cursors: CursorCodec,
    /// Immutable event + venue pairs by event id; bounded by [`CATALOG_CACHE_MAX`].
    catalog: RwLock<std::collections::HashMap<String, Arc<(Event, Venue)>>>,
    /// Seat changes by event (`seats.<event id>`), for the seat-map streams.
    hub: Hub,
    /// This instance's change consumer on the seat table, feeding `hub`.
    feed: feed::Feed,
    clock: Arc<dyn Clock>,
    config: TicketmasterConfig,
}

impl std::fmt::Debug for Ticketmaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticketmaster")
            .field("engine", &self.db.engine())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Settings rows holding the shared keys.
const CURSOR_KEY_SETTING: &str = "cursor_key";
const ADMISSION_KEY_SETTING: &str = "admission_key";

impl Ticketmaster {
    /// Opens Ticketmaster on `context`'s pool, whose tables [`migrations`] has brought
    /// up to date, with the reservation store on the same pool and change capture
    /// installed on its table (migration 911 applied). The seat feed starts with
    /// [`System::run`], which names its consumer from `context`'s instance id.
    ///
    /// # Errors
    /// The database cannot be reached, the reservation store's tables or capture
    /// cannot be created, or a stored key is corrupt.
    pub async fn open_with(
        context: &Context,
        config: TicketmasterConfig,
    ) -> Result<Arc<Self>, OpenError> {
        let clock = Arc::clone(&context.clock);
        let pool = &context.db;
        let seats = Seats::open(pool, Arc::clone(&clock), config.hold_ttl_ms)
            .await
            .map_err(OpenError::storage)?;
        // After the store: capture needs its table.
        let feed = feed::Feed::open(context, config.feed.clone()).await?;
        let hub = Hub::new(HubConfig {
            history_per_topic: config.stream_history,
            topics_max: config.stream_events_max.max(1),
            ..HubConfig::default()
        })
        .map_err(OpenError::storage)?;
        let provider = FakeProvider::new(pool.clone(), Arc::clone(&clock));
        let idempotency = Idempotency::new(pool.clone(), Arc::clone(&clock))
            .with_pending_ttl_ms(config.pending_ttl_ms);
        let key = |name| girder_sql::shared_key::<32>(pool, store::SETTINGS_TABLE, name);
        let admissions =
            Admissions::new(key(ADMISSION_KEY_SETTING).await.map_err(OpenError::storage)?);
        let cursors = CursorCodec::new(key(CURSOR_KEY_SETTING).await.map_err(OpenError::storage)?);
        Ok(Arc::new(Self {
            db: Store::new(pool.clone()),
            seats,
            provider,
            idempotency,
            admissions,
            cursors,
            catalog: RwLock::default(),
            hub,
            feed,
            clock,
            config,
        }))
    }

    /// The fake payment provider (its ledger is in the shared database).
    #[must_use]
    pub fn provider(&self) -> &FakeProvider {
        &self.provider
    }

    /// The Ticketmaster tables.
    #[must_use]
    pub fn db(&self) -> &Store {
        &self.db
    }

    /// The reservation store holding seat state.
    #[must_use]
    pub fn seats(&self) -> &Seats {
        &self.seats
    }

    /// The configuration it runs with.
    #[must_use]
    pub fn config(&self) -> &TicketmasterConfig {
        &self.config
    }

    /// The hub the seat-map streams read.
    #[must_use]
    pub const fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The change capture the seat feed reads (its consumers, pruning).
    #[must_use]
    pub const fn capture(&self) -> &Capture {
        self.feed.capture()
    }

    /// Where this instance's seat feed is.
    #[must_use]
    pub fn feed_state(&self) -> FeedState {
        self.feed.state()
    }

    /// Drops the seat feeds of other instances that nobody has read for
    /// [`FeedConfig::stale_ms`] (the running feed does this every minute); returns
    /// their names.
    ///
    /// # Errors
    /// The database failed.
    pub async fn drop_stale_feeds(&self) -> Result<Vec<String>, FeedError> {
        self.feed.drop_stale().await
    }

    /// Wakes the seat feed: this instance changed seats.
    fn seats_changed(&self) {
        self.feed.wake();
    }

    /// Publishes a change of the seat table on this instance's hub: the seat's new
    /// state on its event's topic, as [`SeatChange`] JSON. Inserts (seats put on
    /// sale), deletes and other tables captured on the same database are skipped.
    fn publish(&self, change: &Change) {
        if change.table != feed::TABLE || change.op != Op::Update {
            return;
        }
        let Some(after) = &change.after else { return };
        let Some(moved) = seats::SeatRow::read(after) else {
            tracing::warn!(
                position = %change.position,
                "a captured seat row does not read as a seat; skipped"
            );
            return;
        };
        let Some(topic) = seat_topic(&moved.pool) else { return };
        let payload =
            serde_json::to_vec(&api::seat_change(&moved, self.now_ms())).unwrap_or_default();
        match self.hub.publish(&topic, payload) {
            Ok(_) => {
                metrics::counter!("girder_ticketmaster_seat_changes_published_total").increment(1)
            }
            Err(e) => tracing::warn!(
                error = &e as &dyn std::error::Error,
                "a seat change was not published"
            ),
        }
    }

    /// Now, in the store's unit (signed Unix milliseconds).
    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Sweeps every `sweep_interval_ms` until `shutdown` resolves. The caller
    /// joins this future on shutdown.
    pub async fn run_background(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let interval = Duration::from_millis(self.config.sweep_interval_ms.max(1));
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.sweep_once().await {
                tracing::warn!(error = &e as &dyn std::error::Error, "ticketmaster sweep failed");
            }
        }
    }

    /// One bounded sweep: lapsed holds go back to the pool in the reservation
    /// store, and lapsed reservation rows become `expired`. A lapsed row whose
    /// confirmation left a charge behind (a payment timeout never retried) has
    /// the charge refunded — unless the store shows its seats sold by this
    /// hold, in which case the row is recorded as confirmed. Returns how many
    /// rows were expired.
    ///
    /// # Errors
    /// A store failed; the next sweep picks up where this one stopped.
    pub async fn sweep_once(&self) -> Result<usize, ErrorKind> {
        let batch = self.config.sweep_batch_max.max(1);
        if self.seats.sweep(batch as usize).await? > 0 {
            self.seats_changed();
        }
        let due = self.db.due_reservations(self.now_ms(), batch).await?;
        let mut expired = 0;
        for reservation in due {
            if let Some(key) = &reservation.confirming_key {
                // Only the store knows whether the confirm landed before `until`.
                if self.seats.sold_by(&reservation).await? {
                    let charge = self.provider.charges_for(key).await?;
                    if let Some(charge) = charge.iter().find(|c| !c.refunded) {
                        self.db.mark_confirmed(&reservation.id, &charge.id).await?;
                        continue;
                    }
                }
                if self.db.end_hold(&reservation.id, ReservationState::Expired).await? {
                    expired += 1;
                }
                if self.provider.refund_key(key).await? {
                    metrics::counter!("girder_ticketmaster_refunds_total", "reason" => "abandoned")
                        .increment(1);
                }
            } else if self.db.end_hold(&reservation.id, ReservationState::Expired).await? {
                expired += 1;
            }
        }
        if expired > 0 {
            metrics::counter!("girder_ticketmaster_holds_expired_total").increment(expired as u64);
        }
        Ok(expired)
    }

    /// The event and its venue, from the bounded in-process cache or the store.
    async fn event_and_venue(
        &self,
        event_id: &str,
    ) -> Result<Option<Arc<(Event, Venue)>>, ErrorKind> {
        if let Some(hit) = self.catalog.read().get(event_id) {
            return Ok(Some(Arc::clone(hit)));
        }
        let Some(event) = self.db.event(event_id).await? else {
            return Ok(None);
        };
        let venue = self
            .db
            .venue(&event.venue_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("event {event_id} has no venue")))?;
        let entry = Arc::new((event, venue));
        let mut catalog = self.catalog.write();
        if catalog.len() >= CATALOG_CACHE_MAX {
            catalog.clear();
        }
        catalog.insert(event_id.to_owned(), Arc::clone(&entry));
        Ok(Some(entry))
    }
}

/// The hub topic of an event's seat changes; `None` for a pool that is no event id.
pub(crate) fn seat_topic(event_id: &str) -> Option<Topic> {
    Topic::new(format!("seats.{event_id}")).ok()
}

/// A fresh random id with a type prefix: `prefix_` + 32 hex digits.
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:032x}", rand::random::<u128>())
}

impl Default for TicketmasterConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Ticketmaster's migrations, one set per engine.
#[must_use]
pub fn migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "ticketmaster",
        // One text serves both engines: the dialects agree on these tables.
        sqlite: sqlx::migrate!("./migrations"),
        postgres: sqlx::migrate!("./migrations"),
    }
}

impl System for Ticketmaster {
    type Settings = TicketmasterSettings;

    const INFO: SystemInfo = SystemInfo {
        slug: "ticketmaster",
        name: "Ticketmaster",
        summary: "seat holds with expiry, idempotent payment, a virtual waiting room",
        patterns: &[
            "Status-Based Workflow",
            "Distributed Locks with TTL",
            "Idempotent Operations",
            "ACID Transactions for Atomicity",
            "Pagination & Cursor-based Fetching",
            "Change Data Capture (CDC) for Data Sync",
            "Server-Sent Events (SSE) for Server Push",
        ],
    };

    const DASHBOARD: &'static str = include_str!("../assets/ticketmaster.html");

    async fn open(
        context: &Context,
        settings: TicketmasterSettings,
    ) -> Result<Arc<Self>, OpenError> {
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
        let sweeper = Arc::clone(&self).run_background(shutdown.clone().wait());
        let feed = self.feed.run(|change| self.publish(change), shutdown);
        tokio::join!(sweeper, feed);
        // Open seat-map streams end with a `closed` event instead of hanging the
        // shutdown.
        self.hub.close();
    }

    async fn ready(&self) -> Result<(), BoxError> {
        self.db.pool().ping().await?;
        self.feed.health()?;
        Ok(())
    }
}
