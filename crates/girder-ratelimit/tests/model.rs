//! Model-based property tests: each in-process limiter against a brute-force model that
//! keeps the full history of admissions and answers every question by recomputing from
//! it — no state, no cleverness — under random time steps, costs and keys.

use std::sync::Arc;

use girder_core::ManualClock;
use girder_ratelimit::{Decision, Kind, MemoryConfig, MemoryLimiter, Rule};
use proptest::prelude::*;

/// The admitted history of one key, and the definition of each algorithm over it.
struct Model {
    rule: Rule,
    /// `(time_ms, cost)` of every admission, in order.
    history: Vec<(u64, u64)>,
}

impl Model {
    fn max_cost(&self) -> u64 {
        if self.rule.kind.has_burst() { self.rule.burst } else { self.rule.limit }
    }

    fn sum(&self, keep: impl Fn(u64) -> bool) -> u64 {
        self.history.iter().filter(|(t, _)| keep(*t)).map(|(_, c)| c).sum()
    }

    /// Would a request of `cost` be admitted at `t` (no later than any admission)?
    fn admissible(&self, t: u64, cost: u64) -> bool {
        let Rule { limit, period_ms: p, burst, .. } = self.rule;
        match self.rule.kind {
            // In every span since an earlier admission k (inclusive), what was admitted
            // plus this must fit the burst plus the refill: the level of a capped bucket.
            Kind::TokenBucket | Kind::Gcra => {
                let cap = burst * p;
                let mut after = 0;
                for &(tk, ck) in self.history.iter().rev() {
                    after += ck * p;
                    if cap + limit * (t - tk) < after + cost * p {
                        return false;
                    }
                }
                cap >= cost * p
            }
            Kind::FixedWindow => self.sum(|tj| tj / p == t / p) + cost <= limit,
            Kind::SlidingLog => self.sum(|tj| tj + p > t) + cost <= limit,
            Kind::SlidingWindow => {
                let w = t / p;
                let prev = self.sum(|tj| tj / p + 1 == w);
                let cur = self.sum(|tj| tj / p == w);
                cur + cost <= limit && prev * (p - t % p) <= (limit - cur - cost) * p
            }
        }
    }

    fn remaining(&self, t: u64) -> u64 {
        (1..=self.max_cost()).take_while(|&k| self.admissible(t, k)).count() as u64
    }

    fn decide(&mut self, t: u64, cost: u64) -> Decision {
        let allowed = self.admissible(t, cost);
        if allowed {
            self.history.push((t, cost));
        }
        // Far enough for every algorithm to be fresh again.
        let horizon = 3 * self.rule.period_ms * self.rule.burst.max(1) + 2;
        let retry_after_ms = if allowed {
            0
        } else {
            (1..horizon).find(|&d| self.admissible(t + d, cost)).expect("retry within horizon")
        };
        let max = self.max_cost();
        let reset_after_ms =
            (0..horizon).find(|&d| self.remaining(t + d) == max).expect("reset within horizon");
        Decision {
            allowed,
            remaining: self.remaining(t),
            retry_after_ms,
            reset_after_ms,
            limit: max,
        }
    }
}

fn rule_strategy() -> impl Strategy<Value = Rule> {
    (0..5_usize, 1..=8_u64, 1..=40_u64, 1..=6_u64).prop_map(|(k, limit, period_ms, burst)| {
        let kind = Kind::ALL[k];
        let rule = Rule::new(kind, limit, period_ms);
        if kind.has_burst() { rule.with_burst(burst) } else { rule }
    })
}

/// `(time step, cost seed, key)`: steps are often 0 (same millisecond), often small,
/// sometimes longer than a period.
fn ops_strategy() -> impl Strategy<Value = Vec<(u64, u64, usize)>> {
    let step = prop_oneof![3 => Just(0_u64), 5 => 1..20_u64, 2 => 20..200_u64];
    proptest::collection::vec((step, 0..100_u64, 0..2_usize), 1..50)
}

fn cost_of(seed: u64, max: u64) -> u64 {
    if seed < 70 { 1 } else { 1 + seed % max }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_limiter_matches_its_model(rule in rule_strategy(), ops in ops_strategy()) {
        let clock = Arc::new(ManualClock::new(0));
        let limiter = MemoryLimiter::from_rule(&rule, MemoryConfig::default(), clock).unwrap();
        let mut models = [Model { rule, history: vec![] }, Model { rule, history: vec![] }];
        let mut now = 1_000_u64;
        for (i, (step, seed, key)) in ops.into_iter().enumerate() {
            now += step;
            let cost = cost_of(seed, models[key].max_cost());
            let want = models[key].decide(now, cost);
            let got = limiter.check_at(["a", "b"][key], cost, now).unwrap();
            prop_assert_eq!(got, want, "op {}: key {} cost {} at {}", i, key, cost, now);
        }
    }

    #[test]
    fn gcra_decides_exactly_as_the_token_bucket(
        limit in 1..=50_u64,
        period_ms in 1..=2_000_u64,
        burst in 1..=20_u64,
        ops in proptest::collection::vec((0..300_u64, 0..100_u64), 1..200),
    ) {
        let clock = Arc::new(ManualClock::new(0));
        let tb = Rule::new(Kind::TokenBucket, limit, period_ms).with_burst(burst);
        let gcra = Rule { kind: Kind::Gcra, ..tb };
        let a = MemoryLimiter::from_rule(&tb, MemoryConfig::default(), clock.clone()).unwrap();
        let b = MemoryLimiter::from_rule(&gcra, MemoryConfig::default(), clock).unwrap();
        let mut now = 0;
        for (step, seed) in ops {
            now += step;
            let cost = cost_of(seed, burst);
            prop_assert_eq!(a.check_at("k", cost, now).unwrap(), b.check_at("k", cost, now).unwrap());
        }
    }

    /// The sliding window counter's documented bound: in any span of Δ < period ms,
    /// at most limit · (1 + Δ / period) admitted — under bursty random traffic.
    #[test]
    fn sliding_window_bound(
        limit in 1..=20_u64,
        period_ms in 2..=100_u64,
        ops in proptest::collection::vec((prop_oneof![3 => Just(0_u64), 1 => 1..30_u64], 0..100_u64), 1..300),
    ) {
        let rule = Rule::new(Kind::SlidingWindow, limit, period_ms);
        let clock = Arc::new(ManualClock::new(0));
        let l = MemoryLimiter::from_rule(&rule, MemoryConfig::default(), clock).unwrap();
        let mut now = 0;
        let mut admitted = vec![];
        for (step, seed) in ops {
            now += step;
            let cost = cost_of(seed, limit);
            if l.check_at("k", cost, now).unwrap().allowed {
                admitted.push((now, cost));
            }
        }
        for j in 0..admitted.len() {
            let mut sum = 0;
            for i in (0..=j).rev() {
                let span = admitted[j].0 - admitted[i].0;
                if span >= period_ms {
                    break;
                }
                sum += admitted[i].1;
                prop_assert!(sum * period_ms <= limit * (period_ms + span), "{} in {} ms", sum, span);
            }
        }
    }
}

/// The fixed window's edge burst, next to the sliding algorithms on the same traffic:
/// `limit` in the last millisecond of a window and again in the first of the next.
#[test]
fn only_the_fixed_window_admits_twice_the_limit_across_an_edge() {
    let check = |kind: Kind, want: u64| {
        let rule = Rule::new(kind, 10, 1_000);
        let l =
            MemoryLimiter::from_rule(&rule, MemoryConfig::default(), Arc::new(ManualClock::new(0)))
                .unwrap();
        let admitted: u64 =
            (0..40).map(|i| u64::from(l.check_at("k", 1, 999 + i / 20).unwrap().allowed)).sum();
        assert_eq!(admitted, want, "{kind:?}");
    };
    check(Kind::FixedWindow, 20);
    check(Kind::SlidingLog, 10);
    // At 1 ms into the next window the previous 10 still weigh 9.99: nothing more fits.
    check(Kind::SlidingWindow, 10);
    let bucket = |kind: Kind| Rule::new(kind, 10, 1_000).with_burst(10);
    for kind in [Kind::TokenBucket, Kind::Gcra] {
        let l = MemoryLimiter::from_rule(
            &bucket(kind),
            MemoryConfig::default(),
            Arc::new(ManualClock::new(0)),
        )
        .unwrap();
        let admitted: u64 =
            (0..40).map(|i| u64::from(l.check_at("k", 1, 999 + i / 20).unwrap().allowed)).sum();
        // The burst; 1 ms refills 0.01 token.
        assert_eq!(admitted, 10, "{kind:?}");
    }
}
