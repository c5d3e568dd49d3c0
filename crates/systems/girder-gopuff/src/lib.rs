//! GoPuff: local delivery from distribution centres. The system that exercises
//! contention on inventory: concurrent orders never drive stock below zero, and
//! the units ordered equal the stock removed ("Pattern: ACID Transactions for
//! Atomicity", with row locks or "Pattern: Optimistic Locking with Version
//! Fields"), on SQLite and PostgreSQL, across instances sharing the database.
//! The availability read path is cached ("Pattern: Query Result Caching") and an
//! in-process geo index of the centres on every instance finds nearby centres
//! ("Pattern: Redis Geospatial Indexes", see [`nearby`]).
//!
//! HTTP surface, nested at `/api/gopuff`: `POST/GET /centers`,
//! `GET /centers/nearest`, `POST /items`, `PUT /centers/{id}/inventory/{sku}`,
//! `POST /centers/{id}/inventory/{sku}/restock`, `GET /availability`,
//! `POST /orders`, `GET /orders/{id}`, `GET /centers/{id}/orders`.

mod api;
pub mod availability;
pub mod geo;
pub mod nearby;
pub mod order;
mod settings;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use girder_core::Clock;
use girder_lock::retry::RetryPolicy;

use availability::{Availability, AvailabilityConfig};
use girder_http::cursor::CursorCodec;
use girder_http::idempotency::Idempotency;
use girder_system::{BoxError, Context, OpenError, Shutdown, System, SystemInfo};
use nearby::NearbyCenters;
use store::Store;

pub use settings::GoPuffSettings;

/// GoPuff's migrations, one set per engine.
#[must_use]
pub fn migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "gopuff",
        sqlite: sqlx::migrate!("migrations/sqlite"),
        postgres: sqlx::migrate!("migrations/postgres"),
    }
}

pub use api::{
    AvailabilityQuery, AvailabilityView, CenterAvailability, CenterPage, CenterView, ErrorKind,
    GoPuffApi, InventoryRequest, ItemRequest, ItemView, NearestQuery, NearestView,
    NewCenterRequest, OrderLineRequest, OrderLineView, OrderPage, OrderRequest, OrderView,
    PageQuery, RestockRequest, StockView,
};

/// How an order keeps concurrent orders from overselling.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Strategy {
    /// Read versions without locking; decrement only if unchanged; retry.
    Optimistic,
    /// Lock the rows (PostgreSQL `FOR UPDATE`, SQLite `BEGIN IMMEDIATE`) first.
    #[default]
    RowLock,
}

impl Strategy {
    /// The wire and metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Optimistic => "optimistic",
            Self::RowLock => "row_lock",
        }
    }
}

/// Everything GoPuff needs to start.
#[derive(Debug, Clone)]
pub struct GoPuffConfig {
    /// The strategy of orders that name none.
    pub default_strategy: Strategy,
    /// Retries of an order's transaction on optimistic conflicts and engine
    /// busy/serialization errors.
    pub retry: RetryPolicy,
    /// Lifetime of cached availability results (the cross-instance staleness
    /// bound without Redis), before jitter.
    pub availability_ttl_ms: u64,
    /// Jitter of that lifetime, as a fraction either way (0.0–0.5).
    pub availability_ttl_jitter_fraction: f64,
    /// Upper bound on cached availability results (one per centre).
    pub availability_cache_entries: u64,
    /// How old this instance's index of centres may get before a nearby search
    /// reloads it from the store: the bound on seeing centres created on other
    /// instances, or changed in the database directly.
    pub centers_refresh_ms: u64,
}

impl GoPuffConfig {
    /// The defaults: row locks, girder-lock's default retry policy (10 attempts,
    /// 2–200 ms full-jitter backoff), a 2 s availability TTL with 10% jitter, 100,000
    /// cached results, centres reloaded every 2 s.
    #[must_use]
    pub fn new() -> Self {
        Self {
            default_strategy: Strategy::RowLock,
            retry: RetryPolicy::default(),
            availability_ttl_ms: 2_000,
            availability_ttl_jitter_fraction: 0.1,
            availability_cache_entries: 100_000,
            centers_refresh_ms: 2_000,
        }
    }
}

/// Order counts since start, on this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrderStats {
    /// Orders accepted.
    pub accepted: u64,
    /// Orders refused (insufficient stock, unknown centre or sku, contention).
    pub rejected: u64,
    /// Transaction attempts beyond the first, over all orders.
    pub retries: u64,
    /// Orders that gave up on contention.
    pub contention: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    contention: AtomicU64,
}

/// A running GoPuff.
pub struct GoPuff {
    store: Store,
    availability: Availability,
    nearby: NearbyCenters,
    cursors: CursorCodec,
    /// Order placement accepts an `Idempotency-Key`: a retried order is placed once.
    idempotency: Idempotency,
    counters: Counters,
    clock: Arc<dyn Clock>,
    config: GoPuffConfig,
}

impl std::fmt::Debug for GoPuff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoPuff")
            .field("engine", &self.store.engine())
            .field("availability", &self.availability)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The settings row holding the cursor MAC key, shared by all instances.
const CURSOR_KEY_SETTING: &str = "cursor_key";

impl GoPuff {
    /// Opens GoPuff on `context`'s pool, whose tables [`migrations`] has brought up
    /// to date, builds the availability cache (with a Redis L2 when `context` has
    /// Redis) and loads the centres into the nearby index.
    ///
    /// # Errors
    /// The database or Redis cannot be reached, the cache settings are invalid, or
    /// the stored cursor key is corrupt.
    pub async fn open_with(
        context: &Context,
        config: GoPuffConfig,
    ) -> Result<Arc<Self>, OpenError> {
        let store = Store::new(context.db.clone());
        let clock = Arc::clone(&context.clock);
        let availability = Availability::new(
            store.clone(),
            AvailabilityConfig {
                ttl_ms: config.availability_ttl_ms,
                ttl_jitter_fraction: config.availability_ttl_jitter_fraction,
                capacity_entries: config.availability_cache_entries,
            },
            context.redis_url.as_deref(),
            Arc::clone(&clock),
        )
        .await
        .map_err(OpenError::storage)?;
        let key =
            girder_sql::shared_key::<32>(store.db(), store::SETTINGS_TABLE, CURSOR_KEY_SETTING)
                .await
                .map_err(OpenError::storage)?;
        let nearby = NearbyCenters::new(config.centers_refresh_ms, Arc::clone(&clock));
        nearby.reload(&store, clock.now_ms()).await.map_err(OpenError::storage)?;
        Ok(Arc::new(Self {
            store,
            availability,
            nearby,
            cursors: CursorCodec::new(key),
            idempotency: Idempotency::new(context.db.clone(), Arc::clone(&clock)),
            counters: Counters::default(),
            clock,
            config,
        }))
    }

    /// The store (tests and operators read stock directly through it).
    #[must_use]
    pub const fn store(&self) -> &Store {
        &self.store
    }

    /// Counters of the availability cache.
    #[must_use]
    pub fn cache_stats(&self) -> girder_cache::CacheStats {
        self.availability.stats()
    }

    /// The availability cache (tests watch its invalidation listener).
    #[must_use]
    pub const fn availability(&self) -> &Availability {
        &self.availability
    }

    /// This instance's index of centres.
    #[must_use]
    pub const fn nearby(&self) -> &NearbyCenters {
        &self.nearby
    }

    /// Reloads this instance's index of centres from the store now (a search does
    /// so by itself once the index is `centers_refresh_ms` old).
    ///
    /// # Errors
    /// The store failed; the index is as before.
    pub async fn refresh_centers(&self) -> Result<(), store::StoreError> {
        self.nearby.reload(&self.store, self.clock.now_ms()).await
    }

    /// Order counts since start, on this instance.
    #[must_use]
    pub fn order_stats(&self) -> OrderStats {
        OrderStats {
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            rejected: self.counters.rejected.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
            contention: self.counters.contention.load(Ordering::Relaxed),
        }
    }

    /// GoPuff has no periodic work; this waits for `shutdown`, then stops the
    /// cache's invalidation listener. The caller joins this future on shutdown.
    pub async fn run_background(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        self.availability.shutdown().await;
    }

    /// Now, in the store's unit (signed Unix milliseconds).
    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }
}

impl Default for GoPuffConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl System for GoPuff {
    type Settings = GoPuffSettings;

    const INFO: SystemInfo = SystemInfo {
        slug: "gopuff",
        name: "GoPuff",
        summary: "inventory and multi-item ACID orders: row locks or optimistic versions, cached availability",
        patterns: &[
            "ACID Transactions for Atomicity",
            "Optimistic Locking with Version Fields",
            "Query Result Caching",
            "Pagination & Cursor-based Fetching",
            "Redis Geospatial Indexes",
        ],
    };

    const DASHBOARD: &'static str = include_str!("../assets/gopuff.html");

    async fn open(context: &Context, settings: GoPuffSettings) -> Result<Arc<Self>, OpenError> {
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
        self.run_background(shutdown.wait()).await;
    }

    async fn ready(&self) -> Result<(), BoxError> {
        Ok(self.store.db().ping().await?)
    }
}
