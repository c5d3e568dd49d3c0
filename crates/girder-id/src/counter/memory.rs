//! The in-process counter: one atomic, for single-process deployments and tests.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ID_LIMIT, LeaseError, RangeSource, check_lease_size};

/// An in-process [`RangeSource`]: an atomic counter starting at a given id.
///
/// Uniqueness holds within this value only; a restart starts over at `start`.
#[derive(Debug)]
pub struct MemorySource {
    next: AtomicU64,
}

impl MemorySource {
    /// A counter whose first lease starts at `start`.
    #[must_use]
    pub fn new(start: u64) -> Self {
        Self { next: AtomicU64::new(start) }
    }

    /// The id the next lease will start at.
    #[must_use]
    pub fn peek(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    fn lease_now(&self, n: u64) -> Result<Range<u64>, LeaseError> {
        check_lease_size(n)?;
        // fetch_update rather than fetch_add: a failed lease must not move the counter.
        let start = self
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                next.checked_add(n).filter(|&end| end <= ID_LIMIT)
            })
            .map_err(|_| LeaseError::Exhausted)?;
        Ok(start..start + n)
    }
}

impl Default for MemorySource {
    fn default() -> Self {
        Self::new(0)
    }
}

impl RangeSource for MemorySource {
    async fn lease(&self, n: u64) -> Result<Range<u64>, LeaseError> {
        self.lease_now(n)
    }
}
