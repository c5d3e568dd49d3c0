//! The bytes an L2 entry holds: a one-byte format version, a kind (value, cached
//! absence, tombstone), the absolute expiry in Unix milliseconds (so an instance filling
//! its L1 from L2 never keeps the value longer than L2 would), and the value in
//! postcard (compact, non-self-describing serde).
//!
//! Layout: `[version=1][kind][expires_at_ms: u64 LE][postcard(value) if kind = value]`.
//! Anything else (another version, a truncated entry, a value that no longer decodes
//! after a type change) is an error, which the cache treats as an L2 miss and
//! overwrites with the next write.

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 10;

const KIND_VALUE: u8 = 1;
const KIND_ABSENT: u8 = 2;
const KIND_TOMBSTONE: u8 = 3;

/// A decoded L2 entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Payload<V> {
    /// A value, valid until the given time.
    Value(V, u64),
    /// A cached "no such value", valid until the given time.
    Absent(u64),
    /// The key was invalidated: not a value, and it blocks fills until it expires.
    Tombstone,
}

/// An L2 entry that cannot be read.
#[derive(Debug, Error)]
pub(crate) enum CodecError {
    /// Too short, an unknown version or kind.
    #[error("malformed cache entry header")]
    Header,
    /// The value did not decode (its type changed since it was written?).
    #[error("cache entry value: {0}")]
    Value(#[from] postcard::Error),
}

/// Encodes a value (or absence) expiring at `expires_at_ms`.
pub(crate) fn encode_value<V: Serialize>(
    value: Option<&V>,
    expires_at_ms: u64,
) -> Result<Vec<u8>, postcard::Error> {
    let kind = if value.is_some() { KIND_VALUE } else { KIND_ABSENT };
    let mut out = header(kind, expires_at_ms);
    if let Some(value) = value {
        out = postcard::to_extend(value, out)?;
    }
    Ok(out)
}

/// Encodes a tombstone.
pub(crate) fn encode_tombstone() -> Vec<u8> {
    header(KIND_TOMBSTONE, 0)
}

fn header(kind: u8, expires_at_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
    out
}

/// Decodes an entry written by [`encode_value`] or [`encode_tombstone`].
pub(crate) fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<Payload<V>, CodecError> {
    if bytes.len() < HEADER_LEN || bytes[0] != VERSION {
        return Err(CodecError::Header);
    }
    let mut expires = [0_u8; 8];
    expires.copy_from_slice(&bytes[2..HEADER_LEN]);
    let expires_at_ms = u64::from_le_bytes(expires);
    let body = &bytes[HEADER_LEN..];
    match bytes[1] {
        KIND_VALUE => Ok(Payload::Value(postcard::from_bytes(body)?, expires_at_ms)),
        KIND_ABSENT if body.is_empty() => Ok(Payload::Absent(expires_at_ms)),
        KIND_TOMBSTONE if body.is_empty() => Ok(Payload::Tombstone),
        _ => Err(CodecError::Header),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_an_error() {
        let bytes = encode_value(Some(&("code".to_owned(), 7_u64)), 123).unwrap();
        assert_eq!(decode(&bytes).unwrap(), Payload::Value(("code".to_owned(), 7_u64), 123));
        let bytes = encode_value::<u8>(None, 9).unwrap();
        assert_eq!(decode::<u8>(&bytes).unwrap(), Payload::Absent(9));
        assert_eq!(decode::<u8>(&encode_tombstone()).unwrap(), Payload::Tombstone);

        assert!(matches!(decode::<u8>(b""), Err(CodecError::Header)));
        let mut other_version = encode_tombstone();
        other_version[0] = 2;
        assert!(matches!(decode::<u8>(&other_version), Err(CodecError::Header)));
        let mut truncated = encode_value(Some(&"long string".to_owned()), 1).unwrap();
        truncated.truncate(truncated.len() - 3);
        assert!(matches!(decode::<String>(&truncated), Err(CodecError::Value(_))));
    }
}
