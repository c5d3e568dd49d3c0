//! Top-K's reads and housekeeping on the shared database: exact sums over minute
//! rows, the all-time totals, the stored summaries of a range, and retention.
//! (The writes happen in [`crate::sink`], inside the stream's checkpoint.)

use girder_sql::{Db, on_db};

use crate::span::Buckets;

/// The database failed.
#[derive(Debug, thiserror::Error)]
#[error("top-k store")]
pub struct StoreError(#[from] sqlx::Error);

/// Top-K's tables on the instance's pool.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

/// One video's count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// The video.
    pub video: String,
    /// Its views.
    pub views: i64,
}

impl Store {
    /// The store on `db` (migrated).
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The pool.
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The `k` videos with the most views in minutes `first..=last`, summed over
    /// every pipeline, most first (ties by video id).
    ///
    /// # Errors
    /// The database failed.
    pub async fn top_in(&self, first: i64, last: i64, k: u32) -> Result<Vec<Counted>, StoreError> {
        let rows: Vec<(String, i64)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT video, CAST(SUM(views) AS BIGINT) AS total FROM topk_minute_counts \
                 WHERE minute >= $1 AND minute <= $2 \
                 GROUP BY video ORDER BY total DESC, video LIMIT $3",
            )
            .bind(first)
            .bind(last)
            .bind(i64::from(k))
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|(video, views)| Counted { video, views }).collect())
    }

    /// All views in minutes `first..=last`, over every pipeline.
    ///
    /// # Errors
    /// The database failed.
    pub async fn views_in(&self, first: i64, last: i64) -> Result<i64, StoreError> {
        let total: i64 = on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(views), 0) AS BIGINT) FROM topk_minute_counts \
                 WHERE minute >= $1 AND minute <= $2",
            )
            .bind(first)
            .bind(last)
            .fetch_one(pool)
            .await?
        });
        Ok(total)
    }

    /// The `k` videos with the most views ever, most first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn top_all(&self, k: u32) -> Result<Vec<Counted>, StoreError> {
        let rows: Vec<(String, i64)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT video, views FROM topk_totals WHERE views > 0 \
                 ORDER BY views DESC, video LIMIT $1",
            )
            .bind(i64::from(k))
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|(video, views)| Counted { video, views }).collect())
    }

    /// All views ever counted.
    ///
    /// # Errors
    /// The database failed.
    pub async fn views_all(&self) -> Result<i64, StoreError> {
        let total: i64 = on_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT CAST(COALESCE(SUM(views), 0) AS BIGINT) FROM topk_totals")
                .fetch_one(pool)
                .await?
        });
        Ok(total)
    }

    /// Every pipeline's and partition's stored summaries of `run`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn summaries(&self, run: Buckets) -> Result<Vec<Vec<u8>>, StoreError> {
        self.summaries_of(run.span, run.first, run.last).await
    }

    /// Every pipeline's and partition's all-time summary.
    ///
    /// # Errors
    /// The database failed.
    pub async fn summaries_all(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.summaries_of(0, 0, 0).await
    }

    async fn summaries_of(
        &self,
        span: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows: Vec<Vec<u8>> = on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT summary FROM topk_summaries WHERE span = $1 AND bucket >= $2 AND bucket <= $3",
            )
            .bind(span)
            .bind(first)
            .bind(last)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Deletes minute rows and summaries that end before minute `before` (all-time
    /// totals and summaries stay). Returns the rows deleted.
    ///
    /// # Errors
    /// The database failed.
    pub async fn prune(&self, before: i64) -> Result<u64, StoreError> {
        let deleted = on_db!(&self.db, |pool| {
            let minutes = sqlx::query("DELETE FROM topk_minute_counts WHERE minute < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected();
            let summaries = sqlx::query(
                "DELETE FROM topk_summaries WHERE span > 0 AND (bucket + 1) * span <= $1",
            )
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected();
            minutes + summaries
        });
        Ok(deleted)
    }

    /// How many Top-K pipelines (instances) have ever counted into this database.
    ///
    /// # Errors
    /// The database failed.
    pub async fn pipelines(&self) -> Result<i64, StoreError> {
        let n: i64 = on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(DISTINCT pipeline) FROM girder_stream_partitions \
                 WHERE pipeline LIKE 'topk-%'",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(n)
    }
}
