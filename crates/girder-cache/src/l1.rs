//! The in-process layer: bounded `quick_cache` maps (their eviction policy, not ours)
//! whose values carry Girder's own expiry times, compared against the cache's clock on
//! every read. quick_cache has no notion of time; an expired entry simply stops being
//! served and is overwritten by the next load or evicted by capacity pressure.
//!
//! Values and cached absences live in two maps, each with its own bound:
//! - a flood of lookups for keys that do not exist fills only the absences' map, so it
//!   cannot evict the values that are being served;
//! - a value's slot is `(deadline, value)`, with no `Option` around the value: for a
//!   `u64` value quick_cache's slab slot is 40 bytes (as for a bare `u64`) instead of
//!   48, and a hit copies 16 bytes instead of 24. Slot size sets the floor of a hit's
//!   cost (BENCHMARKS.md).
//!
//! A key is in at most one of the two maps. Every write runs under the cache's flight
//! lock (one writer at a time per cache) and removes the key from the other map before
//! it inserts, so a reader racing a write sees the old entry, the new one, or neither —
//! a miss, which loads — never both.

use std::hash::Hash;
use std::sync::Arc;

use quick_cache::sync::Cache as QuickCache;
use quick_cache::{DefaultHashBuilder, Equivalent, Lifecycle, UnitWeighter};

use crate::stats::Counters;

/// What to store for a key: the value (or `None` for a cached absence), fresh until
/// `fresh_until_ms`.
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

/// Counts the capacity evictions of one insert (replacements of a key do not reach
/// it); the insert hands the count back to [`L1::insert`].
///
/// It holds nothing, so quick_cache's shards carry no pointer of Girder's and are the
/// size they are with quick_cache's default lifecycle.
#[derive(Clone, Copy, Default)]
pub(crate) struct CountEvictions;

impl<K, T> Lifecycle<K, T> for CountEvictions {
    type RequestState = u64;

    fn begin_request(&self) -> Self::RequestState {
        0
    }

    fn on_evict(&self, evicted: &mut Self::RequestState, _key: K, _value: T) {
        *evicted += 1;
    }
}

type Map<K, T> = QuickCache<K, T, UnitWeighter, DefaultHashBuilder, CountEvictions>;

/// A map holding at most `capacity_entries` entries.
fn new_map<K: Eq + Hash, T: Clone>(capacity_entries: u64) -> Map<K, T> {
    let estimated_items = usize::try_from(capacity_entries).unwrap_or(usize::MAX);
    QuickCache::with(
        estimated_items,
        capacity_entries,
        UnitWeighter,
        DefaultHashBuilder::default(),
        CountEvictions,
    )
}

/// The two bounded maps of one cache.
pub(crate) struct L1<K, V> {
    /// `(fresh_until_ms, value)`.
    values: Map<K, (u64, V)>,
    /// `fresh_until_ms` of each cached absence; `None` when absences get no room.
    absences: Option<Map<K, u64>>,
    /// Where evictions are counted.
    counters: Arc<Counters>,
}

impl<K, V> L1<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    /// At most `value_entries` values and `absence_entries` absences (`0`: absences
    /// are not held in L1).
    pub(crate) fn new(value_entries: u64, absence_entries: u64, counters: &Arc<Counters>) -> Self {
        Self {
            values: new_map(value_entries),
            absences: (absence_entries > 0).then(|| new_map(absence_entries)),
            counters: Arc::clone(counters),
        }
    }

    /// The entry for `key`, as `(fresh_until_ms, value)`.
    #[inline(always)]
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<(u64, Option<V>)>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        match self.values.get(key) {
            Some((fresh_until_ms, value)) => Some((fresh_until_ms, Some(value))),
            None => self.get_absence(key),
        }
    }

    /// The value held for `key`, as `(fresh_until_ms, value)`; absences not consulted.
    #[inline(always)]
    pub(crate) fn get_value<Q>(&self, key: &Q) -> Option<(u64, V)>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.values.get(key)
    }

    /// The cached absence held for `key`, as `(fresh_until_ms, None)`. Out of line,
    /// so a value hit stays small.
    #[inline(never)]
    pub(crate) fn get_absence<Q>(&self, key: &Q) -> Option<(u64, Option<V>)>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let fresh_until_ms = self.absences.as_ref()?.get(key)?;
        Some((fresh_until_ms, None))
    }

    /// Stores `entry` for `key`, replacing whatever was there. Callers hold the
    /// cache's flight lock.
    pub(crate) fn insert(&self, key: K, entry: Entry<V>) {
        let evicted = match entry.value {
            Some(value) => {
                if let Some(absences) = &self.absences {
                    absences.remove(&key);
                }
                self.values.insert_with_lifecycle(key, (entry.fresh_until_ms, value))
            }
            None => {
                self.values.remove(&key);
                match &self.absences {
                    Some(absences) => absences.insert_with_lifecycle(key, entry.fresh_until_ms),
                    None => 0,
                }
            }
        };
        if evicted > 0 {
            self.counters.evictions.add(evicted);
        }
    }

    /// Drops `key`. Callers hold the cache's flight lock.
    pub(crate) fn remove(&self, key: &K) {
        self.values.remove(key);
        if let Some(absences) = &self.absences {
            absences.remove(key);
        }
    }

    /// Drops everything. Callers hold the cache's flight lock.
    pub(crate) fn clear(&self) {
        self.values.clear();
        if let Some(absences) = &self.absences {
            absences.clear();
        }
    }

    /// Entries held now, values and absences, expired ones included.
    pub(crate) fn len(&self) -> usize {
        self.values.len() + self.absences.as_ref().map_or(0, QuickCache::len)
    }
}

/// Classifies `entry` (`(fresh_until_ms, value)`) at `now_ms` for a cache serving stale
/// entries for `stale_ms`.
#[inline(always)]
pub(crate) fn classify<V>(
    entry: Option<(u64, Option<V>)>,
    now_ms: u64,
    stale_ms: u64,
) -> Lookup<V> {
    match entry {
        Some((fresh_until_ms, value)) if now_ms < fresh_until_ms => Lookup::Fresh(value),
        Some((fresh_until_ms, value)) if now_ms < fresh_until_ms.saturating_add(stale_ms) => {
            Lookup::Stale(value)
        }
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
        let entry = || Some((10, Some(1)));
        assert!(matches!(classify(entry(), 9, 5), Lookup::Fresh(Some(1))));
        assert!(matches!(classify(entry(), 10, 5), Lookup::Stale(Some(1))));
        assert!(matches!(classify(entry(), 14, 5), Lookup::Stale(Some(1))));
        assert!(matches!(classify(entry(), 15, 5), Lookup::Miss));
        assert!(matches!(classify(entry(), 10, 0), Lookup::Miss));
        assert!(matches!(classify::<u8>(None, 0, 5), Lookup::Miss));
        assert!(matches!(classify::<u8>(Some((10, None)), 9, 5), Lookup::Fresh(None)));
    }

    fn l1(values: u64, absences: u64) -> L1<u64, u64> {
        L1::new(values, absences, &Arc::new(Counters::new("l1-test")))
    }

    #[test]
    fn a_key_moves_between_value_and_absence_and_is_never_both() {
        let map = l1(10, 10);
        map.insert(1, Entry { value: Some(7), fresh_until_ms: 5 });
        assert_eq!(map.get(&1), Some((5, Some(7))));
        map.insert(1, Entry { value: None, fresh_until_ms: 6 });
        assert_eq!(map.get(&1), Some((6, None)));
        assert_eq!(map.len(), 1);
        map.insert(1, Entry { value: Some(8), fresh_until_ms: 9 });
        assert_eq!(map.get(&1), Some((9, Some(8))));
        assert_eq!(map.len(), 1);
        map.insert(2, Entry { value: None, fresh_until_ms: 3 });
        assert_eq!(map.len(), 2);
        map.remove(&1);
        map.remove(&2);
        assert_eq!((map.get(&1), map.get(&2), map.len()), (None, None, 0));
        map.insert(3, Entry { value: Some(1), fresh_until_ms: 1 });
        map.insert(4, Entry { value: None, fresh_until_ms: 1 });
        map.clear();
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn absences_have_their_own_bound_and_cannot_evict_values() {
        let map = l1(1_000, 10);
        for key in 0..100 {
            map.insert(key, Entry { value: Some(key), fresh_until_ms: 1 });
        }
        for key in 1_000..11_000 {
            map.insert(key, Entry { value: None, fresh_until_ms: 1 });
        }
        let values = (0..100).filter(|key| map.get(key).is_some()).count();
        assert_eq!(values, 100, "absences evicted values");
        assert!(map.len() < 200, "{} entries: absences exceeded their bound", map.len());

        let none = l1(10, 0);
        none.insert(1, Entry { value: None, fresh_until_ms: 1 });
        assert_eq!((none.get(&1), none.len()), (None, 0));
    }
}
