//! Opaque, tamper-evident page cursors (Pattern: Pagination & Cursor-based
//! Fetching). Every list endpoint pages with keyset cursors: the cursor carries
//! the last row's sort key and id, so the next page is `WHERE (key, id) < (…)`
//! — stable under concurrent inserts, unlike `OFFSET`.
//!
//! A cursor is `base64url(version ‖ payload ‖ tag)`, where the tag is a keyed
//! BLAKE3 MAC over the list's scope and the payload. Clients cannot forge or
//! edit a cursor, nor replay one from a different list: any change fails the
//! MAC and gets a 400. Cursors are not encrypted — the payload (a sort key and an
//! id the client has already seen) is not secret, only unforgeable.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The longest cursor accepted, in characters; longer input is rejected before
/// any decoding work.
pub const CURSOR_CHARS_MAX: usize = 512;

const VERSION: u8 = 1;
const TAG_BYTES: usize = 16;

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Longer than [`CURSOR_CHARS_MAX`].
    #[error("cursor is longer than {CURSOR_CHARS_MAX} characters")]
    TooLong,
    /// Not base64url, or too short to hold a version and a tag.
    #[error("cursor is malformed")]
    Malformed,
    /// Made by an incompatible version of the server.
    #[error("cursor version {0} is not supported")]
    Version(u8),
    /// The MAC does not match: edited, forged, or from another list.
    #[error("cursor was altered or belongs to another list")]
    Forged,
}

/// Signs and verifies cursors with one deployment-wide key.
#[derive(Clone)]
pub struct CursorCodec {
    key: [u8; 32],
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorCodec { key: <hidden> }")
    }
}

impl CursorCodec {
    /// A codec with `key`. Instances serving the same lists must share it.
    #[must_use]
    pub const fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn tag(&self, scope: &str, payload: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        // Length-prefix the scope so ("ab", "c…") and ("a", "bc…") cannot collide.
        mac.update(&(scope.len() as u64).to_le_bytes());
        mac.update(scope.as_bytes());
        mac.update(payload);
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&mac.finalize().as_bytes()[..TAG_BYTES]);
        tag
    }

    /// Encodes `position` (the last row's sort key and id) for list `scope`.
    #[must_use]
    pub fn encode<T: Serialize>(&self, scope: &str, position: &T) -> String {
        // Serialising plain data (numbers, strings) into a Vec cannot fail.
        let payload = serde_json::to_vec(position).unwrap_or_default();
        let mut bytes = Vec::with_capacity(1 + payload.len() + TAG_BYTES);
        bytes.push(VERSION);
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(&self.tag(scope, &payload));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Verifies and decodes a cursor made by [`CursorCodec::encode`] for `scope`.
    ///
    /// # Errors
    /// The cursor is too long, malformed, from another version, or fails the MAC.
    pub fn decode<T: DeserializeOwned>(&self, scope: &str, cursor: &str) -> Result<T, CursorError> {
        if cursor.len() > CURSOR_CHARS_MAX {
            return Err(CursorError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| CursorError::Malformed)?;
        let [version, rest @ ..] = bytes.as_slice() else {
            return Err(CursorError::Malformed);
        };
        if *version != VERSION {
            return Err(CursorError::Version(*version));
        }
        let split = rest.len().checked_sub(TAG_BYTES).ok_or(CursorError::Malformed)?;
        let (payload, tag) = rest.split_at(split);
        // Constant-time comparison: the tag must not leak through timing.
        if !constant_time_eq(&self.tag(scope, payload), tag) {
            return Err(CursorError::Forged);
        }
        // A valid MAC means we wrote this payload; a decode failure means the
        // position type changed between versions — treat as malformed.
        serde_json::from_slice(payload).map_err(|_| CursorError::Malformed)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type Position = (i64, String);

    fn codec() -> CursorCodec {
        CursorCodec::new([42; 32])
    }

    #[test]
    fn round_trip() {
        let position: Position = (1_700_000_000_123, "abc-DEF_9".to_owned());
        let cursor = codec().encode("bitly.links", &position);
        assert!(cursor.len() < CURSOR_CHARS_MAX);
        assert_eq!(codec().decode::<Position>("bitly.links", &cursor), Ok(position));
    }

    #[test]
    fn rejections() {
        let cursor = codec().encode("bitly.links", &(5_i64, "x".to_owned()));
        let check = |scope: &str, text: &str, want: CursorError| {
            assert_eq!(codec().decode::<Position>(scope, text), Err(want), "{text:?}");
        };
        check("bitly.links", "", CursorError::Malformed);
        check("bitly.links", "!!!", CursorError::Malformed);
        check("bitly.links", "AQ", CursorError::Malformed);
        check("bitly.links", &"A".repeat(CURSOR_CHARS_MAX + 1), CursorError::TooLong);
        check("other.list", &cursor, CursorError::Forged);
        let other_key = CursorCodec::new([7; 32]).encode("bitly.links", &(5_i64, "x".to_owned()));
        check("bitly.links", &other_key, CursorError::Forged);
        let mut bytes = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
        bytes[0] = 9;
        check("bitly.links", &URL_SAFE_NO_PAD.encode(&bytes), CursorError::Version(9));
    }

    proptest! {
        #[test]
        fn any_single_byte_edit_is_caught(pos in 0usize..64, flip in 1u8..=255) {
            let cursor = codec().encode("bitly.links", &(123_456_i64, "code123".to_owned()));
            let mut bytes = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
            let i = 1 + pos % (bytes.len() - 1);
            bytes[i] ^= flip;
            let edited = URL_SAFE_NO_PAD.encode(&bytes);
            prop_assert!(codec().decode::<Position>("bitly.links", &edited).is_err());
        }

        #[test]
        fn arbitrary_input_never_panics(text in "\\PC{0,600}") {
            let _ = codec().decode::<Position>("bitly.links", &text);
        }
    }
}
