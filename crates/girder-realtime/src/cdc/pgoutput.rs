//! PostgreSQL's `pgoutput` logical replication messages (protocol version 1), as
//! `pg_logical_slot_peek_binary_changes` returns them: one message per row, decoded
//! here into transactions of [`Change`]s. Pure: no I/O, tested on hand-made bytes.
//!
//! Message layouts are the PostgreSQL manual's "Logical Replication Message
//! Formats": big-endian integers, NUL-terminated strings, tuples as a column count
//! and per column `n` (null), `u` (unchanged TOASTed value), `t` + length + text.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use super::change::{CdcPosition, Change, Op};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX_US: i64 = 946_684_800_000_000;

/// A `pgoutput` message (or a stored SQLite change) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A message ended before its fields did.
    #[error("message {kind:?} is truncated")]
    Truncated {
        /// The message's type byte.
        kind: char,
    },
    /// A message type this decoder does not know (streamed transactions and
    /// two-phase commits are never asked for).
    #[error("unknown message type {0:?}")]
    UnknownMessage(char),
    /// A tuple part or column kind other than those of protocol version 1.
    #[error("unknown tuple part {0:?}")]
    UnknownTuplePart(char),
    /// A change names a relation no Relation message described.
    #[error("change for relation {0} before its description")]
    UnknownRelation(u32),
    /// A change or commit outside a Begin … Commit pair, or a Begin inside one.
    #[error("message {0:?} out of its transaction")]
    OutOfTransaction(char),
    /// A tuple has a different number of columns than its relation.
    #[error("relation {relation}: a tuple of {got} columns, {want} described")]
    ColumnCount {
        /// The relation.
        relation: u32,
        /// Columns in the tuple.
        got: usize,
        /// Columns described.
        want: usize,
    },
    /// A stored image is not a JSON object (SQLite's change table).
    #[error("change {position}: stored image is not a JSON object")]
    Image {
        /// The change.
        position: CdcPosition,
    },
}

/// One column of a relation: its name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) type_oid: u32,
}

/// A table as a Relation message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) columns: Vec<Column>,
}

impl Relation {
    /// The table's name in [`Change::table`]: bare in `public`, else qualified.
    fn table(&self) -> String {
        if self.namespace == "public" || self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.namespace, self.name)
        }
    }
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Datum {
    Null,
    /// A TOASTed value the update did not change, so not sent.
    Unchanged,
    Text(String),
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Begin {
        final_lsn: u64,
        commit_time_us: i64,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
    },
    Relation {
        id: u32,
        relation: Relation,
    },
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    Update {
        relation: u32,
        old: Option<Vec<Datum>>,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: Vec<Datum>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Origin, Type and logical decoding messages: nothing to deliver.
    Skipped,
}

struct Reader<'a> {
    bytes: &'a [u8],
    kind: char,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated { kind: self.kind });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated { kind: self.kind })?;
        let text = String::from_utf8_lossy(&self.bytes[..end]).into_owned();
        self.bytes = &self.bytes[end + 1..];
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let columns = self.u16()?;
        (0..columns)
            .map(|_| match self.u8()? {
                b'n' => Ok(Datum::Null),
                b'u' => Ok(Datum::Unchanged),
                b't' => {
                    let len = self.u32()? as usize;
                    Ok(Datum::Text(String::from_utf8_lossy(self.take(len)?).into_owned()))
                }
                other => Err(DecodeError::UnknownTuplePart(other as char)),
            })
            .collect()
    }
}

/// Decodes one message.
pub(crate) fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let Some((&kind, rest)) = bytes.split_first() else {
        return Err(DecodeError::Truncated { kind: '\0' });
    };
    let mut r = Reader { bytes: rest, kind: kind as char };
    let message = match kind {
        b'B' => {
            let final_lsn = r.u64()?;
            let commit_time_us = r.u64()? as i64;
            let _xid = r.u32()?;
            Message::Begin { final_lsn, commit_time_us }
        }
        b'C' => {
            let _flags = r.u8()?;
            let commit_lsn = r.u64()?;
            let end_lsn = r.u64()?;
            let _commit_time_us = r.u64()?;
            Message::Commit { commit_lsn, end_lsn }
        }
        b'R' => {
            let id = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let _replica_identity = r.u8()?;
            let count = r.u16()?;
            let columns = (0..count)
                .map(|_| {
                    let _flags = r.u8()?;
                    let name = r.string()?;
                    let type_oid = r.u32()?;
                    let _type_modifier = r.u32()?;
                    Ok(Column { name, type_oid })
                })
                .collect::<Result<_, DecodeError>>()?;
            Message::Relation { id, relation: Relation { namespace, name, columns } }
        }
        b'I' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert { relation, new: r.tuple()? },
                other => return Err(DecodeError::UnknownTuplePart(other as char)),
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let (old, new) = match r.u8()? {
                b'K' | b'O' => {
                    let old = r.tuple()?;
                    match r.u8()? {
                        b'N' => (Some(old), r.tuple()?),
                        other => return Err(DecodeError::UnknownTuplePart(other as char)),
                    }
                }
                b'N' => (None, r.tuple()?),
                other => return Err(DecodeError::UnknownTuplePart(other as char)),
            };
            Message::Update { relation, old, new }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => Message::Delete { relation, old: r.tuple()? },
                other => return Err(DecodeError::UnknownTuplePart(other as char)),
            }
        }
        b'T' => {
            let count = r.u32()?;
            let _options = r.u8()?;
            let relations = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { relations }
        }
        b'O' | b'Y' | b'M' => Message::Skipped,
        other => return Err(DecodeError::UnknownMessage(other as char)),
    };
    Ok(message)
}

/// PostgreSQL type OIDs whose text form becomes a JSON number, boolean or value.
mod oid {
    pub(super) const BOOL: u32 = 16;
    pub(super) const INT8: u32 = 20;
    pub(super) const INT2: u32 = 21;
    pub(super) const INT4: u32 = 23;
    pub(super) const OID: u32 = 26;
    pub(super) const JSON: u32 = 114;
    pub(super) const FLOAT4: u32 = 700;
    pub(super) const FLOAT8: u32 = 701;
    pub(super) const NUMERIC: u32 = 1700;
    pub(super) const JSONB: u32 = 3802;
}

/// A column's text form as JSON: integers, floats and numerics as numbers when the
/// number says exactly what the text says (else the text, so nothing is rounded
/// silently), booleans as booleans, json/jsonb parsed, everything else as text.
pub(crate) fn to_json(type_oid: u32, text: &str) -> Value {
    let as_text = || Value::String(text.to_owned());
    match type_oid {
        oid::BOOL => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => as_text(),
        },
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => integer(text).unwrap_or_else(as_text),
        // PostgreSQL prints floats in shortest round-trip form (extra_float_digits 1,
        // the default since 12), so a finite parse is the value it holds.
        oid::FLOAT4 | oid::FLOAT8 => {
            text.parse::<f64>().ok().and_then(Number::from_f64).map_or_else(as_text, Value::Number)
        }
        oid::NUMERIC => decimal(text).unwrap_or_else(as_text),
        oid::JSON | oid::JSONB => serde_json::from_str(text).unwrap_or_else(|_| as_text()),
        _ => as_text(),
    }
}

fn integer(text: &str) -> Option<Value> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>()
        .map(Number::from)
        .or_else(|_| text.parse::<u64>().map(Number::from))
        .ok()
        .map(Value::Number)
}

/// A numeric as a JSON number when it is an integer that fits 64 bits, or when an
/// f64 prints back as the same decimal (trailing fraction zeros aside): `12.340`
/// and `0.1` do; `0.1000000000000000055`, 30-digit integers and `NaN` stay text.
fn decimal(text: &str) -> Option<Value> {
    let negative = text.starts_with('-');
    let plain = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = plain.split_once('.').unwrap_or((plain, ""));
    let numeric = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !numeric(whole) || !numeric(fraction) {
        return None;
    }
    let sign = if negative { "-" } else { "" };
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        return integer(&format!("{sign}{whole}"));
    }
    let value: f64 = text.parse().ok()?;
    (value.is_finite() && value.to_string() == format!("{sign}{whole}.{fraction}"))
        .then(|| Number::from_f64(value))
        .flatten()
        .map(Value::Number)
}

/// A tuple as a JSON object of the relation's columns; unchanged TOASTed columns are
/// taken from `before` when it has them, else left out and named in the second part.
fn image(
    relation_id: u32,
    relation: &Relation,
    tuple: Vec<Datum>,
    before: Option<&Map<String, Value>>,
) -> Result<(Map<String, Value>, Vec<String>), DecodeError> {
    if tuple.len() != relation.columns.len() {
        return Err(DecodeError::ColumnCount {
            relation: relation_id,
            got: tuple.len(),
            want: relation.columns.len(),
        });
    }
    let mut object = Map::with_capacity(tuple.len());
    let mut unchanged = Vec::new();
    for (column, datum) in relation.columns.iter().zip(tuple) {
        let value = match datum {
            Datum::Null => Value::Null,
            Datum::Text(text) => to_json(column.type_oid, &text),
            Datum::Unchanged => match before.and_then(|b| b.get(&column.name)) {
                Some(value) => value.clone(),
                None => {
                    unchanged.push(column.name.clone());
                    continue;
                }
            },
        };
        object.insert(column.name.clone(), value);
    }
    Ok((object, unchanged))
}

/// One decoded transaction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Txn {
    /// The commit record's LSN: every change's position's major part.
    pub(crate) commit_lsn: u64,
    /// Just past the commit record: where the slot advances to once it is acked.
    pub(crate) end_lsn: u64,
    /// Rows (messages) from its Begin to its Commit, inclusive.
    pub(crate) rows: u64,
    pub(crate) changes: Vec<Change>,
}

impl Txn {
    /// The position of its last change (of its commit, when it has none).
    pub(crate) fn last(&self) -> CdcPosition {
        self.changes.last().map_or(CdcPosition::from_parts(self.commit_lsn, 0), |c| c.position)
    }
}

struct Open {
    commit_lsn: u64,
    at_ms: u64,
    rows: u64,
    changes: Vec<Change>,
}

/// Turns a message stream into transactions, keeping the relations described so
/// far (each peek describes every relation again before its first change).
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    relations: HashMap<u32, Relation>,
    open: Option<Open>,
}

impl std::fmt::Debug for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Open").field("commit_lsn", &self.commit_lsn).finish_non_exhaustive()
    }
}

impl Assembler {
    /// Forgets a transaction left open by a previous, cut-short stream.
    pub(crate) fn reset(&mut self) {
        self.open = None;
    }

    /// Feeds one message; returns the transaction its Commit completes.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Option<Txn>, DecodeError> {
        let message = decode(bytes)?;
        let kind = bytes[0] as char;
        if let Message::Begin { final_lsn, commit_time_us } = message {
            if self.open.is_some() {
                return Err(DecodeError::OutOfTransaction(kind));
            }
            let at_us = commit_time_us.saturating_add(PG_EPOCH_UNIX_US).max(0);
            self.open = Some(Open {
                commit_lsn: final_lsn,
                at_ms: (at_us / 1_000) as u64,
                rows: 1,
                changes: Vec::new(),
            });
            return Ok(None);
        }
        if let Message::Relation { id, relation } = message {
            self.relations.insert(id, relation);
            if let Some(open) = &mut self.open {
                open.rows += 1;
            }
            return Ok(None);
        }
        if message == Message::Skipped {
            if let Some(open) = &mut self.open {
                open.rows += 1;
            }
            return Ok(None);
        }
        let Some(open) = &mut self.open else {
            return Err(DecodeError::OutOfTransaction(kind));
        };
        open.rows += 1;
        let relation = |id: u32| self.relations.get(&id).ok_or(DecodeError::UnknownRelation(id));
        let mut change = |table: String, op, before, after, unchanged| {
            let index = open.changes.len() as u64;
            open.changes.push(Change {
                position: CdcPosition::from_parts(open.commit_lsn, index),
                txn: open.commit_lsn,
                table,
                op,
                before,
                after,
                unchanged,
                at_ms: open.at_ms,
            });
        };
        match message {
            Message::Insert { relation: id, new } => {
                let rel = relation(id)?;
                let (after, unchanged) = image(id, rel, new, None)?;
                change(rel.table(), Op::Insert, None, Some(Value::Object(after)), unchanged);
            }
            Message::Update { relation: id, old, new } => {
                let rel = relation(id)?;
                let before = old.map(|old| image(id, rel, old, None)).transpose()?.map(|(b, _)| b);
                let (after, unchanged) = image(id, rel, new, before.as_ref())?;
                let before = before.map(Value::Object);
                change(rel.table(), Op::Update, before, Some(Value::Object(after)), unchanged);
            }
            Message::Delete { relation: id, old } => {
                let rel = relation(id)?;
                let (before, _) = image(id, rel, old, None)?;
                change(rel.table(), Op::Delete, Some(Value::Object(before)), None, Vec::new());
            }
            Message::Truncate { relations } => {
                for id in relations {
                    change(relation(id)?.table(), Op::Truncate, None, None, Vec::new());
                }
            }
            Message::Commit { commit_lsn, end_lsn } => {
                let open = self.open.take().expect("checked above");
                debug_assert_eq!(commit_lsn, open.commit_lsn, "Begin's final LSN is the commit's");
                return Ok(Some(Txn {
                    commit_lsn: open.commit_lsn,
                    end_lsn,
                    rows: open.rows,
                    changes: open.changes,
                }));
            }
            Message::Begin { .. } | Message::Relation { .. } | Message::Skipped => {
                unreachable!("handled above")
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_values_become_json_only_where_exact() {
        let check = |oid: u32, text: &str, want: Value| {
            assert_eq!(to_json(oid, text), want, "{oid} {text:?}");
        };
        check(oid::BOOL, "t", json!(true));
        check(oid::BOOL, "f", json!(false));
        check(oid::INT4, "-42", json!(-42));
        check(oid::INT8, "9223372036854775807", json!(i64::MAX));
        check(oid::INT2, "7", json!(7));
        check(oid::OID, "4294967295", json!(4_294_967_295_u64));
        check(oid::FLOAT8, "1.5", json!(1.5));
        check(oid::FLOAT8, "100", json!(100.0));
        check(oid::FLOAT8, "0.1", json!(0.1));
        check(oid::FLOAT8, "-2.25", json!(-2.25));
        check(oid::FLOAT8, "1e+300", json!(1e300));
        check(oid::FLOAT8, "1.2345e-07", json!(1.2345e-7));
        check(oid::FLOAT8, "NaN", json!("NaN"));
        check(oid::FLOAT8, "Infinity", json!("Infinity"));
        check(oid::FLOAT4, "3.25", json!(3.25));
        check(oid::NUMERIC, "12.340", json!(12.34));
        check(oid::NUMERIC, "12.000", json!(12));
        check(oid::NUMERIC, "-0.5", json!(-0.5));
        check(
            oid::NUMERIC,
            "0.1000000000000000055511151231257827",
            json!("0.1000000000000000055511151231257827"),
        );
        check(
            oid::NUMERIC,
            "123456789012345678901234567890",
            json!("123456789012345678901234567890"),
        );
        check(oid::NUMERIC, "18446744073709551615", json!(u64::MAX));
        check(oid::NUMERIC, "NaN", json!("NaN"));
        check(oid::JSON, r#"{"a": [1, 2]}"#, json!({"a": [1, 2]}));
        check(oid::JSONB, "null", json!(null));
        check(oid::JSONB, "{broken", json!("{broken"));
        check(25, "hello", json!("hello"));
        check(1114, "2025-11-27 10:00:00", json!("2025-11-27 10:00:00"));
    }

    /// Builds messages the way pgoutput writes them.
    #[derive(Default)]
    struct Writer(Vec<u8>);

    impl Writer {
        fn kind(b: u8) -> Self {
            Self(vec![b])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn u16(mut self, v: u16) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn str(mut self, s: &str) -> Self {
            self.0.extend(s.as_bytes());
            self.0.push(0);
            self
        }
        fn tuple(mut self, columns: &[Option<Option<&str>>]) -> Self {
            self = self.u16(columns.len() as u16);
            for column in columns {
                self = match column {
                    None => self.u8(b'u'),
                    Some(None) => self.u8(b'n'),
                    Some(Some(text)) => {
                        let s = self.u8(b't').u32(text.len() as u32);
                        let mut bytes = s.0;
                        bytes.extend(text.as_bytes());
                        Self(bytes)
                    }
                };
            }
            self
        }
    }

    fn begin(lsn: u64) -> Vec<u8> {
        Writer::kind(b'B').u64(lsn).u64(1_000_000).u32(731).0
    }

    fn commit(lsn: u64, end: u64) -> Vec<u8> {
        Writer::kind(b'C').u8(0).u64(lsn).u64(end).u64(1_000_000).0
    }

    fn relation() -> Vec<u8> {
        Writer::kind(b'R')
            .u32(16_384)
            .str("public")
            .str("seats")
            .u8(b'f')
            .u16(3)
            .u8(1)
            .str("id")
            .u32(oid::INT4)
            .u32(u32::MAX)
            .u8(0)
            .str("state")
            .u32(25)
            .u32(u32::MAX)
            .u8(0)
            .str("doc")
            .u32(25)
            .u32(u32::MAX)
            .0
    }

    #[test]
    fn a_transaction_decodes_into_positioned_changes_with_both_images() {
        let mut a = Assembler::default();
        let messages = [
            begin(500),
            relation(),
            Writer::kind(b'I')
                .u32(16_384)
                .u8(b'N')
                .tuple(&[Some(Some("1")), Some(Some("free")), Some(None)])
                .0,
            Writer::kind(b'Y').u32(99).str("public").str("mood").0,
            Writer::kind(b'U')
                .u32(16_384)
                .u8(b'O')
                .tuple(&[Some(Some("1")), Some(Some("free")), Some(Some("big"))])
                .u8(b'N')
                .tuple(&[Some(Some("1")), Some(Some("held")), None])
                .0,
            Writer::kind(b'D')
                .u32(16_384)
                .u8(b'O')
                .tuple(&[Some(Some("1")), Some(Some("held")), Some(None)])
                .0,
            Writer::kind(b'T').u32(1).u8(0).u32(16_384).0,
        ];
        for m in &messages {
            assert_eq!(a.push(m), Ok(None));
        }
        let txn = a.push(&commit(500, 540)).expect("decodes").expect("a commit ends it");
        assert_eq!((txn.commit_lsn, txn.end_lsn, txn.rows), (500, 540, 8));
        let seen: Vec<_> = txn
            .changes
            .iter()
            .map(|c| {
                (
                    c.position.parts(),
                    c.txn,
                    c.table.as_str(),
                    c.op,
                    c.before.clone(),
                    c.after.clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    (500, 0),
                    500,
                    "seats",
                    Op::Insert,
                    None,
                    Some(json!({"id": 1, "state": "free", "doc": null}))
                ),
                (
                    (500, 1),
                    500,
                    "seats",
                    Op::Update,
                    Some(json!({"id": 1, "state": "free", "doc": "big"})),
                    // The unchanged TOASTed value is taken from the before image.
                    Some(json!({"id": 1, "state": "held", "doc": "big"}))
                ),
                (
                    (500, 2),
                    500,
                    "seats",
                    Op::Delete,
                    Some(json!({"id": 1, "state": "held", "doc": null})),
                    None
                ),
                ((500, 3), 500, "seats", Op::Truncate, None, None),
            ]
        );
        assert!(txn.changes.iter().all(|c| c.unchanged.is_empty() && c.at_ms == 946_684_801_000));
        assert_eq!(txn.last().parts(), (500, 3));
    }

    #[test]
    fn an_unchanged_value_without_a_before_image_is_named_not_invented() {
        let mut a = Assembler::default();
        a.push(&begin(7)).expect("begin");
        a.push(&relation()).expect("relation");
        let update = Writer::kind(b'U')
            .u32(16_384)
            .u8(b'N')
            .tuple(&[Some(Some("2")), Some(Some("sold")), None])
            .0;
        a.push(&update).expect("update");
        let txn = a.push(&commit(7, 9)).expect("commit").expect("txn");
        assert_eq!(txn.changes[0].before, None);
        assert_eq!(txn.changes[0].after, Some(json!({"id": 2, "state": "sold"})));
        assert_eq!(txn.changes[0].unchanged, vec!["doc".to_owned()]);
    }

    #[test]
    fn malformed_streams_are_errors_not_panics() {
        let check = |stream: &[Vec<u8>], want: DecodeError| {
            let mut a = Assembler::default();
            let got = stream.iter().map(|m| a.push(m)).find_map(Result::err);
            assert_eq!(got, Some(want), "{stream:?}");
        };
        let insert = Writer::kind(b'I').u32(16_384).u8(b'N').tuple(&[Some(Some("1"))]).0;
        check(&[vec![]], DecodeError::Truncated { kind: '\0' });
        check(&[b"B\0\0".to_vec()], DecodeError::Truncated { kind: 'B' });
        check(&[b"Z".to_vec()], DecodeError::UnknownMessage('Z'));
        check(std::slice::from_ref(&insert), DecodeError::OutOfTransaction('I'));
        check(&[begin(1), begin(2)], DecodeError::OutOfTransaction('B'));
        check(&[commit(1, 2)], DecodeError::OutOfTransaction('C'));
        check(&[begin(1), insert.clone()], DecodeError::UnknownRelation(16_384));
        check(
            &[begin(1), relation(), insert],
            DecodeError::ColumnCount { relation: 16_384, got: 1, want: 3 },
        );
        check(
            &[begin(1), relation(), Writer::kind(b'I').u32(16_384).u8(b'X').0],
            DecodeError::UnknownTuplePart('X'),
        );
        check(
            &[begin(1), relation(), Writer::kind(b'I').u32(16_384).u8(b'N').u16(1).u8(b'b').0],
            DecodeError::UnknownTuplePart('b'),
        );
        // A text value longer than what is left.
        check(
            &[
                begin(1),
                relation(),
                Writer::kind(b'I').u32(16_384).u8(b'N').u16(1).u8(b't').u32(99).0,
            ],
            DecodeError::Truncated { kind: 'I' },
        );
        check(&[Writer::kind(b'R').u32(1).str("public").0], DecodeError::Truncated { kind: 'R' });
    }
}
