//! `girder lab`: each pattern's trade-off as a reproducible experiment. A run
//! shows a progress bar, prints a table, and writes `results.json`, `report.md`
//! and `plot.svg` (and `plot-2.svg`, … when it draws more) under
//! `./girder-lab/<experiment>/`.

mod cache;
mod contention;
mod fanout;
mod geo;
mod ids;
mod push;
mod ratelimit;
pub mod report;
mod shard;
mod sketches;
mod stream;
mod svg;
mod wal;

use std::path::{Path, PathBuf};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};

pub use report::{Plot, Report, Series};

/// Knobs every experiment understands.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// A small, fast run (CI and smoke tests) instead of the full size.
    pub quick: bool,
    /// Also measure against PostgreSQL at this URL.
    pub postgres_url: Option<String>,
    /// Use the Redis at this URL where an experiment has a shared layer (the cache's
    /// L2); an in-process stand-in otherwise.
    pub redis_url: Option<String>,
    /// Where results go (`./girder-lab` by default).
    pub out_dir: PathBuf,
}

/// What an experiment gets while it runs.
#[derive(Debug)]
pub struct LabContext {
    /// The run's options.
    pub options: LabOptions,
    /// Progress; hidden automatically when stderr is not a terminal.
    pub progress: ProgressBar,
}

impl LabContext {
    /// Starts a new progress phase of `steps` steps.
    pub fn phase(&self, message: &str, steps: u64) {
        self.progress.set_length(steps);
        self.progress.set_position(0);
        self.progress.set_message(message.to_owned());
    }
}

/// An experiment's name, one-line summary and entry point.
#[derive(Debug, Clone, Copy)]
pub struct Experiment {
    /// The name on the command line.
    pub name: &'static str,
    /// One line for `girder lab list`.
    pub summary: &'static str,
    run: fn(&LabContext) -> futures_run::BoxFuture<'_, anyhow::Result<Report>>,
}

mod futures_run {
    //! A boxed future alias, so experiments can be listed in a plain array.
    pub(super) type BoxFuture<'a, T> =
        std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

/// Every experiment, in the catalogue's order.
pub const EXPERIMENTS: &[Experiment] = &[
    Experiment {
        name: "cache",
        summary: "L1 hit ratio and per-layer latency vs L1 size under Zipf traffic; store reads in a stampede with and without single-flight",
        run: |ctx| Box::pin(cache::run(ctx)),
    },
    Experiment {
        name: "contention",
        summary: "one booking workload under naive read-then-write, leases, optimistic versions, row locks and reservations: throughput, p99, retries, aborts, double-bookings",
        run: |ctx| Box::pin(contention::run(ctx)),
    },
    Experiment {
        name: "fanout",
        summary: "news feed on a power-law follower graph: write amplification, fan-out lag and feed-read p50/p99 for push, pull and hybrid at several thresholds; the best threshold",
        run: |ctx| Box::pin(fanout::run(ctx)),
    },
    Experiment {
        name: "geo",
        summary: "radius queries over 10k–1M points in a 50 km city: p50/p99 latency and candidates examined against radius and density for brute force, geohash + 8 neighbours, the sorted-score index, an H3 covering, an R*-tree and Redis GEOSEARCH, all checked to return the same members",
        run: |ctx| Box::pin(geo::run(ctx)),
    },
    Experiment {
        name: "ids",
        summary: "counter+Base62 vs Snowflake vs UUIDv4 vs UUIDv7: length, generation rate, B-tree insert rate as the table grows",
        run: |ctx| Box::pin(ids::run(ctx)),
    },
    Experiment {
        name: "ratelimit",
        summary: "five rate-limit algorithms under bursts and at a window edge; local batching's overshoot vs its bound; in-process vs Redis decision cost",
        run: |ctx| Box::pin(ratelimit::run(ctx)),
    },
    Experiment {
        name: "shard",
        summary: "keys moved on add/remove for ring (256 and 16 vnodes), rendezvous, jump and hash % N vs K/N; load spread (max/mean) over shards; lookups/s at 8 and 64 shards",
        run: |ctx| Box::pin(shard::run(ctx)),
    },
    Experiment {
        name: "sketches",
        summary: "Bloom false-positive rate over n at m = 10,000, k = 3 against the formula (the catalogue's ≈ 2% example); HyperLogLog error at p = 14 from 10 to 10^8 keys against 1.04/√m; Count-Min overestimates against εN on Zipf(1.1), plain and conservative; Space-Saving Top-100 recall and memory beside exact counting on 10M Zipf(1.1) events",
        run: |ctx| Box::pin(sketches::run(ctx)),
    },
    Experiment {
        name: "push",
        summary: "real-time push: requests, bytes and delay of short polling, long polling, SSE and WebSocket for one stream; SSE fan-out delay against viewers (Live Comments); WebSocket 1:1 relay through WhatsApp against a bare axum relay",
        run: |ctx| Box::pin(push::run(ctx)),
    },
    Experiment {
        name: "stream",
        summary: "windowed counting (1-minute tumbling, 100,000 keys): operator and pipeline events/s against a bare hash-map count; completeness and late refusals against allowed lateness",
        run: |ctx| Box::pin(stream::run(ctx)),
    },
    Experiment {
        name: "wal",
        summary: "group commit: acknowledged appends/s and p50/p99 ack latency vs concurrent writers, against the disk's own fdatasync rate and sync bandwidth",
        run: |ctx| Box::pin(wal::run(ctx)),
    },
];

/// The `p` quantile (0..=1) of nanosecond samples, in microseconds (NaN if none).
pub(crate) fn percentile_us(samples: &mut [u64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let index = ((samples.len() - 1) as f64 * p).round() as usize;
    samples[index] as f64 / 1_000.0
}

/// `1234567.0` as `1,234,567` (rounded to a whole number).
pub(crate) fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

/// Now, for the `ran_at` of a report.
pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Looks an experiment up by name.
///
/// # Errors
/// No experiment has that name; the message lists the ones that exist.
pub fn find(name: &str) -> anyhow::Result<&'static Experiment> {
    match EXPERIMENTS.iter().find(|e| e.name == name) {
        Some(e) => Ok(e),
        None => {
            let names: Vec<_> = EXPERIMENTS.iter().map(|e| e.name).collect();
            bail!(
                "no experiment named {name:?}; available: {} (see `girder lab list`)",
                names.join(", ")
            )
        }
    }
}

/// One line per experiment, for `girder lab list`.
#[must_use]
pub fn list() -> String {
    let width = EXPERIMENTS.iter().map(|e| e.name.len()).max().unwrap_or(0);
    EXPERIMENTS.iter().map(|e| format!("{:<width$}  {}\n", e.name, e.summary)).collect()
}

/// Runs one experiment, prints its table and writes its files. Returns the
/// directory the results went to.
///
/// # Errors
/// The experiment failed or its results could not be written.
pub async fn run(experiment: &Experiment, options: LabOptions) -> anyhow::Result<PathBuf> {
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg:<40} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let dir = options.out_dir.join(experiment.name);
    let ctx = LabContext { options, progress };
    let report = (experiment.run)(&ctx).await?;
    ctx.progress.finish_and_clear();
    println!("{}", report.table());
    for finding in &report.findings {
        println!("- {finding}");
    }
    report.write_to(&dir)?;
    println!("\nwrote {}", display(&dir.join("results.json")));
    println!("wrote {}", display(&dir.join("report.md")));
    for (file, _) in report.plot_files() {
        println!("wrote {}", display(&dir.join(file)));
    }
    Ok(dir)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
