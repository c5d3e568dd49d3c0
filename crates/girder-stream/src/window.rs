//! Windows on event time and how events are assigned to them.

use crate::error::ConfigError;

/// Event time: milliseconds since the Unix epoch, as the event says.
pub type EventTime = i64;

/// A half-open span of event time, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// The first millisecond in the window.
    pub start: EventTime,
    /// The first millisecond after it.
    pub end: EventTime,
}

impl Window {
    /// Whether `t` falls in the window.
    #[must_use]
    pub fn contains(&self, t: EventTime) -> bool {
        self.start <= t && t < self.end
    }

    /// Whether the two windows overlap or touch (sessions merge then).
    #[must_use]
    pub fn meets(&self, other: &Window) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

/// How events are grouped into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows of `size_ms`, aligned to the epoch: each event
    /// is in exactly one.
    Tumbling {
        /// The window's length.
        size_ms: i64,
    },
    /// Windows of `size_ms` starting every `slide_ms` (hopping windows): each event is
    /// in `size_ms / slide_ms` of them. `size_ms` must be a multiple of `slide_ms`.
    Sliding {
        /// The window's length.
        size_ms: i64,
        /// The distance between window starts.
        slide_ms: i64,
    },
    /// Per-key bursts of activity: an event opens `[t, t + gap_ms)`, and windows of
    /// one key that meet are merged, so a session ends after `gap_ms` without events.
    Session {
        /// The inactivity that ends a session.
        gap_ms: i64,
    },
}

/// The longest window or gap accepted: 366 days.
pub const WINDOW_MS_MAX: i64 = 366 * 24 * 3_600_000;
/// The most windows one event may fall in (a sliding window's `size / slide`).
pub const WINDOWS_PER_EVENT_MAX: i64 = 1_440;

impl WindowSpec {
    /// Checks the spec's bounds.
    ///
    /// # Errors
    /// A length outside `1..=`[`WINDOW_MS_MAX`], a slide that does not divide the
    /// size, or more than [`WINDOWS_PER_EVENT_MAX`] windows per event.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let in_range = |name: &'static str, v: i64| {
            if (1..=WINDOW_MS_MAX).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError::new(name, format!("{v} is not in 1..={WINDOW_MS_MAX} ms")))
            }
        };
        match *self {
            Self::Tumbling { size_ms } => in_range("size_ms", size_ms),
            Self::Session { gap_ms } => in_range("gap_ms", gap_ms),
            Self::Sliding { size_ms, slide_ms } => {
                in_range("size_ms", size_ms)?;
                in_range("slide_ms", slide_ms)?;
                if size_ms % slide_ms != 0 {
                    return Err(ConfigError::new(
                        "slide_ms",
                        format!("{slide_ms} does not divide the size {size_ms}"),
                    ));
                }
                if size_ms / slide_ms > WINDOWS_PER_EVENT_MAX {
                    return Err(ConfigError::new(
                        "slide_ms",
                        format!(
                            "{} windows per event is more than {WINDOWS_PER_EVENT_MAX}",
                            size_ms / slide_ms
                        ),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The longest window this spec makes before merging (a session grows beyond it).
    #[must_use]
    pub fn length_ms(&self) -> i64 {
        match *self {
            Self::Tumbling { size_ms } | Self::Sliding { size_ms, .. } => size_ms,
            Self::Session { gap_ms } => gap_ms,
        }
    }

    /// Calls `each` with every aligned window containing `t` (for a session, the
    /// window the event opens), earliest first.
    pub fn assign(&self, t: EventTime, mut each: impl FnMut(Window)) {
        match *self {
            Self::Tumbling { size_ms } => {
                let start = floor_to(t, size_ms);
                each(Window { start, end: start.saturating_add(size_ms) });
            }
            Self::Sliding { size_ms, slide_ms } => {
                let last = floor_to(t, slide_ms);
                let mut start = last.saturating_sub(size_ms - slide_ms);
                while start <= last {
                    each(Window { start, end: start.saturating_add(size_ms) });
                    start += slide_ms;
                }
            }
            Self::Session { gap_ms } => each(Window { start: t, end: t.saturating_add(gap_ms) }),
        }
    }
}

/// The largest multiple of `step` at or below `t` (negative times round down too).
#[must_use]
pub fn floor_to(t: EventTime, step: i64) -> EventTime {
    t - t.rem_euclid(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(spec: WindowSpec, t: EventTime) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        spec.assign(t, |w| out.push((w.start, w.end)));
        out
    }

    #[test]
    fn tumbling_windows_are_aligned_and_half_open() {
        let spec = WindowSpec::Tumbling { size_ms: 60_000 };
        assert_eq!(windows(spec, 0), [(0, 60_000)]);
        assert_eq!(windows(spec, 59_999), [(0, 60_000)]);
        assert_eq!(windows(spec, 60_000), [(60_000, 120_000)]);
        assert_eq!(windows(spec, -1), [(-60_000, 0)]);
    }

    #[test]
    fn sliding_windows_cover_each_event_size_over_slide_times() {
        let spec = WindowSpec::Sliding { size_ms: 30, slide_ms: 10 };
        assert_eq!(windows(spec, 25), [(0, 30), (10, 40), (20, 50)]);
        assert_eq!(windows(spec, 30), [(10, 40), (20, 50), (30, 60)]);
        for t in -100..100 {
            let ws = windows(spec, t);
            assert_eq!(ws.len(), 3);
            assert!(ws.iter().all(|&(s, e)| Window { start: s, end: e }.contains(t)));
        }
    }

    #[test]
    fn bad_specs_are_refused() {
        for bad in [
            WindowSpec::Tumbling { size_ms: 0 },
            WindowSpec::Tumbling { size_ms: -5 },
            WindowSpec::Session { gap_ms: WINDOW_MS_MAX + 1 },
            WindowSpec::Sliding { size_ms: 30, slide_ms: 7 },
            WindowSpec::Sliding { size_ms: 3_600_000, slide_ms: 1 },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(WindowSpec::Sliding { size_ms: 3_600_000, slide_ms: 60_000 }.validate().is_ok());
    }
}
