//! One error enum per operation of change data capture.

use super::change::CdcPosition;
use super::pgoutput::DecodeError;

/// Why capture could not be installed on (or removed from) a table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The name is not a plain identifier (`[A-Za-z_][A-Za-z0-9_]*`, at most 63
    /// bytes; on PostgreSQL optionally `schema.table`), or it names one of capture's
    /// own `girder_cdc_*` tables.
    #[error("not a table capture accepts: {0:?}")]
    InvalidTable(String),
    /// No such table in the database.
    #[error("no table {0:?}")]
    UnknownTable(String),
    /// A column name capture cannot put in a JSON object (SQLite: one holding `"`).
    #[error("table {table:?}: column {column:?} cannot be captured")]
    UnsupportedColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// The database failed.
    #[error("installing change capture")]
    Db(#[from] sqlx::Error),
}

/// Why a consumer could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Consumer names are 1–63 bytes of `[a-z0-9_]` (they name PostgreSQL slots).
    #[error("not a consumer name (1-63 of [a-z0-9_]): {0:?}")]
    InvalidName(String),
    /// PostgreSQL's `wal_level` is not `logical`, which logical decoding needs.
    #[error("PostgreSQL's wal_level is {0:?}; change capture needs 'logical' (then a restart)")]
    WalLevel(String),
    /// The consumer is registered but its PostgreSQL slot is gone (dropped by hand,
    /// or by another process's `drop_consumer`): changes since its last ack may be
    /// lost. Drop the consumer and open it again to start from now.
    #[error("consumer {0:?} has no replication slot any more; drop it and open it again")]
    SlotMissing(String),
    /// A PostgreSQL slot of that name exists but is not a `pgoutput` slot of this
    /// database.
    #[error("replication slot {0:?} belongs to another database or decoder")]
    ForeignSlot(String),
    /// The database failed.
    #[error("opening a change consumer")]
    Db(#[from] sqlx::Error),
}

/// Why a poll failed. Nothing was delivered; the consumer's position is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// The consumer was dropped (its row or slot is gone).
    #[error("consumer {0:?} was dropped")]
    Dropped(String),
    /// Another session is reading this consumer's slot right now (PostgreSQL reads a
    /// slot from one session at a time): two consumers opened under one name.
    #[error("consumer {0:?} is being read by another session")]
    Busy(String),
    /// PostgreSQL re-decodes delivered but unacknowledged transactions on every poll;
    /// there are more of their rows than `ConsumerConfig::max_decode_rows`. Ack (or
    /// `rewind`) before polling again.
    #[error("{unacked_rows} decoded rows are delivered but not acknowledged (at most {max})")]
    Backlog {
        /// Rows of the unacknowledged transactions.
        unacked_rows: u64,
        /// The bound.
        max: u64,
    },
    /// A stored or decoded change could not be read.
    #[error("reading a captured change")]
    Decode(#[from] DecodeError),
    /// The database failed.
    #[error("polling for changes")]
    Db(#[from] sqlx::Error),
}

/// Why an acknowledgement failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The position is after the last change this consumer delivered.
    #[error("cannot acknowledge {position}: only delivered up to {delivered}")]
    Ahead {
        /// The position asked.
        position: CdcPosition,
        /// The last delivered.
        delivered: CdcPosition,
    },
    /// The consumer was dropped.
    #[error("consumer {0:?} was dropped")]
    Dropped(String),
    /// The database failed; the stored position may or may not have moved (acking
    /// again is harmless).
    #[error("acknowledging changes")]
    Db(#[from] sqlx::Error),
}

/// Why a consumer could not be dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DropError {
    /// Consumer names are 1–63 bytes of `[a-z0-9_]`.
    #[error("not a consumer name (1-63 of [a-z0-9_]): {0:?}")]
    InvalidName(String),
    /// A session is reading the consumer's slot right now.
    #[error("consumer {0:?} is being read by another session")]
    Active(String),
    /// The database failed.
    #[error("dropping a change consumer")]
    Db(#[from] sqlx::Error),
}

/// The SQLSTATE of a database error, if it is one.
pub(super) fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// PostgreSQL: the object does not exist (a dropped slot).
pub(super) const UNDEFINED_OBJECT: &str = "42704";
/// PostgreSQL: the object already exists.
pub(super) const DUPLICATE_OBJECT: &str = "42710";
/// PostgreSQL: the object is in use (a slot another session holds).
pub(super) const OBJECT_IN_USE: &str = "55006";
