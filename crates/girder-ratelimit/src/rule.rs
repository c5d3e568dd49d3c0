//! What a limit is: an algorithm, a sustained rate (`limit` per `period_ms`) and, for the
//! bucket algorithms, a burst. Validated once, so the arithmetic after it cannot
//! overflow — in Rust's `u64` or in the doubles of the Redis Lua scripts.

use thiserror::Error;

/// The largest `limit` or `burst` accepted (2^32).
pub const MAX_LIMIT: u64 = 1 << 32;

/// The longest period accepted: 30 days in milliseconds.
pub const MAX_PERIOD_MS: u64 = 30 * 24 * 3_600_000;

/// The largest `limit · period_ms` and `burst · period_ms` accepted (2^50). Every
/// intermediate value of every algorithm is below 2^51, so Lua's doubles (exact to
/// 2^53) compute the same integers as Rust.
pub const MAX_PRODUCT: u64 = 1 << 50;

/// The largest `limit` of a sliding log: it keeps up to `min(limit, period_ms)`
/// entries per key, 16 bytes each.
pub const MAX_SLIDING_LOG_LIMIT: u64 = 100_000;

/// Which algorithm a [`Rule`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// [`crate::TokenBucket`]: `burst` tokens, refilled at `limit` per `period_ms`.
    TokenBucket,
    /// [`crate::Gcra`]: the generic cell rate algorithm (theoretical arrival time);
    /// decides exactly as the token bucket with the same numbers.
    Gcra,
    /// [`crate::FixedWindow`]: `limit` per epoch-aligned window of `period_ms`.
    FixedWindow,
    /// [`crate::SlidingLog`]: `limit` in every window of `period_ms`, exactly.
    SlidingLog,
    /// [`crate::SlidingWindow`]: the weighted two-window counter approximation.
    SlidingWindow,
}

impl Kind {
    /// Whether `burst` is meaningful (bucket algorithms) or must equal `limit`.
    #[must_use]
    pub const fn has_burst(self) -> bool {
        matches!(self, Self::TokenBucket | Self::Gcra)
    }

    /// Every kind, for tests and tables.
    pub const ALL: [Self; 5] =
        [Self::TokenBucket, Self::Gcra, Self::FixedWindow, Self::SlidingLog, Self::SlidingWindow];
}

/// A rate limit: `limit` units per `period_ms` with the given algorithm, and for the
/// bucket algorithms up to `burst` units at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The algorithm.
    pub kind: Kind,
    /// Units admitted per period (the sustained rate, or the window quota).
    pub limit: u64,
    /// The period, in milliseconds.
    pub period_ms: u64,
    /// Bucket algorithms: the capacity (most units admitted at once). Window algorithms:
    /// must equal `limit`.
    pub burst: u64,
}

impl Rule {
    /// `limit` per `period_ms` with `burst = limit`.
    #[must_use]
    pub const fn new(kind: Kind, limit: u64, period_ms: u64) -> Self {
        Self { kind, limit, period_ms, burst: limit }
    }

    /// The same rule with another burst (bucket algorithms only).
    #[must_use]
    pub const fn with_burst(self, burst: u64) -> Self {
        Self { burst, ..self }
    }

    /// Checks the numbers against the bounds above.
    ///
    /// # Errors
    /// The [`RuleError`] naming the first bad number.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(RuleError::Limit { limit: self.limit });
        }
        if self.period_ms == 0 || self.period_ms > MAX_PERIOD_MS {
            return Err(RuleError::Period { period_ms: self.period_ms });
        }
        if self.kind.has_burst() {
            if self.burst == 0 || self.burst > MAX_LIMIT {
                return Err(RuleError::Burst { burst: self.burst });
            }
        } else if self.burst != self.limit {
            return Err(RuleError::BurstNotSupported { kind: self.kind });
        }
        let too_big = |n: u64| n.checked_mul(self.period_ms).is_none_or(|p| p > MAX_PRODUCT);
        if too_big(self.limit) || too_big(self.burst) {
            return Err(RuleError::TooLarge);
        }
        if self.kind == Kind::SlidingLog && self.limit > MAX_SLIDING_LOG_LIMIT {
            return Err(RuleError::LogTooLong { limit: self.limit });
        }
        Ok(())
    }
}

/// Why a [`Rule`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RuleError {
    /// `limit` is 0 or above [`MAX_LIMIT`].
    #[error("limit {limit} outside 1..={max}", max = MAX_LIMIT)]
    Limit {
        /// The limit given.
        limit: u64,
    },
    /// `period_ms` is 0 or above [`MAX_PERIOD_MS`].
    #[error("period {period_ms} ms outside 1..={max} ms", max = MAX_PERIOD_MS)]
    Period {
        /// The period given.
        period_ms: u64,
    },
    /// `burst` is 0 or above [`MAX_LIMIT`].
    #[error("burst {burst} outside 1..={max}", max = MAX_LIMIT)]
    Burst {
        /// The burst given.
        burst: u64,
    },
    /// A window algorithm was given a burst different from its limit.
    #[error("{kind:?} has no burst: burst must equal limit")]
    BurstNotSupported {
        /// The algorithm.
        kind: Kind,
    },
    /// `limit · period_ms` or `burst · period_ms` is above [`MAX_PRODUCT`].
    #[error("limit or burst times period_ms exceeds 2^50")]
    TooLarge,
    /// A sliding log with `limit` above [`MAX_SLIDING_LOG_LIMIT`].
    #[error("sliding log limit {limit} above {max}", max = MAX_SLIDING_LOG_LIMIT)]
    LogTooLong {
        /// The limit given.
        limit: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_bad_number() {
        let check = |rule: Rule, want: Result<(), RuleError>| {
            assert_eq!(rule.validate(), want, "{rule:?}");
        };
        let tb = Rule::new(Kind::TokenBucket, 10, 1_000);
        check(tb, Ok(()));
        check(Rule { limit: 0, ..tb }, Err(RuleError::Limit { limit: 0 }));
        check(Rule { limit: MAX_LIMIT + 1, ..tb }, Err(RuleError::Limit { limit: MAX_LIMIT + 1 }));
        check(Rule { period_ms: 0, ..tb }, Err(RuleError::Period { period_ms: 0 }));
        check(Rule { period_ms: u64::MAX, ..tb }, Err(RuleError::Period { period_ms: u64::MAX }));
        check(tb.with_burst(0), Err(RuleError::Burst { burst: 0 }));
        check(tb.with_burst(1), Ok(()));
        check(
            Rule::new(Kind::FixedWindow, 10, 1_000).with_burst(20),
            Err(RuleError::BurstNotSupported { kind: Kind::FixedWindow }),
        );
        check(Rule::new(Kind::Gcra, MAX_LIMIT, MAX_PERIOD_MS), Err(RuleError::TooLarge));
        check(tb.with_burst(MAX_LIMIT).with_period(MAX_PERIOD_MS), Err(RuleError::TooLarge));
        check(
            Rule::new(Kind::SlidingLog, MAX_SLIDING_LOG_LIMIT + 1, 1_000),
            Err(RuleError::LogTooLong { limit: MAX_SLIDING_LOG_LIMIT + 1 }),
        );
        check(Rule::new(Kind::SlidingLog, MAX_SLIDING_LOG_LIMIT, 1_000), Ok(()));
    }

    impl Rule {
        const fn with_period(self, period_ms: u64) -> Self {
            Self { period_ms, ..self }
        }
    }
}
