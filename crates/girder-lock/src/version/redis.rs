//! Versioned values in Redis: a hash per key (`v` = value, `n` = version), every
//! write one Lua script, so the version check and the write are one atomic step.

use redis::Script;
use redis::aio::ConnectionManager;

use super::{VersionError, VersionStore, Versioned, corrupt, from_db, to_db};
use crate::BackendError;

/// Stores a first value unless the key exists.
const INSERT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'n', 1)
return 1
";

/// Replies `{1, new_version}` on success, `{0, current_version or -1}` on a conflict.
const COMPARE_AND_SET: &str = r"
local n = redis.call('HGET', KEYS[1], 'n')
if not n then return {0, -1} end
if n ~= ARGV[1] then return {0, tonumber(n)} end
redis.call('HSET', KEYS[1], 'v', ARGV[2])
return {1, redis.call('HINCRBY', KEYS[1], 'n', 1)}
";

/// Replies `{1, version}` when deleted, `{0, current_version or -1}` on a conflict.
const DELETE: &str = r"
local n = redis.call('HGET', KEYS[1], 'n')
if not n then return {0, -1} end
if n ~= ARGV[1] then return {0, tonumber(n)} end
redis.call('DEL', KEYS[1])
return {1, tonumber(n)}
";

/// A [`VersionStore`] on Redis hashes under `key_prefix`.
///
/// Durability is Redis's: a write survives a crash only as far as the deployment
/// persists it (AOF with `appendfsync always` for the system of record).
#[derive(Clone)]
pub struct RedisVersionStore {
    conn: ConnectionManager,
    key_prefix: String,
    insert: Script,
    compare_and_set: Script,
    delete: Script,
}

impl std::fmt::Debug for RedisVersionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisVersionStore")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisVersionStore {
    /// The default prefix of every key this store writes.
    pub const DEFAULT_PREFIX: &'static str = "girder:ver:";

    /// A store whose keys are `key_prefix` followed by the caller's key.
    #[must_use]
    pub fn new(conn: ConnectionManager, key_prefix: &str) -> Self {
        Self {
            conn,
            key_prefix: key_prefix.to_owned(),
            insert: Script::new(INSERT),
            compare_and_set: Script::new(COMPARE_AND_SET),
            delete: Script::new(DELETE),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }
}

impl VersionStore for RedisVersionStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, VersionError> {
        let mut conn = self.conn.clone();
        let (value, version): (Option<Vec<u8>>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.key(key))
            .arg("v")
            .arg("n")
            .query_async(&mut conn)
            .await
            .map_err(BackendError::redis)?;
        match (value, version) {
            (Some(value), Some(version)) => {
                Ok(Some(Versioned { value, version: from_db(&self.key(key), version)? }))
            }
            (None, None) => Ok(None),
            _ => Err(corrupt(&self.key(key), "hash lacks its value or its version")),
        }
    }

    async fn insert(&self, key: &str, value: &[u8]) -> Result<Versioned, VersionError> {
        let mut conn = self.conn.clone();
        let inserted: i64 = self
            .insert
            .key(self.key(key))
            .arg(value)
            .invoke_async(&mut conn)
            .await
            .map_err(BackendError::redis)?;
        if inserted == 1 {
            Ok(Versioned { value: value.to_vec(), version: 1 })
        } else {
            Err(VersionError::Exists)
        }
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected_version: u64,
        value: &[u8],
    ) -> Result<Versioned, VersionError> {
        let mut conn = self.conn.clone();
        let (ok, version): (i64, i64) = self
            .compare_and_set
            .key(self.key(key))
            .arg(to_db(expected_version)?)
            .arg(value)
            .invoke_async(&mut conn)
            .await
            .map_err(BackendError::redis)?;
        if ok == 1 {
            Ok(Versioned { value: value.to_vec(), version: from_db(&self.key(key), version)? })
        } else {
            Err(conflict(expected_version, version))
        }
    }

    async fn delete(&self, key: &str, expected_version: u64) -> Result<(), VersionError> {
        let mut conn = self.conn.clone();
        let (ok, version): (i64, i64) = self
            .delete
            .key(self.key(key))
            .arg(to_db(expected_version)?)
            .invoke_async(&mut conn)
            .await
            .map_err(BackendError::redis)?;
        if ok == 1 { Ok(()) } else { Err(conflict(expected_version, version)) }
    }
}

/// The conflict a script reported; `-1` means the key holds no value.
fn conflict(expected: u64, current: i64) -> VersionError {
    VersionError::Conflict { expected, current: u64::try_from(current).ok() }
}
