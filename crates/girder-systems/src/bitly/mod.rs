//! Bit.ly: a URL shortener. The smallest system that exercises ID generation
//! (Pattern: Counter with Base62 Encoding, with counter batching), a read-heavy
//! redirect path, and batched writes (Pattern: Write Batching & Buffering) on
//! either storage engine.
//!
//! HTTP surface: `POST /api/bitly/urls`, `GET /api/bitly/urls/{code}`,
//! `GET /api/bitly/urls/{code}/stats`, and the redirect `GET /{code}`.

mod api;
mod clicks;
mod codes;
mod resolve;
mod store;
pub mod validate;

use std::sync::Arc;

use girder_core::Clock;

use crate::cursor::CursorCodec;

pub use api::{
    BitlyApi, CacheLayer, ErrorKind, LinkPage, LinkStats, LinkView, ListQuery, PAGE_LIMIT_MAX,
    ShortenRequest, ShortenResponse, UpdateRequest,
};
pub use clicks::{ClickBuffer, ClickBufferConfig};
pub use codes::{CODE_LEN, CodeMinter, CodeMode, MintError};
pub use resolve::{Resolver, ResolverError, StoreLoader};
pub use store::{Link, LinkStore, StoreError};
pub use validate::Reserved;

/// Which redirect status `GET /{code}` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectKind {
    /// 302 Found: every click reaches the server and is counted. The default.
    #[default]
    Found,
    /// 301 Moved Permanently: browsers cache it, so repeat clicks go uncounted.
    Permanent,
}

/// How generated codes are derived from the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeStyle {
    /// Base62 of the counter: ordered and guessable.
    #[default]
    Sequential,
    /// Base62 of a keyed permutation of the counter: unique, not enumerable.
    Scrambled,
}

/// Everything Bit.ly needs to start.
#[derive(Debug, Clone)]
pub struct BitlyConfig {
    /// `sqlite:PATH` or `postgres://...`.
    pub database_url: String,
    /// Connection pool bound.
    pub max_connections: u32,
    /// The origin short links are served from, e.g. `http://127.0.0.1:8080`.
    pub public_url: String,
    /// Redirect status.
    pub redirect: RedirectKind,
    /// Code derivation.
    pub code_style: CodeStyle,
    /// Ids leased from the counter at a time.
    pub id_batch_size: u64,
    /// Click buffering.
    pub clicks: ClickBufferConfig,
    /// Top-level paths no code may take.
    pub reserved: Reserved,
    /// The link cache on the redirect path.
    pub cache: girder_cache::CacheConfig,
    /// Redis for the shared cache layer and cross-instance invalidation, if any.
    pub redis_url: Option<String>,
}

/// A running Bit.ly: store, code minter, click buffer and lookup seam.
pub struct Bitly {
    store: LinkStore,
    minter: CodeMinter,
    clicks: Arc<ClickBuffer>,
    resolver: Resolver,
    cursors: CursorCodec,
    clock: Arc<dyn Clock>,
    config: BitlyConfig,
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

/// A random key stored once in the shared database, so every instance uses the
/// same one (two keys would mean colliding codes or cursors one instance rejects).
async fn shared_key<const N: usize>(store: &LinkStore, name: &str) -> Result<[u8; N], StoreError> {
    let fresh: [u8; N] = crate::keys::fresh();
    let stored = store.setting_or_init(name, &crate::keys::hex(&fresh)).await?;
    crate::keys::unhex(&stored).ok_or_else(|| {
        StoreError::Database(sqlx::Error::Protocol(format!(
            "bitly_settings.{name} is not {} hex digits",
            2 * N
        )))
    })
}

impl Bitly {
    /// Connects to the store, creates the schema and prepares the minter.
    ///
    /// # Errors
    /// The database cannot be reached or migrated, or its stored key is corrupt.
    pub async fn open(config: BitlyConfig, clock: Arc<dyn Clock>) -> Result<Arc<Self>, StoreError> {
        let store = LinkStore::connect(&config.database_url, config.max_connections).await?;
        let mode = match config.code_style {
            CodeStyle::Sequential => CodeMode::Sequential,
            CodeStyle::Scrambled => {
                // The key lives in the database so every instance sharing it
                // computes the same permutation; two keys would collide.
                let key = shared_key::<16>(&store, CODE_KEY_SETTING).await?;
                let space = girder_id::base62::capacity(CODE_LEN as u32);
                let permutation =
                    girder_id::permute::KeyedPermutation::new(key, space).map_err(|e| {
                        StoreError::Database(sqlx::Error::Protocol(format!(
                            "code permutation: {e}"
                        )))
                    })?;
                CodeMode::Scrambled(permutation)
            }
        };
        let source = store.id_source("bitly_codes").await?;
        let minter = CodeMinter::new(source, config.id_batch_size, mode, config.reserved.clone());
        let clicks = ClickBuffer::new(config.clicks);
        let resolver = Resolver::new(
            store.clone(),
            config.cache.clone(),
            config.redis_url.as_deref(),
            Arc::clone(&clock),
        )
        .await
        .map_err(|e| StoreError::Cache(e.to_string()))?;
        let cursors = CursorCodec::new(shared_key::<32>(&store, CURSOR_KEY_SETTING).await?);
        Ok(Arc::new(Self { store, minter, clicks, resolver, cursors, clock, config }))
    }

    /// The link store.
    #[must_use]
    pub fn store(&self) -> &LinkStore {
        &self.store
    }

    /// Runs the click flusher until `shutdown` resolves, then flushes what is
    /// left. The caller joins this future on shutdown.
    pub async fn run_background(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let clicks = Arc::clone(&self.clicks);
        clicks.run_flusher(self.store.clone(), shutdown).await;
        self.resolver.shutdown().await;
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
        self.clicks.flush(&self.store).await
    }
}
