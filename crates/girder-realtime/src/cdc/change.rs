//! What a consumer receives: [`Change`]s, each at a [`CdcPosition`] in commit order.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// Where a change sits in the stream: totally ordered, in commit order, and stable
/// (the same change always has the same position), so a consumer stores the last one
/// it processed and deduplicates redeliveries by it.
///
/// Two unsigned parts compared in order. SQLite: (the change table's sequence, 0).
/// PostgreSQL: (the commit record's LSN, the change's index within its transaction).
/// Store it as its two parts or as its text form (`"major.minor"`, decimal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CdcPosition {
    major: u64,
    minor: u64,
}

impl CdcPosition {
    /// Before every change.
    pub const START: Self = Self { major: 0, minor: 0 };

    /// The position with these parts (from [`CdcPosition::parts`] or storage).
    #[must_use]
    pub const fn from_parts(major: u64, minor: u64) -> Self {
        Self { major, minor }
    }

    /// The two parts, for storage.
    #[must_use]
    pub const fn parts(self) -> (u64, u64) {
        (self.major, self.minor)
    }
}

impl fmt::Display for CdcPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A position's text was not `major.minor` in decimal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a change position (want MAJOR.MINOR, decimal): {0:?}")]
pub struct PositionParseError(pub String);

impl FromStr for CdcPosition {
    type Err = PositionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PositionParseError(s.to_owned());
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return Err(bad());
        }
        Ok(Self {
            major: major.parse().map_err(|_| bad())?,
            minor: minor.parse().map_err(|_| bad())?,
        })
    }
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A row was inserted: `after` holds it.
    Insert,
    /// A row was updated: `before` and `after` hold it before and after.
    Update,
    /// A row was deleted: `before` holds it.
    Delete,
    /// Every row of the table was removed at once (PostgreSQL's `TRUNCATE`; SQLite
    /// reports a `DELETE` without `WHERE` row by row instead). No images.
    Truncate,
}

impl Op {
    /// `insert`, `update`, `delete` or `truncate`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Truncate => "truncate",
        }
    }
}

/// One committed row change of a captured table.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Its place in the stream; acknowledge it with `Consumer::ack`.
    pub position: CdcPosition,
    /// The commit it belongs to: equal for changes that committed together and
    /// increasing in commit order. PostgreSQL: the commit's LSN, one transaction.
    /// SQLite: a commit group of one or more whole transactions committed one after
    /// another (never part of one; see the module docs).
    pub txn: u64,
    /// The table, as named when capture was installed (PostgreSQL: schema-qualified
    /// unless the schema is `public`).
    pub table: String,
    /// What happened.
    pub op: Op,
    /// The row before the change (`Update`, `Delete`): a JSON object column → value.
    pub before: Option<Value>,
    /// The row after the change (`Insert`, `Update`): a JSON object column → value.
    pub after: Option<Value>,
    /// Columns whose new value the database did not send (PostgreSQL: an unchanged
    /// TOASTed value with no before image to copy it from); absent from `after`.
    /// Empty on SQLite, and on PostgreSQL for tables captured by `Capture::install`
    /// (replica identity full gives the before image every value).
    pub unchanged: Vec<String>,
    /// Milliseconds since the Unix epoch: the commit's time on PostgreSQL, the
    /// writing statement's time on SQLite.
    pub at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_major_then_minor_and_round_trip_as_text() {
        let check = |text: &str, want: Option<(u64, u64)>| {
            let got = text.parse::<CdcPosition>().ok().map(CdcPosition::parts);
            assert_eq!(got, want, "{text:?}");
            if let Some((major, minor)) = want {
                assert_eq!(CdcPosition::from_parts(major, minor).to_string(), text);
            }
        };
        check("0.0", Some((0, 0)));
        check("35302344.7", Some((35_302_344, 7)));
        check("18446744073709551615.18446744073709551615", Some((u64::MAX, u64::MAX)));
        for bad in [
            "",
            ".",
            "1",
            "1.",
            ".1",
            "1.2.3",
            "-1.0",
            "+1.0",
            "1.x",
            " 1.0",
            "18446744073709551616.0",
        ] {
            check(bad, None);
        }
        let mut sorted =
            [(2, 0), (1, 9), (1, 10), (0, u64::MAX)].map(|(a, b)| CdcPosition::from_parts(a, b));
        sorted.sort();
        assert_eq!(sorted.map(CdcPosition::parts), [(0, u64::MAX), (1, 9), (1, 10), (2, 0)]);
    }
}
