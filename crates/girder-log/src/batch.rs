//! A batch writer ("Pattern: Write Batching & Buffering"): callers submit one item
//! each and wait for its own result; one task gathers what is waiting into batches
//! and hands each batch to a [`Sink`] (one SQL transaction, one `fdatasync`, one
//! network call), so N concurrent writers pay for about one write.
//!
//! - **Thresholds.** A batch closes at [`BatchConfig::max_items`], or when nothing
//!   more is waiting; with a [`BatchConfig::linger`] it also waits up to that long for
//!   more items (a small latency cost for fuller batches at low load).
//! - **Backpressure.** At most [`BatchConfig::capacity`] items wait. Beyond that,
//!   [`BatchWriter::submit`] waits for room ([`WhenFull::Wait`]) or fails at once
//!   with [`SubmitError::Full`] ([`WhenFull::Reject`]).
//! - **Per-item results.** The sink answers each item: one bad item (a duplicate
//!   key) fails alone while the rest of its batch succeeds.
//! - **Shutdown.** [`BatchWriter::close`] stops new submissions, writes everything
//!   already submitted, and returns when the last batch is answered.
//!
//! A result reaches its caller only after the sink returned it, so when the sink
//! commits durably, every `Ok` is durable.
//!
//! For aggregates (counts, sums, latest values per key) where no caller waits on its
//! write, [`coalesce`] merges values per key in memory and flushes the map instead.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};

pub mod coalesce;

/// Where batches go.
pub trait Sink: Send + Sync + 'static {
    /// What callers submit.
    type Item: Send + 'static;
    /// What a caller gets back for an item written.
    type Output: Send + 'static;
    /// Why an item was not written.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Writes `items` as one batch and answers each, in order: the result vector has
    /// exactly one entry per item (a missing entry reaches its caller as
    /// [`SubmitError::Lost`]).
    fn write(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Vec<Result<Self::Output, Self::Error>>> + Send;
}

/// What [`BatchWriter::submit`] does when `capacity` items are already waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room.
    Wait,
    /// Fail at once with [`SubmitError::Full`].
    Reject,
}

/// How batches are formed.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// The most items in one batch. Default 128.
    pub max_items: usize,
    /// How long a batch that is not full may wait for more items. Default zero: a
    /// batch is whatever waited while the previous one was written.
    pub linger: Duration,
    /// The most items waiting to be batched. Default 4,096.
    pub capacity: usize,
    /// What a submission does when `capacity` items wait. Default [`WhenFull::Wait`].
    pub when_full: WhenFull,
    /// Batches written at the same time. Default 1.
    pub max_in_flight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_items: 128,
            linger: Duration::ZERO,
            capacity: 4_096,
            when_full: WhenFull::Wait,
            max_in_flight: 1,
        }
    }
}

/// Why an item was not written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError<E: std::error::Error + 'static> {
    /// `capacity` items are waiting and the writer rejects rather than waits.
    #[error("the batch writer is full")]
    Full,
    /// The writer is closed.
    #[error("the batch writer is closed")]
    Closed,
    /// The sink refused or failed this item.
    #[error(transparent)]
    Sink(E),
    /// The sink gave no answer for this item (it returned too few results or
    /// panicked): the item may or may not have been written.
    #[error("the batch writer lost this item's result")]
    Lost,
}

/// A setting out of range.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid batch writer configuration: {0}")]
pub struct ConfigError(String);

/// Counters since the writer started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Items answered.
    pub items: u64,
    /// Batches written.
    pub batches: u64,
    /// Submissions refused as full.
    pub rejected: u64,
}

#[derive(Debug, Default)]
struct Counters {
    items: AtomicU64,
    batches: AtomicU64,
    rejected: AtomicU64,
}

type Answer<S> = Result<<S as Sink>::Output, SubmitError<<S as Sink>::Error>>;

struct Entry<S: Sink> {
    item: S::Item,
    done: oneshot::Sender<Answer<S>>,
}

/// Submits items to a [`Sink`] in batches. Cheap to share behind an `Arc`.
pub struct BatchWriter<S: Sink> {
    tx: RwLock<Option<mpsc::Sender<Entry<S>>>>,
    when_full: WhenFull,
    counters: Arc<Counters>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<S: Sink> std::fmt::Debug for BatchWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchWriter").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl<S: Sink> BatchWriter<S> {
    /// Starts the batching task on the current Tokio runtime.
    ///
    /// # Errors
    /// A setting is zero.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start(sink: S, config: BatchConfig) -> Result<Self, ConfigError> {
        for (name, value) in [
            ("max_items", config.max_items),
            ("capacity", config.capacity),
            ("max_in_flight", config.max_in_flight),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be positive")));
            }
        }
        let (tx, rx) = mpsc::channel(config.capacity);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run(Arc::new(sink), rx, config, Arc::clone(&counters)));
        Ok(Self {
            tx: RwLock::new(Some(tx)),
            when_full: config.when_full,
            counters,
            task: Mutex::new(Some(task)),
        })
    }

    /// Submits `item` and waits for its result.
    ///
    /// # Errors
    /// [`SubmitError::Sink`] when the sink refused it, [`SubmitError::Full`] under
    /// [`WhenFull::Reject`], [`SubmitError::Closed`] after [`BatchWriter::close`],
    /// [`SubmitError::Lost`] when the sink gave no answer.
    pub async fn submit(&self, item: S::Item) -> Answer<S> {
        let Some(tx) = self.tx.read().clone() else { return Err(SubmitError::Closed) };
        let (done, answer) = oneshot::channel();
        let entry = Entry { item, done };
        match self.when_full {
            WhenFull::Wait => tx.send(entry).await.map_err(|_| SubmitError::Closed)?,
            WhenFull::Reject => tx.try_send(entry).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    SubmitError::Full
                }
                mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
            })?,
        }
        drop(tx);
        answer.await.unwrap_or(Err(SubmitError::Lost))
    }

    /// Stops new submissions, writes everything submitted, and waits for the last
    /// batch to be answered. Closing twice is harmless.
    pub async fn close(&self) {
        drop(self.tx.write().take());
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }

    /// Items, batches and refusals so far.
    #[must_use]
    pub fn stats(&self) -> BatchStats {
        BatchStats {
            items: self.counters.items.load(Ordering::Relaxed),
            batches: self.counters.batches.load(Ordering::Relaxed),
            rejected: self.counters.rejected.load(Ordering::Relaxed),
        }
    }
}

/// The batching task: gathers, hands batches to the sink, answers.
async fn run<S: Sink>(
    sink: Arc<S>,
    mut rx: mpsc::Receiver<Entry<S>>,
    config: BatchConfig,
    counters: Arc<Counters>,
) {
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
    let mut waiting = Vec::with_capacity(config.max_items);
    loop {
        // Hold a slot first, so items keep gathering while every slot is busy.
        let Ok(slot) = Arc::clone(&in_flight).acquire_owned().await else { break };
        if rx.recv_many(&mut waiting, config.max_items).await == 0 {
            break;
        }
        if !config.linger.is_zero() && waiting.len() < config.max_items {
            let deadline = tokio::time::Instant::now() + config.linger;
            while waiting.len() < config.max_items {
                let room = config.max_items - waiting.len();
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut waiting, room)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let batch: Vec<Entry<S>> = std::mem::take(&mut waiting);
        let (sink, counters) = (Arc::clone(&sink), Arc::clone(&counters));
        tokio::spawn(async move {
            let (items, dones): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|e| (e.item, e.done)).unzip();
            let n = items.len() as u64;
            let results = sink.write(items).await;
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters.items.fetch_add(n, Ordering::Relaxed);
            let mut results = results.into_iter();
            for done in dones {
                let answer =
                    results.next().map_or(Err(SubmitError::Lost), |r| r.map_err(SubmitError::Sink));
                let _ = done.send(answer);
            }
            drop(slot);
        });
    }
    // Closed and drained: wait for the batches still being written.
    let all = u32::try_from(config.max_in_flight).unwrap_or(u32::MAX);
    let _ = in_flight.acquire_many(all).await;
}
