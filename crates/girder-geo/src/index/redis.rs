//! The [`GeoIndex`] on Redis: one sorted set of geo members (`GEOADD`, `GEOSEARCH`),
//! a companion sorted set of TTL deadlines, and one Lua script per operation, so
//! every call is one atomic round trip and every instance sees the same members.
//!
//! Expiry is judged by the server's `TIME` inside the scripts, so instances with
//! skewed clocks agree on who has expired. Each call first deletes up to
//! `purge_per_call` expired members; a search that still finds expired members in
//! the set filters them out itself (then without `COUNT`, which would count them).
//!
//! Positions and distances are computed here from the scores Redis returns
//! (`WITHHASH`) with Redis's own arithmetic, so they carry every bit rather than
//! the 4 decimals `WITHDIST` prints; Redis's filter and these numbers agree because
//! they are the same formulas. Ties at a `COUNT` cut are settled by name as the
//! contract says: the script asks for one hit more than wanted and, if the cut falls
//! inside a group of equal distances, asks again for more.
//!
//! An upsert reads every member's state with two `ZMSCORE`s and writes with one
//! `GEOADD`, one `ZADD` and one `ZREM` (in slices of 2,400 members), not four calls
//! per member, so Redis 6.2 or later is needed.

use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock};

use girder_core::Clock;
use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Script, ScriptInvocation, Value};

use super::{
    Area, Center, GeoError, GeoIndex, Hit, Search, Update, Upserted, effective_order, finish_hits,
    validate_batch, validate_member, validate_search,
};
use crate::distance::Origin;
use crate::geohash::Score;
use crate::point::Point;

/// Shared by every script: `now` (ARGV[1], `''` = the server's `TIME`), `purge`
/// (deletes up to `limit` expired members) and `live` (whether a member is in the
/// set and unexpired). KEYS[1]: the geo set, KEYS[2]: the deadlines.
const PRELUDE: &str = r"
local geo, ttl = KEYS[1], KEYS[2]
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function purge(limit)
  if limit <= 0 then return end
  local dead = redis.call('ZRANGEBYSCORE', ttl, '-inf', now, 'LIMIT', 0, limit)
  for _, m in ipairs(dead) do
    redis.call('ZREM', geo, m)
    redis.call('ZREM', ttl, m)
  end
end
-- Calls `cmd key` with `args` in slices of whole groups of `width` (Lua's stack
-- bounds how many arguments one call can take).
local function chunked(cmd, key, args, width)
  local step = 2400 * width
  for from = 1, #args, step do
    local to = math.min(from + step - 1, #args)
    redis.call(cmd, key, unpack(args, from, to))
  end
end
-- ZMSCORE in slices: each member's score or false, in order.
local function mscore(key, members)
  local out = {}
  for from = 1, #members, 2400 do
    local to = math.min(from + 2399, #members)
    local part = redis.call('ZMSCORE', key, unpack(members, from, to))
    for j = 1, #part do out[from + j - 1] = part[j] end
  end
  return out
end
local function live(m)
  if not redis.call('ZSCORE', geo, m) then return false end
  local d = redis.call('ZSCORE', ttl, m)
  return (not d) or tonumber(d) > now
end
";

/// Upsert. ARGV: now, members_max, purge limit, then per update: lon, lat, member,
/// ttl_ms (`''` = none). Returns `{added, updated}`, or `{-1, 0}` when full.
/// Coordinates are passed to `GEOADD` as the client wrote them (Lua's `tonumber`
/// would round them to 14 digits).
static UPSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
purge(tonumber(ARGV[3]))
local max = tonumber(ARGV[2])
local n = (#ARGV - 3) / 4
-- Every member's state in two calls, not two per member.
local members = {}
for i = 0, n - 1 do members[i + 1] = ARGV[4 + 4 * i + 2] end
local scores, deadlines = mscore(geo, members), mscore(ttl, members)
local function was_live(i)
  if not scores[i] then return false end
  local d = deadlines[i]
  return (not d) or tonumber(d) > now
end
-- A member named twice is live from its first update on.
local seen, added, updated = {}, 0, 0
for i = 1, n do
  local m = members[i]
  if seen[m] or was_live(i) then updated = updated + 1 else added = added + 1 end
  seen[m] = true
end
if added > 0 then
  local live_count = redis.call('ZCARD', geo) - redis.call('ZCOUNT', ttl, '-inf', now)
  if live_count + added > max then return {-1, 0} end
end
-- The writes in a few calls; a member named twice ends as its last update says.
local positions, last = {}, {}
for i = 0, n - 1 do
  local b = 4 + 4 * i
  positions[#positions + 1] = ARGV[b]
  positions[#positions + 1] = ARGV[b + 1]
  positions[#positions + 1] = ARGV[b + 2]
  last[ARGV[b + 2]] = ARGV[b + 3]
end
chunked('GEOADD', geo, positions, 3)
local expiring, lasting = {}, {}
for m, t in pairs(last) do
  if t ~= '' then
    expiring[#expiring + 1] = string.format('%d', now + tonumber(t))
    expiring[#expiring + 1] = m
  else
    lasting[#lasting + 1] = m
  end
end
chunked('ZADD', ttl, expiring, 2)
chunked('ZREM', ttl, lasting, 1)
return {added, updated}
"
    ))
});

/// Remove. ARGV: now, purge limit, members. Returns how many were live.
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
local n = 0
for i = 3, #ARGV do
  local m = ARGV[i]
  if live(m) then n = n + 1 end
  redis.call('ZREM', geo, m)
  redis.call('ZREM', ttl, m)
end
purge(tonumber(ARGV[2]))
return n
"
    ))
});

/// Position. ARGV: now, member. Returns the member's score, or nil.
static POSITION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
if not live(ARGV[2]) then return false end
return redis.call('ZSCORE', geo, ARGV[2])
"
    ))
});

/// Length. ARGV: now. Returns the number of live members.
static LEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
return redis.call('ZCARD', geo) - redis.call('ZCOUNT', ttl, '-inf', now)
"
    ))
});

/// Search. ARGV: now, purge limit, centre member (`''` for a point), lon, lat,
/// `r` radius_m | `b` width_m height_m, order (`''`, `ASC`, `DESC`), count (`''`
/// for none), any (`1` or `''`). Returns `{0}` when the centre member is unknown,
/// else `{1, centre score or '', member, score, member, score, …}`.
static SEARCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
purge(tonumber(ARGV[2]))
local args
local center = ''
if ARGV[3] ~= '' then
  if not live(ARGV[3]) then return {0} end
  center = redis.call('ZSCORE', geo, ARGV[3])
  args = {'FROMMEMBER', ARGV[3]}
else
  args = {'FROMLONLAT', ARGV[4], ARGV[5]}
end
local i
if ARGV[6] == 'r' then
  table.insert(args, 'BYRADIUS'); table.insert(args, ARGV[7]); table.insert(args, 'm')
  i = 8
else
  table.insert(args, 'BYBOX'); table.insert(args, ARGV[7]); table.insert(args, ARGV[8])
  table.insert(args, 'm')
  i = 9
end
table.insert(args, 'WITHHASH')
local order, count, any = ARGV[i], ARGV[i + 1], ARGV[i + 2]
if order ~= '' then table.insert(args, order) end
-- Expired members still in the set would count towards COUNT: search without it.
local stale = redis.call('ZCOUNT', ttl, '-inf', now) > 0
if count ~= '' and not stale then
  table.insert(args, 'COUNT'); table.insert(args, count)
  if any == '1' then table.insert(args, 'ANY') end
end
local out = {1, center}
for _, hit in ipairs(redis.call('GEOSEARCH', geo, unpack(args))) do
  if (not stale) or live(hit[1]) then
    table.insert(out, hit[1]); table.insert(out, hit[2])
  end
end
return out
"
    ))
});

/// Where a [`RedisGeoIndex`] keeps its members and how it bounds its work.
#[derive(Clone)]
pub struct RedisIndexConfig {
    /// The geo sorted set's key; the deadlines live at `{key}:ttl`. Put a hash tag
    /// in it (`{drivers}`) to keep both keys on one Redis Cluster slot. Default
    /// `girder:geo`.
    pub key: String,
    /// The most live members; an upsert that would go beyond is refused whole
    /// ([`GeoError::Full`]). Default 10,000,000.
    pub members_max: usize,
    /// The most expired members one call deletes on the way. Default 128.
    pub purge_per_call: usize,
    /// Whose time judges TTLs: `None`, the Redis server's `TIME` (every instance
    /// agrees); a clock only for tests that move time by hand. Default `None`.
    pub clock: Option<Arc<dyn Clock>>,
}

impl Default for RedisIndexConfig {
    fn default() -> Self {
        Self {
            key: "girder:geo".to_owned(),
            members_max: 10_000_000,
            purge_per_call: 128,
            clock: None,
        }
    }
}

impl std::fmt::Debug for RedisIndexConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisIndexConfig")
            .field("key", &self.key)
            .field("members_max", &self.members_max)
            .field("purge_per_call", &self.purge_per_call)
            .field("clock", &self.clock.as_ref().map(|_| "manual"))
            .finish()
    }
}

/// A [`GeoIndex`] on a Redis sorted set.
///
/// Inherits the misses of Redis's `GEOSEARCH` listed in the module doc of
/// [`crate::index`]: members (and centres) exactly on latitude 85.05112878 or
/// longitude 180, areas reaching past a pole from within about 600 km of it, and
/// boxes thousands of kilometres wide far north or south.
#[derive(Clone)]
pub struct RedisGeoIndex {
    conn: ConnectionManager,
    config: RedisIndexConfig,
    ttl_key: String,
}

impl std::fmt::Debug for RedisGeoIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisGeoIndex").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The driver's error under [`GeoError::Backend`]: displayed as `redis`, with the
/// [`redis::RedisError`] as its source, so `girder_core::error::source_of` reaches it
/// (an `Arc<dyn Error>` itself cannot be downcast to what it holds).
#[derive(Debug, thiserror::Error)]
#[error("redis")]
struct RedisFailure(#[source] redis::RedisError);

fn backend(e: redis::RedisError) -> GeoError {
    GeoError::Backend(Arc::new(RedisFailure(e)))
}

fn unexpected(what: &str) -> GeoError {
    let e = redis::RedisError::from((
        redis::ErrorKind::TypeError,
        "unexpected reply from the geo index script",
        what.to_owned(),
    ));
    backend(e)
}

impl RedisGeoIndex {
    /// An index on `conn`.
    #[must_use]
    pub fn new(conn: ConnectionManager, config: RedisIndexConfig) -> Self {
        let ttl_key = format!("{}:ttl", config.key);
        Self { conn, config, ttl_key }
    }

    /// The geo sorted set's key (for `GEOSEARCH`, `GEOPOS`, … by hand).
    #[must_use]
    pub fn geo_key(&self) -> &str {
        &self.config.key
    }

    /// The deadlines' sorted set's key.
    #[must_use]
    pub fn ttl_key(&self) -> &str {
        &self.ttl_key
    }

    /// ARGV[1]: the clock's time, or `''` for the server's.
    fn now_arg(&self) -> String {
        self.config.clock.as_ref().map_or_else(String::new, |c| c.now_ms().to_string())
    }

    fn invocation<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut inv = script.key(&self.config.key);
        inv.key(&self.ttl_key).arg(self.now_arg());
        inv
    }

    /// Runs a script. `invoke_async` loads a missing script once; a `SCRIPT FLUSH`
    /// between that load and the retry surfaces NOSCRIPT again, so it is retried,
    /// boundedly.
    async fn run<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T, GeoError> {
        let mut attempts = 0;
        loop {
            let mut conn = self.conn.clone();
            match inv.invoke_async(&mut conn).await {
                Err(e) if e.kind() == redis::ErrorKind::NoScriptError && attempts < 3 => {
                    attempts += 1;
                }
                other => return other.map_err(backend),
            }
        }
    }

    /// One run of the search script asking Redis for at most `count` hits.
    async fn search_once(
        &self,
        query: &Search<'_>,
        count: Option<usize>,
    ) -> Result<Option<(Option<Point>, Vec<(String, Score)>)>, GeoError> {
        let mut inv = self.invocation(&SEARCH);
        inv.arg(self.config.purge_per_call);
        match query.center {
            Center::Member(m) => inv.arg(m).arg("").arg(""),
            Center::At(p) => inv.arg("").arg(p.lon()).arg(p.lat()),
        };
        match query.area {
            Area::Radius { radius_m } => inv.arg("r").arg(radius_m),
            Area::Box { width_m, height_m } => inv.arg("b").arg(width_m).arg(height_m),
        };
        let order = match query.order {
            None => "",
            Some(super::Order::Asc) => "ASC",
            Some(super::Order::Desc) => "DESC",
        };
        inv.arg(order);
        match count {
            Some(c) => inv.arg(c),
            None => inv.arg(""),
        };
        inv.arg(if query.any { "1" } else { "" });
        let reply: Vec<Value> = self.run(&inv).await?;
        let mut it = reply.into_iter();
        match it.next().map(|v| i64::from_redis_value(&v)) {
            Some(Ok(1)) => {}
            Some(Ok(0)) => return Ok(None),
            _ => return Err(unexpected("search status")),
        }
        let center = match it.next() {
            Some(Value::BulkString(b)) if b.is_empty() => None,
            Some(v) => Some(parse_score(&v)?.decode()),
            None => return Err(unexpected("search centre")),
        };
        let mut hits = Vec::new();
        while let (Some(m), Some(s)) = (it.next(), it.next()) {
            let member = String::from_redis_value(&m).map_err(backend)?;
            let raw = u64::from_redis_value(&s).map_err(backend)?;
            hits.push((member, Score::from_raw(raw)));
        }
        Ok(Some((center, hits)))
    }
}

/// A score replied as a string (`ZSCORE`: `%.17g` of the double) or an integer.
fn parse_score(v: &Value) -> Result<Score, GeoError> {
    if let Ok(raw) = u64::from_redis_value(v) {
        return Ok(Score::from_raw(raw));
    }
    let text = String::from_redis_value(v).map_err(backend)?;
    let x: f64 = text.parse().map_err(|_| unexpected("score"))?;
    if !(x.is_finite() && x >= 0.0 && x < 2f64.powi(64) && x.fract() == 0.0) {
        return Err(unexpected("score"));
    }
    // An integral double below 2^64: the conversion is exact.
    Ok(Score::from_raw(x as u64))
}

impl GeoIndex for RedisGeoIndex {
    async fn upsert(&self, batch: &[Update<'_>]) -> Result<Upserted, GeoError> {
        validate_batch(batch)?;
        if batch.is_empty() {
            return Ok(Upserted::default());
        }
        let mut inv = self.invocation(&UPSERT);
        inv.arg(self.config.members_max).arg(self.config.purge_per_call);
        for u in batch {
            inv.arg(u.point.lon()).arg(u.point.lat()).arg(u.member);
            match u.ttl_ms {
                Some(t) => inv.arg(t),
                None => inv.arg(""),
            };
        }
        let (added, updated): (i64, i64) = self.run(&inv).await?;
        if added < 0 {
            return Err(GeoError::Full { max: self.config.members_max });
        }
        let count = |n: i64| usize::try_from(n).map_err(|_| unexpected("upsert counts"));
        Ok(Upserted { added: count(added)?, updated: count(updated)? })
    }

    async fn remove(&self, members: &[&str]) -> Result<usize, GeoError> {
        for m in members {
            validate_member(m)?;
        }
        if members.is_empty() {
            return Ok(0);
        }
        let mut inv = self.invocation(&REMOVE);
        inv.arg(self.config.purge_per_call);
        for m in members {
            inv.arg(*m);
        }
        self.run(&inv).await
    }

    async fn position(&self, member: &str) -> Result<Option<Point>, GeoError> {
        validate_member(member)?;
        let mut inv = self.invocation(&POSITION);
        inv.arg(member);
        let reply: Value = self.run(&inv).await?;
        match reply {
            Value::Nil => Ok(None),
            v => Ok(Some(parse_score(&v)?.decode())),
        }
    }

    async fn search(&self, query: &Search<'_>) -> Result<Vec<Hit>, GeoError> {
        validate_search(query)?;
        let ordered_cut = effective_order(query).is_some() && !query.any;
        // One more than wanted, to see whether the cut splits a group of ties.
        // Redis reads COUNT as a signed 64-bit number.
        let most = usize::try_from(i64::MAX).unwrap_or(usize::MAX);
        let mut ask = query
            .count
            .map(|c| if ordered_cut { c.get().saturating_add(1) } else { c.get() }.min(most));
        loop {
            let Some((center, raw)) = self.search_once(query, ask).await? else {
                let Center::Member(m) = query.center else { return Err(unexpected("centre")) };
                return Err(GeoError::UnknownMember { member: m.to_owned() });
            };
            let (lat, lon) = match (query.center, center) {
                (Center::At(p), _) => (p.lat(), p.lon()),
                (Center::Member(_), Some(p)) => (p.lat(), p.lon()),
                (Center::Member(_), None) => return Err(unexpected("centre score")),
            };
            let origin = Origin::new(lat, lon);
            let got = raw.len();
            let mut hits: Vec<Hit> = raw
                .into_iter()
                .map(|(member, score)| {
                    let point = score.decode();
                    Hit {
                        member: Arc::from(member),
                        dist_m: origin.to(point.lat(), point.lon()),
                        point,
                    }
                })
                .collect();
            if let (Some(asked), Some(count), true) = (ask, query.count, ordered_cut)
                && got == asked
                && cut_splits_ties(&mut hits, query, count)
            {
                ask = Some(asked.saturating_mul(2).min(most));
                continue;
            }
            finish_hits(&mut hits, query);
            return Ok(hits);
        }
    }

    async fn len(&self) -> Result<usize, GeoError> {
        let n: i64 = self.run(&self.invocation(&LEN)).await?;
        usize::try_from(n).map_err(|_| unexpected("len"))
    }
}

/// Whether the hits beyond the first `count` (in the query's order) start with the
/// same distance as the last kept one: then Redis may have left out more of that
/// group, and which of them are kept must be decided by name over the whole group.
fn cut_splits_ties(hits: &mut [Hit], query: &Search<'_>, count: NonZeroUsize) -> bool {
    let n = count.get();
    if hits.len() <= n {
        return false;
    }
    let desc = matches!(effective_order(query), Some(super::Order::Desc));
    hits.sort_unstable_by(|a, b| {
        if desc { b.dist_m.total_cmp(&a.dist_m) } else { a.dist_m.total_cmp(&b.dist_m) }
    });
    hits[hits.len() - 1].dist_m == hits[n - 1].dist_m
}
