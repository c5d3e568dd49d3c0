//! Open loop: request `i` is due at `start + i / rate`, whatever happened to
//! the requests before it, and its latency is measured from that due time.
//! Pattern: constant-throughput load without coordinated omission (wrk2's).
//!
//! One dispatcher owns the schedule, the recorder and a stack of idle
//! connections; each request runs in its own task on a connection it borrows
//! and hands back. At most `max_in_flight` run at once: when the cap is
//! reached the dispatcher waits for one to finish, and the due request goes
//! out late, its wait included in its latency and counted in `late`. Requests
//! due in the window that could not be sent before it closed (give or take
//! the late tolerance) are `dropped`.

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use super::LoadtestError;
use super::client::{self, Conn};
use super::config::{Config, Target};
use super::recorder::{Outcome, Recorder};
use super::scenario::{Op, Scenario};

/// A request that starts more than this after its due time counts as late.
/// Tokio's timer has millisecond granularity, so anything finer is noise.
const LATE_TOLERANCE: Duration = Duration::from_millis(2);

/// What a request task hands back to the dispatcher.
struct Done {
    outcome: Outcome,
    latency: Duration,
    measured: bool,
    conn: Option<Conn>,
}

/// The schedule: request `i` is due `i * interval` after the start.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    interval_ns: f64,
}

impl Schedule {
    fn due(self, i: u64) -> Duration {
        Duration::from_nanos((i as f64 * self.interval_ns) as u64)
    }

    /// How many requests are due strictly before `at`: the first `n` with
    /// `due(n) >= at`, defined through `due` itself so float rounding cannot
    /// make the two disagree.
    fn count_before(self, at: Duration) -> u64 {
        let mut n = (at.as_nanos() as f64 / self.interval_ns).ceil() as u64;
        // The estimate is off by at most one or two either way.
        while n > 0 && self.due(n - 1) >= at {
            n -= 1;
        }
        while self.due(n) < at {
            n += 1;
        }
        n
    }
}

/// Runs the schedule at `rate_per_sec` with at most `max_in_flight` requests out.
///
/// # Errors
/// A request task panicked.
pub(crate) async fn run(
    config: &Config,
    scenario: Arc<Scenario>,
    rate_per_sec: f64,
    max_in_flight: usize,
) -> Result<Recorder, LoadtestError> {
    let schedule = Schedule { interval_ns: 1e9 / rate_per_sec };
    let warmup = Duration::from_secs(config.warmup_secs);
    let total = warmup + Duration::from_secs(config.duration_secs);
    let first_measured = schedule.count_before(warmup);
    let scheduled = schedule.count_before(total);
    let timeout = Duration::from_millis(config.timeout_ms);
    let target = Arc::new(config.target.clone());
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let mut recorder = Recorder::new();
    let mut idle: Vec<Conn> = Vec::new();
    let mut in_flight: JoinSet<Done> = JoinSet::new();

    let start = Instant::now();
    // Timer wake-ups run up to a millisecond late, so a request due just before
    // the end is still sent if it is within the late tolerance of it.
    let close = start + total + LATE_TOLERANCE;
    let mut next = 0_u64;
    let mut failure = None;
    while next < scheduled {
        if in_flight.len() >= max_in_flight {
            // At the cap: the due request must wait for a free slot.
            if let Some(joined) = in_flight.join_next().await {
                reap(joined, &mut recorder, &mut idle, &mut failure);
            }
            if Instant::now() >= close {
                break;
            }
            continue;
        }
        let due = start + schedule.due(next);
        tokio::select! {
            biased;
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                reap(joined, &mut recorder, &mut idle, &mut failure);
            }
            () = tokio::time::sleep_until(due) => {
                let now = Instant::now();
                if now >= close {
                    break;
                }
                // Send everything already due in one go (bounded by the cap and
                // the schedule) rather than re-arming a timer per request.
                let mut due = due;
                while due <= now && next < scheduled && in_flight.len() < max_in_flight {
                    let measured = next >= first_measured;
                    if measured && now.duration_since(due) > LATE_TOLERANCE {
                        recorder.late += 1;
                    }
                    let op = scenario.next_op(&mut rng);
                    let request = Request { op, due, measured, conn: idle.pop() };
                    in_flight.spawn(request.send(Arc::clone(&target), timeout));
                    next += 1;
                    due = start + schedule.due(next);
                }
            }
        }
    }
    // Due within the measured window but never sent: the generator (or the
    // in-flight cap) could not keep the schedule. Counted, never hidden.
    recorder.dropped = scheduled - next.max(first_measured);

    // Every request is bounded by `timeout`, so this drains in bounded time.
    while let Some(joined) = in_flight.join_next().await {
        reap(joined, &mut recorder, &mut idle, &mut failure);
    }
    for conn in idle {
        conn.close().await;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(recorder),
    }
}

fn reap(
    joined: Result<Done, JoinError>,
    recorder: &mut Recorder,
    idle: &mut Vec<Conn>,
    failure: &mut Option<LoadtestError>,
) {
    match joined {
        Ok(done) => {
            if done.measured {
                recorder.record(done.latency, done.outcome);
            }
            idle.extend(done.conn);
        }
        Err(e) => *failure = failure.take().or(Some(LoadtestError::Worker(e.to_string()))),
    }
}

struct Request {
    op: Op,
    due: Instant,
    measured: bool,
    conn: Option<Conn>,
}

impl Request {
    async fn send(mut self, target: Arc<Target>, timeout: Duration) -> Done {
        let outcome =
            match client::exchange(&mut self.conn, &target, self.op.request, timeout).await {
                Ok(response) => self.op.expect.judge(response.status),
                Err(kind) => Outcome::Transport(kind),
            };
        // From the due time, not the send time: waiting for a slot is latency too.
        Done { outcome, latency: self.due.elapsed(), measured: self.measured, conn: self.conn }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_counts_agree_with_due_times() {
        for rate in [1.0, 3.0, 7.5, 100.0, 12_345.0] {
            let schedule = Schedule { interval_ns: 1e9 / rate };
            for secs in [1, 2, 10] {
                let at = Duration::from_secs(secs);
                let n = schedule.count_before(at);
                assert!(n == 0 || schedule.due(n - 1) < at, "rate {rate}: last due is inside");
                assert!(schedule.due(n) >= at, "rate {rate}: next due is outside");
                assert!((n as f64 - rate * secs as f64).abs() <= 1.0);
            }
        }
    }
}
