//! The lookup seam on the redirect path: code → link, through the multi-layer
//! cache (Pattern: Multi-Layer Caching): L1 in process, L2 in Redis when
//! configured, then the store.
//!
//! Staleness bound, as promised to users: on the instance that made a change,
//! never (the write invalidates before it is acknowledged). On other instances,
//! within the Redis pub/sub latency when Redis is configured; without Redis, or
//! while the subscription is down, at most the L1 TTL (`cache_ttl_ms` plus its
//! jitter). A link's expiry is checked against the clock on every redirect, so a
//! cached link never outlives its `expires_at`.

use std::sync::Arc;

use girder_cache::{Cache, CacheConfig, CacheStats, Loader, RedisL2};
use girder_core::Clock;

use super::store::{Link, LinkStore, StoreError};

/// Reads links from the store on a cache miss.
#[derive(Debug, Clone)]
pub struct StoreLoader(LinkStore);

impl Loader<String, Arc<Link>> for StoreLoader {
    type Error = StoreError;

    fn load(
        &self,
        code: &String,
    ) -> impl Future<Output = Result<Option<Arc<Link>>, StoreError>> + Send {
        let store = self.0.clone();
        let code = code.clone();
        async move { store.get(&code).await.map(|found| found.map(Arc::new)) }
    }
}

/// How the redirect path finds links.
pub enum Resolver {
    /// L1 only: one instance, or several that accept the L1 TTL as their staleness bound.
    Local(Cache<String, Arc<Link>, StoreLoader>),
    /// L1 + Redis L2, with cross-instance invalidation over Redis pub/sub.
    Shared(Cache<String, Arc<Link>, StoreLoader, RedisL2>),
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local(_) => "Resolver::Local",
            Self::Shared(_) => "Resolver::Shared",
        })
    }
}

/// Why the resolver could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolverError {
    /// The cache configuration or its Redis connection failed.
    #[error("link cache: {0}")]
    Cache(String),
}

impl Resolver {
    /// A resolver over `store`, with a Redis L2 at `redis_url` if given.
    ///
    /// # Errors
    /// Invalid cache settings or an unreachable Redis.
    pub async fn new(
        store: LinkStore,
        config: CacheConfig,
        redis_url: Option<&str>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ResolverError> {
        let loader = StoreLoader(store);
        let fail = |e: &dyn std::fmt::Display| ResolverError::Cache(e.to_string());
        Ok(match redis_url {
            None => Self::Local(
                Cache::builder(config, loader).clock(clock).build().map_err(|e| fail(&e))?,
            ),
            Some(url) => {
                let l2 = RedisL2::connect(url).await.map_err(|e| fail(&e))?;
                Self::Shared(
                    Cache::builder(config, loader)
                        .clock(clock)
                        .l2(l2)
                        .build()
                        .map_err(|e| fail(&e))?,
                )
            }
        })
    }

    /// The link for `code`, expired or not; the caller decides what expiry means.
    ///
    /// # Errors
    /// The store failed (L2 failures only degrade to a store read).
    pub async fn resolve(&self, code: &str) -> Result<Option<Arc<Link>>, StoreError> {
        let key = code.to_owned();
        let result = match self {
            Self::Local(cache) => cache.get(&key).await,
            Self::Shared(cache) => cache.get(&key).await,
        };
        // The loader's error arrives shared (every waiter of the load gets it).
        result.map_err(|e| StoreError::Cache(e.to_string()))
    }

    /// What this instance's L1 can answer for `code` without waiting or allocating:
    /// `Some(Some(link))` a fresh cached link, `Some(None)` a cached absence, `None`
    /// nothing fresh (follow with [`Resolver::resolve`]). Counted as a hit when it
    /// answers, like `resolve`.
    #[inline]
    pub fn cached(&self, code: &str) -> Option<Option<Arc<Link>>> {
        match self {
            Self::Local(cache) => cache.get_cached_by(code),
            Self::Shared(cache) => cache.get_cached_by(code),
        }
    }

    /// Forgets `code` everywhere, after the store has changed it: this instance at
    /// once, L2 and the other instances through Redis.
    pub async fn invalidate(&self, code: &str) {
        let key = code.to_owned();
        let result = match self {
            Self::Local(cache) => cache.invalidate(&key).await,
            Self::Shared(cache) => cache.invalidate(&key).await,
        };
        if let Err(e) = result {
            // The local L1 is already clear; other instances fall back to the TTL bound.
            tracing::warn!(code, error = %e, "cache invalidation did not reach the shared layer");
        }
    }

    /// Counters of every layer.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        match self {
            Self::Local(cache) => cache.stats(),
            Self::Shared(cache) => cache.stats(),
        }
    }

    /// Whether a shared L2 is configured.
    #[must_use]
    pub const fn is_shared(&self) -> bool {
        matches!(self, Self::Shared(_))
    }

    /// Stops background refreshes and the invalidation listener.
    pub async fn shutdown(&self) {
        match self {
            Self::Local(cache) => cache.shutdown().await,
            Self::Shared(cache) => cache.shutdown().await,
        }
    }
}
