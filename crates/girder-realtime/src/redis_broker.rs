//! Hubs on several instances joined through Redis pub/sub (feature `redis`), so a
//! subscriber on instance B receives what is published on instance A: the shape of
//! [`NatsBroker`](crate::nats::NatsBroker) for a deployment that runs Redis and no
//! NATS.
//!
//! **Channels.** [`RedisBroker::publish`] delivers to this instance's subscribers
//! through its hub and sends the message on channel `<prefix>.<topic>`; every broker
//! holds one `PSUBSCRIBE <prefix>.*` and publishes what other instances sent into its
//! own hub. One pattern rather than a `SUBSCRIBE` per topic in use: the hub has no
//! hook saying which topics have subscribers, and its wildcard subscriptions would
//! need patterns anyway. The cost is that every instance receives every message under
//! the prefix (as with NATS' `<prefix>.>`), its own included, and Redis matches each
//! `PUBLISH` against each instance's pattern — partition with prefixes, which must
//! not nest (`a.*` also matches `a.b.c`).
//!
//! **Envelope.** Redis pub/sub carries no headers, so each payload travels behind an
//! 18-byte header: a marker byte, a kind (message or probe), the sending broker's
//! random origin id and its number for the message, big-endian. A broker skips its
//! own echoes by origin and drops (and counts) what does not parse.
//!
//! **Publishing.** `publish` queues the message for a writer task, in the order the
//! local hub got it; the writer sends what is queued as pipelined `PUBLISH`es on one
//! connection, so one instance's messages reach the others in its order. The queue
//! is bounded ([`RedisBrokerConfig::outbound_max`]): a publish waits when it is full.
//! [`RedisBroker::flush`] waits until Redis acknowledged everything queued before it.
//!
//! **Losses are never silent.** Redis pub/sub delivers at most once: a subscriber
//! connection that is down misses what is published meanwhile, Redis closes a
//! subscriber whose output buffer overflows (`client-output-buffer-limit pubsub`),
//! and a pipeline Redis does not acknowledge may be lost. So the broker:
//! - probes its subscriber connection every [`RedisBrokerConfig::heartbeat_ms`] with a
//!   message to itself through Redis; when the connection closes or a probe is not
//!   back within [`RedisBrokerConfig::timeout_ms`], it calls [`Hub::report_gap`],
//!   resubscribes with backoff, and reports a second gap once the new subscription
//!   is live — what a subscriber receives after that gap is contiguous again;
//! - numbers each origin's messages, and its probes carry the last number sent: a
//!   jump in another instance's numbers (its pipeline failed) is reported as a gap
//!   too, within a heartbeat even when nothing follows the lost messages.
//!
//! A gap reaches every local subscriber as [`Event::Gap`](crate::Event::Gap) with
//! [`MISSED_UNKNOWN`](crate::hub::MISSED_UNKNOWN), and a resume from a position
//! published before it is a [`Resume::Reset`](crate::Resume::Reset). Each instance's
//! hub gives a message its own position; durable replay across instances is a log's
//! job, not pub/sub's.
//!
//! **Bounds.** The outbound queue, the pipelines and the followed origins are bounded
//! by [`RedisBrokerConfig`]. The `redis` crate's receive queue is not, but the reader
//! never waits (a hub publish never does), so it stays as short as the reader is
//! fast; a reader that falls behind Redis is cut by Redis' own output-buffer limit,
//! which is a gap. Sharded pub/sub (`SSUBSCRIBE`, Redis Cluster) has no patterns and
//! is not used: on a cluster every `PUBLISH` goes to every node.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use crate::hub::{Hub, HubError, Published};
use crate::topic::Topic;

/// Marks a Girder envelope (version 1).
const MARKER: u8 = 0xA7;
/// The envelope's header: marker, kind, origin, number.
const HEADER_BYTES: usize = 18;
/// The channel (under the prefix) probes travel on.
const PROBE_CHANNEL: &str = "girder-probe";

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A published message; the number is its own.
    Message = 1,
    /// A probe; the number is the last message's the origin sent before it, the
    /// body a nonce.
    Probe = 2,
}

/// A decoded envelope.
#[derive(Debug, PartialEq, Eq)]
struct Envelope<'a> {
    kind: Kind,
    origin: u64,
    seq: u64,
    body: &'a [u8],
}

fn encode(kind: Kind, origin: u64, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.push(MARKER);
    out.push(kind as u8);
    out.extend_from_slice(&origin.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(body);
    debug_assert_eq!(out.len(), HEADER_BYTES + body.len());
    out
}

fn decode(bytes: &[u8]) -> Option<Envelope<'_>> {
    let (header, body) = bytes.split_at_checked(HEADER_BYTES)?;
    let kind = match header[..2] {
        [MARKER, 1] => Kind::Message,
        [MARKER, 2] => Kind::Probe,
        _ => return None,
    };
    let word = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().unwrap_or([0; 8]));
    Some(Envelope { kind, origin: word(2), seq: word(10), body })
}

/// A broker failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The hub refused the message (nothing was sent).
    #[error(transparent)]
    Hub(#[from] HubError),
    /// Redis failed.
    #[error("{context}: {source}")]
    Redis {
        /// What was being done.
        context: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// Redis did not answer in time.
    #[error("{context}: no answer within {after_ms} ms")]
    Timeout {
        /// What was being done.
        context: &'static str,
        /// The limit.
        after_ms: u64,
    },
    /// Messages queued since the previous flush were in pipelines Redis did not
    /// acknowledge: other instances may not have them (they report the gap).
    #[error("{messages} messages were not acknowledged by Redis")]
    Unacknowledged {
        /// How many.
        messages: u64,
    },
    /// A bad prefix.
    #[error("prefix {0:?}: dot-separated tokens of A-Z a-z 0-9 _ -")]
    Prefix(String),
    /// A setting is out of range.
    #[error("{0}")]
    Config(&'static str),
    /// The broker's tasks are gone (it is being dropped).
    #[error("the broker stopped")]
    Stopped,
}

fn redis_error(context: &'static str) -> impl FnOnce(redis::RedisError) -> BrokerError {
    move |source| BrokerError::Redis { context, source }
}

/// Runs `work` within `limit_ms`.
async fn bounded<T>(
    context: &'static str,
    limit_ms: u64,
    work: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(Duration::from_millis(limit_ms), work).await {
        Ok(result) => result.map_err(redis_error(context)),
        Err(_) => Err(BrokerError::Timeout { context, after_ms: limit_ms }),
    }
}

/// How a broker is bounded and how fast it notices a lost connection.
#[derive(Debug, Clone, Copy)]
pub struct RedisBrokerConfig {
    /// Messages queued for Redis; a publish waits when the queue is full.
    pub outbound_max: usize,
    /// `PUBLISH`es per pipeline.
    pub batch_max: usize,
    /// How often the subscriber connection is probed through Redis.
    pub heartbeat_ms: u64,
    /// A connect, subscribe, pipeline or probe not answered within it has failed.
    pub timeout_ms: u64,
    /// The first wait before resubscribing; it doubles per failed attempt.
    pub retry_delay_ms_min: u64,
    /// The longest wait between attempts.
    pub retry_delay_ms_max: u64,
    /// Other instances whose message numbers are followed; beyond it the one heard
    /// from least recently is forgotten (a jump in its numbers would then go
    /// unnoticed until its next message).
    pub origins_max: usize,
}

impl Default for RedisBrokerConfig {
    fn default() -> Self {
        Self {
            outbound_max: 65_536,
            batch_max: 1_024,
            heartbeat_ms: 1_000,
            timeout_ms: 5_000,
            retry_delay_ms_min: 50,
            retry_delay_ms_max: 2_000,
            origins_max: 10_000,
        }
    }
}

impl RedisBrokerConfig {
    fn check(&self) -> Result<(), BrokerError> {
        let ok = self.outbound_max > 0
            && self.batch_max > 0
            && self.heartbeat_ms > 0
            && self.timeout_ms > 0
            && self.retry_delay_ms_min > 0
            && self.retry_delay_ms_min <= self.retry_delay_ms_max
            && self.origins_max > 0;
        ok.then_some(()).ok_or(BrokerError::Config(
            "every bound must be at least 1 and retry_delay_ms_min at most retry_delay_ms_max",
        ))
    }
}

/// Counters since the broker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Messages Redis acknowledged.
    pub sent: u64,
    /// Messages in pipelines Redis did not acknowledge (they may or may not have
    /// reached it).
    pub unacknowledged: u64,
    /// Messages received from other instances and published locally.
    pub received: u64,
    /// Received messages dropped: not an envelope, a channel that is not a topic, or
    /// refused by the hub.
    pub dropped: u64,
    /// Messages of other instances known lost (jumps in their numbers).
    pub missed: u64,
    /// Gaps reported to the hub.
    pub gaps: u64,
    /// Times the subscriber connection was replaced.
    pub reconnects: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    unacknowledged: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    missed: AtomicU64,
    gaps: AtomicU64,
    reconnects: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// What the writer task sends.
#[derive(Debug)]
enum Outbound {
    Message { channel: String, payload: Bytes },
    Probe { nonce: u64 },
    Flush(oneshot::Sender<Result<(), BrokerError>>),
}

/// A hub joined to the other instances' hubs through Redis. See the
/// [module docs](self).
#[derive(Debug)]
pub struct RedisBroker {
    hub: Hub,
    prefix: String,
    outbound: mpsc::Sender<Outbound>,
    /// Held from the hub's publish to the queueing, so the local order and the order
    /// sent to Redis are the same.
    order: Mutex<()>,
    counters: Arc<Counters>,
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
}

impl RedisBroker {
    /// Joins `hub` to the others under `prefix` (e.g. `girder.rt`) on the Redis at
    /// `url`, with the default [`RedisBrokerConfig`].
    ///
    /// # Errors
    /// See [`connect_with`](Self::connect_with).
    pub async fn connect(url: &str, hub: Hub, prefix: &str) -> Result<Self, BrokerError> {
        Self::connect_with(url, hub, prefix, RedisBrokerConfig::default()).await
    }

    /// Joins `hub` to the others under `prefix` on the Redis at `url`. Returns once a
    /// probe to itself came back through Redis: the subscription is live, so nothing
    /// another instance publishes from then on is missed unnoticed.
    ///
    /// # Errors
    /// A bad prefix or setting, or Redis cannot be reached in time.
    pub async fn connect_with(
        url: &str,
        hub: Hub,
        prefix: &str,
        config: RedisBrokerConfig,
    ) -> Result<Self, BrokerError> {
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix.split('.').all(|t| {
                !t.is_empty()
                    && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        if !prefix_ok {
            return Err(BrokerError::Prefix(prefix.to_owned()));
        }
        config.check()?;
        let client = redis::Client::open(url).map_err(redis_error("opening the Redis URL"))?;
        let limit = Duration::from_millis(config.timeout_ms);
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(limit)
            .set_response_timeout(limit)
            .set_number_of_retries(2);
        let connection = bounded(
            "connecting to Redis",
            config.timeout_ms,
            ConnectionManager::new_with_config(client.clone(), manager),
        )
        .await?;
        let pattern = format!("{prefix}.*");
        let inbound = subscribe(&client, &pattern, config.timeout_ms).await?;
        let origin = rand::random::<u64>();
        let counters = Arc::new(Counters::default());
        let (outbound, queued) = mpsc::channel(config.outbound_max);
        let writer = tokio::spawn(
            Writer {
                connection,
                origin,
                probe_channel: format!("{prefix}.{PROBE_CHANNEL}"),
                counters: Arc::clone(&counters),
                config,
            }
            .run(queued),
        );
        let (live_tx, live_rx) = oneshot::channel();
        let reader = tokio::spawn(
            Reader {
                hub: hub.clone(),
                client,
                pattern,
                strip: format!("{prefix}."),
                origin,
                outbound: outbound.clone(),
                counters: Arc::clone(&counters),
                config,
                origins: HashMap::new(),
                heard: 0,
                delay_ms: config.retry_delay_ms_min,
            }
            .run(inbound, live_tx),
        );
        let broker = Self {
            hub,
            prefix: prefix.to_owned(),
            outbound,
            order: Mutex::new(()),
            counters,
            writer,
            reader,
        };
        // The first heartbeat probes at once; wait for it to come back.
        match tokio::time::timeout(limit, live_rx).await {
            Ok(Ok(())) => Ok(broker),
            Ok(Err(_)) => Err(BrokerError::Stopped),
            Err(_) => Err(BrokerError::Timeout {
                context: "waiting for the probe to itself",
                after_ms: config.timeout_ms,
            }),
        }
    }

    /// The local hub (subscribe here).
    #[must_use]
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Publishes on this instance's hub and queues the message for the others;
    /// waits while the queue is full.
    ///
    /// # Errors
    /// The hub refused it (nothing is sent), or the broker stopped.
    pub async fn publish(
        &self,
        topic: &Topic,
        payload: impl Into<Bytes>,
    ) -> Result<Published, BrokerError> {
        let payload = payload.into();
        let permit = self.outbound.reserve().await.map_err(|_| BrokerError::Stopped)?;
        let channel = format!("{}.{topic}", self.prefix);
        let _order = self.order.lock();
        let published = self.hub.publish(topic, payload.clone())?;
        permit.send(Outbound::Message { channel, payload });
        Ok(published)
    }

    /// Waits until Redis acknowledged everything queued before this call.
    ///
    /// # Errors
    /// [`BrokerError::Unacknowledged`] when messages queued since the previous flush
    /// were not acknowledged, or the broker stopped.
    pub async fn flush(&self) -> Result<(), BrokerError> {
        let (done, answer) = oneshot::channel();
        self.outbound.send(Outbound::Flush(done)).await.map_err(|_| BrokerError::Stopped)?;
        answer.await.map_err(|_| BrokerError::Stopped)?
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> BrokerStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BrokerStats {
            sent: get(&c.sent),
            unacknowledged: get(&c.unacknowledged),
            received: get(&c.received),
            dropped: get(&c.dropped),
            missed: get(&c.missed),
            gaps: get(&c.gaps),
            reconnects: get(&c.reconnects),
        }
    }
}

impl Drop for RedisBroker {
    /// Stops both tasks; what is still queued is not sent (flush first).
    fn drop(&mut self) {
        self.writer.abort();
        self.reader.abort();
    }
}

/// A new subscriber connection holding `pattern`; the pattern is registered once
/// Redis confirmed it, which this waits for.
async fn subscribe(
    client: &redis::Client,
    pattern: &str,
    limit_ms: u64,
) -> Result<PubSubStream, BrokerError> {
    let mut pubsub =
        bounded("opening the subscriber connection", limit_ms, client.get_async_pubsub()).await?;
    bounded("subscribing", limit_ms, pubsub.psubscribe(pattern)).await?;
    Ok(pubsub.into_on_message())
}

/// Sends the queue to Redis in pipelines, numbering the messages.
struct Writer {
    connection: ConnectionManager,
    origin: u64,
    probe_channel: String,
    counters: Arc<Counters>,
    config: RedisBrokerConfig,
}

impl Writer {
    async fn run(mut self, mut queued: mpsc::Receiver<Outbound>) {
        let mut batch = Vec::with_capacity(self.config.batch_max);
        let mut seq = 0_u64;
        let mut unacknowledged_since_flush = 0_u64;
        while queued.recv_many(&mut batch, self.config.batch_max).await > 0 {
            let mut pipe = redis::pipe();
            let (mut messages, mut commands) = (0_u64, 0_usize);
            let mut flushes = Vec::new();
            for item in batch.drain(..) {
                match item {
                    Outbound::Message { channel, payload } => {
                        seq += 1;
                        messages += 1;
                        commands += 1;
                        let envelope = encode(Kind::Message, self.origin, seq, &payload);
                        pipe.cmd("PUBLISH").arg(channel).arg(envelope).ignore();
                    }
                    Outbound::Probe { nonce } => {
                        commands += 1;
                        let envelope = encode(Kind::Probe, self.origin, seq, &nonce.to_be_bytes());
                        pipe.cmd("PUBLISH").arg(&self.probe_channel).arg(envelope).ignore();
                    }
                    Outbound::Flush(done) => flushes.push(done),
                }
            }
            if commands > 0 {
                let sent = bounded(
                    "publishing",
                    self.config.timeout_ms,
                    pipe.query_async::<()>(&mut self.connection),
                )
                .await;
                match sent {
                    Ok(()) => add(&self.counters.sent, messages),
                    Err(e) => {
                        // Not retried: a pipeline may have been partly applied, and a
                        // retry would duplicate. Receivers see the jump in numbers.
                        tracing::warn!(error = %e, messages, "a pipeline was not acknowledged");
                        add(&self.counters.unacknowledged, messages);
                        unacknowledged_since_flush += messages;
                    }
                }
            }
            if !flushes.is_empty() {
                let messages = std::mem::take(&mut unacknowledged_since_flush);
                for done in flushes {
                    let answer = if messages == 0 {
                        Ok(())
                    } else {
                        Err(BrokerError::Unacknowledged { messages })
                    };
                    let _ = done.send(answer);
                }
            }
        }
    }
}

/// Another instance's numbers, as last heard.
#[derive(Debug, Clone, Copy)]
struct Heard {
    /// The last message number it sent.
    seq: u64,
    /// When, in messages received by this reader (for forgetting the quietest).
    at: u64,
}

/// Reads the subscriber connection into the hub, probes it and replaces it.
struct Reader {
    hub: Hub,
    client: redis::Client,
    pattern: String,
    strip: String,
    origin: u64,
    outbound: mpsc::Sender<Outbound>,
    counters: Arc<Counters>,
    config: RedisBrokerConfig,
    origins: HashMap<u64, Heard>,
    heard: u64,
    /// The wait before the next resubscribe; back to the minimum once a probe
    /// returns on a connection.
    delay_ms: u64,
}

impl Reader {
    async fn run(mut self, mut inbound: PubSubStream, live: oneshot::Sender<()>) {
        let mut live = Some(live);
        loop {
            let why = self.follow(&mut inbound, &mut live).await;
            drop(inbound);
            tracing::warn!(why, "the Redis subscriber connection was lost; reporting a gap");
            self.gap();
            inbound = self.resubscribe().await;
            // Everything from before is covered by the gap below.
            self.origins.clear();
            add(&self.counters.reconnects, 1);
            self.gap();
        }
    }

    fn gap(&self) {
        self.hub.report_gap();
        add(&self.counters.gaps, 1);
    }

    /// Follows one connection until it is lost; says why.
    async fn follow(
        &mut self,
        inbound: &mut PubSubStream,
        live: &mut Option<oneshot::Sender<()>>,
    ) -> &'static str {
        let mut heartbeat = tokio::time::interval(Duration::from_millis(self.config.heartbeat_ms));
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let mut probe: Option<(u64, Instant)> = None;
        loop {
            tokio::select! {
                message = inbound.next() => {
                    let Some(message) = message else { return "the connection closed" };
                    self.on_message(&message, &mut probe, live);
                }
                _ = heartbeat.tick() => match probe {
                    Some((_, sent)) if sent.elapsed() > timeout => {
                        return "a probe did not come back in time";
                    }
                    Some(_) => {}
                    None => {
                        let nonce = rand::random::<u64>();
                        // A full queue skips this heartbeat rather than stall reading.
                        if self.outbound.try_send(Outbound::Probe { nonce }).is_ok() {
                            probe = Some((nonce, Instant::now()));
                        }
                    }
                },
            }
        }
    }

    fn on_message(
        &mut self,
        message: &redis::Msg,
        probe: &mut Option<(u64, Instant)>,
        live: &mut Option<oneshot::Sender<()>>,
    ) {
        let Some(envelope) = decode(message.get_payload_bytes()) else {
            add(&self.counters.dropped, 1);
            return;
        };
        if envelope.origin == self.origin {
            // One's own echo; a probe of one's own proves the connection.
            let nonce = envelope.body.try_into().ok().map(u64::from_be_bytes);
            if envelope.kind == Kind::Probe && probe.is_some_and(|(n, _)| Some(n) == nonce) {
                *probe = None;
                self.delay_ms = self.config.retry_delay_ms_min;
                if let Some(live) = live.take() {
                    let _ = live.send(());
                }
            }
            return;
        }
        self.heard += 1;
        let missed = track(
            &mut self.origins,
            self.config.origins_max,
            self.heard,
            envelope.origin,
            envelope.kind,
            envelope.seq,
        );
        if missed > 0 {
            tracing::warn!(
                missed,
                origin = envelope.origin,
                "messages of another instance were lost"
            );
            add(&self.counters.missed, missed);
            self.gap();
        }
        if envelope.kind == Kind::Probe {
            return;
        }
        let topic =
            message.get_channel_name().strip_prefix(&self.strip).and_then(|t| Topic::new(t).ok());
        match topic.map(|t| self.hub.publish(&t, Bytes::copy_from_slice(envelope.body))) {
            Some(Ok(_)) => add(&self.counters.received, 1),
            _ => add(&self.counters.dropped, 1),
        }
    }

    /// A new subscription, trying until one is confirmed, waiting between attempts.
    async fn resubscribe(&mut self) -> PubSubStream {
        loop {
            // Jitter, so instances cut off together do not return together.
            let wait = self.delay_ms / 2 + rand::random_range(0..=self.delay_ms / 2);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            self.delay_ms = (self.delay_ms * 2).min(self.config.retry_delay_ms_max);
            match subscribe(&self.client, &self.pattern, self.config.timeout_ms).await {
                Ok(inbound) => return inbound,
                Err(e) => tracing::warn!(error = %e, "resubscribing to Redis failed; retrying"),
            }
        }
    }
}

/// Follows `origin`'s numbers: a message numbered `seq` follows `seq - 1`, a probe
/// carrying `seq` follows `seq`. Returns how many of its messages were skipped since
/// it was last heard (0 for an origin not followed yet).
fn track(
    origins: &mut HashMap<u64, Heard>,
    origins_max: usize,
    now: u64,
    origin: u64,
    kind: Kind,
    seq: u64,
) -> u64 {
    let before = match kind {
        Kind::Message => seq.saturating_sub(1),
        Kind::Probe => seq,
    };
    if let Some(heard) = origins.get_mut(&origin) {
        let missed = before.saturating_sub(heard.seq);
        *heard = Heard { seq: seq.max(heard.seq), at: now };
        return missed;
    }
    if origins.len() >= origins_max {
        let quietest = origins.iter().min_by_key(|(_, h)| h.at).map(|(o, _)| *o);
        if let Some(quietest) = quietest {
            origins.remove(&quietest);
        }
    }
    origins.insert(origin, Heard { seq, at: now });
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_foreign_bytes_are_refused() {
        let bytes = encode(Kind::Message, 0x0102_0304_0506_0708, 42, b"hello");
        assert_eq!(bytes.len(), HEADER_BYTES + 5);
        assert_eq!(
            decode(&bytes),
            Some(Envelope {
                kind: Kind::Message,
                origin: 0x0102_0304_0506_0708,
                seq: 42,
                body: b"hello"
            })
        );
        let probe = encode(Kind::Probe, 7, 0, &9_u64.to_be_bytes());
        assert_eq!(decode(&probe).map(|e| (e.kind, e.body.len())), Some((Kind::Probe, 8)));
        let check = |bytes: &[u8]| assert_eq!(decode(bytes), None, "{bytes:?}");
        check(b"");
        check(b"plain text that is long enough");
        check(&bytes[..HEADER_BYTES - 1]);
        let mut other_kind = bytes.clone();
        other_kind[1] = 3;
        check(&other_kind);
    }

    #[test]
    fn jumps_in_an_origins_numbers_are_counted() {
        // (origin, kind, seq, missed reported)
        let steps: &[(u64, Kind, u64, u64)] = &[
            (1, Kind::Message, 5, 0), // first heard: whatever came before is not ours
            (1, Kind::Message, 6, 0),
            (1, Kind::Message, 9, 2), // 7 and 8 lost
            (1, Kind::Probe, 9, 0),   // nothing sent since
            (1, Kind::Probe, 12, 3),  // 10–12 lost and nothing followed them
            (1, Kind::Message, 13, 0),
            (2, Kind::Probe, 0, 0),
            (2, Kind::Message, 1, 0),
            (2, Kind::Message, 1, 0), // a repeat never counts
            (3, Kind::Message, 1, 0), // beyond origins_max = 2: origin 1 is forgotten
            (2, Kind::Message, 3, 1),
            (1, Kind::Message, 20, 0), // heard again as new
        ];
        let mut origins = HashMap::new();
        for (now, &(origin, kind, seq, want)) in steps.iter().enumerate() {
            let got = track(&mut origins, 2, now as u64, origin, kind, seq);
            assert_eq!(got, want, "step {now}: {origin} {kind:?} {seq}");
            assert!(origins.len() <= 2);
        }
    }
}
