//! What a cache key must be: hashable for L1, and writable as text (and readable back)
//! for L2 keys and cross-instance invalidation messages.

use std::hash::Hash;
use std::sync::Arc;

/// A cache key. L1 uses `Hash + Eq`; L2 and invalidation messages use the text form.
///
/// Contract: `from_text(t)` returns the key whose `write_text` wrote `t`, for every
/// key, so that an invalidation published by one instance names the same key in
/// every other instance. Texts of distinct keys must differ.
pub trait CacheKey: Hash + Eq + Clone + Send + Sync + 'static {
    /// Appends the key's text form to `out`.
    fn write_text(&self, out: &mut String);

    /// Parses a text written by [`CacheKey::write_text`]; `None` if it is not one.
    fn from_text(text: &str) -> Option<Self>;
}

impl CacheKey for String {
    fn write_text(&self, out: &mut String) {
        out.push_str(self);
    }

    fn from_text(text: &str) -> Option<Self> {
        Some(text.to_owned())
    }
}

impl CacheKey for Arc<str> {
    fn write_text(&self, out: &mut String) {
        out.push_str(self);
    }

    fn from_text(text: &str) -> Option<Self> {
        Some(Arc::from(text))
    }
}

macro_rules! integer_keys {
    ($($t:ty),*) => {$(
        impl CacheKey for $t {
            fn write_text(&self, out: &mut String) {
                use std::fmt::Write as _;
                // Writing to a String cannot fail.
                let _ = write!(out, "{self}");
            }

            fn from_text(text: &str) -> Option<Self> {
                // `parse` accepts a leading '+', which write_text never produces;
                // refuse it so every key has exactly one text.
                if text.starts_with('+') { return None; }
                text.parse().ok()
            }
        }
    )*};
}

integer_keys!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<K: CacheKey + std::fmt::Debug>(key: &K) {
        let mut text = String::new();
        key.write_text(&mut text);
        assert_eq!(K::from_text(&text).as_ref(), Some(key), "{text:?}");
    }

    #[test]
    fn keys_round_trip_through_text() {
        round_trip(&String::from("abc 12 \u{e9}"));
        round_trip(&Arc::<str>::from("x"));
        round_trip(&u64::MAX);
        round_trip(&-5_i64);
        round_trip(&7_u32);
        assert_eq!(u64::from_text("+7"), None);
        assert_eq!(u64::from_text("x"), None);
    }
}
