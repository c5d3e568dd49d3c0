//! A coalescing buffer ("Pattern: Write Batching & Buffering", for aggregates): values
//! added under the same key are merged while they wait (counts summed), and the whole
//! map is handed to a [`CoalesceSink`] in one write. A key added a million times
//! between flushes costs the sink one row, and an add never waits for I/O.
//!
//! - **Adds are cheap.** [`Coalescer::add`] hashes the key once, takes the lock of one
//!   of [`CoalesceConfig::shards`] shards and merges in place; no channel, no task,
//!   no await. Adders on different keys rarely share a lock; only a key not yet
//!   buffered touches the one shared counter.
//! - **Bounded.** At most [`CoalesceConfig::keys_max`] distinct keys are held. A value
//!   for a new key beyond that is dropped and counted ([`Overflow::Drop`]) or handed
//!   back in [`AddError::Full`] ([`Overflow::Reject`]).
//! - **Flushes.** [`Coalescer::run`] flushes every [`CoalesceConfig::interval`] and as
//!   soon as [`CoalesceConfig::flush_keys`] keys are buffered; [`Coalescer::flush`]
//!   flushes now; [`Coalescer::close`] refuses further adds and flushes what is left.
//! - **Failures.** A failed (or cancelled) flush puts its values back, merged with the
//!   ones added meanwhile, as far as the key bound allows; what does not fit is
//!   dropped, counted and handed to [`CoalesceSink::dropped`]. After a failure `run`
//!   waits a whole interval before trying again, whatever the key count.
//!
//! The trade-off is the pattern's: buffered values are visible only through
//! [`Coalescer::get`] until flushed, and values in memory are lost with the process.
//! [`BatchWriter`](super::BatchWriter) is the other form: one result per item, for
//! writes a caller waits on.

use std::borrow::Borrow;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::ConfigError;

/// Combines two values of the same key into one.
pub trait Merge {
    /// Folds `later` (added after `self`) into `self`. Merging is expected to be
    /// associative: the coalescer merges in arrival order, but a flush that fails
    /// puts its older values back under newer ones.
    fn merge(&mut self, later: Self);
}

macro_rules! saturating_sum {
    ($($t:ty),*) => {$(
        /// Sums, saturating at the type's bounds instead of overflowing.
        impl Merge for $t {
            #[inline]
            fn merge(&mut self, later: Self) {
                *self = self.saturating_add(later);
            }
        }
    )*};
}

saturating_sum!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

/// Where a coalescer's flushes go.
///
/// Unlike [`Sink`](super::Sink), which answers each item for the caller waiting on it,
/// a flush has nobody waiting per key: the sink takes the drained map as one batch and
/// either applies all of it or none of it.
pub trait CoalesceSink: Send + Sync + 'static {
    /// What values are grouped by.
    type Key: Hash + Eq + Send + Sync + 'static;
    /// What is merged per key.
    type Value: Merge + Send + Sync + 'static;
    /// Why a batch was not written.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Writes `batch` (each key once, in no particular order) as one unit. On `Err`
    /// every entry is put back for the next flush, so a sink that may have applied part
    /// of a batch before failing would see that part again: write it in one
    /// transaction.
    fn write(
        &self,
        batch: &[(Self::Key, Self::Value)],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Called with each value the coalescer discards: an add beyond the key bound under
    /// [`Overflow::Drop`], or a value from a failed flush with no room to go back to.
    /// The default ignores it; the stats count it either way.
    fn dropped(&self, value: Self::Value) {
        drop(value);
    }
}

/// What [`Coalescer::add`] does with a value for a new key when `keys_max` keys are
/// buffered. Values for keys already buffered are always merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Discard it, count it in [`CoalesceStats::dropped`] and pass it to
    /// [`CoalesceSink::dropped`]; `add` returns `Ok`.
    Drop,
    /// Hand it back in [`AddError::Full`].
    Reject,
}

/// Bounds and triggers of a [`Coalescer`].
#[derive(Debug, Clone, Copy)]
pub struct CoalesceConfig {
    /// [`Coalescer::run`] flushes at least this often. Default 1 s.
    pub interval: Duration,
    /// Distinct keys buffered that make `run` flush before the interval is up.
    /// At most `keys_max`. Default 100,000.
    pub flush_keys: usize,
    /// The most distinct keys buffered. Default 100,000.
    pub keys_max: usize,
    /// What an add for a new key does when `keys_max` keys are buffered. Default
    /// [`Overflow::Drop`].
    pub overflow: Overflow,
    /// Independently locked parts of the buffer. Default 16.
    pub shards: usize,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            flush_keys: 100_000,
            keys_max: 100_000,
            overflow: Overflow::Drop,
            shards: 16,
        }
    }
}

impl CoalesceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in
            [("flush_keys", self.flush_keys), ("keys_max", self.keys_max), ("shards", self.shards)]
        {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be positive")));
            }
        }
        if self.interval.is_zero() {
            return Err(ConfigError("interval must be positive".to_owned()));
        }
        if self.flush_keys > self.keys_max {
            return Err(ConfigError(format!(
                "flush_keys ({}) must not exceed keys_max ({})",
                self.flush_keys, self.keys_max
            )));
        }
        Ok(())
    }
}

/// Why [`Coalescer::add`] did not buffer a value; the value comes back in it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddError<V> {
    /// `keys_max` keys are buffered, the key is not one of them, and the coalescer
    /// rejects rather than drops ([`Overflow::Reject`]).
    #[error("the coalescer holds its maximum number of keys")]
    Full(V),
    /// [`Coalescer::close`] was called: nothing added now would be flushed.
    #[error("the coalescer is closed")]
    Closed(V),
}

impl<V> AddError<V> {
    /// The value that was not buffered.
    pub fn into_value(self) -> V {
        match self {
            Self::Full(v) | Self::Closed(v) => v,
        }
    }
}

/// A flush whose sink failed. Its values went back into the buffer, except
/// `dropped_keys` for which there was no room.
#[derive(Debug, thiserror::Error)]
#[error(
    "the sink failed to take {keys} keys ({kept_keys} kept for the next flush, {dropped_keys} dropped)"
)]
#[non_exhaustive]
pub struct FlushError<E: std::error::Error + 'static> {
    /// The sink's error.
    #[source]
    pub source: E,
    /// Keys in the batch.
    pub keys: usize,
    /// Keys put back into the buffer.
    pub kept_keys: usize,
    /// Keys dropped because the buffer was full of newer keys.
    pub dropped_keys: usize,
}

/// Counters since the coalescer was created, and its size now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoalesceStats {
    /// Distinct keys buffered now.
    pub keys: usize,
    /// Flushes the sink accepted (empty flushes do not count).
    pub flushes: u64,
    /// Keys written by those flushes.
    pub flushed_keys: u64,
    /// Flushes the sink failed.
    pub failed_flushes: u64,
    /// Values discarded: adds under [`Overflow::Drop`] with no room, and values of
    /// failed flushes with no room to go back.
    pub dropped: u64,
    /// Adds refused under [`Overflow::Reject`].
    pub rejected: u64,
}

/// One shard on its own cache lines, so adders on neighbouring shards do not
/// invalidate each other's.
#[repr(align(128))]
struct Shard<K, V>(Mutex<HashTable<(K, V)>>);

/// The distinct-key count, written only by adds of new keys and by flushes, kept
/// away from the read-mostly fields.
#[repr(align(128))]
#[derive(Default)]
struct KeyCount(AtomicUsize);

#[derive(Default)]
struct Counters {
    flushes: AtomicU64,
    flushed_keys: AtomicU64,
    failed_flushes: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
}

/// A keyed buffer that merges values and flushes them to a [`CoalesceSink`] in
/// batches. Share it behind an `Arc`; drive its timed flushes with
/// [`Coalescer::run`].
pub struct Coalescer<S: CoalesceSink> {
    shards: Box<[Shard<S::Key, S::Value>]>,
    hasher: RandomState,
    keys: KeyCount,
    closed: AtomicBool,
    sink: S,
    config: CoalesceConfig,
    /// Wakes `run` when `flush_keys` is reached or a value was dropped.
    wake: Notify,
    /// One flush at a time; holds each shard's size at the last flush, the capacity
    /// its fresh table is given.
    flushing: tokio::sync::Mutex<Vec<usize>>,
    counters: Counters,
}

impl<S: CoalesceSink> std::fmt::Debug for Coalescer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S: CoalesceSink> Coalescer<S> {
    /// An empty coalescer flushing into `sink`. Nothing runs until [`Coalescer::run`]
    /// is driven; [`Coalescer::flush`] and [`Coalescer::close`] work without it.
    ///
    /// # Errors
    /// A count or the interval is zero, or `flush_keys` exceeds `keys_max`.
    pub fn new(sink: S, config: CoalesceConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let shards = (0..config.shards).map(|_| Shard(Mutex::new(HashTable::new()))).collect();
        Ok(Self {
            shards,
            hasher: RandomState::default(),
            keys: KeyCount::default(),
            closed: AtomicBool::new(false),
            sink,
            config,
            wake: Notify::new(),
            flushing: tokio::sync::Mutex::new(vec![0; config.shards]),
            counters: Counters::default(),
        })
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The shard for `hash`. The table probes with the low bits and tags with the top
    /// seven, so the shard is picked from bits in between.
    #[inline]
    fn shard(&self, hash: u64) -> &Mutex<HashTable<(S::Key, S::Value)>> {
        // Bits 32..64 fit in usize on every supported target.
        #[allow(clippy::cast_possible_truncation)]
        let index = (hash >> 32) as usize % self.shards.len();
        &self.shards[index].0
    }

    /// Takes a slot for one more distinct key, if the bound allows.
    #[inline]
    fn claim_key(&self) -> bool {
        let keys = &self.keys.0;
        // Looking first keeps a full buffer's drops from writing the shared counter.
        if keys.load(Ordering::Relaxed) >= self.config.keys_max {
            return false;
        }
        if keys.fetch_add(1, Ordering::Relaxed) < self.config.keys_max {
            return true;
        }
        keys.fetch_sub(1, Ordering::Relaxed);
        false
    }

    /// Merges `value` into what is buffered for `key`, or buffers it as a new key.
    /// Never waits for I/O; the key is copied only when it is new.
    ///
    /// # Errors
    /// [`AddError::Closed`] after [`Coalescer::close`]; [`AddError::Full`] for a new key
    /// when `keys_max` keys are buffered under [`Overflow::Reject`] (under
    /// [`Overflow::Drop`] the value is discarded and counted, and this returns `Ok`).
    pub fn add<Q>(&self, key: &Q, value: S::Value) -> Result<(), AddError<S::Value>>
    where
        S::Key: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = S::Key> + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let mut table = self.shard(hash).lock();
        // Read under the shard lock: `close` sets the flag before its final flush
        // takes this lock, so a value is either in that flush or refused here.
        if self.closed.load(Ordering::Relaxed) {
            return Err(AddError::Closed(value));
        }
        if let Some((_, held)) = table.find_mut(hash, |(k, _)| k.borrow() == key) {
            held.merge(value);
            return Ok(());
        }
        if !self.claim_key() {
            drop(table);
            self.wake.notify_one();
            return match self.config.overflow {
                Overflow::Drop => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    self.sink.dropped(value);
                    Ok(())
                }
                Overflow::Reject => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    Err(AddError::Full(value))
                }
            };
        }
        table.insert_unique(hash, (key.to_owned(), value), |(k, _)| self.hasher.hash_one(k));
        drop(table);
        if self.keys.0.load(Ordering::Relaxed) >= self.config.flush_keys {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// What is buffered for `key` and not yet flushed (a batch being written is not).
    pub fn get<Q>(&self, key: &Q) -> Option<S::Value>
    where
        S::Key: Borrow<Q>,
        S::Value: Clone,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let table = self.shard(hash).lock();
        table.find(hash, |(k, _)| k.borrow() == key).map(|(_, v)| v.clone())
    }

    /// Writes everything buffered to the sink as one batch and returns how many keys
    /// it held (zero without calling the sink when nothing is buffered). Adds go on
    /// meanwhile, into the emptied shards. One flush runs at a time.
    ///
    /// Cancelling the returned future while the sink writes puts the batch back, as a
    /// failure does.
    ///
    /// # Errors
    /// The sink failed; the batch's values are back in the buffer as far as the key
    /// bound allows.
    pub async fn flush(&self) -> Result<usize, FlushError<S::Error>> {
        let mut sizes = self.flushing.lock().await;
        let mut batch = Vec::with_capacity(self.keys.0.load(Ordering::Relaxed));
        for (shard, size) in self.shards.iter().zip(sizes.iter_mut()) {
            // Allocated outside the lock, sized for as many keys as last time, so
            // adds after the flush do not pay for growing the table again.
            let fresh = HashTable::with_capacity(*size);
            let mut table = shard.0.lock();
            let taken = std::mem::replace(&mut *table, fresh);
            self.keys.0.fetch_sub(taken.len(), Ordering::Relaxed);
            drop(table);
            *size = taken.len();
            batch.extend(taken);
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let keys = batch.len();
        let mut pending = InFlight { coalescer: self, batch: Some(batch) };
        let written = match &pending.batch {
            Some(batch) => self.sink.write(batch).await,
            None => Ok(()),
        };
        match written {
            Ok(()) => {
                pending.batch = None;
                self.counters.flushes.fetch_add(1, Ordering::Relaxed);
                self.counters.flushed_keys.fetch_add(keys as u64, Ordering::Relaxed);
                Ok(keys)
            }
            Err(source) => {
                self.counters.failed_flushes.fetch_add(1, Ordering::Relaxed);
                let dropped_keys = pending.batch.take().map_or(0, |b| self.put_back(b));
                Err(FlushError { source, keys, kept_keys: keys - dropped_keys, dropped_keys })
            }
        }
    }

    /// Returns a batch the sink did not take to the buffer, each value merged under
    /// what was added since; returns how many keys found no room.
    fn put_back(&self, batch: Vec<(S::Key, S::Value)>) -> usize {
        let mut dropped = 0;
        for (key, older) in batch {
            let hash = self.hasher.hash_one(&key);
            let mut table = self.shard(hash).lock();
            if let Some((_, held)) = table.find_mut(hash, |(k, _)| *k == key) {
                let newer = std::mem::replace(held, older);
                held.merge(newer);
            } else if self.claim_key() {
                table.insert_unique(hash, (key, older), |(k, _)| self.hasher.hash_one(k));
            } else {
                drop(table);
                dropped += 1;
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.sink.dropped(older);
            }
        }
        dropped
    }

    /// Refuses further adds ([`AddError::Closed`]) and flushes what is buffered.
    /// Closing again retries whatever a failed final flush put back.
    ///
    /// # Errors
    /// The final flush failed; its values stay buffered.
    pub async fn close(&self) -> Result<usize, FlushError<S::Error>> {
        self.closed.store(true, Ordering::Relaxed);
        self.flush().await
    }

    /// Whether [`Coalescer::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Flushes every `interval`, and early when `flush_keys` keys are buffered or a
    /// value was dropped, until `shutdown` resolves; then closes (refusing further
    /// adds) and returns the final flush's result. A failed flush is logged and,
    /// whatever the key count, retried only after a whole interval.
    ///
    /// # Errors
    /// The final flush failed.
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<usize, FlushError<S::Error>> {
        tokio::pin!(shutdown);
        let mut backing_off = false;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.config.interval) => {}
                () = self.wake.notified(), if !backing_off => {}
            }
            match self.flush().await {
                Ok(_) => backing_off = false,
                Err(e) => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "coalescer flush failed; values kept for the next attempt"
                    );
                    backing_off = true;
                }
            }
        }
        self.close().await
    }

    /// Sizes and counters.
    pub fn stats(&self) -> CoalesceStats {
        let c = &self.counters;
        CoalesceStats {
            keys: self.keys.0.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            flushed_keys: c.flushed_keys.load(Ordering::Relaxed),
            failed_flushes: c.failed_flushes.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }
}

/// A drained batch while the sink writes it: if the flush future is dropped before
/// the write finished, the values go back into the buffer.
struct InFlight<'a, S: CoalesceSink> {
    coalescer: &'a Coalescer<S>,
    batch: Option<Vec<(S::Key, S::Value)>>,
}

impl<S: CoalesceSink> Drop for InFlight<'_, S> {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            self.coalescer.counters.failed_flushes.fetch_add(1, Ordering::Relaxed);
            self.coalescer.put_back(batch);
        }
    }
}
