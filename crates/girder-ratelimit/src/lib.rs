//! Rate limiting ("Pattern: Token Bucket for Rate Limiting", and the "Distributed Rate
//! Limiter" system): five algorithms, one trait, an in-process backend and a Redis one.
//!
//! **The problem.** One client must not take more than its share of a service: at most
//! `limit` units of work per `period_ms`, decided per key (user, IP, endpoint) in
//! nanoseconds in process, or in one Redis round trip when many server instances share
//! the budget.
//!
//! **The guarantee.** Every algorithm answers [`RateLimiter::check`] with a [`Decision`]
//! and has a documented, tested bound on what it admits:
//!
//! | algorithm | state per key | admitted in any span of Δ ms |
//! |---|---|---|
//! | [`TokenBucket`] | 16 B | ≤ `burst + ⌊limit·Δ/period⌋` |
//! | [`Gcra`] | 16 B | the same decisions as the token bucket, exactly |
//! | [`FixedWindow`] | 16 B | ≤ `limit` per aligned window, but **2·`limit`** across one edge (Δ = 1 ms) |
//! | [`SlidingLog`] | ≤ 16 B · min(`limit`, `period_ms`) | ≤ `limit` in every window of `period_ms` (exact) |
//! | [`SlidingWindow`] | 24 B | ≤ `limit·(1 + Δ/period)` for Δ < `period_ms` (an approximation) |
//!
//! **The trade-off.** Exactness costs memory (the sliding log keeps every admission);
//! the counters are O(1) but either burst at window edges (fixed window) or approximate
//! (sliding window counter). The token bucket / GCRA is the usual answer: O(1), exact,
//! with an explicit burst. Going distributed costs one Redis round trip per decision
//! (`RedisLimiter`, feature `redis`; with `coalescing`, concurrent checks share one
//! script call, exactly as if made one by one) or accuracy (`BatchedLimiter`: local
//! admission against a per-instance share, synced every `sync_interval_ms`).
//!
//! ```
//! use std::sync::Arc;
//! use girder_core::ManualClock;
//! use girder_ratelimit::{Kind, MemoryConfig, MemoryLimiter, Rule};
//!
//! let clock = Arc::new(ManualClock::new(1_000));
//! // 10 requests per second, bursts of up to 20.
//! let rule = Rule::new(Kind::TokenBucket, 10, 1_000).with_burst(20);
//! let limiter = MemoryLimiter::from_rule(&rule, MemoryConfig::default(), clock).unwrap();
//! let d = limiter.check_now("user:42", 1).unwrap();
//! assert!(d.allowed);
//! assert_eq!(d.remaining, 19);
//! ```
//!
//! Measured (criterion, `cargo bench -p girder-bench --bench ratelimit`; details in
//! the crate's README.md): a hot-key GCRA decision takes ~24 ns with [`CoarseClock`]
//! (governor's keyed limiter: ~45 ns), ~61 ns with `SystemClock` (whose read alone is
//! ~28 ns); a Redis decision is one round trip.
//!
//! Time comes from `girder_core::Clock` in process (tests move a manual clock) and from
//! the Redis server's `TIME` in Redis, so client clock skew cannot matter there. For
//! speed in process, use [`CoarseClock`]: girder-core's one coarse clock of the process
//! (girder-cache reads the same one), a relaxed atomic load refreshed every millisecond
//! by one shared thread. A lagging clock makes every limiter stricter, never looser.
//!
//! Arithmetic is integer everywhere (scaled by `period_ms` where a rate is fractional),
//! so the Lua scripts, which compute in doubles, are exact: [`Rule`] validation keeps
//! every product below 2^50.

mod algorithm;
mod backend;
mod fixed_window;
mod gcra;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod rule;
mod sliding_log;
mod sliding_window;
mod token_bucket;

use std::future::Future;
use std::sync::Arc;

use thiserror::Error;

#[cfg(feature = "redis")]
pub use crate::redis::{
    BatchedConfig, BatchedLimiter, Coalescing, CoalescingStats, RedisConfig, RedisLimiter,
};
pub use algorithm::{Algorithm, AnyAlgorithm, AnyState};
pub use backend::{BackendError, UnavailableError};
pub use fixed_window::{FixedWindow, FixedWindowState};
pub use gcra::{Gcra, GcraState};
/// The process's one coarse clock, shared with girder-cache; re-exported so code that
/// named it here keeps compiling.
pub use girder_core::CoarseClock;
pub use memory::{MemoryConfig, MemoryLimiter, MemoryStats};
pub use rule::{
    Kind, MAX_LIMIT, MAX_PERIOD_MS, MAX_PRODUCT, MAX_SLIDING_LOG_LIMIT, Rule, RuleError,
};
pub use sliding_log::{SlidingLog, SlidingLogState};
pub use sliding_window::{SlidingWindow, SlidingWindowState};
pub use token_bucket::{TokenBucket, TokenBucketState};

/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// The answer to one [`RateLimiter::check`]: whether the request may proceed, and the
/// numbers an HTTP layer turns into `RateLimit-*` / `Retry-After` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Whether the request is admitted (and its cost consumed).
    pub allowed: bool,
    /// How many more requests of cost 1 would be admitted right now, after this one.
    pub remaining: u64,
    /// When denied: how long until the same request would be admitted if nothing else
    /// arrives (0 when allowed).
    pub retry_after_ms: u64,
    /// How long until the key's state is as if it had never been seen (bucket full,
    /// windows empty): the key's idle expiry.
    pub reset_after_ms: u64,
    /// The most cost ever admitted at once: `burst` for the token bucket and GCRA,
    /// `limit` for the window algorithms.
    pub limit: u64,
}

/// Why a check failed (as opposed to being denied, which is an `Ok` [`Decision`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The cost is 0 or more than the rule can ever admit at once ([`Decision::limit`]):
    /// such a request would be denied forever, which is a caller bug, not a rate.
    #[error("invalid cost {cost}: must be in 1..={max}")]
    InvalidCost {
        /// The cost asked for.
        cost: u64,
        /// The largest cost the rule admits.
        max: u64,
    },
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("rate-limit key of {len} bytes is longer than {max} bytes", max = MAX_KEY_BYTES)]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// The backend answered, but not as expected (script error, corrupt state); the
    /// source says how.
    #[error("rate-limit backend")]
    Backend(#[from] BackendError),
    /// The backend cannot be reached (connection refused, dropped, timed out), or too
    /// many checks already wait for it. Whether to fail open or closed is the caller's
    /// policy; the outcome of the call is unknown. The source says why.
    #[error("rate-limit backend unavailable")]
    Unavailable(#[from] UnavailableError),
}

/// A rate limiter: decides, per key, whether a request of some cost fits the budget.
///
/// Guarantee: every admission is counted before `check` returns, and the admitted cost
/// per key stays within the bound of the algorithm (see the crate docs), for every
/// handle sharing the same backend. A denied request consumes nothing.
///
/// Failures admitted: [`LimitError::InvalidCost`] and [`LimitError::KeyTooLong`] for bad
/// input (checked before any backend is touched), [`LimitError::Unavailable`] and
/// [`LimitError::Backend`] for distributed backends; the in-process backend never fails
/// otherwise.
pub trait RateLimiter: Send + Sync {
    /// Checks `cost` units against `key`'s budget and consumes them if admitted.
    fn check(
        &self,
        key: &str,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, LimitError>> + Send;
}

impl<L: RateLimiter + ?Sized> RateLimiter for Arc<L> {
    fn check(
        &self,
        key: &str,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, LimitError>> + Send {
        (**self).check(key, cost)
    }
}

/// Checks a key and a cost against the portable rules.
pub(crate) fn check_input(key: &str, cost: u64, max_cost: u64) -> Result<(), LimitError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(LimitError::KeyTooLong { len: key.len() });
    }
    if cost == 0 || cost > max_cost {
        return Err(LimitError::InvalidCost { cost, max: max_cost });
    }
    Ok(())
}

/// `⌈a / b⌉` for `b > 0`.
pub(crate) fn ceil_div(a: u64, b: u64) -> u64 {
    debug_assert!(b > 0);
    a.div_ceil(b)
}
