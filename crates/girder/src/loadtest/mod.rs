//! `girder loadtest`: a built-in HTTP load generator for any server, with one
//! scenario per reference system (`bitly`) and a trivial one (`get`) for
//! measuring the generator itself against wrk; [`push`] holds the push scenarios
//! (`sse`: Live Comments streams, `ws`: WhatsApp sockets) and [`uber`] the ride
//! matching one (drivers moving and taking pushed offers, riders asking at once).
//!
//! Two ways to pace requests:
//!
//! - **Closed loop** (`--connections N`, `closed_loop.rs`): N connections, each
//!   sending its next request when the previous completes. It measures the
//!   most throughput, but its latencies suffer *coordinated omission*: while a
//!   response is slow, the requests that would have arrived behind it are
//!   simply never sent, so the stall shows up once instead of in every request
//!   it delayed.
//! - **Open loop** (`--rate R`, `open_loop.rs`): request `i` is due at
//!   `start + i / R` no matter how earlier requests fared, and its latency is
//!   measured from that **intended** send time, not from when it actually went
//!   out. A server stall therefore shows in the latency of every request
//!   scheduled during it, as users arriving at rate R would feel it. In-flight
//!   requests are capped by `--max-in-flight`; a request that had to wait for
//!   a slot is sent late (counted in `late`, its wait part of its latency), and
//!   one still unsent when the window closes is counted in `dropped`.
//!
//! Latencies go into an HDR histogram at microsecond resolution (3 significant
//! digits); errors are counted by HTTP status and by transport kind, and
//! `successes + errors == requests` always. Warm-up requests are not recorded.
//! Every worker and request task is joined before the report is built; every
//! request is bounded by `--timeout-ms` and every loop by the run's end.

mod client;
mod closed_loop;
pub mod config;
mod open_loop;
pub mod push;
mod recorder;
pub mod report;
mod scenario;
pub mod uber;
pub(crate) mod zipf;

use std::sync::Arc;

pub use client::TransportErrorKind;
pub use config::{Config, ConfigError, LoadtestArgs, Mode, ScenarioConfig, Target};
pub use report::{Latency, Report};

use scenario::Scenario;

/// Why a load test could not run to a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadtestError {
    /// The bitly scenario could not create one of its seed links.
    #[error("seeding link {index} of {wanted}: {reason}")]
    Seed {
        /// Index of the link that failed.
        index: usize,
        /// Links asked for.
        wanted: usize,
        /// What went wrong.
        reason: String,
    },
    /// A worker task panicked (a bug in the generator).
    #[error("a load worker failed: {0}")]
    Worker(String),
}

/// Prepares the scenario (seeding bitly links), runs warm-up and the measured
/// window, joins every task and reports.
///
/// # Errors
/// Seeding failed or a worker panicked. Request failures are not errors: they
/// are counted in the report.
pub async fn run(config: &Config) -> Result<Report, LoadtestError> {
    let scenario = Arc::new(Scenario::prepare(config).await?);
    let links_seeded = scenario.links_seeded();
    let recorder = match config.mode {
        Mode::Closed { connections } => closed_loop::run(config, scenario, connections).await?,
        Mode::Open { rate_per_sec, max_in_flight } => {
            open_loop::run(config, scenario, rate_per_sec, max_in_flight).await?
        }
    };
    Ok(Report::new(config, &recorder, links_seeded))
}
