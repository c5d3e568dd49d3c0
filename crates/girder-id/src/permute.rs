//! A keyed bijection of `[0, domain)`: turns sequential counter ids into codes that
//! look random, without a lookup table and without losing uniqueness. It answers the
//! catalogue's "sequential nature may reveal business metrics" and "predictable"
//! trade-offs of "Pattern: Counter with Base62 Encoding".
//!
//! Construction: a balanced Feistel network over the smallest even bit width covering
//! the domain, with SipHash-2-4 (keyed by the 128-bit key) as the round function, and
//! cycle walking to stay inside the domain. The mapping depends only on the key, the
//! domain and the bytes hashed below, so every server instance computes the same one.
//! This hides order from casual observers; it is not an encryption scheme with a
//! security proof at these tiny block sizes.

use siphasher::sip::SipHasher24;
use thiserror::Error;

/// Feistel rounds. Eight is the usual floor for a PRP from a PRF with
/// small blocks; two more cost a few nanoseconds and buy margin.
const ROUNDS: u8 = 10;

/// Why a permutation could not be built or applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PermuteError {
    /// The domain is empty (`domain == 0`).
    #[error("permutation domain must not be empty")]
    EmptyDomain,
    /// The input is not below the domain.
    #[error("{value} is outside the permutation domain [0, {domain})")]
    OutOfDomain {
        /// The rejected input.
        value: u64,
        /// The domain size.
        domain: u64,
    },
}

/// A keyed bijection of `[0, domain)`; [`KeyedPermutation::invert`] undoes
/// [`KeyedPermutation::permute`].
///
/// The mapping for a given key and domain is part of the format: it is pinned by
/// golden tests and never changes between versions or platforms.
#[derive(Clone)]
pub struct KeyedPermutation {
    /// SipHash-2-4 with the key already mixed into its initial state.
    hasher: SipHasher24,
    domain: u64,
    /// Bits in each Feistel half; the network permutes `[0, 2^(2 * half_bits))`.
    half_bits: u32,
    half_mask: u64,
}

impl std::fmt::Debug for KeyedPermutation {
    // The key is a secret: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedPermutation")
            .field("domain", &self.domain)
            .field("half_bits", &self.half_bits)
            .finish_non_exhaustive()
    }
}

impl KeyedPermutation {
    /// A permutation of `[0, domain)` keyed by `key`.
    ///
    /// # Errors
    /// [`PermuteError::EmptyDomain`] if `domain == 0`.
    pub fn new(key: [u8; 16], domain: u64) -> Result<Self, PermuteError> {
        if domain == 0 {
            return Err(PermuteError::EmptyDomain);
        }
        // Smallest width covering the values 0..domain, rounded up to even so the two
        // halves are equal; at least 2 bits so each half has a bit to mix. The
        // network's block is then under 4 * domain, so cycle walking takes fewer than
        // 4 steps on average.
        let bits = (u64::BITS - (domain - 1).leading_zeros()).max(2);
        let half_bits = bits.div_ceil(2);
        let half_mask = if half_bits == 32 { u64::from(u32::MAX) } else { (1 << half_bits) - 1 };
        Ok(Self { hasher: SipHasher24::new_with_key(&key), domain, half_bits, half_mask })
    }

    /// The domain size: inputs and outputs are in `[0, domain)`.
    #[must_use]
    pub fn domain(&self) -> u64 {
        self.domain
    }

    /// Maps `x` to its image in `[0, domain)`.
    ///
    /// # Errors
    /// [`PermuteError::OutOfDomain`] if `x >= domain`.
    pub fn permute(&self, x: u64) -> Result<u64, PermuteError> {
        self.check(x)?;
        // Cycle walking: the network permutes a block at least as large as the domain;
        // re-applying it to out-of-domain outputs follows x's cycle to the next value
        // inside the domain, which keeps the restriction a bijection.
        let mut y = self.forward(x);
        while y >= self.domain {
            y = self.forward(y);
        }
        Ok(y)
    }

    /// Maps `y` back to the `x` with `permute(x) == y`.
    ///
    /// # Errors
    /// [`PermuteError::OutOfDomain`] if `y >= domain`.
    pub fn invert(&self, y: u64) -> Result<u64, PermuteError> {
        self.check(y)?;
        let mut x = self.backward(y);
        while x >= self.domain {
            x = self.backward(x);
        }
        Ok(x)
    }

    fn check(&self, value: u64) -> Result<(), PermuteError> {
        if value >= self.domain {
            return Err(PermuteError::OutOfDomain { value, domain: self.domain });
        }
        Ok(())
    }

    /// The round function: SipHash-2-4 over explicit little-endian bytes (never the
    /// `Hash` trait, whose byte layout is not promised to be stable), truncated to a half.
    fn round(&self, round: u8, half: u64) -> u64 {
        let mut input = [0u8; 10];
        input[0] = round;
        // The width separates domains: the same key gives unrelated mappings for
        // different block sizes.
        input[1] = self.half_bits as u8;
        input[2..].copy_from_slice(&half.to_le_bytes());
        // One-shot hashing of the whole input: the same value as write + finish, without
        // the streaming buffer.
        self.hasher.hash(&input) & self.half_mask
    }

    fn forward(&self, x: u64) -> u64 {
        let (mut left, mut right) = (x >> self.half_bits, x & self.half_mask);
        for round in 0..ROUNDS {
            (left, right) = (right, left ^ self.round(round, right));
        }
        (left << self.half_bits) | right
    }

    fn backward(&self, y: u64) -> u64 {
        let (mut left, mut right) = (y >> self.half_bits, y & self.half_mask);
        for round in (0..ROUNDS).rev() {
            (left, right) = (right ^ self.round(round, left), left);
        }
        (left << self.half_bits) | right
    }
}
