//! Impression tokens: what a click URL carries. An impression is issued for one ad
//! and one viewer and signed, so a click cannot be forged for an ad, a viewer or an
//! impression id the server never issued (the first line against click fraud).
//!
//! Layout before base64url: ad id (8, LE) | issued at ms (8, LE) | impression id
//! (16) | viewer length (1) | viewer | BLAKE3 keyed MAC of all before, first 16 bytes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The longest viewer id, in bytes.
pub const VIEWER_MAX: usize = 128;
const MAC_LEN: usize = 16;
/// The longest token, in characters.
pub const TOKEN_CHARS_MAX: usize = (8 + 8 + 16 + 1 + VIEWER_MAX + MAC_LEN).div_ceil(3) * 4;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impression {
    /// The ad shown.
    pub ad_id: i64,
    /// When it was shown.
    pub issued_ms: i64,
    /// Its id, unique per impression.
    pub id: [u8; 16],
    /// Who it was shown to.
    pub viewer: String,
}

impl Impression {
    /// The impression id as 32 hex digits.
    #[must_use]
    pub fn id_hex(&self) -> String {
        girder_sql::keys::hex(&self.id)
    }
}

/// Signs and checks tokens with one key shared by all instances.
#[derive(Clone)]
pub struct Tokens {
    key: [u8; 32],
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

impl Tokens {
    /// Tokens under `key`.
    #[must_use]
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The token of `impression` (its viewer at most [`VIEWER_MAX`] bytes).
    #[must_use]
    pub fn sign(&self, impression: &Impression) -> String {
        let viewer = &impression.viewer.as_bytes()[..impression.viewer.len().min(VIEWER_MAX)];
        let mut bytes = Vec::with_capacity(33 + viewer.len() + MAC_LEN);
        bytes.extend_from_slice(&impression.ad_id.to_le_bytes());
        bytes.extend_from_slice(&impression.issued_ms.to_le_bytes());
        bytes.extend_from_slice(&impression.id);
        bytes.push(viewer.len() as u8);
        bytes.extend_from_slice(viewer);
        let mac = blake3::keyed_hash(&self.key, &bytes);
        bytes.extend_from_slice(&mac.as_bytes()[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The impression `token` names, `None` unless it is well formed and signed with
    /// this key.
    #[must_use]
    pub fn verify(&self, token: &str) -> Option<Impression> {
        if token.len() > TOKEN_CHARS_MAX {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() < 33 + MAC_LEN {
            return None;
        }
        let (body, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        let want = blake3::keyed_hash(&self.key, body);
        // Constant time: blake3's Hash equality is, so compare through it.
        let mut full = [0u8; 32];
        full[..MAC_LEN].copy_from_slice(mac);
        full[MAC_LEN..].copy_from_slice(&want.as_bytes()[MAC_LEN..]);
        if blake3::Hash::from(full) != want {
            return None;
        }
        let ad_id = i64::from_le_bytes(body[0..8].try_into().ok()?);
        let issued_ms = i64::from_le_bytes(body[8..16].try_into().ok()?);
        let id: [u8; 16] = body[16..32].try_into().ok()?;
        let len = usize::from(body[32]);
        let viewer = body.get(33..33 + len)?;
        if body.len() != 33 + len {
            return None;
        }
        Some(Impression { ad_id, issued_ms, id, viewer: String::from_utf8(viewer.to_vec()).ok()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_any_change() {
        let tokens = Tokens::new([7; 32]);
        let imp = Impression { ad_id: 42, issued_ms: 1_000, id: [9; 16], viewer: "alice".into() };
        let t = tokens.sign(&imp);
        assert_eq!(tokens.verify(&t), Some(imp.clone()));
        assert!(Tokens::new([8; 32]).verify(&t).is_none(), "another key");
        let mut bytes = URL_SAFE_NO_PAD.decode(&t).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            assert!(tokens.verify(&URL_SAFE_NO_PAD.encode(&bytes)).is_none(), "byte {i}");
            bytes[i] ^= 1;
        }
        for bad in ["", "!!!", "AAAA", &"A".repeat(TOKEN_CHARS_MAX + 1)] {
            assert!(tokens.verify(bad).is_none());
        }
    }
}
