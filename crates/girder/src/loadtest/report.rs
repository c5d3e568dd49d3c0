//! The result of a run: throughput, latency percentiles from the merged HDR
//! histogram, and every error counted by HTTP status and by transport kind.
//! Rendered as text for people or serialized as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::config::{Config, Mode};
use super::recorder::Recorder;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// The measured part of a run (warm-up excluded).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Closed loop: connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    /// Open loop: target rate, requests per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rate_per_sec: Option<f64>,
    /// Open loop: in-flight cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// Measured seconds.
    pub duration_secs: u64,
    /// Completed requests: `successes + errors`.
    pub requests: u64,
    /// Requests answered with the expected status.
    pub successes: u64,
    /// Requests that failed, by status or transport.
    pub errors: u64,
    /// Completed requests per measured second.
    pub throughput_per_sec: f64,
    /// Latency of completed requests, µs. Open loop: from the intended send time.
    pub latency_us: Latency,
    /// Unexpected statuses and their counts.
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Transport failures by kind and their counts.
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    /// Open loop: requests sent later than due (included in `requests`).
    pub late: u64,
    /// Open loop: requests due in the window but never sent (not in `requests`).
    pub dropped: u64,
    /// Bitly: links created before the run.
    pub links_seeded: usize,
}

impl Report {
    pub(crate) fn new(config: &Config, recorder: &Recorder, links_seeded: usize) -> Self {
        let (mode, connections, target_rate_per_sec, max_in_flight) = match config.mode {
            Mode::Closed { connections } => ("closed", Some(connections), None, None),
            Mode::Open { rate_per_sec, max_in_flight } => {
                ("open", None, Some(rate_per_sec), Some(max_in_flight))
            }
        };
        let h = &recorder.latency_us;
        let empty = h.is_empty();
        let at = |q: f64| if empty { 0 } else { h.value_at_quantile(q) };
        let requests = recorder.completed();
        Self {
            scenario: config.scenario.name(),
            mode,
            connections,
            target_rate_per_sec,
            max_in_flight,
            duration_secs: config.duration_secs,
            requests,
            successes: recorder.successes,
            errors: recorder.errors(),
            throughput_per_sec: requests as f64 / config.duration_secs as f64,
            latency_us: Latency {
                p50: at(0.5),
                p90: at(0.9),
                p99: at(0.99),
                p999: at(0.999),
                max: if empty { 0 } else { h.max() },
                mean: if empty { 0.0 } else { h.mean() },
            },
            errors_by_status: recorder.by_status.clone(),
            errors_by_kind: recorder.by_kind.iter().map(|(k, n)| (k.name(), *n)).collect(),
            late: recorder.late,
            dropped: recorder.dropped,
            links_seeded,
        }
    }
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1_000.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scenario {} · ", self.scenario)?;
        match (self.connections, self.target_rate_per_sec, self.max_in_flight) {
            (Some(c), _, _) => writeln!(f, "closed loop, {c} connections")?,
            (_, Some(rate), Some(cap)) => {
                writeln!(f, "open loop, {rate} req/s target, at most {cap} in flight")?;
            }
            _ => writeln!(f, "{}", self.mode)?,
        }
        if self.links_seeded > 0 {
            writeln!(f, "seeded     {} links", self.links_seeded)?;
        }
        writeln!(
            f,
            "requests   {} in {} s = {:.1} req/s ({} ok, {} errors)",
            self.requests, self.duration_secs, self.throughput_per_sec, self.successes, self.errors
        )?;
        if self.mode == "open" {
            writeln!(
                f,
                "schedule   {} sent late, {} dropped (never sent)",
                self.late, self.dropped
            )?;
        }
        let l = &self.latency_us;
        let from = if self.mode == "open" { " (from intended send time)" } else { "" };
        writeln!(f, "latency{from}")?;
        writeln!(f, "  p50      {}", ms(l.p50))?;
        writeln!(f, "  p90      {}", ms(l.p90))?;
        writeln!(f, "  p99      {}", ms(l.p99))?;
        writeln!(f, "  p99.9    {}", ms(l.p999))?;
        writeln!(f, "  max      {}", ms(l.max))?;
        for (status, n) in &self.errors_by_status {
            writeln!(f, "error      HTTP {status}: {n}")?;
        }
        for (kind, n) in &self.errors_by_kind {
            writeln!(f, "error      {kind}: {n}")?;
        }
        Ok(())
    }
}
