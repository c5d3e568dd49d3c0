//! Random keys every instance must share (MAC keys for cursors and admissions, the
//! code permutation's key): generated once, stored as hex in the system's settings
//! table, and read back by every instance.

/// A fresh random key.
pub(crate) fn fresh<const N: usize>() -> [u8; N] {
    std::array::from_fn(|_| rand::random())
}

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `2 * N` hex digits as `N` bytes; anything else is `None`.
pub(crate) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
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
