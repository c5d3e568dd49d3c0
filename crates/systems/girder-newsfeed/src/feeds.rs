//! The materialized feeds ("Pattern: Pre-computation & Materialized Views"), sharded
//! by owner ("Pattern: Database Sharding"): each owner's entries live on the one
//! shard jump hash assigns their id to. A shard is any database (a SQLite file or a
//! PostgreSQL database); by default the instance's own database is the only shard.
//!
//! An entry is `(owner, post_id, author)` with `(owner, post_id)` as its key, so
//! inserting one that exists is a no-op: a fan-out job delivered twice leaves each
//! entry once.

use girder_shard::hash::{BuildError, JumpHash, ShardId};
use girder_shard::router::{Router, RouterError};
use girder_sql::{Db, on_db};

/// Failures of the feed shards.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// A shard's database failed; the source says how.
    #[error("feed shard {shard}")]
    Database {
        /// Which shard.
        shard: u32,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// The shard map has no backend for a shard (a bug).
    #[error(transparent)]
    Router(#[from] RouterError),
}

/// One materialized feed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The post.
    pub post_id: i64,
    /// Its author.
    pub author: String,
}

/// The feed shards.
#[derive(Debug, Clone)]
pub struct Feeds {
    router: Router<JumpHash, Db>,
}

/// The feed shards' migrations (applied to every shard).
#[must_use]
pub fn migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "newsfeed-feeds",
        sqlite: sqlx::migrate!("migrations-feed/sqlite"),
        postgres: sqlx::migrate!("migrations-feed/postgres"),
    }
}

/// Owners whose feeds live on one shard, with that shard's database.
type ShardGroup<'d, 'o> = (ShardId, &'d Db, Vec<&'o str>);

/// Most rows one multi-row insert writes (keeps PostgreSQL's bind count in range).
const INSERT_ROWS_MAX: usize = 500;

impl Feeds {
    /// Feeds over `shards`, shard `i` of the list being jump-hash shard `i`.
    ///
    /// # Errors
    /// The list is empty or longer than the hash allows.
    pub fn new(shards: Vec<Db>) -> Result<Self, BuildError> {
        let count = u32::try_from(shards.len()).unwrap_or(u32::MAX);
        let map = JumpHash::new(count)?;
        let router =
            Router::new(map, shards.into_iter().enumerate().map(|(i, db)| (ShardId(i as u32), db)))
                .map_err(|_| BuildError::Empty)?;
        Ok(Self { router })
    }

    /// Migrates every shard.
    ///
    /// # Errors
    /// A shard's migration failed.
    pub async fn migrate(&self) -> Result<(), girder_sql::migrate::Error> {
        for (_, db) in self.router.shards() {
            girder_sql::migrate::run(db, migrations()).await?;
        }
        Ok(())
    }

    /// How many shards.
    #[must_use]
    pub fn shard_count(&self) -> usize {
        self.router.shards().count()
    }

    /// The shard holding `owner`'s feed.
    ///
    /// # Errors
    /// A broken shard map (a bug).
    pub fn shard_of(&self, owner: &str) -> Result<(ShardId, &Db), FeedError> {
        Ok(self.router.route(owner.as_bytes())?)
    }

    /// Every shard's database, in shard order.
    pub fn shards(&self) -> impl Iterator<Item = (ShardId, &Db)> {
        self.router.shards()
    }

    /// Inserts `post_id` by `author` into each of `owners`' feeds, skipping those
    /// that hold it: one multi-row insert per shard touched.
    ///
    /// # Errors
    /// A shard failed (the entries written before it stay: reinserting is a no-op).
    pub async fn insert(
        &self,
        owners: &[String],
        post_id: i64,
        author: &str,
    ) -> Result<(), FeedError> {
        for (shard, db, owners) in self.by_shard(owners)? {
            for chunk in owners.chunks(INSERT_ROWS_MAX) {
                let values: Vec<String> =
                    (0..chunk.len()).map(|i| format!("(${}, $1, $2)", i + 3)).collect();
                let sql = format!(
                    "INSERT INTO nf_feed (owner, post_id, author) VALUES {} \
                     ON CONFLICT (owner, post_id) DO NOTHING",
                    values.join(", ")
                );
                let result: Result<_, sqlx::Error> = async {
                    on_db!(db, |pool| {
                        let mut query = sqlx::query(&sql).bind(post_id).bind(author);
                        for owner in chunk {
                            query = query.bind(*owner);
                        }
                        query.execute(pool).await?;
                    });
                    Ok(())
                }
                .await;
                result.map_err(|source| FeedError::Database { shard: shard.0, source })?;
            }
        }
        Ok(())
    }

    /// `owner`'s entries with `after < post_id < before`, newest first, at most
    /// `limit`.
    ///
    /// # Errors
    /// The owner's shard failed.
    pub async fn page(
        &self,
        owner: &str,
        after: i64,
        before: i64,
        limit: u32,
    ) -> Result<Vec<Entry>, FeedError> {
        let (shard, db) = self.shard_of(owner)?;
        let rows: Result<Vec<(i64, String)>, sqlx::Error> = async {
            Ok(on_db!(db, |pool| {
                sqlx::query_as(
                    "SELECT post_id, author FROM nf_feed WHERE owner = $1 AND post_id > $2 \
                     AND post_id < $3 ORDER BY post_id DESC LIMIT $4",
                )
                .bind(owner)
                .bind(after)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
            }))
        }
        .await;
        let rows = rows.map_err(|source| FeedError::Database { shard: shard.0, source })?;
        Ok(rows.into_iter().map(|(post_id, author)| Entry { post_id, author }).collect())
    }

    /// Removes `post_id` from each of `owners`' feeds: one statement per shard touched.
    ///
    /// # Errors
    /// A shard failed.
    pub async fn remove_post(&self, owners: &[String], post_id: i64) -> Result<u64, FeedError> {
        let mut removed = 0;
        for (shard, db, owners) in self.by_shard(owners)? {
            for chunk in owners.chunks(INSERT_ROWS_MAX) {
                let placeholders: Vec<String> =
                    (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "DELETE FROM nf_feed WHERE post_id = $1 AND owner IN ({})",
                    placeholders.join(", ")
                );
                let result: Result<u64, sqlx::Error> = async {
                    Ok(on_db!(db, |pool| {
                        let mut query = sqlx::query(&sql).bind(post_id);
                        for owner in chunk {
                            query = query.bind(*owner);
                        }
                        query.execute(pool).await?.rows_affected()
                    }))
                }
                .await;
                removed +=
                    result.map_err(|source| FeedError::Database { shard: shard.0, source })?;
            }
        }
        Ok(removed)
    }

    /// `owners` grouped by the shard holding their feeds, with that shard's database.
    fn by_shard<'a>(&self, owners: &'a [String]) -> Result<Vec<ShardGroup<'_, 'a>>, FeedError> {
        let mut groups: std::collections::BTreeMap<ShardId, Vec<&'a str>> = Default::default();
        for owner in owners {
            groups.entry(self.shard_of(owner)?.0).or_default().push(owner);
        }
        groups
            .into_iter()
            .map(|(shard, owners)| {
                let db = self.router.backend(shard).ok_or(RouterError::Missing(shard))?;
                Ok((shard, db, owners))
            })
            .collect()
    }

    /// Removes `author`'s entries from `owner`'s feed (after an unfollow).
    ///
    /// # Errors
    /// The owner's shard failed.
    pub async fn remove_author(&self, owner: &str, author: &str) -> Result<u64, FeedError> {
        let (shard, db) = self.shard_of(owner)?;
        let result: Result<u64, sqlx::Error> = async {
            Ok(on_db!(db, |pool| {
                sqlx::query("DELETE FROM nf_feed WHERE owner = $1 AND author = $2")
                    .bind(owner)
                    .bind(author)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }))
        }
        .await;
        result.map_err(|source| FeedError::Database { shard: shard.0, source })
    }

    /// Entries per shard (for the dashboard and the load spread).
    ///
    /// # Errors
    /// A shard failed.
    pub async fn counts(&self) -> Result<Vec<(u32, i64)>, FeedError> {
        let mut counts = Vec::new();
        for (shard, db) in self.router.shards() {
            let result: Result<i64, sqlx::Error> = async {
                Ok(on_db!(db, |pool| {
                    sqlx::query_scalar("SELECT COUNT(*) FROM nf_feed").fetch_one(pool).await?
                }))
            }
            .await;
            counts.push((
                shard.0,
                result.map_err(|source| FeedError::Database { shard: shard.0, source })?,
            ));
        }
        Ok(counts)
    }
}
