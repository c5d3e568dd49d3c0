//! Ad Click Aggregator: advertisers create ads; each time an ad is shown the caller
//! gets a signed impression and its click URL; a click redirects to the advertiser
//! and is counted once; advertisers query clicks per minute, hour or day.
//!
//! **Counted once.** An impression token is signed by the server (a forged or altered
//! one is refused), and the first click of an impression is recorded in `ac_clicks`,
//! whose primary key is the impression: that insert is the exact duplicate check,
//! shared by every instance. In front of it each instance keeps a Bloom filter of the
//! impressions it has seen clicked. A "not seen" answer is certain, so the click goes
//! straight to the insert. A "maybe seen" answer may be a false positive, so it is
//! never trusted alone: the exact check looks the impression up, and a false positive
//! goes on to be counted like any first click. The filter only spares repeated
//! clicks (a bot's, a double click) the write; it can never drop a real one.
//!
//! **Stream and batch (the Lambda architecture).** A counted click is appended to
//! this instance's partitioned click log (girder-stream, partitioned by ad); a
//! pipeline counts clicks per ad per one-minute tumbling window on event time and
//! commits each checkpoint — counts, operator state, log offsets — in one
//! transaction, so a crash and restart neither loses nor double-counts a logged
//! click, and the per-minute counts are live (early emissions) while a minute fills.
//! The raw `ac_clicks` rows are the record of truth: reconciliation recomputes closed
//! minutes from them, reports the drift from the stream's counts (clicks past the
//! allowed lateness, or recorded by an instance that died before it logged them) and
//! repairs it with a correction row, so the counts served converge on the exact ones.
//!
//! **One instance or several.** Without NATS each instance appends to its own
//! embedded log and runs its own pipeline over it; the per-minute rows of all
//! pipelines add up. With NATS the log is one JetStream stream and the pipeline is
//! shared: members split the partitions round-robin under fenced leases
//! (girder-stream's `Coordinator`), and a dead member's partitions move to the
//! others when its leases run out, resuming from their last checkpoint.
//!
//! **Click fraud basics.** Tokens are signed and expire; the click route wears the
//! server's rate-limit layer, with per-IP and per-user rules in the built-in limits.
//!
//! HTTP surface, nested at `/api/adclicks`: `POST /ads`, `GET /ads`, `GET /ads/{id}`,
//! `POST /ads/{id}/impressions`, `GET /click/{token}` (the redirect),
//! `GET /ads/{id}/clicks`, and for operators `GET /stats`, `POST /reconcile`.

mod api;
pub mod clicklog;
mod settings;
pub mod store;
pub mod token;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use girder_core::Clock;
use girder_sketch::bloom::{BloomConfig, BloomFilter};
use girder_stream::jetstream::{JetStreamLog, JetStreamLogConfig};
use girder_stream::log::{LogConfig, PartitionedLog};
use girder_stream::runner::{PartitionRunner, RunnerConfig};
use girder_stream::sql::{Coordinator, CoordinatorConfig, SqlCommitter, StreamStore};
use girder_stream::{Count, EmitPolicy, OperatorConfig, WindowSpec};
use girder_system::{BoxError, Context, OpenError, Shutdown, System, SystemInfo};

use clicklog::ClickLog;
use store::{MINUTE_MS, MinuteSink, Store};
use token::{Impression, Tokens};

pub use api::{
    AdClicksApi, AdPage, AdView, AdsQuery, BucketView, ClicksQuery, ClicksView, ErrorKind,
    Granularity, ImpressionView, NewAdRequest, PartitionView, ReconcileQuery, ReconcileView,
    StatsView,
};
pub use settings::AdClicksSettings;

/// Ad Click Aggregator's migrations.
#[must_use]
pub fn migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "adclicks",
        sqlite: sqlx::migrate!("migrations/sqlite"),
        postgres: sqlx::migrate!("migrations/postgres"),
    }
}

/// Everything Ad Click Aggregator needs to start.
#[derive(Debug, Clone)]
pub struct AdClicksConfig {
    /// Partitions of the click log.
    pub partitions: u32,
    /// How far behind the newest click the watermark trails.
    pub out_of_orderness_ms: i64,
    /// How long after its end a minute still takes late clicks.
    pub allowed_lateness_ms: i64,
    /// How often reconciliation runs.
    pub reconcile_interval_ms: u64,
    /// How far back each reconciliation looks.
    pub reconcile_window_ms: i64,
    /// How long an impression can be clicked and counted.
    pub impression_ttl_ms: i64,
    /// How often the pipeline checkpoints.
    pub checkpoint_ms: u64,
    /// Impressions the Bloom filter holds before it starts afresh.
    pub bloom_capacity: u64,
    /// The click log's name on NATS JetStream, shared by every instance of one
    /// deployment (unused by the embedded log).
    pub log_name: String,
    /// How long a member's claim on a partition lasts without renewal: how long a
    /// dead instance's partitions wait before another takes them.
    pub lease_ms: u64,
    /// How often members beat, renew and rebalance.
    pub heartbeat_ms: u64,
}

impl AdClicksConfig {
    /// The defaults: 4 partitions, 2 s out-of-orderness, 60 s lateness, reconcile the
    /// last hour every minute, impressions clickable for a day, checkpoints every
    /// 500 ms, a Bloom filter of 1,000,000 impressions at 1%, partition leases of 10 s
    /// renewed every second.
    #[must_use]
    pub fn new() -> Self {
        Self {
            partitions: 4,
            out_of_orderness_ms: 2_000,
            allowed_lateness_ms: 60_000,
            reconcile_interval_ms: 60_000,
            reconcile_window_ms: 3_600_000,
            impression_ttl_ms: 86_400_000,
            checkpoint_ms: 500,
            bloom_capacity: 1_000_000,
            log_name: "adclicks".to_owned(),
            lease_ms: 10_000,
            heartbeat_ms: 1_000,
        }
    }
}

impl Default for AdClicksConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// What a click did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickOutcome {
    /// The impression's first click: counted.
    Counted,
    /// Clicked before: redirected, not counted.
    Duplicate,
    /// The impression is older than its time to live: redirected, not counted.
    Expired,
}

/// The Bloom filter in front of the exact check, with its counters.
struct Seen {
    filter: BloomFilter,
    inserted: u64,
}

/// Counters since start.
#[derive(Debug, Default)]
struct Counters {
    counted: AtomicU64,
    duplicates: AtomicU64,
    expired: AtomicU64,
    bloom_maybe: AtomicU64,
    bloom_false_positives: AtomicU64,
    unlogged: AtomicU64,
    refused: AtomicU64,
}

/// A reconciliation's findings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// (ad, minute) pairs compared.
    pub checked: u64,
    /// Pairs whose stream count differed from the raw clicks.
    pub drifted: u64,
    /// The sum of |exact − stream| over them.
    pub drift: i64,
    /// Corrections written or removed.
    pub repaired: u64,
}

/// A running Ad Click Aggregator.
pub struct AdClicks {
    store: Store,
    tokens: Tokens,
    log: ClickLog,
    seen: parking_lot::Mutex<Seen>,
    stream: StreamStore,
    member: String,
    counters: Counters,
    clock: Arc<dyn Clock>,
    config: AdClicksConfig,
}

impl std::fmt::Debug for AdClicks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdClicks")
            .field("pipeline", &self.stream.pipeline())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdClicksError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

const TOKEN_KEY_SETTING: &str = "adclicks_token_key";

impl AdClicks {
    /// Opens on `context`. Without NATS the click log is this instance's own, in
    /// `<data_dir>/adclicks/log`, and so is its pipeline. With NATS
    /// (`context.nats_url`) the log is one JetStream stream every instance shares, and
    /// so is the pipeline: the instances split its partitions and take over those of
    /// one that leaves or dies.
    ///
    /// # Errors
    /// The log cannot be opened (another process holds it, or it has another partition
    /// count), or the token key is corrupt.
    pub async fn open_with(
        context: &Context,
        config: AdClicksConfig,
    ) -> Result<Arc<Self>, OpenError> {
        let dir = context.data_dir.join("adclicks");
        std::fs::create_dir_all(&dir).map_err(OpenError::storage)?;
        let member = context.instance_id("adclicks").map_err(OpenError::storage)?;
        let (log, pipeline) = match context.nats_url.as_deref() {
            None => {
                let log = PartitionedLog::open(&LogConfig::new(dir.join("log"), config.partitions))
                    .map_err(OpenError::storage)?;
                (ClickLog::Embedded(Arc::new(log)), format!("adclicks-{member}"))
            }
            Some(url) => {
                let log_config =
                    JetStreamLogConfig::new(config.log_name.clone(), config.partitions);
                let log =
                    JetStreamLog::connect(url, log_config).await.map_err(OpenError::storage)?;
                (ClickLog::Shared(Arc::new(log)), format!("adclicks-{}", config.log_name))
            }
        };
        let key = girder_sql::shared_key::<32>(
            &context.db,
            girder_sql::migrate::SERVER_SETTINGS_TABLE,
            TOKEN_KEY_SETTING,
        )
        .await
        .map_err(OpenError::storage)?;
        let stream = StreamStore::new(context.db.clone(), pipeline, Arc::clone(&context.clock));
        let filter = BloomFilter::new(&BloomConfig::new(config.bloom_capacity, 0.01))
            .map_err(OpenError::storage)?;
        Ok(Arc::new(Self {
            store: Store::new(context.db.clone()),
            tokens: Tokens::new(key),
            log,
            seen: parking_lot::Mutex::new(Seen { filter, inserted: 0 }),
            stream,
            member,
            counters: Counters::default(),
            clock: Arc::clone(&context.clock),
            config,
        }))
    }

    /// The tables.
    #[must_use]
    pub const fn store(&self) -> &Store {
        &self.store
    }

    /// The click log.
    #[must_use]
    pub const fn log(&self) -> &ClickLog {
        &self.log
    }

    /// The stream pipeline's rows.
    #[must_use]
    pub const fn stream(&self) -> &StreamStore {
        &self.stream
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// A new impression of `ad_id` for `viewer`, and its token.
    #[must_use]
    pub fn impression(&self, ad_id: i64, viewer: &str) -> (Impression, String) {
        let impression = Impression {
            ad_id,
            issued_ms: self.now_ms(),
            id: rand::random(),
            viewer: viewer.to_owned(),
        };
        let token = self.tokens.sign(&impression);
        (impression, token)
    }

    /// The impression a token names, if it is genuine.
    #[must_use]
    pub fn verify(&self, token: &str) -> Option<Impression> {
        self.tokens.verify(token)
    }

    /// Counts `impression`'s click unless it was clicked before or has expired.
    ///
    /// # Errors
    /// The database failed (nothing was counted).
    pub async fn click(&self, impression: &Impression) -> Result<ClickOutcome, AdClicksError> {
        let now = self.now_ms();
        if now.saturating_sub(impression.issued_ms) > self.config.impression_ttl_ms {
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
            return Ok(ClickOutcome::Expired);
        }
        let id = impression.id_hex();
        let maybe = self.seen.lock().filter.contains(impression.id);
        if maybe {
            self.counters.bloom_maybe.fetch_add(1, Ordering::Relaxed);
            if self.store.clicked(&id).await? {
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                return Ok(ClickOutcome::Duplicate);
            }
            self.counters.bloom_false_positives.fetch_add(1, Ordering::Relaxed);
        }
        let first = self.store.record_click(&id, impression.ad_id, &impression.viewer, now).await?;
        self.remember(impression.id);
        if !first {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(ClickOutcome::Duplicate);
        }
        self.counters.counted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("girder_adclicks_clicks_total").increment(1);
        let event = encode_event(impression.ad_id, now);
        if let Err(e) = self.log.append(&impression.ad_id.to_le_bytes(), event).await {
            // Recorded but not logged: reconciliation counts it from the raw clicks.
            self.counters.unlogged.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = &e as &dyn std::error::Error, "a counted click was not logged");
        }
        Ok(ClickOutcome::Counted)
    }

    fn remember(&self, id: [u8; 16]) {
        let mut seen = self.seen.lock();
        if seen.inserted >= self.config.bloom_capacity {
            // Full: start afresh (older impressions fall back to the exact check).
            seen.filter.clear();
            seen.inserted = 0;
        }
        if !seen.filter.contains(id) {
            seen.filter.insert(id);
            seen.inserted += 1;
        }
    }

    /// Compares the stream's counts of the closed minutes in `[from, to)` with the raw
    /// clicks and writes the difference as corrections.
    ///
    /// # Errors
    /// The database failed; corrections written before it stay (each is whole).
    pub async fn reconcile(&self, from: i64, to: i64) -> Result<Reconciliation, AdClicksError> {
        let from = from - from.rem_euclid(MINUTE_MS);
        let to = to - to.rem_euclid(MINUTE_MS);
        let exact = self.store.exact(from, to).await?;
        let streamed = self.store.counted(from, to, false).await?;
        let corrections = self.store.counted(from, to, true).await?;
        let mut report = Reconciliation::default();
        let keys: std::collections::BTreeSet<(i64, i64)> =
            exact.keys().chain(streamed.keys()).chain(corrections.keys()).copied().collect();
        for key in keys {
            report.checked += 1;
            let want = exact.get(&key).copied().unwrap_or(0);
            let got = streamed.get(&key).copied().unwrap_or(0);
            let correction = want - got;
            if correction != 0 {
                report.drifted += 1;
                report.drift += correction.abs();
            }
            if corrections.get(&key).copied().unwrap_or(0) != correction {
                self.store.set_correction(key.0, key.1, correction).await?;
                report.repaired += 1;
            }
        }
        metrics::counter!("girder_adclicks_reconciled_drift_total")
            .increment(report.drift.unsigned_abs());
        Ok(report)
    }

    /// The last minute reconciliation may touch: every stream has finished it.
    #[must_use]
    pub fn closed_before(&self) -> i64 {
        let now = self.now_ms();
        let settled = now
            - self.config.out_of_orderness_ms
            - self.config.allowed_lateness_ms
            - 2 * i64::try_from(self.config.checkpoint_ms).unwrap_or(0)
            - MINUTE_MS;
        settled - settled.rem_euclid(MINUTE_MS)
    }

    async fn reconcile_loop(self: Arc<Self>, shutdown: Shutdown) {
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.config.reconcile_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            let to = self.closed_before();
            match self.reconcile(to - self.config.reconcile_window_ms, to).await {
                Ok(r) if r.drifted > 0 => tracing::info!(
                    checked = r.checked,
                    drifted = r.drifted,
                    drift = r.drift,
                    "reconciliation repaired drift"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = &e as &dyn std::error::Error, "reconciliation failed")
                }
            }
        }
    }

    fn runner(self: &Arc<Self>) -> PartitionRunner<ClickLog, SqlCommitter<MinuteSink>, Count, i64> {
        let me = Arc::clone(self);
        PartitionRunner {
            source: self.log.clone(),
            committer: Arc::new(SqlCommitter {
                store: self.stream.clone(),
                sink: MinuteSink { pipeline: self.stream.pipeline().to_owned() },
            }),
            aggregate: Count,
            operator: OperatorConfig {
                out_of_orderness_ms: self.config.out_of_orderness_ms,
                allowed_lateness_ms: self.config.allowed_lateness_ms,
                emit: EmitPolicy::Early,
                ..OperatorConfig::new(WindowSpec::Tumbling { size_ms: MINUTE_MS })
            },
            config: RunnerConfig {
                checkpoint_every: Duration::from_millis(self.config.checkpoint_ms),
                ..RunnerConfig::default()
            },
            decode: Arc::new(decode_event),
            refused: Arc::new(move |r| {
                me.counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?r, "a logged click was refused by the stream");
            }),
            clock: Arc::clone(&self.clock),
        }
    }

    /// Runs the pipeline over this instance's log partitions until `shutdown`.
    async fn stream_loop(self: Arc<Self>, shutdown: Shutdown) {
        let runner = Arc::new(self.runner());
        let coordinator = Coordinator::new(
            self.stream.clone(),
            self.member.clone(),
            self.config.partitions,
            CoordinatorConfig {
                heartbeat: Duration::from_millis(self.config.heartbeat_ms),
                member_ttl: Duration::from_millis(self.config.lease_ms / 2),
                lease: Duration::from_millis(self.config.lease_ms),
            },
        );
        coordinator
            .run(
                move |partition, epoch, stop| {
                    let runner = Arc::clone(&runner);
                    async move {
                        if let Err(e) = runner.run(partition, epoch, stop).await {
                            tracing::warn!(
                                partition,
                                error = &e as &dyn std::error::Error,
                                "a click stream partition stopped"
                            );
                        }
                    }
                },
                shutdown.wait(),
            )
            .await;
    }
}

/// A logged click: ad id and click time, little-endian.
fn encode_event(ad_id: i64, clicked_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&ad_id.to_le_bytes());
    out.extend_from_slice(&clicked_ms.to_le_bytes());
    out
}

fn decode_event(bytes: &[u8]) -> Result<(i64, i64, u64), String> {
    let bytes: &[u8; 16] =
        bytes.try_into().map_err(|_| format!("{} bytes, not 16", bytes.len()))?;
    let (ad, t) = bytes.split_at(8);
    let ad = i64::from_le_bytes(ad.try_into().map_err(|_| "ad id")?);
    let t = i64::from_le_bytes(t.try_into().map_err(|_| "time")?);
    Ok((ad, t, 1))
}

impl System for AdClicks {
    type Settings = AdClicksSettings;

    const INFO: SystemInfo = SystemInfo {
        slug: "adclicks",
        name: "Ad Click Aggregator",
        summary: "signed impressions, clicks counted once, per-minute counts from a checkpointed stream, reconciled from the raw clicks",
        patterns: &[
            "Stream Processing",
            "Idempotent Operations",
            "Bloom Filter for Membership Testing",
        ],
    };

    const DASHBOARD: &'static str = include_str!("../assets/adclicks.html");

    async fn open(context: &Context, settings: AdClicksSettings) -> Result<Arc<Self>, OpenError> {
        let config = settings.resolve()?;
        girder_sql::migrate::run(&context.db, girder_stream::sql::migrations()).await?;
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
        // Joined, not spawned: when this future is dropped, so is everything it runs.
        tokio::join!(
            Arc::clone(&self).stream_loop(shutdown.clone()),
            Arc::clone(&self).reconcile_loop(shutdown)
        );
    }

    async fn ready(&self) -> Result<(), BoxError> {
        self.store.db().ping().await?;
        Ok(())
    }
}
