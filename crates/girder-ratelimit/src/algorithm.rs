//! The pure decision functions every backend shares: an [`Algorithm`] turns a key's
//! state, the time and a cost into a [`Decision`] and the key's next state. No clock, no
//! locks, no I/O — the in-process backend calls it under a shard lock, the Redis scripts
//! are line-by-line ports of it, and the tests compare both against it.

use crate::{
    Decision, FixedWindow, FixedWindowState, Gcra, GcraState, Kind, Rule, RuleError, SlidingLog,
    SlidingLogState, SlidingWindow, SlidingWindowState, TokenBucket, TokenBucketState,
};

/// A rate-limiting algorithm as a pure function of (state, time, cost).
///
/// Contract: `decide` is only called with `1 ≤ cost ≤ max_cost()`, and a state that
/// `fresh_at_ms(state) ≤ now_ms` is *equivalent to fresh*: replacing it by
/// `fresh(now_ms)` changes no decision. That is what lets backends drop idle keys.
pub trait Algorithm: Clone + Send + Sync + 'static {
    /// The per-key state.
    type State: Send + Sync + 'static;

    /// The validated rule this algorithm applies.
    fn rule(&self) -> Rule;

    /// The largest cost ever admissible at once ([`Decision::limit`]).
    fn max_cost(&self) -> u64;

    /// The state of a key never seen before, at `now_ms`.
    fn fresh(&self, now_ms: u64) -> Self::State;

    /// Decides a request of `cost` at `now_ms`, updating `state` in place (a denial
    /// consumes nothing but may normalise the state). Time going backwards is treated
    /// as no time passing.
    fn decide(&self, state: &mut Self::State, now_ms: u64, cost: u64) -> Decision;

    /// The time from which `state` is equivalent to [`Algorithm::fresh`].
    fn fresh_at_ms(&self, state: &Self::State) -> u64;

    /// Heap bytes owned by `state` (beyond its inline size).
    fn heap_bytes(&self, _state: &Self::State) -> usize {
        0
    }
}

/// Any of the five algorithms, chosen from a [`Rule`] at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyAlgorithm {
    /// A token bucket.
    TokenBucket(TokenBucket),
    /// GCRA.
    Gcra(Gcra),
    /// A fixed window counter.
    FixedWindow(FixedWindow),
    /// A sliding log.
    SlidingLog(SlidingLog),
    /// A sliding window counter.
    SlidingWindow(SlidingWindow),
}

/// The state of an [`AnyAlgorithm`] key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyState {
    /// Token bucket state.
    TokenBucket(TokenBucketState),
    /// GCRA state.
    Gcra(GcraState),
    /// Fixed window state.
    FixedWindow(FixedWindowState),
    /// Sliding log state.
    SlidingLog(SlidingLogState),
    /// Sliding window counter state.
    SlidingWindow(SlidingWindowState),
}

impl AnyAlgorithm {
    /// The algorithm `rule` names.
    ///
    /// # Errors
    /// The rule's [`RuleError`].
    pub fn from_rule(rule: &Rule) -> Result<Self, RuleError> {
        Ok(match rule.kind {
            Kind::TokenBucket => {
                Self::TokenBucket(TokenBucket::new(rule.limit, rule.period_ms, rule.burst)?)
            }
            Kind::Gcra => Self::Gcra(Gcra::new(rule.limit, rule.period_ms, rule.burst)?),
            Kind::FixedWindow => Self::FixedWindow(FixedWindow::new(rule.limit, rule.period_ms)?),
            Kind::SlidingLog => Self::SlidingLog(SlidingLog::new(rule.limit, rule.period_ms)?),
            Kind::SlidingWindow => {
                Self::SlidingWindow(SlidingWindow::new(rule.limit, rule.period_ms)?)
            }
        })
    }
}

/// Dispatches on matching (algorithm, state) pairs; a mismatch is a bug in this crate.
macro_rules! dispatch {
    ($self:ident, $state:ident, $a:ident, $s:ident => $e:expr) => {
        match ($self, $state) {
            (AnyAlgorithm::TokenBucket($a), AnyState::TokenBucket($s)) => $e,
            (AnyAlgorithm::Gcra($a), AnyState::Gcra($s)) => $e,
            (AnyAlgorithm::FixedWindow($a), AnyState::FixedWindow($s)) => $e,
            (AnyAlgorithm::SlidingLog($a), AnyState::SlidingLog($s)) => $e,
            (AnyAlgorithm::SlidingWindow($a), AnyState::SlidingWindow($s)) => $e,
            _ => unreachable!("state of another algorithm"),
        }
    };
}

impl Algorithm for AnyAlgorithm {
    type State = AnyState;

    fn rule(&self) -> Rule {
        match self {
            Self::TokenBucket(a) => a.rule(),
            Self::Gcra(a) => a.rule(),
            Self::FixedWindow(a) => a.rule(),
            Self::SlidingLog(a) => a.rule(),
            Self::SlidingWindow(a) => a.rule(),
        }
    }

    fn max_cost(&self) -> u64 {
        match self {
            Self::TokenBucket(a) => a.max_cost(),
            Self::Gcra(a) => a.max_cost(),
            Self::FixedWindow(a) => a.max_cost(),
            Self::SlidingLog(a) => a.max_cost(),
            Self::SlidingWindow(a) => a.max_cost(),
        }
    }

    fn fresh(&self, now_ms: u64) -> AnyState {
        match self {
            Self::TokenBucket(a) => AnyState::TokenBucket(a.fresh(now_ms)),
            Self::Gcra(a) => AnyState::Gcra(a.fresh(now_ms)),
            Self::FixedWindow(a) => AnyState::FixedWindow(a.fresh(now_ms)),
            Self::SlidingLog(a) => AnyState::SlidingLog(a.fresh(now_ms)),
            Self::SlidingWindow(a) => AnyState::SlidingWindow(a.fresh(now_ms)),
        }
    }

    fn decide(&self, state: &mut AnyState, now_ms: u64, cost: u64) -> Decision {
        dispatch!(self, state, a, s => a.decide(s, now_ms, cost))
    }

    fn fresh_at_ms(&self, state: &AnyState) -> u64 {
        dispatch!(self, state, a, s => a.fresh_at_ms(s))
    }

    fn heap_bytes(&self, state: &AnyState) -> usize {
        dispatch!(self, state, a, s => a.heap_bytes(s))
    }
}

/// Table-driven checks shared by the algorithms' unit tests.
#[cfg(test)]
pub(crate) mod table {
    use super::Algorithm;

    /// One step: at `now_ms`, a request of `cost`, and the expected
    /// `(allowed, remaining, retry_after_ms, reset_after_ms)`.
    pub(crate) type Step = (u64, u64, (bool, u64, u64, u64));

    /// Runs `steps` against one key of `algo` and compares every decision.
    pub(crate) fn check<A: Algorithm>(algo: &A, steps: &[Step]) {
        let mut state = algo.fresh(steps[0].0);
        let mut latest = 0;
        for (i, &(now, cost, want)) in steps.iter().enumerate() {
            let d = algo.decide(&mut state, now, cost);
            let got = (d.allowed, d.remaining, d.retry_after_ms, d.reset_after_ms);
            assert_eq!(got, want, "step {i}: at {now} ms, cost {cost}");
            assert_eq!(d.limit, algo.max_cost());
            if now >= latest {
                latest = now;
                assert_eq!(algo.fresh_at_ms(&state), now + d.reset_after_ms, "step {i}: fresh_at");
            }
        }
    }
}
