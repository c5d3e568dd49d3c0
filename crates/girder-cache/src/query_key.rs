//! Cache keys for query results ("Pattern: Query Result Caching"): a 256-bit BLAKE3
//! digest of the canonical query text and its canonically serialized parameters, so
//! identical queries from different callers share one entry.
//!
//! Canonical query text: runs of ASCII whitespace collapse to one space and the ends
//! are trimmed — but only *outside* string literals, quoted identifiers and comments,
//! which are copied byte for byte (`'a  b'` and `'a b'` are different queries). The
//! scanner knows `'…'`, `"…"`, `` `…` ``, `[…]`, `$tag$…$tag$`, `-- …`, `# …` and
//! `/* … */` across dialects, recognising them generously (a `#` or `$x$` that is not a
//! comment or quote in your dialect only means less normalisation). A backslash inside
//! quotes makes the rest of the text verbatim, since dialects disagree on whether it
//! escapes. The rule throughout: when unsure, copy verbatim. A misread can then only
//! give two equivalent queries different keys (a lost hit), never give two different
//! queries one key.
//!
//! Canonical parameters: the parameters are serialized with serde into JSON values and
//! written with object keys sorted, so a `HashMap` gives the same key whatever its
//! iteration order. Values that JSON cannot tell apart share a key: `1u8` and `1u64`
//! (the same number, which is intended), `NaN` and `None` (both `null`).
//!
//! Collisions: distinct canonical inputs collide only if BLAKE3 does (a 2^-128
//! birthday bound at 256 bits; no attacker can construct one), so one caller can never
//! be served another query's rows by a crafted parameter.

use std::fmt;

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::CacheKey;

/// Domain separation: a BLAKE3 hash of anything else never equals a query key.
const KEY_CONTEXT: &str = "girder-cache 2025 query result key v1";

/// The key of one query's result: BLAKE3 of the canonical query text and parameters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryKey([u8; 32]);

/// Why a [`QueryKey`] could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QueryKeyError {
    /// The parameters could not be serialized (a map with non-string keys, or a
    /// `Serialize` impl that failed).
    #[error("query parameters cannot be serialized: {0}")]
    Params(#[from] serde_json::Error),
}

impl QueryKey {
    /// The key of `query` run with `params` (anything serde can serialize: a tuple, a
    /// struct, a slice, a `BTreeMap` or `HashMap` of named parameters).
    ///
    /// # Errors
    /// [`QueryKeyError::Params`] when `params` cannot be serialized.
    pub fn new<P: Serialize + ?Sized>(query: &str, params: &P) -> Result<Self, QueryKeyError> {
        let params = serde_json::to_value(params)?;
        let mut canonical = Vec::with_capacity(64);
        write_canonical(&params, &mut canonical);
        let query = canonical_query(query);
        let mut hasher = blake3::Hasher::new_derive_key(KEY_CONTEXT);
        // Length-prefix the query so (query, params) pairs cannot shift bytes between them.
        hasher.update(&(query.len() as u64).to_le_bytes());
        hasher.update(query.as_bytes());
        hasher.update(&canonical);
        Ok(Self(*hasher.finalize().as_bytes()))
    }

    /// The 32 digest bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key from its 32 digest bytes (as returned by [`QueryKey::as_bytes`]).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for QueryKey {
    /// 64 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for QueryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueryKey({self})")
    }
}

impl CacheKey for QueryKey {
    fn write_text(&self, out: &mut String) {
        use fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = write!(out, "{self}");
    }

    fn from_text(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0_u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            *byte = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
        }
        Some(Self(bytes))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// JSON with object keys sorted and no insignificant whitespace: one text per value,
/// whatever order a map was built or iterated in.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(key, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

fn write_json_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is deterministic; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The canonical form of a query text: ASCII whitespace runs outside literals,
/// quoted identifiers and comments become one space; the ends are trimmed. See the
/// module documentation for what is recognised.
#[must_use]
pub fn canonical_query(query: &str) -> String {
    let bytes = query.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut pending_space = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            pending_space = true;
            i += 1;
            continue;
        }
        // A line comment's newline already separates it from what follows.
        if pending_space && !out.is_empty() && out.last() != Some(&b'\n') {
            out.push(b' ');
        }
        pending_space = false;
        let end = match c {
            b'\'' | b'"' | b'`' => quoted_end(bytes, i, c),
            b'[' => quoted_end(bytes, i, b']'),
            b'-' if bytes.get(i + 1) == Some(&b'-') => line_comment_end(bytes, i),
            b'#' => line_comment_end(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'*') => block_comment_end(bytes, i),
            b'$' => dollar_quoted_end(bytes, i).unwrap_or(i + 1),
            _ => i + 1,
        };
        out.extend_from_slice(&bytes[i..end]);
        i = end;
    }
    // Token boundaries are ASCII and every other byte is copied, so `out` is whole
    // UTF-8 sequences of the input.
    String::from_utf8(out).unwrap_or_else(|_| query.to_owned())
}

/// End (exclusive) of the quoted run starting at `start` and closed by `close`:
/// through the closing quote, where a doubled quote escapes; the rest of the text if
/// unterminated or if a backslash makes the end dialect-dependent.
fn quoted_end(bytes: &[u8], start: usize, close: u8) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return bytes.len(),
            c if c == close => {
                if bytes.get(i + 1) == Some(&close) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// End of a `--` or `#` comment: through its newline, whose meaning (end of comment)
/// must survive; the rest of the text if it has none.
fn line_comment_end(bytes: &[u8], start: usize) -> usize {
    bytes[start..].iter().position(|&c| c == b'\n').map_or(bytes.len(), |n| start + n + 1)
}

/// End of a `/* … */` comment (not nested): through `*/`, or the rest of the text.
fn block_comment_end(bytes: &[u8], start: usize) -> usize {
    bytes[start + 2..].windows(2).position(|w| w == b"*/").map_or(bytes.len(), |n| start + n + 4)
}

/// End of a `$tag$ … $tag$` string starting at `start`, or `None` if the `$` does not
/// open one (a positional parameter like `$1` not followed by a closing `$`).
fn dollar_quoted_end(bytes: &[u8], start: usize) -> Option<usize> {
    let tag_len = bytes[start + 1..].iter().position(|&c| c == b'$')?;
    let tag = &bytes[start + 1..start + 1 + tag_len];
    // Generous: PostgreSQL tags cannot start with a digit, but treating `$1$` as a
    // quote only copies more verbatim. Non-ASCII bytes are letters of a Unicode tag.
    if !tag.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80) {
        return None;
    }
    let delimiter = &bytes[start..start + tag_len + 2];
    let body = start + delimiter.len();
    Some(
        bytes[body..]
            .windows(delimiter.len())
            .position(|w| w == delimiter)
            .map_or(bytes.len(), |n| body + n + delimiter.len()),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    fn check(query: &str, want: &str) {
        assert_eq!(canonical_query(query), want, "{query:?}");
        assert_eq!(canonical_query(want), want, "canonical form of {want:?} is not a fixed point");
    }

    #[test]
    fn whitespace_collapses_outside_literals_and_comments_only() {
        check("  SELECT  *\n\tFROM t\r\n WHERE a = $1  ", "SELECT * FROM t WHERE a = $1");
        check("SELECT 'a   b' ,  \"x  y\"", "SELECT 'a   b' , \"x  y\"");
        check("SELECT 'it''s  ok'   FROM t", "SELECT 'it''s  ok' FROM t");
        check("SELECT 'a\\'  b'   x", "SELECT 'a\\'  b'   x");
        check("SELECT  [my  col]   FROM t", "SELECT [my  col] FROM t");
        check("SELECT $\u{e9}$ a  b $\u{e9}$   x", "SELECT $\u{e9}$ a  b $\u{e9}$ x");
        check("SELECT `c  d`   FROM t", "SELECT `c  d` FROM t");
        check("SELECT 1 -- note  here\n   , 2", "SELECT 1 -- note  here\n, 2");
        check("SELECT 1 # mysql  note\n , 2", "SELECT 1 # mysql  note\n, 2");
        check("SELECT /* a   b */   1", "SELECT /* a   b */ 1");
        check("SELECT $$a   b$$   ,  $t$ x  $$ y $t$", "SELECT $$a   b$$ , $t$ x  $$ y $t$");
        check("SELECT $1 ,   $2", "SELECT $1 , $2");
        check("SELECT 'unterminated   text", "SELECT 'unterminated   text");
        check("SELECT caf\u{e9}   \u{a0}x", "SELECT caf\u{e9} \u{a0}x");
        check("", "");
    }

    #[test]
    fn a_comment_ending_at_a_newline_stays_distinct_from_one_running_on() {
        assert_ne!(
            canonical_query("SELECT a -- c\nFROM t"),
            canonical_query("SELECT a -- c FROM t")
        );
    }

    #[test]
    fn keys_depend_on_canonical_query_and_params_only() {
        let key = |q: &str, p: &dyn erased::Params| p.key(q);
        let base = key("SELECT * FROM links WHERE code = $1", &("abc",));
        assert_eq!(base, key("SELECT *\n  FROM links\n WHERE code = $1", &("abc",)));
        assert_ne!(base, key("SELECT * FROM links WHERE code = $1", &("abd",)));
        assert_ne!(base, key("SELECT * FROM links WHERE code = $2", &("abc",)));
        assert_ne!(base, key("SELECT * FROM links WHERE code = $1", &(1,)));
        assert_ne!(key("SELECT 'a  b'", &()), key("SELECT 'a b'", &()));
        // The query/params boundary cannot shift.
        assert_ne!(key("SELECT 1", &("x",)), key("SELECT 1\"x\"", &()));

        let mut hash: HashMap<String, i64> = HashMap::new();
        let mut tree = BTreeMap::new();
        for i in 0..50 {
            hash.insert(format!("p{i}"), i);
            tree.insert(format!("p{i}"), i);
        }
        assert_eq!(key("q", &hash), key("q", &tree));
    }

    #[test]
    fn text_form_round_trips_and_rejects_garbage() {
        let key = QueryKey::new("SELECT 1", &[1, 2, 3]).unwrap();
        let mut text = String::new();
        key.write_text(&mut text);
        assert_eq!(text.len(), 64);
        assert_eq!(QueryKey::from_text(&text), Some(key));
        assert_eq!(QueryKey::from_bytes(*key.as_bytes()), key);
        assert_eq!(QueryKey::from_text(&text[1..]), None);
        assert_eq!(QueryKey::from_text(&text.to_uppercase()), None);
        assert!(format!("{key:?}").starts_with("QueryKey("));
    }

    #[test]
    fn unserializable_params_are_an_error() {
        let mut bad = HashMap::new();
        bad.insert((1, 2), "tuple keys are not JSON object keys");
        assert!(matches!(QueryKey::new("q", &bad), Err(QueryKeyError::Params(_))));
    }

    /// Lets the table above mix parameter types.
    mod erased {
        use super::super::QueryKey;

        pub(super) trait Params {
            fn key(&self, query: &str) -> QueryKey;
        }

        impl<T: serde::Serialize> Params for T {
            fn key(&self, query: &str) -> QueryKey {
                QueryKey::new(query, self).unwrap()
            }
        }
    }
}
