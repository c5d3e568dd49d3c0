//! The in-process backend: per-key state in a sharded map, each shard behind a
//! `parking_lot::Mutex` held for one hash lookup and one [`Algorithm::decide`].
//!
//! Memory is bounded by [`MemoryConfig::max_keys`]. A key whose state is equivalent to
//! fresh (a full bucket, an empty window) carries no information and may be dropped at
//! any time; when a shard is full those *idle* keys are swept first. Only if every key
//! in the shard is live is one live key evicted — the one closest to idle among a small
//! sample — which forgets its usage: under memory pressure the limiter fails *open* for
//! that key, never by refusing service. The count of such evictions is in
//! [`MemoryStats::evicted_live`] so it can be alerted on.

use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use girder_core::{Clock, SystemClock};
use parking_lot::Mutex;

use crate::algorithm::Algorithm;
use crate::{AnyAlgorithm, Decision, LimitError, RateLimiter, Rule, RuleError, check_input};

/// How many entries are compared when a live key must be evicted.
const EVICTION_SAMPLE: usize = 8;

/// Bounds of a [`MemoryLimiter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// The most keys tracked at once (≥ 1). The map never holds more: each of the
    /// `shards` holds at most `max_keys / shards` (so a few slots may go unused).
    pub max_keys: usize,
    /// Number of independently locked shards (rounded down to at most `max_keys`).
    pub shards: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self { max_keys: 100_000, shards: 16 }
    }
}

/// Counters of a [`MemoryLimiter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Keys tracked now.
    pub keys: usize,
    /// Idle keys dropped to make room (harmless: their state was equivalent to fresh).
    pub evicted_idle: u64,
    /// Live keys dropped because a shard was full of live keys: each forgot its usage.
    pub evicted_live: u64,
}

struct Shard<S> {
    /// `(key, state)` pairs hashed by the limiter's `hasher`.
    map: HashTable<(Box<str>, S)>,
    no_sweep_before_ms: u64,
    evicted_idle: u64,
    evicted_live: u64,
}

/// A [`RateLimiter`] in process memory, generic over the [`Algorithm`] (monomorphised
/// for speed; [`AnyAlgorithm`], the default, when the rule is chosen at run time).
pub struct MemoryLimiter<A: Algorithm = AnyAlgorithm> {
    algo: A,
    shards: Box<[Mutex<Shard<A::State>>]>,
    hasher: RandomState,
    per_shard_max: usize,
    clock: Arc<dyn Clock>,
    config: MemoryConfig,
}

impl<A: Algorithm + std::fmt::Debug> std::fmt::Debug for MemoryLimiter<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("algo", &self.algo)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MemoryLimiter<AnyAlgorithm> {
    /// A limiter applying `rule`.
    ///
    /// # Errors
    /// The rule's [`RuleError`].
    pub fn from_rule(
        rule: &Rule,
        config: MemoryConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RuleError> {
        Ok(Self::new(AnyAlgorithm::from_rule(rule)?, config, clock))
    }
}

impl<A: Algorithm> MemoryLimiter<A> {
    /// A limiter applying `algo`, reading time from `clock`. A `max_keys` or `shards`
    /// of 0 is taken as 1.
    #[must_use]
    pub fn new(algo: A, config: MemoryConfig, clock: Arc<dyn Clock>) -> Self {
        let max_keys = config.max_keys.max(1);
        let shard_count = config.shards.clamp(1, max_keys);
        let per_shard_max = max_keys / shard_count;
        let shards = (0..shard_count)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashTable::new(),
                    no_sweep_before_ms: 0,
                    evicted_idle: 0,
                    evicted_live: 0,
                })
            })
            .collect();
        Self { algo, shards, hasher: RandomState::default(), per_shard_max, clock, config }
    }

    /// A limiter applying `algo` with the default bounds and the system clock.
    #[must_use]
    pub fn with_defaults(algo: A) -> Self {
        Self::new(algo, MemoryConfig::default(), Arc::new(SystemClock))
    }

    /// The algorithm applied.
    pub fn algorithm(&self) -> &A {
        &self.algo
    }

    /// Checks `cost` against `key` at the clock's time, synchronously.
    ///
    /// # Errors
    /// [`LimitError::InvalidCost`], [`LimitError::KeyTooLong`].
    pub fn check_now(&self, key: &str, cost: u64) -> Result<Decision, LimitError> {
        self.check_at(key, cost, self.clock.now_ms())
    }

    /// Checks `cost` against `key` as if the time were `now_ms` (simulations, replay).
    ///
    /// # Errors
    /// [`LimitError::InvalidCost`], [`LimitError::KeyTooLong`].
    pub fn check_at(&self, key: &str, cost: u64, now_ms: u64) -> Result<Decision, LimitError> {
        check_input(key, cost, self.algo.max_cost())?;
        let hash = self.hasher.hash_one(key);
        // The table probes with the low bits and tags with the top 7: pick the shard
        // from bits in between so keys of one shard still spread over its table.
        let shard_index = (hash >> 32) as usize % self.shards.len();
        let mut shard = self.shards[shard_index].lock();
        if let Some((_, state)) = shard.map.find_mut(hash, |(k, _)| **k == *key) {
            return Ok(self.algo.decide(state, now_ms, cost));
        }
        if shard.map.len() >= self.per_shard_max {
            self.make_room(&mut shard, now_ms);
        }
        let mut state = self.algo.fresh(now_ms);
        let decision = self.algo.decide(&mut state, now_ms, cost);
        shard.map.insert_unique(hash, (Box::from(key), state), |(k, _)| self.hasher.hash_one(&**k));
        debug_assert!(shard.map.len() <= self.per_shard_max);
        Ok(decision)
    }

    /// Frees one slot in a full shard: idle keys first, else the live key closest to
    /// idle among a sample.
    ///
    /// A sweep is a scan of the shard; one that finds nothing idle records when the
    /// first key will be, and the shard is not scanned again before then. So a shard
    /// full of live keys costs a sample, not a scan, per new key, and at most one scan
    /// per millisecond.
    fn make_room(&self, shard: &mut Shard<A::State>, now_ms: u64) {
        if now_ms >= shard.no_sweep_before_ms {
            let before = shard.map.len();
            let mut first_idle_ms = u64::MAX;
            shard.map.retain(|(_, s)| {
                let at = self.algo.fresh_at_ms(s);
                first_idle_ms = first_idle_ms.min(at);
                at > now_ms
            });
            shard.evicted_idle += (before - shard.map.len()) as u64;
            if shard.map.len() < self.per_shard_max {
                return;
            }
            shard.no_sweep_before_ms = first_idle_ms.max(now_ms + 1);
        }
        let victim = shard
            .map
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|(_, s)| self.algo.fresh_at_ms(s))
            .map(|(k, s)| (k.clone(), self.algo.fresh_at_ms(s) <= now_ms));
        if let Some((key, idle)) = victim {
            let hash = self.hasher.hash_one(&*key);
            if let Ok(entry) = shard.map.find_entry(hash, |(k, _)| *k == key) {
                entry.remove();
            }
            if idle {
                shard.evicted_idle += 1;
            } else {
                shard.evicted_live += 1;
            }
        }
    }

    /// Drops every idle key (for a periodic maintenance task; never required for
    /// correctness or for the memory bound).
    pub fn purge_idle(&self) -> usize {
        let now = self.clock.now_ms();
        let mut dropped = 0;
        for shard in &self.shards {
            let mut shard = shard.lock();
            let before = shard.map.len();
            shard.map.retain(|(_, s)| self.algo.fresh_at_ms(s) > now);
            let n = before - shard.map.len();
            shard.evicted_idle += n as u64;
            dropped += n;
        }
        dropped
    }

    /// Keys tracked now and eviction counters.
    #[must_use]
    pub fn stats(&self) -> MemoryStats {
        let mut stats = MemoryStats::default();
        for shard in &self.shards {
            let shard = shard.lock();
            stats.keys += shard.map.len();
            stats.evicted_idle += shard.evicted_idle;
            stats.evicted_live += shard.evicted_live;
        }
        stats
    }

    /// The most keys this limiter will ever hold (`max_keys` rounded down to a multiple
    /// of the shard count).
    #[must_use]
    pub fn capacity_keys(&self) -> usize {
        self.per_shard_max * self.shards.len()
    }

    /// An estimate of the heap bytes held by the key maps, from their allocation sizes:
    /// per hash-table bucket one `(Box<str>, State)` slot plus one control byte (the
    /// `hashbrown` layout; buckets are `capacity · 8 / 7` rounded up to a power of
    /// two), plus each key's bytes and each state's own heap (sliding log entries).
    /// Allocator rounding and headers are not counted.
    #[must_use]
    pub fn approx_memory_bytes(&self) -> usize {
        let slot = size_of::<(Box<str>, A::State)>() + 1;
        let mut bytes = 0;
        for shard in &self.shards {
            let shard = shard.lock();
            let cap = shard.map.capacity();
            let buckets = if cap == 0 { 0 } else { (cap * 8 / 7).next_power_of_two() };
            bytes += buckets * slot;
            for (k, s) in shard.map.iter() {
                bytes += k.len() + self.algo.heap_bytes(s);
            }
        }
        bytes
    }
}

impl<A: Algorithm> RateLimiter for MemoryLimiter<A> {
    async fn check(&self, key: &str, cost: u64) -> Result<Decision, LimitError> {
        self.check_now(key, cost)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use girder_core::ManualClock;

    use super::*;
    use crate::{FixedWindow, Kind, TokenBucket};

    fn limiter(max_keys: usize, shards: usize) -> (MemoryLimiter<TokenBucket>, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        let algo = TokenBucket::new(10, 1_000, 10).unwrap();
        let config = MemoryConfig { max_keys, shards };
        (MemoryLimiter::new(algo, config, Arc::new(clock.clone())), clock)
    }

    #[test]
    fn the_key_count_never_exceeds_max_keys() {
        let (l, clock) = limiter(1_000, 8);
        assert_eq!(l.capacity_keys(), 1_000);
        for i in 0..10_000 {
            l.check_now(&format!("k{i}"), 1).unwrap();
            assert!(l.stats().keys <= 1_000);
            // 5 new keys per ms, each idle 100 ms after its request: about 500 live
            // keys at any time, half the bound.
            if i % 5 == 4 {
                clock.advance(Duration::from_millis(1));
            }
        }
        let stats = l.stats();
        assert_eq!(stats.keys as u64 + stats.evicted_idle + stats.evicted_live, 10_000);
        assert!(stats.evicted_idle >= 8_000, "{stats:?}");
        assert_eq!(stats.evicted_live, 0, "{stats:?}");
    }

    #[test]
    fn idle_keys_are_evicted_before_live_ones() {
        let (l, clock) = limiter(4, 1);
        for k in ["a", "b", "c"] {
            l.check_now(k, 1).unwrap();
        }
        // `a`, `b`, `c` refill in 100 ms; `hot` will not be idle for 1 s.
        clock.advance(Duration::from_millis(100));
        l.check_now("hot", 10).unwrap();
        for k in ["d", "e", "f"] {
            l.check_now(k, 1).unwrap();
        }
        let stats = l.stats();
        assert_eq!((stats.evicted_idle, stats.evicted_live), (3, 0), "{stats:?}");
        // `hot` kept its (empty) bucket.
        assert!(!l.check_now("hot", 1).unwrap().allowed);
    }

    #[test]
    fn a_shard_full_of_live_keys_evicts_the_one_closest_to_idle() {
        let (l, _clock) = limiter(2, 1);
        l.check_now("a", 1).unwrap(); // idle in 100 ms
        l.check_now("b", 5).unwrap(); // idle in 500 ms
        l.check_now("c", 1).unwrap();
        let stats = l.stats();
        assert_eq!((stats.keys, stats.evicted_live), (2, 1));
        assert_eq!(l.check_now("b", 1).unwrap().remaining, 4, "b kept");
    }

    #[test]
    fn bad_input_is_refused_before_any_state() {
        let (l, _clock) = limiter(10, 1);
        assert_eq!(l.check_now("k", 0), Err(LimitError::InvalidCost { cost: 0, max: 10 }));
        assert_eq!(l.check_now("k", 11), Err(LimitError::InvalidCost { cost: 11, max: 10 }));
        let long = "x".repeat(257);
        assert_eq!(l.check_now(&long, 1), Err(LimitError::KeyTooLong { len: 257 }));
        assert!(l.check_now(&"x".repeat(256), 1).is_ok());
        assert_eq!(l.stats().keys, 1);
    }

    #[test]
    fn bytes_per_key() {
        // Measured from the map's allocation (see `approx_memory_bytes`), 16-byte keys.
        let clock = Arc::new(ManualClock::new(0));
        let rule = Rule::new(Kind::FixedWindow, 10, 1_000);
        let any = MemoryLimiter::from_rule(&rule, MemoryConfig::default(), clock.clone()).unwrap();
        let fixed = MemoryLimiter::new(
            FixedWindow::new(10, 1_000).unwrap(),
            MemoryConfig::default(),
            clock,
        );
        for i in 0..50_000 {
            let key = format!("user:{i:011}");
            any.check_now(&key, 1).unwrap();
            fixed.check_now(&key, 1).unwrap();
        }
        let per_key_any = any.approx_memory_bytes() / 50_000;
        let per_key_fixed = fixed.approx_memory_bytes() / 50_000;
        eprintln!(
            "bytes per key (16-byte keys): AnyAlgorithm {per_key_any}, FixedWindow {per_key_fixed}"
        );
        // Slot 16 (key box) + state, + 1 control byte, at load 0.44..0.875, + 16 key bytes.
        assert!(per_key_fixed <= 2 * (16 + 16 + 1) + 16, "{per_key_fixed}");
        assert!(per_key_any <= 2 * (16 + 40 + 1) + 16, "{per_key_any}");
    }

    #[test]
    fn concurrent_checks_admit_exactly_the_budget() {
        // Eight threads race on one key (and on 100 others) at a fixed time: every
        // algorithm admits exactly its budget per key, no more, no less.
        for kind in Kind::ALL {
            let rule = Rule::new(kind, 50, 1_000);
            let clock = Arc::new(ManualClock::new(10_000));
            let l = MemoryLimiter::from_rule(&rule, MemoryConfig::default(), clock).unwrap();
            let admitted: u64 = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|t| {
                        let l = &l;
                        s.spawn(move || {
                            let mut hot = 0;
                            for i in 0..2_000 {
                                let key = if i % 2 == 0 {
                                    "hot".to_owned()
                                } else {
                                    format!("k{}", (i + t) % 100)
                                };
                                let d = l.check_now(&key, 1).unwrap();
                                hot += u64::from(d.allowed && key == "hot");
                            }
                            hot
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert_eq!(admitted, 50, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn the_trait_is_the_synchronous_check() {
        let (l, _clock) = limiter(10, 1);
        let d = RateLimiter::check(&l, "k", 3).await.unwrap();
        assert_eq!((d.allowed, d.remaining, d.limit), (true, 7, 10));
    }
}
