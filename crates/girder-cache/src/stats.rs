//! What each layer did: counters kept as atomics (read back by `Cache::stats`) and
//! mirrored to the `metrics` crate as `girder_cache_*_total{cache="<name>"}`.
//!
//! The three counters bumped on L1 hits (`l1_hits`, `negative_hits`, `stale_served`)
//! are striped per thread and bumped with a plain load and store (no locked
//! instruction, no shared cache line); they reach `metrics` when the coarse clock's
//! thread (`girder_core::CoarseClock`) flushes them, about once a second, and whenever
//! `Cache::stats` is called. Each thread gets its own stripe for the first 64 threads
//! that touch caches; beyond that threads share stripes, and two sharing threads
//! bumping at the same instant can lose one count. These three may therefore
//! under-count, by a tiny fraction, in processes with more than 64 threads reading
//! caches. All other counters are exact atomics and reach `metrics` as they happen.
//!
//! Metric handles are registered when the cache is built, so install the recorder
//! (e.g. the Prometheus exporter) before building caches; without one the mirror is a
//! no-op.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use girder_core::coarse::Flush;

/// A snapshot of a cache's counters since it was built.
///
/// Every lookup is exactly one of an L1 hit or an L1 miss. `negative_hits` and
/// `stale_served` are subsets of `l1_hits`. L2 counters move only when an L2 is
/// configured. `loads_coalesced` counts callers that waited on another caller's load
/// instead of starting their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups answered from L1 (fresh, negative or stale).
    pub l1_hits: u64,
    /// Lookups L1 could not answer (absent or past its stale window).
    pub l1_misses: u64,
    /// L1 misses answered by L2 (a value or a cached `None`).
    pub l2_hits: u64,
    /// L1 misses L2 could not answer (absent, tombstoned or undecodable).
    pub l2_misses: u64,
    /// L2 calls that failed or timed out; reads then fall through to the loader.
    pub l2_errors: u64,
    /// Calls to the loader (foreground and background).
    pub loader_calls: u64,
    /// Loader calls that returned an error.
    pub loader_errors: u64,
    /// Callers that waited on an in-flight load of the same key instead of loading.
    pub loads_coalesced: u64,
    /// Entries `quick_cache` evicted to stay within `l1_capacity_entries` (values) or
    /// `l1_negative_capacity_entries` (absences).
    pub evictions: u64,
    /// L1 hits on a cached `None`.
    pub negative_hits: u64,
    /// L1 hits on an entry past its TTL but within `stale_ms`, served while refreshing.
    pub stale_served: u64,
    /// Background refreshes started (stale-while-revalidate).
    pub refreshes: u64,
    /// Invalidations received from other instances and applied to L1.
    pub invalidations_received: u64,
    /// Times L1 was cleared because invalidations may have been missed (the
    /// invalidation subscription was (re)established).
    pub resyncs: u64,
    /// Entries in L1 now, expired ones included until they are evicted or read.
    pub l1_entries: u64,
}

/// One counter: an atomic for `stats()` and a `metrics` handle.
#[derive(Debug)]
pub(crate) struct Counter {
    value: AtomicU64,
    metric: metrics::Counter,
}

impl Counter {
    fn new(metric: &'static str, cache: &str) -> Self {
        Self {
            value: AtomicU64::new(0),
            metric: metrics::counter!(metric, "cache" => cache.to_owned()),
        }
    }

    #[inline]
    pub(crate) fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        self.metric.increment(n);
    }

    fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Stripes of the hot counters: one per thread for the first 64 threads. A power of two.
const STRIPES: usize = 64;

/// One thread's hot counters, alone on their cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct HotStripe {
    hits: AtomicU64,
    negative_hits: AtomicU64,
    stale_served: AtomicU64,
}

thread_local! {
    /// This thread's stripe, or `usize::MAX` before its first hit. A `const`
    /// initializer makes the access a plain thread-local load.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's stripe index, assigned round-robin on first use.
#[inline(always)]
fn stripe_index() -> usize {
    STRIPE.with(|stripe| {
        let index = stripe.get();
        if index != usize::MAX {
            return index;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let index = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
        stripe.set(index);
        index
    })
}

/// A racy increment: a load and a store, no read-modify-write. Exact while one thread
/// owns the stripe (see the module docs for when it does not).
#[inline(always)]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// The counters bumped on every L1 hit.
#[derive(Debug)]
pub(crate) struct Hot {
    /// Inline, so a hit reaches its stripe from the `Counters` pointer alone.
    stripes: [HotStripe; STRIPES],
    /// What `metrics` has been told so far, per counter (hits, negative, stale).
    flushed: [AtomicU64; 3],
    metrics: [metrics::Counter; 3],
}

impl Hot {
    fn new(cache: &str) -> Self {
        let metric = |name: &'static str| metrics::counter!(name, "cache" => cache.to_owned());
        Self {
            stripes: std::array::from_fn(|_| HotStripe::default()),
            flushed: Default::default(),
            metrics: [
                metric("girder_cache_l1_hits_total"),
                metric("girder_cache_negative_hits_total"),
                metric("girder_cache_stale_served_total"),
            ],
        }
    }

    /// Counts one L1 hit, and whether it was on a cached absence or a stale entry.
    #[inline(always)]
    pub(crate) fn hit(&self, negative: bool, stale: bool) {
        // The mask is a no-op (indices are below STRIPES) that lets the compiler drop
        // the bounds check.
        let stripe = &self.stripes[stripe_index() & (STRIPES - 1)];
        bump(&stripe.hits);
        if negative {
            bump(&stripe.negative_hits);
        }
        if stale {
            bump(&stripe.stale_served);
        }
    }

    fn totals(&self) -> [u64; 3] {
        let mut totals = [0_u64; 3];
        for stripe in self.stripes.iter() {
            totals[0] += stripe.hits.load(Ordering::Relaxed);
            totals[1] += stripe.negative_hits.load(Ordering::Relaxed);
            totals[2] += stripe.stale_served.load(Ordering::Relaxed);
        }
        totals
    }

    /// Tells `metrics` what accumulated since the last flush. `fetch_max` keeps
    /// concurrent flushes (clock thread, `stats()`) from counting anything twice.
    fn flush(&self, totals: [u64; 3]) {
        for ((total, flushed), metric) in totals.iter().zip(&self.flushed).zip(&self.metrics) {
            let before = flushed.fetch_max(*total, Ordering::Relaxed);
            if *total > before {
                metric.increment(total - before);
            }
        }
    }
}

/// Every counter of one cache.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) hot: Hot,
    pub(crate) l1_misses: Counter,
    pub(crate) l2_hits: Counter,
    pub(crate) l2_misses: Counter,
    pub(crate) l2_errors: Counter,
    pub(crate) loader_calls: Counter,
    pub(crate) loader_errors: Counter,
    pub(crate) loads_coalesced: Counter,
    pub(crate) evictions: Counter,
    pub(crate) refreshes: Counter,
    pub(crate) invalidations_received: Counter,
    pub(crate) resyncs: Counter,
}

impl Counters {
    pub(crate) fn new(cache: &str) -> Self {
        Self {
            hot: Hot::new(cache),
            l1_misses: Counter::new("girder_cache_l1_misses_total", cache),
            l2_hits: Counter::new("girder_cache_l2_hits_total", cache),
            l2_misses: Counter::new("girder_cache_l2_misses_total", cache),
            l2_errors: Counter::new("girder_cache_l2_errors_total", cache),
            loader_calls: Counter::new("girder_cache_loader_calls_total", cache),
            loader_errors: Counter::new("girder_cache_loader_errors_total", cache),
            loads_coalesced: Counter::new("girder_cache_loads_coalesced_total", cache),
            evictions: Counter::new("girder_cache_evictions_total", cache),
            refreshes: Counter::new("girder_cache_refreshes_total", cache),
            invalidations_received: Counter::new(
                "girder_cache_invalidations_received_total",
                cache,
            ),
            resyncs: Counter::new("girder_cache_resyncs_total", cache),
        }
    }

    /// The counters now; also flushes the hot ones to `metrics`.
    pub(crate) fn snapshot(&self, l1_entries: u64) -> CacheStats {
        let [l1_hits, negative_hits, stale_served] = self.hot.totals();
        self.hot.flush([l1_hits, negative_hits, stale_served]);
        CacheStats {
            l1_hits,
            l1_misses: self.l1_misses.get(),
            l2_hits: self.l2_hits.get(),
            l2_misses: self.l2_misses.get(),
            l2_errors: self.l2_errors.get(),
            loader_calls: self.loader_calls.get(),
            loader_errors: self.loader_errors.get(),
            loads_coalesced: self.loads_coalesced.get(),
            evictions: self.evictions.get(),
            negative_hits,
            stale_served,
            refreshes: self.refreshes.get(),
            invalidations_received: self.invalidations_received.get(),
            resyncs: self.resyncs.get(),
            l1_entries,
        }
    }
}

impl Flush for Counters {
    fn flush(&self) {
        self.hot.flush(self.hot.totals());
    }
}
