//! Time as a dependency. Production code takes a [`Clock`]; tests hand it a
//! [`ManualClock`] and move time explicitly instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
///
/// Wall-clock time may move backwards (NTP steps, manual changes). Callers that
/// need monotonic behaviour, such as the Snowflake generator, must detect that
/// themselves; the clock only reports what it sees.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Blocks the calling thread until [`Clock::now_ms`] is at least `deadline_ms`
    /// or `max` has elapsed, whichever is first, and returns the time then.
    ///
    /// The system clock spins briefly and then sleeps; the manual clock jumps,
    /// so simulated waits cost nothing in tests.
    fn wait_until_ms(&self, deadline_ms: u64, max: Duration) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 is a misconfigured machine; report 0 rather than panic.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn wait_until_ms(&self, deadline_ms: u64, max: Duration) -> u64 {
        let started = std::time::Instant::now();
        loop {
            let now = self.now_ms();
            if now >= deadline_ms || started.elapsed() >= max {
                return now;
            }
            // Sub-millisecond waits are the common case (sequence exhausted within
            // the current millisecond): spinning is cheaper than a syscall sleep.
            if deadline_ms - now > 1 {
                std::thread::sleep(Duration::from_micros(200));
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// A clock that only moves when told to. Cloning shares the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
    waits: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock reading `now_ms`.
    #[must_use]
    pub fn new(now_ms: u64) -> Self {
        Self { now_ms: Arc::new(AtomicU64::new(now_ms)), waits: Arc::new(AtomicU64::new(0)) }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by_ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now_ms.fetch_add(by_ms, Ordering::SeqCst);
    }

    /// Sets the time, possibly backwards (to simulate a clock step).
    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// How many times [`Clock::wait_until_ms`] has been called.
    #[must_use]
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::SeqCst)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    /// Simulated waiting: time jumps forward to the deadline, capped at `max`.
    fn wait_until_ms(&self, deadline_ms: u64, max: Duration) -> u64 {
        self.waits.fetch_add(1, Ordering::SeqCst);
        let now = self.now_ms();
        if deadline_ms > now {
            let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
            self.now_ms.store(now + (deadline_ms - now).min(max_ms), Ordering::SeqCst);
        }
        self.now_ms()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }

    fn wait_until_ms(&self, deadline_ms: u64, max: Duration) -> u64 {
        (**self).wait_until_ms(deadline_ms, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_millis(5));
        assert_eq!(clock.now_ms(), 1_005);
        clock.set_ms(900);
        assert_eq!(clock.now_ms(), 900);
        let shared = clock.clone();
        shared.advance(Duration::from_millis(1));
        assert_eq!(clock.now_ms(), 901);
    }

    #[test]
    fn manual_wait_jumps_but_respects_the_cap() {
        let clock = ManualClock::new(100);
        assert_eq!(clock.wait_until_ms(150, Duration::from_millis(10)), 110);
        assert_eq!(clock.wait_until_ms(105, Duration::from_secs(1)), 110);
        assert_eq!(clock.waits(), 2);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
