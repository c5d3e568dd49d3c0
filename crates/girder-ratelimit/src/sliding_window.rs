//! The sliding window counter (Cloudflare's approximation): two fixed-window counters,
//! the current and the previous, and the previous one weighted by how much of it the
//! sliding window still covers. A request of cost `c` at `e` ms into the current window
//! is admitted if
//!
//! ```text
//! previous · (period − e) / period + current + c ≤ limit
//! ```
//!
//! computed as `previous · (period − e) ≤ (limit − current − c) · period`, in integers.
//!
//! # Approximation bound
//!
//! The weighting assumes the previous window's admissions were spread evenly. When they
//! were bunched at its end the sliding count can exceed `limit`, but boundedly: in any
//! span of Δ ms (first to last admission) with Δ < `period_ms`, at most
//! **`limit · (1 + Δ / period_ms)`** is admitted (so < 2·`limit` per window, and close to
//! `limit` over short spans — the fixed window allows 2·`limit` within Δ = 1 ms).
//!
//! Proof sketch: a span shorter than a period contains at most one window edge. With
//! none, the span lies in one window: ≤ `limit`. With an edge at `k·period` and the last
//! admission at `e` ms past it, that admission passed
//! `prev · (period − e) + cur · period ≤ limit · period`, so
//! `prev + cur ≤ limit + prev · e / period ≤ limit · (1 + Δ / period)` since `e ≤ Δ`
//! and `prev ≤ limit`. The property test `sliding_window_bound` checks it on random
//! traffic, and a table test shows the worst case.

use crate::algorithm::Algorithm;
use crate::{Decision, Kind, Rule, RuleError};

/// `limit` per sliding window of `period_ms`, approximated by two counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlidingWindow {
    limit: u64,
    period_ms: u64,
}

/// A key's current window and the counts of it and of the window before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindowState {
    /// Start of the current window (a multiple of `period_ms`).
    pub window_start_ms: u64,
    /// Cost admitted in the window before it.
    pub previous: u64,
    /// Cost admitted in the current window.
    pub current: u64,
}

impl SlidingWindow {
    /// `limit` per sliding window of `period_ms`.
    ///
    /// # Errors
    /// See [`Rule::validate`].
    pub fn new(limit: u64, period_ms: u64) -> Result<Self, RuleError> {
        Rule::new(Kind::SlidingWindow, limit, period_ms).validate()?;
        Ok(Self { limit, period_ms })
    }
}

impl Algorithm for SlidingWindow {
    type State = SlidingWindowState;

    fn rule(&self) -> Rule {
        Rule::new(Kind::SlidingWindow, self.limit, self.period_ms)
    }

    fn max_cost(&self) -> u64 {
        self.limit
    }

    fn fresh(&self, now_ms: u64) -> SlidingWindowState {
        SlidingWindowState {
            window_start_ms: now_ms - now_ms % self.period_ms,
            previous: 0,
            current: 0,
        }
    }

    fn decide(&self, state: &mut SlidingWindowState, now_ms: u64, cost: u64) -> Decision {
        let (limit, period) = (self.limit, self.period_ms);
        debug_assert!((1..=limit).contains(&cost));
        let now = now_ms.max(state.window_start_ms);
        let start = now - now % period;
        if start == state.window_start_ms + period {
            *state =
                SlidingWindowState { window_start_ms: start, previous: state.current, current: 0 };
        } else if start != state.window_start_ms {
            *state = SlidingWindowState { window_start_ms: start, previous: 0, current: 0 };
        }
        let (prev, cur) = (state.previous, state.current);
        let e = now - start;
        // The weighted previous count, times `period`.
        let weighted = prev * (period - e);
        let allowed = cur + cost <= limit && weighted <= (limit - cur - cost) * period;
        let retry_after_ms = if allowed {
            0
        } else if cur + cost <= limit {
            // Later in this window the previous one weighs less: the first `e'` with
            // prev · (period − e') ≤ (limit − cur − cost) · period.
            period - (limit - cur - cost) * period / prev - e
        } else {
            // Only in the next window, where `cur` becomes the previous count.
            (period - e) + period.saturating_sub((limit - cost) * period / cur)
        };
        if allowed {
            state.current += cost;
        }
        let cur = state.current;
        let to_end = period - e;
        Decision {
            allowed,
            remaining: (limit - cur).saturating_sub(weighted.div_ceil(period)),
            retry_after_ms,
            reset_after_ms: if cur > 0 {
                to_end + period
            } else if prev > 0 {
                to_end
            } else {
                0
            },
            limit,
        }
    }

    fn fresh_at_ms(&self, state: &SlidingWindowState) -> u64 {
        if state.current > 0 {
            state.window_start_ms + 2 * self.period_ms
        } else if state.previous > 0 {
            state.window_start_ms + self.period_ms
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::table::check;

    #[test]
    fn the_previous_window_fades_linearly() {
        let sw = SlidingWindow::new(10, 1_000).unwrap();
        check(
            &sw,
            &[
                (900, 10, (true, 0, 0, 1_100)),
                // At 1 000 ms the previous 10 weigh fully: nothing fits until they fade.
                (1_000, 1, (false, 0, 100, 1_000)),
                // At 1 500 ms they weigh 5: five fit, all at once.
                (1_500, 5, (true, 0, 0, 1_500)),
                (1_500, 1, (false, 0, 100, 1_500)),
                (1_600, 1, (true, 0, 0, 1_400)),
                // Cost 5 cannot fit this window (cur 6): next window, once the 6 fade
                // to 5: 1 000 ms · (1 − 5/6) = 166.7 → 167 ms into it.
                (1_700, 5, (false, 1, 300 + 167, 1_300)),
                (2_166, 5, (false, 4, 1, 834)),
                (2_167, 5, (true, 0, 0, 1_833)),
            ],
        );
    }

    #[test]
    fn worst_case_spans_stay_within_the_bound() {
        // Everything at the end of one window, then as much as fits at e into the next:
        // the span is e + 1 ms and admits at most 10 · (1 + (e + 1) / 1000).
        let sw = SlidingWindow::new(10, 1_000).unwrap();
        for e in [0, 1, 100, 500, 900, 998] {
            let mut s = sw.fresh(0);
            let mut admitted = 0;
            admitted += u64::from(sw.decide(&mut s, 999, 10).allowed) * 10;
            while sw.decide(&mut s, 1_000 + e, 1).allowed {
                admitted += 1;
            }
            let span = e + 1;
            assert!(admitted * 1_000 <= 10 * (1_000 + span), "e = {e}: {admitted}");
        }
    }

    #[test]
    fn no_boundary_burst() {
        let sw = SlidingWindow::new(5, 1_000).unwrap();
        let mut s = sw.fresh(0);
        let admitted = (0..10).filter(|&i| sw.decide(&mut s, 999 + i / 5, 1).allowed).count();
        assert_eq!(admitted, 5);
    }
}
