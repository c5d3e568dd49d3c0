//! Closed loop: `N` connections, each sending its next request the moment the
//! previous one completes. It finds the most the server (or the generator)
//! can do, but a slow response also delays the requests behind it, so its
//! latencies understate what users arriving at a fixed rate would see
//! (coordinated omission); use the open loop for latency.

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::LoadtestError;
use super::client::{self, Conn};
use super::config::{Config, Target};
use super::recorder::{Outcome, Recorder};
use super::scenario::Scenario;

/// Runs `connections` workers through warm-up and the measured window.
///
/// # Errors
/// A worker task panicked.
pub(crate) async fn run(
    config: &Config,
    scenario: Arc<Scenario>,
    connections: usize,
) -> Result<Recorder, LoadtestError> {
    let start = Instant::now();
    let warm_end = start + Duration::from_secs(config.warmup_secs);
    let end = warm_end + Duration::from_secs(config.duration_secs);
    let timeout = Duration::from_millis(config.timeout_ms);
    let target = Arc::new(config.target.clone());
    let mut workers = JoinSet::new();
    for id in 0..connections {
        let rng =
            SmallRng::seed_from_u64(config.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let worker = Worker { scenario: Arc::clone(&scenario), target: Arc::clone(&target), rng };
        workers.spawn(worker.run(warm_end, end, timeout));
    }
    let mut total = Recorder::new();
    while let Some(joined) = workers.join_next().await {
        total.merge(&joined.map_err(|e| LoadtestError::Worker(e.to_string()))?);
    }
    Ok(total)
}

struct Worker {
    scenario: Arc<Scenario>,
    target: Arc<Target>,
    rng: SmallRng,
}

impl Worker {
    /// Sends requests back to back until `end`; records those started after
    /// `warm_end`. Bounded in time: each request by `timeout`, the loop by `end`.
    async fn run(mut self, warm_end: Instant, end: Instant, timeout: Duration) -> Recorder {
        let mut recorder = Recorder::new();
        let mut conn: Option<Conn> = None;
        loop {
            let sent = Instant::now();
            if sent >= end {
                break;
            }
            let op = self.scenario.next_op(&mut self.rng);
            let outcome = match client::exchange(&mut conn, &self.target, op.request, timeout).await
            {
                Ok(response) => op.expect.judge(response.status),
                Err(kind) => Outcome::Transport(kind),
            };
            if sent >= warm_end {
                recorder.record(sent.elapsed(), outcome);
            }
        }
        if let Some(conn) = conn {
            conn.close().await;
        }
        recorder
    }
}
