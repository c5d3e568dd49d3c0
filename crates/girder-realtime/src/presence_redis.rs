//! Presence in Redis (feature `redis`), shared by every instance. Time is Redis's own
//! (`TIME`), so instances with skewed clocks agree on whose lease ran out.
//!
//! Keys, all with the room as hash tag so a room's keys share a cluster slot:
//! `<prefix>:{room}` (sorted set: user → the latest lease end of their devices) and
//! `<prefix>:{room}:<user>` (sorted set: device → lease end); `<prefix>:seen` (hash:
//! user → last-seen ms). Each operation is one script, so a heartbeat's "came online"
//! and a leave's "went offline" are decided atomically even when several instances
//! beat for one user at once. Idle keys expire on their own.

use redis::Script;
use redis::aio::ConnectionManager;

use crate::presence::{Change, Online, PresenceError, PresenceStore, check_id};

const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local ukey = KEYS[1] .. ':' .. ARGV[1]
redis.call('ZREMRANGEBYSCORE', ukey, '-inf', now)
local before = redis.call('ZCARD', ukey)
redis.call('ZADD', ukey, now + ttl, ARGV[2])
redis.call('ZADD', KEYS[1], 'GT', now + ttl, ARGV[1])
redis.call('PEXPIRE', ukey, ttl + 60000)
redis.call('PEXPIRE', KEYS[1], ttl + 60000)
redis.call('HSET', KEYS[2], ARGV[1], now)
return before
";

const LEAVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ukey = KEYS[1] .. ':' .. ARGV[1]
redis.call('ZREMRANGEBYSCORE', ukey, '-inf', now)
local before = redis.call('ZCARD', ukey)
redis.call('ZREM', ukey, ARGV[2])
local after = redis.call('ZCARD', ukey)
if after == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', ukey)
else
  local last = redis.call('ZRANGE', ukey, -1, -1, 'WITHSCORES')
  redis.call('ZADD', KEYS[1], last[2], ARGV[1])
end
if before > 0 then redis.call('HSET', KEYS[2], ARGV[1], now) end
return {before, after}
";

const ONLINE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local users = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local out = {}
for _, user in ipairs(users) do
  local n = redis.call('ZCOUNT', KEYS[1] .. ':' .. user, '(' .. now, '+inf')
  if n > 0 then
    table.insert(out, user)
    table.insert(out, n)
  end
end
return out
";

const EXPIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local users = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for _, user in ipairs(users) do
  redis.call('DEL', KEYS[1] .. ':' .. user)
end
return users
";

/// Presence in Redis. See the [module docs](self).
#[derive(Clone)]
pub struct RedisPresence {
    conn: ConnectionManager,
    prefix: String,
    heartbeat: Script,
    leave: Script,
    online: Script,
    expire: Script,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn engine(e: redis::RedisError) -> PresenceError {
    PresenceError::Engine(Box::new(e))
}

impl RedisPresence {
    /// Presence under `prefix` on `conn`.
    #[must_use]
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
            heartbeat: Script::new(HEARTBEAT),
            leave: Script::new(LEAVE),
            online: Script::new(ONLINE),
            expire: Script::new(EXPIRE),
        }
    }

    fn room_key(&self, room: &str) -> String {
        format!("{}:{{{room}}}", self.prefix)
    }

    fn seen_key(&self) -> String {
        format!("{}:seen", self.prefix)
    }
}

impl PresenceStore for RedisPresence {
    async fn heartbeat(
        &self,
        room: &str,
        user: &str,
        device: &str,
        ttl_ms: u64,
    ) -> Result<Change, PresenceError> {
        check_id("room", room)?;
        check_id("user", user)?;
        check_id("device", device)?;
        if room.contains(['{', '}']) {
            return Err(PresenceError::BadId("room"));
        }
        let mut conn = self.conn.clone();
        let before: i64 = self
            .heartbeat
            .key(self.room_key(room))
            .key(self.seen_key())
            .arg(user)
            .arg(device)
            .arg(ttl_ms.max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(engine)?;
        Ok(if before == 0 { Change::CameOnline } else { Change::Unchanged })
    }

    async fn leave(&self, room: &str, user: &str, device: &str) -> Result<Change, PresenceError> {
        let mut conn = self.conn.clone();
        let (before, after): (i64, i64) = self
            .leave
            .key(self.room_key(room))
            .key(self.seen_key())
            .arg(user)
            .arg(device)
            .invoke_async(&mut conn)
            .await
            .map_err(engine)?;
        Ok(if before > 0 && after == 0 { Change::WentOffline } else { Change::Unchanged })
    }

    async fn online(&self, room: &str) -> Result<Vec<Online>, PresenceError> {
        let mut conn = self.conn.clone();
        let flat: Vec<(String, usize)> =
            self.online.key(self.room_key(room)).invoke_async(&mut conn).await.map_err(engine)?;
        let mut out: Vec<Online> =
            flat.into_iter().map(|(user, devices)| Online { user, devices }).collect();
        out.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(out)
    }

    async fn expire(&self, room: &str) -> Result<Vec<String>, PresenceError> {
        let mut conn = self.conn.clone();
        let mut users: Vec<String> =
            self.expire.key(self.room_key(room)).invoke_async(&mut conn).await.map_err(engine)?;
        users.sort();
        Ok(users)
    }

    async fn last_seen(&self, user: &str) -> Result<Option<u64>, PresenceError> {
        let mut conn = self.conn.clone();
        redis::cmd("HGET")
            .arg(self.seen_key())
            .arg(user)
            .query_async(&mut conn)
            .await
            .map_err(engine)
    }
}
