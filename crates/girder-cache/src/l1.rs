//! The in-process layer: bounded `quick_cache` maps (their eviction policy, not ours)
//! whose values carry Girder's own expiry times, compared against the cache's clock on
//! every read. quick_cache has no notion of time; an expired entry simply stops being
//! served and is overwritten by the next load or evicted by capacity pressure.
//!
//! Values and cached absences live in two maps: a value is stored beside its expiry
//! and nothing else (a `u64` value costs 16 bytes, not the 24 of `Option<u64>` plus an
//! expiry), so the hit path reads as little memory as the value allows. A lookup that
//! misses the value map asks the (smaller) absence map.

use std::sync::Arc;

use quick_cache::sync::Cache as QuickCache;
use quick_cache::{DefaultHashBuilder, Lifecycle, UnitWeighter};

use crate::stats::Counters;

/// One L1 value: the value (or `None` for a cached absence) and its expiry. Kept small
/// on purpose: every hit copies it, and a bigger entry means more cache misses.
#[derive(Debug, Clone)]
pub(crate) struct Entry<V> {
    pub(crate) value: Option<V>,
    /// Served as fresh while `now < fresh_until_ms`, then as stale (with a refresh)
    /// for the cache's `stale_ms` more.
    pub(crate) fresh_until_ms: u64,
}

/// What L1 knows about a key at some instant.
#[derive(Debug)]
pub(crate) enum Lookup<V> {
    /// A fresh entry.
    Fresh(Option<V>),
    /// Past its TTL, within its stale window.
    Stale(Option<V>),
    /// Absent or unusable.
    Miss,
}

/// Counts capacity evictions; replacements of a key do not reach it.
#[derive(Clone)]
pub(crate) struct EvictionCounter(pub(crate) Arc<Counters>);

impl<K, T> Lifecycle<K, T> for EvictionCounter {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut Self::RequestState, _key: K, _entry: T) {
        self.0.evictions.inc();
    }
}

/// A cached value and the end of its freshness.
#[derive(Debug, Clone)]
pub(crate) struct Hit<V> {
    value: V,
    fresh_until_ms: u64,
}

type Map<K, T> = QuickCache<K, T, UnitWeighter, DefaultHashBuilder, EvictionCounter>;

/// The L1: values, and cached absences (each stored as the end of its freshness).
pub(crate) struct L1<K, V> {
    values: Map<K, Hit<V>>,
    absences: Map<K, u64>,
}

/// The share of the capacity kept for cached absences: 1/8 (at least one entry).
const ABSENCE_SHARE_DIVISOR: u64 = 8;

fn map<K: Eq + std::hash::Hash, T: Clone>(capacity: u64, counters: &Arc<Counters>) -> Map<K, T> {
    QuickCache::with(
        usize::try_from(capacity).unwrap_or(usize::MAX),
        capacity,
        UnitWeighter,
        DefaultHashBuilder::default(),
        EvictionCounter(Arc::clone(counters)),
    )
}

impl<K, V> L1<K, V>
where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
{
    /// An L1 holding at most `capacity_entries` in all: 7/8 for values, 1/8 for
    /// absences (each at least one).
    pub(crate) fn new(capacity_entries: u64, counters: &Arc<Counters>) -> Self {
        let absences = (capacity_entries / ABSENCE_SHARE_DIVISOR).max(1);
        let values = capacity_entries.saturating_sub(absences).max(1);
        Self { values: map(values, counters), absences: map(absences, counters) }
    }

    /// What L1 holds for `key` (or anything equivalent to it, such as a `&str` for a
    /// `String` key), fresh or not.
    #[inline(always)]
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<Entry<V>>
    where
        Q: std::hash::Hash + quick_cache::Equivalent<K> + ?Sized,
    {
        if let Some(hit) = self.values.get(key) {
            return Some(Entry { value: Some(hit.value), fresh_until_ms: hit.fresh_until_ms });
        }
        self.absences.get(key).map(|fresh_until_ms| Entry { value: None, fresh_until_ms })
    }

    /// Stores `entry` under `key`, replacing whatever L1 held for it.
    pub(crate) fn insert(&self, key: K, entry: Entry<V>) {
        match entry.value {
            Some(value) => {
                self.absences.remove(&key);
                self.values.insert(key, Hit { value, fresh_until_ms: entry.fresh_until_ms });
            }
            None => {
                self.values.remove(&key);
                self.absences.insert(key, entry.fresh_until_ms);
            }
        }
    }

    /// Forgets `key`.
    pub(crate) fn remove(&self, key: &K) {
        self.values.remove(key);
        self.absences.remove(key);
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        self.values.clear();
        self.absences.clear();
    }

    /// Entries held, values and absences.
    pub(crate) fn len(&self) -> usize {
        self.values.len() + self.absences.len()
    }
}

/// Classifies `entry` at `now_ms` for a cache serving stale entries for `stale_ms`.
#[inline(always)]
pub(crate) fn classify<V>(entry: Option<Entry<V>>, now_ms: u64, stale_ms: u64) -> Lookup<V> {
    match entry {
        Some(e) if now_ms < e.fresh_until_ms => Lookup::Fresh(e.value),
        Some(e) if now_ms < e.fresh_until_ms.saturating_add(stale_ms) => Lookup::Stale(e.value),
        _ => Lookup::Miss,
    }
}

/// `ttl_ms` scaled by a uniform random factor in `[1 - fraction, 1 + fraction]`,
/// rounded, and at least 1 ms (a zero TTL stays zero: "do not cache").
pub(crate) fn jittered(ttl_ms: u64, fraction: f64) -> u64 {
    if ttl_ms == 0 || fraction <= 0.0 {
        return ttl_ms;
    }
    let factor = 1.0 + rand::random_range(-fraction..=fraction);
    // Lifetimes are validated to at most TTL_MAX_MS, well inside f64's exact range.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let scaled = (ttl_ms as f64 * factor).round() as u64;
    scaled.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_fraction_and_spreads() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10_000 {
            let ttl = jittered(10_000, 0.1);
            assert!((9_000..=11_000).contains(&ttl), "{ttl}");
            seen.insert(ttl);
        }
        assert!(seen.len() > 1_000, "only {} distinct lifetimes", seen.len());
        assert_eq!(jittered(10_000, 0.0), 10_000);
        assert_eq!(jittered(0, 0.5), 0);
        assert_eq!(jittered(1, 0.5), 1);
    }

    #[test]
    fn classification_follows_the_two_deadlines() {
        let entry = || Some(Entry { value: Some(1), fresh_until_ms: 10 });
        assert!(matches!(classify(entry(), 9, 5), Lookup::Fresh(Some(1))));
        assert!(matches!(classify(entry(), 10, 5), Lookup::Stale(Some(1))));
        assert!(matches!(classify(entry(), 14, 5), Lookup::Stale(Some(1))));
        assert!(matches!(classify(entry(), 15, 5), Lookup::Miss));
        assert!(matches!(classify(entry(), 10, 0), Lookup::Miss));
        assert!(matches!(classify::<u8>(None, 0, 5), Lookup::Miss));
    }
}
