//! A counter key in Redis: `INCRBY` is atomic, so one key serves every instance.

use std::ops::Range;

use redis::aio::ConnectionManager;

use super::{BackendError, LeaseError, RangeSource, check_lease_size, range_ending_at};

/// A [`RangeSource`] backed by a Redis integer key, leased with `INCRBY key n`
/// (the catalogue's "INCRBY url_counter 1000").
///
/// A missing key counts as 0. Uniqueness across restarts holds only as far as the
/// Redis deployment persists writes (AOF with `appendfsync always` for crash safety);
/// a Redis that loses the key starts the counter over.
#[derive(Clone)]
pub struct RedisSource {
    conn: ConnectionManager,
    key: String,
}

impl std::fmt::Debug for RedisSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSource").field("key", &self.key).finish_non_exhaustive()
    }
}

impl RedisSource {
    /// A counter at `key`, leased through `conn`.
    #[must_use]
    pub fn new(conn: ConnectionManager, key: &str) -> Self {
        Self { conn, key: key.to_owned() }
    }

    /// The counter's key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl RangeSource for RedisSource {
    async fn lease(&self, n: u64) -> Result<Range<u64>, LeaseError> {
        check_lease_size(n)?;
        // ConnectionManager is a cheap handle; cloning gives this call its own `&mut`.
        let mut conn = self.conn.clone();
        let end: Result<i64, redis::RedisError> =
            redis::cmd("INCRBY").arg(&self.key).arg(n).query_async(&mut conn).await;
        match end {
            Ok(end) => range_ending_at(&self.key, end, n),
            // Redis refuses (and leaves the key unchanged) rather than wrap past i64::MAX.
            Err(err) if err.to_string().contains("would overflow") => Err(LeaseError::Exhausted),
            Err(err) => Err(BackendError::redis(err).into()),
        }
    }
}
