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
    /// The shared counter failed; the source says how.
    #[error("id counter")]
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

#[cfg(test)]
mod tests {
    use girder_id::counter::MemorySource;

    use super::*;

    fn minter(mode: CodeMode, reserved: &[&str]) -> CodeMinter {
        let source = AnySource::Memory(MemorySource::new(0));
        CodeMinter::new(source, 3, mode, Reserved::new(reserved))
    }

    #[tokio::test]
    async fn sequential_codes_skip_reserved_words() {
        // "0000001" plays the part of a server path that a code would shadow.
        let minter = minter(CodeMode::Sequential, &["0000001"]);
        let mut codes = Vec::new();
        for _ in 0..4 {
            codes.push(minter.mint().await.expect("mint"));
        }
        assert_eq!(codes, ["0000000", "0000002", "0000003", "0000004"]);
    }

    #[tokio::test]
    async fn a_code_that_spells_a_server_path_is_skipped() {
        // The id whose code is literally "healthz" must never be issued as a code.
        let id = base62::decode("healthz").expect("valid base62");
        let source = AnySource::Memory(MemorySource::new(id - 1));
        let minter = CodeMinter::new(source, 10, CodeMode::Sequential, Reserved::server_paths());
        let first = minter.mint().await.expect("mint");
        let second = minter.mint().await.expect("mint");
        assert_eq!(base62::decode(&first).expect("code"), id - 1);
        assert_eq!(base62::decode(&second).expect("code"), id + 1);
    }

    #[tokio::test]
    async fn scrambled_codes_are_a_permutation() {
        let space = base62::capacity(CODE_LEN as u32);
        let permutation = KeyedPermutation::new([7; 16], space).expect("permutation");
        let minter = minter(CodeMode::Scrambled(permutation), &[]);
        let mut codes = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let code = minter.mint().await.expect("mint");
            assert_eq!(code.len(), CODE_LEN);
            assert!(codes.insert(code), "duplicate scrambled code");
        }
    }

    #[tokio::test]
    async fn an_exhausted_code_space_is_an_error_not_a_longer_code() {
        let space = base62::capacity(CODE_LEN as u32);
        let source = AnySource::Memory(MemorySource::new(space - 1));
        let minter = CodeMinter::new(source, 1, CodeMode::Sequential, Reserved::default());
        assert_eq!(minter.mint().await.expect("last code"), "zzzzzzz");
        assert!(matches!(minter.mint().await, Err(MintError::Exhausted)));
    }
}
