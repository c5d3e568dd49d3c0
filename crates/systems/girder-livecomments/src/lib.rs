//! FB Live Comments: viewers of a live video watch comments arrive as they are
//! posted, whichever instance they are connected to.
//!
//! **Path of a comment.** `POST /videos/{video}/comments` stores the comment in
//! `lc_comments`, and the table is the source of what viewers see (Pattern: Change
//! Data Capture (CDC) for Data Sync): every instance runs its own change consumer on
//! the table (module `feed`, started by [`System::run`]) and publishes each inserted
//! row on the video's topic (`video.<id>`) of its own hub, in commit order. The
//! instance that stored a comment wakes its consumer at once; other instances read it
//! within their poll interval (`[livecomments] feed_poll_ms`, 150 ms by default). Each
//! viewer's `GET /videos/{video}/stream` is a Server-Sent Events stream: its event ids
//! are hub positions, so a browser that reconnects with `Last-Event-ID` to the same
//! instance gets exactly the comments it missed, or a `resume` event with
//! `"recovered": false` when the instance's history no longer reaches back (or it
//! reconnected to another instance, or the instance restarted) — the page then
//! reloads the history. A viewer whose buffer overflows gets a `gap` event, never a
//! silent loss.
//!
//! **No broker.** Since every instance reads every commit from the database, comments
//! need no pub/sub between instances: Live Comments does not use NATS (the
//! `NatsBroker` that joined the hubs is gone, and `--nats-url` changes nothing here).
//! The price: each instance reads the database's whole change stream (on PostgreSQL
//! its slot decodes the WAL of every captured table, Ticketmaster's seats among them,
//! and counts against `max_replication_slots`), and a comment from another instance
//! waits up to one poll interval. Only inserts are published: a comment edited or
//! deleted in the table is not sent to open streams (the API has neither), and
//! history pages read the table as it is.
//!
//! **Start and failures.** The consumer is `livecomments_<instance id>`; the first
//! time it begins after the newest committed change (from now, not from the start of
//! history: now is when `run` has made it, moments after start, so a comment stored
//! through a brand-new instance before then is in the history but not streamed by
//! that instance), and a restart resumes after the last batch it acknowledged —
//! comments committed while the instance was down are published into its new hub,
//! which no resumed stream can reach back to, so viewers reload. On PostgreSQL the
//! consumer is a logical replication slot, kept on shutdown; slots of instances that
//! never come back are dropped by any live instance once unread for `feed_stale_ms`
//! (an hour). A failing consumer is logged, retried with backoff, and reported by
//! `/readyz` until it reads again; the server keeps running.
//!
//! **Viewers.** Each open stream holds a presence lease for its viewer (one device
//! per connection) and renews it while open; `GET /videos/{video}/viewers` counts the
//! viewers whose lease is alive, across instances when Redis is configured. A dead
//! instance's viewers drop out when their leases run out.
//!
//! **Limits.** Posting wears the server's rate-limit layer (a per-user rule in the
//! built-in limits); a comment is 1–500 characters.
//!
//! HTTP surface, nested at `/api/livecomments`: `POST/GET /videos/{video}/comments`,
//! `GET /videos/{video}/stream`, `GET /videos/{video}/viewers`.

mod api;
mod feed;
mod settings;
pub mod store;

use std::sync::Arc;

use girder_core::Clock;
use girder_realtime::cdc::{Capture, Change, Op};
use girder_realtime::presence::{MemoryPresence, Online, PresenceError, PresenceStore};
use girder_realtime::presence_redis::RedisPresence;
use girder_realtime::{Hub, HubConfig, Topic};
use girder_system::{BoxError, Context, OpenError, Shutdown, System, SystemInfo};

use store::{Comment, Store};

pub use api::{
    CommentPage, CommentView, ErrorKind, LiveCommentsApi, NewCommentRequest, PageQuery, ViewersView,
};
pub use feed::{FeedConfig, FeedError, FeedState};
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
    /// The Redis key prefix of presence.
    pub presence_prefix: String,
    /// The comments feed: polling, retries, stale consumers.
    pub feed: FeedConfig,
}

impl LiveCommentsConfig {
    /// The defaults: 1,000 comments of history per video, viewers counted 30 s after
    /// their last beat, [`FeedConfig::default`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            history: 1_000,
            presence_ttl_ms: 30_000,
            presence_prefix: "girder:livecomments:viewers".to_owned(),
            feed: FeedConfig::default(),
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
    feed: feed::Feed,
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
    /// The comments feed failed.
    #[error(transparent)]
    Feed(#[from] FeedError),
}

/// The hub topic of a video's comments.
pub(crate) fn topic(video: &str) -> Option<Topic> {
    Topic::new(format!("video.{video}")).ok()
}

impl LiveComments {
    /// Opens on `context` (whose database [`migrations`] has brought up to date):
    /// change capture installed on the comments table (migration 911 applied),
    /// viewers counted in Redis when `context` has it. The comments feed starts with
    /// [`System::run`], which names its consumer from `context`'s instance id.
    ///
    /// # Errors
    /// Capture cannot be installed, or Redis cannot be reached.
    pub async fn open_with(
        context: &Context,
        config: LiveCommentsConfig,
    ) -> Result<Arc<Self>, OpenError> {
        let hub = Hub::new(HubConfig { history_per_topic: config.history, ..HubConfig::default() })
            .map_err(OpenError::storage)?;
        let feed = feed::Feed::open(context, config.feed.clone()).await?;
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
            feed,
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

    /// The change capture the comments feed reads (its consumers, pruning).
    #[must_use]
    pub const fn capture(&self) -> &Capture {
        self.feed.capture()
    }

    /// Where this instance's comments feed is.
    #[must_use]
    pub fn feed_state(&self) -> FeedState {
        self.feed.state()
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Stores `body` by `author` on `video`. Viewers get it from the comments feed
    /// of their instance — this instance's at once (its feed is woken), others'
    /// within their poll interval — once [`System::run`] runs the feeds.
    ///
    /// # Errors
    /// The database failed: nothing is stored or sent.
    pub async fn post(
        &self,
        video: &str,
        author: &str,
        body: &str,
    ) -> Result<Comment, LiveCommentsError> {
        let comment = self.store.insert(video, author, body, self.now_ms()).await?;
        metrics::counter!("girder_livecomments_comments_total").increment(1);
        self.feed.wake();
        Ok(comment)
    }

    /// Publishes a change of the comments table on this instance's hub: an inserted
    /// comment on its video's topic, as [`CommentView`] JSON. Anything else (other
    /// tables captured on the same database, updates, deletes) is skipped.
    fn publish(&self, change: &Change) {
        if change.table != feed::TABLE || change.op != Op::Insert {
            return;
        }
        let comment = change.after.clone().map(serde_json::from_value::<Comment>);
        let comment = match comment {
            Some(Ok(comment)) => comment,
            other => {
                let error = other.and_then(Result::err).map(|e| e.to_string());
                tracing::warn!(
                    position = %change.position,
                    ?error,
                    "a captured comment row does not read as a comment; skipped"
                );
                return;
            }
        };
        let Some(topic) = topic(&comment.video) else { return };
        let lag_ms = self.clock.now_ms().saturating_sub(change.at_ms);
        let payload = serde_json::to_vec(&CommentView::from(comment)).unwrap_or_default();
        match self.hub.publish(&topic, payload) {
            Ok(_) => {
                metrics::counter!("girder_livecomments_published_total").increment(1);
                #[allow(clippy::cast_precision_loss)]
                metrics::histogram!("girder_livecomments_feed_lag_ms").record(lag_ms as f64);
            }
            Err(e) => {
                tracing::warn!(error = &e as &dyn std::error::Error, "a comment was not published");
            }
        }
    }

    /// Drops the comments feeds of other instances that nobody has read for
    /// [`FeedConfig::stale_ms`] (the running feed does this every minute); returns
    /// their names.
    ///
    /// # Errors
    /// The database failed.
    pub async fn drop_stale_feeds(&self) -> Result<Vec<String>, LiveCommentsError> {
        Ok(self.feed.drop_stale().await?)
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
        patterns: &[
            "Server-Sent Events (SSE) for Server Push",
            "Pub/Sub for Event Broadcasting",
            "Change Data Capture (CDC) for Data Sync",
        ],
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
        self.feed.run(|change| self.publish(change), shutdown).await;
        // Open streams end with a `closed` event instead of hanging the shutdown.
        self.hub.close();
    }

    async fn ready(&self) -> Result<(), BoxError> {
        self.store.db().ping().await?;
        self.feed.health()?;
        Ok(())
    }
}
