//! PostgreSQL: capture by logical decoding. Captured tables are in the publication
//! [`PUBLICATION`](super::PUBLICATION) with `REPLICA IDENTITY FULL` (so updates and
//! deletes carry the whole before image); each consumer owns a `pgoutput`
//! replication slot of its name.
//!
//! sqlx cannot speak the replication protocol, so reads use the SQL interface:
//! `pg_logical_slot_peek_binary_changes` decodes from the slot's confirmed position
//! without consuming, always in whole transactions, and an acknowledgement moves the
//! slot with `pg_replication_slot_advance` to the end of the last transaction the
//! consumer has processed completely. The exact acknowledged position (a commit LSN
//! and an index within the transaction) is also stored in `girder_cdc_consumers`, so
//! a position inside a transaction survives a restart: the transaction comes again
//! and the changes up to the position are skipped.
//!
//! Peeking does not move the slot, so each poll decodes again the transactions
//! delivered but not yet acknowledged (and skips them); the number of such rows is
//! bounded by `ConsumerConfig::max_decode_rows`.

use std::collections::VecDeque;

use sqlx::PgPool;

use super::change::{CdcPosition, Change};
use super::error::{
    AckError, DUPLICATE_OBJECT, DropError, InstallError, OBJECT_IN_USE, OpenError, PollError,
    UNDEFINED_OBJECT, sqlstate,
};
use super::name::{self, quoted};
use super::pgoutput::{Assembler, Txn};
use super::{PUBLICATION, StaleConsumer, clamp_i64};

/// An LSN in PostgreSQL's text form, `X/Y` in hex.
fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// `schema.table` quoted for SQL text, from a checked name.
fn qualified(table: &str) -> Result<String, InstallError> {
    let (schema, table) =
        name::table(table, true).ok_or_else(|| InstallError::InvalidTable(table.to_owned()))?;
    Ok(match schema {
        Some(schema) => format!("{}.{}", quoted(schema), quoted(table)),
        None => quoted(table),
    })
}

async fn ensure_publication(pool: &PgPool) -> Result<(), sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
            .bind(PUBLICATION)
            .fetch_one(pool)
            .await?;
    if !exists {
        match sqlx::query(&format!("CREATE PUBLICATION {PUBLICATION}")).execute(pool).await {
            Ok(_) => {}
            // Another instance made it first.
            Err(e) if sqlstate(&e).as_deref() == Some(DUPLICATE_OBJECT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether `qualified` names a table (plain or partitioned) of this database.
async fn is_table(pool: &PgPool, qualified: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass($1) AND relkind IN ('r', 'p'))",
    )
    .bind(qualified)
    .fetch_one(pool)
    .await
}

async fn in_publication(pool: &PgPool, qualified: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid \
         WHERE p.pubname = $1 AND r.prrelid = to_regclass($2))",
    )
    .bind(PUBLICATION)
    .bind(qualified)
    .fetch_one(pool)
    .await
}

pub(super) async fn install(pool: &PgPool, table: &str) -> Result<(), InstallError> {
    let qualified = qualified(table)?;
    if !is_table(pool, &qualified).await? {
        return Err(InstallError::UnknownTable(table.to_owned()));
    }
    sqlx::query(&format!("ALTER TABLE {qualified} REPLICA IDENTITY FULL")).execute(pool).await?;
    ensure_publication(pool).await?;
    if !in_publication(pool, &qualified).await? {
        let add = format!("ALTER PUBLICATION {PUBLICATION} ADD TABLE {qualified}");
        match sqlx::query(&add).execute(pool).await {
            Ok(_) => {}
            Err(e) if sqlstate(&e).as_deref() == Some(DUPLICATE_OBJECT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub(super) async fn uninstall(pool: &PgPool, table: &str) -> Result<bool, InstallError> {
    let qualified = qualified(table)?;
    if !in_publication(pool, &qualified).await? {
        return Ok(false);
    }
    let drop = format!("ALTER PUBLICATION {PUBLICATION} DROP TABLE {qualified}");
    sqlx::query(&drop).execute(pool).await?;
    Ok(true)
}

pub(super) async fn tables(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CASE WHEN schemaname = 'public' THEN tablename::text \
         ELSE schemaname::text || '.' || tablename::text END AS t \
         FROM pg_publication_tables WHERE pubname = $1 ORDER BY t",
    )
    .bind(PUBLICATION)
    .fetch_all(pool)
    .await
}

/// A transaction delivered (wholly or from a stored position on) and not yet
/// acknowledged to its end.
#[derive(Debug, Clone, Copy)]
struct Delivered {
    last: CdcPosition,
    end_lsn: u64,
    rows: u64,
}

/// A PostgreSQL consumer's decoding state.
#[derive(Debug)]
pub(super) struct State {
    assembler: Assembler,
    /// The slot's confirmed position, as far as this consumer knows.
    slot_confirmed: u64,
    delivered: VecDeque<Delivered>,
}

impl State {
    /// Forgets what was delivered, so the next poll starts again from the ack.
    pub(super) fn rewind(&mut self) {
        self.delivered.clear();
    }
}

/// Registers `name` (its slot starts at the current end of the WAL) unless it
/// exists; returns its acknowledged position and decoding state.
pub(super) async fn open(
    pool: &PgPool,
    name: &str,
    now_ms: i64,
) -> Result<(CdcPosition, State), OpenError> {
    let wal_level: String = sqlx::query_scalar("SHOW wal_level").fetch_one(pool).await?;
    if wal_level != "logical" {
        return Err(OpenError::WalLevel(wal_level));
    }
    // The publication must exist before the slot: a slot decodes with the catalog
    // as it was, and a publication made later would be missing from its past.
    ensure_publication(pool).await?;
    type Slot = (String, Option<String>, String, Option<i64>);
    let slot: Option<Slot> = sqlx::query_as(
        "SELECT coalesce(plugin::text, ''), database::text, current_database()::text, \
         (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT position, position_index FROM girder_cdc_consumers WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    let confirmed = match (slot, &row) {
        (Some((plugin, database, current, confirmed)), _) => {
            if plugin != "pgoutput" || database.as_deref() != Some(current.as_str()) {
                return Err(OpenError::ForeignSlot(name.to_owned()));
            }
            confirmed.unwrap_or(0)
        }
        (None, Some(_)) => return Err(OpenError::SlotMissing(name.to_owned())),
        (None, None) => {
            let created = sqlx::query_scalar(
                "SELECT (lsn - '0/0'::pg_lsn)::bigint \
                 FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            )
            .bind(name)
            .fetch_one(pool)
            .await;
            match created {
                Ok(lsn) => lsn,
                Err(e) if sqlstate(&e).as_deref() == Some(DUPLICATE_OBJECT) => {
                    // Opened at the same moment elsewhere: use that slot.
                    return Box::pin(open(pool, name, now_ms)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    sqlx::query(
        "INSERT INTO girder_cdc_consumers (name, position, position_index, read_at, created_at) \
         VALUES ($1, 0, 0, $2, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(now_ms)
    .execute(pool)
    .await?;
    let (position, index) = row.unwrap_or((0, 0));
    let acked = CdcPosition::from_parts(position.max(0) as u64, index.max(0) as u64);
    let state = State {
        assembler: Assembler::default(),
        slot_confirmed: confirmed.max(0) as u64,
        delivered: VecDeque::new(),
    };
    Ok((acked, state))
}

fn poll_error(name: &str, error: sqlx::Error) -> PollError {
    match sqlstate(&error).as_deref() {
        Some(UNDEFINED_OBJECT) => PollError::Dropped(name.to_owned()),
        Some(OBJECT_IN_USE) => PollError::Busy(name.to_owned()),
        _ => PollError::Db(error),
    }
}

async fn peek(pool: &PgPool, name: &str, limit: u64) -> Result<Vec<Vec<u8>>, PollError> {
    sqlx::query_scalar(
        "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
         'proto_version', '1', 'publication_names', $3)",
    )
    .bind(name)
    .bind(i32::try_from(limit).unwrap_or(i32::MAX))
    .bind(PUBLICATION)
    .fetch_all(pool)
    .await
    .map_err(|e| poll_error(name, e))
}

/// Moves the slot to `lsn` (never back).
async fn advance(pool: &PgPool, name: &str, lsn: u64) -> Result<u64, sqlx::Error> {
    let moved: i64 = sqlx::query_scalar(
        "SELECT (end_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slot_advance($1, \
         greatest($2::pg_lsn, (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1)))",
    )
    .bind(name)
    .bind(lsn_text(lsn))
    .fetch_one(pool)
    .await?;
    Ok(moved.max(0) as u64)
}

/// The changes after `cursor`, in whole transactions (the first may be the rest of
/// one acknowledged part way), at least `max` unless fewer are committed.
pub(super) async fn poll(
    pool: &PgPool,
    name: &str,
    state: &mut State,
    acked: CdcPosition,
    cursor: CdcPosition,
    max: usize,
    max_decode_rows: u64,
) -> Result<Vec<Change>, PollError> {
    state.delivered.retain(|d| d.last > acked);
    let unacked: u64 = state.delivered.iter().map(|d| d.rows).sum();
    if unacked >= max_decode_rows {
        return Err(PollError::Backlog { unacked_rows: unacked, max: max_decode_rows });
    }
    let mut limit = unacked.saturating_add(max as u64).min(max_decode_rows);
    loop {
        let rows = peek(pool, name, limit).await?;
        // Each peek is a new decoding session: it starts outside any transaction.
        state.assembler.reset();
        let mut txns: Vec<Txn> = Vec::new();
        for row in &rows {
            txns.extend(state.assembler.push(row)?);
        }
        let mut out = Vec::new();
        let mut fresh = Vec::new();
        let mut skipped_rows = 0;
        // The slot may move past a leading run of transactions that are acknowledged
        // (a restart after an ack whose advance was lost) or have nothing to deliver.
        let mut done_prefix = true;
        let mut advance_to = None;
        for txn in txns {
            let last = txn.last();
            if last <= acked || txn.changes.is_empty() {
                if done_prefix {
                    advance_to = Some(txn.end_lsn);
                }
                continue;
            }
            done_prefix = false;
            if last <= cursor {
                skipped_rows += txn.rows;
                continue;
            }
            if out.len() >= max {
                break;
            }
            let (end_lsn, rows) = (txn.end_lsn, txn.rows);
            out.extend(txn.changes.into_iter().filter(|c| c.position > cursor));
            fresh.push(Delivered { last, end_lsn, rows });
        }
        if let Some(lsn) = advance_to.filter(|&lsn| lsn > state.slot_confirmed) {
            state.slot_confirmed =
                advance(pool, name, lsn).await.map_err(|e| poll_error(name, e))?;
        }
        if !out.is_empty() || (rows.len() as u64) < limit {
            state.delivered.extend(fresh);
            return Ok(out);
        }
        // Every decoded transaction was delivered already: decode further.
        if limit >= max_decode_rows {
            return Err(PollError::Backlog { unacked_rows: skipped_rows, max: max_decode_rows });
        }
        limit = limit.saturating_mul(2).max(skipped_rows + max as u64).min(max_decode_rows);
    }
}

/// Stores `position` as `name`'s acknowledged position and moves the slot past every
/// transaction acknowledged to its end.
pub(super) async fn ack(
    pool: &PgPool,
    name: &str,
    state: &mut State,
    position: CdcPosition,
    now_ms: i64,
) -> Result<(), AckError> {
    let (major, minor) = position.parts();
    let updated = sqlx::query(
        "UPDATE girder_cdc_consumers SET position = $2, position_index = $3, read_at = $4 \
         WHERE name = $1",
    )
    .bind(name)
    .bind(clamp_i64(major))
    .bind(clamp_i64(minor))
    .bind(now_ms)
    .execute(pool)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(AckError::Dropped(name.to_owned()));
    }
    let done = state.delivered.iter().take_while(|d| d.last <= position).count();
    if done == 0 {
        // Inside the first unfinished transaction: the stored position covers it.
        return Ok(());
    }
    let target = state.delivered[done - 1].end_lsn;
    if target > state.slot_confirmed {
        state.slot_confirmed = match advance(pool, name, target).await {
            Ok(lsn) => lsn,
            Err(e) if sqlstate(&e).as_deref() == Some(UNDEFINED_OBJECT) => {
                return Err(AckError::Dropped(name.to_owned()));
            }
            // The stored position holds; the next poll moves the slot.
            Err(e) if sqlstate(&e).as_deref() == Some(OBJECT_IN_USE) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
    }
    state.delivered.drain(..done);
    Ok(())
}

/// Slots of this database (and physical slots) that are inactive and not Girder's,
/// or Girder's consumers not read since `read_before_ms`, with the WAL they hold.
pub(super) async fn stale(
    pool: &PgPool,
    read_before_ms: i64,
) -> Result<Vec<StaleConsumer>, sqlx::Error> {
    let rows: Vec<(String, bool, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT s.slot_name::text, s.active, c.read_at, \
         pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint \
         FROM pg_replication_slots s LEFT JOIN girder_cdc_consumers c ON c.name = s.slot_name::text \
         WHERE (s.database IS NULL OR s.database = current_database()) \
         AND ((c.read_at IS NULL AND NOT s.active) OR c.read_at < $1) \
         ORDER BY s.slot_name",
    )
    .bind(read_before_ms)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, active, read_at, retained)| StaleConsumer {
            name,
            active,
            read_at_ms: read_at.map(|r| r.max(0) as u64),
            retained_bytes: retained.map(|r| r.max(0) as u64),
            retained_changes: None,
        })
        .collect())
}

/// Drops `name`'s slot (when it is this database's and idle) and its row.
pub(super) async fn drop_consumer(pool: &PgPool, name: &str) -> Result<bool, DropError> {
    let active: Option<bool> = sqlx::query_scalar(
        "SELECT active FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    if active == Some(true) {
        return Err(DropError::Active(name.to_owned()));
    }
    let mut existed = false;
    if active.is_some() {
        match sqlx::query("SELECT pg_drop_replication_slot($1)").bind(name).execute(pool).await {
            Ok(_) => existed = true,
            Err(e) if sqlstate(&e).as_deref() == Some(OBJECT_IN_USE) => {
                return Err(DropError::Active(name.to_owned()));
            }
            Err(e) if sqlstate(&e).as_deref() == Some(UNDEFINED_OBJECT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deleted = sqlx::query("DELETE FROM girder_cdc_consumers WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(existed || deleted > 0)
}
