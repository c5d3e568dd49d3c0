//! Base62 text for integers ("Pattern: Counter with Base62 Encoding").
//!
//! The alphabet is in ASCII order, `0-9A-Za-z`, not the catalogue's `0-9a-zA-Z`:
//! with it, fixed-width codes ([`encode_fixed`], [`encode_u128`]) sort bytewise
//! exactly like the numbers they encode, so a database index or a sorted file list
//! keeps creation order. Minimal-width codes ([`encode`]) sort by length first.
//!
//! [`encode_buf`] and [`encode_fixed_buf`] return an [`Encoded`] on the stack, for hot
//! paths that would otherwise allocate a `String` per id.

use std::fmt;
use std::ops::Deref;

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
    /// [`encode_fixed_buf`] was asked for more digits than an [`Encoded`] holds;
    /// [`encode_fixed`] pads to any width.
    #[error("{width} digits requested, an Encoded holds at most {max}")]
    WidthUnsupported {
        /// The requested width in digits.
        width: usize,
        /// The most digits an [`Encoded`] holds ([`MAX_U64_LEN`]).
        max: usize,
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

/// The two digits of every value below 62², so encoding divides once per two digits.
static DIGIT_PAIRS: [[u8; 2]; 62 * 62] = {
    let mut table = [[0u8; 2]; 62 * 62];
    let mut i = 0;
    while i < table.len() {
        table[i] = [ALPHABET[i / 62], ALPHABET[i % 62]];
        i += 1;
    }
    table
};

/// `POW62[k]` is 62^k, the smallest value with `k + 1` digits.
const POW62: [u64; MAX_U64_LEN] = {
    let mut table = [1u64; MAX_U64_LEN];
    let mut k = 1;
    while k < table.len() {
        table[k] = table[k - 1] * 62;
        k += 1;
    }
    table
};

/// For each bit length of a value (index 0 stands for the value 0): how many digits
/// its smallest value has, and the largest value with that many digits. A bit length
/// spans less than one base62 digit, so one comparison finishes the count.
const DIGITS_BY_BIT_LEN: [(u8, u64); 65] = {
    let mut table = [(1u8, 61u64); 65];
    let mut bits = 1;
    while bits <= 64 {
        let smallest = 1u64 << (bits - 1);
        let mut digits = 1;
        while digits < MAX_U64_LEN && smallest >= POW62[digits] {
            digits += 1;
        }
        // No u64 has 12 digits: nothing compares above u64::MAX.
        let largest = if digits < MAX_U64_LEN { POW62[digits] - 1 } else { u64::MAX };
        table[bits] = (digits as u8, largest);
        bits += 1;
    }
    table
};

/// How many digits the minimal encoding of `n` has (1 for 0).
#[inline]
fn digit_count(n: u64) -> usize {
    let (digits, largest) = DIGITS_BY_BIT_LEN[(u64::BITS - n.leading_zeros()) as usize];
    usize::from(digits) + usize::from(n > largest)
}

/// The two digits of `pair < 62^2` as a little-endian `u16` (first digit low).
#[inline]
fn pair_word(pair: u32) -> u64 {
    u64::from(u16::from_le_bytes(DIGIT_PAIRS[pair as usize]))
}

/// The four digits of `x < 62^4` in the low 32 bits, little-endian (first digit low).
#[inline]
fn four_digits(x: u32) -> u64 {
    pair_word(x / 3844) | pair_word(x % 3844) << 16
}

/// Bytes in an [`Encoded`]: the 11 digits of any `u64` after 5 bytes of `'0'`, so
/// the whole buffer is ASCII and two aligned words wide.
const ENCODED_BUF_LEN: usize = 16;

/// All [`MAX_U64_LEN`] digits of `n` right-aligned in [`ENCODED_BUF_LEN`] bytes,
/// zero-padded, built as two little-endian words in registers.
///
/// The digits come in groups of four from `n / 62^4` and `n / 62^8`: two 64-bit
/// divisions (multiplications by a reciprocal, really) that do not wait for each
/// other, then independent 32-bit divisions by 62^2 and a table lookup per pair.
#[inline]
fn digit_buf(n: u64) -> [u8; ENCODED_BUF_LEN] {
    const FOUR: u64 = 62u64.pow(4);
    const EIGHT: u64 = 62u64.pow(8);
    const ZEROS: u64 = u64::from_le_bytes(*b"00000000");
    const FOUR_ZEROS: u64 = u64::from_le_bytes(*b"0000\0\0\0\0");
    let quarter = n / FOUR;
    let last = four_digits((n - quarter * FOUR) as u32);
    // Codes of up to 8 digits (Bit.ly's 7 among them) skip the second division.
    let (high, low) = if n < EIGHT {
        (ZEROS, four_digits(quarter as u32) | last << 32)
    } else {
        let top = n / EIGHT;
        let middle = four_digits((quarter - top * FOUR) as u32);
        // `top` is below 62^3, so its first pair is '0' and a digit: five '0's in all.
        let top = top as u32;
        let high = FOUR_ZEROS | pair_word(top / 3844) << 32 | pair_word(top % 3844) << 48;
        (high, middle | last << 32)
    };
    let mut buf = [0; ENCODED_BUF_LEN];
    buf[..8].copy_from_slice(&high.to_le_bytes());
    buf[8..].copy_from_slice(&low.to_le_bytes());
    buf
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
    let head = encode_buf(n as u64);
    let head = head.as_bytes();
    buf[i - head.len()..i].copy_from_slice(head);
    i - head.len()
}

/// A base62 code of a `u64`, on the stack: no allocation.
///
/// Made by [`encode_buf`] and [`encode_fixed_buf`]; read it through
/// [`Encoded::as_str`], `Deref<Target = str>`, `Display`, or [`Encoded::as_bytes`].
/// Equality, order and hash are those of the text, so fixed-width codes compare
/// like their values here too.
#[derive(Clone, Copy)]
// 8-aligned, so `as_str`'s UTF-8 check takes its word-at-a-time path.
#[repr(align(8))]
pub struct Encoded {
    /// Digits from [`ALPHABET`], right-aligned after `'0'` padding; every byte is ASCII.
    buf: [u8; ENCODED_BUF_LEN],
    /// Index of the first digit of the code; below `ENCODED_BUF_LEN`, never empty.
    start: u8,
}

impl Encoded {
    /// Wraps digits made by [`digit_buf`], keeping the last `len` of them.
    #[inline]
    fn new(buf: [u8; ENCODED_BUF_LEN], len: usize) -> Self {
        debug_assert!((1..=MAX_U64_LEN).contains(&len));
        Self { buf, start: (ENCODED_BUF_LEN - len) as u8 }
    }

    /// The code as text.
    ///
    /// Without `unsafe` a `&str` needs a UTF-8 check: this one costs a few nanoseconds
    /// per call (it checks the 16-byte buffer in two words). [`Encoded::as_bytes`]
    /// skips it.
    #[inline]
    #[must_use]
    pub fn as_str(&self) -> &str {
        let all = std::str::from_utf8(&self.buf).expect("base62 digits are ASCII");
        &all[usize::from(self.start)..]
    }

    /// The code as ASCII bytes, free of [`Encoded::as_str`]'s UTF-8 check.
    #[inline]
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[usize::from(self.start)..]
    }
}

impl Deref for Encoded {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Encoded {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Encoded {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Display for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment flags, as `str`'s Display does.
        f.pad(self.as_str())
    }
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Encoded {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Encoded {}

impl PartialEq<str> for Encoded {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Encoded {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialOrd for Encoded {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Encoded {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for Encoded {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, so an `Encoded` and its text hash alike.
        self.as_str().hash(state);
    }
}

/// Encodes `n` in the fewest digits, like [`encode`], without allocating.
#[inline]
#[must_use]
pub fn encode_buf(n: u64) -> Encoded {
    Encoded::new(digit_buf(n), digit_count(n))
}

/// Encodes `n` in exactly `width` digits, like [`encode_fixed`], without allocating.
///
/// # Errors
/// [`EncodeError::TooWide`] if `n` needs more than `width` digits, and
/// [`EncodeError::WidthUnsupported`] if `width` exceeds [`MAX_U64_LEN`] (use
/// [`encode_fixed`] for wider zero padding).
#[inline]
pub fn encode_fixed_buf(n: u64, width: usize) -> Result<Encoded, EncodeError> {
    if width > MAX_U64_LEN {
        return Err(EncodeError::WidthUnsupported { width, max: MAX_U64_LEN });
    }
    // Width 0 holds nothing, not even "0"; width 11 holds every u64.
    if width == 0 || (width < MAX_U64_LEN && n >= POW62[width]) {
        return Err(EncodeError::TooWide { value: u128::from(n), width });
    }
    Ok(Encoded::new(digit_buf(n), width))
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
    out.push_str(encode_buf(n).as_str());
}

/// Encodes `n` in exactly `width` digits, left-padded with `'0'`.
///
/// Codes of one width sort bytewise in numeric order.
///
/// # Errors
/// [`EncodeError::TooWide`] if `n` needs more than `width` digits.
pub fn encode_fixed(n: u64, width: usize) -> Result<String, EncodeError> {
    // Past 11 digits the padding is all '0': encode 11 and pad the rest.
    let code = encode_fixed_buf(n, width.min(MAX_U64_LEN))?;
    let mut out = String::with_capacity(width);
    for _ in MAX_U64_LEN..width {
        out.push('0');
    }
    out.push_str(code.as_str());
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
// Inlined so the caller dispatches on the length straight into the body for it.
#[inline]
pub fn decode(s: &str) -> Result<u64, DecodeError> {
    // One straight-line body per length covers every u64 code, minimal or fixed
    // up to 11 digits; longer input and every error take the digit-by-digit loop.
    match s.len() {
        1 => decode_short::<1>(s),
        2 => decode_short::<2>(s),
        3 => decode_short::<3>(s),
        4 => decode_short::<4>(s),
        5 => decode_short::<5>(s),
        6 => decode_short::<6>(s),
        7 => decode_short::<7>(s),
        8 => decode_short::<8>(s),
        9 => decode_short::<9>(s),
        10 => decode_short::<10>(s),
        11 => decode_short::<11>(s),
        _ => decode_loop(s),
    }
}

/// Flag in [`WEIGHTED_DIGIT`] for bytes outside the alphabet: above any sum of four
/// valid entries (< 62^4 < 2^24), and four flags still fit in a `u32`.
const WEIGHTED_INVALID: u32 = 1 << 28;

/// `WEIGHTED_DIGIT[k][byte]` is the byte's digit value times 62^k, or
/// [`WEIGHTED_INVALID`]: a group of four digits is four lookups and three additions,
/// with no multiplication and no branch.
static WEIGHTED_DIGIT: [[u32; 256]; 4] = {
    let mut table = [[WEIGHTED_INVALID; 256]; 4];
    let mut k = 0;
    while k < table.len() {
        let mut byte = 0;
        while byte < 256 {
            if DIGIT_VALUE[byte] != INVALID {
                table[k][byte] = DIGIT_VALUE[byte] as u32 * 62u32.pow(k as u32);
            }
            byte += 1;
        }
        k += 1;
    }
    table
};

/// [`decode`] for exactly `N <= MAX_U64_LEN` bytes, with no branch per digit.
///
/// The digits are right-aligned in 12 slots, three groups of four (the leading slots
/// are zero digits); each group is a sum of [`WEIGHTED_DIGIT`] lookups, and two
/// multiply-adds join the groups. Any error goes back through [`decode_loop`], which
/// reports it exactly as before.
#[inline(never)]
fn decode_short<const N: usize>(s: &str) -> Result<u64, DecodeError> {
    const SLOTS: usize = 12;
    const FOUR: u64 = 62u64.pow(4);
    let Ok(bytes) = <&[u8; N]>::try_from(s.as_bytes()) else {
        return decode_loop(s);
    };
    let mut groups = [0u32; SLOTS / 4];
    for (i, &byte) in bytes.iter().enumerate() {
        let slot = SLOTS - N + i;
        groups[slot / 4] += WEIGHTED_DIGIT[3 - slot % 4][usize::from(byte)];
    }
    let [top, middle, low] = groups;
    // A valid group is below 2^24 and one holding an invalid byte is at least 2^28,
    // so one test of the OR covers every byte.
    let invalid = (top | middle | low) >= WEIGHTED_INVALID;
    let rest = u64::from(middle) * FOUR + u64::from(low); // the last 8 digits
    let (n, overflow) = if N < MAX_U64_LEN {
        // Up to 10 valid digits the top group is below 62^2 and nothing overflows;
        // wrapping only matters for invalid input, whose result is discarded.
        (u64::from(top).wrapping_mul(FOUR * FOUR).wrapping_add(rest), false)
    } else {
        let (high, over_mul) = u64::from(top).overflowing_mul(FOUR * FOUR);
        let (n, over_add) = high.overflowing_add(rest);
        (n, over_mul | over_add)
    };
    if invalid || overflow { decode_loop(s) } else { Ok(n) }
}

/// [`decode`] digit by digit: for long input, and to report the first error exactly.
#[cold]
fn decode_loop(s: &str) -> Result<u64, DecodeError> {
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
