//! FB News Feed: users follow users, post, and read a home feed of what those they
//! follow posted, newest first, a page at a time.
//!
//! **Hybrid fan-out.** A post by an author with fewer than `push_threshold`
//! followers is *pushed*: workers copy it into each follower's materialized feed
//! through the durable queue ([`fanout`]). An author at or above the threshold is
//! *pulled*: the post stays with its author and is merged into followers' feeds when
//! they read ([`read`]). Push keeps reads cheap; pull keeps a celebrity's post from
//! costing millions of writes. `girder lab fanout` measures where the threshold pays.
//!
//! **Sharded, cached feeds.** Materialized feeds live on feed shards, chosen by jump
//! hash of the owner's id ([`feeds`]); the instance's own database is the default and
//! only shard. The assembled first page of each feed is cached (girder-cache, with a
//! Redis L2 and cross-instance invalidation when Redis is configured) and invalidated
//! when fan-out writes into it or its owner follows or unfollows; the cached page is
//! still checked against tombstones when served, so a deleted post never reappears.
//!
//! **Guarantees.** A feed entry is written once per follower however often its job is
//! delivered (the feed's key is `(owner, post_id)`), and never lost when a worker or
//! an instance dies: the post row is the outbox, the queue redelivers after the
//! visibility timeout, and the sweeper re-enqueues fan-out left outstanding by a dead
//! instance. A deleted post disappears from every feed at once (tombstones are checked
//! at read) and is then removed from the materialized feeds; an unfollow stops new
//! entries and hides the author's old ones at once, then removes them.
//!
//! HTTP surface, nested at `/api/newsfeed`: `POST /posts`, `GET/DELETE /posts/{id}`,
//! `GET /users`, `GET /users/{id}`, `GET /users/{id}/posts`, `PUT/DELETE
//! /follows/{id}`, `GET /follows`, `GET /feed`, `GET /feed/new`, and for operators
//! `GET /queue`, `POST /queue/dead/{id}/redrive`.

mod api;
pub mod fanout;
pub mod feeds;
pub mod graph;
pub mod read;
mod settings;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use girder_cache::{Cache, CacheConfig, Loader, RedisL2};
use girder_core::Clock;
use girder_http::cursor::CursorCodec;
use girder_log::queue::jetstream::{JetStreamConfig, JetStreamQueue};
use girder_log::queue::{Queue, QueueConfig};
use girder_sql::replica::{ReadRouter, WriteToken};
use girder_system::{BoxError, Context, OpenError, Shutdown, System, SystemInfo};

use fanout::{Job, Jobs};
use feeds::Feeds;
use graph::{Fanout, FollowChange, Graph, GraphError, Post};
use read::{GraphReads, Page, ReadError};

pub use api::{
    DeadLetterView, ErrorKind, FanoutQueueView, FeedItemView, FeedPage, FollowPage, FollowView,
    NewPostRequest, NewSinceView, NewsFeedApi, PageQuery, PostPage, PostView, ShardView,
    SinceQuery, Source, UserPage, UserView,
};
pub use settings::NewsFeedSettings;
pub use worker::sweep_once;

/// News Feed's migrations (the graph and posts, on the instance's database).
#[must_use]
pub fn migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "newsfeed",
        sqlite: sqlx::migrate!("migrations/sqlite"),
        postgres: sqlx::migrate!("migrations/postgres"),
    }
}

/// Everything News Feed needs to start.
#[derive(Debug, Clone)]
pub struct NewsFeedConfig {
    /// Authors with at least this many followers are pulled, not pushed.
    pub push_threshold: i64,
    /// Feed shard databases (`sqlite:PATH` or `postgres://…`); empty: the instance's
    /// own database is the one shard.
    pub feed_shards: Vec<String>,
    /// Connections each extra feed shard's pool holds.
    pub shard_pool_connections: u32,
    /// Concurrent fan-out workers on this instance.
    pub workers: usize,
    /// Jobs one worker takes at a time.
    pub worker_batch: usize,
    /// How long a taken job stays invisible before it is redelivered.
    pub visibility_ms: u64,
    /// Deliveries of a failing job before it is dead-lettered.
    pub max_deliveries: u32,
    /// How often the sweeper looks for fan-out left outstanding.
    pub sweep_interval_ms: u64,
    /// How long a push post's fan-out may stay outstanding before a sweeper
    /// re-enqueues it.
    pub sweep_grace_ms: u64,
    /// How many recent push posts a new follow copies into the follower's feed.
    pub backfill_posts: u32,
    /// Lifetime of a cached first page, before jitter.
    pub first_page_ttl_ms: u64,
    /// The queue's name on NATS JetStream (every instance of one deployment uses the
    /// same); unused by the embedded queue.
    pub queue_name: String,
    /// The page size the first-page cache holds (a first page of another size is
    /// read uncached).
    pub first_page_size: u32,
}

impl NewsFeedConfig {
    /// The defaults: threshold 1,000 followers, one shard, 2 workers taking 16 jobs,
    /// 30 s visibility, 5 deliveries, sweep every 5 s after 30 s, backfill 20 posts,
    /// first pages of 20 cached for 2 s.
    #[must_use]
    pub fn new() -> Self {
        Self {
            push_threshold: 1_000,
            feed_shards: Vec::new(),
            shard_pool_connections: 4,
            workers: 2,
            worker_batch: 16,
            visibility_ms: 30_000,
            max_deliveries: 5,
            sweep_interval_ms: 5_000,
            sweep_grace_ms: 30_000,
            backfill_posts: 20,
            first_page_ttl_ms: 2_000,
            first_page_size: 20,
            queue_name: "newsfeed".to_owned(),
        }
    }
}

impl Default for NewsFeedConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The largest job on the queue (a job names a post and two user ids).
const JOB_BYTES_MAX: usize = 4_096;

/// Loads a first page into the cache.
struct FirstPageLoader {
    graph: Graph,
    reads: ReadRouter,
    tokens: Arc<Tokens>,
    feeds: Feeds,
    size: u32,
}

impl Loader<String, Page> for FirstPageLoader {
    type Error = ReadError;

    async fn load(&self, reader: &String) -> Result<Option<Page>, ReadError> {
        let graph = GraphReads {
            graph: self.graph.clone(),
            router: self.reads.clone(),
            token: self.tokens.get(reader),
        };
        read::page(&graph, &self.feeds, reader, 0, i64::MAX, self.size).await.map(Some)
    }
}

/// Each user's last write on this instance, as a read-your-writes token for the
/// replicas, kept for [`TOKEN_KEEP_MS`] (longer than any replica may lag before the
/// router skips it).
#[derive(Debug)]
struct Tokens {
    by_user:
        parking_lot::Mutex<std::collections::HashMap<String, (WriteToken, std::time::Instant)>>,
}

/// How long a user's write token is kept.
const TOKEN_KEEP_MS: u64 = 60_000;
/// Tokens kept before old ones are pruned.
const TOKENS_MAX: usize = 100_000;

impl Tokens {
    fn new() -> Self {
        Self { by_user: parking_lot::Mutex::new(std::collections::HashMap::new()) }
    }

    fn get(&self, user: &str) -> Option<WriteToken> {
        let keep = std::time::Duration::from_millis(TOKEN_KEEP_MS);
        self.by_user.lock().get(user).filter(|(_, at)| at.elapsed() < keep).map(|(t, _)| *t)
    }

    fn record(&self, user: &str, token: WriteToken) {
        let keep = std::time::Duration::from_millis(TOKEN_KEEP_MS);
        let mut map = self.by_user.lock();
        if map.len() >= TOKENS_MAX {
            map.retain(|_, (_, at)| at.elapsed() < keep);
        }
        if map.len() < TOKENS_MAX || map.contains_key(user) {
            let token = match map.get(user) {
                Some((old, at)) if at.elapsed() < keep => old.later(token),
                _ => token,
            };
            map.insert(user.to_owned(), (token, std::time::Instant::now()));
        }
    }
}

/// The first-page cache's two shapes.
enum FirstPages {
    Local(Cache<String, Page, Arc<FirstPageLoader>>),
    Shared(Cache<String, Page, Arc<FirstPageLoader>, RedisL2>),
}

impl FirstPages {
    async fn get(&self, reader: &str) -> Result<Option<Page>, girder_cache::GetError<ReadError>> {
        let key = reader.to_owned();
        match self {
            Self::Local(cache) => cache.get(&key).await,
            Self::Shared(cache) => cache.get(&key).await,
        }
    }

    async fn invalidate(&self, reader: &str) {
        let key = reader.to_owned();
        let result = match self {
            Self::Local(cache) => cache.invalidate(&key).await,
            Self::Shared(cache) => cache.invalidate(&key).await,
        };
        if let Err(e) = result {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "first-page invalidation did not reach the shared layer"
            );
        }
    }

    async fn shutdown(&self) {
        match self {
            Self::Local(cache) => cache.shutdown().await,
            Self::Shared(cache) => cache.shutdown().await,
        }
    }
}

/// A running News Feed.
pub struct NewsFeed {
    graph: Graph,
    reads: ReadRouter,
    tokens: Arc<Tokens>,
    feeds: Feeds,
    jobs: Jobs,
    first_pages: FirstPages,
    cursors: CursorCodec,
    clock: Arc<dyn Clock>,
    config: NewsFeedConfig,
}

impl std::fmt::Debug for NewsFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewsFeed")
            .field("shards", &self.feeds.shard_count())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The settings row holding the cursor MAC key, shared by all instances.
const CURSOR_KEY_SETTING: &str = "newsfeed_cursor_key";

/// Why a News Feed operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedOpError {
    /// The graph database failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Reading a feed failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The first-page cache's load failed.
    #[error("first page")]
    Cache(#[from] girder_cache::GetError<ReadError>),
    /// The fan-out queue failed.
    #[error("fan-out queue")]
    Queue(#[from] girder_log::queue::QueueError),
}

/// What a follow did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowOutcome {
    /// Now following (the edge is new).
    Followed,
    /// Already following.
    AlreadyFollowing,
    /// The user to follow does not exist.
    UnknownUser,
}

impl NewsFeed {
    /// Opens News Feed on `context`: the graph on its pool, feed shards as
    /// configured, the fan-out queue on NATS JetStream when `context` has NATS (one
    /// queue every instance's workers drain), else in `<data_dir>/newsfeed/queue`.
    ///
    /// # Errors
    /// A store, a shard or the queue cannot be opened, or the cursor key is corrupt.
    pub async fn open_with(
        context: &Context,
        config: NewsFeedConfig,
    ) -> Result<Arc<Self>, OpenError> {
        let graph = Graph::new(context.db.clone());
        let pool = girder_sql::PoolConfig {
            max_connections: config.shard_pool_connections,
            ..girder_sql::PoolConfig::default()
        };
        let mut extra_shards = Vec::new();
        for url in &config.feed_shards {
            if let Some(dir) = girder_sql::sqlite_parent_dir(url) {
                std::fs::create_dir_all(&dir).map_err(OpenError::storage)?;
            }
            extra_shards
                .push(girder_sql::Db::connect(url, pool).await.map_err(OpenError::storage)?);
        }
        let shard_dbs =
            if extra_shards.is_empty() { vec![context.db.clone()] } else { extra_shards.clone() };
        let feeds = Feeds::new(shard_dbs).map_err(OpenError::storage)?;
        feeds.migrate().await?;
        let jobs = match context.nats_url.as_deref() {
            None => {
                let dir = context.data_dir.join("newsfeed").join("queue");
                std::fs::create_dir_all(&dir).map_err(OpenError::storage)?;
                let mut queue_config = QueueConfig::new(dir);
                queue_config.groups = vec![fanout::GROUP.to_owned()];
                queue_config.max_deliveries = config.max_deliveries;
                queue_config.visibility = Duration::from_millis(config.visibility_ms);
                queue_config.message_bytes_max = JOB_BYTES_MAX;
                let queue = Queue::open(queue_config, Arc::clone(&context.clock))
                    .map_err(OpenError::storage)?;
                Jobs::embedded(queue)
            }
            Some(url) => {
                let mut queue_config = JetStreamConfig::new(config.queue_name.clone());
                queue_config.groups = vec![fanout::GROUP.to_owned()];
                queue_config.max_deliveries = config.max_deliveries;
                queue_config.visibility = Duration::from_millis(config.visibility_ms);
                queue_config.message_bytes_max = JOB_BYTES_MAX;
                let queue = JetStreamQueue::connect(url, queue_config, Arc::clone(&context.clock))
                    .await
                    .map_err(OpenError::storage)?;
                Jobs::jetstream(queue)
            }
        };
        let tokens = Arc::new(Tokens::new());
        let loader = Arc::new(FirstPageLoader {
            graph: graph.clone(),
            reads: context.reads.clone(),
            tokens: Arc::clone(&tokens),
            feeds: feeds.clone(),
            size: config.first_page_size,
        });
        let cache_config = CacheConfig {
            name: "newsfeed-first-pages".into(),
            l1_capacity_entries: 100_000,
            ttl_ms: config.first_page_ttl_ms,
            ttl_jitter_fraction: 0.1,
            negative_ttl_ms: 0,
            stale_ms: 0,
            l2_ttl_ms: config.first_page_ttl_ms,
            ..CacheConfig::default()
        };
        let clock = Arc::clone(&context.clock);
        let first_pages = match context.redis_url.as_deref() {
            None => FirstPages::Local(
                Cache::builder(cache_config, loader)
                    .clock(Arc::clone(&clock))
                    .build()
                    .map_err(OpenError::storage)?,
            ),
            Some(url) => {
                let l2 = RedisL2::connect(url).await.map_err(OpenError::storage)?;
                FirstPages::Shared(
                    Cache::builder(cache_config, loader)
                        .clock(Arc::clone(&clock))
                        .l2(l2)
                        .build()
                        .map_err(OpenError::storage)?,
                )
            }
        };
        let key = girder_sql::shared_key::<32>(
            graph.db(),
            girder_sql::migrate::SERVER_SETTINGS_TABLE,
            CURSOR_KEY_SETTING,
        )
        .await
        .map_err(OpenError::storage)?;
        Ok(Arc::new(Self {
            graph,
            reads: context.reads.clone(),
            tokens,
            feeds,
            jobs,
            first_pages,
            cursors: CursorCodec::new(key),
            clock,
            config,
        }))
    }

    /// The graph store.
    #[must_use]
    pub const fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The feed shards.
    #[must_use]
    pub const fn feeds(&self) -> &Feeds {
        &self.feeds
    }

    /// The fan-out queue.
    #[must_use]
    pub const fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// The configuration it runs with.
    #[must_use]
    pub const fn config(&self) -> &NewsFeedConfig {
        &self.config
    }

    /// Where `reader`'s feed queries run: replicas that have replayed the reader's own
    /// last write on this instance, if any.
    fn graph_reads(&self, reader: &str) -> GraphReads {
        GraphReads {
            graph: self.graph.clone(),
            router: self.reads.clone(),
            token: self.tokens.get(reader),
        }
    }

    /// Remembers that `user` just wrote, so their next reads see it on a replica.
    async fn wrote(&self, user: &str) {
        if !self.reads.replicas().is_empty() {
            self.tokens.record(user, self.reads.token().await);
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Makes `user` known (every authenticated caller is a user).
    ///
    /// # Errors
    /// The database failed.
    pub async fn touch(&self, user: &str) -> Result<(), FeedOpError> {
        // A read first: most callers exist, and the insert would take the write lock.
        if self.graph.user(user).await?.is_none() {
            self.graph.touch_user(user, self.now_ms()).await?;
        }
        Ok(())
    }

    /// `author` posts `body`. A push post's fan-out job is durable before this
    /// returns; a pull post needs none.
    ///
    /// # Errors
    /// The database or the queue failed. If the queue failed after the post was
    /// stored, the sweeper fans it out later.
    pub async fn post(&self, author: &str, body: &str) -> Result<Post, FeedOpError> {
        let now = self.now_ms();
        self.touch(author).await?;
        let followers = self.graph.user(author).await?.map_or(0, |u| u.followers);
        let mode =
            if followers >= self.config.push_threshold { Fanout::Pull } else { Fanout::Push };
        let post = self.graph.insert_post(author, body, mode, now).await?;
        self.wrote(author).await;
        metrics::counter!("girder_newsfeed_posts_total", "fanout" => mode.as_str()).increment(1);
        match mode {
            Fanout::Push => {
                self.jobs.push(&Job::Fanout { post: post.id, author: author.to_owned() }).await?;
            }
            Fanout::Pull => self.first_pages.invalidate(author).await,
        }
        Ok(post)
    }

    /// Deletes `id` (its tombstone hides it everywhere at once), then removes it from
    /// the materialized feeds in the background. Returns the post as it was.
    ///
    /// # Errors
    /// The database or the queue failed.
    pub async fn delete(&self, id: i64) -> Result<Option<Post>, FeedOpError> {
        let Some(post) = self.graph.delete_post(id, self.now_ms()).await? else {
            return Ok(None);
        };
        self.wrote(&post.author).await;
        if post.fanout == Fanout::Push {
            self.jobs.push(&Job::Retract { post: id, author: post.author.clone() }).await?;
        }
        self.first_pages.invalidate(&post.author).await;
        Ok(Some(post))
    }

    /// `follower` follows `followee`; their recent push posts are copied into the
    /// follower's feed in the background.
    ///
    /// # Errors
    /// The database or the queue failed.
    pub async fn follow(
        &self,
        follower: &str,
        followee: &str,
    ) -> Result<FollowOutcome, FeedOpError> {
        let now = self.now_ms();
        self.touch(follower).await?;
        let change = self.graph.follow(follower, followee, now).await?;
        self.wrote(follower).await;
        let outcome = match change {
            FollowChange::UnknownUser => return Ok(FollowOutcome::UnknownUser),
            FollowChange::Unchanged => FollowOutcome::AlreadyFollowing,
            FollowChange::Changed => {
                self.jobs
                    .push(&Job::Backfill {
                        follower: follower.to_owned(),
                        followee: followee.to_owned(),
                    })
                    .await?;
                FollowOutcome::Followed
            }
        };
        self.first_pages.invalidate(follower).await;
        Ok(outcome)
    }

    /// `follower` stops following `followee`: their entries are hidden at once and
    /// removed in the background. Returns whether the edge existed.
    ///
    /// # Errors
    /// The database or the queue failed.
    pub async fn unfollow(&self, follower: &str, followee: &str) -> Result<bool, FeedOpError> {
        let changed = self.graph.unfollow(follower, followee).await? == FollowChange::Changed;
        self.wrote(follower).await;
        if changed {
            self.jobs
                .push(&Job::Unfollow {
                    follower: follower.to_owned(),
                    followee: followee.to_owned(),
                })
                .await?;
        }
        self.first_pages.invalidate(follower).await;
        Ok(changed)
    }

    /// `reader`'s feed below `before` (the first page when `None`), at most `limit`.
    /// A first page of the cached size comes from the cache, re-checked against
    /// tombstones.
    ///
    /// # Errors
    /// A store failed.
    pub async fn feed(
        &self,
        reader: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page, FeedOpError> {
        if before.is_none() && limit == self.config.first_page_size {
            let page = self
                .first_pages
                .get(reader)
                .await?
                .unwrap_or(Page { items: Vec::new(), next_before: None });
            let ids: Vec<i64> = page.items.iter().map(|i| i.post.id).collect();
            // One query on the primary: still there, and still followed (an unfollow
            // or a delete on another instance reaches this page at once).
            let visible = self.graph.visible_posts(reader, &ids).await?;
            if visible.len() == ids.len() {
                return Ok(page);
            }
            // Something on the cached page was deleted or unfollowed: read afresh.
            self.first_pages.invalidate(reader).await;
        }
        Ok(read::page(
            &self.graph_reads(reader),
            &self.feeds,
            reader,
            0,
            before.unwrap_or(i64::MAX),
            limit,
        )
        .await?)
    }

    /// How many items newer than `since` `reader`'s feed holds, counting at most
    /// `cap` (the "new posts" badge).
    ///
    /// # Errors
    /// A store failed.
    pub async fn new_since(
        &self,
        reader: &str,
        since: i64,
        cap: u32,
    ) -> Result<(u32, bool), FeedOpError> {
        let page = read::page(
            &self.graph_reads(reader),
            &self.feeds,
            reader,
            since,
            i64::MAX,
            cap.saturating_add(1),
        )
        .await?;
        let n = page.items.len() as u32;
        Ok((n.min(cap), n > cap))
    }

    /// Stops the first-page cache's invalidation listener (the extra shard pools
    /// close when the system is dropped).
    async fn close(&self) {
        self.first_pages.shutdown().await;
    }
}

impl System for NewsFeed {
    type Settings = NewsFeedSettings;

    const INFO: SystemInfo = SystemInfo {
        slug: "newsfeed",
        name: "News Feed",
        summary: "hybrid fan-out: push through a durable queue below a follower threshold, pull at read above it; sharded, cached feeds",
        patterns: &[
            "Pre-computation & Materialized Views",
            "Asynchronous Processing with Message Queues",
            "Database Sharding",
            "Multi-Layer Caching",
            "Pagination & Cursor-based Fetching",
        ],
    };

    const DASHBOARD: &'static str = include_str!("../assets/newsfeed.html");

    async fn open(context: &Context, settings: NewsFeedSettings) -> Result<Arc<Self>, OpenError> {
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
        worker::run(Arc::clone(&self), shutdown).await;
        self.close().await;
    }

    async fn ready(&self) -> Result<(), BoxError> {
        self.graph.db().ping().await?;
        for (_, db) in self.feeds.shards() {
            db.ping().await?;
        }
        Ok(())
    }
}
