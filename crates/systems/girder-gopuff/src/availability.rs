//! The availability read path ("Pattern: Query Result Caching"): the results of
//! the per-centre stock query ([`STOCK_QUERY`]) are cached under the canonical
//! [`QueryKey`] of the query text and its parameters, in girder-cache's L1 (and
//! Redis L2 when configured). Which centres are near is not cached here: each
//! instance keeps an index of them ([`crate::nearby`]).
//!
//! Staleness bound, as promised to users:
//! - On the instance that changed stock (an order, a `PUT` or a restock through
//!   the API), none: the write invalidates the centre's key before it is
//!   acknowledged.
//! - On other instances, with Redis configured: within the pub/sub latency.
//! - Without Redis, while the subscription is down, or for changes made behind
//!   the API's back (direct SQL): at most `availability_ttl_ms * (1 +
//!   availability_ttl_jitter_fraction)` (2.2 s by default), in L1 and in L2 alike
//!   (L2 entries live no longer than the L1 TTL here).
//!
//! Availability is advisory: orders never read this cache; they re-check stock
//! inside their transaction (see `order.rs`).
//!
//! One entry per centre holds its whole stock list (one query per miss, exact
//! invalidation by centre); a catalogue of very many skus per centre would be
//! better keyed per `(centre, sku)`.

use std::collections::HashMap;
use std::sync::Arc;

use girder_cache::query_key::QueryKey;
use girder_cache::{BuildError, Cache, CacheConfig, CacheStats, L2Error, Loader, RedisL2};
use girder_core::Clock;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::store::{Center, STOCK_QUERY, Store, StoreError};

/// A query the cache knows how to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Query {
    /// [`STOCK_QUERY`] for one centre.
    CenterStock(i64),
}

impl Query {
    fn key(self) -> QueryKey {
        let Self::CenterStock(center) = self;
        let key = QueryKey::new(STOCK_QUERY, &(center,));
        // An integer tuple always serializes.
        key.unwrap_or_else(|e| unreachable!("query parameters serialize: {e}"))
    }
}

/// A cached query result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    /// Every centre. No longer cached: the variant stays so that [`Answer::Stock`]
    /// keeps its encoding in a Redis L2 shared with instances of an earlier build.
    Centers(Vec<Center>),
    /// One centre's `(sku, quantity)` rows, sku-sorted.
    Stock(Vec<(String, i64)>),
}

/// Runs a query on a miss. A [`QueryKey`] is a one-way digest, so the loader
/// remembers which query each key it was asked about stands for; the map holds
/// one entry per centre ever queried.
#[derive(Debug)]
pub struct QueryLoader {
    store: Store,
    queries: Mutex<HashMap<QueryKey, Query>>,
}

impl QueryLoader {
    fn register(&self, query: Query) -> QueryKey {
        let key = query.key();
        self.queries.lock().entry(key).or_insert(query);
        key
    }
}

impl Loader<QueryKey, Answer> for QueryLoader {
    type Error = StoreError;

    fn load(
        &self,
        key: &QueryKey,
    ) -> impl Future<Output = Result<Option<Answer>, StoreError>> + Send {
        let query = self.queries.lock().get(key).copied();
        let store = self.store.clone();
        async move {
            match query {
                Some(Query::CenterStock(center)) => {
                    Ok(Some(Answer::Stock(store.center_stock(center).await?)))
                }
                // Keys are registered before every read; an unknown key is a bug.
                None => {
                    Err(StoreError::Invariant("availability cache: no query registered for a key"))
                }
            }
        }
    }
}

/// The cache's two shapes (mirrors Bit.ly's resolver).
enum Layers {
    /// L1 only: staleness across instances bounded by the TTL.
    Local(Cache<QueryKey, Answer, Arc<QueryLoader>>),
    /// L1 + Redis L2 with cross-instance invalidation over pub/sub.
    Shared(Cache<QueryKey, Answer, Arc<QueryLoader>, RedisL2>),
}

/// Why the availability cache could not start; the cache's own error is the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AvailabilityError {
    /// The cache could not be built (settings out of bounds, no runtime).
    #[error("availability cache")]
    Cache(#[from] BuildError),
    /// The cache's Redis L2 could not be reached (or its URL is invalid).
    #[error("availability cache: Redis L2")]
    L2(#[from] L2Error),
}

/// Cached availability reads, and their invalidation.
pub struct Availability {
    loader: Arc<QueryLoader>,
    layers: Layers,
}

impl std::fmt::Debug for Availability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.layers {
            Layers::Local(_) => "Availability::Local",
            Layers::Shared(_) => "Availability::Shared",
        })
    }
}

/// Settings of the availability cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AvailabilityConfig {
    /// How long a cached query result is served, before jitter.
    pub ttl_ms: u64,
    /// Each entry's lifetime varies by up to this fraction either way.
    pub ttl_jitter_fraction: f64,
    /// Upper bound on cached results (one per centre).
    pub capacity_entries: u64,
}

impl Availability {
    /// The cache over `store`, with a Redis L2 at `redis_url` if given.
    ///
    /// # Errors
    /// Invalid settings or an unreachable Redis.
    pub async fn new(
        store: Store,
        config: AvailabilityConfig,
        redis_url: Option<&str>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AvailabilityError> {
        let loader = Arc::new(QueryLoader { store, queries: Mutex::new(HashMap::new()) });
        let cache_config = CacheConfig {
            name: "gopuff-availability".into(),
            l1_capacity_entries: config.capacity_entries,
            ttl_ms: config.ttl_ms,
            ttl_jitter_fraction: config.ttl_jitter_fraction,
            negative_ttl_ms: 0,
            stale_ms: 0,
            // L2 must not outlive the staleness bound for changes made behind
            // the API's back (those send no invalidation).
            l2_ttl_ms: config.ttl_ms,
            ..CacheConfig::default()
        };
        let layers = match redis_url {
            None => Layers::Local(
                Cache::builder(cache_config, Arc::clone(&loader)).clock(clock).build()?,
            ),
            Some(url) => {
                let l2 = RedisL2::connect(url).await?;
                Layers::Shared(
                    Cache::builder(cache_config, Arc::clone(&loader))
                        .clock(clock)
                        .l2(l2)
                        .build()?,
                )
            }
        };
        Ok(Self { loader, layers })
    }

    async fn get(&self, query: Query) -> Result<Answer, StoreError> {
        let key = self.loader.register(query);
        let result = match &self.layers {
            Layers::Local(cache) => cache.get(&key).await,
            Layers::Shared(cache) => cache.get(&key).await,
        };
        // The loader's error arrives shared (every waiter of the load gets it).
        result
            .map_err(StoreError::Cache)?
            .ok_or(StoreError::Invariant("availability cache: the query loader found nothing"))
    }

    /// `(sku, quantity)` of every sku stocked at `center`, sku-sorted, possibly
    /// up to the staleness bound old.
    ///
    /// # Errors
    /// The store failed.
    pub async fn stock(&self, center: i64) -> Result<Vec<(String, i64)>, StoreError> {
        match self.get(Query::CenterStock(center)).await? {
            Answer::Stock(stock) => Ok(stock),
            Answer::Centers(_) => {
                Err(StoreError::Invariant("availability cache: a stock key holds centres"))
            }
        }
    }

    async fn invalidate(&self, query: Query) {
        let key = query.key();
        let result = match &self.layers {
            Layers::Local(cache) => cache.invalidate(&key).await,
            Layers::Shared(cache) => cache.invalidate(&key).await,
        };
        if let Err(e) = result {
            // This instance's L1 is clear; others fall back to the TTL bound.
            tracing::warn!(
                ?query,
                error = &e as &dyn std::error::Error,
                "availability invalidation did not reach the shared layer"
            );
        }
    }

    /// Forgets `center`'s cached stock everywhere: call after any stock change.
    pub async fn invalidate_stock(&self, center: i64) {
        self.invalidate(Query::CenterStock(center)).await;
    }

    /// Counters of every layer.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        match &self.layers {
            Layers::Local(cache) => cache.stats(),
            Layers::Shared(cache) => cache.stats(),
        }
    }

    /// The cross-instance invalidation listener's progress (always the default
    /// without Redis): a readiness probe, or a test awaiting an invalidation.
    #[must_use]
    pub fn listener_progress(
        &self,
    ) -> tokio::sync::watch::Receiver<girder_cache::ListenerProgress> {
        match &self.layers {
            Layers::Local(cache) => cache.listener_progress(),
            Layers::Shared(cache) => cache.listener_progress(),
        }
    }

    /// Stops the invalidation listener and background work.
    pub async fn shutdown(&self) {
        match &self.layers {
            Layers::Local(cache) => cache.shutdown().await,
            Layers::Shared(cache) => cache.shutdown().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use girder_sql::Db;

    use super::*;

    #[tokio::test]
    async fn a_failed_load_keeps_the_database_error_as_its_source() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.expect("sqlite");
        let store = Store::new(Db::Sqlite(pool.clone()));
        let config =
            AvailabilityConfig { ttl_ms: 1_000, ttl_jitter_fraction: 0.0, capacity_entries: 16 };
        let clock = Arc::new(girder_core::SystemClock);
        let availability = Availability::new(store, config, None, clock).await.expect("cache");
        pool.close().await;

        let err = availability.stock(1).await.expect_err("the pool is closed");
        assert!(matches!(err, StoreError::Cache(_)), "{err:?}");
        let mut chain = Vec::new();
        let mut next: Option<&(dyn Error + 'static)> = Some(&err);
        while let Some(e) = next {
            chain.push(e.to_string());
            if let Some(driver) = e.downcast_ref::<sqlx::Error>() {
                assert!(matches!(driver, sqlx::Error::PoolClosed), "{driver:?}");
                assert_eq!(chain[..3], ["availability cache", "cache loader failed", "database"]);
                return;
            }
            next = e.source();
        }
        panic!("no sqlx::Error in the chain {chain:?}");
    }
}
