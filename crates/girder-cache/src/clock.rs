//! The default clock of a cache: wall time cached in an atomic by one process-wide
//! background thread, so an L1 hit reads time with a plain load.
//!
//! Why: on the reference VM `SystemTime::now()` costs ~50 ns and even
//! `CLOCK_REALTIME_COARSE` ~45 ns inside a lookup loop — as much as the whole
//! `quick_cache` lookup the expiry check guards. A load of a cached value costs ~1 ns.
//!
//! The thread (`girder-cache-tick`) wakes every [`TICK`], stores the time, and once a
//! second flushes the caches' hot counters to the `metrics` crate. It starts with the
//! first [`TickingClock`] and is stopped and joined when the last one is dropped; it is
//! never detached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use girder_core::{Clock, SystemClock};
use parking_lot::{Condvar, Mutex};

/// How often the cached time is refreshed: the resolution of expiry decisions.
pub const TICK: Duration = Duration::from_millis(1);

/// Hot counters are flushed to `metrics` every this many ticks (about a second).
const FLUSH_EVERY_TICKS: u64 = 1_000;

/// Something the tick thread calls about once a second.
pub(crate) trait Flush: Send + Sync {
    /// Publishes whatever accumulated since the last call.
    fn flush(&self);
}

/// Wall-clock milliseconds as of the last tick of the shared background thread.
///
/// Reads are a relaxed atomic load. Expiry decisions made with it are late by at most
/// one tick plus the thread's scheduling delay (about 1 ms on an idle machine, a few
/// ms under heavy load): an entry may be served that much past its TTL, never before
/// it. Clones share the thread.
#[derive(Clone)]
pub struct TickingClock {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// The time as of the last tick. One per process, like the thread that writes it, so a
/// read is a single load from a fixed address.
static NOW_MS: AtomicU64 = AtomicU64::new(0);

/// A time no entry is fresh before: what a cache given its own clock compares against
/// on the fast path of a hit, so that every lookup of such a cache asks its clock.
static NEVER_FRESH: AtomicU64 = AtomicU64::new(u64::MAX);

/// The time the fresh-value fast path of a lookup compares against: the ticker's, or
/// (for a cache with a clock of its own) [`NEVER_FRESH`]. A plain load from an address
/// chosen once, with no branch on which clock the cache has.
pub(crate) fn fast_path_time(own_clock: bool) -> &'static AtomicU64 {
    if own_clock { &NEVER_FRESH } else { &NOW_MS }
}

struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    flushers: Mutex<Vec<Weak<dyn Flush>>>,
}

/// Stops and joins the thread when the last clock goes.
struct Owner {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The running ticker, if any clock is alive.
static TICKER: std::sync::Mutex<Weak<Owner>> = std::sync::Mutex::new(Weak::new());

impl TickingClock {
    /// A handle on the process-wide ticker, starting its thread if none is running.
    ///
    /// # Panics
    /// If the operating system refuses to start a thread.
    #[must_use]
    pub fn shared() -> Self {
        // A poisoned lock only means another thread panicked mid-`shared()`; the Weak
        // inside is still a valid value.
        let mut running = TICKER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(owner) = running.upgrade() {
            return Self { shared: Arc::clone(&owner.shared), _owner: owner };
        }
        NOW_MS.store(SystemClock.now_ms(), Ordering::Relaxed);
        let shared = Arc::new(Shared {
            stop: Mutex::new(false),
            wake: Condvar::new(),
            flushers: Mutex::new(Vec::new()),
        });
        let thread = std::thread::Builder::new()
            .name("girder-cache-tick".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || tick(&shared)
            })
            .expect("spawn the girder-cache tick thread");
        let owner = Arc::new(Owner { shared: Arc::clone(&shared), thread: Some(thread) });
        *running = Arc::downgrade(&owner);
        Self { shared, _owner: owner }
    }

    /// Asks the thread to call `flusher` about once a second while it is alive.
    pub(crate) fn register(&self, flusher: Weak<dyn Flush>) {
        self.shared.flushers.lock().push(flusher);
    }
}

impl std::fmt::Debug for TickingClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TickingClock").field("now_ms", &self.now_ms()).finish()
    }
}

impl Clock for TickingClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        NOW_MS.load(Ordering::Relaxed)
    }

    /// Waits on the precise system clock; the ticking time catches up within a tick.
    fn wait_until_ms(&self, deadline_ms: u64, max: Duration) -> u64 {
        SystemClock.wait_until_ms(deadline_ms, max)
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            // The tick loop cannot panic short of a bug in a flusher; nothing to add.
            let _ = thread.join();
        }
    }
}

fn tick(shared: &Shared) {
    let mut ticks: u64 = 0;
    let mut stop = shared.stop.lock();
    while !*stop {
        NOW_MS.store(SystemClock.now_ms(), Ordering::Relaxed);
        ticks += 1;
        if ticks % FLUSH_EVERY_TICKS == 0 {
            parking_lot::MutexGuard::unlocked(&mut stop, || flush_all(shared));
        }
        shared.wake.wait_for(&mut stop, TICK);
    }
    drop(stop);
    // A last flush, so counts from the final second are not lost.
    flush_all(shared);
}

fn flush_all(shared: &Shared) {
    let alive: Vec<_> = {
        let mut flushers = shared.flushers.lock();
        flushers.retain(|f| f.strong_count() > 0);
        flushers.iter().filter_map(Weak::upgrade).collect()
    };
    for flusher in alive {
        flusher.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticking_time_follows_the_system_clock() {
        let clock = TickingClock::shared();
        let before = SystemClock.now_ms();
        // The thread stored the time when it started and stores it every tick; wait
        // (bounded) for a tick after `before`.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while clock.now_ms() < before {
            assert!(std::time::Instant::now() < deadline, "the tick thread is not ticking");
            std::thread::yield_now();
        }
        assert!(clock.now_ms() <= SystemClock.now_ms());
    }

    #[test]
    fn clocks_share_one_thread_and_flushers_are_called() {
        struct Count(AtomicU64);
        impl Flush for Count {
            fn flush(&self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let a = TickingClock::shared();
        let b = TickingClock::shared();
        assert!(Arc::ptr_eq(&a.shared, &b.shared));
        let count = Arc::new(Count(AtomicU64::new(0)));
        let weak: Weak<dyn Flush> = Arc::downgrade(&count) as Weak<dyn Flush>;
        a.register(weak);
        flush_all(&a.shared);
        assert!(count.0.load(Ordering::SeqCst) >= 1);
        drop(count);
        flush_all(&a.shared);
        assert!(a.shared.flushers.lock().iter().all(|f| f.strong_count() > 0), "kept a dead one");
    }
}
