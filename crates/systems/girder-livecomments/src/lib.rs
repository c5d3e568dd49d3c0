//! FB Live Comments: viewers of a live video watch comments arrive as they are
//! posted, whichever instance they are connected to.
//!
//! **Path of a comment.** `POST /videos/{video}/comments` stores the comment (the
//! table is the history) and publishes it on the video's topic through
//! girder-realtime's hub; with NATS configured the hubs of all instances are joined
//! ([`girder_realtime::nats::NatsBroker`]), so every instance's viewers get it. Each
//! viewer's `GET /videos/{video}/stream` is a Server-Sent Events stream: its event ids
//! are hub positions, so a browser that reconnects with `Last-Event-ID` to the same
//! instance gets exactly the comments it missed, or a `resume` event with
//! `"recovered": false` when the instance's history no longer reaches back (or it
//! reconnected to another instance) — the page then reloads the history. A viewer
//! whose buffer overflows gets a `gap` event, never a silent loss.
//!
//! **Viewers.** Each open stream holds a presence lease for its viewer (one device
//! per connection) and renews it while open; `GET /videos/{video}/viewers` counts the
//! viewers whose lease is alive, across instances when Redis is configured. A dead
//! instance's viewers drop out when their leases run out.
//!
//! **Limits.** Posting wears the server's rate-limit layer (a per-user rule in the
//! built-in limits); a comment is 1–500 characters.
//!
//! Not yet: comments fed by change data capture from the table (they are published
//! by the instance that stored them).
//!
//! HTTP surface, nested at `/api/livecomments`: `POST/GET /videos/{video}/comments`,
//! `GET /videos/{video}/stream`, `GET /videos/{video}/viewers`.

mod api;
mod settings;
pub mod store;

use std::sync::Arc;

use girder_core::Clock;
use girder_realtime::nats::NatsBroker;
use girder_realtime::presence::{MemoryPresence, Online, PresenceError, PresenceStore};
use girder_realtime::presence_redis::RedisPresence;
use girder_realtime::{Hub, HubConfig, Topic};
use girder_system::{BoxError, Context, OpenError, Shutdown, System, SystemInfo};

use store::{Comment, Store};

pub use api::{
    CommentPage, CommentView, ErrorKind, LiveCommentsApi, NewCommentRequest, PageQuery, ViewersView,
};
pub use settings::LiveCommentsSettings;

/// Live Comments' migrations.
#[must_use]
pub fn migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "livecomments",
        sqlite: sqlx::migrate!("migrations/sqlite"),
        postgres: sqlx::migrate!("migrations/postgres"),
    }
}

/// Everything Live Comments needs to start.
#[derive(Debug, Clone)]
pub struct LiveCommentsConfig {
    /// Comments per video kept in memory for resume.
    pub history: usize,
    /// How long a viewer counts after their connection's last beat.
    pub presence_ttl_ms: u64,
    /// The NATS subject prefix joining instances' hubs.
    pub nats_prefix: String,
    /// The Redis key prefix of presence.
    pub presence_prefix: String,
}

impl LiveCommentsConfig {
    /// The defaults: 1,000 comments of history per video, viewers counted 30 s after
    /// their last beat.
    #[must_use]
    pub fn new() -> Self {
        Self {
            history: 1_000,
            presence_ttl_ms: 30_000,
            nats_prefix: "girder.livecomments".to_owned(),
            presence_prefix: "girder:livecomments:viewers".to_owned(),
        }
    }
}

impl Default for LiveCommentsConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Where viewers are counted.
#[derive(Debug, Clone)]
pub(crate) enum Viewers {
    Local(MemoryPresence),
    Shared(Box<RedisPresence>),
}

impl Viewers {
    pub(crate) async fn beat(
        &self,
        video: &str,
        viewer: &str,
        connection: &str,
        ttl: u64,
    ) -> Result<(), PresenceError> {
        match self {
            Self::Local(p) => p.heartbeat(video, viewer, connection, ttl).await.map(drop),
            Self::Shared(p) => p.heartbeat(video, viewer, connection, ttl).await.map(drop),
        }
    }

    pub(crate) async fn leave(
        &self,
        video: &str,
        viewer: &str,
        connection: &str,
    ) -> Result<(), PresenceError> {
        match self {
            Self::Local(p) => p.leave(video, viewer, connection).await.map(drop),
            Self::Shared(p) => p.leave(video, viewer, connection).await.map(drop),
        }
    }

    pub(crate) async fn online(&self, video: &str) -> Result<Vec<Online>, PresenceError> {
        match self {
            Self::Local(p) => p.online(video).await,
            Self::Shared(p) => p.online(video).await,
        }
    }
}

/// A running Live Comments.
pub struct LiveComments {
    store: Store,
    hub: Hub,
    broker: Option<NatsBroker>,
    viewers: Viewers,
    clock: Arc<dyn Clock>,
    config: LiveCommentsConfig,
}

impl std::fmt::Debug for LiveComments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveComments").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveCommentsError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Presence failed.
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

/// The hub topic of a video's comments.
pub(crate) fn topic(video: &str) -> Option<Topic> {
    Topic::new(format!("video.{video}")).ok()
}

impl LiveComments {
    /// Opens on `context`: hubs joined through NATS when `context` has it, viewers
    /// counted in Redis when it has that.
    ///
    /// # Errors
    /// NATS or Redis cannot be reached.
    pub async fn open_with(
        context: &Context,
        config: LiveCommentsConfig,
    ) -> Result<Arc<Self>, OpenError> {
        let hub = Hub::new(HubConfig { history_per_topic: config.history, ..HubConfig::default() })
            .map_err(OpenError::storage)?;
        let broker = match context.nats_url.as_deref() {
            Some(url) => Some(
                NatsBroker::connect(url, hub.clone(), &config.nats_prefix)
                    .await
                    .map_err(OpenError::storage)?,
            ),
            None => None,
        };
        let viewers = match context.redis_url.as_deref() {
            Some(url) => {
                let client = redis::Client::open(url).map_err(OpenError::storage)?;
                let conn =
                    redis::aio::ConnectionManager::new(client).await.map_err(OpenError::storage)?;
                Viewers::Shared(Box::new(RedisPresence::new(conn, config.presence_prefix.clone())))
            }
            None => Viewers::Local(MemoryPresence::new(Arc::clone(&context.clock))),
        };
        Ok(Arc::new(Self {
            store: Store::new(context.db.clone()),
            hub,
            broker,
            viewers,
            clock: Arc::clone(&context.clock),
            config,
        }))
    }

    /// The comments table.
    #[must_use]
    pub const fn store(&self) -> &Store {
        &self.store
    }

    /// This instance's hub.
    #[must_use]
    pub const fn hub(&self) -> &Hub {
        &self.hub
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Stores `body` by `author` on `video` and publishes it to the video's viewers.
    ///
    /// # Errors
    /// The database failed (nothing published). A failed publish to other instances is
    /// logged: the comment is stored and this instance's viewers have it.
    pub async fn post(
        &self,
        video: &str,
        author: &str,
        body: &str,
    ) -> Result<Comment, LiveCommentsError> {
        let comment = self.store.insert(video, author, body, self.now_ms()).await?;
        metrics::counter!("girder_livecomments_comments_total").increment(1);
        if let Some(topic) = topic(video) {
            let payload =
                serde_json::to_vec(&api::CommentView::from(comment.clone())).unwrap_or_default();
            let published = match &self.broker {
                Some(broker) => {
                    broker.publish(&topic, payload).await.map(drop).map_err(|e| e.to_string())
                }
                None => self.hub.publish(&topic, payload).map(drop).map_err(|e| e.to_string()),
            };
            if let Err(e) = published {
                tracing::warn!(error = %e, "a stored comment was not published to every instance");
            }
        }
        Ok(comment)
    }

    /// Viewers of `video` now (users, and their open streams).
    ///
    /// # Errors
    /// Presence failed.
    pub async fn viewers(&self, video: &str) -> Result<(usize, usize), LiveCommentsError> {
        let online = self.viewers.online(video).await?;
        Ok((online.len(), online.iter().map(|o| o.devices).sum()))
    }
}

impl System for LiveComments {
    type Settings = LiveCommentsSettings;

    const INFO: SystemInfo = SystemInfo {
        slug: "livecomments",
        name: "Live Comments",
        summary: "comments broadcast to every viewer over SSE, across instances, with resume and a live viewer count",
        patterns: &["Server-Sent Events (SSE) for Server Push", "Pub/Sub for Event Broadcasting"],
    };

    const DASHBOARD: &'static str = include_str!("../assets/livecomments.html");

    async fn open(
        context: &Context,
        settings: LiveCommentsSettings,
    ) -> Result<Arc<Self>, OpenError> {
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
        shutdown.wait().await;
        // Open streams end with a `closed` event instead of hanging the shutdown.
        self.hub.close();
    }

    async fn ready(&self) -> Result<(), BoxError> {
        self.store.db().ping().await?;
        Ok(())
    }
}
