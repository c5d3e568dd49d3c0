//! Time-ordered UUIDs ("Pattern: UUID", version 7 per RFC 9562) that are monotonic
//! across the whole process, plus two 22-character encodings of any UUID.
//!
//! Layout of each id: 48-bit Unix-millisecond timestamp, version `7`, a 42-bit counter
//! split over `rand_a` (12 bits) and the top of `rand_b` (30 bits), variant `10`, and
//! 32 random bits (RFC 9562 §6.2, method 1 "fixed bit-length dedicated counter").

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use rand::Rng;
use uuid::Uuid;

use crate::base62::{self, DecodeError};

/// Length of [`to_base62`] and [`to_base64url`] output.
pub const ENCODED_LEN: usize = 22;

const COUNTER_BITS: u32 = 42;
const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;
/// Bits of the counter stored in `rand_b` (below the variant); the rest go in `rand_a`.
const COUNTER_LOW_BITS: u32 = 30;
const TIMESTAMP_MASK: u64 = (1 << 48) - 1;

/// The last timestamp and counter issued in this process.
struct State {
    ms: u64,
    counter: u64,
}

/// Shared by every [`UuidV7Generator`], which is what makes ordering process-wide.
static STATE: Mutex<State> = parking_lot::const_mutex(State { ms: 0, counter: 0 });

/// Issues UUIDv7s that strictly increase across the whole process: an id created
/// after another (in happens-before order, on any thread, from any generator value)
/// compares greater.
///
/// Randomness comes from the thread-local ChaCha-based generator (`rand::rng()`),
/// seeded once from the OS, rather than from a system call per id.
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidV7Generator {
    _shared: (),
}

impl UuidV7Generator {
    /// A handle on the process-wide generator.
    #[must_use]
    pub fn new() -> Self {
        Self { _shared: () }
    }

    /// The next UUIDv7.
    ///
    /// Within one millisecond the counter increments from a random start below
    /// 2^41 (leaving at least 2^41 ids of headroom); if it ever overflows, the
    /// timestamp is advanced by one millisecond instead. A clock that steps back is
    /// treated as not having moved, so order holds.
    #[must_use]
    pub fn next(&self) -> Uuid {
        let now_ms = unix_ms() & TIMESTAMP_MASK;
        let mut rng = rand::rng();
        let tail: u32 = rng.random();
        let (ms, counter) = STATE.lock().advance(now_ms, || random_counter_start(&mut rng));
        Uuid::from_u128(compose(ms, counter, tail))
    }
}

impl State {
    /// Moves to the next (timestamp, counter) pair, strictly greater than the last.
    fn advance(&mut self, now_ms: u64, fresh_counter: impl FnOnce() -> u64) -> (u64, u64) {
        if now_ms > self.ms {
            self.ms = now_ms;
            self.counter = fresh_counter();
        } else if self.counter < COUNTER_MAX {
            self.counter += 1;
        } else {
            // Counter spent within one millisecond: borrow the next millisecond rather
            // than wrap (RFC 9562 §6.2 allows running slightly ahead of the clock).
            self.ms += 1;
            self.counter = fresh_counter();
        }
        (self.ms, self.counter)
    }
}

/// A random counter start with the top bit clear, so a millisecond always has room
/// for 2^41 increments (RFC 9562 §6.2's guard against early rollover).
fn random_counter_start(rng: &mut impl Rng) -> u64 {
    rng.random::<u64>() >> (64 - (COUNTER_BITS - 1))
}

fn compose(ms: u64, counter: u64, tail: u32) -> u128 {
    let rand_a = counter >> COUNTER_LOW_BITS;
    let counter_low = counter & ((1 << COUNTER_LOW_BITS) - 1);
    (u128::from(ms) << 80)
        | (0x7 << 76)
        | (u128::from(rand_a) << 64)
        | (0b10 << 62)
        | (u128::from(counter_low) << 32)
        | u128::from(tail)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The UUID as 22 base62 digits ([`base62::ALPHABET`]); bytewise order of the text is
/// the numeric order of the UUID, so UUIDv7 text keeps creation order.
#[must_use]
pub fn to_base62(u: Uuid) -> String {
    base62::encode_u128(u.as_u128(), ENCODED_LEN).expect("22 base62 digits hold every u128")
}

/// Parses [`to_base62`] output.
///
/// # Errors
/// [`DecodeError::WrongLength`] unless exactly 22 characters, [`DecodeError::InvalidChar`],
/// or [`DecodeError::Overflow`] above the largest UUID.
pub fn from_base62(s: &str) -> Result<Uuid, DecodeError> {
    if s.len() != ENCODED_LEN {
        return Err(DecodeError::WrongLength { expected: ENCODED_LEN, found: s.len() });
    }
    base62::decode_u128(s).map(Uuid::from_u128)
}

/// The UUID's 16 bytes as unpadded base64url (RFC 4648 §5): 22 characters. Unlike
/// [`to_base62`] the text does not sort in UUID order (its alphabet is not ASCII-ordered).
#[must_use]
pub fn to_base64url(u: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(u.as_bytes())
}

/// Parses [`to_base64url`] output, rejecting non-canonical trailing bits.
///
/// # Errors
/// [`DecodeError::WrongLength`] unless exactly 22 characters; [`DecodeError::InvalidChar`]
/// for a character outside the alphabet or a last character with stray low bits.
pub fn from_base64url(s: &str) -> Result<Uuid, DecodeError> {
    if s.len() != ENCODED_LEN {
        return Err(DecodeError::WrongLength { expected: ENCODED_LEN, found: s.len() });
    }
    let mut bytes = [0u8; 16];
    match URL_SAFE_NO_PAD.decode_slice(s, &mut bytes) {
        Ok(16) => Ok(Uuid::from_bytes(bytes)),
        Ok(n) => Err(DecodeError::WrongLength { expected: ENCODED_LEN, found: n }),
        Err(base64::DecodeSliceError::DecodeError(
            base64::DecodeError::InvalidByte(index, _)
            | base64::DecodeError::InvalidLastSymbol(index, _),
        )) => {
            let ch = s
                .get(index..)
                .and_then(|rest| rest.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            Err(DecodeError::InvalidChar { ch, index })
        }
        Err(_) => Err(DecodeError::WrongLength { expected: ENCODED_LEN, found: s.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_advances_strictly_through_clock_steps_and_counter_overflow() {
        let mut state = State { ms: 100, counter: 7 };
        // Same millisecond: counter increments.
        assert_eq!(state.advance(100, || unreachable!()), (100, 8));
        // Clock stepped back: treated as the same millisecond.
        assert_eq!(state.advance(90, || unreachable!()), (100, 9));
        // New millisecond: fresh random start.
        assert_eq!(state.advance(101, || 5), (101, 5));
        // Counter overflow: the timestamp moves ahead of the clock by one.
        state.counter = COUNTER_MAX;
        assert_eq!(state.advance(101, || 3), (102, 3));
        // ... and stays ahead until the clock catches up.
        assert_eq!(state.advance(101, || unreachable!()), (102, 4));
        assert_eq!(state.advance(103, || 0), (103, 0));
    }

    #[test]
    fn counter_start_leaves_headroom() {
        let mut rng = rand::rng();
        for _ in 0..10_000 {
            assert!(random_counter_start(&mut rng) < 1 << (COUNTER_BITS - 1));
        }
    }

    #[test]
    fn compose_places_every_field() {
        let ms = 0x0123_4567_89AB;
        let counter = COUNTER_MAX - 1;
        let u = Uuid::from_u128(compose(ms, counter, 0xDEAD_BEEF));
        assert_eq!(u.get_version_num(), 7);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        let v = u.as_u128();
        assert_eq!((v >> 80) as u64, ms);
        let rand_a = ((v >> 64) & 0xFFF) as u64;
        let counter_low = ((v >> 32) & ((1 << COUNTER_LOW_BITS) - 1)) as u64;
        assert_eq!((rand_a << COUNTER_LOW_BITS) | counter_low, counter);
        assert_eq!(v as u32, 0xDEAD_BEEF);
    }
}
