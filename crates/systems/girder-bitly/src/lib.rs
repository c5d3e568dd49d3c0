//! Bit.ly: a URL shortener. The smallest system that exercises ID generation
//! (Pattern: Counter with Base62 Encoding, with counter batching), a read-heavy
//! redirect path (Pattern: Multi-Layer Caching), and batched writes (Pattern: Write
//! Batching & Buffering) on either storage engine.
//!
//! HTTP surface: `POST /api/bitly/urls`, `GET /api/bitly/urls/{code}`,
//! `GET /api/bitly/urls/{code}/stats`, and the redirect `GET /{code}`.

mod api;
mod clicks;
mod codes;
mod resolve;
mod settings;
mod store;
pub mod validate;

use std::sync::Arc;

use girder_core::Clock;
use girder_http::cursor::CursorCodec;
use girder_log::batch::{BatchConfig, BatchWriter, SubmitError};
use girder_system::{BoxError, Context, OpenError, Shutdown, System, SystemInfo};

pub use api::{
    BitlyApi, CacheLayer, ErrorKind, LinkPage, LinkStats, LinkView, ListQuery, PAGE_LIMIT_MAX,
    ShortenRequest, ShortenResponse, UpdateRequest,
};
pub use clicks::{ClickBuffer, ClickBufferConfig};
pub use codes::{CODE_LEN, CodeMinter, CodeMode, MintError};
pub use resolve::{Resolver, ResolverError, StoreLoader};
pub use settings::{BitlyConfig, BitlySettings, CodeStyle, RedirectKind};
pub use store::{Link, LinkSink, LinkStore, LinkWriteError, StoreError};
pub use validate::Reserved;

/// Bit.ly's migrations, one set per engine.
#[must_use]
pub fn migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "bitly",
        // One text serves both engines: the dialects agree on these tables.
        sqlite: sqlx::migrate!("./migrations"),
        postgres: sqlx::migrate!("./migrations"),
    }
}

/// A running Bit.ly: store, code minter, click buffer and lookup seam.
pub struct Bitly {
    store: LinkStore,
    /// New links, batched into shared INSERTs.
    links: BatchWriter<LinkSink>,
    minter: CodeMinter,
    clicks: ClickBuffer,
    resolver: Resolver,
    cursors: CursorCodec,
    clock: Arc<dyn Clock>,
    config: BitlyConfig,
    /// The origin short links are served from, e.g. `http://127.0.0.1:8080`.
    public_url: String,
}

impl std::fmt::Debug for Bitly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitly")
            .field("engine", &self.store.engine())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The settings row holding the scrambling key, shared by all instances.
const CODE_KEY_SETTING: &str = "code_key";
/// The settings row holding the cursor MAC key, shared by all instances.
const CURSOR_KEY_SETTING: &str = "cursor_key";

impl Bitly {
    /// Opens Bit.ly on `context`'s pool, whose tables [`migrations`] has brought up to
    /// date, with the permutation and cursor keys every instance shares.
    ///
    /// # Errors
    /// The database or Redis cannot be reached, or a stored key is corrupt.
    pub async fn open_with(context: &Context, config: BitlyConfig) -> Result<Arc<Self>, OpenError> {
        let store = LinkStore::new(context.db.clone());
        let db = store.db();
        let mode = match config.code_style {
            CodeStyle::Sequential => CodeMode::Sequential,
            CodeStyle::Scrambled => {
                // The key lives in the database so every instance sharing it
                // computes the same permutation; two keys would collide.
                let key = girder_sql::shared_key::<16>(db, store::SETTINGS_TABLE, CODE_KEY_SETTING)
                    .await
                    .map_err(OpenError::storage)?;
                let space = girder_id::base62::capacity(CODE_LEN as u32);
                let permutation = girder_id::permute::KeyedPermutation::new(key, space)
                    .map_err(OpenError::storage)?;
                CodeMode::Scrambled(permutation)
            }
        };
        let source = store.id_source("bitly_codes").await.map_err(OpenError::storage)?;
        let minter = CodeMinter::new(source, config.id_batch_size, mode, config.reserved.clone());
        let clicks = ClickBuffer::new(store.clone(), config.clicks).map_err(OpenError::storage)?;
        let clock = Arc::clone(&context.clock);
        let resolver = Resolver::new(
            store.clone(),
            config.cache.clone(),
            context.redis_url.as_deref(),
            Arc::clone(&clock),
        )
        .await
        .map_err(OpenError::storage)?;
        let cursor_key =
            girder_sql::shared_key::<32>(db, store::SETTINGS_TABLE, CURSOR_KEY_SETTING)
                .await
                .map_err(OpenError::storage)?;
        let cursors = CursorCodec::new(cursor_key);
        let public_url = context.public_url.clone();
        // SQLite takes one writer at a time; PostgreSQL commits several batches at once.
        let max_in_flight = if db.engine() == "sqlite" { 1 } else { 4 };
        let batching = BatchConfig {
            max_items: config.shorten_batch_max,
            max_in_flight,
            ..BatchConfig::default()
        };
        let links = BatchWriter::start(LinkSink::new(store.clone()), batching)
            .map_err(OpenError::storage)?;
        Ok(Arc::new(Self {
            store,
            links,
            minter,
            clicks,
            resolver,
            cursors,
            clock,
            config,
            public_url,
        }))
    }

    /// The link store.
    #[must_use]
    pub fn store(&self) -> &LinkStore {
        &self.store
    }

    /// Runs the click flusher until `shutdown` resolves, then flushes what is
    /// left. The caller joins this future on shutdown.
    pub async fn run_background(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        self.clicks.run_flusher(shutdown).await;
        // In-flight requests have drained: write the last links and stop.
        self.links.close().await;
        self.resolver.shutdown().await;
    }

    /// Stores a new link through the batch writer; returns once its batch committed.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the code exists; the batch's database failure;
    /// [`StoreError::Writer`] when the writer is closed or lost the answer.
    pub async fn insert_link(&self, link: &Link) -> Result<(), StoreError> {
        match self.links.submit(link.clone()).await {
            Ok(()) => Ok(()),
            Err(SubmitError::Sink(LinkWriteError::Conflict)) => Err(StoreError::Conflict),
            Err(SubmitError::Sink(LinkWriteError::Database(e))) => Err(StoreError::Batch(e)),
            Err(SubmitError::Closed) => Err(StoreError::Writer("closed")),
            Err(_) => Err(StoreError::Writer("no answer for this link")),
        }
    }

    /// Links and batches the link writer has written.
    #[must_use]
    pub fn link_writer_stats(&self) -> girder_log::batch::BatchStats {
        self.links.stats()
    }

    /// Counters of the link cache's layers.
    #[must_use]
    pub fn cache_stats(&self) -> girder_cache::CacheStats {
        self.resolver.stats()
    }

    /// Flushes buffered clicks now.
    ///
    /// # Errors
    /// The store failed.
    pub async fn flush_clicks(&self) -> Result<usize, StoreError> {
        self.clicks.flush().await
    }
}

impl System for Bitly {
    type Settings = BitlySettings;

    const INFO: SystemInfo = SystemInfo {
        slug: "bitly",
        name: "Bit.ly",
        summary: "URL shortener: counter + Base62, read-heavy redirects, batched clicks",
        patterns: &[
            "Counter with Base62 Encoding",
            "Multi-Layer Caching",
            "Write Batching & Buffering",
            "Pagination & Cursor-based Fetching",
        ],
    };

    const DASHBOARD: &'static str = include_str!("../assets/bitly.html");

    async fn open(context: &Context, settings: BitlySettings) -> Result<Arc<Self>, OpenError> {
        let config = settings.resolve()?;
        girder_sql::migrate::run(&context.db, migrations()).await?;
        Self::open_with(context, config).await
    }

    fn router(self: &Arc<Self>) -> girder_system::Router {
        self.api_router()
    }

    fn root_router(self: &Arc<Self>) -> Option<girder_system::Router> {
        Some(self.redirect_router())
    }

    fn openapi() -> utoipa::openapi::OpenApi {
        api::document()
    }

    async fn run(self: Arc<Self>, shutdown: Shutdown) {
        self.run_background(shutdown.wait()).await;
    }

    async fn ready(&self) -> Result<(), BoxError> {
        Ok(self.store.ping().await?)
    }

    fn fast_path(&self, request: &girder_system::Request) -> Option<girder_system::Response> {
        let method = request.method();
        if method != girder_system::Method::GET && method != girder_system::Method::HEAD {
            return None;
        }
        self.redirect_from_l1(request.uri().path())
    }
}
