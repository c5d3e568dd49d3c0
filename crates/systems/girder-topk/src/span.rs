//! The windows a top-K is asked for, as ranges of whole minutes, and how a range is
//! cut into the fewest stored summary buckets.
//!
//! Counts are kept per minute (minute `m` is `[m·60 s, (m+1)·60 s)` since the epoch).
//! Summaries are kept per minute, per ten minutes and per hour, each aligned to its
//! length, so any range of minutes is covered exactly by at most 9 minutes, 5 ten-
//! minute buckets, the whole hours, 5 ten-minute buckets and 9 minutes: a day is at
//! most 51 summaries per partition instead of 1,440.

/// The minute an event time falls in (floor, so negative times work too).
#[must_use]
pub fn minute_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(60_000)
}

/// The windows of a top-K query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// The current minute so far.
    Minute,
    /// The current minute and the 59 before it.
    Hour,
    /// The current minute and the 1,439 before it.
    Day,
    /// Everything ever counted.
    All,
}

impl Window {
    /// The minutes covered when the current minute is `now`, first and last inclusive;
    /// `None` for all time.
    #[must_use]
    pub fn minutes(self, now: i64) -> Option<(i64, i64)> {
        let len = match self {
            Self::Minute => 1,
            Self::Hour => 60,
            Self::Day => 1_440,
            Self::All => return None,
        };
        Some((now - (len - 1), now))
    }
}

/// A summary bucket's length in minutes: 1, 10 or 60 (0 stands for all time in the
/// table).
pub const SPANS: [i64; 3] = [1, 10, 60];

/// A run of consecutive buckets of one span, `first..=last` in that span's numbering
/// (bucket `b` of span `s` covers minutes `b·s ..= b·s + s − 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    /// The span in minutes.
    pub span: i64,
    /// The first bucket.
    pub first: i64,
    /// The last bucket.
    pub last: i64,
}

/// The buckets that cover the minutes `first..=last` exactly, each minute once,
/// largest spans as far as alignment allows.
#[must_use]
pub fn cover(first: i64, last: i64) -> Vec<Buckets> {
    let mut out: Vec<Buckets> = Vec::new();
    let mut m = first;
    while m <= last {
        // The largest span aligned at m that still fits.
        let span = SPANS
            .iter()
            .rev()
            .copied()
            .find(|&s| m.rem_euclid(s) == 0 && m + s - 1 <= last)
            .unwrap_or(1);
        let bucket = m.div_euclid(span);
        match out.last_mut() {
            Some(run) if run.span == span && run.last + 1 == bucket => run.last = bucket,
            _ => out.push(Buckets { span, first: bucket, last: bucket }),
        }
        m += span;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every minute of the range covered once, nothing outside it, few buckets.
    fn check(first: i64, last: i64, buckets_max: i64) {
        let runs = cover(first, last);
        let mut minutes = Vec::new();
        let mut buckets = 0;
        for r in &runs {
            for b in r.first..=r.last {
                buckets += 1;
                minutes.extend(b * r.span..b * r.span + r.span);
            }
        }
        assert_eq!(minutes, (first..=last).collect::<Vec<_>>(), "{first}..={last}: {runs:?}");
        assert!(buckets <= buckets_max, "{first}..={last}: {buckets} buckets: {runs:?}");
    }

    #[test]
    fn ranges_are_covered_exactly_by_few_buckets() {
        for now in [0, 1, 9, 10, 59, 60, 61, 599, 1_439, 28_000_000, 28_000_037, -5] {
            for w in [Window::Minute, Window::Hour, Window::Day] {
                let (first, last) = w.minutes(now).expect("a range");
                check(first, last, 51);
            }
        }
        assert_eq!(cover(60, 119), [Buckets { span: 60, first: 1, last: 1 }]);
        assert_eq!(
            cover(58, 71),
            [
                Buckets { span: 1, first: 58, last: 59 },
                Buckets { span: 10, first: 6, last: 6 },
                Buckets { span: 1, first: 70, last: 71 },
            ]
        );
        assert!(cover(5, 4).is_empty());
    }

    #[test]
    fn minutes_floor() {
        assert_eq!(minute_of(0), 0);
        assert_eq!(minute_of(59_999), 0);
        assert_eq!(minute_of(60_000), 1);
        assert_eq!(minute_of(-1), -1);
        assert_eq!(Window::Minute.minutes(7), Some((7, 7)));
        assert_eq!(Window::Hour.minutes(100), Some((41, 100)));
        assert_eq!(Window::All.minutes(100), None);
    }
}
