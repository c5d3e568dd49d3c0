//! GCRA, the generic cell rate algorithm (the one `governor` implements): instead of a
//! token count, each key keeps its *theoretical arrival time* (TAT) — when the key
//! would be idle again if requests kept arriving exactly at the allowed rate. A request
//! of cost `c` moves the TAT `c` emission intervals (`T = period_ms / limit`) into the
//! future, and is admitted if the new TAT is at most `burst · T` ahead of now.
//!
//! It is the virtual-scheduling form of the token bucket: with the same `limit`,
//! `period_ms` and `burst` it admits exactly the same requests (a property test checks
//! this), and stores one instant instead of a level and a time. `T` is fractional in
//! general, so the TAT is kept as whole milliseconds plus a remainder in units of
//! `1 / limit` ms: exact, no drift.

use crate::algorithm::Algorithm;
use crate::{Decision, Kind, Rule, RuleError, ceil_div};

/// GCRA admitting `limit` per `period_ms` with bursts of up to `burst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gcra {
    limit: u64,
    period_ms: u64,
    burst: u64,
    /// The tolerance `burst · T`, in units of `1 / limit` ms (`= burst · period_ms`).
    tau_units: u64,
    /// `⌈tau_units / limit⌉`: the furthest the TAT can be ahead of now, in ms.
    tau_ms_ceil: u64,
}

/// A key's theoretical arrival time: `tat_ms + tat_rem / limit` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraState {
    /// Whole milliseconds of the TAT.
    pub tat_ms: u64,
    /// The fraction, in `0..limit` units of `1 / limit` ms.
    pub tat_rem: u64,
}

impl Gcra {
    /// GCRA admitting `limit` per `period_ms` with bursts of up to `burst`.
    ///
    /// # Errors
    /// See [`Rule::validate`].
    pub fn new(limit: u64, period_ms: u64, burst: u64) -> Result<Self, RuleError> {
        Rule::new(Kind::Gcra, limit, period_ms).with_burst(burst).validate()?;
        let tau_units = burst * period_ms;
        Ok(Self { limit, period_ms, burst, tau_units, tau_ms_ceil: ceil_div(tau_units, limit) })
    }
}

impl Algorithm for Gcra {
    type State = GcraState;

    fn rule(&self) -> Rule {
        Rule::new(Kind::Gcra, self.limit, self.period_ms).with_burst(self.burst)
    }

    fn max_cost(&self) -> u64 {
        self.burst
    }

    fn fresh(&self, now_ms: u64) -> GcraState {
        GcraState { tat_ms: now_ms, tat_rem: 0 }
    }

    fn decide(&self, state: &mut GcraState, now_ms: u64, cost: u64) -> Decision {
        debug_assert!((1..=self.burst).contains(&cost));
        debug_assert!(state.tat_rem < self.limit);
        // A clock that went back is taken as no earlier than the TAT allows, which keeps
        // `TAT - now` (and every product below) bounded.
        let now = now_ms.max(state.tat_ms.saturating_sub(self.tau_ms_ceil));
        // TAT' = max(TAT, now): an idle key does not bank unused time beyond the burst.
        let (base_ms, base_rem) =
            if state.tat_ms >= now { (state.tat_ms, state.tat_rem) } else { (now, 0) };
        let total = base_rem + cost * self.period_ms;
        let new_ms = base_ms + total / self.limit;
        let new_rem = total % self.limit;
        // How far the new TAT is ahead of now, in units of 1 / limit ms.
        let ahead = (new_ms - now) * self.limit + new_rem;
        let allowed = ahead <= self.tau_units;
        let debt = if allowed {
            *state = GcraState { tat_ms: new_ms, tat_rem: new_rem };
            ahead
        } else {
            (base_ms - now) * self.limit + base_rem
        };
        Decision {
            allowed,
            remaining: self.tau_units.saturating_sub(debt) / self.period_ms,
            retry_after_ms: if allowed { 0 } else { ceil_div(ahead - self.tau_units, self.limit) },
            reset_after_ms: ceil_div(debt, self.limit),
            limit: self.burst,
        }
    }

    fn fresh_at_ms(&self, state: &GcraState) -> u64 {
        state.tat_ms + u64::from(state.tat_rem > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::table::check;

    #[test]
    fn burst_then_one_per_emission_interval() {
        // The token bucket's table: the two algorithms decide alike.
        let g = Gcra::new(10, 1_000, 3).unwrap();
        check(
            &g,
            &[
                (0, 1, (true, 2, 0, 100)),
                (0, 1, (true, 1, 0, 200)),
                (0, 1, (true, 0, 0, 300)),
                (0, 1, (false, 0, 100, 300)),
                (50, 1, (false, 0, 50, 250)),
                (100, 1, (true, 0, 0, 300)),
                (350, 1, (true, 1, 0, 150)),
                (10_000, 1, (true, 2, 0, 100)),
            ],
        );
    }

    #[test]
    fn cost_above_one_moves_the_tat_by_cost_intervals() {
        let g = Gcra::new(10, 1_000, 5).unwrap();
        check(
            &g,
            &[
                (0, 4, (true, 1, 0, 400)),
                (0, 3, (false, 1, 200, 400)),
                (199, 3, (false, 2, 1, 201)),
                (200, 3, (true, 0, 0, 500)),
            ],
        );
    }

    #[test]
    fn fractional_intervals_keep_their_remainder() {
        // T = 1000 / 3 ms: TAT after one request at t = 0 is 333⅓ ms.
        let g = Gcra::new(3, 1_000, 1).unwrap();
        let mut s = g.fresh(0);
        assert!(g.decide(&mut s, 0, 1).allowed);
        assert_eq!(s, GcraState { tat_ms: 333, tat_rem: 1 });
        assert_eq!(g.fresh_at_ms(&s), 334);
        let d = g.decide(&mut s, 333, 1);
        assert_eq!((d.allowed, d.retry_after_ms), (false, 1));
        assert!(g.decide(&mut s, 334, 1).allowed);
    }
}
