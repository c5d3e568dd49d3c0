//! `girder lab sketches` — the catalogue's claims about its sketches beside their
//! formulas, measured on girder-sketch: the Bloom filter's false-positive rate
//! (`bloom.rs`), HyperLogLog's error from 10 to 10^8 keys (`hyperloglog.rs`),
//! Count-Min's overestimates against `ε·N` (`count_min.rs`) and Space-Saving's Top-K
//! recall with its memory beside exact counting (`topk.rs`). The last two read one
//! seeded Zipf stream.

mod bloom;
mod count_min;
mod hyperloglog;
mod topk;

use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde_json::json;

use super::{LabContext, Plot, Report, Series, thousands};
use crate::loadtest::zipf::Zipf;

/// The Zipf exponent of the catalogue's Top-K target.
const ZIPF_EXPONENT: f64 = 1.1;

/// One part of the experiment: its table rows, its parameters and points for
/// `results.json`, what it found, and its plot if it draws one.
struct Section {
    rows: Vec<Vec<String>>,
    parameters: serde_json::Value,
    findings: Vec<String>,
    plot: Option<Plot>,
}

/// A seeded Zipf stream over `0..universe`, with every key's true count.
#[derive(Debug)]
struct ZipfStream {
    exponent: f64,
    /// Keys in arrival order; key 0 is the most frequent.
    events: Vec<u32>,
    /// The true count of each key of the universe, seen or not.
    counts: Vec<u64>,
}

impl ZipfStream {
    fn new(universe: u32, events: u64, exponent: f64, seed: u64) -> Self {
        let zipf = Zipf::new(universe as usize, exponent);
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut counts = vec![0u64; universe as usize];
        let events: Vec<u32> = (0..events)
            .map(|_| {
                let key = zipf.sample(&mut rng);
                counts[key] += 1;
                key as u32
            })
            .collect();
        Self { exponent, events, counts }
    }
}

pub(super) async fn run(ctx: &LabContext) -> anyhow::Result<Report> {
    let quick = ctx.options.quick;
    let bloom = bloom::run(ctx).await?;
    let hyperloglog = hyperloglog::run(ctx).await?;
    // The catalogue's Top-K target is 10M events; a million keys give Zipf(1.1) a long
    // tail (about two thirds of them appear at 10M events).
    let (universe, events) = if quick { (100_000, 1_000_000) } else { (1_000_000, 10_000_000) };
    ctx.phase("Zipf stream", 1);
    let stream = Arc::new(
        tokio::task::spawn_blocking(move || {
            ZipfStream::new(universe, events, ZIPF_EXPONENT, 0x5EED)
        })
        .await?,
    );
    ctx.progress.inc(1);
    let count_min = count_min::run(ctx, &stream).await?;
    let topk = topk::run(ctx, &stream).await?;
    let sections = [&bloom, &hyperloglog, &count_min, &topk];
    Ok(Report {
        experiment: "sketches".into(),
        ran_at: super::now_rfc3339(),
        parameters: json!({
            "bloom": bloom.parameters,
            "hyperloglog": hyperloglog.parameters,
            "stream": { "distribution": "zipf", "exponent": ZIPF_EXPONENT,
                        "universe": universe, "events": events, "seed": 0x5EED },
            "count_min": count_min.parameters,
            "topk": topk.parameters,
        }),
        columns: ["measurement", "measured", "formula or baseline", "difference"]
            .iter()
            .map(|c| (*c).to_owned())
            .collect(),
        rows: sections.iter().flat_map(|s| s.rows.iter().cloned()).collect(),
        plot: hyperloglog.plot.clone(),
        findings: sections.iter().flat_map(|s| s.findings.iter().cloned()).collect(),
        more_plots: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_groups_digits() {
        for (x, want) in [
            (0.0, "0"),
            (999.4, "999"),
            (1_000.0, "1,000"),
            (1_234_567.0, "1,234,567"),
            (-12_345.0, "-12,345"),
        ] {
            assert_eq!(thousands(x), want);
        }
    }
}
