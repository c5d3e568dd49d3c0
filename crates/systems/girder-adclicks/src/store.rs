//! Ad Click Aggregator's SQL: ads, the raw clicks, per-minute counts.

use std::collections::BTreeMap;

use girder_sql::{Db, on_db};
use girder_stream::sql::{SqlSink, SqlTx};
use girder_stream::{Emission, EmissionKind};

/// A minute, in ms.
pub const MINUTE_MS: i64 = 60_000;
/// The pipeline name reconciliation writes its corrections under.
pub const RECONCILE: &str = "reconcile";

/// An ad.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Ad {
    /// Its id.
    pub id: i64,
    /// The advertiser who created it.
    pub owner: String,
    /// A display name.
    pub name: String,
    /// Where a click goes.
    pub target_url: String,
    /// When it was created.
    pub created_ms: i64,
}

/// The tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// On `db` (migrated).
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The pool.
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Creates an ad.
    ///
    /// # Errors
    /// The database failed.
    pub async fn create_ad(
        &self,
        owner: &str,
        name: &str,
        target_url: &str,
        now: i64,
    ) -> Result<Ad, sqlx::Error> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(
                "INSERT INTO ac_ads (owner, name, target_url, created_ms) VALUES ($1, $2, $3, $4) \
                 RETURNING id, owner, name, target_url, created_ms",
            )
            .bind(owner)
            .bind(name)
            .bind(target_url)
            .bind(now)
            .fetch_one(pool)
            .await?
        }))
    }

    /// An ad by id.
    ///
    /// # Errors
    /// The database failed.
    pub async fn ad(&self, id: i64) -> Result<Option<Ad>, sqlx::Error> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, owner, name, target_url, created_ms FROM ac_ads WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// `owner`'s ads after id `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn ads_of(
        &self,
        owner: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Ad>, sqlx::Error> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, owner, name, target_url, created_ms FROM ac_ads \
                 WHERE owner = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(owner)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        }))
    }

    /// Records the first click of `impression`: `false` when it was clicked before
    /// (the exact duplicate check: the primary key).
    ///
    /// # Errors
    /// The database failed.
    pub async fn record_click(
        &self,
        impression: &str,
        ad_id: i64,
        viewer: &str,
        clicked_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let rows = on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO ac_clicks (impression, ad_id, viewer, clicked_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (impression) DO NOTHING",
            )
            .bind(impression)
            .bind(ad_id)
            .bind(viewer)
            .bind(clicked_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(rows == 1)
    }

    /// Whether `impression` was clicked.
    ///
    /// # Errors
    /// The database failed.
    pub async fn clicked(&self, impression: &str) -> Result<bool, sqlx::Error> {
        let n: i64 = on_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM ac_clicks WHERE impression = $1")
                .bind(impression)
                .fetch_one(pool)
                .await?
        });
        Ok(n > 0)
    }

    /// `ad_id`'s clicks in `[from, to)` per bucket of `bucket_ms` (a multiple of a
    /// minute), from the stream's counts and reconciliation's corrections.
    ///
    /// # Errors
    /// The database failed.
    pub async fn buckets(
        &self,
        ad_id: i64,
        from: i64,
        to: i64,
        bucket_ms: i64,
    ) -> Result<Vec<(i64, i64)>, sqlx::Error> {
        let rows: Vec<(i64, i64)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT minute_ms, CAST(SUM(clicks) AS BIGINT) FROM ac_minute_counts \
                 WHERE ad_id = $1 AND minute_ms >= $2 AND minute_ms < $3 \
                 GROUP BY minute_ms ORDER BY minute_ms",
            )
            .bind(ad_id)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?
        });
        let mut out: BTreeMap<i64, i64> = BTreeMap::new();
        for (minute, clicks) in rows {
            let bucket = minute - (minute - from).rem_euclid(bucket_ms);
            *out.entry(bucket).or_insert(0) += clicks;
        }
        Ok(out.into_iter().filter(|(_, n)| *n != 0).collect())
    }

    /// Exact clicks per (ad, minute) in `[from, to)` from the raw clicks.
    ///
    /// # Errors
    /// The database failed.
    pub async fn exact(
        &self,
        from: i64,
        to: i64,
    ) -> Result<BTreeMap<(i64, i64), i64>, sqlx::Error> {
        let rows: Vec<(i64, i64, i64)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT ad_id, clicked_ms - (clicked_ms % 60000) AS minute_ms, COUNT(*) FROM ac_clicks \
                 WHERE clicked_ms >= $1 AND clicked_ms < $2 GROUP BY ad_id, minute_ms",
            )
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|(ad, m, n)| ((ad, m), n)).collect())
    }

    /// Counts per (ad, minute) in `[from, to)`: the streams' (`corrections = false`)
    /// or reconciliation's (`true`).
    ///
    /// # Errors
    /// The database failed.
    pub async fn counted(
        &self,
        from: i64,
        to: i64,
        corrections: bool,
    ) -> Result<BTreeMap<(i64, i64), i64>, sqlx::Error> {
        let sql = if corrections {
            "SELECT ad_id, minute_ms, CAST(SUM(clicks) AS BIGINT) FROM ac_minute_counts \
             WHERE minute_ms >= $1 AND minute_ms < $2 AND pipeline = $3 GROUP BY ad_id, minute_ms"
        } else {
            "SELECT ad_id, minute_ms, CAST(SUM(clicks) AS BIGINT) FROM ac_minute_counts \
             WHERE minute_ms >= $1 AND minute_ms < $2 AND pipeline <> $3 GROUP BY ad_id, minute_ms"
        };
        let rows: Vec<(i64, i64, i64)> = on_db!(&self.db, |pool| {
            sqlx::query_as(sql).bind(from).bind(to).bind(RECONCILE).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(|(ad, m, n)| ((ad, m), n)).collect())
    }

    /// Sets reconciliation's correction for (ad, minute); zero removes it.
    ///
    /// # Errors
    /// The database failed.
    pub async fn set_correction(
        &self,
        ad_id: i64,
        minute_ms: i64,
        clicks: i64,
    ) -> Result<(), sqlx::Error> {
        on_db!(&self.db, |pool| {
            if clicks == 0 {
                sqlx::query("DELETE FROM ac_minute_counts WHERE ad_id = $1 AND minute_ms = $2 AND pipeline = $3")
                    .bind(ad_id)
                    .bind(minute_ms)
                    .bind(RECONCILE)
                    .execute(pool)
                    .await?;
            } else {
                sqlx::query(
                    "INSERT INTO ac_minute_counts (pipeline, ad_id, minute_ms, clicks) VALUES ($3, $1, $2, $4) \
                     ON CONFLICT (ad_id, minute_ms, pipeline) DO UPDATE SET clicks = excluded.clicks",
                )
                .bind(ad_id)
                .bind(minute_ms)
                .bind(RECONCILE)
                .bind(clicks)
                .execute(pool)
                .await?;
            }
        });
        Ok(())
    }
}

/// Writes a pipeline's per-minute counts inside its checkpoint's transaction.
#[derive(Debug, Clone)]
pub struct MinuteSink {
    /// The pipeline the rows belong to.
    pub pipeline: String,
}

const UPSERT: &str = "INSERT INTO ac_minute_counts (pipeline, ad_id, minute_ms, clicks) VALUES ($1, $2, $3, $4) \
                      ON CONFLICT (ad_id, minute_ms, pipeline) DO UPDATE SET clicks = excluded.clicks";

impl SqlSink<i64, u64> for MinuteSink {
    async fn write(
        &self,
        tx: SqlTx<'_>,
        _partition: u32,
        emissions: &[Emission<i64, u64>],
    ) -> Result<(), sqlx::Error> {
        // Tumbling windows never retract; every emission is the minute's whole count.
        let rows = emissions.iter().filter(|e| e.kind != EmissionKind::Retract);
        match tx {
            SqlTx::Sqlite(conn) => {
                for e in rows {
                    sqlx::query(UPSERT)
                        .bind(&self.pipeline)
                        .bind(e.key)
                        .bind(e.window.start)
                        .bind(i64::try_from(e.value).unwrap_or(i64::MAX))
                        .execute(&mut *conn)
                        .await?;
                }
            }
            SqlTx::Postgres(conn) => {
                for e in rows {
                    sqlx::query(UPSERT)
                        .bind(&self.pipeline)
                        .bind(e.key)
                        .bind(e.window.start)
                        .bind(i64::try_from(e.value).unwrap_or(i64::MAX))
                        .execute(&mut *conn)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
