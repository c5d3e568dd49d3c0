//! The shared layer behind L1: a byte store with TTLs, plus the broadcast channel that
//! carries invalidations between cache instances ("Pattern: Multi-Layer Caching",
//! write-around invalidation across instances).
//!
//! [`L2Store`] is the trait; [`MemoryL2`] implements it in process (instances sharing
//! one `MemoryL2` behave like processes sharing one Redis), `RedisL2` (feature
//! `redis`) over Redis `SET … PX` and pub/sub, and [`NoL2`] turns the layer off.
//! Every implementation passes the conformance suite in `girder-testkit::cache`.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::future::Future;
use std::sync::Arc;

use thiserror::Error;

pub use memory::{MemoryL2, MemoryL2Config};
#[cfg(feature = "redis")]
pub use redis::{RedisL2, RedisL2Config};

/// Why an L2 call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum L2Error {
    /// The backend failed: connection refused or lost, a command error, an unexpected
    /// reply. The source says which.
    #[error("L2 backend")]
    Backend(#[from] L2BackendError),
    /// The call did not finish within the cache's `l2_timeout_ms`.
    #[error("L2 call timed out after {after_ms} ms")]
    Timeout {
        /// The bound that was exceeded.
        after_ms: u64,
    },
}

/// What an L2 backend failed with: the driver's own error, when there is one, is the
/// source.
///
/// Driver errors are held in an `Arc` so [`L2Error`] stays `Clone`; equality is
/// identity for them (a driver error equals only itself and its clones).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum L2BackendError {
    /// Redis failed: connection refused or lost, a command error, an invalid URL.
    #[cfg(feature = "redis")]
    Redis(Arc<::redis::RedisError>),
    /// A [`MemoryL2`] was made unavailable ([`MemoryL2::set_available`], fault
    /// injection).
    MadeUnavailable,
}

#[cfg(feature = "redis")]
impl From<::redis::RedisError> for L2BackendError {
    fn from(err: ::redis::RedisError) -> Self {
        Self::Redis(Arc::new(err))
    }
}

impl std::fmt::Display for L2BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The driver's message is the source's, not repeated here.
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(_) => f.write_str("redis"),
            Self::MadeUnavailable => f.write_str("memory L2 made unavailable"),
        }
    }
}

impl std::error::Error for L2BackendError {
    /// The driver's error itself (not its `Arc`), so it can be downcast.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(err) => Some(&**err),
            Self::MadeUnavailable => None,
        }
    }
}

impl PartialEq for L2BackendError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            #[cfg(feature = "redis")]
            (Self::Redis(a), Self::Redis(b)) => Arc::ptr_eq(a, b),
            (Self::MadeUnavailable, Self::MadeUnavailable) => true,
            // Without the `redis` feature `MadeUnavailable` is the only variant.
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

impl Eq for L2BackendError {}

/// A message to publish on a channel along with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notice<'a> {
    /// The channel every instance of the cache listens on.
    pub channel: &'a str,
    /// The message (the cache sends `"{instance} {key}"`).
    pub message: &'a str,
}

/// What a listener hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenEvent<'a> {
    /// The subscription is (re)established. Anything published while it was down was
    /// missed, so a cache clears its L1 on this event.
    Subscribed,
    /// A message published on the channel (by any instance, this one included).
    Message(&'a str),
    /// The subscription is down; the listener is reconnecting.
    Lost,
}

/// A shared byte store with per-entry TTLs and a broadcast channel.
///
/// Guarantees every implementation gives (checked by the conformance suite):
/// - `get` returns the bytes of the last `write` or successful `fill` of a key until
///   its TTL passes, then `None`.
/// - `fill` stores only if the key is absent (set-if-not-exists) and says whether it
///   stored: concurrent fills of one key store exactly one value, and a fill never
///   overwrites a write or a tombstone.
/// - `write` stores unconditionally, then publishes its notice; a listener subscribed
///   before the write returns hears the notice after the new value is visible.
/// - `listen` runs until its future is dropped, reconnecting by itself, and reports
///   [`ListenEvent::Subscribed`] after every (re)subscription.
///
/// Failures it admits: any call can fail or be slow (the cache bounds each with
/// `l2_timeout_ms` and degrades to L1 + loader); messages published while a listener
/// is disconnected are lost (hence the resync on `Subscribed`).
pub trait L2Store: Send + Sync + 'static {
    /// Whether this is a real layer. [`NoL2`] says `false` and the cache then skips
    /// encoding, L2 round trips and the listener altogether.
    const ENABLED: bool = true;

    /// The bytes stored at `key`, or `None` if absent or expired.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, L2Error>> + Send;

    /// Stores `value` at `key` for `ttl_ms` only if `key` is absent; `true` if stored.
    fn fill(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
    ) -> impl Future<Output = Result<bool, L2Error>> + Send;

    /// Stores `value` at `key` for `ttl_ms`, replacing anything there, then publishes
    /// `notice` (in one round trip where the backend allows).
    fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
        notice: Notice<'_>,
    ) -> impl Future<Output = Result<(), L2Error>> + Send;

    /// Subscribes to `channel` and reports what it hears to `on_event`, forever:
    /// reconnects after failures. Cancel by dropping the future.
    fn listen(
        &self,
        channel: &str,
        on_event: &(dyn Fn(ListenEvent<'_>) + Send + Sync),
    ) -> impl Future<Output = ()> + Send;
}

/// No L2: the cache is L1 + loader only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoL2;

impl L2Store for NoL2 {
    const ENABLED: bool = false;

    async fn get(&self, _key: &str) -> Result<Option<Vec<u8>>, L2Error> {
        Ok(None)
    }

    async fn fill(&self, _key: &str, _value: &[u8], _ttl_ms: u64) -> Result<bool, L2Error> {
        Ok(false)
    }

    async fn write(
        &self,
        _key: &str,
        _value: &[u8],
        _ttl_ms: u64,
        _notice: Notice<'_>,
    ) -> Result<(), L2Error> {
        Ok(())
    }

    async fn listen(&self, _channel: &str, _on_event: &(dyn Fn(ListenEvent<'_>) + Send + Sync)) {
        std::future::pending::<()>().await;
    }
}

impl<S: L2Store> L2Store for Arc<S> {
    const ENABLED: bool = S::ENABLED;

    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, L2Error>> + Send {
        (**self).get(key)
    }

    fn fill(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
    ) -> impl Future<Output = Result<bool, L2Error>> + Send {
        (**self).fill(key, value, ttl_ms)
    }

    fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
        notice: Notice<'_>,
    ) -> impl Future<Output = Result<(), L2Error>> + Send {
        (**self).write(key, value, ttl_ms, notice)
    }

    fn listen(
        &self,
        channel: &str,
        on_event: &(dyn Fn(ListenEvent<'_>) + Send + Sync),
    ) -> impl Future<Output = ()> + Send {
        (**self).listen(channel, on_event)
    }
}
