//! Reservations in SQLite: the embedded system of record. Every transition is one
//! `BEGIN IMMEDIATE` transaction, so it reads and writes under SQLite's single write
//! lock, shared by every process that opens the same file.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use girder_core::Clock;
use sqlx::{SqliteConnection, SqlitePool};

use super::{
    ConfirmAction, ConfirmError, Hold, HoldError, ItemStatus, ReservationConfig, ReservationError,
    ReservationStore, Stored, check_add, check_confirm, check_hold, check_release, decide_confirm,
    decide_hold, new_hold_id,
};
use crate::BackendError;
use crate::txn::with_sqlite_transaction;

/// A [`ReservationStore`] on the `girder_reservations` table in SQLite.
///
/// Holds and confirms read the items' states and write them in one `BEGIN
/// IMMEDIATE` transaction (see [`with_sqlite_transaction`]): nobody else can write
/// in between, and the `UPDATE`'s own guard re-checks each row anyway. A busy
/// database is retried per [`ReservationConfig::retry`] on top of the pool's
/// `busy_timeout`, inside the store, so callers never see `SQLITE_BUSY`.
pub struct SqliteReservationStore {
    pool: SqlitePool,
    config: ReservationConfig,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SqliteReservationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReservationStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SqliteReservationStore {
    /// Opens the store, creating the table if absent.
    ///
    /// # Errors
    /// [`ReservationError::Backend`] (with [`BackendError::Sqlite`]) if the database
    /// cannot be written.
    pub async fn new(
        pool: SqlitePool,
        config: ReservationConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ReservationError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS girder_reservations ( \
               pool TEXT NOT NULL, item TEXT NOT NULL, \
               state TEXT NOT NULL CHECK (state IN ('AVAILABLE', 'RESERVED', 'SOLD')), \
               holder TEXT, hold_id TEXT, until_ms INTEGER, \
               PRIMARY KEY (pool, item))",
        )
        .execute(&pool)
        .await
        .map_err(BackendError::sqlite)?;
        // The sweeper's lookup of expired holds.
        sqlx::query(
            "CREATE INDEX IF NOT EXISTS girder_reservations_expiry \
             ON girder_reservations (state, until_ms)",
        )
        .execute(&pool)
        .await
        .map_err(BackendError::sqlite)?;
        Ok(Self { pool, config, clock })
    }
}

/// `?first, ?first+1, …` for `n` bound items.
fn placeholders(first: usize, n: usize) -> String {
    let mut out = String::new();
    for i in first..first + n {
        if i > first {
            out.push_str(", ");
        }
        let _ = write!(out, "?{i}");
    }
    out
}

/// The stored states of those of `items` that exist in `pool`.
async fn select_states(
    conn: &mut SqliteConnection,
    pool: &str,
    items: &[String],
) -> Result<HashMap<String, Stored>, sqlx::Error> {
    let sql = format!(
        "SELECT item, state, holder, hold_id, until_ms FROM girder_reservations \
         WHERE pool = ?1 AND item IN ({})",
        placeholders(2, items.len())
    );
    let mut query = sqlx::query_as(&sql).bind(pool);
    for item in items {
        query = query.bind(item);
    }
    let rows: Vec<Row> = query.fetch_all(&mut *conn).await?;
    decode_rows(rows)
}

/// `(item, state, holder, hold_id, until_ms)`.
type Row = (String, String, Option<String>, Option<String>, Option<i64>);

fn decode_rows(rows: Vec<Row>) -> Result<HashMap<String, Stored>, sqlx::Error> {
    rows.into_iter()
        .map(|(item, state, holder, hold_id, until_ms)| {
            let stored = Stored::from_row(&state, holder, hold_id, until_ms)
                .map_err(sqlx::Error::Protocol)?;
            Ok((item, stored))
        })
        .collect()
}

fn decode_status(row: Row, now_ms: u64) -> Result<(String, ItemStatus), ReservationError> {
    let (item, state, holder, hold_id, until_ms) = row;
    let stored =
        Stored::from_row(&state, holder, hold_id, until_ms).map_err(BackendError::Unexpected)?;
    Ok((item, stored.status(now_ms)))
}

/// A `now` or deadline as SQLite's signed 64-bit integer.
fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl ReservationStore for SqliteReservationStore {
    async fn add_items(&self, pool: &str, items: &[&str]) -> Result<usize, ReservationError> {
        check_add(&self.config, items)?;
        let pool = pool.to_owned();
        let items: Vec<String> = items.iter().map(|i| (*i).to_owned()).collect();
        with_sqlite_transaction(&self.pool, &self.config.retry, |conn| {
            let (pool, items) = (pool.clone(), items.clone());
            Box::pin(async move {
                let mut added = 0;
                for item in &items {
                    added += sqlx::query(
                        "INSERT INTO girder_reservations (pool, item, state) \
                         VALUES (?1, ?2, 'AVAILABLE') ON CONFLICT (pool, item) DO NOTHING",
                    )
                    .bind(&pool)
                    .bind(item)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                }
                Ok(usize::try_from(added).unwrap_or(usize::MAX))
            })
        })
        .await
        .map_err(|e| ReservationError::Backend(BackendError::sqlite_txn(e)))
    }

    async fn hold(
        &self,
        pool: &str,
        items: &[&str],
        holder: &str,
        ttl_ms: u64,
    ) -> Result<Hold, HoldError> {
        let now_ms = self.clock.now_ms();
        let until_ms = check_hold(&self.config, items, ttl_ms, now_ms)?;
        let hold = Hold {
            pool: pool.to_owned(),
            items: items.iter().map(|i| (*i).to_owned()).collect(),
            holder: holder.to_owned(),
            hold_id: new_hold_id(),
            until_ms,
        };
        let decided = with_sqlite_transaction(&self.pool, &self.config.retry, |conn| {
            let hold = hold.clone();
            Box::pin(async move {
                let found = select_states(conn, &hold.pool, &hold.items).await?;
                let names: Vec<&str> = hold.items.iter().map(String::as_str).collect();
                if let Err(refused) = decide_hold(&names, &found, now_ms) {
                    // Nothing written; committing the empty transaction just unlocks.
                    return Ok(Err(refused));
                }
                let sql = format!(
                    "UPDATE girder_reservations \
                     SET state = 'RESERVED', holder = ?1, hold_id = ?2, until_ms = ?3 \
                     WHERE pool = ?5 AND item IN ({}) \
                       AND (state = 'AVAILABLE' OR (state = 'RESERVED' AND until_ms <= ?4))",
                    placeholders(6, hold.items.len())
                );
                let mut query = sqlx::query(&sql)
                    .bind(&hold.holder)
                    .bind(&hold.hold_id)
                    .bind(ms(hold.until_ms))
                    .bind(ms(now_ms))
                    .bind(&hold.pool);
                for item in &hold.items {
                    query = query.bind(item);
                }
                let changed = query.execute(&mut *conn).await?.rows_affected();
                if changed != hold.items.len() as u64 {
                    // Impossible under the write lock; roll back rather than half-hold.
                    return Err(sqlx::Error::Protocol(format!(
                        "hold changed {changed} of {} rows",
                        hold.items.len()
                    )));
                }
                Ok(Ok(()))
            })
        })
        .await
        .map_err(BackendError::sqlite_txn)?;
        decided.map(|()| hold)
    }

    async fn confirm(&self, hold: &Hold) -> Result<(), ConfirmError> {
        check_confirm(&self.config, hold)?;
        let now_ms = self.clock.now_ms();
        with_sqlite_transaction(&self.pool, &self.config.retry, |conn| {
            let hold = hold.clone();
            Box::pin(async move {
                let found = select_states(conn, &hold.pool, &hold.items).await?;
                match decide_confirm(&hold, &found, now_ms) {
                    Ok(ConfirmAction::Sell) => {}
                    other => return Ok(other.map(|_| ())),
                }
                let sql = format!(
                    "UPDATE girder_reservations SET state = 'SOLD', until_ms = NULL \
                     WHERE pool = ?3 AND hold_id = ?1 AND state = 'RESERVED' AND until_ms > ?2 \
                       AND item IN ({})",
                    placeholders(4, hold.items.len())
                );
                let mut query =
                    sqlx::query(&sql).bind(&hold.hold_id).bind(ms(now_ms)).bind(&hold.pool);
                for item in &hold.items {
                    query = query.bind(item);
                }
                let changed = query.execute(&mut *conn).await?.rows_affected();
                if changed != hold.items.len() as u64 {
                    return Err(sqlx::Error::Protocol(format!(
                        "confirm changed {changed} of {} rows",
                        hold.items.len()
                    )));
                }
                Ok(Ok(()))
            })
        })
        .await
        .map_err(BackendError::sqlite_txn)?
    }

    async fn release(&self, hold: &Hold) -> Result<usize, ReservationError> {
        check_release(&self.config, hold)?;
        let now_ms = self.clock.now_ms();
        // One statement: atomic on its own, and it touches only rows this hold still
        // reserves (unexpired; a lapsed row is the sweeper's, and reads as free anyway).
        let sql = format!(
            "UPDATE girder_reservations \
             SET state = 'AVAILABLE', holder = NULL, hold_id = NULL, until_ms = NULL \
             WHERE pool = ?1 AND hold_id = ?2 AND state = 'RESERVED' AND until_ms > ?3 \
               AND item IN ({})",
            placeholders(4, hold.items.len())
        );
        let mut query = sqlx::query(&sql).bind(&hold.pool).bind(&hold.hold_id).bind(ms(now_ms));
        for item in &hold.items {
            query = query.bind(item);
        }
        let released =
            query.execute(&self.pool).await.map_err(BackendError::sqlite)?.rows_affected();
        Ok(usize::try_from(released).unwrap_or(usize::MAX))
    }

    async fn status(&self, pool: &str, item: &str) -> Result<ItemStatus, ReservationError> {
        let now_ms = self.clock.now_ms();
        let row: Option<Row> = sqlx::query_as(
            "SELECT item, state, holder, hold_id, until_ms FROM girder_reservations \
             WHERE pool = ?1 AND item = ?2",
        )
        .bind(pool)
        .bind(item)
        .fetch_optional(&self.pool)
        .await
        .map_err(BackendError::sqlite)?;
        let row = row.ok_or(ReservationError::NotFound)?;
        Ok(decode_status(row, now_ms)?.1)
    }

    async fn list(
        &self,
        pool: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ItemStatus)>, ReservationError> {
        let now_ms = self.clock.now_ms();
        let limit = i64::try_from(limit.min(self.config.max_page_items)).unwrap_or(i64::MAX);
        // Item ids are never empty (add_items refuses them), so '' sorts before all.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT item, state, holder, hold_id, until_ms FROM girder_reservations \
             WHERE pool = ?1 AND item > ?2 ORDER BY item LIMIT ?3",
        )
        .bind(pool)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(BackendError::sqlite)?;
        rows.into_iter().map(|row| decode_status(row, now_ms)).collect()
    }

    async fn sweep(&self, max_batch: usize) -> Result<usize, ReservationError> {
        let now_ms = self.clock.now_ms();
        let max_batch =
            i64::try_from(max_batch.min(self.config.max_sweep_batch)).unwrap_or(i64::MAX);
        let reset = sqlx::query(
            "UPDATE girder_reservations \
             SET state = 'AVAILABLE', holder = NULL, hold_id = NULL, until_ms = NULL \
             WHERE rowid IN (SELECT rowid FROM girder_reservations \
                             WHERE state = 'RESERVED' AND until_ms <= ?1 LIMIT ?2)",
        )
        .bind(ms(now_ms))
        .bind(max_batch)
        .execute(&self.pool)
        .await
        .map_err(BackendError::sqlite)?
        .rows_affected();
        Ok(usize::try_from(reset).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use girder_core::error::source_of;

    use super::*;

    #[tokio::test]
    async fn a_failing_database_is_the_source_of_the_backend_error() {
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        let clock = Arc::new(girder_core::SystemClock);
        let store = SqliteReservationStore::new(pool.clone(), ReservationConfig::default(), clock)
            .await
            .unwrap();
        store.add_items("p", &["s1"]).await.unwrap();
        pool.close().await;

        // A single statement.
        let err = store.status("p", "s1").await.unwrap_err();
        assert!(matches!(err, ReservationError::Backend(BackendError::Sqlite(_))), "{err:?}");
        assert_eq!(err.to_string(), "reservation backend");
        assert!(matches!(source_of::<sqlx::Error>(&err), Some(sqlx::Error::PoolClosed)), "{err:?}");
        // A transaction.
        let err = store.hold("p", &["s1"], "alice", 1_000).await.unwrap_err();
        assert!(matches!(err, HoldError::Backend(BackendError::Sqlite(_))), "{err:?}");
        assert!(matches!(source_of::<sqlx::Error>(&err), Some(sqlx::Error::PoolClosed)), "{err:?}");
    }
}
