//! The sliding log: every admission is remembered with its time, and a request is
//! admitted if the cost admitted in the last `period_ms` plus its own stays within
//! `limit`. Exact — no window edge to exploit — at the price of memory: admissions in
//! the same millisecond share an entry, so a key holds at most `min(limit, period_ms)`
//! entries of 16 bytes.
//!
//! An admission at `t` counts while `now < t + period_ms`: the window is `(now − period_ms, now]`.

use std::collections::VecDeque;

use crate::algorithm::Algorithm;
use crate::{Decision, Kind, Rule, RuleError};

/// `limit` in every window of `period_ms`, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlidingLog {
    limit: u64,
    period_ms: u64,
}

/// A key's admissions still inside the window, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingLogState {
    /// `(time_ms, cost)` pairs, times strictly increasing.
    pub entries: VecDeque<(u64, u64)>,
    /// The sum of the costs in `entries`.
    pub total: u64,
}

impl SlidingLog {
    /// `limit` in every window of `period_ms`.
    ///
    /// # Errors
    /// See [`Rule::validate`].
    pub fn new(limit: u64, period_ms: u64) -> Result<Self, RuleError> {
        Rule::new(Kind::SlidingLog, limit, period_ms).validate()?;
        Ok(Self { limit, period_ms })
    }
}

impl Algorithm for SlidingLog {
    type State = SlidingLogState;

    fn rule(&self) -> Rule {
        Rule::new(Kind::SlidingLog, self.limit, self.period_ms)
    }

    fn max_cost(&self) -> u64 {
        self.limit
    }

    fn fresh(&self, _now_ms: u64) -> SlidingLogState {
        SlidingLogState::default()
    }

    fn decide(&self, state: &mut SlidingLogState, now_ms: u64, cost: u64) -> Decision {
        debug_assert!((1..=self.limit).contains(&cost));
        let now = state.entries.back().map_or(now_ms, |&(t, _)| now_ms.max(t));
        while let Some(&(t, c)) = state.entries.front() {
            if t + self.period_ms > now {
                break;
            }
            state.total -= c;
            state.entries.pop_front();
        }
        let allowed = state.total + cost <= self.limit;
        let mut retry_after_ms = 0;
        if allowed {
            state.total += cost;
            match state.entries.back_mut() {
                Some((t, c)) if *t == now => *c += cost,
                _ => state.entries.push_back((now, cost)),
            }
        } else {
            // Wait until enough of the oldest admissions have left the window.
            let need = state.total + cost - self.limit;
            let mut freed = 0;
            for &(t, c) in &state.entries {
                freed += c;
                if freed >= need {
                    retry_after_ms = t + self.period_ms - now;
                    break;
                }
            }
        }
        debug_assert_eq!(state.total, state.entries.iter().map(|e| e.1).sum::<u64>());
        debug_assert!(state.total <= self.limit);
        Decision {
            allowed,
            remaining: self.limit - state.total,
            retry_after_ms,
            reset_after_ms: state.entries.back().map_or(0, |&(t, _)| t + self.period_ms - now),
            limit: self.limit,
        }
    }

    fn fresh_at_ms(&self, state: &SlidingLogState) -> u64 {
        state.entries.back().map_or(0, |&(t, _)| t + self.period_ms)
    }

    fn heap_bytes(&self, state: &SlidingLogState) -> usize {
        state.entries.capacity() * size_of::<(u64, u64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::table::check;

    #[test]
    fn the_window_slides_with_each_admission() {
        let log = SlidingLog::new(3, 1_000).unwrap();
        check(
            &log,
            &[
                (100, 1, (true, 2, 0, 1_000)),
                (400, 2, (true, 0, 0, 1_000)),
                (999, 1, (false, 0, 101, 401)),
                // The first admission has left, the other two have not.
                (1_100, 1, (true, 0, 0, 1_000)),
                (1_100, 1, (false, 0, 300, 1_000)),
                (1_400, 2, (true, 0, 0, 1_000)),
                (3_000, 3, (true, 0, 0, 1_000)),
            ],
        );
    }

    #[test]
    fn no_boundary_burst() {
        let log = SlidingLog::new(5, 1_000).unwrap();
        let mut s = log.fresh(0);
        let admitted = (0..10).filter(|&i| log.decide(&mut s, 999 + i / 5, 1).allowed).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn same_millisecond_admissions_share_an_entry() {
        let log = SlidingLog::new(1_000, 10).unwrap();
        let mut s = log.fresh(0);
        for i in 0..1_000 {
            log.decide(&mut s, i / 100, 1);
        }
        assert!(s.entries.len() <= 10, "{} entries", s.entries.len());
    }
}
