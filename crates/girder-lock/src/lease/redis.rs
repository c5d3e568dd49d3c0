//! Leases in Redis: one Lua script per operation, so every acquire, extend and release
//! is one atomic round trip shared by every server instance.

use std::sync::{Arc, LazyLock};

use girder_core::Clock;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{Holder, Lease, LeaseError, LeaseStore, check_key, check_ttl, system_clock};
use crate::BackendError;

/// Acquire. KEYS: lease, fence counter. ARGV: holder, now_ms, expires_at_ms, pexpire_ms.
/// Returns the new token, or 0 when a live lease holds the key.
///
/// The lease value is `holder:token:expires_at_ms`. Numbers are compared with
/// `tonumber` (exact for milliseconds since 1970 — below 2^53) and the token is written
/// with `%d` so it round-trips as the decimal the client sends back.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local exp = string.match(cur, ':(%d+)$')
  if exp and tonumber(exp) > tonumber(ARGV[2]) then return 0 end
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%d', token) .. ':' .. ARGV[3],
  'PX', ARGV[4])
return token
",
    )
});

/// Extend. KEYS: lease. ARGV: holder, token, now_ms, new expires_at_ms, pexpire_ms.
/// Returns 1 if the live lease of that holder and token was extended, else 0.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local h, t, e = string.match(cur, '^(%x+):(%d+):(%d+)$')
if h ~= ARGV[1] or t ~= ARGV[2] or tonumber(e) <= tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], h .. ':' .. t .. ':' .. ARGV[4], 'PX', ARGV[5])
return 1
",
    )
});

/// Release. KEYS: lease. ARGV: holder, token, now_ms.
/// Deletes the lease if it is that holder's (live or expired: an expired lease of the
/// same holder and token is dead anyway); returns 1 only if it was still live.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local h, t, e = string.match(cur, '^(%x+):(%d+):(%d+)$')
if h ~= ARGV[1] or t ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
if tonumber(e) > tonumber(ARGV[3]) then return 1 end
return 0
",
    )
});

/// Where and how a [`RedisLeaseStore`] keeps its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisLeaseConfig {
    /// Prefix of every Redis key: the lease of `k` is at `{prefix}l:{k}`, its fence
    /// counter at `{prefix}f:{k}`. Default `girder:lease:`.
    pub key_prefix: String,
    /// Added to the TTL for the Redis `PEXPIRE` of a lease key. That expiry only garbage
    /// collects abandoned keys; whether a lease is live is decided by the stored
    /// `expires_at_ms`, so the grace must exceed the clock skew between instances.
    /// Default 60 000.
    pub gc_grace_ms: u64,
}

impl Default for RedisLeaseConfig {
    fn default() -> Self {
        Self { key_prefix: "girder:lease:".to_owned(), gc_grace_ms: 60_000 }
    }
}

/// A [`LeaseStore`] in Redis.
///
/// Each key has a lease value (`holder:token:expires_at_ms`, with a Redis expiry of
/// TTL + grace for garbage collection) and a fence counter incremented by every
/// acquisition. The counter is never deleted and has no expiry — one small key per
/// lease key ever used — because forgetting it would restart tokens at 1. Tokens
/// survive a Redis restart only with persistence that keeps every write (AOF,
/// `appendfsync always`); a failover to a replica that missed writes can also hand a
/// key to two holders. Fencing keeps the data safe through both only if tokens never go
/// back, so run leases that guard data on a durable, single-primary Redis — or on
/// PostgreSQL. The two keys of one lease are not hash-tagged: Redis Cluster is not
/// supported.
#[derive(Clone)]
pub struct RedisLeaseStore {
    conn: ConnectionManager,
    clock: Arc<dyn Clock>,
    config: RedisLeaseConfig,
}

impl std::fmt::Debug for RedisLeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLeaseStore").field("config", &self.config).finish_non_exhaustive()
    }
}

impl RedisLeaseStore {
    /// A store on `conn` with the system clock.
    #[must_use]
    pub fn new(conn: ConnectionManager, config: RedisLeaseConfig) -> Self {
        Self::with_clock(conn, config, system_clock())
    }

    /// A store on `conn` judging expiry by `clock`.
    #[must_use]
    pub fn with_clock(
        conn: ConnectionManager,
        config: RedisLeaseConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { conn, clock, config }
    }

    /// The Redis key holding the lease of `key`.
    #[must_use]
    pub fn lease_key(&self, key: &str) -> String {
        format!("{}l:{key}", self.config.key_prefix)
    }

    /// The Redis key holding the fence counter of `key`.
    #[must_use]
    pub fn fence_key(&self, key: &str) -> String {
        format!("{}f:{key}", self.config.key_prefix)
    }

    fn pexpire_ms(&self, ttl_ms: u64) -> u64 {
        ttl_ms.saturating_add(self.config.gc_grace_ms)
    }
}

impl LeaseStore for RedisLeaseStore {
    async fn try_acquire(&self, key: &str, ttl_ms: u64) -> Result<Option<Lease>, LeaseError> {
        check_key(key)?;
        check_ttl(ttl_ms)?;
        let holder = Holder::random();
        let now = self.clock.now_ms();
        let expires_at_ms = now.saturating_add(ttl_ms);
        let mut conn = self.conn.clone();
        let token: i64 = ACQUIRE
            .key(self.lease_key(key))
            .key(self.fence_key(key))
            .arg(holder.to_string())
            .arg(now)
            .arg(expires_at_ms)
            .arg(self.pexpire_ms(ttl_ms))
            .invoke_async(&mut conn)
            .await
            .map_err(BackendError::redis)?;
        if token == 0 {
            return Ok(None);
        }
        let token = u64::try_from(token).map_err(|_| {
            BackendError::Unexpected(format!("fence counter {} holds {token}", self.fence_key(key)))
        })?;
        Ok(Some(Lease::new(Arc::from(key), holder, token, expires_at_ms)))
    }

    async fn extend(&self, lease: &Lease, ttl_ms: u64) -> Result<Lease, LeaseError> {
        check_ttl(ttl_ms)?;
        let now = self.clock.now_ms();
        let expires_at_ms = now.saturating_add(ttl_ms);
        let mut conn = self.conn.clone();
        let extended: i64 = EXTEND
            .key(self.lease_key(lease.key()))
            .arg(lease.holder().to_string())
            .arg(lease.token())
            .arg(now)
            .arg(expires_at_ms)
            .arg(self.pexpire_ms(ttl_ms))
            .invoke_async(&mut conn)
            .await
            .map_err(BackendError::redis)?;
        if extended == 1 {
            Ok(lease.with_expiry(expires_at_ms))
        } else {
            Err(LeaseError::NotHolder)
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let now = self.clock.now_ms();
        let mut conn = self.conn.clone();
        let released: i64 = RELEASE
            .key(self.lease_key(lease.key()))
            .arg(lease.holder().to_string())
            .arg(lease.token())
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(BackendError::redis)?;
        if released == 1 { Ok(()) } else { Err(LeaseError::NotHolder) }
    }
}
