//! A counter row in PostgreSQL: the scale-out system of record, shared by every
//! server instance.

use std::ops::Range;

use sqlx::PgPool;

use super::{
    BackendError, Corruption, ID_LIMIT, LeaseError, RangeSource, check_lease_size, corrupt,
    range_ending_at,
};

/// Advisory-lock key serialising table creation across processes: concurrent
/// `CREATE TABLE IF NOT EXISTS` can still fail with a unique violation on
/// `pg_type` when two sessions race, so the first one to start holds this lock.
/// The value is the ASCII of "girderid" — arbitrary, just unlikely to collide.
const CREATE_LOCK_KEY: i64 = 0x6769_7264_6572_6964;

/// A [`RangeSource`] backed by a row of the `girder_id_counters` table in PostgreSQL.
///
/// Each lease is one `UPDATE … RETURNING` statement; the row lock makes concurrent
/// leases from any number of instances serialise, and commit makes them durable.
#[derive(Debug, Clone)]
pub struct PostgresSource {
    pool: PgPool,
    counter: String,
}

impl PostgresSource {
    /// Opens the counter named `counter`, creating the table and the row (at 0) if absent.
    ///
    /// # Errors
    /// [`LeaseError::Backend`] (with [`BackendError::Postgres`]) if the database cannot
    /// be reached or written.
    pub async fn new(pool: PgPool, counter: &str) -> Result<Self, LeaseError> {
        let mut tx = pool.begin().await.map_err(BackendError::postgres)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CREATE_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(BackendError::postgres)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS girder_id_counters \
             (name TEXT PRIMARY KEY, next_id BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(BackendError::postgres)?;
        sqlx::query(
            "INSERT INTO girder_id_counters (name, next_id) VALUES ($1, 0) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(counter)
        .execute(&mut *tx)
        .await
        .map_err(BackendError::postgres)?;
        tx.commit().await.map_err(BackendError::postgres)?;
        Ok(Self { pool, counter: counter.to_owned() })
    }

    /// The counter's name (its row in `girder_id_counters`).
    #[must_use]
    pub fn counter(&self) -> &str {
        &self.counter
    }
}

impl RangeSource for PostgresSource {
    async fn lease(&self, n: u64) -> Result<Range<u64>, LeaseError> {
        check_lease_size(n)?;
        let n_sql =
            i64::try_from(n).map_err(|_| LeaseError::InvalidSize { requested: n, max: 0 })?;
        // The guard in WHERE turns "would pass BIGINT's maximum" into "no row updated"
        // (reported as Exhausted) instead of an out-of-range error.
        let end: Option<i64> = sqlx::query_scalar(
            "UPDATE girder_id_counters SET next_id = next_id + $1 \
             WHERE name = $2 AND next_id <= $3 - $1 RETURNING next_id",
        )
        .bind(n_sql)
        .bind(&self.counter)
        .bind(ID_LIMIT as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(BackendError::postgres)?;
        if let Some(end) = end {
            return range_ending_at(&self.counter, end, n);
        }
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT next_id FROM girder_id_counters WHERE name = $1")
                .bind(&self.counter)
                .fetch_optional(&self.pool)
                .await
                .map_err(BackendError::postgres)?;
        match exists {
            Some(_) => Err(LeaseError::Exhausted),
            None => Err(corrupt(&self.counter, Corruption::Missing)),
        }
    }
}
