//! YouTube Top-K: the most viewed videos of the last minute, hour, day and all time,
//! counted from a stream of view events.
//!
//! **Problem.** Views arrive by the hundred thousand a second, out of order and
//! sometimes more than once per delivery attempt; a top-K must be fresh (the current
//! minute fills live), must not lose or double a view when an instance restarts, and
//! must be answerable by any instance. Exact answers over a day of minutes cost reads
//! in proportion to the distinct videos in it.
//!
//! **How.** `POST /views` (and the built-in generator) append each view to this
//! instance's durable partitioned log (girder-stream's [`PartitionedLog`], a
//! write-ahead log per partition; the answer comes after the group commit). The
//! instance's [`pipeline`] counts views per video per minute with tumbling windows on
//! event time, emitting the open minute early, and commits the counts, the
//! partition's offset and its window state in one transaction ([`sink`]): an
//! **exactly-once effect** — a restart resumes from the last checkpoint, and the
//! whole-value upserts land on the same rows. The same transaction moves the all-time
//! totals and the Space-Saving summaries by the difference `new − old`.
//!
//! **Exact or approximate** ([`top`]). Exact sums the shared minute rows over the
//! range (all time: the totals table) — correct to the view, cost growing with the
//! videos in range. Approximate merges stored Space-Saving summaries (girder-sketch's
//! [`SpaceSaving`](girder_sketch::topk::SpaceSaving), 1,000 keys each) per partition
//! and per minute, ten minutes and hour ([`span`]: at most 51 buckets cover a day) and
//! returns each count with its error, `true ∈ [count − error, count]`, fixed cost
//! whatever the number of videos. *Why Space-Saving and not Count-Min + heap:* a
//! Count-Min sketch bounds every count by `εN` only with probability `1 − δ`, and the
//! heap of candidates beside it does not merge (a video heavy across instances but
//! light on each is missing from every heap); Space-Saving summaries merge with the
//! same guarantee as one summary of the whole stream, report which videos are heavy,
//! and give each its own, usually much smaller, deterministic error. The price is one
//! stored key per slot instead of counters only.
//!
//! **Several instances** share one database: each runs its own pipeline over its own
//! log (named `topk-<instance id>`, the id kept in the data directory), and every read
//! sums or merges across pipelines, so any instance answers with the union of all
//! instances' views.
//!
//! **Trade-offs.** A minute's count is final `out_of_orderness_ms` after it ends;
//! views later than `allowed_lateness_ms` are refused and counted, not added. The
//! live minute trails the views by about one checkpoint interval.
//!
//! HTTP surface, nested at `/api/topk`: `POST /views`, `GET /top`, `GET /stats`,
//! and for operators `GET/POST/DELETE /generator`.

mod api;
pub mod event;
pub mod generator;
pub mod pipeline;
mod settings;
pub mod sink;
pub mod span;
pub mod store;
pub mod top;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use girder_core::Clock;
use girder_stream::log::{LogConfig, PartitionedLog};
use girder_stream::sql::{SqlCommitter, StreamStore};
use girder_system::{BoxError, Context, OpenError, Shutdown, System, SystemInfo};

use event::{Refusal, TimeBounds};
use generator::{GeneratorSpec, Running, ViewSink};
use pipeline::{Pipeline, Refusals};
use span::Window;
use store::Store;
use top::{Mode, Top, TopError};

pub use api::{
    ErrorKind, TopKApi, TopKGeneratorRequest, TopKGeneratorView, TopKIngestView, TopKRankedView,
    TopKStatsView, TopKTopView, TopKViewBatch, TopKViewEvent, TopQuery,
};
pub use settings::TopKSettings;

/// Top-K's migrations: girder-stream's partition table is applied by
/// [`girder_stream::sql::migrations`] first, in [`TopK::open`].
#[must_use]
pub fn migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "topk",
        sqlite: sqlx::migrate!("migrations/sqlite"),
        postgres: sqlx::migrate!("migrations/postgres"),
    }
}

/// Everything Top-K needs to start.
#[derive(Debug, Clone, Copy)]
pub struct TopKConfig {
    /// Partitions of the instance's view log.
    pub partitions: u32,
    /// How often each partition commits.
    pub checkpoint_ms: u64,
    /// How far the watermark trails the newest view.
    pub out_of_orderness_ms: i64,
    /// How long a closed minute still takes views.
    pub allowed_lateness_ms: i64,
    /// How far ahead of the clock a view may be.
    pub future_ms_max: i64,
    /// Open video-minute counts per partition.
    pub slots_max: usize,
    /// Minutes of minute rows and summaries kept.
    pub retention_minutes: i64,
    /// How often old rows are pruned and the log truncated.
    pub housekeeping_ms: u64,
}

impl TopKConfig {
    /// The defaults: 2 partitions committing every second, 5 s out of order, a minute
    /// of lateness, 2 s of clock skew, a million open counts, two days kept, housework
    /// every minute.
    #[must_use]
    pub fn new() -> Self {
        Self {
            partitions: 2,
            checkpoint_ms: 1_000,
            out_of_orderness_ms: 5_000,
            allowed_lateness_ms: 60_000,
            future_ms_max: 2_000,
            slots_max: 1_000_000,
            retention_minutes: 2_880,
            housekeeping_ms: 60_000,
        }
    }

    fn bounds(&self) -> TimeBounds {
        TimeBounds {
            future_ms_max: self.future_ms_max,
            out_of_orderness_ms: self.out_of_orderness_ms,
            allowed_lateness_ms: self.allowed_lateness_ms,
        }
    }
}

impl Default for TopKConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The most views one batch carries.
pub const BATCH_MAX: usize = 1_000;

/// Why a Top-K operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopKError {
    /// The view log failed.
    #[error("the view log")]
    Log(#[from] girder_stream::SourceError),
    /// A top-K could not be computed.
    #[error(transparent)]
    Top(#[from] TopError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The stream's tables failed.
    #[error("the stream's tables")]
    Stream(#[from] girder_stream::sql::SqlStreamError),
}

/// What an ingest did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Views appended to the log (to be counted).
    pub accepted: u64,
    /// Views refused because their minute had closed past the allowed lateness.
    pub too_old: u64,
    /// Views refused because they lie too far ahead of the clock.
    pub in_future: u64,
}

/// This instance's counters since it started.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    too_old: AtomicU64,
    in_future: AtomicU64,
}

/// Appends views to the log (shared by the HTTP batches and the generator).
struct Ingest {
    log: Arc<PartitionedLog>,
    clock: Arc<dyn Clock>,
    bounds: TimeBounds,
    counters: Counters,
}

impl Ingest {
    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    async fn append(&self, views: &[(&str, Option<i64>)]) -> Result<Ingested, TopKError> {
        let now = self.now_ms();
        let mut by_partition: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut done = Ingested::default();
        for &(video, at) in views {
            let at = at.unwrap_or(now);
            match self.bounds.check(at, now) {
                Ok(()) => {
                    let p = self.log.partition_of(video.as_bytes()) as usize;
                    if by_partition.len() <= p {
                        by_partition.resize_with(p + 1, Vec::new);
                    }
                    by_partition[p].push(event::encode(video, at));
                    done.accepted += 1;
                }
                Err(Refusal::TooOld) => done.too_old += 1,
                Err(Refusal::InFuture) => done.in_future += 1,
            }
        }
        let appends = by_partition
            .into_iter()
            .enumerate()
            .filter(|(_, records)| !records.is_empty())
            .map(|(p, records)| self.log.append_many(p as u32, records));
        futures_util::future::try_join_all(appends).await?;
        self.counters.accepted.fetch_add(done.accepted, Ordering::Relaxed);
        self.counters.too_old.fetch_add(done.too_old, Ordering::Relaxed);
        self.counters.in_future.fetch_add(done.in_future, Ordering::Relaxed);
        metrics::counter!("girder_topk_views_total", "outcome" => "accepted")
            .increment(done.accepted);
        metrics::counter!("girder_topk_views_total", "outcome" => "refused")
            .increment(done.too_old + done.in_future);
        Ok(done)
    }
}

impl ViewSink for Ingest {
    async fn append(&self, videos: Vec<String>) -> Result<(), String> {
        let views: Vec<(&str, Option<i64>)> = videos.iter().map(|v| (v.as_str(), None)).collect();
        Ingest::append(self, &views).await.map(|_| ()).map_err(|e| {
            let e: &dyn std::error::Error = &e;
            format!("{e}: {}", e.source().map(ToString::to_string).unwrap_or_default())
        })
    }
}

/// The state of the built-in generator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneratorState {
    /// What it makes, while it runs.
    pub running: Option<GeneratorSpec>,
    /// Views it appended (the last run's, once stopped).
    pub generated: u64,
}

/// This instance's view of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// This instance's id (its pipeline is `topk-<id>`).
    pub instance: String,
    /// Views this process appended.
    pub accepted: u64,
    /// Views this process refused at ingest as too old.
    pub too_old: u64,
    /// Views this process refused at ingest as ahead of the clock.
    pub in_future: u64,
    /// Views the pipeline refused as late.
    pub late: u64,
    /// Views the pipeline refused because a partition's open counts were full.
    pub full: u64,
    /// Per partition, records appended and not yet committed.
    pub lag: Vec<u64>,
    /// Pipelines (instances) counting into the shared database.
    pub pipelines: i64,
    /// All views counted, over every instance.
    pub total_views: i64,
}

/// A running Top-K. See the [crate docs](self).
pub struct TopK {
    instance: String,
    ingest: Arc<Ingest>,
    pipeline: Pipeline,
    store: Store,
    config: TopKConfig,
    generator: tokio::sync::Mutex<(Option<Running>, u64)>,
}

impl std::fmt::Debug for TopK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopK")
            .field("instance", &self.instance)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TopK {
    /// Opens Top-K on `context` (migrated): its log in `<data_dir>/topk/log`, its
    /// instance id in `<data_dir>/topk/instance`.
    ///
    /// # Errors
    /// The data directory or the log cannot be opened.
    pub fn open_with(context: &Context, config: TopKConfig) -> Result<Arc<Self>, OpenError> {
        let dir = context.data_dir.join("topk");
        std::fs::create_dir_all(&dir).map_err(OpenError::storage)?;
        let instance = context.instance_id("topk").map_err(OpenError::storage)?;
        let log = Arc::new(
            PartitionedLog::open(&LogConfig::new(dir.join("log"), config.partitions))
                .map_err(OpenError::storage)?,
        );
        let clock = Arc::clone(&context.clock);
        let name = format!("topk-{instance}");
        let stream = StreamStore::new(context.db.clone(), name.clone(), Arc::clone(&clock));
        let committer = Arc::new(SqlCommitter {
            store: stream.clone(),
            sink: sink::CountSink { pipeline: name },
        });
        let pipeline = Pipeline {
            log: Arc::clone(&log),
            stream,
            committer,
            refusals: Arc::new(Refusals::default()),
            member: instance.clone(),
            config,
            clock: Arc::clone(&clock),
        };
        let ingest =
            Arc::new(Ingest { log, clock, bounds: config.bounds(), counters: Counters::default() });
        Ok(Arc::new(Self {
            instance,
            ingest,
            pipeline,
            store: Store::new(context.db.clone()),
            config,
            generator: tokio::sync::Mutex::new((None, 0)),
        }))
    }

    /// This instance's id.
    #[must_use]
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The configuration it runs with.
    #[must_use]
    pub const fn config(&self) -> &TopKConfig {
        &self.config
    }

    /// The shared tables.
    #[must_use]
    pub const fn store(&self) -> &Store {
        &self.store
    }

    /// The current minute by this instance's clock.
    #[must_use]
    pub fn current_minute(&self) -> i64 {
        span::minute_of(self.ingest.now_ms())
    }

    /// Appends `views` (video, time; `None` is now), each checked against the time
    /// bounds; returns once the accepted ones are durable in the log.
    ///
    /// # Errors
    /// The log failed (nothing may have been appended, or some partitions' views).
    pub async fn ingest(&self, views: &[(&str, Option<i64>)]) -> Result<Ingested, TopKError> {
        self.ingest.append(views).await
    }

    /// The top `k` of `window`.
    ///
    /// # Errors
    /// The database failed, or a stored summary is damaged.
    pub async fn top(&self, window: Window, mode: Mode, k: u32) -> Result<Top, TopKError> {
        let now = self.current_minute();
        Ok(match mode {
            Mode::Exact => top::exact(&self.store, window, now, k).await?,
            Mode::Approx => top::approx(&self.store, window, now, k).await?,
        })
    }

    /// Whether every view appended to this instance's log has been committed.
    ///
    /// # Errors
    /// The database failed.
    pub async fn caught_up(&self) -> Result<bool, TopKError> {
        Ok(self.pipeline.lag().await?.iter().all(|&l| l == 0))
    }

    /// This instance's counters and the shared totals.
    ///
    /// # Errors
    /// The database failed.
    pub async fn stats(&self) -> Result<Stats, TopKError> {
        let c = &self.ingest.counters;
        let r = &self.pipeline.refusals;
        Ok(Stats {
            instance: self.instance.clone(),
            accepted: c.accepted.load(Ordering::Relaxed),
            too_old: c.too_old.load(Ordering::Relaxed),
            in_future: c.in_future.load(Ordering::Relaxed),
            late: r.late.load(Ordering::Relaxed),
            full: r.full.load(Ordering::Relaxed),
            lag: self.pipeline.lag().await?,
            pipelines: self.store.pipelines().await?,
            total_views: self.store.views_all().await?,
        })
    }

    /// Starts the generator (replacing a running one).
    pub async fn start_generator(&self, spec: GeneratorSpec) -> GeneratorState {
        let mut slot = self.generator.lock().await;
        if let Some(running) = slot.0.take() {
            slot.1 = running.stop().await;
        }
        slot.0 = Some(Running::start(spec, Arc::clone(&self.ingest)));
        GeneratorState { running: Some(spec), generated: 0 }
    }

    /// Stops the generator, if one runs, after its last append.
    pub async fn stop_generator(&self) -> GeneratorState {
        let mut slot = self.generator.lock().await;
        if let Some(running) = slot.0.take() {
            slot.1 = running.stop().await;
        }
        GeneratorState { running: None, generated: slot.1 }
    }

    /// The generator's state.
    pub async fn generator(&self) -> GeneratorState {
        let slot = self.generator.lock().await;
        match &slot.0 {
            Some(r) => GeneratorState {
                running: Some(r.spec),
                generated: r.generated.load(Ordering::Relaxed),
            },
            None => GeneratorState { running: None, generated: slot.1 },
        }
    }

    /// Prunes rows past retention and log segments past every checkpoint, every
    /// `housekeeping_ms` until `shutdown`.
    async fn housekeeping(&self, shutdown: Shutdown) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.housekeeping_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            let before = self.current_minute() - self.config.retention_minutes;
            match self.store.prune(before).await {
                Ok(n) if n > 0 => tracing::debug!(rows = n, "top-k rows past retention deleted"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = &e as &dyn std::error::Error, "top-k pruning failed")
                }
            }
            self.pipeline.truncate().await;
        }
    }

    /// Closes the view log after [`System::run`] has returned (so a new `TopK` may
    /// open the same data directory in this process).
    ///
    /// # Errors
    /// The log's last sync failed.
    pub async fn close(self) -> Result<(), TopKError> {
        let Self { ingest, pipeline, generator, .. } = self;
        if let Some(running) = generator.into_inner().0 {
            running.stop().await;
        }
        drop(pipeline);
        match Arc::try_unwrap(ingest) {
            Ok(ingest) => match Arc::try_unwrap(ingest.log) {
                Ok(log) => log.close().await?,
                Err(_) => tracing::warn!("the view log is still in use; it closes when dropped"),
            },
            Err(_) => tracing::warn!("the view log is still in use; it closes when dropped"),
        }
        Ok(())
    }
}

impl System for TopK {
    type Settings = TopKSettings;

    const INFO: SystemInfo = SystemInfo {
        slug: "topk",
        name: "YouTube Top-K",
        summary: "views through a durable log into per-minute counts committed exactly once; the top K of the last minute, hour, day and all time, exact or from merged Space-Saving summaries with their error",
        patterns: &["Stream Processing", "Count-Min Sketch for Frequency Estimation"],
    };

    const DASHBOARD: &'static str = include_str!("../assets/topk.html");

    async fn open(context: &Context, settings: TopKSettings) -> Result<Arc<Self>, OpenError> {
        let config = settings.resolve()?;
        girder_sql::migrate::run(&context.db, girder_stream::sql::migrations()).await?;
        girder_sql::migrate::run(&context.db, migrations()).await?;
        Self::open_with(context, config)
    }

    fn router(self: &Arc<Self>) -> girder_system::Router {
        self.api_router()
    }

    fn openapi() -> utoipa::openapi::OpenApi {
        api::document()
    }

    async fn run(self: Arc<Self>, shutdown: Shutdown) {
        tokio::join!(
            self.pipeline.run(shutdown.clone().wait()),
            self.housekeeping(shutdown.clone()),
            async {
                shutdown.clone().wait().await;
                // Views the generator appends while the runners take their last
                // checkpoint stay in the log and are counted at the next start.
                self.stop_generator().await;
            },
        );
    }

    async fn ready(&self) -> Result<(), BoxError> {
        self.store.db().ping().await?;
        Ok(())
    }
}
