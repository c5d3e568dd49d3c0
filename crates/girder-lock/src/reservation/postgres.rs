//! Reservations in PostgreSQL: the scale-out system of record, shared by every server
//! instance. Every transition is one READ COMMITTED transaction that locks the
//! items' rows (in item order), decides, and writes.

use std::collections::HashMap;
use std::sync::Arc;

use girder_core::Clock;
use sqlx::{PgConnection, PgPool};

use super::{
    ConfirmAction, ConfirmError, Hold, HoldError, ItemStatus, ReservationConfig, ReservationError,
    ReservationStore, Stored, check_add, check_confirm, check_hold, check_release, decide_confirm,
    decide_hold, new_hold_id,
};
use crate::BackendError;
use crate::txn::{Isolation, TxnError, with_pg_transaction};

/// Advisory-lock key serialising table creation across processes ("girdrsvn" in ASCII).
const CREATE_LOCK_KEY: i64 = 0x6769_7264_7273_766e;

/// A [`ReservationStore`] on the `girder_reservations` table in PostgreSQL.
///
/// Why READ COMMITTED is enough: each transition first runs `SELECT … FOR UPDATE`
/// on its items, which waits for any concurrent writer of those rows and returns the
/// rows' latest committed state, then keeps them locked until commit. The decision
/// is thus made on current data that nobody can change before our `UPDATE`, whose
/// `WHERE` re-checks the state anyway. SERIALIZABLE would add only aborts. Rows are
/// locked in item order so two multi-item holds cannot deadlock; the remaining
/// deadlocks (with a concurrent sweep) are retried per [`ReservationConfig::retry`].
pub struct PostgresReservationStore {
    pool: PgPool,
    config: ReservationConfig,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PostgresReservationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReservationStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PostgresReservationStore {
    /// Opens the store, creating the table if absent.
    ///
    /// # Errors
    /// [`ReservationError::Backend`] (with [`BackendError::Postgres`]) if the database
    /// cannot be reached or written.
    pub async fn new(
        pool: PgPool,
        config: ReservationConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ReservationError> {
        let mut tx = pool.begin().await.map_err(BackendError::postgres)?;
        // Concurrent CREATE … IF NOT EXISTS can still collide in pg_type/pg_class.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CREATE_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(BackendError::postgres)?;
        // COLLATE "C": items sort bytewise, as in the other backends, whatever the
        // database's locale.
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS girder_reservations ( \
               pool TEXT NOT NULL, item TEXT COLLATE \"C\" NOT NULL, \
               state TEXT NOT NULL CHECK (state IN ('AVAILABLE', 'RESERVED', 'SOLD')), \
               holder TEXT, hold_id TEXT, until_ms BIGINT, \
               PRIMARY KEY (pool, item))",
        )
        .execute(&mut *tx)
        .await
        .map_err(BackendError::postgres)?;
        sqlx::query(
            "CREATE INDEX IF NOT EXISTS girder_reservations_expiry \
             ON girder_reservations (state, until_ms)",
        )
        .execute(&mut *tx)
        .await
        .map_err(BackendError::postgres)?;
        tx.commit().await.map_err(BackendError::postgres)?;
        Ok(Self { pool, config, clock })
    }
}

/// `(item, state, holder, hold_id, until_ms)`.
type Row = (String, String, Option<String>, Option<String>, Option<i64>);

/// Locks the rows of those of `items` that exist in `pool`, in item order, and
/// returns their stored states.
async fn lock_states(
    conn: &mut PgConnection,
    pool: &str,
    items: &[String],
) -> Result<HashMap<String, Stored>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT item, state, holder, hold_id, until_ms FROM girder_reservations \
         WHERE pool = $1 AND item = ANY($2) ORDER BY item FOR UPDATE",
    )
    .bind(pool)
    .bind(items)
    .fetch_all(&mut *conn)
    .await?;
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

/// A `now` or deadline as PostgreSQL's `BIGINT`.
fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PostgresReservationStore {
    /// Runs `body` in a READ COMMITTED transaction, retrying deadlocks per config.
    async fn transaction<T, F>(&self, body: F) -> Result<T, TxnError>
    where
        F: for<'c> FnMut(&'c mut PgConnection) -> crate::txn::TxnFuture<'c, T>,
    {
        with_pg_transaction(&self.pool, &self.config.retry, Isolation::ReadCommitted, body).await
    }
}

impl ReservationStore for PostgresReservationStore {
    async fn add_items(&self, pool: &str, items: &[&str]) -> Result<usize, ReservationError> {
        check_add(&self.config, items)?;
        // Sorted, so concurrent adds of overlapping items take index locks in one order.
        let mut items: Vec<String> = items.iter().map(|i| (*i).to_owned()).collect();
        items.sort_unstable();
        let pool = pool.to_owned();
        let added = self
            .transaction(|conn| {
                let (pool, items) = (pool.clone(), items.clone());
                Box::pin(async move {
                    let added = sqlx::query(
                        "INSERT INTO girder_reservations (pool, item, state) \
                         SELECT $1, unnest($2::text[]), 'AVAILABLE' \
                         ON CONFLICT (pool, item) DO NOTHING",
                    )
                    .bind(&pool)
                    .bind(&items)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    Ok(added)
                })
            })
            .await
            .map_err(BackendError::postgres_txn)?;
        Ok(usize::try_from(added).unwrap_or(usize::MAX))
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
        let decided = self
            .transaction(|conn| {
                let hold = hold.clone();
                Box::pin(async move {
                    let found = lock_states(conn, &hold.pool, &hold.items).await?;
                    let names: Vec<&str> = hold.items.iter().map(String::as_str).collect();
                    if let Err(refused) = decide_hold(&names, &found, now_ms) {
                        // Nothing written; committing just releases the row locks.
                        return Ok(Err(refused));
                    }
                    let changed = sqlx::query(
                        "UPDATE girder_reservations \
                         SET state = 'RESERVED', holder = $1, hold_id = $2, until_ms = $3 \
                         WHERE pool = $5 AND item = ANY($6) \
                           AND (state = 'AVAILABLE' OR (state = 'RESERVED' AND until_ms <= $4))",
                    )
                    .bind(&hold.holder)
                    .bind(&hold.hold_id)
                    .bind(ms(hold.until_ms))
                    .bind(ms(now_ms))
                    .bind(&hold.pool)
                    .bind(&hold.items)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if changed != hold.items.len() as u64 {
                        // Impossible with the rows locked; roll back rather than half-hold.
                        return Err(sqlx::Error::Protocol(format!(
                            "hold changed {changed} of {} rows",
                            hold.items.len()
                        )));
                    }
                    Ok(Ok(()))
                })
            })
            .await
            .map_err(BackendError::postgres_txn)?;
        decided.map(|()| hold)
    }

    async fn confirm(&self, hold: &Hold) -> Result<(), ConfirmError> {
        check_confirm(&self.config, hold)?;
        let now_ms = self.clock.now_ms();
        self.transaction(|conn| {
            let hold = hold.clone();
            Box::pin(async move {
                let found = lock_states(conn, &hold.pool, &hold.items).await?;
                match decide_confirm(&hold, &found, now_ms) {
                    Ok(ConfirmAction::Sell) => {}
                    other => return Ok(other.map(|_| ())),
                }
                let changed = sqlx::query(
                    "UPDATE girder_reservations SET state = 'SOLD', until_ms = NULL \
                     WHERE pool = $3 AND hold_id = $1 AND state = 'RESERVED' AND until_ms > $2 \
                       AND item = ANY($4)",
                )
                .bind(&hold.hold_id)
                .bind(ms(now_ms))
                .bind(&hold.pool)
                .bind(&hold.items)
                .execute(&mut *conn)
                .await?
                .rows_affected();
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
        .map_err(BackendError::postgres_txn)?
    }

    async fn release(&self, hold: &Hold) -> Result<usize, ReservationError> {
        check_release(&self.config, hold)?;
        let now_ms = ms(self.clock.now_ms());
        let released = self
            .transaction(|conn| {
                let hold = hold.clone();
                Box::pin(async move {
                    // Lock in item order first (as holds do), then reset only the rows
                    // this hold still reserves (unexpired; a lapsed row is the sweeper's).
                    lock_states(conn, &hold.pool, &hold.items).await?;
                    let released = sqlx::query(
                        "UPDATE girder_reservations \
                         SET state = 'AVAILABLE', holder = NULL, hold_id = NULL, until_ms = NULL \
                         WHERE pool = $1 AND hold_id = $2 AND state = 'RESERVED' \
                           AND until_ms > $4 AND item = ANY($3)",
                    )
                    .bind(&hold.pool)
                    .bind(&hold.hold_id)
                    .bind(&hold.items)
                    .bind(now_ms)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    Ok(released)
                })
            })
            .await
            .map_err(BackendError::postgres_txn)?;
        Ok(usize::try_from(released).unwrap_or(usize::MAX))
    }

    async fn status(&self, pool: &str, item: &str) -> Result<ItemStatus, ReservationError> {
        let now_ms = self.clock.now_ms();
        let row: Option<Row> = sqlx::query_as(
            "SELECT item, state, holder, hold_id, until_ms FROM girder_reservations \
             WHERE pool = $1 AND item = $2",
        )
        .bind(pool)
        .bind(item)
        .fetch_optional(&self.pool)
        .await
        .map_err(BackendError::postgres)?;
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
             WHERE pool = $1 AND item > $2 ORDER BY item LIMIT $3",
        )
        .bind(pool)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(BackendError::postgres)?;
        rows.into_iter().map(|row| decode_status(row, now_ms)).collect()
    }

    async fn sweep(&self, max_batch: usize) -> Result<usize, ReservationError> {
        let now_ms = ms(self.clock.now_ms());
        let max_batch =
            i64::try_from(max_batch.min(self.config.max_sweep_batch)).unwrap_or(i64::MAX);
        // SKIP LOCKED: rows a transition is working on are left for the next sweep.
        // The batch is a materialized CTE: as an `IN (subquery … LIMIT)` the planner
        // may re-run the subquery and reset more rows than the limit.
        let reset = self
            .transaction(|conn| {
                Box::pin(async move {
                    let reset = sqlx::query(
                        "WITH batch AS MATERIALIZED ( \
                             SELECT pool, item FROM girder_reservations \
                             WHERE state = 'RESERVED' AND until_ms <= $1 \
                             LIMIT $2 FOR UPDATE SKIP LOCKED) \
                         UPDATE girder_reservations AS r \
                         SET state = 'AVAILABLE', holder = NULL, hold_id = NULL, until_ms = NULL \
                         FROM batch WHERE r.pool = batch.pool AND r.item = batch.item \
                           AND r.state = 'RESERVED' AND r.until_ms <= $1",
                    )
                    .bind(now_ms)
                    .bind(max_batch)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    Ok(reset)
                })
            })
            .await
            .map_err(BackendError::postgres_txn)?;
        Ok(usize::try_from(reset).unwrap_or(usize::MAX))
    }
}
