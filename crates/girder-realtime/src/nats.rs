//! Hubs on several instances joined through NATS core pub/sub (feature `nats`), so a
//! subscriber on instance B receives what is published on instance A.
//!
//! [`NatsBroker::publish`] delivers to this instance's subscribers through its hub
//! and sends the message on subject `<prefix>.<topic>` with a `Girder-Origin` header;
//! every broker listens on `<prefix>.>` and publishes what other origins sent into its
//! own hub. Each instance's hub gives the message its own position, so a resume works
//! against the instance a client reconnects to (its history holds what reached it).
//! Messages from one publisher arrive in order; NATS core delivers at most once, so a
//! broker that was disconnected misses what was sent meanwhile (counted in
//! [`NatsBroker::stats`]' reconnects); durable replay across instances is
//! JetStream's job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::hub::{Hub, HubError, Published};
use crate::topic::Topic;

const ORIGIN: &str = "Girder-Origin";
/// Marks the probe a broker sends itself to know its subscription is live.
const PROBE: &str = "Girder-Probe";

/// A broker failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The hub refused the message.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// NATS failed.
    #[error("{context}: {source}")]
    Nats {
        /// What was being done.
        context: &'static str,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A bad prefix.
    #[error("prefix {0:?}: dot-separated tokens of A-Z a-z 0-9 _ -")]
    Prefix(String),
}

fn nats<E: std::error::Error + Send + Sync + 'static>(
    context: &'static str,
) -> impl FnOnce(E) -> BrokerError {
    move |e| BrokerError::Nats { context, source: Box::new(e) }
}

/// Counters since the broker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Messages sent to other instances.
    pub sent: u64,
    /// Messages received from other instances and published locally.
    pub received: u64,
    /// Received messages dropped: a subject that is not a topic, or refused by the hub.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
}

/// A hub joined to the other instances' hubs. See the [module docs](self).
#[derive(Debug)]
pub struct NatsBroker {
    hub: Hub,
    client: async_nats::Client,
    prefix: String,
    origin: String,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl NatsBroker {
    /// Joins `hub` to the others under `prefix` (e.g. `girder.rt`) on the NATS at
    /// `url`.
    ///
    /// # Errors
    /// A bad prefix, or NATS cannot be reached.
    pub async fn connect(url: &str, hub: Hub, prefix: &str) -> Result<Self, BrokerError> {
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix.split('.').all(|t| {
                !t.is_empty()
                    && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        if !prefix_ok {
            return Err(BrokerError::Prefix(prefix.to_owned()));
        }
        let client = async_nats::connect(url).await.map_err(nats("connecting to NATS"))?;
        let mut inbound =
            client.subscribe(format!("{prefix}.>")).await.map_err(nats("subscribing"))?;
        client.flush().await.map_err(nats("flushing the subscription"))?;
        let origin = format!("{:016x}", rand::random::<u64>());
        let counters = Arc::new(Counters::default());
        let (live_tx, live_rx) = tokio::sync::oneshot::channel::<()>();
        let task = {
            let (hub, origin, counters) = (hub.clone(), origin.clone(), Arc::clone(&counters));
            let strip = format!("{prefix}.");
            tokio::spawn(async move {
                let mut live = Some(live_tx);
                while let Some(message) = inbound.next().await {
                    let header = |name: &str| {
                        message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(name))
                            .map(|v| v.as_str().to_owned())
                    };
                    let mine = header(ORIGIN).as_deref() == Some(origin.as_str());
                    if header(PROBE).is_some() {
                        if mine && let Some(live) = live.take() {
                            let _ = live.send(());
                        }
                        continue;
                    }
                    if mine {
                        continue;
                    }
                    let topic = message
                        .subject
                        .as_str()
                        .strip_prefix(&strip)
                        .and_then(|t| Topic::new(t).ok());
                    match topic.map(|t| hub.publish(&t, message.payload)) {
                        Some(Ok(_)) => counters.received.fetch_add(1, Ordering::Relaxed),
                        _ => counters.dropped.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        };
        // Returns once a probe to itself came back: the subscription is live, so
        // nothing another instance publishes from now on is missed.
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, origin.as_str());
        headers.insert(PROBE, "1");
        let broker = Self { hub, client, prefix: prefix.to_owned(), origin, counters, task };
        let probe = format!("{prefix}.girder-probe");
        let wait = async {
            broker
                .client
                .publish_with_headers(probe, headers, Bytes::new())
                .await
                .map_err(nats("probing the subscription"))?;
            broker.client.flush().await.map_err(nats("probing the subscription"))?;
            live_rx.await.map_err(|_| BrokerError::Prefix("the subscription ended".into()))
        };
        match tokio::time::timeout(std::time::Duration::from_secs(10), wait).await {
            Ok(Ok(())) => Ok(broker),
            Ok(Err(e)) => Err(e),
            Err(elapsed) => Err(nats("waiting for the subscription")(elapsed)),
        }
    }

    /// The local hub (subscribe here).
    #[must_use]
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Publishes on this instance's hub and sends the message to the others.
    ///
    /// # Errors
    /// The hub refused it (nothing sent), or NATS did (local subscribers have it).
    pub async fn publish(
        &self,
        topic: &Topic,
        payload: impl Into<Bytes>,
    ) -> Result<Published, BrokerError> {
        let payload = payload.into();
        let published = self.hub.publish(topic, payload.clone())?;
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, self.origin.as_str());
        self.client
            .publish_with_headers(format!("{}.{topic}", self.prefix), headers, payload)
            .await
            .map_err(nats("publishing"))?;
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        Ok(published)
    }

    /// Waits until everything published so far has been handed to the server.
    ///
    /// # Errors
    /// NATS failed.
    pub async fn flush(&self) -> Result<(), BrokerError> {
        self.client.flush().await.map_err(nats("flushing"))
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            received: self.counters.received.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for NatsBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
