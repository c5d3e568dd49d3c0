//! The router over real databases — N SQLite files or N PostgreSQL databases, each a
//! [`girder_sql::Db`] — and adding a shard to them while reads and writes go on.
//! Pattern: Database Sharding.
//!
//! [`ShardedDb`] opens every shard from its URL and runs the application's [`Schema`]
//! on each, then:
//! - [`ShardedDb::read`] and [`ShardedDb::write`] run one key's statement on the shard
//!   that owns it (the statement gets that shard's pool);
//! - [`ShardedDb::gather_page`] runs a keyset-paged query on every shard and merges the
//!   answers into one ordered page with one cursor ([`crate::router::Router::gather_page`]);
//!   [`ShardedDb::scatter`] runs any statement on every shard;
//! - [`ShardedDb::write_salted`] and [`ShardedDb::read_salted`] spread a hot key over
//!   salted sub-keys on several shards and read them all back;
//! - [`ShardedDb::add_shard`] adds a database online ([`reshard`] states the protocol
//!   and why it never serves a stale or missing key).
//!
//! ```no_run
//! use girder_shard::hash::{JumpHash, ShardId};
//! use girder_shard::sql::{KvTable, ShardedDb};
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let kv = KvTable::new("kv")?;
//! let urls = (0..4).map(|i| (ShardId(i), format!("sqlite:data/shard-{i}.db")));
//! let db = ShardedDb::open(JumpHash::new(4)?, urls, Default::default(), kv.schema()).await?;
//! let (kv2, key) = (kv.clone(), "user:42");
//! db.write(key.as_bytes(), |shard| {
//!     let kv = kv2.clone();
//!     async move { kv.put(&shard, key, "hello").await }
//! })
//! .await?;
//! let value = db.read(key.as_bytes(), |shard| async move { kv.get(&shard, key).await }).await?;
//! assert_eq!(value.as_deref(), Some("hello"));
//! # Ok(()) }
//! ```
//!
//! Statements receive a clone of the shard's pool (a pointer copy), so they may be
//! `async move` blocks that outlive no borrow. Each call runs under the router's
//! current placement from start to end; see [`reshard`] for how the placement changes.

pub mod reshard;
mod table;

use std::error::Error;
use std::future::Future;
use std::num::NonZeroU32;

use girder_sql::{Db, PoolConfig};
use tokio::sync::{Mutex, RwLock};

use crate::hash::{ShardId, ShardMap};
use crate::router::{Page, Router, RouterError, salted};

pub use reshard::{AddReport, AddShardError, ReshardConfig};
pub use table::{KvTable, MovableTable, TableNameError};

/// The statements that create the application's tables, run on every shard when it is
/// opened or added. Statements must be safe to run again (`CREATE TABLE IF NOT EXISTS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    /// Run on SQLite shards, in order.
    pub sqlite: Vec<String>,
    /// Run on PostgreSQL shards, in order.
    pub postgres: Vec<String>,
}

impl Schema {
    /// The same statements on both engines.
    #[must_use]
    pub fn same(statements: &[&str]) -> Self {
        let statements: Vec<String> = statements.iter().map(|s| (*s).to_owned()).collect();
        Self { sqlite: statements.clone(), postgres: statements }
    }

    /// Runs the statements for `db`'s engine, in order.
    ///
    /// # Errors
    /// A statement failed; the ones before it have run.
    pub async fn apply(&self, db: &Db) -> Result<(), sqlx::Error> {
        match db {
            Db::Sqlite(pool) => {
                for statement in &self.sqlite {
                    sqlx::query(statement).execute(pool).await?;
                }
            }
            Db::Postgres(pool) => {
                for statement in &self.postgres {
                    sqlx::query(statement).execute(pool).await?;
                }
            }
        }
        Ok(())
    }
}

/// Why the shards could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A shard's database could not be opened.
    #[error("opening {shard}")]
    Connect {
        /// The shard.
        shard: ShardId,
        /// Why.
        #[source]
        source: girder_sql::ConnectError,
    },
    /// The schema failed on a shard.
    #[error("creating the tables on {shard}")]
    Schema {
        /// The shard.
        shard: ShardId,
        /// The failed statement's error.
        #[source]
        source: sqlx::Error,
    },
    /// The databases do not match the map's shards.
    #[error(transparent)]
    Router(#[from] RouterError),
}

/// Why a routed statement failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError<E: Error + 'static> {
    /// The statement failed on a shard.
    #[error("{shard} failed")]
    Shard {
        /// The shard.
        shard: ShardId,
        /// The statement's error.
        #[source]
        source: E,
    },
    /// The map named a shard with no database (a [`ShardMap`] breaking its contract).
    #[error(transparent)]
    Router(#[from] RouterError),
}

impl<E: Error + 'static> QueryError<E> {
    fn on(shard: ShardId) -> impl FnOnce(E) -> Self {
        move |source| Self::Shard { shard, source }
    }
}

/// Where keys live right now: the router every read, write and query goes through,
/// and, while a shard is being added, the move in progress.
#[derive(Debug)]
struct Placement<M> {
    /// The map reads and scatters follow (the old map until the switch).
    router: Router<M, Db>,
    /// Set from the start of an addition's copy to its switch: writes of the keys whose
    /// owner changes also run on the new owner.
    moving: Option<reshard::Moving<M>>,
}

/// A [`Router`] over SQL databases that can grow online. See the module docs.
///
/// Every call holds a read lock on the placement for its duration; only the two
/// hand-overs of [`ShardedDb::add_shard`] take it exclusively, each for as long as the
/// longest call then in flight. Share it behind an `Arc`.
#[derive(Debug)]
pub struct ShardedDb<M> {
    placement: RwLock<Placement<M>>,
    schema: Schema,
    /// One addition at a time; remembers a cleanup that failed.
    resharding: Mutex<reshard::Resharding>,
}

impl<M: ShardMap + Send + Sync> ShardedDb<M> {
    /// Opens `urls` (`sqlite:PATH` or `postgres://…`, one per shard of `map`), each with
    /// its own pool sized by `pool`, and runs `schema` on each.
    ///
    /// # Errors
    /// A database could not be opened, the schema failed, or the shards given are not
    /// exactly the map's.
    pub async fn open(
        map: M,
        urls: impl IntoIterator<Item = (ShardId, String)>,
        pool: PoolConfig,
        schema: Schema,
    ) -> Result<Self, OpenError> {
        let urls: Vec<(ShardId, String)> = urls.into_iter().collect();
        let opened = futures_util::future::join_all(urls.iter().map(|(shard, url)| async move {
            Db::connect(url, pool)
                .await
                .map(|db| (*shard, db))
                .map_err(|source| OpenError::Connect { shard: *shard, source })
        }))
        .await;
        let dbs: Vec<(ShardId, Db)> = opened.into_iter().collect::<Result<_, _>>()?;
        Self::with_dbs(map, dbs, schema).await
    }

    /// Like [`ShardedDb::open`], over pools the caller opened.
    ///
    /// # Errors
    /// The schema failed, or the shards given are not exactly the map's.
    pub async fn with_dbs(
        map: M,
        dbs: impl IntoIterator<Item = (ShardId, Db)>,
        schema: Schema,
    ) -> Result<Self, OpenError> {
        let router = Router::new(map, dbs)?;
        let applied =
            futures_util::future::join_all(router.shards().map(|(shard, db)| {
                let schema = &schema;
                async move {
                    schema.apply(db).await.map_err(|source| OpenError::Schema { shard, source })
                }
            }))
            .await;
        applied.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(Self {
            placement: RwLock::new(Placement { router, moving: None }),
            schema,
            resharding: Mutex::new(reshard::Resharding::default()),
        })
    }

    /// A copy of the current router: its map and every shard's pool (clones share the
    /// pools). It is a snapshot: an addition that completes later does not change it.
    pub async fn router(&self) -> Router<M, Db>
    where
        M: Clone,
    {
        self.placement.read().await.router.clone()
    }

    /// The shard that currently answers reads of `key`.
    ///
    /// # Errors
    /// Only for a [`ShardMap`] that breaks its contract.
    pub async fn owner(&self, key: &[u8]) -> Result<ShardId, RouterError> {
        self.placement.read().await.router.route(key).map(|(shard, _)| shard)
    }

    /// Runs `query` on the shard that owns `key`, with its pool.
    ///
    /// While a shard is being added, the key's old owner answers until the switch: it
    /// holds the latest value of every key throughout.
    ///
    /// # Errors
    /// The query failed (named with its shard).
    pub async fn read<T, E, F, Fut>(&self, key: &[u8], query: F) -> Result<T, QueryError<E>>
    where
        E: Error + 'static,
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let placement = self.placement.read().await;
        let (shard, db) = placement.router.route(key)?;
        query(db.clone()).await.map_err(QueryError::on(shard))
    }

    /// Runs `statement` on the shard that owns `key`, with its pool, and returns its
    /// answer.
    ///
    /// While a shard is being added and `key` is one that changes owner, the statement
    /// runs twice under the key's lock: on the old owner (whose answer is returned) and
    /// then on the new one. So it must be **deterministic**: its effect may depend only
    /// on the rows it finds and its arguments — not on `now()`, `random()`, or a
    /// sequence or autoincrement default. A failure on the old owner is returned and the
    /// new one is not touched; a failure on the new owner abandons the addition at its
    /// switch (the old owner stays authoritative), and the write is still acknowledged.
    ///
    /// # Errors
    /// The statement failed on the key's owner.
    pub async fn write<T, E, F, Fut>(&self, key: &[u8], statement: F) -> Result<T, QueryError<E>>
    where
        E: Error + 'static,
        F: Fn(Db) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let placement = self.placement.read().await;
        let (shard, db) = placement.router.route(key)?;
        match &placement.moving {
            Some(moving) => moving.write(key, shard, db, statement).await,
            None => statement(db.clone()).await.map_err(QueryError::on(shard)),
        }
    }

    /// Writes to salt `pick % salts` of the hot `key` ([`crate::router::salted`]):
    /// `statement` gets the owning shard's pool and the salted key to store under.
    /// Spread a hot key's writes by varying `pick` (a counter, a random number).
    ///
    /// # Errors
    /// As [`ShardedDb::write`].
    pub async fn write_salted<T, E, F, Fut>(
        &self,
        key: &[u8],
        pick: u32,
        salts: NonZeroU32,
        statement: F,
    ) -> Result<T, QueryError<E>>
    where
        E: Error + 'static,
        F: Fn(Db, Vec<u8>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let salted_key = salted(key, pick % salts.get());
        self.write(&salted_key, |db| statement(db, salted_key.clone())).await
    }

    /// Reads every salt of the hot `key` ([`crate::router::salts`]), all at once: one
    /// answer per salt, in salt order, each from the salted key's owner.
    ///
    /// # Errors
    /// The first salt (in salt order) whose query failed.
    pub async fn read_salted<T, E, F, Fut>(
        &self,
        key: &[u8],
        salts: NonZeroU32,
        query: F,
    ) -> Result<Vec<T>, QueryError<E>>
    where
        E: Error + 'static,
        F: Fn(Db, Vec<u8>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let placement = self.placement.read().await;
        let mut reads = Vec::with_capacity(salts.get() as usize);
        for salted_key in crate::router::salts(key, salts.get()) {
            let (shard, db) = placement.router.route(&salted_key)?;
            let read = query(db.clone(), salted_key);
            reads.push(async move { read.await.map_err(QueryError::on(shard)) });
        }
        futures_util::future::join_all(reads).await.into_iter().collect()
    }

    /// Runs `query` on every shard at once, with its pool; the answers in shard order.
    ///
    /// Between an addition's switch and the end of its cleanup, an old shard still
    /// holds the rows it gave away: a scatter sees them. Use [`ShardedDb::gather_page`]
    /// (which drops them) for row queries, or filter by [`ShardedDb::owner`].
    ///
    /// # Errors
    /// The first shard (in shard order) whose query failed.
    pub async fn scatter<T, E, F, Fut>(&self, query: F) -> Result<Vec<(ShardId, T)>, QueryError<E>>
    where
        E: Error + 'static,
        F: Fn(ShardId, Db) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let placement = self.placement.read().await;
        placement
            .router
            .scatter(|shard, db| query(shard, db.clone()))
            .await
            .map_err(|e| QueryError::Shard { shard: e.shard, source: e.source })
    }

    /// One page of rows over every shard, in ascending `order_key` order, after the
    /// cursor `after`, merged as [`crate::router::Router::gather_page`] does.
    ///
    /// `query(pool, after, limit)` must return the shard's first `limit` rows whose
    /// order key is greater than `after` (all when `None`), ascending — a keyset page
    /// (`WHERE (score, id) > ($1, $2) ORDER BY score, id LIMIT $3`). Order keys must be
    /// unique across shards and SQL must order them as Rust's `Ord` does (compare text
    /// byte by byte: `COLLATE "C"` on PostgreSQL). `shard_key(row)` is the key the row
    /// is placed by: a row a shard holds but no longer owns (left by an addition whose
    /// cleanup has not finished) is dropped, and that shard is asked for more, so pages
    /// are exactly those of one table holding every live row.
    ///
    /// # Errors
    /// A shard's query failed.
    pub async fn gather_page<T, K, B, E, F, Fut>(
        &self,
        after: Option<&K>,
        limit: usize,
        order_key: impl Fn(&T) -> K,
        shard_key: impl Fn(&T) -> B,
        query: F,
    ) -> Result<Page<T, K>, QueryError<E>>
    where
        K: Ord + Clone,
        B: AsRef<[u8]>,
        E: Error + 'static,
        F: Fn(Db, Option<K>, usize) -> Fut,
        Fut: Future<Output = Result<Vec<T>, E>>,
    {
        let placement = self.placement.read().await;
        let router = &placement.router;
        let (map, order_key, shard_key, query) = (router.map(), &order_key, &shard_key, &query);
        let owned_rows = |shard: ShardId, db: &Db, after: Option<&K>, limit: usize| {
            let (db, mut cursor) = (db.clone(), after.cloned());
            async move {
                let mut owned = Vec::new();
                loop {
                    let rows = query(db.clone(), cursor.clone(), limit).await?;
                    let full = rows.len() >= limit;
                    let last = rows.last().map(order_key);
                    let progressed = last.is_some() && last > cursor;
                    owned.extend(
                        rows.into_iter()
                            .filter(|row| map.shard_of(shard_key(row).as_ref()) == shard),
                    );
                    // A full answer may hide owned rows past its last; ask again after it.
                    // A query that does not move past its cursor is treated as the end.
                    if !full || owned.len() >= limit || !progressed {
                        owned.truncate(limit);
                        return Ok(owned);
                    }
                    cursor = last;
                }
            }
        };
        router
            .gather_page(after, limit, order_key, owned_rows)
            .await
            .map_err(|e| QueryError::Shard { shard: e.shard, source: e.source })
    }

    /// Closes every shard's pool (including a shard being added), waiting for
    /// statements in flight.
    pub async fn close(&self) {
        let placement = self.placement.read().await;
        let mut dbs: Vec<&Db> = placement.router.shards().map(|(_, db)| db).collect();
        if let Some(moving) = &placement.moving {
            dbs.extend(moving.next.shards().map(|(_, db)| db));
        }
        futures_util::future::join_all(dbs.into_iter().map(Db::close)).await;
    }
}
