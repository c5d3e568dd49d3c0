//! SQLite: capture by triggers. Each captured table gets AFTER INSERT, UPDATE and
//! DELETE triggers writing the row's `json_object` images into `girder_cdc_changes`,
//! whose `INTEGER PRIMARY KEY AUTOINCREMENT` is the position. SQLite has one writer,
//! so sequence order is commit order, and a rolled-back transaction's trigger rows
//! roll back with it.
//!
//! **Commit groups.** SQL cannot see where a transaction ends, so each trigger row
//! takes the current id of the one-row `girder_cdc_txn`, and a reader that finds
//! committed rows under the current id *seals* it by moving it on. The sealing
//! `UPDATE` waits for the write lock, so when it returns, every transaction that used
//! the old id has committed or rolled back: a sealed group is complete and final. A
//! group is therefore one or more whole transactions committed one after another —
//! those committed between two reads — and never part of one.
//!
//! Triggers see what SQLite fires them for: the rows `INSERT OR REPLACE` deletes
//! to make room are reported only under `PRAGMA recursive_triggers = ON` (the new
//! row always is).

use sqlx::SqlitePool;

use super::change::{CdcPosition, Change, Op};
use super::error::{AckError, InstallError, OpenError, PollError};
use super::name::{self, quoted};
use super::pgoutput::DecodeError;
use super::{StaleConsumer, clamp_i64};

/// Columns per `json_object` / `json_insert` call: SQLite passes a function at most
/// 127 arguments by default, two per column.
const COLUMNS_PER_CALL: usize = 60;

/// One captured column: its name and declared type.
struct Column {
    name: String,
    declared: String,
}

/// `value` of `column` as the JSON value the image holds: declared booleans as
/// `true`/`false`, declared JSON that is valid JSON as itself, blobs as hex text
/// (`json_object` refuses blobs, and a capture must never fail the write).
fn value_sql(column: &Column, row: &str) -> String {
    let v = format!("{row}.{}", quoted(&column.name));
    let plain = format!("iif(typeof({v}) = 'blob', hex({v}), {v})");
    let declared = column.declared.to_ascii_uppercase();
    if declared.contains("BOOL") {
        format!(
            "CASE WHEN typeof({v}) IN ('integer', 'real') \
             THEN json(iif({v}, 'true', 'false')) ELSE {plain} END"
        )
    } else if declared.contains("JSON") {
        format!(
            "CASE WHEN typeof({v}) = 'text' AND json_valid({v}) THEN json({v}) ELSE {plain} END"
        )
    } else {
        plain
    }
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The row `row` (`NEW` or `OLD`) as a JSON object expression, in calls of at most
/// [`COLUMNS_PER_CALL`] columns.
fn image_sql(columns: &[Column], row: &str) -> String {
    let mut chunks = columns.chunks(COLUMNS_PER_CALL);
    let first = chunks.next().unwrap_or_default();
    let pairs = |chunk: &[Column], key: &dyn Fn(&str) -> String| {
        chunk
            .iter()
            .map(|c| format!("{}, {}", key(&c.name), value_sql(c, row)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut sql = format!("json_object({})", pairs(first, &|n| literal(n)));
    for chunk in chunks {
        sql = format!("json_insert({sql}, {})", pairs(chunk, &|n| literal(&format!("$.\"{n}\""))));
    }
    sql
}

/// Milliseconds since the Unix epoch, in SQL.
const NOW_MS_SQL: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

fn trigger_name(table: &str, op: Op) -> String {
    format!("{}{table}_{}", name::OWN_PREFIX, op.as_str())
}

pub(super) async fn install(pool: &SqlitePool, table: &str) -> Result<(), InstallError> {
    let invalid = || InstallError::InvalidTable(table.to_owned());
    let (_, table) = name::table(table, false).ok_or_else(invalid)?;
    let is_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)",
    )
    .bind(table)
    .fetch_one(pool)
    .await?;
    if !is_table {
        return Err(InstallError::UnknownTable(table.to_owned()));
    }
    let columns: Vec<(String, String)> =
        sqlx::query_as("SELECT name, type FROM pragma_table_info($1) ORDER BY cid")
            .bind(table)
            .fetch_all(pool)
            .await?;
    if let Some((column, _)) = columns.iter().find(|(n, _)| n.contains('"')) {
        return Err(InstallError::UnsupportedColumn {
            table: table.to_owned(),
            column: column.clone(),
        });
    }
    let columns: Vec<Column> =
        columns.into_iter().map(|(name, declared)| Column { name, declared }).collect();
    let (new, old) = (image_sql(&columns, "NEW"), image_sql(&columns, "OLD"));
    let mut tx = pool.begin().await?;
    for (op, event, before, after) in [
        (Op::Insert, "INSERT", "NULL", new.as_str()),
        (Op::Update, "UPDATE", old.as_str(), new.as_str()),
        (Op::Delete, "DELETE", old.as_str(), "NULL"),
    ] {
        let trigger = quoted(&trigger_name(table, op));
        // Dropped and made again, so installing twice is harmless and picks up
        // columns added since.
        sqlx::query(&format!("DROP TRIGGER IF EXISTS {trigger}")).execute(&mut *tx).await?;
        let op_code = literal(op.as_str());
        let create = format!(
            "CREATE TRIGGER {trigger} AFTER {event} ON {table_q} FOR EACH ROW BEGIN \
             INSERT INTO girder_cdc_changes (txn, tbl, op, before, after, at_ms) VALUES \
             ((SELECT id FROM girder_cdc_txn), {table_lit}, {op_code}, {before}, {after}, {NOW_MS_SQL}); \
             END",
            table_q = quoted(table),
            table_lit = literal(table),
        );
        sqlx::query(&create).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn uninstall(pool: &SqlitePool, table: &str) -> Result<bool, InstallError> {
    let (_, table) =
        name::table(table, false).ok_or_else(|| InstallError::InvalidTable(table.to_owned()))?;
    let mut tx = pool.begin().await?;
    let mut dropped = false;
    for op in [Op::Insert, Op::Update, Op::Delete] {
        let trigger = trigger_name(table, op);
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = $1)",
        )
        .bind(&trigger)
        .fetch_one(&mut *tx)
        .await?;
        if exists {
            sqlx::query(&format!("DROP TRIGGER {}", quoted(&trigger))).execute(&mut *tx).await?;
            dropped = true;
        }
    }
    tx.commit().await?;
    Ok(dropped)
}

pub(super) async fn tables(pool: &SqlitePool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT tbl_name FROM sqlite_master WHERE type = 'trigger' \
         AND name = 'girder_cdc_' || tbl_name || '_insert' ORDER BY tbl_name",
    )
    .fetch_all(pool)
    .await
}

/// The newest sequence ever handed out (0 before the first change).
async fn newest(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    let newest: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'girder_cdc_changes'")
            .fetch_optional(pool)
            .await?;
    Ok(newest.unwrap_or(0))
}

/// Registers `name` (starting after the newest change) unless it exists; returns its
/// acknowledged position.
pub(super) async fn open(
    pool: &SqlitePool,
    name: &str,
    now_ms: i64,
) -> Result<CdcPosition, OpenError> {
    let start = newest(pool).await?;
    sqlx::query(
        "INSERT INTO girder_cdc_consumers (name, position, position_index, read_at, created_at) \
         VALUES ($1, $2, 0, $3, $3) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(start)
    .bind(now_ms)
    .execute(pool)
    .await?;
    let acked: i64 =
        sqlx::query_scalar("SELECT position FROM girder_cdc_consumers WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await?;
    Ok(CdcPosition::from_parts(acked.max(0) as u64, 0))
}

type Row = (i64, i64, String, String, Option<String>, Option<String>, i64);

const SELECT_ROWS: &str = "SELECT seq, txn, tbl, op, before, after, at_ms FROM girder_cdc_changes";

/// The changes after `after` in whole sealed groups: `max` (unless fewer exist),
/// more only to finish the last group, and never more than `cap` (a group longer
/// than that is delivered over several polls).
pub(super) async fn poll(
    pool: &SqlitePool,
    after: CdcPosition,
    max: usize,
    cap: usize,
) -> Result<Vec<Change>, PollError> {
    let after = clamp_i64(after.parts().0);
    let tail: Option<(i64, i64)> =
        sqlx::query_as("SELECT seq, txn FROM girder_cdc_changes ORDER BY seq DESC LIMIT 1")
            .fetch_optional(pool)
            .await?;
    let Some((_, tail_txn)) = tail.filter(|(seq, _)| *seq > after) else {
        return Ok(Vec::new());
    };
    let mut open: i64 = sqlx::query_scalar("SELECT id FROM girder_cdc_txn").fetch_one(pool).await?;
    if tail_txn >= open {
        // Committed rows wait in the open group: seal it (see the module docs).
        sqlx::query("UPDATE girder_cdc_txn SET id = id + 1 WHERE id <= $1")
            .bind(tail_txn)
            .execute(pool)
            .await?;
        open = sqlx::query_scalar("SELECT id FROM girder_cdc_txn").fetch_one(pool).await?;
    }
    debug_assert!(open > tail_txn, "sealed through {tail_txn}, open {open}");
    let mut rows: Vec<Row> =
        sqlx::query_as(&format!("{SELECT_ROWS} WHERE seq > $1 AND txn < $2 ORDER BY seq LIMIT $3"))
            .bind(after)
            .bind(open)
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await?;
    if rows.len() == max
        && cap > max
        && let Some(&(last_seq, last_txn, ..)) = rows.last()
    {
        let rest: Vec<Row> = sqlx::query_as(&format!(
            "{SELECT_ROWS} WHERE seq > $1 AND txn = $2 ORDER BY seq LIMIT $3"
        ))
        .bind(last_seq)
        .bind(last_txn)
        .bind(i64::try_from(cap - max).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
        rows.extend(rest);
    }
    rows.into_iter().map(change).collect()
}

fn change(row: Row) -> Result<Change, PollError> {
    let (seq, txn, table, op, before, after, at_ms) = row;
    let position = CdcPosition::from_parts(seq.max(0) as u64, 0);
    let image = |text: Option<String>| -> Result<Option<serde_json::Value>, DecodeError> {
        text.map(|t| match serde_json::from_str(&t) {
            Ok(value @ serde_json::Value::Object(_)) => Ok(value),
            _ => Err(DecodeError::Image { position }),
        })
        .transpose()
    };
    let op = match op.as_str() {
        "insert" => Op::Insert,
        "update" => Op::Update,
        "delete" => Op::Delete,
        _ => return Err(DecodeError::Image { position }.into()),
    };
    Ok(Change {
        position,
        txn: txn.max(0) as u64,
        table,
        op,
        before: image(before)?,
        after: image(after)?,
        unchanged: Vec::new(),
        at_ms: at_ms.max(0) as u64,
    })
}

/// Stores `position` as `name`'s acknowledged position (never moving it back).
pub(super) async fn ack(
    pool: &SqlitePool,
    name: &str,
    position: CdcPosition,
    now_ms: i64,
) -> Result<(), AckError> {
    let updated = sqlx::query(
        "UPDATE girder_cdc_consumers SET position = max(position, $2), read_at = $3 WHERE name = $1",
    )
    .bind(name)
    .bind(clamp_i64(position.parts().0))
    .bind(now_ms)
    .execute(pool)
    .await?
    .rows_affected();
    if updated == 0 { Err(AckError::Dropped(name.to_owned())) } else { Ok(()) }
}

/// Deletes at most `max_rows` changes every consumer has acknowledged (all of them
/// when there is no consumer: a new consumer starts after the newest change).
pub(super) async fn prune(pool: &SqlitePool, max_rows: u64) -> Result<u64, sqlx::Error> {
    let floor: Option<i64> = sqlx::query_scalar("SELECT min(position) FROM girder_cdc_consumers")
        .fetch_one(pool)
        .await?;
    let floor = match floor {
        Some(floor) => floor,
        None => newest(pool).await?,
    };
    let deleted = sqlx::query(
        "DELETE FROM girder_cdc_changes WHERE seq IN \
         (SELECT seq FROM girder_cdc_changes WHERE seq <= $1 ORDER BY seq LIMIT $2)",
    )
    .bind(floor)
    .bind(clamp_i64(max_rows))
    .execute(pool)
    .await?
    .rows_affected();
    Ok(deleted)
}

/// Consumers not read since `read_before_ms`, with the changes they hold back.
pub(super) async fn stale(
    pool: &SqlitePool,
    read_before_ms: i64,
) -> Result<Vec<StaleConsumer>, sqlx::Error> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT c.name, c.read_at, \
         (SELECT count(*) FROM girder_cdc_changes WHERE seq > c.position) \
         FROM girder_cdc_consumers c WHERE c.read_at < $1 ORDER BY c.name",
    )
    .bind(read_before_ms)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, read_at, held)| StaleConsumer {
            name,
            active: false,
            read_at_ms: Some(read_at.max(0) as u64),
            retained_bytes: None,
            retained_changes: Some(held.max(0) as u64),
        })
        .collect())
}

pub(super) async fn drop_consumer(pool: &SqlitePool, name: &str) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM girder_cdc_consumers WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(deleted > 0)
}
