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

use girder_cache::{BuildError, Cache, CacheConfig, CacheStats, L2Error, Loader, RedisL2};
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

/// Why the resolver could not start; the cache's own error is the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolverError {
    /// The cache could not be built (settings out of bounds, no runtime).
    #[error("link cache")]
    Cache(#[from] BuildError),
    /// The cache's Redis L2 could not be reached (or its URL is invalid).
    #[error("link cache: Redis L2")]
    L2(#[from] L2Error),
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
        Ok(match redis_url {
            None => Self::Local(Cache::builder(config, loader).clock(clock).build()?),
            Some(url) => {
                let l2 = RedisL2::connect(url).await?;
                Self::Shared(Cache::builder(config, loader).clock(clock).l2(l2).build()?)
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
        result.map_err(StoreError::Cache)
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
            tracing::warn!(
                code,
                error = &e as &dyn std::error::Error,
                "cache invalidation did not reach the shared layer"
            );
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

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[tokio::test]
    async fn a_failed_load_keeps_the_database_error_as_its_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("t.db").display());
        let store = crate::store::test_store(&url).await;
        let clock = Arc::new(girder_core::SystemClock);
        let resolver = Resolver::new(store.clone(), CacheConfig::default(), None, clock)
            .await
            .expect("resolver");
        store.db().close().await;

        let err = resolver.resolve("abc").await.expect_err("the pool is closed");
        assert!(matches!(err, StoreError::Cache(_)), "{err:?}");
        let mut chain = Vec::new();
        let mut next: Option<&(dyn Error + 'static)> = Some(&err);
        while let Some(e) = next {
            chain.push(e.to_string());
            if let Some(driver) = e.downcast_ref::<sqlx::Error>() {
                assert!(matches!(driver, sqlx::Error::PoolClosed), "{driver:?}");
                assert_eq!(chain[..3], ["link cache", "cache loader failed", "database"]);
                return;
            }
            next = e.source();
        }
        panic!("no sqlx::Error in the chain {chain:?}");
    }
}
