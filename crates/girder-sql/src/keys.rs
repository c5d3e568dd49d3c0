//! Random keys every instance must share (MAC keys for cursors and admissions, the
//! code permutation's key): generated once, stored as hex in the system's settings
//! table, and read back by every instance. Two keys would mean cursors one instance
//! refuses, or codes that collide.

use crate::Db;

/// Why a shared key could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The settings table could not be read or written.
    #[error("reading shared key {table}.{name}")]
    Database {
        /// The settings table.
        table: &'static str,
        /// The setting's name.
        name: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The stored value is not the expected number of hex digits (a hand-edited row).
    #[error("shared key {table}.{name} is not {digits} hex digits")]
    Corrupt {
        /// The settings table.
        table: &'static str,
        /// The setting's name.
        name: String,
        /// How many digits it should have.
        digits: usize,
    },
}

/// The `N`-byte key stored as setting `name` of `table`, generated and stored first
/// if there is none. Every instance sharing the database gets the same key.
///
/// # Errors
/// The database failed, or the stored value is corrupt.
pub async fn shared_key<const N: usize>(
    db: &Db,
    table: &'static str,
    name: &str,
) -> Result<[u8; N], KeyError> {
    let fresh: [u8; N] = fresh();
    let stored = db
        .setting_or_init(table, name, &hex(&fresh))
        .await
        .map_err(|source| KeyError::Database { table, name: name.to_owned(), source })?;
    unhex(&stored).ok_or_else(|| KeyError::Corrupt { table, name: name.to_owned(), digits: 2 * N })
}

/// A fresh random key.
pub fn fresh<const N: usize>() -> [u8; N] {
    std::array::from_fn(|_| rand::random())
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `2 * N` hex digits as `N` bytes; anything else is `None`.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let key = [0u8, 1, 0xab, 0xff, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 0x80];
        assert_eq!(unhex::<16>(&hex(&key)), Some(key));
        assert_eq!(unhex::<16>("zz"), None);
        assert_eq!(unhex::<16>(&"g".repeat(32)), None);
        assert_eq!(unhex::<16>(&"é".repeat(16)), None);
        assert_eq!(unhex::<32>(&hex(&key)), None);
        assert_ne!(fresh::<32>(), fresh::<32>());
    }
}
