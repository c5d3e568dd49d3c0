//! WhatsApp: 1:1 and group chats whose devices send and receive over a WebSocket,
//! on whichever instance each is connected to.
//!
//! **Path of a message.** A device sends `{"type":"send", chat, client_id, body}`.
//! The server checks the sender is a member, stores the message on its chat's shard
//! as the chat's next `seq` ([`store`]) and answers `sent` (the sent receipt). Only
//! then is it pushed: one frame per member, on the member's topic of the hub, which
//! NATS joins across instances ([`girder_realtime::nats::NatsBroker`]); each instance
//! routes the frames for its connected users into their devices' outboxes
//! ([`girder_realtime::ws::Registry`]).
//!
//! **Delivery, exactly once after dedupe, in per-chat order.** Push is only a fast
//! path; the table is the truth. A connection first drains the device's offline
//! inbox (every message above its cursor) and then forwards pushed messages, keeping
//! the last seq it wrote per chat: a pushed message at or below it is a duplicate and
//! skipped; one beyond the next expected means something was missed (a push lost
//! between instances, a gap in a slow router) and the chat is drained again from the
//! table. So a device receives each chat's messages in order with no gap, and after
//! a reconnect everything above its cursor again — a client dedupes by
//! `(chat, seq)`. The device moves its cursor with `delivered` / `read` (cumulative,
//! clamped to what the connection wrote), and the chat's members get a `receipt`.
//!
//! **Idempotent resends.** A resend with the same `client_id` answers `sent` with the
//! stored message's seq and `duplicate: true`, and pushes nothing.
//!
//! **Presence and typing.** Each connection holds a presence lease for its device
//! (a user is online while any device is; a dead instance's leases run out), and
//! `typing` is fanned out to the other members as a frame that expires on its own;
//! neither is stored.
//!
//! **Retention.** A background job deletes messages older than the retention (30
//! days by default), a bounded batch per shard at a time.
//!
//! HTTP surface, nested at `/api/whatsapp`: the WebSocket at `/ws`, devices, chats,
//! members, message history and sending over HTTP, receipts, presence, and the
//! operator's stats and retention run. The frames are documented on [`ClientFrame`]
//! and [`ServerFrame`].

mod api;
mod settings;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use girder_core::Clock;
use girder_realtime::nats::NatsBroker;
use girder_realtime::presence::{AnyPresence, MemoryPresence, PresenceStore};
use girder_realtime::presence_redis::RedisPresence;
use girder_realtime::ws::{CloseCode, KeepAlive, Registry, RegistryConfig};
use girder_realtime::{Event, Hub, HubConfig, Pattern, SlowConsumer, SubscribeConfig, Topic};
use girder_sql::Db;
use girder_system::{BoxError, Context, OpenError, Shutdown, System, SystemInfo};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use store::{Chat, Message, Store, StoreError};

pub use api::{
    AddMemberRequest, ChatKind, ChatPage, ChatPageQuery, ChatView, ConnectQuery, CreateChatRequest,
    CursorView, DeviceView, DevicesView, MessagePage, MessagePageQuery, PresenceView, ReceiptsView,
    RetentionView, SendRequest, WhatsAppApi, WhatsAppStatsView,
};
pub use settings::WhatsAppSettings;

/// WhatsApp's migrations on the instance's database.
#[must_use]
pub fn migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "whatsapp",
        sqlite: sqlx::migrate!("migrations/sqlite"),
        postgres: sqlx::migrate!("migrations/postgres"),
    }
}

/// Everything WhatsApp needs to start.
#[derive(Debug, Clone)]
pub struct WhatsAppConfig {
    /// Messages older than this are deleted, ms.
    pub retention_ms: u64,
    /// Between retention runs, ms.
    pub retention_interval_ms: u64,
    /// How long a device counts as online after its connection's last beat, ms.
    pub presence_ttl_ms: u64,
    /// How long a typing indicator lasts, ms.
    pub typing_ttl_ms: u64,
    /// Message shard databases; empty: the instance's own database is the one shard.
    pub message_shards: Vec<String>,
    /// Connections each extra shard's pool holds.
    pub shard_pool_connections: u32,
    /// Ping interval and silence timeout of connections.
    pub keepalive: KeepAlive,
    /// The largest frame a client may send, bytes.
    pub max_frame_bytes: usize,
    /// Connections this instance holds, devices per user, frames per outbox.
    pub registry: RegistryConfig,
    /// The NATS subject prefix joining instances' hubs.
    pub nats_prefix: String,
    /// The Redis key prefix of presence.
    pub presence_prefix: String,
}

impl WhatsAppConfig {
    /// The defaults: 30 days of retention checked hourly, presence 30 s after the
    /// last beat, typing shown 5 s, one shard, 16 KiB frames, 10,000 connections.
    #[must_use]
    pub fn new() -> Self {
        Self {
            retention_ms: 30 * 24 * 3_600_000,
            retention_interval_ms: 3_600_000,
            presence_ttl_ms: 30_000,
            typing_ttl_ms: 5_000,
            message_shards: Vec::new(),
            shard_pool_connections: 4,
            keepalive: KeepAlive::default(),
            max_frame_bytes: 16 << 10,
            registry: RegistryConfig {
                connections_max: 10_000,
                devices_per_user_max: 8,
                outbox: 1_024,
            },
            nats_prefix: "girder.whatsapp".to_owned(),
            presence_prefix: "girder:whatsapp:presence".to_owned(),
        }
    }
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WhatsAppError {
    /// The chat does not exist or the caller is not in it (not told apart).
    #[error("no such chat")]
    NotFound,
    /// The request is out of bounds.
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for WhatsAppError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// A frame a client sends over the WebSocket (JSON text, `type` says which).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Send a message; answered by `sent` (or `error`).
    Send {
        /// The chat.
        chat: String,
        /// The client's id for it, 1–64 characters: a resend with the same id is the
        /// same message.
        client_id: String,
        /// The text, 1–4,096 characters.
        body: String,
    },
    /// Every message of `chat` up to `seq` reached this device.
    Delivered {
        /// The chat.
        chat: String,
        /// The last seq received.
        seq: i64,
    },
    /// Every message of `chat` up to `seq` was read on this device.
    Read {
        /// The chat.
        chat: String,
        /// The last seq read.
        seq: i64,
    },
    /// The user is typing in `chat` (shown to the others for a few seconds).
    Typing {
        /// The chat.
        chat: String,
    },
}

/// A message as devices receive it and history lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct MessageView {
    /// The chat.
    pub chat: String,
    /// Its place in the chat (1, 2, 3, …).
    pub seq: i64,
    /// Who sent it.
    pub sender: String,
    /// From which device.
    pub device: String,
    /// The sender's id for it.
    pub client_id: String,
    /// The text.
    pub body: String,
    /// When it was stored, ms since the epoch.
    pub created_ms: i64,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        Self {
            chat: m.chat,
            seq: m.seq,
            sender: m.sender,
            device: m.device,
            client_id: m.client_id,
            body: m.body,
            created_ms: m.created_ms,
        }
    }
}

/// Which receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptState {
    /// Reached the device.
    Delivered,
    /// Read on the device.
    Read,
}

/// A frame the server sends over the WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The first frame: who the connection is.
    Hello {
        /// The user.
        user: String,
        /// The device.
        device: String,
        /// When the token expires (the connection closes with 4001 then), Unix s.
        expires_at: u64,
    },
    /// A message (from the offline inbox, or live).
    Message(MessageView),
    /// The offline inbox has been sent; live messages follow.
    Synced,
    /// A message this device sent is stored.
    Sent {
        /// The chat.
        chat: String,
        /// Its seq.
        seq: i64,
        /// The client's id for it.
        client_id: String,
        /// When it was stored.
        created_ms: i64,
        /// A resend of a stored message (nothing new was stored or pushed).
        duplicate: bool,
    },
    /// A member's device received or read the chat up to `seq`.
    Receipt {
        /// The chat.
        chat: String,
        /// The member.
        user: String,
        /// Their device.
        device: String,
        /// Delivered or read.
        state: ReceiptState,
        /// Up to this seq (cumulative).
        seq: i64,
    },
    /// A member is typing.
    Typing {
        /// The chat.
        chat: String,
        /// Who.
        user: String,
        /// Show it until then, ms since the epoch.
        until_ms: i64,
    },
    /// A frame could not be carried out; the connection stays open.
    Error {
        /// `invalid_message`, `not_found`, `invalid`, `unavailable`.
        error: String,
        /// What went wrong.
        detail: String,
        /// The `client_id` of the `send` it answers, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
}

impl ServerFrame {
    /// The frame as JSON text.
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        // Serializing these plain shapes cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// What the router puts in a connection's outbox.
#[derive(Debug)]
pub(crate) enum Push {
    /// A message: forwarded in order, or the chat is drained from the table.
    Message { chat: String, seq: i64, json: Bytes },
    /// Any other frame, as is.
    Other(Bytes),
    /// Pushes may have been lost: drain every chat from the table.
    Resync,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    duplicates: AtomicU64,
    pushed: AtomicU64,
    resyncs: AtomicU64,
    retention_deleted: AtomicU64,
}

/// A running WhatsApp.
pub struct WhatsApp {
    store: Store,
    hub: Hub,
    broker: Option<NatsBroker>,
    registry: Registry<Arc<Push>>,
    presence: AnyPresence,
    clock: Arc<dyn Clock>,
    config: WhatsAppConfig,
    extra_shards: Vec<Db>,
    counters: Counters,
    router: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Cursor moves not yet written: `(user, device, chat) → (delivered, read)`.
    acks: parking_lot::Mutex<HashMap<store::CursorKey, (i64, i64)>>,
    /// Chat members for receipts and typing, briefly cached: `chat → (at, members)`.
    members: parking_lot::Mutex<HashMap<String, CachedMembers>>,
    flusher: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A chat's members and when they were read.
type CachedMembers = (Instant, Arc<[String]>);

/// How often buffered cursor moves are written (in one transaction).
const ACK_FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How long a chat's member list serves receipts and typing.
const MEMBERS_FRESH: Duration = Duration::from_secs(2);
/// Chats whose members are cached at once.
const MEMBERS_CACHED_MAX: usize = 10_000;

impl std::fmt::Debug for WhatsApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsApp").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The hub topic carrying frames for `user` (hashed: user ids are any text).
fn user_topic(user: &str) -> Topic {
    Topic::hashed("wa.u", user).unwrap_or_else(|_| unreachable!("a valid prefix"))
}

/// The presence room of one user's devices.
fn presence_room(user: &str) -> String {
    format!("wa:{user}")
}

impl WhatsApp {
    /// Opens on `context`: hubs joined through NATS when `context` has it, presence in
    /// Redis when it has that, message shards from the config.
    ///
    /// # Errors
    /// NATS, Redis or a shard cannot be reached, or a shard's migration failed.
    pub async fn open_with(
        context: &Context,
        config: WhatsAppConfig,
    ) -> Result<Arc<Self>, OpenError> {
        let hub = Hub::new(HubConfig { history_per_topic: 0, ..HubConfig::default() })
            .map_err(OpenError::storage)?;
        let broker = match context.nats_url.as_deref() {
            Some(url) => Some(
                NatsBroker::connect(url, hub.clone(), &config.nats_prefix)
                    .await
                    .map_err(OpenError::storage)?,
            ),
            None => None,
        };
        let presence = match context.redis_url.as_deref() {
            Some(url) => {
                let client = redis::Client::open(url).map_err(OpenError::storage)?;
                let conn =
                    redis::aio::ConnectionManager::new(client).await.map_err(OpenError::storage)?;
                AnyPresence::Redis(Box::new(RedisPresence::new(
                    conn,
                    config.presence_prefix.clone(),
                )))
            }
            None => AnyPresence::Memory(MemoryPresence::new(Arc::clone(&context.clock))),
        };
        let pool = girder_sql::PoolConfig {
            max_connections: config.shard_pool_connections,
            ..girder_sql::PoolConfig::default()
        };
        let mut extra_shards = Vec::new();
        for url in &config.message_shards {
            if let Some(dir) = girder_sql::sqlite_parent_dir(url) {
                std::fs::create_dir_all(&dir).map_err(OpenError::storage)?;
            }
            extra_shards.push(Db::connect(url, pool).await.map_err(OpenError::storage)?);
        }
        let shards =
            if extra_shards.is_empty() { vec![context.db.clone()] } else { extra_shards.clone() };
        for db in &shards {
            girder_sql::migrate::run(db, store::message_migrations()).await?;
        }
        let store = Store::new(context.db.clone(), shards).map_err(OpenError::storage)?;
        let wa = Arc::new(Self {
            store,
            hub,
            broker,
            registry: Registry::new(config.registry),
            presence,
            clock: Arc::clone(&context.clock),
            config,
            extra_shards,
            counters: Counters::default(),
            router: parking_lot::Mutex::new(None),
            acks: parking_lot::Mutex::new(HashMap::new()),
            members: parking_lot::Mutex::new(HashMap::new()),
            flusher: parking_lot::Mutex::new(None),
        });
        let router = wa.start_router().map_err(OpenError::storage)?;
        *wa.router.lock() = Some(router);
        let flusher = {
            let wa = Arc::downgrade(&wa);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ACK_FLUSH_EVERY).await;
                    let Some(wa) = wa.upgrade() else { return };
                    wa.flush_acks().await;
                }
            })
        };
        *wa.flusher.lock() = Some(flusher);
        Ok(wa)
    }

    /// The tables.
    #[must_use]
    pub const fn store(&self) -> &Store {
        &self.store
    }

    /// The connections of this instance.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.registry.connections()
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Routes the frames published for users into the outboxes of their devices
    /// connected here. A gap in the router's own buffer resyncs every connection.
    fn start_router(
        self: &Arc<Self>,
    ) -> Result<tokio::task::JoinHandle<()>, girder_realtime::HubError> {
        let pattern = Pattern::new("wa.u.>").unwrap_or_else(|_| unreachable!("a valid pattern"));
        let mut sub = self.hub.subscribe(
            &pattern,
            SubscribeConfig { capacity: 65_536, policy: SlowConsumer::DropOldest },
        )?;
        let wa = Arc::downgrade(self);
        Ok(tokio::spawn(async move {
            while let Ok(event) = sub.recv().await {
                let Some(wa) = wa.upgrade() else { return };
                match event {
                    Event::Message(m) => wa.route(&m.payload),
                    Event::Gap { missed } => {
                        tracing::warn!(
                            missed,
                            "the WhatsApp router fell behind; resyncing connections"
                        );
                        wa.counters.resyncs.fetch_add(1, Ordering::Relaxed);
                        wa.registry.send_to_all(&Arc::new(Push::Resync));
                    }
                }
            }
        }))
    }

    /// One routed frame: `user '\n' head '\n' frame-json`, where the head is
    /// `m <chat> <seq>` for a message and `o` for any other frame — so routing never
    /// parses the JSON.
    fn route(&self, payload: &Bytes) {
        let mut lines = payload.splitn(3, |&b| b == b'\n');
        let (Some(user), Some(head), Some(_)) = (lines.next(), lines.next(), lines.next()) else {
            return;
        };
        let (Ok(user), Ok(head)) = (std::str::from_utf8(user), std::str::from_utf8(head)) else {
            return;
        };
        let json = payload.slice(user.len() + head.len() + 2..);
        let push = match head.split(' ').collect::<Vec<_>>()[..] {
            ["m", chat, seq] => match seq.parse() {
                Ok(seq) => Push::Message { chat: chat.to_owned(), seq, json },
                Err(_) => return,
            },
            ["o"] => Push::Other(json),
            _ => return,
        };
        let fanout = self.registry.send_to_user(user, &Arc::new(push));
        self.counters.pushed.fetch_add(fanout.delivered as u64, Ordering::Relaxed);
    }

    /// Publishes `frame` to every device of each of `users`, on every instance.
    async fn push(&self, users: &[String], frame: &ServerFrame) {
        let json = frame.to_bytes();
        let head = match frame {
            ServerFrame::Message(m) => format!("m {} {}", m.chat, m.seq),
            _ => "o".to_owned(),
        };
        for user in users {
            let mut payload = Vec::with_capacity(user.len() + head.len() + 2 + json.len());
            payload.extend_from_slice(user.as_bytes());
            payload.push(b'\n');
            payload.extend_from_slice(head.as_bytes());
            payload.push(b'\n');
            payload.extend_from_slice(&json);
            let topic = user_topic(user);
            let published = match &self.broker {
                Some(broker) => {
                    broker.publish(&topic, payload).await.map(drop).map_err(|e| e.to_string())
                }
                None => self.hub.publish(&topic, payload).map(drop).map_err(|e| e.to_string()),
            };
            if let Err(e) = published {
                // The table still has it: the device gets it on its next drain.
                tracing::warn!(error = %e, "a frame was not pushed to every instance");
            }
        }
    }

    /// Creates a chat. `direct` with one other user gives the pair's one direct chat
    /// (the same chat again if it exists); `group` any set of members with a title.
    ///
    /// # Errors
    /// Bounds, or the store failed.
    pub async fn create_chat(
        &self,
        creator: &str,
        kind: &str,
        title: &str,
        others: &[String],
    ) -> Result<(Chat, Vec<String>, bool), WhatsAppError> {
        let mut members: Vec<String> =
            others.iter().chain([&creator.to_owned()]).cloned().collect();
        members.sort_unstable();
        members.dedup();
        let id = match kind {
            "direct" => {
                if members.len() != 2 {
                    return Err(WhatsAppError::Invalid(
                        "a direct chat has exactly one other member".into(),
                    ));
                }
                let key = format!("{}\u{0}{}", members[0], members[1]);
                let hash = blake3::hash(key.as_bytes());
                let hex: String =
                    hash.as_bytes()[..10].iter().map(|b| format!("{b:02x}")).collect();
                format!("d{hex}")
            }
            _ => format!("g{:020x}", rand::random::<u128>() >> 48),
        };
        let chat = Chat {
            id,
            kind: kind.to_owned(),
            title: title.to_owned(),
            created_by: creator.to_owned(),
            created_ms: self.now_ms(),
        };
        let created = self.store.create_chat(&chat, &members).await?;
        let chat = if created {
            chat
        } else {
            self.store.chat(&chat.id).await?.ok_or(WhatsAppError::NotFound)?
        };
        let members = self.store.members(&chat.id).await?;
        Ok((chat, members, created))
    }

    /// Sends `body` to `chat` as `sender` from `device`: stored, then pushed.
    /// A resend with a stored `client_id` returns that message and `true`.
    ///
    /// # Errors
    /// [`WhatsAppError::NotFound`] when the sender is not a member; a store failure
    /// (nothing stored).
    pub async fn send(
        &self,
        sender: &str,
        device: &str,
        chat: &str,
        client_id: &str,
        body: &str,
    ) -> Result<(Message, bool), WhatsAppError> {
        // Read before the write, so a member added after it is not pushed a message
        // from before their join (they would skip it as below their joined seq anyway).
        let members = self.store.members(chat).await?;
        if !members.iter().any(|m| m == sender) {
            return Err(WhatsAppError::NotFound);
        }
        let (message, duplicate) =
            self.store.append(chat, sender, device, client_id, body, self.now_ms()).await?;
        if duplicate {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok((message, true));
        }
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("girder_whatsapp_messages_total").increment(1);
        self.push(&members, &ServerFrame::Message(MessageView::from(message.clone()))).await;
        Ok((message, false))
    }

    /// Moves `device`'s cursor in `chat` to `seq` and tells the members. The move is
    /// buffered and written within [`ACK_FLUSH_EVERY`] with every other one in one
    /// transaction: a crash in between loses only cursor moves, so the device is sent
    /// those messages again on reconnect (and dedupes them) — nothing is lost.
    /// The caller vouches that `user` received up to `seq` in `chat` (a connection
    /// acknowledges only what it wrote); a user no longer in the chat moves nothing.
    ///
    /// # Errors
    /// [`WhatsAppError::NotFound`] when the user is not a member; a store failure.
    pub async fn ack(
        &self,
        user: &str,
        device: &str,
        chat: &str,
        seq: i64,
        state: ReceiptState,
    ) -> Result<(), WhatsAppError> {
        let members = self.members_of(chat).await?;
        if !members.iter().any(|m| m == user) {
            return Err(WhatsAppError::NotFound);
        }
        let read = if state == ReceiptState::Read { seq } else { 0 };
        {
            let mut acks = self.acks.lock();
            let entry =
                acks.entry((user.to_owned(), device.to_owned(), chat.to_owned())).or_insert((0, 0));
            entry.0 = entry.0.max(seq);
            entry.1 = entry.1.max(read);
        }
        let frame = ServerFrame::Receipt {
            chat: chat.to_owned(),
            user: user.to_owned(),
            device: device.to_owned(),
            state,
            seq,
        };
        self.push(&members, &frame).await;
        Ok(())
    }

    /// Writes the buffered cursor moves; a failure puts them back for the next try.
    pub async fn flush_acks(&self) {
        let pending: Vec<_> = std::mem::take(&mut *self.acks.lock()).into_iter().collect();
        if pending.is_empty() {
            return;
        }
        if let Err(e) = self.store.advance_many(&pending, self.now_ms()).await {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "cursor moves not written; retrying"
            );
            let mut acks = self.acks.lock();
            for (key, (delivered, read)) in pending {
                let entry = acks.entry(key).or_insert((0, 0));
                entry.0 = entry.0.max(delivered);
                entry.1 = entry.1.max(read);
            }
        }
    }

    /// The members of `chat`, from a cache refreshed every [`MEMBERS_FRESH`] (for
    /// receipts and typing; sending reads them from the table).
    async fn members_of(&self, chat: &str) -> Result<Arc<[String]>, WhatsAppError> {
        if let Some((at, members)) = self.members.lock().get(chat)
            && at.elapsed() < MEMBERS_FRESH
        {
            return Ok(Arc::clone(members));
        }
        let members: Arc<[String]> = self.store.members(chat).await?.into();
        let mut cache = self.members.lock();
        if cache.len() >= MEMBERS_CACHED_MAX {
            cache.retain(|_, (at, _)| at.elapsed() < MEMBERS_FRESH);
            if cache.len() >= MEMBERS_CACHED_MAX {
                cache.clear();
            }
        }
        cache.insert(chat.to_owned(), (Instant::now(), Arc::clone(&members)));
        Ok(members)
    }

    /// Tells the other members of `chat` that `user` is typing.
    ///
    /// # Errors
    /// [`WhatsAppError::NotFound`] when the user is not a member; a store failure.
    pub async fn typing(&self, user: &str, chat: &str) -> Result<(), WhatsAppError> {
        let members = self.members_of(chat).await?;
        if !members.iter().any(|m| m == user) {
            return Err(WhatsAppError::NotFound);
        }
        let others: Vec<String> = members.iter().filter(|m| *m != user).cloned().collect();
        let until_ms =
            self.now_ms().saturating_add(i64::try_from(self.config.typing_ttl_ms).unwrap_or(0));
        let frame = ServerFrame::Typing { chat: chat.to_owned(), user: user.to_owned(), until_ms };
        self.push(&others, &frame).await;
        Ok(())
    }

    /// Whether `user` is online (any device) and when they were last seen.
    ///
    /// # Errors
    /// Presence failed.
    pub async fn presence_of(&self, user: &str) -> Result<(bool, usize, Option<u64>), BoxError> {
        let online = self.presence.online(&presence_room(user)).await?;
        let devices = online.iter().map(|o| o.devices).sum();
        let last_seen = self.presence.last_seen(user).await?;
        Ok((devices > 0, devices, last_seen))
    }

    /// Deletes messages past the retention, in batches, until none is left or
    /// `batches_max` batches ran; returns how many.
    ///
    /// # Errors
    /// A shard failed.
    pub async fn run_retention(&self, batches_max: u32) -> Result<u64, WhatsAppError> {
        let cutoff = self
            .now_ms()
            .saturating_sub(i64::try_from(self.config.retention_ms).unwrap_or(i64::MAX));
        let mut total = 0;
        for _ in 0..batches_max {
            let n = self.store.delete_older(cutoff, 1_000).await?;
            total += n;
            if n == 0 {
                break;
            }
        }
        self.counters.retention_deleted.fetch_add(total, Ordering::Relaxed);
        Ok(total)
    }
}

impl System for WhatsApp {
    type Settings = WhatsAppSettings;

    const INFO: SystemInfo = SystemInfo {
        slug: "whatsapp",
        name: "WhatsApp",
        summary: "chats over WebSocket across instances: per-device delivery and read receipts, an offline inbox, presence and typing",
        patterns: &[
            "WebSockets for Bi-directional Communication",
            "Pub/Sub for Event Broadcasting",
            "Database Sharding",
        ],
    };

    const DASHBOARD: &'static str = include_str!("../assets/whatsapp.html");

    async fn open(context: &Context, settings: WhatsAppSettings) -> Result<Arc<Self>, OpenError> {
        let config = settings.resolve()?;
        girder_sql::migrate::run(&context.db, migrations()).await?;
        Self::open_with(context, config).await
    }

    fn router(self: &Arc<Self>) -> girder_system::Router {
        self.api_router()
    }

    fn openapi() -> utoipa::openapi::OpenApi {
        api::document()
    }

    async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let interval = Duration::from_millis(self.config.retention_interval_ms);
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(interval) => {
                    match self.run_retention(100).await {
                        Ok(n) if n > 0 => tracing::info!(deleted = n, "whatsapp retention"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = &e as &dyn std::error::Error, "whatsapp retention failed"),
                    }
                }
            }
        }
        // Open sockets end with 1001 instead of hanging the shutdown.
        self.registry.close_all(CloseCode::GoingAway);
        if let Some(router) = self.router.lock().take() {
            router.abort();
        }
        if let Some(flusher) = self.flusher.lock().take() {
            flusher.abort();
        }
        self.flush_acks().await;
        self.hub.close();
        for db in &self.extra_shards {
            db.close().await;
        }
    }

    async fn ready(&self) -> Result<(), BoxError> {
        self.store.db().ping().await?;
        Ok(())
    }
}
