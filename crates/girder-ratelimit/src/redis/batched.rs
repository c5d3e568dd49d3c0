//! Local batching ("local cache + periodic sync", from the Distributed Rate Limiter):
//! each instance admits against its own view of a shared fixed-window counter and
//! pushes its counts to Redis at most every `sync_interval_ms`, so a hot key costs one
//! round trip per interval instead of one per request.
//!
//! # Accuracy bound
//!
//! An instance admits a request of cost `c` locally iff
//! `global + pending + c ≤ limit` and `pending + c ≤ local_share`, where `global` is the
//! window's total as of its last sync and `pending` what it admitted since. A check
//! that finds the last sync `sync_interval_ms` old or more syncs first (in line, one
//! round trip: no background task). So when instance `i` admits, everything it has not
//! seen is what the other `N − 1` instances admitted since their last sync before
//! `i`'s — and since syncs of one instance are at least an interval apart and `i`'s view
//! is less than an interval old, that is at most two of their pending batches. Hence
//! per window:
//!
//! **admitted ≤ `limit + 2 · (N − 1) · local_share`**
//!
//! (plus what is admitted during one sync round trip). With `local_share = limit / N`
//! that is < 3 · `limit` in the worst case; the test `batched_overshoot_is_bounded`
//! measures the real overshoot of 4 instances under interleaved traffic. A failed sync
//! returns [`LimitError::Unavailable`] and keeps the pending count, so an instance cut off
//! from Redis never admits more than `local_share` unseen.
//!
//! Windows are cut by each instance's [`Clock`] (there is no server round trip per
//! request to read the server's): instances need NTP-synchronised clocks, and skew
//! moves window edges by the skew.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use girder_core::Clock;
use parking_lot::Mutex;

use super::invoke;
use crate::{Decision, Kind, LimitError, RateLimiter, Rule, RuleError, check_input};

static SYNC: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("batched.lua")));

/// How a [`BatchedLimiter`] shares a fixed-window limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchedConfig {
    /// Prefix of the Redis counters: `{key_prefix}{key}:{window_start_ms}`.
    pub key_prefix: String,
    /// The cost admitted per window across all instances (before the overshoot bound).
    pub limit: u64,
    /// The window, in milliseconds (aligned to the epoch).
    pub period_ms: u64,
    /// The most this instance admits between two syncs (≥ 1); `limit / instances` is
    /// the usual choice. The overshoot bound grows with it.
    pub local_share: u64,
    /// How old the local view may get before a check syncs first.
    pub sync_interval_ms: u64,
    /// The most keys tracked locally; beyond it, a new key is decided directly in Redis
    /// (exactly, one round trip) until room frees up.
    pub max_keys: usize,
}

impl Default for BatchedConfig {
    fn default() -> Self {
        Self {
            key_prefix: "girder:rlb:".to_owned(),
            limit: 100,
            period_ms: 1_000,
            local_share: 25,
            sync_interval_ms: 50,
            max_keys: 100_000,
        }
    }
}

struct Entry {
    window_start_ms: u64,
    /// The window's shared total at the last sync (this instance's flushed counts
    /// included).
    global: u64,
    /// Admitted here since the last sync (not yet in Redis).
    pending: u64,
    /// When the last successful sync was started, `None` before the first.
    synced_at_ms: Option<u64>,
    /// A sync of this entry is in flight.
    syncing: bool,
}

/// A fixed-window [`RateLimiter`] that admits locally and syncs to Redis periodically.
pub struct BatchedLimiter {
    conn: ConnectionManager,
    clock: Arc<dyn Clock>,
    config: BatchedConfig,
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

impl std::fmt::Debug for BatchedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchedLimiter").field("config", &self.config).finish_non_exhaustive()
    }
}

/// What phase one of a check decided to do.
enum Step {
    /// Flush this much pending and refresh the view.
    Sync(u64),
    /// The view is fresh enough.
    Local,
    /// No room in the local map: decide in Redis.
    Direct,
}

impl BatchedLimiter {
    /// A batched limiter on `conn`, cutting windows by `clock`.
    ///
    /// # Errors
    /// [`RuleError`] for a `limit` / `period_ms` a fixed window would refuse, and
    /// [`RuleError::Burst`] for a `local_share` of 0.
    pub fn new(
        conn: ConnectionManager,
        config: BatchedConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RuleError> {
        Rule::new(Kind::FixedWindow, config.limit, config.period_ms).validate()?;
        if config.local_share == 0 {
            return Err(RuleError::Burst { burst: 0 });
        }
        Ok(Self { conn, clock, config, entries: Mutex::new(HashMap::new()) })
    }

    fn counter_key(&self, key: &str, window_start_ms: u64) -> String {
        format!("{}{key}:{window_start_ms}", self.config.key_prefix)
    }

    async fn sync(
        &self,
        key: &str,
        window_start_ms: u64,
        add: u64,
        admit: bool,
    ) -> Result<(bool, u64), LimitError> {
        let mut invocation = SYNC.key(self.counter_key(key, window_start_ms));
        invocation
            .arg(add)
            .arg(self.config.limit)
            .arg(if admit { "admit" } else { "sync" })
            .arg(self.config.period_ms.saturating_mul(2).max(10_000));
        let (added, total): (i64, i64) = invoke(&invocation, &self.conn).await?;
        Ok((added == 1, u64::try_from(total).unwrap_or(0)))
    }

    /// Phase one: find or make the key's entry, and decide whether to sync.
    fn prepare(&self, key: &str, window_start_ms: u64, now_ms: u64) -> Step {
        let mut entries = self.entries.lock();
        if !entries.contains_key(key) {
            if entries.len() >= self.config.max_keys {
                // Entries of past windows are worthless; idle ones cost a sync to rebuild.
                entries.retain(|_, e| {
                    e.syncing || (e.window_start_ms == window_start_ms && e.pending > 0)
                });
                if entries.len() >= self.config.max_keys {
                    return Step::Direct;
                }
            }
            let fresh = Entry {
                window_start_ms,
                global: 0,
                pending: 0,
                synced_at_ms: None,
                syncing: false,
            };
            entries.insert(Box::from(key), fresh);
        }
        let Some(e) = entries.get_mut(key) else { return Step::Direct };
        if e.window_start_ms != window_start_ms && !e.syncing {
            *e = Entry {
                window_start_ms,
                global: 0,
                pending: 0,
                synced_at_ms: None,
                syncing: false,
            };
        }
        let stale =
            e.synced_at_ms.is_none_or(|t| now_ms.saturating_sub(t) >= self.config.sync_interval_ms);
        if stale && !e.syncing && e.window_start_ms == window_start_ms {
            e.syncing = true;
            Step::Sync(std::mem::take(&mut e.pending))
        } else {
            Step::Local
        }
    }

    fn decide_local(&self, key: &str, cost: u64, window_start_ms: u64, now_ms: u64) -> Decision {
        let (limit, share) = (self.config.limit, self.config.local_share);
        let to_end = window_start_ms + self.config.period_ms - now_ms;
        let mut entries = self.entries.lock();
        let Some(e) = entries.get_mut(key).filter(|e| e.window_start_ms == window_start_ms) else {
            // Evicted or rolled over meanwhile: refuse this once rather than guess.
            return Decision {
                allowed: false,
                remaining: 0,
                retry_after_ms: 1,
                reset_after_ms: to_end,
                limit,
            };
        };
        let seen = e.global + e.pending;
        let fits_global = seen + cost <= limit;
        let fits_share = e.pending + cost <= share;
        let allowed = fits_global && fits_share;
        if allowed {
            e.pending += cost;
        }
        let remaining =
            limit.saturating_sub(e.global + e.pending).min(share.saturating_sub(e.pending));
        let retry_after_ms = if allowed {
            0
        } else if !fits_global {
            to_end
        } else {
            let next_sync = e.synced_at_ms.map_or(now_ms, |t| t + self.config.sync_interval_ms);
            next_sync.saturating_sub(now_ms).clamp(1, to_end)
        };
        Decision { allowed, remaining, retry_after_ms, reset_after_ms: to_end, limit }
    }
}

impl RateLimiter for BatchedLimiter {
    async fn check(&self, key: &str, cost: u64) -> Result<Decision, LimitError> {
        check_input(key, cost, self.config.limit.min(self.config.local_share))?;
        let now = self.clock.now_ms();
        let window_start_ms = now - now % self.config.period_ms;
        match self.prepare(key, window_start_ms, now) {
            Step::Local => {}
            Step::Sync(flush) => {
                let result = self.sync(key, window_start_ms, flush, false).await;
                let mut entries = self.entries.lock();
                if let Some(e) = entries.get_mut(key) {
                    e.syncing = false;
                    if e.window_start_ms == window_start_ms {
                        match &result {
                            Ok((_, total)) => {
                                e.global = e.global.max(*total);
                                e.synced_at_ms = Some(now);
                            }
                            Err(_) => e.pending += flush,
                        }
                    }
                }
                result?;
            }
            Step::Direct => {
                let (added, total) = self.sync(key, window_start_ms, cost, true).await?;
                let to_end = window_start_ms + self.config.period_ms - now;
                return Ok(Decision {
                    allowed: added,
                    remaining: self.config.limit.saturating_sub(total),
                    retry_after_ms: if added { 0 } else { to_end },
                    reset_after_ms: to_end,
                    limit: self.config.limit,
                });
            }
        }
        Ok(self.decide_local(key, cost, window_start_ms, now))
    }
}
