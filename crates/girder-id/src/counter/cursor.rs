//! The allocator's lock-free fast path: the current lease as one atomic word plus the
//! lease's first id, so taking an id is a load, a load and a compare-and-swap.
//!
//! Word layout: `generation << 32 | taken`, where `taken` counts the ids handed out
//! from the current lease and `generation` counts installed leases. The first id of
//! lease `g` lives in `bases[g % 2]`.
//!
//! Why it never hands out an id twice or outside a lease:
//! - Within one generation, `taken` only grows, by CAS, and only while below the lease
//!   length, so each offset is claimed once and stays inside the lease.
//! - A lease is installed only when the previous one is used up, by one installer at a
//!   time (the allocator's state mutex), which writes `bases[g % 2]` and then publishes
//!   the word with the new generation (release).
//! - A taker reads the word, then the base. If the base it read belongs to a later
//!   generation `g + 2` (same slot), that write happened after generation `g + 1` was
//!   published, so the taker's CAS sees a newer word and fails; it never pairs an offset
//!   of lease `g` with the base of another lease. Generations wrap after 2^32 leases, so
//!   confusing two of them would need a taker stalled between two loads for 2^32
//!   backend round trips.

use std::sync::atomic::{AtomicU64, Ordering};

const TAKEN_MASK: u64 = u32::MAX as u64;

/// The atomic operations the cursor needs, so tests can run it on loom's model-checked
/// atomics while the real code uses `std`'s.
pub(super) trait Atomic64 {
    fn new(value: u64) -> Self;
    fn load(&self, order: Ordering) -> u64;
    fn store(&self, value: u64, order: Ordering);
    fn compare_exchange_weak(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
}

impl Atomic64 for AtomicU64 {
    #[inline]
    fn new(value: u64) -> Self {
        AtomicU64::new(value)
    }
    #[inline]
    fn load(&self, order: Ordering) -> u64 {
        AtomicU64::load(self, order)
    }
    #[inline]
    fn store(&self, value: u64, order: Ordering) {
        AtomicU64::store(self, value, order);
    }
    #[inline]
    fn compare_exchange_weak(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        AtomicU64::compare_exchange_weak(self, current, new, success, failure)
    }
}

/// The current lease: which one, how much of it is taken, and where it starts.
#[derive(Debug)]
pub(super) struct Cursor<A = AtomicU64> {
    word: A,
    bases: [A; 2],
}

impl<A: Atomic64> Cursor<A> {
    /// A cursor with no lease: generation 0 with the maximum count taken, which is
    /// "used up" whatever the lease length.
    pub(super) fn empty() -> Self {
        Self { word: A::new(TAKEN_MASK), bases: [A::new(0), A::new(0)] }
    }

    /// Claims the next id of the current lease, whose length is `len`, or `None` if
    /// it is used up.
    #[inline]
    pub(super) fn try_take(&self, len: u64) -> Option<u64> {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let taken = word & TAKEN_MASK;
            if taken >= len {
                return None;
            }
            let base = self.bases[((word >> 32) & 1) as usize].load(Ordering::Acquire);
            // Relaxed on success is enough: uniqueness comes from the CAS itself, and the
            // base was validated by the acquire loads above (see the module doc).
            match self.word.compare_exchange_weak(
                word,
                word + 1,
                Ordering::Relaxed,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(base + taken),
                Err(current) => word = current,
            }
        }
    }

    /// Installs the lease starting at `base`, with its first `taken` ids already used.
    ///
    /// The caller must be the only installer (it holds the allocator's state mutex) and
    /// the current lease, of length `len`, must be used up.
    pub(super) fn install(&self, base: u64, taken: u64, len: u64) {
        let word = self.word.load(Ordering::Acquire);
        assert!(word & TAKEN_MASK >= len, "a lease was installed over one with ids left");
        debug_assert!(taken <= len && len <= TAKEN_MASK);
        let generation = ((word >> 32) + 1) & TAKEN_MASK;
        self.bases[(generation & 1) as usize].store(base, Ordering::Release);
        self.word.store((generation << 32) | taken, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn takes_each_offset_once_then_reports_empty() {
        let cursor = Cursor::<AtomicU64>::empty();
        assert_eq!(cursor.try_take(10), None);
        cursor.install(100, 1, 3);
        assert_eq!(cursor.try_take(3), Some(101));
        assert_eq!(cursor.try_take(3), Some(102));
        assert_eq!(cursor.try_take(3), None);
        cursor.install(7, 0, 3);
        assert_eq!(
            (0..4).map(|_| cursor.try_take(3)).collect::<Vec<_>>(),
            [Some(7), Some(8), Some(9), None]
        );
    }

    #[test]
    fn installing_over_a_live_lease_is_refused() {
        let cursor = Cursor::<AtomicU64>::empty();
        cursor.install(0, 0, 5);
        let result = std::panic::catch_unwind(|| cursor.install(10, 0, 5));
        assert!(result.is_err());
    }

    /// Takers race an installer that refills as soon as a lease runs out, with leases
    /// at scattered (non-monotonic) bases; every id must come out exactly once.
    #[test]
    fn concurrent_takers_and_installer_never_duplicate() {
        const LEN: u64 = 5;
        const LEASES: u64 = 20_000;
        let cursor = Arc::new(Cursor::<AtomicU64>::empty());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let takers: Vec<_> = (0..3)
            .map(|_| {
                let (cursor, done) = (Arc::clone(&cursor), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    while !done.load(Ordering::Acquire) {
                        ids.extend(cursor.try_take(LEN));
                    }
                    ids.extend(std::iter::from_fn(|| cursor.try_take(LEN)));
                    ids
                })
            })
            .collect();
        // Bases jump around so that an offset paired with the wrong base would collide.
        let base_of = |lease: u64| (lease * 7_919 % LEASES) * LEN;
        for lease in 0..LEASES {
            while cursor.try_peek_left(LEN) > 0 {
                std::hint::spin_loop();
            }
            cursor.install(base_of(lease), 0, LEN);
        }
        done.store(true, Ordering::Release);
        let mut all: Vec<u64> = takers.into_iter().flat_map(|t| t.join().unwrap()).collect();
        all.sort_unstable();
        if let Some(w) = all.windows(2).find(|w| w[0] == w[1]) {
            panic!("id {} handed out twice", w[0]);
        }
        // Distinct, so equal to 0..LEASES * LEN exactly when the count and bounds match.
        assert_eq!(all.len() as u64, LEASES * LEN, "ids lost");
        assert_eq!((all[0], all[all.len() - 1]), (0, LEASES * LEN - 1));
    }

    impl<A: Atomic64> Cursor<A> {
        /// Ids left in the current lease (tests only).
        fn try_peek_left(&self, len: u64) -> u64 {
            len.saturating_sub(self.word.load(Ordering::Acquire) & TAKEN_MASK)
        }
    }

    impl Atomic64 for loom::sync::atomic::AtomicU64 {
        fn new(value: u64) -> Self {
            loom::sync::atomic::AtomicU64::new(value)
        }
        fn load(&self, order: Ordering) -> u64 {
            loom::sync::atomic::AtomicU64::load(self, order)
        }
        fn store(&self, value: u64, order: Ordering) {
            loom::sync::atomic::AtomicU64::store(self, value, order);
        }
        fn compare_exchange_weak(
            &self,
            current: u64,
            new: u64,
            success: Ordering,
            failure: Ordering,
        ) -> Result<u64, u64> {
            loom::sync::atomic::AtomicU64::compare_exchange_weak(
                self, current, new, success, failure,
            )
        }
    }

    /// Model check: a taker races an installer that drains each lease and installs the
    /// next, three times, so lease generations 1 and 3 reuse the same base slot — the
    /// case where pairing an offset with the wrong base would duplicate an id. Loom runs
    /// every interleaving the memory orderings allow.
    #[test]
    fn loom_takers_never_pair_an_offset_with_another_lease() {
        loom::model(|| {
            const LEN: u64 = 2;
            let cursor = loom::sync::Arc::new(Cursor::<loom::sync::atomic::AtomicU64>::empty());
            cursor.install(100, 0, LEN);
            let taker = {
                let cursor = loom::sync::Arc::clone(&cursor);
                loom::thread::spawn(move || {
                    [cursor.try_take(LEN), cursor.try_take(LEN)]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                })
            };
            let mut ids = Vec::new();
            for base in [200, 300] {
                while let Some(id) = cursor.try_take(LEN) {
                    ids.push(id);
                }
                cursor.install(base, 0, LEN);
            }
            ids.extend(taker.join().unwrap());
            ids.sort_unstable();
            let before = ids.len();
            ids.dedup();
            assert_eq!(ids.len(), before, "an id was handed out twice: {ids:?}");
            assert!(ids.iter().all(|id| [100, 101, 200, 201, 300, 301].contains(id)), "{ids:?}");
            // Leases 100 and 200 were drained before the next install.
            assert!(ids.starts_with(&[100, 101, 200, 201]), "{ids:?}");
        });
    }
}
