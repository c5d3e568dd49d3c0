//! The seat feed (Pattern: Change Data Capture (CDC) for Data Sync): this instance's
//! own change consumer on girder-lock's `girder_reservations` (one row per seat:
//! event, seat, AVAILABLE/RESERVED/SOLD, until) hands every committed change to the
//! system, which publishes each seat's new state on its hub for the seat-map
//! streams. Every instance reads every commit itself, so a hold taken on one
//! instance reaches the seat maps open on all of them.
//!
//! **Order and delivery.** Changes come in commit order; a batch is acknowledged
//! after it has been handed over, so a restart resumes after the last acknowledged
//! batch (at least once). Within one run a change is handed over once: after an
//! error the consumer is opened again at its acknowledgement, and what was handed
//! over since is skipped by position.
//!
//! **Start.** The consumer is named `ticketmaster_<instance id>` (the instance id
//! lives in the data directory, so a restart is the same consumer). The first time,
//! capture positions it after the newest committed change: it begins from now, not
//! from the beginning of history. It is opened when [`Feed::run`] starts, not at
//! open, so an instance that never runs holds no PostgreSQL slot.
//!
//! **Failures.** An error (or an open that takes longer than `open_timeout_ms`) is
//! logged and counted, the feed reports itself not ready until an attempt succeeds,
//! waits (doubling from `retry_min_ms` to `retry_max_ms`) and opens the consumer
//! again; it never ends the server. Opening for the first time is no failure: a
//! starting instance is ready while its consumer opens. A consumer whose PostgreSQL
//! slot was dropped from under it is dropped and opened again from now.
//!
//! **Upkeep.** Every second the feed prunes SQLite's change table (what every
//! consumer has acknowledged), and every minute it drops this system's consumers
//! that nobody has read for `stale_ms` — the slots of instances that never came
//! back, which would otherwise hold PostgreSQL's WAL without limit.
//!
//! **Heartbeats.** A PostgreSQL slot moves only when a change it delivered is
//! acknowledged, and PostgreSQL skips transactions that touch no captured table: a
//! feed whose tables are quiet while others are busy would keep all their WAL and
//! decode it again on every poll. So a feed that has handed nothing over for
//! `heartbeat_ms` rewrites its row of `tm_feed_beats` (a captured table); the change
//! comes back through every consumer, whose acknowledgement moves its slot (as
//! Debezium's heartbeats do). SQLite needs none: its change table holds only
//! captured rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use girder_realtime::cdc::{
    AckError, Capture, CdcPosition, Change, Consumer, ConsumerConfig, DropError, OpenError,
    PollError,
};
use girder_sql::{Db, on_db};
use girder_system::{Context, Shutdown};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Each feed's heartbeat row, captured so that a quiet feed's slot moves.
const BEATS: &str = "tm_feed_beats";
/// The captured table.
pub(crate) const TABLE: &str = "girder_reservations";
/// This system's consumers are `ticketmaster_<instance id>`.
const PREFIX: &str = "ticketmaster_";
/// PostgreSQL's limit on a slot name, and so on a consumer name.
const NAME_BYTES_MAX: usize = 63;
/// How often the upkeep prunes; the stale sweep runs every [`STALE_EVERY`].
const UPKEEP_EVERY: Duration = Duration::from_secs(1);
const STALE_EVERY: Duration = Duration::from_secs(60);

/// How the feed reads, retries and cleans up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// How long the consumer waits between polls when this instance has committed
    /// nothing (its own commits wake it at once): the delay before another
    /// instance's hold reaches the seat maps open on this instance. Default 150.
    pub poll_interval_ms: u64,
    /// Most changes read (and acknowledged) at once. Default 500.
    pub batch_max: usize,
    /// Longest an attempt to open the consumer may take (on PostgreSQL, making a
    /// slot waits for every transaction in flight on the server) before it counts as
    /// a failure. Default 30,000.
    pub open_timeout_ms: u64,
    /// First wait after a failure; it doubles up to `retry_max_ms`. Default 100.
    pub retry_min_ms: u64,
    /// Longest wait between attempts after failures. Default 10,000.
    pub retry_max_ms: u64,
    /// Consumers of this system not read for this long are dropped. Default
    /// 3,600,000 (an hour).
    pub stale_ms: u64,
    /// Most SQLite change rows one prune deletes. Default 10,000.
    pub prune_rows_max: u64,
    /// PostgreSQL: after this long without a change handed over, the feed writes a
    /// heartbeat so that its slot moves past other tables' WAL. Default 10,000.
    pub heartbeat_ms: u64,
}

impl FeedConfig {
    /// The defaults.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            poll_interval_ms: 150,
            batch_max: 500,
            open_timeout_ms: 30_000,
            retry_min_ms: 100,
            retry_max_ms: 10_000,
            stale_ms: 3_600_000,
            prune_rows_max: 10_000,
            heartbeat_ms: 10_000,
        }
    }
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a feed is; anything but `Failing` is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedState {
    /// Not running: the system is used without its background work.
    Idle,
    /// Opening its consumer for the first time since it started: ready, since
    /// nothing has failed (a restarted instance reopens its consumer in moments; a
    /// new one begins from whenever the opening ends).
    Opening,
    /// Reading.
    Live,
    /// The last attempt failed, with why; retrying.
    Failing(String),
}

/// Why the feed could not read, or could not drop stale consumers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The instance id (which names the consumer) could not be read or made.
    #[error("reading the instance id")]
    Instance(#[source] std::io::Error),
    /// The consumer could not be opened.
    #[error("opening the change consumer")]
    Open(#[from] OpenError),
    /// Opening the consumer took longer than `open_timeout_ms`.
    #[error("opening the change consumer took more than {0} ms")]
    OpenTimeout(u64),
    /// A consumer could not be dropped.
    #[error("dropping a change consumer")]
    Drop(#[from] DropError),
    /// A poll failed.
    #[error("polling for changes")]
    Poll(#[from] PollError),
    /// An acknowledgement failed.
    #[error("acknowledging changes")]
    Ack(#[from] AckError),
    /// Listing stale consumers (or forgetting a dropped one's heartbeat) failed.
    #[error("listing stale consumers")]
    Stale(#[from] sqlx::Error),
}

/// `error` and its sources, one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The consumer name of instance `instance`: [`PREFIX`] and the id, anything but
/// `[a-z0-9_]` made `_`, at most 63 bytes.
pub(crate) fn consumer_name(instance: &str) -> String {
    let mut name = PREFIX.to_owned();
    name.extend(instance.chars().map(|c| {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '_' }
    }));
    name.truncate(NAME_BYTES_MAX);
    name
}

/// The feed of one instance. See the [module docs](self).
pub(crate) struct Feed {
    capture: Capture,
    context: Context,
    config: FeedConfig,
    wake: Notify,
    state: Mutex<FeedState>,
    name: Mutex<Option<String>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("config", &self.config)
            .field("state", &*self.state.lock())
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// Capture on `context`'s database (migration 911) with [`TABLE`] and the
    /// heartbeat table captured.
    ///
    /// # Errors
    /// The migrations or the install failed.
    pub(crate) async fn open(
        context: &Context,
        config: FeedConfig,
    ) -> Result<Self, girder_system::OpenError> {
        let capture = Capture::open(context.db.clone(), Arc::clone(&context.clock)).await?;
        for table in [TABLE, BEATS] {
            capture.install(table).await.map_err(girder_system::OpenError::storage)?;
        }
        Ok(Self {
            capture,
            context: context.clone(),
            config,
            wake: Notify::new(),
            state: Mutex::new(FeedState::Idle),
            name: Mutex::new(None),
        })
    }

    /// The change capture the feed reads.
    pub(crate) const fn capture(&self) -> &Capture {
        &self.capture
    }

    /// Wakes the consumer: this instance committed a change.
    pub(crate) fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// `Ok` unless the feed's last attempt failed (until one succeeds).
    pub(crate) fn health(&self) -> Result<(), String> {
        match &*self.state.lock() {
            FeedState::Idle | FeedState::Opening | FeedState::Live => Ok(()),
            FeedState::Failing(why) => Err(format!("the seat feed is failing: {why}")),
        }
    }

    /// Where the feed is now.
    pub(crate) fn state(&self) -> FeedState {
        self.state.lock().clone()
    }

    fn set(&self, state: FeedState) {
        *self.state.lock() = state;
    }

    fn name(&self) -> Result<String, FeedError> {
        let mut name = self.name.lock();
        if let Some(name) = &*name {
            return Ok(name.clone());
        }
        let instance = self.context.instance_id("ticketmaster").map_err(FeedError::Instance)?;
        Ok(name.insert(consumer_name(&instance)).clone())
    }

    async fn open_consumer(&self) -> Result<Consumer, FeedError> {
        let name = self.name()?;
        let config = ConsumerConfig {
            max_changes_per_poll: self.config.batch_max.max(1),
            poll_interval_ms: self.config.poll_interval_ms.max(1),
            ..ConsumerConfig::default()
        };
        match self.capture.consumer(&name, config.clone()).await {
            Err(OpenError::SlotMissing(_)) => {
                // Its slot was dropped (as stale, or by hand): what it missed is
                // gone, so start again from now.
                tracing::warn!(
                    consumer = %name,
                    "the seat feed's slot is gone; starting from now"
                );
                self.capture.drop_consumer(&name).await?;
                Ok(self.capture.consumer(&name, config).await?)
            }
            opened => Ok(opened?),
        }
    }

    /// Reads changes and hands each to `apply`, in commit order, until `shutdown`.
    /// Shutdown interrupts waiting, never a batch being handed over and
    /// acknowledged; the consumer (and its slot) is kept for the next start.
    pub(crate) async fn run(&self, mut apply: impl FnMut(&Change) + Send, shutdown: Shutdown) {
        let stop = shutdown.wait();
        tokio::pin!(stop);
        self.set(FeedState::Opening);
        let mut consumer: Option<Consumer> = None;
        let mut applied = CdcPosition::START;
        let mut retry_ms = self.config.retry_min_ms.max(1);
        let mut prune_at = Instant::now();
        let mut stale_at = Instant::now();
        let mut quiet_since = Instant::now();
        let beats = matches!(self.capture.db(), Db::Postgres(_));
        loop {
            let batch = tokio::select! {
                () = &mut stop => return,
                batch = self.next_batch(&mut consumer) => batch,
            };
            let step = match batch {
                Ok((consumer, changes)) => {
                    Self::hand_over(consumer, &changes, &mut applied, &mut apply).await
                }
                Err(e) => Err(e),
            };
            match step {
                Ok(handed_over) => {
                    retry_ms = self.config.retry_min_ms.max(1);
                    self.set(FeedState::Live);
                    if handed_over > 0 {
                        quiet_since = Instant::now();
                    } else if beats
                        && quiet_since.elapsed() >= Duration::from_millis(self.config.heartbeat_ms)
                    {
                        quiet_since = Instant::now();
                        if let Err(e) = self.beat().await {
                            tracing::warn!(
                                error = &e as &dyn std::error::Error,
                                "a seat feed heartbeat failed"
                            );
                        }
                    }
                }
                Err(e) => {
                    metrics::counter!("girder_ticketmaster_seat_feed_errors_total").increment(1);
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        retry_ms,
                        "the seat feed failed; retrying"
                    );
                    self.set(FeedState::Failing(chain(&e)));
                    consumer = None;
                    tokio::select! {
                        () = &mut stop => return,
                        () = tokio::time::sleep(Duration::from_millis(retry_ms)) => {}
                    }
                    retry_ms = retry_ms.saturating_mul(2).min(self.config.retry_max_ms.max(1));
                    continue;
                }
            }
            if prune_at.elapsed() >= UPKEEP_EVERY {
                prune_at = Instant::now();
                if let Err(e) = self.capture.prune(self.config.prune_rows_max).await {
                    tracing::warn!(error = &e as &dyn std::error::Error, "pruning changes failed");
                }
            }
            if stale_at.elapsed() >= STALE_EVERY {
                stale_at = Instant::now();
                if let Err(e) = self.drop_stale().await {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "dropping stale seat feeds failed"
                    );
                }
            }
        }
    }

    /// Opens the consumer if needed and waits for the next batch: empty after a
    /// second without changes (for the upkeep). Cancelling it loses nothing.
    async fn next_batch<'c>(
        &self,
        consumer: &'c mut Option<Consumer>,
    ) -> Result<(&'c mut Consumer, Vec<Change>), FeedError> {
        let consumer = match consumer {
            Some(consumer) => consumer,
            None => {
                let limit_ms = self.config.open_timeout_ms.max(1);
                let opening = self.open_consumer();
                match tokio::time::timeout(Duration::from_millis(limit_ms), opening).await {
                    Ok(opened) => consumer.insert(opened?),
                    Err(_) => return Err(FeedError::OpenTimeout(limit_ms)),
                }
            }
        };
        let wait = consumer.next(self.config.batch_max, Some(&self.wake));
        // Dropping `next` is how it is cancelled.
        let changes = match tokio::time::timeout(UPKEEP_EVERY, wait).await {
            Ok(changes) => changes?,
            Err(_) => Vec::new(),
        };
        Ok((consumer, changes))
    }

    /// Hands over the changes not handed over yet, then acknowledges the batch;
    /// returns how many it had.
    async fn hand_over(
        consumer: &mut Consumer,
        changes: &[Change],
        applied: &mut CdcPosition,
        apply: &mut (impl FnMut(&Change) + Send),
    ) -> Result<usize, FeedError> {
        for change in changes {
            if change.position > *applied {
                apply(change);
                *applied = change.position;
            }
        }
        if let Some(last) = changes.last() {
            consumer.ack(last.position).await?;
        }
        Ok(changes.len())
    }

    /// Rewrites this feed's heartbeat row (see the [module docs](self)) and wakes
    /// the consumer to read it back.
    async fn beat(&self) -> Result<(), FeedError> {
        let name = self.name()?;
        let now_ms = i64::try_from(self.context.clock.now_ms()).unwrap_or(i64::MAX);
        on_db!(self.capture.db(), |pool| {
            sqlx::query(
                "INSERT INTO tm_feed_beats (consumer, beat_ms) VALUES ($1, $2) \
                 ON CONFLICT (consumer) DO UPDATE SET beat_ms = excluded.beat_ms",
            )
            .bind(&name)
            .bind(now_ms)
            .execute(pool)
            .await?;
        });
        self.wake();
        Ok(())
    }

    /// Drops this system's consumers, other than this instance's, that nobody has
    /// read for `stale_ms`; returns their names.
    ///
    /// # Errors
    /// The database failed.
    pub(crate) async fn drop_stale(&self) -> Result<Vec<String>, FeedError> {
        let own = self.name().ok();
        let mut dropped = Vec::new();
        for stale in self.capture.stale_consumers(self.config.stale_ms).await? {
            // Only consumers Girder made (PostgreSQL also lists foreign slots).
            let ours = stale.name.starts_with(PREFIX) && stale.read_at_ms.is_some();
            if !ours || stale.active || own.as_deref() == Some(stale.name.as_str()) {
                continue;
            }
            match self.capture.drop_consumer(&stale.name).await {
                Ok(true) => {
                    on_db!(self.capture.db(), |pool| {
                        sqlx::query("DELETE FROM tm_feed_beats WHERE consumer = $1")
                            .bind(&stale.name)
                            .execute(pool)
                            .await?;
                    });
                    tracing::info!(
                        consumer = %stale.name,
                        read_at_ms = stale.read_at_ms,
                        retained_bytes = stale.retained_bytes,
                        retained_changes = stale.retained_changes,
                        "dropped a seat feed nobody reads"
                    );
                    dropped.push(stale.name);
                }
                // Gone already, or it came back and reads again.
                Ok(false) | Err(DropError::Active(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_slot_names() {
        let check = |instance: &str, want: &str| assert_eq!(consumer_name(instance), want);
        check("00c0ffee12345678", "ticketmaster_00c0ffee12345678");
        check("Host-1.a b", "ticketmaster_host_1_a_b");
        check(&"x".repeat(80), &format!("ticketmaster_{}", "x".repeat(50)));
        assert_eq!(consumer_name(&"é".repeat(40)).len(), 53);
    }
}
