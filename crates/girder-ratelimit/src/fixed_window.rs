//! The fixed window counter: time is cut into epoch-aligned windows of `period_ms`, and
//! each key may spend `limit` per window.
//!
//! Cheapest of all (one counter), and exact *per window* — but windows are aligned, not
//! sliding: a client can spend `limit` in the last millisecond of one window and `limit`
//! again in the first millisecond of the next, **2 · `limit` within 2 ms**. The tests
//! show that burst and that the sliding algorithms do not allow it.

use crate::algorithm::Algorithm;
use crate::{Decision, Kind, Rule, RuleError};

/// `limit` per aligned window of `period_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedWindow {
    limit: u64,
    period_ms: u64,
}

/// A key's current window and what it has spent in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindowState {
    /// Start of the window (a multiple of `period_ms`).
    pub window_start_ms: u64,
    /// Cost admitted in that window.
    pub count: u64,
}

impl FixedWindow {
    /// `limit` per aligned window of `period_ms`.
    ///
    /// # Errors
    /// See [`Rule::validate`].
    pub fn new(limit: u64, period_ms: u64) -> Result<Self, RuleError> {
        Rule::new(Kind::FixedWindow, limit, period_ms).validate()?;
        Ok(Self { limit, period_ms })
    }
}

impl Algorithm for FixedWindow {
    type State = FixedWindowState;

    fn rule(&self) -> Rule {
        Rule::new(Kind::FixedWindow, self.limit, self.period_ms)
    }

    fn max_cost(&self) -> u64 {
        self.limit
    }

    fn fresh(&self, now_ms: u64) -> FixedWindowState {
        FixedWindowState { window_start_ms: now_ms - now_ms % self.period_ms, count: 0 }
    }

    fn decide(&self, state: &mut FixedWindowState, now_ms: u64, cost: u64) -> Decision {
        debug_assert!((1..=self.limit).contains(&cost));
        let now = now_ms.max(state.window_start_ms);
        let start = now - now % self.period_ms;
        if start != state.window_start_ms {
            *state = FixedWindowState { window_start_ms: start, count: 0 };
        }
        let allowed = state.count + cost <= self.limit;
        if allowed {
            state.count += cost;
        }
        let to_end = start + self.period_ms - now;
        Decision {
            allowed,
            remaining: self.limit - state.count,
            retry_after_ms: if allowed { 0 } else { to_end },
            reset_after_ms: if state.count == 0 { 0 } else { to_end },
            limit: self.limit,
        }
    }

    fn fresh_at_ms(&self, state: &FixedWindowState) -> u64 {
        if state.count == 0 { 0 } else { state.window_start_ms + self.period_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::table::check;

    #[test]
    fn counts_per_aligned_window() {
        let fw = FixedWindow::new(3, 1_000).unwrap();
        check(
            &fw,
            &[
                (200, 1, (true, 2, 0, 800)),
                (300, 2, (true, 0, 0, 700)),
                (999, 1, (false, 0, 1, 1)),
                (1_000, 3, (true, 0, 0, 1_000)),
                (1_500, 1, (false, 0, 500, 500)),
                (5_250, 4 - 1, (true, 0, 0, 750)),
            ],
        );
    }

    #[test]
    fn the_boundary_burst_is_twice_the_limit() {
        let fw = FixedWindow::new(5, 1_000).unwrap();
        let mut s = fw.fresh(0);
        let admitted = (0..10).filter(|&i| fw.decide(&mut s, 999 + i / 5, 1).allowed).count();
        assert_eq!(admitted, 10, "5 at 999 ms and 5 at 1000 ms");
    }
}
