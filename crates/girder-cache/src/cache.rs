//! The multi-layer cache itself ("Pattern: Multi-Layer Caching"): L1 in process, an
//! optional shared L2, the loader behind both, single-flight on misses,
//! stale-while-revalidate, and invalidation by write-through, write-around, TTL and
//! cross-instance broadcast.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use girder_core::coarse::{Flush, TimeCell};
use girder_core::{Clock, CoarseClock};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::clock;
use crate::codec::{self, Payload};
use crate::flight::{self, Flights, LeaderGuard, Outcome, Role};
use crate::l1::{self, Entry, L1, Lookup};
use crate::l2::{L2Error, L2Store, ListenEvent, NoL2, Notice};
use crate::stats::{CacheStats, Counters};
use crate::{BuildError, CacheConfig, CacheKey, GetError, Loader, WriteError};

/// What a cache can hold: cloned out of L1 on every hit (wrap large values in an
/// `Arc`), serialized with serde for L2. Implemented for every such type.
pub trait CacheValue: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}

impl<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> CacheValue for T {}

/// The state of a cache's invalidation listener, observable through
/// [`Cache::listener_progress`] (a readiness probe, or a test awaiting an eviction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ListenerProgress {
    /// Whether the subscription is up now.
    pub subscribed: bool,
    /// Subscriptions established so far (the first plus every reconnect); each one
    /// cleared L1.
    pub subscriptions: u64,
    /// Invalidations from other instances applied to L1 so far.
    pub invalidations_applied: u64,
}

/// A multi-layer read-through cache from `K` to `V`, loading misses with `L` and
/// sharing entries and invalidations through the L2 `S` ([`NoL2`] by default).
///
/// Reads: L1 → L2 → loader, one load per key at a time (single-flight), results
/// written back to the layers above. Writes: [`Cache::put`] (write-through after the
/// caller's store write) and [`Cache::invalidate`] (write-around), both broadcast to
/// every instance sharing the L2.
///
/// Background work (refreshes, the invalidation listener) is owned by the cache:
/// [`Cache::shutdown`] stops and awaits it, and dropping the cache aborts it. Share a
/// cache between tasks with an `Arc`.
pub struct Cache<K, V, L, S = NoL2>
where
    K: CacheKey,
    V: CacheValue,
    L: Loader<K, V>,
    S: L2Store,
{
    inner: Arc<Inner<K, V, L, S>>,
    refreshes: Mutex<JoinSet<()>>,
    listener: Mutex<Option<JoinHandle<()>>>,
    progress: watch::Receiver<ListenerProgress>,
    closed: AtomicBool,
}

struct Inner<K, V, L, S>
where
    K: CacheKey,
    V: CacheValue,
    L: Loader<K, V>,
    S: L2Store,
{
    config: CacheConfig,
    l1: L1<K, V>,
    flights: Arc<Flights<K, V, L::Error>>,
    loader: L,
    l2: S,
    /// The default time source; also keeps the coarse clock's thread (and so the
    /// cell `fast_path_time` may point at, and the metric flushes) alive while the
    /// cache lives.
    ticker: CoarseClock,
    /// A clock given to the builder, read instead of `ticker`.
    clock: Option<Arc<dyn Clock>>,
    /// What a fresh-value hit compares its deadline against (see
    /// [`clock::fast_path_time`]).
    fast_path_time: &'static TimeCell,
    counters: Arc<Counters>,
    /// Names this instance in its invalidation messages, so it can skip its own.
    origin: String,
    /// `{l2_namespace}:{name}:`, the prefix of every L2 key.
    key_prefix: String,
    channel: String,
}

/// Assembles a [`Cache`]: configuration and loader, optionally a clock and an L2.
pub struct CacheBuilder<K, V, L, S = NoL2> {
    config: CacheConfig,
    loader: L,
    l2: S,
    clock: Option<Arc<dyn Clock>>,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V, L> CacheBuilder<K, V, L, NoL2>
where
    K: CacheKey,
    V: CacheValue,
    L: Loader<K, V>,
{
    /// A builder for an L1-only cache on the process's [`CoarseClock`].
    #[must_use]
    pub fn new(config: CacheConfig, loader: L) -> Self {
        Self { config, loader, l2: NoL2, clock: None, types: PhantomData }
    }
}

impl<K, V, L, S> CacheBuilder<K, V, L, S>
where
    K: CacheKey,
    V: CacheValue,
    L: Loader<K, V>,
    S: L2Store,
{
    /// Reads time from `clock` instead of the [`CoarseClock`] (tests pass a
    /// `girder_core::ManualClock`). Every L1 hit then calls `clock.now_ms()`.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Adds `l2` as the shared layer (and invalidation channel).
    #[must_use]
    pub fn l2<S2: L2Store>(self, l2: S2) -> CacheBuilder<K, V, L, S2> {
        CacheBuilder {
            config: self.config,
            loader: self.loader,
            l2,
            clock: self.clock,
            types: PhantomData,
        }
    }

    /// Validates the configuration and builds the cache. With an L2, this spawns the
    /// invalidation listener on the current Tokio runtime.
    ///
    /// # Errors
    /// [`BuildError::Config`] for an invalid configuration, [`BuildError::NoRuntime`]
    /// for an L2 outside a Tokio runtime, [`BuildError::TooManyCaches`] when the
    /// process already has `girder_core::coarse::FLUSHERS_MAX` live caches.
    pub fn build(self) -> Result<Cache<K, V, L, S>, BuildError> {
        self.config.validate()?;
        let runtime = if S::ENABLED {
            Some(tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?)
        } else {
            None
        };
        let counters = Arc::new(Counters::new(&self.config.name));
        let ticker = CoarseClock::shared();
        let flusher: Weak<dyn Flush> = Arc::downgrade(&counters) as Weak<dyn Flush>;
        ticker.register_flush(flusher)?;
        let fast_path_time = clock::fast_path_time(&ticker, self.clock.is_some());
        let prefix = format!("{}:{}:", self.config.l2_namespace, self.config.name);
        let inner = Arc::new(Inner {
            l1: L1::new(
                self.config.l1_capacity_entries,
                self.config.l1_negative_capacity_entries,
                &counters,
            ),
            flights: Arc::new(Flights::new()),
            loader: self.loader,
            l2: self.l2,
            ticker,
            fast_path_time,
            clock: self.clock,
            counters,
            origin: format!("{:016x}", rand::random::<u64>()),
            channel: format!("{prefix}invalidate"),
            key_prefix: prefix,
            config: self.config,
        });
        let (progress_tx, progress) = watch::channel(ListenerProgress::default());
        let listener = runtime.map(|runtime| {
            let inner = Arc::clone(&inner);
            runtime.spawn(async move {
                let on_event = |event: ListenEvent<'_>| inner.on_event(event, &progress_tx);
                inner.l2.listen(&inner.channel, &on_event).await;
            })
        });
        Ok(Cache {
            inner,
            refreshes: Mutex::new(JoinSet::new()),
            listener: Mutex::new(listener),
            progress,
            closed: AtomicBool::new(false),
        })
    }
}

impl<K, V, L> Cache<K, V, L, NoL2>
where
    K: CacheKey,
    V: CacheValue,
    L: Loader<K, V>,
{
    /// An L1-only cache on the process's [`CoarseClock`].
    ///
    /// # Errors
    /// [`BuildError::Config`] for an invalid configuration,
    /// [`BuildError::TooManyCaches`] when the process already has
    /// `girder_core::coarse::FLUSHERS_MAX` live caches.
    pub fn new(config: CacheConfig, loader: L) -> Result<Self, BuildError> {
        CacheBuilder::new(config, loader).build()
    }

    /// A builder, to add a clock or an L2.
    #[must_use]
    pub fn builder(config: CacheConfig, loader: L) -> CacheBuilder<K, V, L, NoL2> {
        CacheBuilder::new(config, loader)
    }
}

impl<K, V, L, S> Cache<K, V, L, S>
where
    K: CacheKey,
    V: CacheValue,
    L: Loader<K, V>,
    S: L2Store,
{
    /// The value of `key`: from L1 if fresh there, else from L2, else from the loader
    /// (once for all concurrent callers). `Ok(None)` means the loader said there is
    /// none (possibly cached, for `negative_ttl_ms`).
    ///
    /// The L1 lookup happens synchronously in this call, before the returned future
    /// is first polled; a hit returns an already-completed future, a miss a boxed one.
    /// A stale hit (within `stale_ms` past its TTL) returns the stale value and starts
    /// one background refresh on the current Tokio runtime (if any, and if fewer than
    /// `refreshes_max` are running).
    ///
    /// # Errors
    /// [`GetError::Load`] when the loader failed, shared by every caller of that load.
    #[inline(always)]
    pub fn get<'a>(
        &'a self,
        key: &K,
    ) -> impl Future<Output = GetResult<V, L::Error>> + Send + use<'a, K, V, L, S> {
        match self.get_cached(key) {
            Some(value) => GetFuture::Hit(std::future::ready(value)),
            None => self.miss(key),
        }
    }

    /// The synchronous L1 part of [`Cache::get`]: `Some(value)` if L1 can answer (a
    /// fresh entry, or a stale one, which also starts its background refresh), counted
    /// as an L1 hit; `None` otherwise, counting nothing (follow it with `get`, which
    /// counts the miss and loads). For code that must not await, or that wants the
    /// cheapest possible hit:
    ///
    /// ```
    /// # use girder_cache::{Cache, CacheConfig, loader_fn};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let cache = Cache::new(CacheConfig::default(), loader_fn(|k: u64| async move {
    /// #     Ok::<_, std::io::Error>(Some(k * 2)) })).unwrap();
    /// let value = match cache.get_cached(&21) {
    ///     Some(hit) => hit,
    ///     None => cache.get(&21).await?,
    /// };
    /// assert_eq!(value, Some(42));
    /// # Ok::<(), girder_cache::GetError<std::io::Error>>(())
    /// # }).unwrap();
    /// ```
    #[inline(always)]
    pub fn get_cached(&self, key: &K) -> Option<Option<V>> {
        let inner = &*self.inner;
        // The common case, a fresh value, first and alone: everything else (stale
        // values, absences, misses, and every lookup of a cache with its own clock) is
        // out of line.
        match inner.l1.get_value(key) {
            Some((fresh_until_ms, value)) if inner.fast_path_time.load_ms() < fresh_until_ms => {
                inner.counters.hot.hit(false, false);
                Some(Some(value))
            }
            found => self.get_cached_rest(key, found),
        }
    }

    /// [`Cache::get_cached`] for all but a fresh value: `found` is what the values' map
    /// held (a stale or expired value), `None` if it held nothing.
    #[cold]
    #[inline(never)]
    fn get_cached_rest(&self, key: &K, found: Option<(u64, V)>) -> Option<Option<V>> {
        let inner = &*self.inner;
        let entry = match found {
            Some((fresh_until_ms, value)) => Some((fresh_until_ms, Some(value))),
            None => inner.l1.get_absence(key),
        };
        match l1::classify(entry, inner.now_ms(), inner.config.stale_ms) {
            Lookup::Fresh(value) => {
                inner.counters.hot.hit(value.is_none(), false);
                Some(value)
            }
            Lookup::Stale(value) => {
                inner.counters.hot.hit(value.is_none(), true);
                self.refresh(key);
                Some(value)
            }
            Lookup::Miss => None,
        }
    }

    /// [`Cache::get_cached`] by anything equivalent to a key — a `&str` for a `String`
    /// key — so a hit needs no owned key. Answers only from a fresh entry: a stale one
    /// (which needs an owned key to refresh) is `None`, like a miss, and counts nothing.
    ///
    /// ```
    /// # use girder_cache::{Cache, CacheConfig, loader_fn};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let cache = Cache::new(CacheConfig::default(), loader_fn(|k: String| async move {
    /// #     Ok::<_, std::io::Error>(Some(k.len())) })).unwrap();
    /// cache.put("seven".to_owned(), 5).await.unwrap();
    /// assert_eq!(cache.get_cached_by("seven"), Some(Some(5)));
    /// assert_eq!(cache.get_cached_by("eight"), None);
    /// # });
    /// ```
    #[inline(always)]
    pub fn get_cached_by<Q>(&self, key: &Q) -> Option<Option<V>>
    where
        Q: std::hash::Hash + quick_cache::Equivalent<K> + ?Sized,
    {
        let inner = &*self.inner;
        match l1::classify(inner.l1.get(key), inner.now_ms(), inner.config.stale_ms) {
            Lookup::Fresh(value) => {
                inner.counters.hot.hit(value.is_none(), false);
                Some(value)
            }
            Lookup::Stale(_) | Lookup::Miss => None,
        }
    }

    /// The slow path of [`Cache::get`], kept out of line so the hit path stays small.
    #[cold]
    #[inline(never)]
    fn miss<'a>(&'a self, key: &K) -> GetFuture<'a, V, L::Error> {
        self.inner.counters.l1_misses.inc();
        GetFuture::Load(Box::pin(self.inner.load(key.clone())))
    }

    /// What L1 holds fresh for `key`, without loading, refreshing or counting:
    /// `Some(Some(v))` a value, `Some(None)` a cached absence, `None` nothing fresh.
    #[must_use]
    pub fn peek(&self, key: &K) -> Option<Option<V>> {
        match self.inner.lookup(key) {
            Lookup::Fresh(value) => Some(value),
            Lookup::Stale(_) | Lookup::Miss => None,
        }
    }

    /// Write-through: call after writing `value` to the system of record. Stores it in
    /// L1 and L2 and tells the other instances to drop their copy. A load of `key`
    /// already in flight (which may have read the old value) fills nothing.
    ///
    /// # Errors
    /// [`WriteError::Encode`] if `value` cannot be serialized (nothing changed);
    /// [`WriteError::L2`] if L2 failed (this instance's L1 holds `value`, other
    /// instances may serve the old one until their TTL).
    pub async fn put(&self, key: K, value: V) -> Result<(), WriteError> {
        let inner = &*self.inner;
        let now = inner.now_ms();
        let l2 = if S::ENABLED {
            let ttl_ms = l1::jittered(inner.config.l2_ttl_ms, inner.config.ttl_jitter_fraction);
            let bytes = codec::encode_value(Some(&value), now.saturating_add(ttl_ms))
                .map_err(WriteError::Encode)?;
            Some((bytes, ttl_ms))
        } else {
            None
        };
        let entry = inner.entry_for(Some(value), now, None);
        inner.flights.supersede(&key, || inner.l1.insert(key.clone(), entry));
        if let Some((bytes, ttl_ms)) = l2 {
            inner.write_l2(&key, &bytes, ttl_ms).await?;
        }
        Ok(())
    }

    /// Write-around: call after changing or deleting `key` in the system of record.
    /// Drops it from L1, tombstones it in L2 for `l2_tombstone_ms` (so no load that
    /// read the old value can fill L2 meanwhile), and tells the other instances to drop
    /// their copy. The next read loads the new value.
    ///
    /// # Errors
    /// [`WriteError::L2`] if L2 failed: this instance's L1 no longer holds `key`, but
    /// L2 and other instances may serve the old value until their TTLs.
    pub async fn invalidate(&self, key: &K) -> Result<(), WriteError> {
        let inner = &*self.inner;
        inner.flights.supersede(key, || inner.l1.remove(key));
        if S::ENABLED {
            inner.write_l2(key, &codec::encode_tombstone(), inner.config.l2_tombstone_ms).await?;
        }
        Ok(())
    }

    /// Counters since the cache was built.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        self.inner.counters.snapshot(self.inner.l1.len() as u64)
    }

    /// The invalidation listener's state, updated as it changes (always the default
    /// for a cache without L2).
    #[must_use]
    pub fn listener_progress(&self) -> watch::Receiver<ListenerProgress> {
        self.progress.clone()
    }

    /// The configuration the cache was built with.
    #[must_use]
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Waits for the background refreshes running now to finish (a graceful drain;
    /// tests use it to observe a refresh's result). Refreshes started while it waits
    /// are not awaited, and may briefly run alongside the drained ones (up to twice
    /// `refreshes_max` in total).
    pub async fn join_refreshes(&self) {
        let mut running = std::mem::take(&mut *self.refreshes.lock());
        while running.join_next().await.is_some() {}
    }

    /// Stops all background work and waits until it has stopped: running refreshes
    /// are cancelled (their keys simply load again on the next miss) and the
    /// invalidation listener is unsubscribed. Reads and writes keep working afterwards,
    /// without background refresh and without hearing other instances' invalidations
    /// (L1 staleness is then bounded by the TTL alone).
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let listener = self.listener.lock().take();
        if let Some(listener) = listener {
            listener.abort();
            // Cancelled is the expected outcome; a panic in the listener is already
            // reported by the runtime.
            let _ = listener.await;
        }
        let mut running = std::mem::take(&mut *self.refreshes.lock());
        running.shutdown().await;
    }

    /// Starts a background reload of `key` unless one is running, the bound is
    /// reached, the cache is shut down or there is no runtime to run it on.
    #[cold]
    #[inline(never)]
    fn refresh(&self, key: &K) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let mut running = self.refreshes.lock();
        while let Some(done) = running.try_join_next() {
            if let Err(err) = done {
                tracing::warn!(cache = %self.inner.config.name, %err, "cache refresh task failed");
            }
        }
        if running.len() >= self.inner.config.refreshes_max {
            return;
        }
        let Some(guard) = self.inner.flights.try_lead(key) else { return };
        self.inner.counters.refreshes.inc();
        let inner = Arc::clone(&self.inner);
        running.spawn_on(
            async move {
                // The error is counted in loader_errors; the stale entry stays usable
                // until its stale window ends, then readers load (and see errors) inline.
                if let Err(err) = inner.lead(guard).await {
                    tracing::warn!(cache = %inner.config.name, %err, "cache refresh failed");
                }
            },
            &runtime,
        );
    }
}

impl<K, V, L, S> Drop for Cache<K, V, L, S>
where
    K: CacheKey,
    V: CacheValue,
    L: Loader<K, V>,
    S: L2Store,
{
    fn drop(&mut self) {
        // The JoinSet aborts refreshes when dropped; the listener needs telling.
        if let Some(listener) = self.listener.get_mut().take() {
            listener.abort();
        }
    }
}

impl<K, V, L, S> std::fmt::Debug for Cache<K, V, L, S>
where
    K: CacheKey,
    V: CacheValue,
    L: Loader<K, V>,
    S: L2Store,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.inner.config.name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<K, V, L, S> Inner<K, V, L, S>
where
    K: CacheKey,
    V: CacheValue,
    L: Loader<K, V>,
    S: L2Store,
{
    #[inline(always)]
    fn now_ms(&self) -> u64 {
        match &self.clock {
            None => self.ticker.now_ms(),
            Some(clock) => clock.now_ms(),
        }
    }

    /// What L1 holds for `key` now.
    #[inline(always)]
    fn lookup(&self, key: &K) -> Lookup<V> {
        l1::classify(self.l1.get(key), self.now_ms(), self.config.stale_ms)
    }

    /// The L1 entry for a value obtained at `now`, never outliving `l2_expires_at_ms`
    /// when it came from L2.
    fn entry_for(&self, value: Option<V>, now: u64, l2_expires_at_ms: Option<u64>) -> Entry<V> {
        let ttl_ms = if value.is_some() { self.config.ttl_ms } else { self.config.negative_ttl_ms };
        let mut fresh_until_ms =
            now.saturating_add(l1::jittered(ttl_ms, self.config.ttl_jitter_fraction));
        if let Some(limit) = l2_expires_at_ms {
            fresh_until_ms = fresh_until_ms.min(limit);
        }
        Entry { value, fresh_until_ms }
    }

    /// The miss path: join the key's load or lead it.
    async fn load(&self, key: K) -> Result<Option<V>, GetError<L::Error>> {
        loop {
            match self.flights.join(&key) {
                Role::Waiter(rx) => {
                    self.counters.loads_coalesced.inc();
                    if let Some(outcome) = flight::wait(rx).await {
                        return outcome.map_err(GetError::Load);
                    }
                    // The leader went away without an outcome: join again.
                }
                Role::Leader(guard) => {
                    // A load that finished between our L1 miss and joining filled L1.
                    if let Lookup::Fresh(value) = self.lookup(&key) {
                        guard.finish(Ok(value.clone()), || ());
                        return Ok(value);
                    }
                    return self.lead(guard).await.map_err(GetError::Load);
                }
            }
        }
    }

    /// Runs one load as its leader: L2, then the loader; fills the layers above unless
    /// a write superseded the load meanwhile.
    async fn lead(&self, guard: LeaderGuard<K, V, L::Error>) -> Outcome<V, L::Error> {
        let key = guard.key().clone();
        if S::ENABLED
            && let Some((value, expires_at_ms)) = self.read_l2(&key).await
        {
            let entry = self.entry_for(value.clone(), self.now_ms(), Some(expires_at_ms));
            guard.finish(Ok(value.clone()), || self.l1.insert(key, entry));
            return Ok(value);
        }
        self.counters.loader_calls.inc();
        match self.loader.load(&key).await {
            Ok(value) => {
                let now = self.now_ms();
                let cacheable = value.is_some() || self.config.negative_ttl_ms > 0;
                let entry = self.entry_for(value.clone(), now, None);
                let filled = guard.finish(Ok(value.clone()), || {
                    if cacheable {
                        self.l1.insert(key.clone(), entry);
                    }
                });
                if S::ENABLED && filled && cacheable {
                    self.fill_l2(&key, value.as_ref(), now).await;
                }
                Ok(value)
            }
            Err(err) => {
                self.counters.loader_errors.inc();
                let err = Arc::new(err);
                guard.finish(Err(Arc::clone(&err)), || ());
                Err(err)
            }
        }
    }

    fn l2_key(&self, key: &K) -> String {
        let mut text = String::with_capacity(self.key_prefix.len() + 32);
        text.push_str(&self.key_prefix);
        key.write_text(&mut text);
        text
    }

    /// Bounds an L2 call by `l2_timeout_ms`.
    async fn l2_call<T>(
        &self,
        call: impl Future<Output = Result<T, L2Error>>,
    ) -> Result<T, L2Error> {
        let after_ms = self.config.l2_timeout_ms;
        tokio::time::timeout(Duration::from_millis(after_ms), call)
            .await
            .unwrap_or(Err(L2Error::Timeout { after_ms }))
    }

    /// A usable L2 entry for `key`: the value (or absence) and when it expires.
    async fn read_l2(&self, key: &K) -> Option<(Option<V>, u64)> {
        let bytes = match self.l2_call(self.l2.get(&self.l2_key(key))).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                self.counters.l2_misses.inc();
                return None;
            }
            Err(err) => {
                self.counters.l2_errors.inc();
                let err: &dyn std::error::Error = &err;
                tracing::warn!(cache = %self.config.name, err, "L2 read failed; loading");
                return None;
            }
        };
        match codec::decode::<V>(&bytes) {
            Ok(Payload::Value(value, expires_at_ms)) => {
                self.counters.l2_hits.inc();
                Some((Some(value), expires_at_ms))
            }
            Ok(Payload::Absent(expires_at_ms)) => {
                self.counters.l2_hits.inc();
                Some((None, expires_at_ms))
            }
            Ok(Payload::Tombstone) => {
                self.counters.l2_misses.inc();
                None
            }
            Err(err) => {
                self.counters.l2_misses.inc();
                tracing::warn!(cache = %self.config.name, %err, "undecodable L2 entry; loading");
                None
            }
        }
    }

    /// Offers a loaded value (or absence) to L2; a present entry or tombstone wins.
    async fn fill_l2(&self, key: &K, value: Option<&V>, now: u64) {
        let ttl_ms =
            if value.is_some() { self.config.l2_ttl_ms } else { self.config.negative_ttl_ms };
        let ttl_ms = l1::jittered(ttl_ms, self.config.ttl_jitter_fraction);
        let bytes = match codec::encode_value(value, now.saturating_add(ttl_ms)) {
            Ok(bytes) => bytes,
            Err(err) => {
                self.counters.l2_errors.inc();
                tracing::warn!(cache = %self.config.name, %err, "value cannot be serialized for L2");
                return;
            }
        };
        if let Err(err) = self.l2_call(self.l2.fill(&self.l2_key(key), &bytes, ttl_ms)).await {
            self.counters.l2_errors.inc();
            let err: &dyn std::error::Error = &err;
            tracing::warn!(cache = %self.config.name, err, "L2 fill failed");
        }
    }

    /// Writes `bytes` to L2 and announces `key` to the other instances.
    async fn write_l2(&self, key: &K, bytes: &[u8], ttl_ms: u64) -> Result<(), L2Error> {
        let mut message = String::with_capacity(self.origin.len() + 33);
        message.push_str(&self.origin);
        message.push(' ');
        key.write_text(&mut message);
        let notice = Notice { channel: &self.channel, message: &message };
        let result = self.l2_call(self.l2.write(&self.l2_key(key), bytes, ttl_ms, notice)).await;
        if result.is_err() {
            self.counters.l2_errors.inc();
        }
        result
    }

    /// Applies what the invalidation listener heard.
    fn on_event(&self, event: ListenEvent<'_>, progress: &watch::Sender<ListenerProgress>) {
        match event {
            ListenEvent::Subscribed => {
                // Invalidations sent while we were not subscribed are lost: drop
                // everything that might be stale. Safe, at the price of a refill.
                self.resync();
                progress.send_modify(|p| {
                    p.subscribed = true;
                    p.subscriptions += 1;
                });
            }
            ListenEvent::Lost => progress.send_modify(|p| p.subscribed = false),
            ListenEvent::Message(text) => {
                let Some((origin, key_text)) = text.split_once(' ') else {
                    return self.unreadable(text);
                };
                if origin == self.origin {
                    return;
                }
                let Some(key) = K::from_text(key_text) else { return self.unreadable(text) };
                self.flights.supersede(&key, || self.l1.remove(&key));
                self.counters.invalidations_received.inc();
                progress.send_modify(|p| p.invalidations_applied += 1);
            }
        }
    }

    /// A message we cannot attribute to a key might have named any key: clear all.
    fn unreadable(&self, text: &str) {
        tracing::warn!(cache = %self.config.name, message = text, "unreadable invalidation; clearing L1");
        self.resync();
    }

    fn resync(&self) {
        self.flights.supersede_all(|| self.l1.clear());
        self.counters.resyncs.inc();
    }
}

/// What [`Cache::get`] resolves to.
type GetResult<V, E> = Result<Option<V>, GetError<E>>;

/// The future [`Cache::get`] returns: already complete for an L1 hit, boxed for a
/// miss. The boxed future is type-erased so that dropping a completed hit needs no
/// knowledge of the (large) load state machine.
enum GetFuture<'a, V, E> {
    Hit(std::future::Ready<Option<V>>),
    Load(Pin<Box<dyn Future<Output = GetResult<V, E>> + Send + 'a>>),
}

impl<V, E> Future for GetFuture<'_, V, E> {
    type Output = GetResult<V, E>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Hit(hit) => Pin::new(hit).poll(cx).map(Ok),
            Self::Load(load) => load.as_mut().poll(cx),
        }
    }
}
