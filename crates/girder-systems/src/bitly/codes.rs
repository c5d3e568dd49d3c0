//! Minting short codes (Pattern: Counter with Base62 Encoding, with counter
//! batching). Each instance leases ranges of ids from the shared counter and
//! encodes them as 7 Base62 characters.
//!
//! The catalogue notes the pattern's weakness: sequential codes are predictable
//! and reveal volume. [`CodeMode::Scrambled`] passes each id through a keyed
//! bijective permutation of `[0, 62^7)` first, so codes stay unique (a
//! permutation of unique ids) but cannot be enumerated without the key.

use girder_id::base62;
use girder_id::counter::{AllocatorConfig, AnySource, IdAllocator};
use girder_id::permute::KeyedPermutation;

use super::validate::Reserved;

/// Characters in a generated code.
pub const CODE_LEN: usize = 7;

/// How ids become codes.
#[derive(Debug)]
pub enum CodeMode {
    /// `base62(id)`, zero-padded: short, ordered, guessable.
    Sequential,
    /// `base62(permute(id))`: same length, not enumerable without the key.
    Scrambled(KeyedPermutation),
}

/// Why no code could be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// All 62^7 codes have been issued.
    #[error("the 7-character code space is exhausted")]
    Exhausted,
    /// The shared counter failed.
    #[error("id counter: {0}")]
    Counter(#[from] girder_id::counter::LeaseError),
}

/// Turns leased ids into codes.
#[derive(Debug)]
pub struct CodeMinter {
    ids: IdAllocator<AnySource>,
    mode: CodeMode,
    reserved: Reserved,
}

impl CodeMinter {
    /// A minter drawing ids from `source` in batches of `batch_size`.
    #[must_use]
    pub fn new(source: AnySource, batch_size: u64, mode: CodeMode, reserved: Reserved) -> Self {
        let ids = IdAllocator::new(source, AllocatorConfig { batch_size });
        Self { ids, mode, reserved }
    }

    /// The next code. Never returns a code twice across all instances sharing the
    /// counter; skips codes that would shadow a reserved path.
    ///
    /// # Errors
    /// The counter fails or the code space is exhausted.
    pub async fn mint(&self) -> Result<String, MintError> {
        let space = base62::capacity(CODE_LEN as u32);
        // Reserved words are a handful out of 62^7, so this loop almost never
        // turns twice; the bound only guards against a misconfigured reserved set.
        for _ in 0..64 {
            let id = self.ids.next_id().await?;
            if id >= space {
                return Err(MintError::Exhausted);
            }
            let value = match &self.mode {
                CodeMode::Sequential => id,
                CodeMode::Scrambled(permutation) => {
                    permutation.permute(id).map_err(|_| MintError::Exhausted)?
                }
            };
            let code = base62::encode_fixed(value, CODE_LEN).map_err(|_| MintError::Exhausted)?;
            if !self.reserved.contains(&code) {
                return Ok(code);
            }
        }
        Err(MintError::Exhausted)
    }
}
