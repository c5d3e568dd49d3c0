//! The process's one coarse clock: wall time cached in a static by one background
//! thread, so a hot path reads the time with a single relaxed load (~1 ns) instead of
//! `SystemTime::now()` (~25–50 ns on the reference VM, as much as a cache lookup or a
//! rate-limit decision). `governor`'s `QuantaUpkeepClock` makes the same trade.
//!
//! One thread (`girder-coarse-clock`) serves every handle: it starts with the first
//! [`CoarseClock`] and is stopped and joined when the last one is dropped; it is never
//! detached. The tick is fixed at [`CoarseClock::TICK`] (1 ms) rather than chosen per
//! handle: readings are whole milliseconds, so a finer tick buys nothing readable, and
//! one thread cannot honour different ticks without re-timing itself whenever a handle
//! comes or goes.
//!
//! The same thread calls registered [`Flush`] hooks about once a second (girder-cache
//! publishes its hot counters this way). That lives here, not in a second thread in
//! girder-cache, because a second thread would need the same start-with-the-first,
//! join-with-the-last bookkeeping while adding nothing but another wake-up per tick.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::{Clock, SystemClock};

/// Wall-clock milliseconds, read with one relaxed atomic load; only girder-core can
/// move the shared one ([`CoarseClock::now_cell`]).
///
/// Code that picks its time source once and then reads it on a hot path without a
/// branch (girder-cache's "never fresh" time for caches with a clock of their own)
/// makes its own fixed cells with [`TimeCell::fixed`] and keeps a `&'static TimeCell`.
#[derive(Debug)]
pub struct TimeCell {
    ms: AtomicU64,
}

impl TimeCell {
    /// A cell that always reads `ms`.
    #[must_use]
    pub const fn fixed(ms: u64) -> Self {
        Self { ms: AtomicU64::new(ms) }
    }

    /// The time in the cell: milliseconds since the Unix epoch.
    #[inline]
    #[must_use]
    pub fn load_ms(&self) -> u64 {
        // Relaxed: the time publishes no other data, it is only compared against.
        self.ms.load(Ordering::Relaxed)
    }
}

/// Something the coarse clock's thread calls about once a second, and once more when
/// the thread stops, so nothing accumulated in the last second is lost.
///
/// It runs on the clock thread: the time does not advance while it runs, so it must be
/// quick (publishing a few counters, not I/O).
pub trait Flush: Send + Sync {
    /// Publishes whatever accumulated since the last call.
    fn flush(&self);
}

/// The registry of [`Flush`] hooks is full: [`FLUSHERS_MAX`] live hooks are
/// registered. Hooks whose owner was dropped do not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushersFull;

impl std::fmt::Display for FlushersFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the coarse clock already flushes {FLUSHERS_MAX} hooks")
    }
}

impl std::error::Error for FlushersFull {}

/// The most live [`Flush`] hooks the coarse clock's thread calls: a bound on the work
/// it does each second (one per live cache in practice).
pub const FLUSHERS_MAX: usize = 1_024;

/// Hooks are called every this many ticks (about a second).
const FLUSH_EVERY_TICKS: u64 = 1_000;

/// Wall-clock milliseconds as of the last tick of the process's coarse-clock thread
/// (see the module docs). Clones share the thread.
///
/// Reads are one relaxed atomic load. A reading lags the system clock by at most one
/// [`CoarseClock::TICK`] plus the thread's scheduling delay (about 1 ms on an idle
/// machine, a few ms under heavy load), and never runs ahead of it. A lagging clock
/// serves a cache entry that much past its TTL (never before) and makes a rate limiter
/// stricter (buckets refill later, windows close later), never looser.
#[derive(Clone)]
pub struct CoarseClock {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// The time as of the last tick. One per process, like the thread that writes it, so a
/// read is a single load from a fixed address.
static NOW: TimeCell = TimeCell::fixed(0);

/// What the thread and the handles share.
struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    flushers: Mutex<Vec<Weak<dyn Flush>>>,
}

/// Stops and joins the thread when the last handle goes.
struct Owner {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The running ticker, if any handle is alive.
static TICKER: std::sync::Mutex<Weak<Owner>> = std::sync::Mutex::new(Weak::new());

impl CoarseClock {
    /// How often the thread refreshes the time: the resolution of every decision read
    /// from a coarse clock.
    pub const TICK: Duration = Duration::from_millis(1);

    /// A handle on the process's coarse clock, starting its thread if none is running.
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
        // Stored before the first handle exists, so no handle ever reads a stale time
        // (the thread may not run for a while).
        NOW.ms.store(SystemClock.now_ms(), Ordering::Relaxed);
        let shared = Arc::new(Shared::new());
        let thread = std::thread::Builder::new()
            .name("girder-coarse-clock".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || tick(&shared)
            })
            .expect("spawn the coarse clock thread");
        let owner = Arc::new(Owner { shared: Arc::clone(&shared), thread: Some(thread) });
        *running = Arc::downgrade(&owner);
        Self { shared, _owner: owner }
    }

    /// A handle on the process's coarse clock, for callers written when each coarse
    /// clock had a thread and a tick of its own: the same as [`CoarseClock::shared`].
    ///
    /// `tick` is ignored: the shared thread always ticks every [`CoarseClock::TICK`],
    /// which is at least as fresh as any tick of 1 ms or more. A finer tick is not
    /// offered (readings are whole milliseconds); asking for one gets up to 1 ms more
    /// lag, which makes rate limits stricter, never looser.
    ///
    /// # Panics
    /// If the operating system refuses to start a thread.
    #[must_use]
    pub fn new(tick: Duration) -> Self {
        let _ = tick;
        Self::shared()
    }

    /// The cell this clock reads: one relaxed load away from the time, for hot paths
    /// that keep a `&'static TimeCell` instead of a handle.
    ///
    /// The cell advances only while some handle is alive: keep this one for as long as
    /// the cell is read.
    #[must_use]
    pub fn now_cell(&self) -> &'static TimeCell {
        &NOW
    }

    /// Asks the thread to call `hook` about once a second, and once more when the
    /// thread stops, while `hook` is alive. A dropped hook is forgotten.
    ///
    /// # Errors
    /// [`FlushersFull`] if [`FLUSHERS_MAX`] live hooks are registered already; `hook`
    /// is then not registered.
    pub fn register_flush(&self, hook: Weak<dyn Flush>) -> Result<(), FlushersFull> {
        self.shared.register(hook)
    }
}

impl Shared {
    fn new() -> Self {
        Self { stop: Mutex::new(false), wake: Condvar::new(), flushers: Mutex::new(Vec::new()) }
    }

    fn register(&self, hook: Weak<dyn Flush>) -> Result<(), FlushersFull> {
        let mut flushers = self.flushers.lock();
        flushers.retain(|f| f.strong_count() > 0);
        if flushers.len() >= FLUSHERS_MAX {
            return Err(FlushersFull);
        }
        flushers.push(hook);
        Ok(())
    }
}

impl Default for CoarseClock {
    /// [`CoarseClock::shared`].
    fn default() -> Self {
        Self::shared()
    }
}

impl std::fmt::Debug for CoarseClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoarseClock").field("now_ms", &self.now_ms()).finish()
    }
}

impl Clock for CoarseClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        NOW.load_ms()
    }

    /// Waits until the coarse reading itself reaches `deadline_ms` (so a `now_ms` right
    /// after this returns is at least what it returned), polling every 200 µs.
    fn wait_until_ms(&self, deadline_ms: u64, max: Duration) -> u64 {
        let started = std::time::Instant::now();
        loop {
            let now = self.now_ms();
            if now >= deadline_ms || started.elapsed() >= max {
                return now;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            // The tick loop cannot panic short of a bug in a hook; nothing to add.
            let _ = thread.join();
        }
    }
}

fn tick(shared: &Shared) {
    let mut ticks: u64 = 0;
    let mut stop = shared.stop.lock();
    while !*stop {
        NOW.ms.store(SystemClock.now_ms(), Ordering::Relaxed);
        ticks += 1;
        if ticks.is_multiple_of(FLUSH_EVERY_TICKS) {
            parking_lot::MutexGuard::unlocked(&mut stop, || flush_all(shared));
        }
        shared.wake.wait_for(&mut stop, CoarseClock::TICK);
    }
    drop(stop);
    // A last flush, so counts from the final second are not lost.
    flush_all(shared);
}

fn flush_all(shared: &Shared) {
    // Called outside the registry's lock, so a hook may register another.
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
    use std::time::Instant;

    use super::*;

    /// The clock is process-wide; tests that start and stop it run one at a time even
    /// when the harness runs tests on threads of one process.
    static SERIAL: Mutex<()> = parking_lot::const_mutex(());

    struct Count(AtomicU64);

    impl Flush for Count {
        fn flush(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn count() -> (Arc<Count>, Weak<dyn Flush>) {
        let count = Arc::new(Count(AtomicU64::new(0)));
        let weak = Arc::downgrade(&count) as Weak<dyn Flush>;
        (count, weak)
    }

    #[test]
    fn time_advances_and_follows_the_system_clock() {
        let _serial = SERIAL.lock();
        let clock = CoarseClock::shared();
        let started = clock.now_ms();
        let system = SystemClock.now_ms();
        assert!(started <= system, "{started} runs ahead of {system}");
        // The thread stores the time every tick; wait (bounded) for it to move.
        let deadline = Instant::now() + Duration::from_secs(10);
        while clock.now_ms() <= system {
            assert!(Instant::now() < deadline, "the coarse clock is not ticking");
            std::thread::yield_now();
        }
        assert!(clock.now_ms() <= SystemClock.now_ms());
        assert_eq!(clock.now_cell().load_ms(), NOW.load_ms());
    }

    #[test]
    fn waits_until_the_coarse_reading_reaches_the_deadline() {
        let _serial = SERIAL.lock();
        let clock = CoarseClock::new(Duration::from_millis(1));
        let now = clock.now_ms();
        let later = clock.wait_until_ms(now + 3, Duration::from_secs(10));
        assert!(later >= now + 3 && clock.now_ms() >= later, "{now} → {later}");
        assert!(clock.wait_until_ms(0, Duration::ZERO) >= later);
    }

    #[test]
    fn handles_share_one_thread_that_stops_with_the_last() {
        let _serial = SERIAL.lock();
        let running = || TICKER.lock().unwrap().upgrade();
        let a = CoarseClock::shared();
        let b = CoarseClock::new(Duration::from_secs(1));
        let c = a.clone();
        assert!(Arc::ptr_eq(&a.shared, &b.shared) && Arc::ptr_eq(&a.shared, &c.shared));
        assert!(Arc::ptr_eq(&a._owner, &running().unwrap()));
        let thread = a._owner.thread.as_ref().map(|t| t.thread().id());
        let shared = Arc::downgrade(&a.shared);
        let (hook, weak) = count();
        a.register_flush(weak).unwrap();
        drop((a, b));
        assert!(running().is_some(), "the thread stopped with a handle left");
        let flushed = hook.0.load(Ordering::SeqCst);
        drop(c);
        // The last drop joined the thread: its copy of the shared state is gone, and it
        // flushed once more on the way out.
        assert!(shared.upgrade().is_none(), "the thread outlived the last handle");
        assert!(running().is_none());
        assert_eq!(hook.0.load(Ordering::SeqCst), flushed + 1);
        // A new handle starts a new thread.
        let d = CoarseClock::shared();
        assert_ne!(d._owner.thread.as_ref().map(|t| t.thread().id()), thread);
    }

    #[test]
    fn flush_hooks_are_called_while_alive_and_bounded() {
        // A registry with no thread, so only this test calls the hooks.
        let shared = Shared::new();
        let mut hooks = Vec::new();
        while hooks.len() < FLUSHERS_MAX {
            let (hook, weak) = count();
            shared.register(weak).unwrap();
            hooks.push(hook);
        }
        flush_all(&shared);
        assert!(hooks.iter().all(|h| h.0.load(Ordering::SeqCst) == 1));

        let (extra, weak) = count();
        assert_eq!(shared.register(weak.clone()), Err(FlushersFull));
        // A dropped hook frees its place, and is never called again.
        drop(hooks.pop());
        shared.register(weak).unwrap();
        flush_all(&shared);
        assert_eq!(shared.flushers.lock().len(), FLUSHERS_MAX);
        assert_eq!(extra.0.load(Ordering::SeqCst), 1);
        assert!(hooks.iter().all(|h| h.0.load(Ordering::SeqCst) == 2));
    }
}
