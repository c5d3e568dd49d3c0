//! Reservations in Redis: one hash per pool (`{prefix}{pool}` with the pool in
//! braces, so a pool's keys share a cluster slot), item → packed state, and one Lua
//! script per transition, all-or-nothing inside the script.
//!
//! Packed states: `A` (available), `R|until_ms|hold_id|holder` (reserved),
//! `S|hold_id|holder` (sold). Holders may contain `|`; they come last. A sorted set
//! `{prefix}expiring` indexes reserved items by deadline for the sweeper.

use std::sync::Arc;

use girder_core::Clock;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{
    ConfirmError, Hold, HoldError, ItemStatus, ReservationConfig, ReservationError,
    ReservationStore, Stored, check_add, check_confirm, check_hold, check_release, new_hold_id,
};
use crate::BackendError;

/// Shared by every script: decodes a packed state into kind, until_ms, hold_id, holder.
const PARSE: &str = r"
local function parse(v)
  if v == 'A' then return 'A' end
  local kind = string.sub(v, 1, 1)
  if kind == 'R' then
    local u, id, holder = string.match(v, '^R|(%d+)|([^|]*)|(.*)$')
    if u then return 'R', tonumber(u), id, holder end
  elseif kind == 'S' then
    local id, holder = string.match(v, '^S|([^|]*)|(.*)$')
    if id then return 'S', nil, id, holder end
  end
  return error('girder: corrupt reservation state ' .. v)
end
";

/// Adds items as available where absent. KEYS: hash. ARGV: items. Replies the count added.
const ADD: &str = r"
local n = 0
for i = 1, #ARGV do n = n + redis.call('HSETNX', KEYS[1], ARGV[i], 'A') end
return n
";

/// KEYS: hash, expiring. ARGV: now, until, hold_id, holder, member prefix, items….
/// Replies `{'ok', {}}`, `{'missing', items}` or `{'taken', items}`.
const HOLD: &str = r"
local now = tonumber(ARGV[1])
local missing, taken = {}, {}
for i = 6, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if not v then
    missing[#missing + 1] = ARGV[i]
  else
    local kind, u = parse(v)
    if kind == 'S' or (kind == 'R' and u > now) then taken[#taken + 1] = ARGV[i] end
  end
end
if #missing > 0 then return {'missing', missing} end
if #taken > 0 then return {'taken', taken} end
local packed = 'R|' .. ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4]
for i = 6, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], packed)
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5] .. ARGV[i])
end
return {'ok', {}}
";

/// KEYS: hash, expiring. ARGV: now, hold_id, member prefix, items….
/// Replies `{'ok'|'sold'|'expired', {}}` or `{'elsewhere', items}`; the same decision
/// as `decide_confirm`.
const CONFIRM: &str = r"
local now = tonumber(ARGV[1])
local all_sold, all_mine = true, true
local elsewhere, holders = {}, {}
for i = 4, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  local kind, u, id, holder
  if v then kind, u, id, holder = parse(v) end
  holders[i] = holder
  if not (kind == 'S' and id == ARGV[2]) then all_sold = false end
  if not (kind == 'R' and id == ARGV[2] and u > now) then all_mine = false end
  if (not v) or (kind == 'S' and id ~= ARGV[2]) or (kind == 'R' and id ~= ARGV[2] and u > now) then
    elsewhere[#elsewhere + 1] = ARGV[i]
  end
end
if all_sold then return {'sold', {}} end
if all_mine then
  for i = 4, #ARGV do
    redis.call('HSET', KEYS[1], ARGV[i], 'S|' .. ARGV[2] .. '|' .. holders[i])
    redis.call('ZREM', KEYS[2], ARGV[3] .. ARGV[i])
  end
  return {'ok', {}}
end
if #elsewhere > 0 then return {'elsewhere', elsewhere} end
return {'expired', {}}
";

/// KEYS: hash, expiring. ARGV: hold_id, member prefix, now, items…. Replies the count
/// released: items this hold still reserves, unexpired.
const RELEASE: &str = r"
local now = tonumber(ARGV[3])
local n = 0
for i = 4, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    local kind, u, id = parse(v)
    if kind == 'R' and id == ARGV[1] and u > now then
      redis.call('HSET', KEYS[1], ARGV[i], 'A')
      redis.call('ZREM', KEYS[2], ARGV[2] .. ARGV[i])
      n = n + 1
    end
  end
end
return n
";

/// KEYS: expiring. ARGV: now, max, key prefix. Replies the count reset.
/// Members are `len(pool):pool item`; the pool hashes are derived from them, so the
/// sweep (alone) needs a single Redis node, not a cluster.
const SWEEP: &str = r"
local now = tonumber(ARGV[1])
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local n = 0
for _, m in ipairs(members) do
  local len, rest = string.match(m, '^(%d+):(.*)$')
  if len then
    len = tonumber(len)
    local key = ARGV[3] .. '{' .. string.sub(rest, 1, len) .. '}'
    local item = string.sub(rest, len + 1)
    local v = redis.call('HGET', key, item)
    if v then
      local kind, u = parse(v)
      if kind == 'R' and u <= now then
        redis.call('HSET', key, item, 'A')
        n = n + 1
      end
    end
  end
  redis.call('ZREM', KEYS[1], m)
end
return n
";

/// A [`ReservationStore`] on Redis, one Lua script (one round trip) per transition.
///
/// Durability is Redis's: a sale survives a crash only as far as the deployment
/// persists writes (AOF with `appendfsync always` for a system of record).
///
/// [`ReservationStore::list`] reads the pool's whole hash and pages in process:
/// O(pool size) per page, which suits event-sized pools (thousands of seats).
/// [`ReservationStore::sweep`] derives pool keys inside its script, so it needs a
/// single Redis node (or Sentinel), not Redis Cluster; every other operation
/// touches one pool's keys only.
#[derive(Clone)]
pub struct RedisReservationStore {
    conn: ConnectionManager,
    key_prefix: String,
    config: ReservationConfig,
    clock: Arc<dyn Clock>,
    add: Script,
    hold: Script,
    confirm: Script,
    release: Script,
    sweep: Script,
}

impl std::fmt::Debug for RedisReservationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReservationStore")
            .field("key_prefix", &self.key_prefix)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisReservationStore {
    /// The default prefix of every key this store writes.
    pub const DEFAULT_PREFIX: &'static str = "girder:resv:";

    /// A store whose keys start with `key_prefix` (stores with different prefixes
    /// share nothing, sweeps included).
    #[must_use]
    pub fn new(
        conn: ConnectionManager,
        key_prefix: &str,
        config: ReservationConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let with_parse = |body: &str| Script::new(&format!("{PARSE}{body}"));
        Self {
            conn,
            key_prefix: key_prefix.to_owned(),
            config,
            clock,
            add: Script::new(ADD),
            hold: with_parse(HOLD),
            confirm: with_parse(CONFIRM),
            release: with_parse(RELEASE),
            sweep: with_parse(SWEEP),
        }
    }

    /// The hash holding `pool`'s items.
    fn pool_key(&self, pool: &str) -> String {
        format!("{}{{{pool}}}", self.key_prefix)
    }

    /// The sorted set of reserved items by deadline.
    fn expiring_key(&self) -> String {
        format!("{}expiring", self.key_prefix)
    }

    /// What precedes the item in a member of the expiring set: `len(pool):pool`.
    fn member_prefix(pool: &str) -> String {
        format!("{}:{pool}", pool.len())
    }
}

/// Decodes a packed state.
fn unpack(packed: &str) -> Result<Stored, String> {
    let corrupt = || format!("corrupt reservation state {packed:?}");
    if packed == "A" {
        return Ok(Stored::Available);
    }
    if let Some(rest) = packed.strip_prefix("R|") {
        let mut parts = rest.splitn(3, '|');
        let until_ms = parts.next().and_then(|u| u.parse().ok()).ok_or_else(corrupt)?;
        let hold_id = parts.next().ok_or_else(corrupt)?.to_owned();
        let holder = parts.next().ok_or_else(corrupt)?.to_owned();
        return Ok(Stored::Reserved { holder, hold_id, until_ms });
    }
    if let Some(rest) = packed.strip_prefix("S|") {
        let (hold_id, holder) = rest.split_once('|').ok_or_else(corrupt)?;
        return Ok(Stored::Sold { holder: holder.to_owned(), hold_id: hold_id.to_owned() });
    }
    Err(corrupt())
}

impl ReservationStore for RedisReservationStore {
    async fn add_items(&self, pool: &str, items: &[&str]) -> Result<usize, ReservationError> {
        check_add(&self.config, items)?;
        if items.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        let added: usize = self
            .add
            .key(self.pool_key(pool))
            .arg(items)
            .invoke_async(&mut conn)
            .await
            .map_err(BackendError::redis)?;
        Ok(added)
    }

    async fn hold(
        &self,
        pool: &str,
        items: &[&str],
        holder: &str,
        ttl_ms: u64,
    ) -> Result<Hold, HoldError> {
        let now_ms = self.clock.now_ms();
        let until_ms = check_hold(&self.config, items, ttl_ms, now_ms)?;
        let hold_id = new_hold_id();
        let mut conn = self.conn.clone();
        let (outcome, named): (String, Vec<String>) = self
            .hold
            .key(self.pool_key(pool))
            .key(self.expiring_key())
            .arg(now_ms)
            .arg(until_ms)
            .arg(&hold_id)
            .arg(holder)
            .arg(Self::member_prefix(pool))
            .arg(items)
            .invoke_async(&mut conn)
            .await
            .map_err(BackendError::redis)?;
        match outcome.as_str() {
            "ok" => Ok(Hold {
                pool: pool.to_owned(),
                items: items.iter().map(|i| (*i).to_owned()).collect(),
                holder: holder.to_owned(),
                hold_id,
                until_ms,
            }),
            "missing" => Err(HoldError::NotFound { items: named }),
            "taken" => Err(HoldError::Unavailable { items: named }),
            other => Err(BackendError::Unexpected(format!("hold script replied {other:?}")).into()),
        }
    }

    async fn confirm(&self, hold: &Hold) -> Result<(), ConfirmError> {
        check_confirm(&self.config, hold)?;
        let now_ms = self.clock.now_ms();
        let mut conn = self.conn.clone();
        let (outcome, named): (String, Vec<String>) = self
            .confirm
            .key(self.pool_key(&hold.pool))
            .key(self.expiring_key())
            .arg(now_ms)
            .arg(&hold.hold_id)
            .arg(Self::member_prefix(&hold.pool))
            .arg(&hold.items)
            .invoke_async(&mut conn)
            .await
            .map_err(BackendError::redis)?;
        match outcome.as_str() {
            "ok" | "sold" => Ok(()),
            "elsewhere" => Err(ConfirmError::NotHolder { items: named }),
            "expired" => Err(ConfirmError::Expired),
            other => {
                Err(BackendError::Unexpected(format!("confirm script replied {other:?}")).into())
            }
        }
    }

    async fn release(&self, hold: &Hold) -> Result<usize, ReservationError> {
        check_release(&self.config, hold)?;
        let now_ms = self.clock.now_ms();
        let mut conn = self.conn.clone();
        self.release
            .key(self.pool_key(&hold.pool))
            .key(self.expiring_key())
            .arg(&hold.hold_id)
            .arg(Self::member_prefix(&hold.pool))
            .arg(now_ms)
            .arg(&hold.items)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| ReservationError::Backend(BackendError::redis(e)))
    }

    async fn status(&self, pool: &str, item: &str) -> Result<ItemStatus, ReservationError> {
        let now_ms = self.clock.now_ms();
        let mut conn = self.conn.clone();
        let packed: Option<String> = redis::cmd("HGET")
            .arg(self.pool_key(pool))
            .arg(item)
            .query_async(&mut conn)
            .await
            .map_err(BackendError::redis)?;
        let packed = packed.ok_or(ReservationError::NotFound)?;
        Ok(unpack(&packed).map_err(BackendError::Unexpected)?.status(now_ms))
    }

    // Reads the whole pool hash and pages in process (see the type's docs).
    async fn list(
        &self,
        pool: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ItemStatus)>, ReservationError> {
        let now_ms = self.clock.now_ms();
        let limit = limit.min(self.config.max_page_items);
        let mut conn = self.conn.clone();
        let mut all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.pool_key(pool))
            .query_async(&mut conn)
            .await
            .map_err(BackendError::redis)?;
        all.retain(|(item, _)| after.is_none_or(|after| item.as_str() > after));
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all.into_iter()
            .take(limit)
            .map(|(item, packed)| {
                let status = unpack(&packed).map_err(BackendError::Unexpected)?.status(now_ms);
                Ok((item, status))
            })
            .collect()
    }

    async fn sweep(&self, max_batch: usize) -> Result<usize, ReservationError> {
        let now_ms = self.clock.now_ms();
        let max_batch = max_batch.min(self.config.max_sweep_batch);
        if max_batch == 0 {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        self.sweep
            .key(self.expiring_key())
            .arg(now_ms)
            .arg(max_batch)
            .arg(&self.key_prefix)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| ReservationError::Backend(BackendError::redis(e)))
    }
}
