//! Redis as the L2: `GET`, `SET key value PX ttl NX` for fills, `SET … PX` + `PUBLISH`
//! in one `MULTI` for writes, and a dedicated pub/sub connection for invalidations that
//! reconnects with capped exponential back-off.

use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::ConnectionManager;

use super::{L2Error, L2Store, ListenEvent, Notice};

/// Connection behaviour of a [`RedisL2`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisL2Config {
    /// First delay before re-subscribing after the pub/sub connection drops.
    pub reconnect_delay_min_ms: u64,
    /// Cap of the doubling re-subscribe delay.
    pub reconnect_delay_max_ms: u64,
    /// Bound on opening the pub/sub connection and subscribing.
    pub subscribe_timeout_ms: u64,
}

impl Default for RedisL2Config {
    fn default() -> Self {
        Self {
            reconnect_delay_min_ms: 50,
            reconnect_delay_max_ms: 5_000,
            subscribe_timeout_ms: 2_000,
        }
    }
}

/// An [`L2Store`] on Redis. Clones share the data connection.
///
/// Values live as plain Redis strings with a `PX` expiry; invalidations travel over
/// Redis pub/sub, which is fire-and-forget: a subscriber that is disconnected misses
/// messages, so the listener reports [`ListenEvent::Subscribed`] after every
/// reconnect and the cache clears its L1 then.
#[derive(Clone)]
pub struct RedisL2 {
    client: redis::Client,
    conn: ConnectionManager,
    config: RedisL2Config,
}

impl std::fmt::Debug for RedisL2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisL2")
            .field("server", &self.client.get_connection_info().addr)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn backend(err: redis::RedisError) -> L2Error {
    L2Error::Backend(err.into())
}

impl RedisL2 {
    /// Connects to the Redis server at `url` with the default [`RedisL2Config`].
    ///
    /// # Errors
    /// [`L2Error::Backend`] when the URL is invalid or the server unreachable.
    pub async fn connect(url: &str) -> Result<Self, L2Error> {
        let client = redis::Client::open(url).map_err(backend)?;
        let conn = client.get_connection_manager().await.map_err(backend)?;
        Ok(Self::new(client, conn, RedisL2Config::default()))
    }

    /// An L2 using `conn` for data and opening its pub/sub connections from `client`.
    #[must_use]
    pub fn new(client: redis::Client, conn: ConnectionManager, config: RedisL2Config) -> Self {
        Self { client, conn, config }
    }

    async fn subscribe(&self, channel: &str) -> Result<redis::aio::PubSub, L2Error> {
        let timeout = Duration::from_millis(self.config.subscribe_timeout_ms);
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await.map_err(backend)?;
            pubsub.subscribe(channel).await.map_err(backend)?;
            Ok(pubsub)
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| L2Error::Timeout { after_ms: self.config.subscribe_timeout_ms })?
    }
}

impl L2Store for RedisL2 {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, L2Error> {
        let mut conn = self.conn.clone();
        redis::cmd("GET").arg(key).query_async(&mut conn).await.map_err(backend)
    }

    async fn fill(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<bool, L2Error> {
        let mut conn = self.conn.clone();
        let reply: redis::Value = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .arg("NX")
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        // NX: nil when the key existed, OK when stored.
        Ok(!matches!(reply, redis::Value::Nil))
    }

    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
        notice: Notice<'_>,
    ) -> Result<(), L2Error> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("PUBLISH")
            .arg(notice.channel)
            .arg(notice.message)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(backend)
    }

    async fn listen(&self, channel: &str, on_event: &(dyn Fn(ListenEvent<'_>) + Send + Sync)) {
        let min_ms = self.config.reconnect_delay_min_ms.max(1);
        let mut delay_ms = min_ms;
        loop {
            match self.subscribe(channel).await {
                Ok(mut pubsub) => {
                    delay_ms = min_ms;
                    on_event(ListenEvent::Subscribed);
                    let mut messages = pubsub.on_message();
                    // The stream ends when the connection does.
                    while let Some(message) = messages.next().await {
                        let text = String::from_utf8_lossy(message.get_payload_bytes());
                        on_event(ListenEvent::Message(&text));
                    }
                    on_event(ListenEvent::Lost);
                    tracing::warn!(channel, "redis invalidation subscription lost; reconnecting");
                }
                Err(err) => {
                    let err: &dyn std::error::Error = &err;
                    tracing::warn!(channel, err, delay_ms, "redis invalidation subscribe failed");
                }
            }
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            delay_ms =
                delay_ms.saturating_mul(2).min(self.config.reconnect_delay_max_ms.max(min_ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::L2BackendError;

    #[tokio::test]
    async fn a_driver_failure_is_the_source_of_the_backend_error() {
        // Refused by the driver before any connection (an unreachable server would
        // do too, but the connection manager retries for minutes first).
        let err = RedisL2::connect("redis://127.0.0.1:notaport/").await.expect_err("bad url");
        assert!(matches!(err, L2Error::Backend(L2BackendError::Redis(_))), "{err:?}");
        assert_eq!(err.to_string(), "L2 backend");
        let backend = err.source().expect("the backend error");
        assert_eq!(backend.to_string(), "redis");
        let driver = backend.source().and_then(|e| e.downcast_ref::<redis::RedisError>());
        let driver = driver.expect("the redis error itself");
        assert_eq!(driver.kind(), redis::ErrorKind::InvalidClientConfig, "{driver}");
    }
}
