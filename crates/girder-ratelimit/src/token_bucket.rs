//! The token bucket ("Pattern: Token Bucket for Rate Limiting"): `burst` tokens, refilled
//! continuously at `limit` per `period_ms`; a request of cost `c` takes `c` tokens or is
//! denied.
//!
//! Tokens are kept in *units* of `1 / period_ms` token, so a refill of `limit` units per
//! millisecond is exact integer arithmetic with no drift, whatever the rate.
//!
//! Bound: in any span of Δ ms (first to last admission), at most
//! `burst + ⌊limit·Δ / period_ms⌋` units are admitted.

use crate::algorithm::Algorithm;
use crate::{Decision, Kind, Rule, RuleError, ceil_div};

/// A token bucket of `burst` tokens refilled at `limit` per `period_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    limit: u64,
    period_ms: u64,
    burst: u64,
    /// `burst · period_ms`: a full bucket, in units.
    capacity_units: u64,
}

/// A key's bucket: its level at `last_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucketState {
    /// Tokens in units of `1 / period_ms` token.
    pub level_units: u64,
    /// When `level_units` was computed.
    pub last_ms: u64,
}

impl TokenBucket {
    /// A bucket of `burst` tokens refilled at `limit` per `period_ms`.
    ///
    /// # Errors
    /// See [`Rule::validate`].
    pub fn new(limit: u64, period_ms: u64, burst: u64) -> Result<Self, RuleError> {
        Rule::new(Kind::TokenBucket, limit, period_ms).with_burst(burst).validate()?;
        Ok(Self { limit, period_ms, burst, capacity_units: burst * period_ms })
    }

    /// The level at `now_ms` (refilled, capped), and the time it was computed for.
    fn refilled(&self, state: &TokenBucketState, now_ms: u64) -> (u64, u64) {
        let now = now_ms.max(state.last_ms);
        let missing = self.capacity_units - state.level_units;
        let elapsed = now - state.last_ms;
        // Compare before multiplying: `elapsed` is unbounded, the product need not be.
        let level = if elapsed >= ceil_div(missing, self.limit) {
            self.capacity_units
        } else {
            state.level_units + elapsed * self.limit
        };
        (level, now)
    }
}

impl Algorithm for TokenBucket {
    type State = TokenBucketState;

    fn rule(&self) -> Rule {
        Rule::new(Kind::TokenBucket, self.limit, self.period_ms).with_burst(self.burst)
    }

    fn max_cost(&self) -> u64 {
        self.burst
    }

    fn fresh(&self, now_ms: u64) -> TokenBucketState {
        TokenBucketState { level_units: self.capacity_units, last_ms: now_ms }
    }

    fn decide(&self, state: &mut TokenBucketState, now_ms: u64, cost: u64) -> Decision {
        debug_assert!((1..=self.burst).contains(&cost));
        let (mut level, now) = self.refilled(state, now_ms);
        let need = cost * self.period_ms;
        let allowed = level >= need;
        if allowed {
            level -= need;
        }
        *state = TokenBucketState { level_units: level, last_ms: now };
        debug_assert!(state.level_units <= self.capacity_units);
        Decision {
            allowed,
            remaining: level / self.period_ms,
            retry_after_ms: if allowed { 0 } else { ceil_div(need - level, self.limit) },
            reset_after_ms: ceil_div(self.capacity_units - level, self.limit),
            limit: self.burst,
        }
    }

    fn fresh_at_ms(&self, state: &TokenBucketState) -> u64 {
        state.last_ms + ceil_div(self.capacity_units - state.level_units, self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::table::check;

    #[test]
    fn burst_then_refill_at_the_rate() {
        // 10 per second (one every 100 ms), bursts of 3.
        let tb = TokenBucket::new(10, 1_000, 3).unwrap();
        check(
            &tb,
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
    fn cost_above_one_waits_for_enough_tokens() {
        let tb = TokenBucket::new(10, 1_000, 5).unwrap();
        check(
            &tb,
            &[
                (0, 4, (true, 1, 0, 400)),
                (0, 3, (false, 1, 200, 400)),
                (199, 3, (false, 2, 1, 201)),
                (200, 3, (true, 0, 0, 500)),
            ],
        );
    }

    #[test]
    fn fractional_rates_are_exact() {
        // 3 per 1000 ms: a token every 333.33 ms, never drifting.
        let tb = TokenBucket::new(3, 1_000, 2).unwrap();
        let mut s = tb.fresh(0);
        let mut admitted = 0;
        for now in 0..=30_000 {
            admitted += u64::from(tb.decide(&mut s, now, 1).allowed);
        }
        // The burst of 2, then 3 per second for 30 s.
        assert_eq!(admitted, 2 + 90);
    }

    #[test]
    fn time_going_back_refills_nothing() {
        let tb = TokenBucket::new(10, 1_000, 1).unwrap();
        check(&tb, &[(1_000, 1, (true, 0, 0, 100)), (500, 1, (false, 0, 100, 100))]);
    }
}
