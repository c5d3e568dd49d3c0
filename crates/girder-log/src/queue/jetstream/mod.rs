//! The durable queue on NATS JetStream ("Pattern: Asynchronous Processing with
//! Message Queues"), for when producers and consumers run on several machines.
//!
//! Layout on the server, for a queue named `q`:
//!
//! - stream `girder_queue_q`, subject `girder.queue.q.in`: the messages. A message's
//!   id is its sequence in this stream. With one group the stream has **work-queue
//!   retention** (a message is deleted at its first acknowledgement). With several
//!   groups it has **interest retention**: work-queue streams deliver each message to
//!   one consumer only and refuse consumers that overlap, while an interest stream
//!   keeps a message until every consumer (group) has acknowledged it, so each group
//!   receives every message. A group must exist before the messages it should see are
//!   published — [`JetStreamQueue::open`] creates them all first.
//! - one durable pull consumer per group, named after it: `AckWait` is the visibility
//!   timeout, acknowledgements explicit, `MaxAckPending` = `in_flight_max`.
//! - stream `girder_queue_q_redrive`, subjects `girder.queue.q.redrive.<group>`
//!   (work-queue retention), with a second consumer per group: redriven messages,
//!   each carrying its original id in a `Girder-Id` header.
//! - stream `girder_queue_q_dlq`, subjects `girder.queue.q.dead.<group>.<id>`, one
//!   message per subject: the dead letters, with headers `Girder-Id` and
//!   `Girder-Attempts`. At most `dead_letters_max`; when full, dead-lettering fails
//!   (and the message stays in its group) rather than dropping an older one.
//!
//! **How a message dies.** The consumers' `MaxDeliver` is unlimited, and the delivery
//! count the server keeps per message (in each delivery's metadata, so it survives
//! any client crash) decides instead. A delivery numbered `max_deliveries + 1` — the
//! message timed out or was nacked after its last allowed delivery — is never handed
//! out: the dequeue that fetches it publishes it to the dead-letter stream, waits for
//! that publish's acknowledgement, and only then acknowledges it in its group. A nack
//! of the last allowed delivery does the same at once. The server's own limit is not
//! used because when `MaxDeliver` is reached the server only emits an advisory — sent
//! once, to whoever listens then — and leaves the message unacknowledged in the
//! stream (in an interest stream, held forever); a crash at that moment would lose the
//! dead letter. Here a crash between the two steps delivers the message again and
//! the dead letter is published again, deduplicated by its `Nats-Msg-Id`.
//!
//! **Differences from the embedded [`Queue`](super::Queue)**, all written out in the
//! conformance suite:
//! - Time is the server's: visibility and nack delays lapse by its clock, not by the
//!   `Clock` given here (which only stamps `visible_again_at_ms` and judges receipts).
//! - The visibility timeout is fixed per consumer (`AckWait`): a dequeue asking for
//!   another gets [`QueueError::FixedVisibility`].
//! - A receipt acknowledges only through the handle (or a clone of it) that dequeued
//!   it, and only before its `visible_again_at_ms` — counted from when the dequeue
//!   was sent, so never after the server could have given the message to someone
//!   else. The embedded queue accepts a lapsed receipt until the message is handed
//!   out again.
//! - `stats`: `ready` is what the group's consumers have not yet delivered;
//!   `in_flight` counts every delivered, unacknowledged message — including those
//!   whose visibility lapsed or whose nack delay runs, until they are delivered again.
//! - Redriven messages come from their own consumer: a dequeue takes them after the
//!   group's main backlog, and every eighth dequeue of a group takes them first, so
//!   they never wait behind an endless backlog.

mod error;
mod held;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self as js, AckKind, consumer};
use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use girder_core::Clock;
use parking_lot::Mutex;

pub use error::NatsError;
use error::nats;
use held::{Held, Holding, Origin};

use super::{DeadLetter, Delivery, GroupStats, MessageId, MessageQueue, QueueError, Receipt};

/// The header carrying a redriven or dead message's original id.
const ID_HEADER: &str = "Girder-Id";
/// The header carrying a dead letter's delivery count.
const ATTEMPTS_HEADER: &str = "Girder-Attempts";
/// JetStream's deduplication header.
const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// Room kept below the server's `max_payload` for the headers a dead letter carries.
const HEADER_ROOM_BYTES: usize = 512;
/// Every this many dequeues of a group, its redriven messages are taken first.
const REDRIVE_TURN: u64 = 8;
/// Dead letters read per fetch while listing them.
const LIST_BATCH: usize = 256;

/// How a JetStream queue behaves.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// Names the queue's streams and subjects: 1–32 ASCII letters, digits or `-`.
    pub name: String,
    /// The consumer groups; each receives every message. Default `["default"]`.
    /// 1–64 ASCII letters, digits, `_` or `-` each.
    pub groups: Vec<String>,
    /// Deliveries before a message is dead-lettered. Default 5.
    pub max_deliveries: u32,
    /// The visibility timeout: the consumers' `AckWait`. Default 30 s.
    pub visibility: Duration,
    /// The largest message accepted. Default 1 MiB − 4 KiB; must leave 512 bytes
    /// below the server's `max_payload` (1 MiB unless configured).
    pub message_bytes_max: usize,
    /// Deliveries this handle may hold unacknowledged, and each consumer's
    /// `MaxAckPending`. Default 65 536.
    pub in_flight_max: usize,
    /// Dead letters the queue keeps (all groups together). Default 100 000.
    pub dead_letters_max: usize,
    /// The bound on every wait for the server: connect, publish acknowledgement,
    /// fetch, acknowledgement, API request. Default 5 s.
    pub request_timeout: Duration,
}

impl JetStreamConfig {
    /// The defaults, for the queue `name`.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            groups: vec!["default".to_owned()],
            max_deliveries: 5,
            visibility: Duration::from_secs(30),
            message_bytes_max: (1 << 20) - 4096,
            in_flight_max: 1 << 16,
            dead_letters_max: 100_000,
            request_timeout: Duration::from_secs(5),
        }
    }

    fn validate(&self) -> Result<(), QueueError> {
        let bad = |what: &str| Err(QueueError::Config(what.to_owned()));
        let token = |s: &str, max: usize, underscore: bool| {
            (1..=max).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || (underscore && b == b'_'))
        };
        if !token(&self.name, 32, false) {
            return bad("the queue name must be 1–32 ASCII letters, digits or '-'");
        }
        let mut names = self.groups.clone();
        names.sort();
        names.dedup();
        if self.groups.is_empty()
            || names.len() != self.groups.len()
            || !self.groups.iter().all(|g| token(g, 64, true))
        {
            return bad("groups must be distinct, each 1–64 ASCII letters, digits, '_' or '-'");
        }
        if self.max_deliveries == 0 || self.visibility < Duration::from_millis(1) {
            return bad("max_deliveries and visibility (≥ 1 ms) must be positive");
        }
        if self.message_bytes_max == 0
            || self.in_flight_max == 0
            || i64::try_from(self.in_flight_max).is_err()
            || self.dead_letters_max == 0
            || i64::try_from(self.dead_letters_max).is_err()
            || self.request_timeout.is_zero()
        {
            return bad(
                "message_bytes_max, in_flight_max, dead_letters_max and request_timeout must be positive",
            );
        }
        Ok(())
    }
}

/// The streams' names and subjects of one queue.
#[derive(Debug)]
struct Names {
    prefix: String,
    main: String,
    redrive: String,
    dlq: String,
}

impl Names {
    fn new(name: &str) -> Self {
        // Queue names have no '_', so no queue's streams are named like another's.
        Self {
            prefix: format!("girder.queue.{name}"),
            main: format!("girder_queue_{name}"),
            redrive: format!("girder_queue_{name}_redrive"),
            dlq: format!("girder_queue_{name}_dlq"),
        }
    }

    fn enqueue(&self) -> String {
        format!("{}.in", self.prefix)
    }

    fn redrive(&self, group: &str) -> String {
        format!("{}.redrive.{group}", self.prefix)
    }

    fn dead(&self, group: &str, id: u64) -> String {
        format!("{}.dead.{group}.{id}", self.prefix)
    }

    fn dead_of(&self, group: &str) -> String {
        format!("{}.dead.{group}.*", self.prefix)
    }
}

/// One group's two consumers.
#[derive(Debug)]
struct Group {
    name: String,
    main: consumer::PullConsumer,
    redrive: consumer::PullConsumer,
    dequeues: AtomicU64,
}

struct Inner {
    client: Client,
    js: js::Context,
    names: Names,
    main: stream::Stream,
    redrive: stream::Stream,
    dlq: stream::Stream,
    groups: Vec<Group>,
    held: Mutex<Held>,
    config: JetStreamConfig,
    clock: Arc<dyn Clock>,
}

/// A durable queue on a NATS JetStream server (see the module docs for its layout
/// and how it differs from the embedded queue). Cheap to clone; clones share their
/// receipts.
#[derive(Clone)]
pub struct JetStreamQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JetStreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamQueue")
            .field("stream", &self.inner.names.main)
            .finish_non_exhaustive()
    }
}

/// Awaits `fut` for at most `after`.
async fn bounded<T>(
    op: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
    tokio::time::timeout(after, fut).await.map_err(|_| QueueError::TimedOut { op, after })?
}

fn publish_error(op: &'static str, after: Duration) -> impl FnOnce(PublishError) -> QueueError {
    move |err| match err.kind() {
        PublishErrorKind::TimedOut => QueueError::TimedOut { op, after },
        _ => nats(op)(err),
    }
}

fn header_u64(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    headers?.get(name)?.as_str().parse().ok()
}

impl JetStreamQueue {
    /// Connects to the server at `url` (bounded by `request_timeout`) and opens the
    /// queue there.
    ///
    /// # Errors
    /// As [`JetStreamQueue::open`]; the connection failed or timed out.
    pub async fn connect(
        url: &str,
        config: JetStreamConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, QueueError> {
        config.validate()?;
        let after = config.request_timeout;
        let client = bounded("connect", after, async {
            async_nats::ConnectOptions::new()
                .connection_timeout(after)
                .request_timeout(Some(after))
                .connect(url)
                .await
                .map_err(nats("connect"))
        })
        .await?;
        Self::open(client, config, clock).await
    }

    /// Creates the queue's streams and consumers on `client`'s server, or opens the
    /// existing ones.
    ///
    /// # Errors
    /// [`QueueError::Config`] for a setting out of range, a `message_bytes_max` the
    /// server cannot carry, or an existing stream whose retention does not match the
    /// number of groups (a queue cannot change between one group and several); the
    /// server refused or did not answer.
    pub async fn open(
        client: Client,
        config: JetStreamConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, QueueError> {
        config.validate()?;
        let max_payload = client.server_info().max_payload;
        if config.message_bytes_max.saturating_add(HEADER_ROOM_BYTES) > max_payload {
            return Err(QueueError::Config(format!(
                "message_bytes_max must leave {HEADER_ROOM_BYTES} bytes below the server's max_payload of {max_payload}"
            )));
        }
        let after = config.request_timeout;
        let js = js::ContextBuilder::new().timeout(after).build(client.clone());
        let names = Names::new(&config.name);
        let retention = if config.groups.len() == 1 {
            RetentionPolicy::WorkQueue
        } else {
            RetentionPolicy::Interest
        };
        let main = ensure_stream(
            &js,
            after,
            stream::Config {
                name: names.main.clone(),
                subjects: vec![names.enqueue()],
                retention,
                storage: StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        let redrive = ensure_stream(
            &js,
            after,
            stream::Config {
                name: names.redrive.clone(),
                subjects: vec![format!("{}.redrive.*", names.prefix)],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        let dlq = ensure_stream(
            &js,
            after,
            stream::Config {
                name: names.dlq.clone(),
                subjects: vec![format!("{}.dead.>", names.prefix)],
                retention: RetentionPolicy::Limits,
                max_messages_per_subject: 1,
                max_messages: i64::try_from(config.dead_letters_max).unwrap_or(i64::MAX),
                discard: DiscardPolicy::New,
                storage: StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        let mut groups = Vec::with_capacity(config.groups.len());
        for name in &config.groups {
            groups.push(Group {
                name: name.clone(),
                main: ensure_consumer(&main, &config, name, String::new()).await?,
                redrive: ensure_consumer(&redrive, &config, name, names.redrive(name)).await?,
                dequeues: AtomicU64::new(0),
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                js,
                names,
                main,
                redrive,
                dlq,
                groups,
                held: Mutex::new(Held::new(config.in_flight_max)),
                config,
                clock,
            }),
        })
    }

    /// Deletes the queue's three streams (and with them its consumers and every
    /// message, dead or alive) from the server.
    ///
    /// # Errors
    /// The server refused or did not answer.
    pub async fn delete(self) -> Result<(), QueueError> {
        let inner = &self.inner;
        for name in [&inner.names.main, &inner.names.redrive, &inner.names.dlq] {
            bounded("delete stream", inner.config.request_timeout, async {
                inner.js.delete_stream(name).await.map_err(nats("delete stream"))
            })
            .await?;
        }
        Ok(())
    }

    /// The configuration the queue was opened with.
    #[must_use]
    pub fn config(&self) -> &JetStreamConfig {
        &self.inner.config
    }

    fn group(&self, group: &str) -> Result<(usize, &Group), QueueError> {
        self.inner
            .groups
            .iter()
            .enumerate()
            .find(|(_, g)| g.name == group)
            .ok_or_else(|| QueueError::UnknownGroup(group.to_owned()))
    }

    fn timeout(&self) -> Duration {
        self.inner.config.request_timeout
    }

    /// Publishes to a stream and waits for its acknowledgement; returns the sequence.
    async fn publish(
        &self,
        op: &'static str,
        subject: String,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> Result<u64, QueueError> {
        let after = self.timeout();
        bounded(op, after, async {
            let pending = match headers {
                Some(headers) => {
                    self.inner.js.publish_with_headers(subject, headers, payload).await
                }
                None => self.inner.js.publish(subject, payload).await,
            }
            .map_err(publish_error(op, after))?;
            Ok(pending.await.map_err(publish_error(op, after))?.sequence)
        })
        .await
    }

    /// Sends `kind` for a delivery and waits for the server to confirm it.
    async fn settle(
        &self,
        op: &'static str,
        reply: Subject,
        kind: AckKind,
    ) -> Result<(), QueueError> {
        bounded(op, self.timeout(), async {
            self.inner.client.request(reply, kind.into()).await.map(drop).map_err(nats(op))
        })
        .await
    }

    /// Fetches up to `max` deliveries without waiting for new messages.
    async fn fetch(
        &self,
        consumer: &consumer::PullConsumer,
        max: usize,
    ) -> Result<Vec<js::Message>, QueueError> {
        bounded("fetch", self.timeout(), async {
            let mut batch =
                consumer.fetch().max_messages(max).messages().await.map_err(nats("fetch"))?;
            let mut got = Vec::with_capacity(max);
            while let Some(message) = batch.next().await {
                got.push(message.map_err(nats("fetch"))?);
            }
            Ok(got)
        })
        .await
    }

    /// Publishes a dead letter of group `g` (deduplicated by `dedupe`), waiting for
    /// the dead-letter stream to have it.
    async fn bury(
        &self,
        g: usize,
        id: u64,
        attempts: u32,
        payload: Bytes,
        dedupe: String,
    ) -> Result<(), QueueError> {
        let mut headers = HeaderMap::new();
        headers.insert(ID_HEADER, id.to_string());
        headers.insert(ATTEMPTS_HEADER, attempts.to_string());
        headers.insert(MSG_ID_HEADER, dedupe);
        let subject = self.inner.names.dead(&self.inner.groups[g].name, id);
        self.publish("dead-letter publish", subject, Some(headers), payload).await.map(drop)
    }

    /// Turns one fetched message into a delivery, or dead-letters it when it is past
    /// its last allowed delivery.
    async fn admit(
        &self,
        g: usize,
        message: js::Message,
        redriven: bool,
        until_ms: u64,
    ) -> Result<Option<Delivery>, QueueError> {
        let stream = if redriven { &self.inner.names.redrive } else { &self.inner.names.main };
        let info = message.info().map_err(nats("read delivery metadata"))?;
        let (seq, delivered) = (info.stream_sequence, info.delivered);
        let Some(reply) = message.reply.clone() else {
            return Err(QueueError::BadMessage {
                stream: stream.clone(),
                seq,
                problem: "no reply subject",
            });
        };
        let (id, origin) = if redriven {
            match header_u64(message.headers.as_ref(), ID_HEADER) {
                Some(id) => (id, Origin::Redrive { seq }),
                None => {
                    // Not written by this queue: drop it rather than block the group.
                    tracing::warn!(stream, seq, "redriven message without {ID_HEADER}; dropped");
                    self.settle("ack", reply, AckKind::Term).await?;
                    return Ok(None);
                }
            }
        } else {
            (seq, Origin::Main)
        };
        let attempt = u32::try_from(delivered).unwrap_or(u32::MAX);
        let max = self.inner.config.max_deliveries;
        if attempt > max {
            let tag = if redriven { 'r' } else { 'm' };
            let dedupe = format!("{}.{tag}{seq}", self.inner.groups[g].name);
            self.bury(g, id, max, message.payload.clone(), dedupe).await?;
            self.settle("ack", reply, AckKind::Ack).await?;
            return Ok(None);
        }
        self.inner.held.lock().insert(g, id, Holding { attempt, until_ms, reply, origin });
        Ok(Some(Delivery {
            receipt: Receipt { id: MessageId(id), attempt },
            payload: Arc::from(&message.payload[..]),
            visible_again_at_ms: until_ms,
        }))
    }

    async fn dequeue_reserved(
        &self,
        g: usize,
        max: usize,
        until_ms: u64,
    ) -> Result<Vec<Delivery>, QueueError> {
        let group = &self.inner.groups[g];
        let redrive_first =
            group.dequeues.fetch_add(1, Ordering::Relaxed).is_multiple_of(REDRIVE_TURN);
        let order = if redrive_first { [true, false] } else { [false, true] };
        let mut out = Vec::with_capacity(max);
        for redriven in order {
            let want = max - out.len();
            if want == 0 {
                break;
            }
            let consumer = if redriven { &group.redrive } else { &group.main };
            for message in self.fetch(consumer, want).await? {
                if let Some(delivery) = self.admit(g, message, redriven, until_ms).await? {
                    out.push(delivery);
                }
            }
        }
        Ok(out)
    }

    /// The message behind a delivery, read back from its stream.
    async fn payload_of(&self, id: u64, origin: Origin) -> Result<Bytes, QueueError> {
        let (stream, seq) = match origin {
            Origin::Main => (&self.inner.main, id),
            Origin::Redrive { seq } => (&self.inner.redrive, seq),
        };
        bounded("get message", self.timeout(), async {
            Ok(stream.get_raw_message(seq).await.map_err(nats("get message"))?.payload)
        })
        .await
    }

    async fn nack_holding(
        &self,
        g: usize,
        receipt: Receipt,
        holding: &Holding,
        delay: Duration,
    ) -> Result<(), QueueError> {
        if receipt.attempt >= self.inner.config.max_deliveries {
            let payload = self.payload_of(receipt.id.0, holding.origin).await?;
            let dedupe = match holding.origin {
                Origin::Main => format!("{}.m{}", self.inner.groups[g].name, receipt.id.0),
                Origin::Redrive { seq } => format!("{}.r{seq}", self.inner.groups[g].name),
            };
            self.bury(g, receipt.id.0, receipt.attempt, payload, dedupe).await?;
            self.settle("ack", holding.reply.clone(), AckKind::Ack).await
        } else {
            self.settle("nack", holding.reply.clone(), AckKind::Nak(Some(delay))).await
        }
    }
}

/// Gets or creates a stream; an existing one must have the retention asked for.
async fn ensure_stream(
    js: &js::Context,
    after: Duration,
    config: stream::Config,
) -> Result<stream::Stream, QueueError> {
    let retention = config.retention;
    let name = config.name.clone();
    let stream = bounded("create stream", after, async {
        js.get_or_create_stream(config).await.map_err(nats("create stream"))
    })
    .await?;
    let have = stream.cached_info().config.retention;
    if have != retention {
        return Err(QueueError::Config(format!(
            "stream {name} exists with {have:?} retention, not {retention:?}: \
             a queue cannot change between one consumer group and several"
        )));
    }
    Ok(stream)
}

/// Creates group `name`'s durable pull consumer on `stream`, or brings an existing
/// one to the configured `AckWait`, `MaxAckPending` and `MaxDeliver`.
async fn ensure_consumer(
    stream: &stream::Stream,
    config: &JetStreamConfig,
    name: &str,
    filter_subject: String,
) -> Result<consumer::PullConsumer, QueueError> {
    let wanted = consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.visibility,
        // Unlimited: the delivery count decides when a message dies (module docs).
        max_deliver: -1,
        max_ack_pending: i64::try_from(config.in_flight_max).unwrap_or(i64::MAX),
        filter_subject,
        ..Default::default()
    };
    // Create-or-update: a consumer left by an earlier open with another timeout or
    // bound gets this configuration.
    bounded("create consumer", config.request_timeout, async {
        stream.create_consumer(wanted).await.map_err(nats("create consumer"))
    })
    .await
}

/// JetStream's semantics differ from the embedded queue's where the module docs say.
impl MessageQueue for JetStreamQueue {
    async fn enqueue(&self, payload: Vec<u8>) -> Result<MessageId, QueueError> {
        let max = self.inner.config.message_bytes_max;
        if payload.len() > max {
            return Err(QueueError::TooLarge { len: payload.len(), max });
        }
        let seq = self.publish("publish", self.inner.names.enqueue(), None, payload.into()).await?;
        Ok(MessageId(seq))
    }

    async fn dequeue(
        &self,
        group: &str,
        max: usize,
        visibility: Option<Duration>,
    ) -> Result<Vec<Delivery>, QueueError> {
        let (g, _) = self.group(group)?;
        let fixed = self.inner.config.visibility;
        if let Some(asked) = visibility.filter(|v| *v != fixed) {
            return Err(QueueError::FixedVisibility { asked, fixed });
        }
        if max == 0 {
            return Ok(Vec::new());
        }
        let sent_ms = self.inner.clock.now_ms();
        let until_ms = sent_ms.saturating_add(u64::try_from(fixed.as_millis()).unwrap_or(u64::MAX));
        let granted = self.inner.held.lock().reserve(max, sent_ms)?;
        let result = self.dequeue_reserved(g, granted, until_ms).await;
        self.inner.held.lock().release(granted);
        result
    }

    async fn ack(&self, group: &str, receipt: Receipt) -> Result<(), QueueError> {
        let (g, _) = self.group(group)?;
        let holding = self.inner.held.lock().take(g, receipt, self.inner.clock.now_ms())?;
        let result = self.settle("ack", holding.reply.clone(), AckKind::Ack).await;
        if result.is_err() {
            self.inner.held.lock().put_back(g, receipt.id.0, holding);
        }
        result
    }

    async fn nack(&self, group: &str, receipt: Receipt, delay: Duration) -> Result<(), QueueError> {
        let (g, _) = self.group(group)?;
        let holding = self.inner.held.lock().take(g, receipt, self.inner.clock.now_ms())?;
        let result = self.nack_holding(g, receipt, &holding, delay).await;
        if result.is_err() {
            self.inner.held.lock().put_back(g, receipt.id.0, holding);
        }
        result
    }

    async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>, QueueError> {
        let (_, grp) = self.group(group)?;
        let inner = &self.inner;
        let after = self.timeout();
        // A throwaway consumer over the group's dead-letter subjects, read to the end.
        let reader: consumer::PullConsumer = bounded("list dead letters", after, async {
            inner
                .dlq
                .create_consumer(consumer::pull::Config {
                    ack_policy: consumer::AckPolicy::None,
                    filter_subject: inner.names.dead_of(&grp.name),
                    inactive_threshold: Duration::from_secs(60),
                    ..Default::default()
                })
                .await
                .map_err(nats("list dead letters"))
        })
        .await?;
        let mut dead = Vec::new();
        let listed = async {
            while dead.len() < inner.config.dead_letters_max {
                let want = LIST_BATCH.min(inner.config.dead_letters_max - dead.len());
                let batch = self.fetch(&reader, want).await?;
                let done = batch.len() < want;
                for message in batch {
                    let headers = message.headers.as_ref();
                    let (Some(id), Some(attempts)) =
                        (header_u64(headers, ID_HEADER), header_u64(headers, ATTEMPTS_HEADER))
                    else {
                        let seq = message.info().map_or(0, |i| i.stream_sequence);
                        return Err(QueueError::BadMessage {
                            stream: inner.names.dlq.clone(),
                            seq,
                            problem: "dead letter without its id or attempts",
                        });
                    };
                    dead.push(DeadLetter {
                        id: MessageId(id),
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                        payload: Arc::from(&message.payload[..]),
                    });
                }
                if done {
                    break;
                }
            }
            Ok(())
        }
        .await;
        let name = reader.cached_info().name.clone();
        let dropped = bounded("list dead letters", after, async {
            inner.dlq.delete_consumer(&name).await.map_err(nats("list dead letters"))
        })
        .await;
        if let Err(err) = dropped {
            // The server drops it after its inactivity threshold anyway.
            tracing::debug!(consumer = name, %err, "dead-letter reader not deleted");
        }
        listed?;
        dead.sort_by_key(|d| d.id);
        Ok(dead)
    }

    async fn redrive(&self, group: &str, id: MessageId) -> Result<(), QueueError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let (_, grp) = self.group(group)?;
        let inner = &self.inner;
        let after = self.timeout();
        let subject = inner.names.dead(&grp.name, id.0);
        let dead = bounded("get dead letter", after, async {
            match inner.dlq.get_last_raw_message_by_subject(&subject).await {
                Ok(message) => Ok(Some(message)),
                Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(err) => Err(nats("get dead letter")(err)),
            }
        })
        .await?
        .ok_or(QueueError::NotDead(id))?;
        let mut headers = HeaderMap::new();
        headers.insert(ID_HEADER, id.0.to_string());
        headers.insert(MSG_ID_HEADER, format!("{}.redrive{}", grp.name, dead.sequence));
        self.publish(
            "redrive publish",
            inner.names.redrive(&grp.name),
            Some(headers),
            dead.payload,
        )
        .await?;
        bounded("delete dead letter", after, async {
            inner.dlq.delete_message(dead.sequence).await.map_err(nats("delete dead letter"))
        })
        .await?;
        Ok(())
    }

    async fn stats(&self, group: &str) -> Result<GroupStats, QueueError> {
        let (_, grp) = self.group(group)?;
        let inner = &self.inner;
        bounded("stats", self.timeout(), async {
            let (main, redrive) =
                futures_util::future::try_join(grp.main.get_info(), grp.redrive.get_info())
                    .await
                    .map_err(nats("stats"))?;
            let mut subjects = inner
                .dlq
                .info_with_subjects(inner.names.dead_of(&grp.name))
                .await
                .map_err(nats("stats"))?;
            let mut dead = 0usize;
            while let Some((_, count)) = subjects.try_next().await.map_err(nats("stats"))? {
                dead += count;
            }
            let ready = main.num_pending.saturating_add(redrive.num_pending);
            Ok(GroupStats {
                ready: usize::try_from(ready).unwrap_or(usize::MAX),
                in_flight: main.num_ack_pending + redrive.num_ack_pending,
                dead,
            })
        })
        .await
    }
}
