//! Positions in PostgreSQL's write-ahead log, and the token a write hands to the reads
//! that must see it.

use std::fmt;
use std::str::FromStr;

/// A position in the primary's write-ahead log (PostgreSQL's `pg_lsn`): a byte
/// offset into the WAL stream, written `X/Y` (the high and low 32 bits in hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Bytes from `earlier` to `self`; 0 when `earlier` is not earlier.
    #[must_use]
    pub const fn bytes_after(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Why a text is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WAL position (X/Y, two hex numbers of at most 8 digits): {0:?}")]
pub struct LsnParseError(String);

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || LsnParseError(text.chars().take(40).collect());
        let (high, low) = text.split_once('/').ok_or_else(bad)?;
        let half = |part: &str| {
            let hex = !part.is_empty() && part.len() <= 8;
            if hex && part.bytes().all(|b| b.is_ascii_hexdigit()) {
                u32::from_str_radix(part, 16).ok()
            } else {
                None
            }
        };
        let (high, low) = (half(high).ok_or_else(bad)?, half(low).ok_or_else(bad)?);
        Ok(Self((u64::from(high) << 32) | u64::from(low)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What a read must see: handed out by [`super::ReadRouter::token`] after a write
/// commits, carried to the reads that must observe it (read-your-writes).
///
/// A token is a WAL position of the primary, so it means the same on every instance
/// sharing that primary: a client may carry it from one instance to another (as text,
/// through [`fmt::Display`] and [`FromStr`]). Tokens of several writes combine with
/// [`WriteToken::later`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteToken {
    /// A replica may serve the read once it has replayed the primary's WAL up to here.
    After(Lsn),
    /// Only the primary may serve the read: there are no replicas, the database is
    /// SQLite, or the primary's position could not be read after the write.
    Primary,
}

impl WriteToken {
    /// The token that covers both writes: the later position, or `Primary` if either
    /// is.
    #[must_use]
    pub fn later(self, other: Self) -> Self {
        match (self, other) {
            (Self::After(a), Self::After(b)) => Self::After(a.max(b)),
            _ => Self::Primary,
        }
    }
}

impl fmt::Display for WriteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::After(lsn) => lsn.fmt(f),
            Self::Primary => f.write_str("primary"),
        }
    }
}

impl FromStr for WriteToken {
    type Err = LsnParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "primary" { Ok(Self::Primary) } else { text.parse().map(Self::After) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips_and_bad_text_is_an_error() {
        let check = |text: &str, want: Option<u64>| {
            let parsed = text.parse::<Lsn>();
            assert_eq!(parsed.as_ref().ok().map(|l| l.0), want, "{text}");
            if let Ok(lsn) = parsed {
                assert_eq!(lsn.to_string().parse::<Lsn>(), Ok(lsn), "{text}");
            }
        };
        check("0/0", Some(0));
        check("0/16B3748", Some(0x16B_3748));
        check("1/0", Some(1 << 32));
        check("FFFFFFFF/FFFFFFFF", Some(u64::MAX));
        check("a/b", Some((0xA << 32) | 0xB));
        for bad in ["", "/", "0/", "/0", "0", "0/0/0", "100000000/0", "g/0", "-1/0", "+1/0", " 0/0"]
        {
            check(bad, None);
        }
        assert_eq!(Lsn(0x1_0000_00FF).to_string(), "1/FF");
        assert_eq!(Lsn(10).bytes_after(Lsn(4)), 6);
        assert_eq!(Lsn(4).bytes_after(Lsn(10)), 0);
    }

    #[test]
    fn tokens_combine_to_the_later_one_and_primary_wins() {
        let at = |n| WriteToken::After(Lsn(n));
        assert_eq!(at(5).later(at(9)), at(9));
        assert_eq!(at(9).later(at(5)), at(9));
        assert_eq!(at(9).later(WriteToken::Primary), WriteToken::Primary);
        assert_eq!(WriteToken::Primary.later(at(1)), WriteToken::Primary);
        for token in [at(0), at(0x2_0000_0010), WriteToken::Primary] {
            assert_eq!(token.to_string().parse::<WriteToken>(), Ok(token));
        }
        assert!("primary ".parse::<WriteToken>().is_err());
    }
}
