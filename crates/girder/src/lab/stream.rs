//! `girder lab stream` — keyed windowed counting (girder-stream) measured:
//!
//! - **Throughput** of the window operator on one core: one-minute tumbling counts
//!   over 100,000 keys, against the floor of the same counting with no windows,
//!   watermark or emissions (one hash-map increment per event, same hasher), and
//!   through the whole pipeline on the embedded log (append, read, count, checkpoint).
//! - **Lateness and completeness:** events arrive with a random delay (exponential,
//!   mean 2 s) behind a watermark that trails by 1 s; for each allowed lateness, the
//!   share of events counted in their window and the share refused as late.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::fast::FixedState;
use girder_core::{Clock, SystemClock};
use girder_stream::log::{LogConfig, PartitionedLog};
use girder_stream::memory::MemoryCommitter;
use girder_stream::runner::{Committer, PartitionRunner, RunnerConfig};
use girder_stream::{Count, OperatorConfig, Rejected, WindowOperator, WindowSpec};
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{LabContext, Plot, Report, Series};

const MINUTE: i64 = 60_000;
const KEYS: u64 = 100_000;

/// Event `i` of a stream of `per_minute` events a minute: a key and a time.
fn event(i: u64, per_minute: u64) -> (u64, i64) {
    // A multiplicative hash spreads keys without a random-number generator in the loop.
    let key = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) % KEYS;
    (key, (i * MINUTE as u64 / per_minute) as i64)
}

/// Events per second through the operator (firing every 100,000 events).
fn operator_rate(events: u64, per_minute: u64) -> anyhow::Result<(f64, u64)> {
    let config = OperatorConfig {
        out_of_orderness_ms: 1_000,
        ..OperatorConfig::new(WindowSpec::Tumbling { size_ms: MINUTE })
    };
    let mut op = WindowOperator::<u64, Count>::new(Count, config)?;
    let mut emitted = 0u64;
    let started = Instant::now();
    for i in 0..events {
        let (key, t) = event(i, per_minute);
        if op.process(key, t, &1).is_err() {
            anyhow::bail!("event {i} refused");
        }
        if i % 100_000 == 99_999 {
            emitted += op.fire().len() as u64;
        }
    }
    op.advance_watermark(i64::MAX);
    emitted += op.fire().len() as u64;
    Ok((events as f64 / started.elapsed().as_secs_f64(), emitted))
}

/// The floor: the same counts kept in one hash map keyed by (key, minute).
fn floor_rate(events: u64, per_minute: u64) -> (f64, usize) {
    let mut counts: hashbrown::HashMap<(u64, i64), u64, FixedState> =
        hashbrown::HashMap::with_hasher(FixedState::default());
    let started = Instant::now();
    for i in 0..events {
        let (key, t) = event(i, per_minute);
        *counts.entry((key, t - t.rem_euclid(MINUTE))).or_insert(0) += 1;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    (rate, std::hint::black_box(counts.len()))
}

/// Events per second through append, read, count and checkpoint on the embedded log.
async fn pipeline_rate(events: u64, per_minute: u64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let mut log_config = LogConfig::new(dir.path(), 1);
    log_config.wal.sync = girder_log::wal::SyncPolicy::Never;
    let log = Arc::new(PartitionedLog::open(&log_config)?);
    let started = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..events {
        let (key, t) = event(i, per_minute);
        let mut record = key.to_le_bytes().to_vec();
        record.extend_from_slice(&t.to_le_bytes());
        batch.push(record);
        if batch.len() == 10_000 {
            log.append_many(0, std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        log.append_many(0, batch).await?;
    }
    let committer = Arc::new(MemoryCommitter::<u64, u64>::new());
    let runner = PartitionRunner {
        source: Arc::clone(&log),
        committer: Arc::clone(&committer),
        aggregate: Count,
        operator: OperatorConfig {
            out_of_orderness_ms: 1_000,
            ..OperatorConfig::new(WindowSpec::Tumbling { size_ms: MINUTE })
        },
        config: RunnerConfig { idle_after: None, ..RunnerConfig::default() },
        decode: Arc::new(|b: &[u8]| {
            let b: &[u8; 16] = b.try_into().map_err(|_| "16 bytes".to_string())?;
            let (k, t) = b.split_at(8);
            let k = u64::from_le_bytes(k.try_into().map_err(|_| "key")?);
            let t = i64::from_le_bytes(t.try_into().map_err(|_| "time")?);
            Ok((k, t, 1))
        }),
        refused: Arc::new(|_| {}),
        clock: Arc::new(SystemClock) as Arc<dyn Clock>,
    };
    let end = log.end_offset(0)?;
    let watcher = Arc::clone(&committer);
    let stop = async move {
        while watcher.load(0).await.ok().flatten().is_none_or(|c| c.offset < end) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    runner.run(0, 0, stop).await?;
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// Counted and late shares of `events` events with exponential delays of mean
/// `mean_delay_ms`, under a 1 s out-of-orderness and `lateness` allowed lateness.
fn completeness(events: u64, mean_delay_ms: f64, lateness: i64) -> anyhow::Result<(f64, f64)> {
    let config = OperatorConfig {
        out_of_orderness_ms: 1_000,
        allowed_lateness_ms: lateness,
        ..OperatorConfig::new(WindowSpec::Tumbling { size_ms: MINUTE })
    };
    let mut op = WindowOperator::<u64, Count>::new(Count, config)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Events happen every 2 ms and arrive after their delay: sort by arrival.
    let mut arrivals: Vec<(i64, i64, u64)> = (0..events)
        .map(|i| {
            let t = i as i64 * 2;
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            let delay = (-mean_delay_ms * u.ln()) as i64;
            (t + delay, t, i % 100)
        })
        .collect();
    arrivals.sort_unstable();
    let mut late = 0u64;
    let mut sink: BTreeMap<(i64, u64), u64> = BTreeMap::new();
    for (n, &(_, t, key)) in arrivals.iter().enumerate() {
        match op.process(key, t, &1) {
            Ok(()) => {}
            Err(Rejected::Late { .. }) => late += 1,
            Err(Rejected::Full) => anyhow::bail!("state full"),
        }
        if n % 1_000 == 0 {
            for e in op.fire() {
                sink.insert((e.window.start, e.key), e.value);
            }
        }
    }
    op.advance_watermark(i64::MAX);
    for e in op.fire() {
        sink.insert((e.window.start, e.key), e.value);
    }
    let counted: u64 = sink.values().sum();
    Ok((counted as f64 / events as f64, late as f64 / events as f64))
}

/// The counted share (in %) at `lateness` among the measured points.
fn share(points: &[serde_json::Value], lateness: i64) -> f64 {
    points
        .iter()
        .find(|p| p["allowed_lateness_ms"] == lateness)
        .and_then(|p| p["counted"].as_f64())
        .map_or(f64::NAN, |c| c * 100.0)
}

pub(super) async fn run(ctx: &LabContext) -> anyhow::Result<Report> {
    let quick = ctx.options.quick;
    let events: u64 = if quick { 1_000_000 } else { 10_000_000 };
    let per_minute: u64 = 1_000_000;
    let lateness_points: Vec<i64> = vec![0, 500, 1_000, 2_000, 5_000, 10_000, 30_000];
    ctx.phase("throughput", 3);
    let (operator, emitted) =
        tokio::task::spawn_blocking(move || operator_rate(events, per_minute)).await??;
    ctx.progress.inc(1);
    let (floor, cells) =
        tokio::task::spawn_blocking(move || floor_rate(events, per_minute)).await?;
    ctx.progress.inc(1);
    let pipeline_events = events.min(2_000_000);
    let pipeline = pipeline_rate(pipeline_events, per_minute).await?;
    ctx.progress.inc(1);
    let mut rows = vec![
        vec![
            "operator: 1-minute tumbling counts, 100,000 keys (one core)".into(),
            format!("{:.2} M events/s", operator / 1e6),
            format!("{emitted} window results"),
        ],
        vec![
            "floor: one hash-map increment per event, no windows".into(),
            format!("{:.2} M events/s", floor / 1e6),
            format!("{cells} (key, minute) cells; operator at {:.2}× the floor", operator / floor),
        ],
        vec![
            "pipeline: append, read, count, checkpoint (embedded log)".into(),
            format!("{:.2} M events/s", pipeline / 1e6),
            format!("{pipeline_events} events"),
        ],
    ];
    ctx.phase("lateness vs completeness", lateness_points.len() as u64);
    let sample = if quick { 200_000 } else { 1_000_000 };
    let mut counted_series = Vec::new();
    let mut points = Vec::new();
    for &lateness in &lateness_points {
        let (counted, late) =
            tokio::task::spawn_blocking(move || completeness(sample, 2_000.0, lateness)).await??;
        counted_series.push((lateness as f64 / 1_000.0, counted * 100.0));
        points.push(json!({ "allowed_lateness_ms": lateness, "counted": counted, "late": late }));
        rows.push(vec![
            format!("allowed lateness {lateness} ms (delay mean 2 s, watermark −1 s)"),
            format!("{:.3}% counted", counted * 100.0),
            format!("{:.3}% refused as late", late * 100.0),
        ]);
        ctx.progress.inc(1);
    }
    let findings = vec![
        format!(
            "Windowed counting (1-minute tumbling, 100,000 keys): {:.2} M events/s on one core, {:.2}× a bare hash-map count of the same events ({:.2} M/s); through the embedded log end to end {:.2} M events/s.",
            operator / 1e6,
            operator / floor,
            floor / 1e6,
            pipeline / 1e6
        ),
        format!(
            "Lateness (delays exponential, mean 2 s; watermark 1 s behind the newest event): {:.2}% of events counted with no allowed lateness, {:.2}% with 5 s, {:.3}% with 30 s; the rest were refused as late and counted as such.",
            share(&points, 0),
            share(&points, 5_000),
            share(&points, 30_000)
        ),
    ];
    Ok(Report {
        experiment: "stream".into(),
        ran_at: super::now_rfc3339(),
        parameters: json!({
            "events": events, "keys": KEYS, "events_per_minute": per_minute,
            "throughput": { "operator": operator, "floor": floor, "pipeline": pipeline, "pipeline_events": pipeline_events },
            "lateness": { "events": sample, "mean_delay_ms": 2_000, "out_of_orderness_ms": 1_000, "points": points },
        }),
        columns: ["measurement", "result", "detail"].iter().map(|c| (*c).to_owned()).collect(),
        rows,
        plot: Some(Plot {
            title: "Completeness against allowed lateness (delays exp. mean 2 s)".into(),
            x_label: "allowed lateness (s)".into(),
            y_label: "events counted (%)".into(),
            series: vec![Series { name: "counted".into(), points: counted_series }],
            log_x: false,
            log_y: false,
        }),
        findings,
        more_plots: Vec::new(),
    })
}
