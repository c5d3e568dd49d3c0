//! Where a cache's hit path reads the time: the process's one coarse clock,
//! [`girder_core::CoarseClock`], whose reading is a plain load (~1 ns) where
//! `SystemTime::now()` costs ~50 ns on the reference VM — as much as the whole
//! `quick_cache` lookup the expiry check guards.
//!
//! The cache has no clock thread of its own: the coarse clock's thread also calls each
//! cache's [`Flush`](girder_core::coarse::Flush) hook about once a second, which
//! publishes the hot counters to the `metrics` crate.

use girder_core::CoarseClock;
use girder_core::coarse::TimeCell;

/// A time no entry is fresh before: what a cache given its own clock compares against
/// on the fast path of a hit, so that every lookup of such a cache asks its clock.
static NEVER_FRESH: TimeCell = TimeCell::fixed(u64::MAX);

/// The time the fresh-value fast path of a lookup compares against: the coarse clock's,
/// or (for a cache with a clock of its own) [`NEVER_FRESH`]. A plain load from an
/// address chosen once, with no branch on which clock the cache has.
///
/// The coarse cell advances only while `coarse` (or another handle) is alive: the cache
/// keeps its handle for as long as it reads the cell.
pub(crate) fn fast_path_time(coarse: &CoarseClock, own_clock: bool) -> &'static TimeCell {
    if own_clock { &NEVER_FRESH } else { coarse.now_cell() }
}

#[cfg(test)]
mod tests {
    use girder_core::Clock;

    use super::*;

    #[test]
    fn a_cache_with_its_own_clock_never_takes_the_fast_path() {
        let coarse = CoarseClock::shared();
        assert_eq!(fast_path_time(&coarse, true).load_ms(), u64::MAX);
        let read = fast_path_time(&coarse, false).load_ms();
        assert!(read <= coarse.now_ms(), "{read} is ahead of the coarse clock");
    }
}
