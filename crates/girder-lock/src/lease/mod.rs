//! TTL leases with fencing tokens ("Pattern: Distributed Locks with TTL", done safely).
//!
//! A lease is a lock that expires: if its holder dies, the key frees itself after
//! `ttl_ms` instead of staying stuck. [`LeaseStore`] is the backend trait;
//! [`MemoryLeaseStore`] always, `RedisLeaseStore` and `PostgresLeaseStore` behind the
//! features of those names, [`AnyLeaseStore`] to choose one at start-up. [`acquire`]
//! waits for a busy key with bounded, jittered backoff.
//!
//! # Why a TTL lock alone is unsafe
//!
//! Expiry is judged by the store, but the holder acts on its own schedule. A holder can
//! be paused *after* it checked that it holds the lock and *before* its write lands — a
//! stop-the-world GC, a page fault, a swapped-out process, a write stuck in a TCP
//! retransmit queue. Meanwhile its lease expires, a second client acquires the key and
//! writes; then the first wakes up and writes too, over the second's data. No amount of
//! care on the client side closes this window: checking "do I still hold it?" just moves
//! the pause to after the check.
//!
//! The fix is on the *storage* side. Every acquisition carries a fencing token that
//! strictly increases per key, and the storage that the lock protects remembers the
//! highest token it has seen and rejects writes carrying a lower one
//! ([`crate::fence`]). The woken first client presents an older token than the second
//! and its write is refused. The lease keeps clients from *working* at the same time
//! in the common case (efficiency); the fence keeps the *data* correct in every case.
//!
//! # Time
//!
//! Every backend takes the current time from the [`Clock`] it was given and stores
//! expiry as an absolute millisecond value; Redis and PostgreSQL receive "now" as an
//! argument of the script or statement. So "the store's clock" is the clock of the
//! instance making the call, and server instances sharing a store must have loosely
//! synchronised clocks (NTP): an instance whose clock runs ahead judges other holders'
//! leases expired early. Fencing is what keeps the data safe when they are not.
//! The same design lets the conformance suite drive every backend with a manual clock.
//!
//! A lease is live while `now_ms < expires_at_ms`: at exactly `expires_at_ms` it has
//! expired and the key can be acquired.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use girder_core::Clock;
use rand::Rng;
use thiserror::Error;

use crate::BackendError;

pub use memory::{MemoryLeaseConfig, MemoryLeaseStore};
#[cfg(feature = "postgres")]
pub use postgres::PostgresLeaseStore;
#[cfg(feature = "redis")]
pub use redis::{RedisLeaseConfig, RedisLeaseStore};

/// The longest lease one call may ask for: one day (86 400 000 ms).
///
/// Leases are meant to be renewed with [`LeaseStore::extend`] while work is in
/// progress; a lease for "forever" is a stuck lock waiting to happen.
pub const MAX_TTL_MS: u64 = 86_400_000;

/// The longest key accepted, in bytes (512).
pub const MAX_KEY_BYTES: usize = 512;

/// Why a lease operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The caller does not hold the lease any more: it expired, was released, or was
    /// taken over by another holder.
    #[error("not the holder of the lease")]
    NotHolder,
    /// [`acquire`] gave up after waiting its configured `max_wait_ms`.
    #[error("lease not acquired within {waited_ms} ms")]
    Timeout {
        /// How long the caller waited.
        waited_ms: u64,
    },
    /// The TTL is 0 or above [`MAX_TTL_MS`].
    #[error("lease ttl {ttl_ms} ms outside 1..={max} ms", max = MAX_TTL_MS)]
    InvalidTtl {
        /// The TTL asked for.
        ttl_ms: u64,
    },
    /// The key is empty, longer than [`MAX_KEY_BYTES`], or contains a NUL byte (which
    /// PostgreSQL `TEXT` cannot hold; refused everywhere so keys are portable).
    #[error("invalid lease key ({len} bytes): empty, over {max} bytes or contains NUL", max = MAX_KEY_BYTES)]
    InvalidKey {
        /// The key's length in bytes.
        len: usize,
    },
    /// The in-memory store holds `max_keys` live leases and cannot take a new key.
    #[error("lease store full ({max_keys} live keys)")]
    Full {
        /// The configured bound.
        max_keys: usize,
    },
    /// The [`AcquireConfig`] is unusable (the message says why).
    #[error("invalid acquire config: {0}")]
    InvalidConfig(&'static str),
    /// The clock reads a time the store cannot hold (beyond PostgreSQL's `BIGINT`
    /// milliseconds); nothing was sent.
    #[error("clock overflow: {at_ms} ms since the epoch does not fit the lease store")]
    ClockOverflow {
        /// The time (now, or now plus the TTL) that did not fit.
        at_ms: u64,
    },
    /// The backend failed (connection, query, unexpected data); the source says how.
    #[error("lease backend")]
    Backend(#[from] BackendError),
}

/// Who holds a lease: a random 128-bit id drawn afresh for every acquisition, so two
/// acquisitions by the same process are different holders.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holder(u128);

impl Holder {
    /// A fresh random holder id.
    #[must_use]
    pub fn random() -> Self {
        Self(rand::random::<u128>())
    }

    /// The id as a number.
    #[must_use]
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// Rebuilds a holder from [`Holder::as_u128`].
    #[must_use]
    pub fn from_u128(id: u128) -> Self {
        Self(id)
    }
}

impl fmt::Display for Holder {
    /// 32 lowercase hex digits (how Redis and PostgreSQL store it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Holder({self})")
    }
}

/// A granted lease: proof of holding `key` until `expires_at_ms`, and the fencing token
/// to present to the storage the lease protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    key: Arc<str>,
    holder: Holder,
    token: u64,
    expires_at_ms: u64,
}

impl Lease {
    pub(crate) fn new(key: Arc<str>, holder: Holder, token: u64, expires_at_ms: u64) -> Self {
        debug_assert!(token > 0, "fencing tokens start at 1");
        Self { key, holder, token, expires_at_ms }
    }

    /// The key this lease locks.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The holder id of this acquisition.
    #[must_use]
    pub fn holder(&self) -> Holder {
        self.holder
    }

    /// The fencing token: strictly greater than every token granted earlier for this
    /// key. Present it to the guarded storage with every write ([`crate::fence`]).
    #[must_use]
    pub fn token(&self) -> u64 {
        self.token
    }

    /// When the lease expires, in the store's clock (ms since the Unix epoch): the
    /// time read just before the request was sent plus the TTL, so it never exceeds
    /// the expiry the store recorded. Stop working well before it.
    #[must_use]
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    /// Whether the lease is still live at `now_ms` by its own expiry.
    #[must_use]
    pub fn is_live_at(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    pub(crate) fn with_expiry(&self, expires_at_ms: u64) -> Self {
        Self { expires_at_ms, ..self.clone() }
    }
}

/// A store of TTL leases with fencing tokens.
///
/// Guarantees, for every handle sharing the same backend (threads, processes, server
/// instances):
/// - **Mutual exclusion by the store's clock**: at any time at most one holder has an
///   unexpired lease on a key, where "unexpired" means `now_ms < expires_at_ms` with
///   `now_ms` read from the [`Clock`] of the instance making the call. With skewed
///   clocks two holders can each believe they hold the key; see the module docs.
/// - **Fencing tokens strictly increase per key** across all acquisitions, through
///   release, expiry, pruning and (for PostgreSQL, and Redis with AOF persistence)
///   restarts. Tokens are never reused; gaps are allowed.
/// - A holder's [`Lease::expires_at_ms`] never exceeds the expiry the store recorded.
///
/// Failures admitted: [`LeaseError::Backend`] when the store is unreachable — the
/// outcome of that call is then unknown (an acquire may have succeeded; its lease just
/// expires), [`LeaseError::InvalidKey`] / [`LeaseError::InvalidTtl`] for bad input, and
/// [`LeaseError::ClockOverflow`] for a clock beyond what the store can hold.
pub trait LeaseStore: Send + Sync {
    /// Acquires `key` for `ttl_ms` if no live lease holds it: `Ok(None)` when another
    /// holder has a live lease, otherwise a new lease with a fresh holder id and a token
    /// greater than every earlier token of the key. An expired lease is taken over.
    fn try_acquire(
        &self,
        key: &str,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<Option<Lease>, LeaseError>> + Send;

    /// Moves the expiry of a live `lease` to `now + ttl_ms` and returns the lease with
    /// the new expiry and the same token. [`LeaseError::NotHolder`] if the lease has
    /// expired (even if nobody took it over), was released or was taken over.
    fn extend(
        &self,
        lease: &Lease,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<Lease, LeaseError>> + Send;

    /// Releases a live `lease` so the key can be acquired at once.
    /// [`LeaseError::NotHolder`] if it had expired or was taken over; a release never
    /// removes another holder's lease.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), LeaseError>> + Send;
}

impl<S: LeaseStore + ?Sized> LeaseStore for Arc<S> {
    fn try_acquire(
        &self,
        key: &str,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<Option<Lease>, LeaseError>> + Send {
        (**self).try_acquire(key, ttl_ms)
    }

    fn extend(
        &self,
        lease: &Lease,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<Lease, LeaseError>> + Send {
        (**self).extend(lease, ttl_ms)
    }

    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), LeaseError>> + Send {
        (**self).release(lease)
    }
}

/// Any of the built-in backends, chosen at start-up (from configuration), without `dyn`.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyLeaseStore {
    /// The in-process store.
    Memory(MemoryLeaseStore),
    /// Leases in Redis.
    #[cfg(feature = "redis")]
    Redis(RedisLeaseStore),
    /// Leases in PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(PostgresLeaseStore),
}

impl LeaseStore for AnyLeaseStore {
    async fn try_acquire(&self, key: &str, ttl_ms: u64) -> Result<Option<Lease>, LeaseError> {
        match self {
            Self::Memory(s) => s.try_acquire(key, ttl_ms).await,
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.try_acquire(key, ttl_ms).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(s) => s.try_acquire(key, ttl_ms).await,
        }
    }

    async fn extend(&self, lease: &Lease, ttl_ms: u64) -> Result<Lease, LeaseError> {
        match self {
            Self::Memory(s) => s.extend(lease, ttl_ms).await,
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.extend(lease, ttl_ms).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(s) => s.extend(lease, ttl_ms).await,
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        match self {
            Self::Memory(s) => s.release(lease).await,
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.release(lease).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(s) => s.release(lease).await,
        }
    }
}

/// How [`acquire`] waits for a busy key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquireConfig {
    /// Give up with [`LeaseError::Timeout`] after this long (tokio time).
    pub max_wait_ms: u64,
    /// The first backoff ceiling; each retry waits a random time in
    /// `[backoff_min_ms, ceiling]` ("equal jitter" floor keeps retries bounded).
    pub backoff_min_ms: u64,
    /// The ceiling stops doubling here.
    pub backoff_max_ms: u64,
}

impl Default for AcquireConfig {
    fn default() -> Self {
        Self { max_wait_ms: 5_000, backoff_min_ms: 5, backoff_max_ms: 200 }
    }
}

impl AcquireConfig {
    fn validate(&self) -> Result<(), LeaseError> {
        if self.backoff_min_ms == 0 {
            return Err(LeaseError::InvalidConfig("backoff_min_ms must be at least 1"));
        }
        if self.backoff_max_ms < self.backoff_min_ms {
            return Err(LeaseError::InvalidConfig("backoff_max_ms below backoff_min_ms"));
        }
        Ok(())
    }
}

/// Acquires `key`, retrying [`LeaseStore::try_acquire`] with jittered exponential
/// backoff while another holder has it, for at most `config.max_wait_ms`.
///
/// Bounded: every retry sleeps at least `backoff_min_ms` (≥ 1) or up to the deadline,
/// so there are at most `max_wait_ms / backoff_min_ms + 1` attempts. Errors other than
/// "busy" are returned at once.
///
/// # Errors
/// [`LeaseError::Timeout`] when the deadline passes, [`LeaseError::InvalidConfig`] for
/// a config with `backoff_min_ms == 0` or `backoff_max_ms < backoff_min_ms`, and any
/// error of `try_acquire`.
pub async fn acquire<S: LeaseStore + ?Sized>(
    store: &S,
    key: &str,
    ttl_ms: u64,
    config: &AcquireConfig,
) -> Result<Lease, LeaseError> {
    config.validate()?;
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_millis(config.max_wait_ms);
    let mut ceiling_ms = config.backoff_min_ms;
    loop {
        if let Some(lease) = store.try_acquire(key, ttl_ms).await? {
            return Ok(lease);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let waited_ms =
                u64::try_from(now.duration_since(started).as_millis()).unwrap_or(u64::MAX);
            return Err(LeaseError::Timeout { waited_ms });
        }
        let backoff_ms = rand::rng().random_range(config.backoff_min_ms..=ceiling_ms);
        let pause = Duration::from_millis(backoff_ms).min(deadline - now);
        tokio::time::sleep(pause).await;
        ceiling_ms = ceiling_ms.saturating_mul(2).min(config.backoff_max_ms);
    }
}

/// Checks a key against the portable rules (non-empty, ≤ [`MAX_KEY_BYTES`], no NUL).
pub(crate) fn check_key(key: &str) -> Result<(), LeaseError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.as_bytes().contains(&0) {
        return Err(LeaseError::InvalidKey { len: key.len() });
    }
    Ok(())
}

/// Checks a TTL against `1..=MAX_TTL_MS`.
pub(crate) fn check_ttl(ttl_ms: u64) -> Result<(), LeaseError> {
    if ttl_ms == 0 || ttl_ms > MAX_TTL_MS {
        return Err(LeaseError::InvalidTtl { ttl_ms });
    }
    Ok(())
}

/// The clock every store uses unless told otherwise.
pub(crate) fn system_clock() -> Arc<dyn Clock> {
    Arc::new(girder_core::SystemClock)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A store that is busy for the first `busy` attempts.
    struct BusyFor {
        busy: u32,
        attempts: AtomicU32,
    }

    impl LeaseStore for BusyFor {
        async fn try_acquire(&self, key: &str, ttl_ms: u64) -> Result<Option<Lease>, LeaseError> {
            let n = self.attempts.fetch_add(1, Ordering::SeqCst);
            Ok((n >= self.busy).then(|| Lease::new(key.into(), Holder::random(), 1, ttl_ms)))
        }
        async fn extend(&self, _: &Lease, _: u64) -> Result<Lease, LeaseError> {
            Err(LeaseError::NotHolder)
        }
        async fn release(&self, _: &Lease) -> Result<(), LeaseError> {
            Err(LeaseError::NotHolder)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_retries_until_free() {
        let store = BusyFor { busy: 3, attempts: AtomicU32::new(0) };
        let lease = acquire(&store, "k", 10, &AcquireConfig::default()).await.unwrap();
        assert_eq!(lease.key(), "k");
        assert_eq!(store.attempts.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_times_out_after_max_wait_with_bounded_attempts() {
        let store = BusyFor { busy: u32::MAX, attempts: AtomicU32::new(0) };
        let config = AcquireConfig { max_wait_ms: 1_000, backoff_min_ms: 10, backoff_max_ms: 50 };
        let started = tokio::time::Instant::now();
        let err = acquire(&store, "k", 10, &config).await.unwrap_err();
        assert_eq!(err, LeaseError::Timeout { waited_ms: 1_000 });
        assert_eq!(started.elapsed(), Duration::from_millis(1_000));
        let attempts = store.attempts.load(Ordering::SeqCst);
        assert!((1_000 / 50..=1_000 / 10 + 1).contains(&attempts), "{attempts} attempts");
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_rejects_unbounded_configs() {
        let store = BusyFor { busy: u32::MAX, attempts: AtomicU32::new(0) };
        let zero = AcquireConfig { backoff_min_ms: 0, ..AcquireConfig::default() };
        assert!(matches!(acquire(&store, "k", 10, &zero).await, Err(LeaseError::InvalidConfig(_))));
        let inverted = AcquireConfig { backoff_min_ms: 10, backoff_max_ms: 5, max_wait_ms: 1 };
        assert!(matches!(
            acquire(&store, "k", 10, &inverted).await,
            Err(LeaseError::InvalidConfig(_))
        ));
        assert_eq!(store.attempts.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn keys_and_ttls_are_checked() {
        assert!(check_key("a").is_ok());
        assert!(check_key(&"x".repeat(MAX_KEY_BYTES)).is_ok());
        assert_eq!(check_key(""), Err(LeaseError::InvalidKey { len: 0 }));
        assert_eq!(check_key(&"x".repeat(513)), Err(LeaseError::InvalidKey { len: 513 }));
        assert_eq!(check_key("a\0b"), Err(LeaseError::InvalidKey { len: 3 }));
        assert!(check_ttl(1).is_ok() && check_ttl(MAX_TTL_MS).is_ok());
        assert_eq!(check_ttl(0), Err(LeaseError::InvalidTtl { ttl_ms: 0 }));
        assert_eq!(
            check_ttl(MAX_TTL_MS + 1),
            Err(LeaseError::InvalidTtl { ttl_ms: MAX_TTL_MS + 1 })
        );
    }

    #[test]
    fn holder_renders_as_32_hex_digits() {
        assert_eq!(Holder::from_u128(255).to_string(), format!("{:0>32}", "ff"));
        assert_eq!(Holder::from_u128(u128::MAX).to_string(), "f".repeat(32));
    }
}
