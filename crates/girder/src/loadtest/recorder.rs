//! What each worker keeps while it runs: an HDR histogram of latencies in
//! microseconds and exact counts of outcomes. Workers own their recorder (no
//! shared state on the hot path) and the recorders are merged once, at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::client::TransportErrorKind;

/// Significant decimal digits the latency histogram keeps (0.1% relative error).
const SIGNIFICANT_DIGITS: u8 = 3;

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The status the scenario expected.
    Success,
    /// A complete response with an unexpected status.
    Status(u16),
    /// No complete response.
    Transport(TransportErrorKind),
}

/// Latencies and outcome counts of the measured requests.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) successes: u64,
    pub(crate) by_status: BTreeMap<u16, u64>,
    pub(crate) by_kind: BTreeMap<TransportErrorKind, u64>,
    /// Open loop: measured requests sent later than due (they are still measured from when due).
    pub(crate) late: u64,
    /// Open loop: measured requests due before the end that were never sent.
    pub(crate) dropped: u64,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        // Auto-resizing: memory follows the largest latency actually seen, so a
        // thousand idle workers cost little.
        let latency_us = Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits is valid");
        Self {
            latency_us,
            successes: 0,
            by_status: BTreeMap::new(),
            by_kind: BTreeMap::new(),
            late: 0,
            dropped: 0,
        }
    }

    /// Counts one completed request (success or error) and its latency.
    pub(crate) fn record(&mut self, latency: Duration, outcome: Outcome) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        if self.latency_us.record(micros).is_err() {
            // Beyond what even a resized histogram holds: keep the count, clamp the value.
            self.latency_us.saturating_record(micros);
        }
        match outcome {
            Outcome::Success => self.successes += 1,
            Outcome::Status(status) => *self.by_status.entry(status).or_default() += 1,
            Outcome::Transport(kind) => *self.by_kind.entry(kind).or_default() += 1,
        }
    }

    /// Requests that completed, successfully or not.
    pub(crate) fn completed(&self) -> u64 {
        self.successes + self.errors()
    }

    /// Requests that completed with an error.
    pub(crate) fn errors(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.by_kind.values().sum::<u64>()
    }

    /// Adds `other`'s counts and latencies to these.
    pub(crate) fn merge(&mut self, other: &Self) {
        // Both histograms auto-resize, so adding cannot fail on range.
        let _ = self.latency_us.add(&other.latency_us);
        self.successes += other.successes;
        for (status, n) in &other.by_status {
            *self.by_status.entry(*status).or_default() += n;
        }
        for (kind, n) in &other.by_kind {
            *self.by_kind.entry(*kind).or_default() += n;
        }
        self.late += other.late;
        self.dropped += other.dropped;
        debug_assert_eq!(
            self.latency_us.len(),
            self.completed(),
            "one latency per completed request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_counts_match_an_exact_model() {
        let outcomes = [
            Outcome::Success,
            Outcome::Status(404),
            Outcome::Transport(TransportErrorKind::Timeout),
            Outcome::Status(503),
            Outcome::Success,
            Outcome::Status(404),
        ];
        let mut parts = [Recorder::new(), Recorder::new(), Recorder::new()];
        for (i, outcome) in outcomes.iter().enumerate() {
            parts[i % 3].record(Duration::from_millis(i as u64 + 1), *outcome);
        }
        let mut total = Recorder::new();
        for part in &parts {
            total.merge(part);
        }
        assert_eq!(total.completed(), 6);
        assert_eq!((total.successes, total.errors()), (2, 4));
        assert_eq!(total.by_status, BTreeMap::from([(404, 2), (503, 1)]));
        assert_eq!(total.by_kind, BTreeMap::from([(TransportErrorKind::Timeout, 1)]));
        assert!(total.latency_us.equivalent(total.latency_us.max(), 6_000), "6 ms within 0.1%");
        assert!(total.latency_us.min() <= 1_000);
    }
}
