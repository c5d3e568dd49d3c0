//! Where links live: SQLite (the embedded default) or PostgreSQL (shared by
//! several instances). Both speak the same small interface; the SQL differs only
//! where the dialects do.

use girder_cache::GetError;
use girder_id::counter::{AnySource, PostgresSource, SqliteSource};
use std::sync::Arc;

use girder_log::batch::Sink;
use girder_sql::{Db, on_db};
use sqlx::Row;

/// A stored short link.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Link {
    /// The short code (generated or a custom alias).
    pub code: String,
    /// The destination URL, already validated.
    pub url: String,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// Expiry time, Unix milliseconds; `None` never expires.
    pub expires_at_ms: Option<i64>,
    /// Clicks flushed to the store so far (buffered clicks are not included).
    pub clicks: i64,
}

/// Failures of the link store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The code is already taken.
    #[error("code already exists")]
    Conflict,
    /// The database failed or is unreachable; the source says how.
    #[error("database")]
    Database(#[from] sqlx::Error),
    /// A read through the link cache failed: its loader's error (a `StoreError`,
    /// shared by every waiter of the load) is the source.
    #[error("link cache")]
    Cache(#[source] GetError<StoreError>),
    /// The id counter failed; the source says how.
    #[error("id counter")]
    Counter(#[from] girder_id::counter::LeaseError),
    /// The batch this link was written in failed; every link of it gets the same
    /// database error.
    #[error("batched insert")]
    Batch(#[source] Arc<sqlx::Error>),
    /// The link writer did not take or answer the link (closed for shutdown, or its
    /// batch was lost): it may or may not have been stored.
    #[error("link writer: {0}")]
    Writer(&'static str),
}

/// The link store, on the instance's one pool.
#[derive(Debug, Clone)]
pub struct LinkStore {
    db: Db,
}

/// The settings table holding Bit.ly's shared keys.
pub(crate) const SETTINGS_TABLE: &str = "bitly_settings";

impl LinkStore {
    /// The store on `db`, whose tables the server has migrated
    /// ([`crate::migrations`]).
    #[must_use]
    pub const fn new(db: Db) -> Self {
        Self { db }
    }

    /// The pool it runs on.
    #[must_use]
    pub const fn db(&self) -> &Db {
        &self.db
    }

    /// The engine's name, for logs and metrics.
    #[must_use]
    pub const fn engine(&self) -> &'static str {
        self.db.engine()
    }

    /// A counter on this same database, for minting codes.
    ///
    /// # Errors
    /// The counter table cannot be created.
    pub async fn id_source(&self, counter: &str) -> Result<AnySource, StoreError> {
        Ok(match &self.db {
            Db::Sqlite(pool) => AnySource::Sqlite(SqliteSource::new(pool.clone(), counter).await?),
            Db::Postgres(pool) => {
                AnySource::Postgres(PostgresSource::new(pool.clone(), counter).await?)
            }
        })
    }

    /// Whether the database answers.
    ///
    /// # Errors
    /// The database is unreachable.
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }

    /// Inserts a new link on its own (the API batches through [`LinkSink`]).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the code exists; database failures.
    pub async fn insert(&self, link: &Link) -> Result<(), StoreError> {
        match self.insert_many(std::slice::from_ref(link)).await?.first() {
            Some(true) => Ok(()),
            _ => Err(StoreError::Conflict),
        }
    }

    /// Inserts `links` in one statement (one transaction, one commit) and says which
    /// went in: a code that exists, or that an earlier link of the same batch took,
    /// is `false`.
    ///
    /// # Errors
    /// Database failures (nothing of the batch is stored then).
    pub async fn insert_many(&self, links: &[Link]) -> Result<Vec<bool>, sqlx::Error> {
        // A code twice in one batch: only its first link is tried.
        let mut seen = std::collections::HashSet::with_capacity(links.len());
        let first: Vec<bool> = links.iter().map(|l| seen.insert(l.code.as_str())).collect();
        let tried: Vec<&Link> =
            links.iter().zip(&first).filter(|(_, f)| **f).map(|(l, _)| l).collect();
        if tried.is_empty() {
            return Ok(first);
        }
        let mut sql = String::from(
            "INSERT INTO bitly_links (code, url, created_at_ms, expires_at_ms, clicks) VALUES ",
        );
        for i in 0..tried.len() {
            let n = i * 4;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("(${}, ${}, ${}, ${}, 0)", n + 1, n + 2, n + 3, n + 4));
        }
        sql.push_str(" ON CONFLICT (code) DO NOTHING RETURNING code");
        let inserted: Vec<String> = on_db!(&self.db, |pool| {
            let mut query = sqlx::query_scalar(&sql);
            for link in &tried {
                query = query
                    .bind(&link.code)
                    .bind(&link.url)
                    .bind(link.created_at_ms)
                    .bind(link.expires_at_ms);
            }
            query.fetch_all(pool).await?
        });
        let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();
        Ok(links.iter().zip(first).map(|(l, f)| f && inserted.contains(&l.code)).collect())
    }

    /// Looks a code up.
    ///
    /// # Errors
    /// Database failures.
    pub async fn get(&self, code: &str) -> Result<Option<Link>, StoreError> {
        const SELECT: &str =
            "SELECT code, url, created_at_ms, expires_at_ms, clicks FROM bitly_links";
        let row = match &self.db {
            Db::Sqlite(pool) => sqlx::query(&format!("{SELECT} WHERE code = ?"))
                .bind(code)
                .fetch_optional(pool)
                .await?
                .map(|r| link_from_row(&r)),
            Db::Postgres(pool) => sqlx::query(&format!("{SELECT} WHERE code = $1"))
                .bind(code)
                .fetch_optional(pool)
                .await?
                .map(|r| link_from_row(&r)),
        };
        row.transpose().map_err(StoreError::from)
    }

    /// Replaces a link's destination and expiry. Returns whether the code existed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn update(
        &self,
        code: &str,
        url: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let done = match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query("UPDATE bitly_links SET url = ?, expires_at_ms = ? WHERE code = ?")
                    .bind(url)
                    .bind(expires_at_ms)
                    .bind(code)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
            Db::Postgres(pool) => {
                sqlx::query("UPDATE bitly_links SET url = $1, expires_at_ms = $2 WHERE code = $3")
                    .bind(url)
                    .bind(expires_at_ms)
                    .bind(code)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
        };
        Ok(done == 1)
    }

    /// Deletes a link. Returns whether the code existed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn delete(&self, code: &str) -> Result<bool, StoreError> {
        let done = match &self.db {
            Db::Sqlite(pool) => sqlx::query("DELETE FROM bitly_links WHERE code = ?")
                .bind(code)
                .execute(pool)
                .await?
                .rows_affected(),
            Db::Postgres(pool) => sqlx::query("DELETE FROM bitly_links WHERE code = $1")
                .bind(code)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(done == 1)
    }

    /// One page of links, newest first, strictly after `after` (the last
    /// `(created_at_ms, code)` of the previous page). Keyset paging: rows
    /// inserted meanwhile never shift a page, so none is skipped or repeated.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list(
        &self,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<Link>, StoreError> {
        const SELECT: &str =
            "SELECT code, url, created_at_ms, expires_at_ms, clicks FROM bitly_links";
        let limit = i64::from(limit);
        let rows = match (&self.db, after) {
            (Db::Sqlite(pool), None) => {
                sqlx::query(&format!("{SELECT} ORDER BY created_at_ms DESC, code DESC LIMIT ?"))
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(link_from_row)
                    .collect::<Result<Vec<_>, _>>()
            }
            (Db::Sqlite(pool), Some((t, code))) => sqlx::query(&format!(
                "{SELECT} WHERE (created_at_ms, code) < (?, ?) \
                 ORDER BY created_at_ms DESC, code DESC LIMIT ?"
            ))
            .bind(t)
            .bind(code)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(link_from_row)
            .collect(),
            (Db::Postgres(pool), None) => {
                // Bytewise order ("C") on both pages, whatever the database's collation.
                sqlx::query(&format!(
                    "{SELECT} ORDER BY created_at_ms DESC, code COLLATE \"C\" DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(pool)
                .await?
                .iter()
                .map(link_from_row)
                .collect()
            }
            (Db::Postgres(pool), Some((t, code))) => sqlx::query(&format!(
                "{SELECT} WHERE (created_at_ms, code) < ($1, $2 COLLATE \"C\") \
                 ORDER BY created_at_ms DESC, code COLLATE \"C\" DESC LIMIT $3"
            ))
            .bind(t)
            .bind(code)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(link_from_row)
            .collect(),
        };
        Ok(rows?)
    }

    /// Adds buffered click counts in one transaction.
    ///
    /// # Errors
    /// Database failures; then nothing of the batch is applied.
    pub async fn add_clicks(&self, batch: &[(String, u64)]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for (code, n) in batch {
                    sqlx::query("UPDATE bitly_links SET clicks = clicks + ? WHERE code = ?")
                        .bind(i64::try_from(*n).unwrap_or(i64::MAX))
                        .bind(code)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Db::Postgres(pool) => {
                let codes: Vec<&str> = batch.iter().map(|(c, _)| c.as_str()).collect();
                let counts: Vec<i64> =
                    batch.iter().map(|(_, n)| i64::try_from(*n).unwrap_or(i64::MAX)).collect();
                // One statement for the whole batch: the point of buffering.
                sqlx::query(
                    "UPDATE bitly_links AS l SET clicks = l.clicks + v.n \
                     FROM UNNEST($1::text[], $2::bigint[]) AS v(code, n) WHERE l.code = v.code",
                )
                .bind(&codes)
                .bind(&counts)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }
}

fn link_from_row<R: Row>(row: &R) -> Result<Link, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Link {
        code: row.try_get("code")?,
        url: row.try_get("url")?,
        created_at_ms: row.try_get("created_at_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        clicks: row.try_get("clicks")?,
    })
}

/// A migrated store on its own small pool at `url`, for unit tests.
#[cfg(test)]
pub(crate) async fn test_store(url: &str) -> LinkStore {
    let config = girder_sql::PoolConfig { max_connections: 2, ..girder_sql::PoolConfig::default() };
    let db = Db::connect(url, config).await.expect("database");
    girder_sql::migrate::run(&db, crate::migrations()).await.expect("migrations");
    LinkStore::new(db)
}

/// Batches new links into [`LinkStore::insert_many`] (Pattern: Write Batching &
/// Buffering): concurrent shortens share one statement and one commit.
#[derive(Debug, Clone)]
pub struct LinkSink {
    store: LinkStore,
}

impl LinkSink {
    /// A sink writing into `store`.
    #[must_use]
    pub const fn new(store: LinkStore) -> Self {
        Self { store }
    }
}

/// Why a batched link was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkWriteError {
    /// Its code exists.
    #[error("code already exists")]
    Conflict,
    /// The batch failed.
    #[error("batched insert failed")]
    Database(#[source] Arc<sqlx::Error>),
}

impl Sink for LinkSink {
    type Item = Link;
    type Output = ();
    type Error = LinkWriteError;

    async fn write(&self, links: Vec<Link>) -> Vec<Result<(), LinkWriteError>> {
        match self.store.insert_many(&links).await {
            Ok(inserted) => inserted
                .into_iter()
                .map(|ok| if ok { Ok(()) } else { Err(LinkWriteError::Conflict) })
                .collect(),
            Err(e) => {
                let e = Arc::new(e);
                links.iter().map(|_| Err(LinkWriteError::Database(Arc::clone(&e)))).collect()
            }
        }
    }
}
