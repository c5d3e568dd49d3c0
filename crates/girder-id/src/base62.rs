//! Base62 text for integers ("Pattern: Counter with Base62 Encoding").
//!
//! The alphabet is in ASCII order, `0-9A-Za-z`, not the catalogue's `0-9a-zA-Z`:
//! with it, fixed-width codes ([`encode_fixed`], [`encode_u128`]) sort bytewise
//! exactly like the numbers they encode, so a database index or a sorted file list
//! keeps creation order. Minimal-width codes ([`encode`]) sort by length first.

use thiserror::Error;

/// The 62 digits, in ASCII order, so fixed-width codes sort like their values.
pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The longest minimal encoding of a `u64` (`u64::MAX` is 11 digits).
pub const MAX_U64_LEN: usize = 11;

/// The longest minimal encoding of a `u128` (`u128::MAX` is 22 digits).
pub const MAX_U128_LEN: usize = 22;

/// Sentinel in [`DIGIT_VALUE`] for bytes outside the alphabet.
const INVALID: u8 = u8::MAX;

/// Byte → digit value, [`INVALID`] for anything else; one table lookup per byte.
const DIGIT_VALUE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Why a number could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The value needs more digits than the requested fixed width.
    #[error("{value} does not fit in {width} base62 digits")]
    TooWide {
        /// The value that was to be encoded.
        value: u128,
        /// The requested width in digits.
        width: usize,
    },
}

/// Why a string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input was empty.
    #[error("empty base62 string")]
    Empty,
    /// A character outside `0-9A-Za-z`; `index` is its byte offset.
    #[error("invalid base62 character {ch:?} at byte {index}")]
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the input.
        index: usize,
    },
    /// The value does not fit in the target integer type.
    #[error("base62 value overflows the target integer")]
    Overflow,
    /// A fixed-width format received a string of another length.
    #[error("expected {expected} characters, found {found}")]
    WrongLength {
        /// The length the format requires.
        expected: usize,
        /// The length received.
        found: usize,
    },
}

/// The two digits of every value below 62², so encoding divides once per two digits:
/// the divisions form a dependency chain, and halving it roughly halves encode time.
const DIGIT_PAIRS: [[u8; 2]; 62 * 62] = {
    let mut table = [[0u8; 2]; 62 * 62];
    let mut i = 0;
    while i < table.len() {
        table[i] = [ALPHABET[i / 62], ALPHABET[i % 62]];
        i += 1;
    }
    table
};

/// Writes the minimal digits of `n` into the tail of `buf`, returning the start index.
fn digits_u64<const N: usize>(mut n: u64, buf: &mut [u8; N]) -> usize {
    let mut i = buf.len();
    while n >= 62 * 62 {
        let pair = DIGIT_PAIRS[(n % (62 * 62)) as usize];
        n /= 62 * 62;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&pair);
    }
    let pair = DIGIT_PAIRS[n as usize];
    if n >= 62 {
        i -= 2;
        buf[i..i + 2].copy_from_slice(&pair);
    } else {
        i -= 1;
        buf[i] = pair[1];
    }
    i
}

/// Writes the minimal digits of `n` into the tail of `buf`, returning the start index.
fn digits_u128(mut n: u128, buf: &mut [u8; MAX_U128_LEN]) -> usize {
    // Peel off u64-sized chunks of 10 digits (62^10 < 2^64) so the inner loop runs
    // on native 64-bit division instead of the much slower u128 division.
    const CHUNK: u128 = 62u128.pow(10);
    let mut i = buf.len();
    while n >= CHUNK {
        let mut low = (n % CHUNK) as u64;
        n /= CHUNK;
        for _ in 0..5 {
            i -= 2;
            buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[(low % (62 * 62)) as usize]);
            low /= 62 * 62;
        }
    }
    // The rest is below 62^10 < 2^64; write it through the u64 path into the front.
    let mut head = [0u8; MAX_U64_LEN];
    let start = digits_u64(n as u64, &mut head);
    let len = head.len() - start;
    buf[i - len..i].copy_from_slice(&head[start..]);
    i - len
}

/// Pushes `digits` (all from [`ALPHABET`]) onto `out`, left-padded with `'0'` to `width`.
fn push_padded(digits: &[u8], width: usize, out: &mut String) {
    out.reserve(width.max(digits.len()));
    for _ in digits.len()..width {
        out.push('0');
    }
    // Checking at most 22 ASCII bytes is a few instructions, and keeps the crate free
    // of `unsafe` (`from_utf8_unchecked`).
    out.push_str(std::str::from_utf8(digits).expect("base62 digits are ASCII"));
}

/// Encodes `n` in the fewest digits: `"0"` for 0, `"LygHa16AHYF"` for `u64::MAX`.
#[must_use]
pub fn encode(n: u64) -> String {
    let mut out = String::with_capacity(MAX_U64_LEN);
    encode_into(n, &mut out);
    out
}

/// Appends the minimal encoding of `n` to `out`; allocates only if `out` must grow.
pub fn encode_into(n: u64, out: &mut String) {
    let mut buf = [0u8; MAX_U64_LEN];
    let start = digits_u64(n, &mut buf);
    push_padded(&buf[start..], 0, out);
}

/// Encodes `n` in exactly `width` digits, left-padded with `'0'`.
///
/// Codes of one width sort bytewise in numeric order.
///
/// # Errors
/// [`EncodeError::TooWide`] if `n` needs more than `width` digits.
pub fn encode_fixed(n: u64, width: usize) -> Result<String, EncodeError> {
    let mut buf = [0u8; MAX_U64_LEN];
    let start = digits_u64(n, &mut buf);
    let digits = &buf[start..];
    if digits.len() > width {
        return Err(EncodeError::TooWide { value: u128::from(n), width });
    }
    let mut out = String::with_capacity(width);
    push_padded(digits, width, &mut out);
    Ok(out)
}

/// Encodes a 128-bit value in exactly `width` digits (22 fit every `u128`).
///
/// # Errors
/// [`EncodeError::TooWide`] if `n` needs more than `width` digits.
pub fn encode_u128(n: u128, width: usize) -> Result<String, EncodeError> {
    let mut buf = [0u8; MAX_U128_LEN];
    let start = digits_u128(n, &mut buf);
    let digits = &buf[start..];
    if digits.len() > width {
        return Err(EncodeError::TooWide { value: n, width });
    }
    let mut out = String::with_capacity(width);
    push_padded(digits, width, &mut out);
    Ok(out)
}

/// Looks up the digit at byte `index` of `s`, reporting the character if invalid.
fn digit(s: &str, index: usize) -> Result<u8, DecodeError> {
    let byte = s.as_bytes()[index];
    let value = DIGIT_VALUE[usize::from(byte)];
    if value == INVALID {
        // Every earlier byte was an ASCII digit, so `index` is a char boundary.
        let ch = s[index..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
        return Err(DecodeError::InvalidChar { ch, index });
    }
    Ok(value)
}

/// Decodes a base62 string of any width (leading `'0'`s allowed) into a `u64`.
///
/// # Errors
/// [`DecodeError::Empty`], [`DecodeError::InvalidChar`] (the first one), or
/// [`DecodeError::Overflow`] if the value is 2^64 or more.
pub fn decode(s: &str) -> Result<u64, DecodeError> {
    if s.is_empty() {
        return Err(DecodeError::Empty);
    }
    // Ten digits cannot overflow (62^10 < 2^64), so only longer input pays for checks.
    let unchecked = s.len().min(10);
    let mut n: u64 = 0;
    for index in 0..unchecked {
        n = n * 62 + u64::from(digit(s, index)?);
    }
    for index in unchecked..s.len() {
        let d = digit(s, index)?;
        n = n
            .checked_mul(62)
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or(DecodeError::Overflow)?;
    }
    Ok(n)
}

/// Decodes a base62 string of any width into a `u128`.
///
/// # Errors
/// As [`decode`], with overflow at 2^128.
pub fn decode_u128(s: &str) -> Result<u128, DecodeError> {
    if s.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut n: u128 = 0;
    for index in 0..s.len() {
        let d = digit(s, index)?;
        n = n
            .checked_mul(62)
            .and_then(|n| n.checked_add(u128::from(d)))
            .ok_or(DecodeError::Overflow)?;
    }
    Ok(n)
}

/// How many distinct values `width` digits hold: 62^width, saturating at `u64::MAX`.
#[must_use]
pub const fn capacity(width: u32) -> u64 {
    let mut acc: u64 = 1;
    let mut i = 0;
    // Stop once saturated: 62^11 already exceeds u64, and width may be u32::MAX.
    while i < width && acc != u64::MAX {
        acc = acc.saturating_mul(62);
        i += 1;
    }
    acc
}
