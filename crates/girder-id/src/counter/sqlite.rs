//! A counter row in SQLite: the embedded default for a single machine, shared by
//! every process that opens the same database file.

use std::ops::Range;

use sqlx::SqlitePool;

use super::{
    BackendError, Corruption, ID_LIMIT, LeaseError, RangeSource, check_lease_size, corrupt,
    range_ending_at,
};

/// A [`RangeSource`] backed by a row of the `girder_id_counters` table in SQLite.
///
/// Each lease is one `UPDATE … RETURNING` statement, atomic under SQLite's write
/// lock, so processes sharing the file never get overlapping ranges. Surviving a
/// power loss (not just a process crash) needs the pool opened with
/// `synchronous = FULL`; under `NORMAL` in WAL mode the last leases can roll back
/// and be granted again.
#[derive(Debug, Clone)]
pub struct SqliteSource {
    pool: SqlitePool,
    counter: String,
}

impl SqliteSource {
    /// Opens the counter named `counter`, creating the table and the row (at 0) if absent.
    ///
    /// # Errors
    /// [`LeaseError::Backend`] (with [`BackendError::Sqlite`]) if the database cannot be written.
    pub async fn new(pool: SqlitePool, counter: &str) -> Result<Self, LeaseError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS girder_id_counters \
             (name TEXT PRIMARY KEY, next_id INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await
        .map_err(BackendError::sqlite)?;
        sqlx::query("INSERT OR IGNORE INTO girder_id_counters (name, next_id) VALUES (?1, 0)")
            .bind(counter)
            .execute(&pool)
            .await
            .map_err(BackendError::sqlite)?;
        Ok(Self { pool, counter: counter.to_owned() })
    }

    /// The counter's name (its row in `girder_id_counters`).
    #[must_use]
    pub fn counter(&self) -> &str {
        &self.counter
    }
}

impl RangeSource for SqliteSource {
    async fn lease(&self, n: u64) -> Result<Range<u64>, LeaseError> {
        check_lease_size(n)?;
        let n_sql =
            i64::try_from(n).map_err(|_| LeaseError::InvalidSize { requested: n, max: 0 })?;
        // The guard in WHERE keeps `next_id + n` from overflowing: SQLite would turn
        // the column into a REAL instead of failing, silently corrupting the counter.
        // fetch_all (not fetch_optional) steps the statement to completion, so the
        // autocommit transaction is committed before we hand out the range.
        let ends: Vec<i64> = sqlx::query_scalar(
            "UPDATE girder_id_counters SET next_id = next_id + ?1 \
             WHERE name = ?2 AND next_id <= ?3 - ?1 RETURNING next_id",
        )
        .bind(n_sql)
        .bind(&self.counter)
        .bind(ID_LIMIT as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(BackendError::sqlite)?;
        match ends.as_slice() {
            [end] => range_ending_at(&self.counter, *end, n),
            [] => {
                let exists: Option<i64> =
                    sqlx::query_scalar("SELECT next_id FROM girder_id_counters WHERE name = ?1")
                        .bind(&self.counter)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(BackendError::sqlite)?;
                match exists {
                    Some(_) => Err(LeaseError::Exhausted),
                    None => Err(corrupt(&self.counter, Corruption::Missing)),
                }
            }
            _ => Err(corrupt(&self.counter, Corruption::DuplicateName)),
        }
    }
}
