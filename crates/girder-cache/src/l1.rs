//! The in-process layer: a bounded `quick_cache` map (its eviction policy, not ours)
//! whose values carry Girder's own expiry times, compared against the cache's clock on
//! every read. quick_cache has no notion of time; an expired entry simply stops being
//! served and is overwritten by the next load or evicted by capacity pressure.

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

impl<K, V> Lifecycle<K, Entry<V>> for EvictionCounter {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut Self::RequestState, _key: K, _entry: Entry<V>) {
        self.0.evictions.inc();
    }
}

/// The bounded map.
pub(crate) type L1Map<K, V> =
    QuickCache<K, Entry<V>, UnitWeighter, DefaultHashBuilder, EvictionCounter>;

/// A map holding at most `capacity_entries` entries.
pub(crate) fn new_map<K, V>(capacity_entries: u64, counters: Arc<Counters>) -> L1Map<K, V>
where
    K: Eq + std::hash::Hash,
    V: Clone,
{
    let estimated_items = usize::try_from(capacity_entries).unwrap_or(usize::MAX);
    QuickCache::with(
        estimated_items,
        capacity_entries,
        UnitWeighter,
        DefaultHashBuilder::default(),
        EvictionCounter(counters),
    )
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
