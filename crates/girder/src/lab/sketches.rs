//! `girder lab sketches` — the catalogue's claims about Bloom filters and HyperLogLog
//! beside their formulas, measured on girder-sketch:
//!
//! - **Bloom:** the false-positive rate of the classic layout with m = 10,000 bits and
//!   k = 3 hashes as n grows, against `(1 − e^(−kn/m))^k`, including the catalogue's
//!   example (n = 1,000: "≈ 2%"; the formula gives 1.74%). Each point averages
//!   several filters (different seeds) over 100,000 keys never inserted.
//! - **HyperLogLog:** the relative standard error at p = 14 (m = 16,384 registers)
//!   across cardinalities from 10 up, over many independent sketches, against the
//!   1.04/√m the catalogue quotes (0.81%).

use girder_sketch::bloom::{BloomFilter, Layout, expected_false_positive_rate};
use girder_sketch::hyperloglog::HyperLogLog;
use serde_json::json;

use super::{LabContext, Plot, Report, Series};

/// The catalogue's Bloom example.
const BLOOM_BITS: u64 = 10_000;
const BLOOM_HASHES: u32 = 3;
/// Keys never inserted, probed per filter.
const ABSENT_PROBES: u64 = 100_000;
/// The catalogue's HyperLogLog precision.
const HLL_PRECISION: u8 = 14;

/// The measured false-positive rate of the classic filter at `n` items, averaged over
/// `filters` seeds.
fn bloom_rate(n: u64, filters: u64) -> anyhow::Result<f64> {
    let mut false_positives = 0u64;
    for seed in 0..filters {
        let mut filter = BloomFilter::with_shape(BLOOM_BITS, BLOOM_HASHES, Layout::Classic, seed)?;
        for i in 0..n {
            filter.insert((seed << 40 | i).to_le_bytes());
        }
        false_positives += (0..ABSENT_PROBES)
            .filter(|i| filter.contains((1 << 63 | seed << 40 | i).to_le_bytes()))
            .count() as u64;
    }
    Ok(false_positives as f64 / (filters * ABSENT_PROBES) as f64)
}

/// RMS relative error of `trials` independent p = 14 sketches of `cardinality`
/// distinct keys, and their mean relative bias.
fn hll_error(cardinality: u64, trials: u64) -> anyhow::Result<(f64, f64)> {
    let (mut sum_sq, mut sum) = (0.0, 0.0);
    for trial in 0..trials {
        let mut sketch = HyperLogLog::new(HLL_PRECISION, trial)?;
        for i in 0..cardinality {
            sketch.add((trial << 40 | i).to_le_bytes());
        }
        let relative = (sketch.estimate() - cardinality as f64) / cardinality as f64;
        sum_sq += relative * relative;
        sum += relative;
    }
    Ok(((sum_sq / trials as f64).sqrt(), sum / trials as f64))
}

pub(super) async fn run(ctx: &LabContext) -> anyhow::Result<Report> {
    let quick = ctx.options.quick;
    let (filters, trials) = if quick { (4u64, 20u64) } else { (20, 100) };
    let items: Vec<u64> = vec![100, 250, 500, 1_000, 1_500, 2_000];
    let cardinalities: Vec<u64> = if quick {
        vec![10, 100, 1_000, 10_000, 100_000]
    } else {
        vec![10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000]
    };
    ctx.phase("Bloom false positives", items.len() as u64);
    let mut rows = Vec::new();
    let mut bloom_points = Vec::new();
    for &n in &items {
        let measured = tokio::task::spawn_blocking(move || bloom_rate(n, filters)).await??;
        let formula = expected_false_positive_rate(BLOOM_BITS, BLOOM_HASHES, n);
        bloom_points.push(json!({ "n": n, "measured": measured, "formula": formula }));
        rows.push(vec![
            format!("Bloom m=10,000 k=3, n={n}"),
            format!("{:.3}%", measured * 100.0),
            format!("{:.3}%", formula * 100.0),
            format!("{:+.1}%", (measured / formula - 1.0) * 100.0),
        ]);
        ctx.progress.inc(1);
    }
    ctx.phase("HyperLogLog error, p = 14", cardinalities.len() as u64);
    let bound = 1.04 / f64::from(1u32 << HLL_PRECISION).sqrt();
    let mut measured_series = Vec::new();
    let mut hll_points = Vec::new();
    for &cardinality in &cardinalities {
        let (rms, bias) =
            tokio::task::spawn_blocking(move || hll_error(cardinality, trials)).await??;
        measured_series.push(((cardinality as f64).log10(), rms * 100.0));
        hll_points.push(json!({ "cardinality": cardinality, "rms": rms, "bias": bias }));
        rows.push(vec![
            format!("HyperLogLog p=14, n={cardinality}"),
            format!("{:.3}%", rms * 100.0),
            format!("{:.3}%", bound * 100.0),
            format!("bias {:+.3}%", bias * 100.0),
        ]);
        ctx.progress.inc(1);
    }
    let catalogue = bloom_points.iter().find(|p| p["n"] == 1_000).cloned().unwrap_or_default();
    let worst = measured_series.iter().map(|(_, e)| *e).fold(0.0_f64, f64::max);
    let findings = vec![
        format!(
            "Bloom, the catalogue's example (m = 10,000, k = 3, n = 1,000): measured {:.2}%, formula {:.2}% (the catalogue rounds it to ≈ 2%).",
            catalogue["measured"].as_f64().unwrap_or(f64::NAN) * 100.0,
            catalogue["formula"].as_f64().unwrap_or(f64::NAN) * 100.0
        ),
        format!(
            "HyperLogLog at p = 14 ({trials} sketches per cardinality): the RMS relative error stays at or below {worst:.2}% from {} to {} distinct keys, against 1.04/√m = {:.2}%.",
            cardinalities.first().unwrap_or(&0),
            cardinalities.last().unwrap_or(&0),
            bound * 100.0
        ),
    ];
    let bound_series = cardinalities.iter().map(|&c| ((c as f64).log10(), bound * 100.0)).collect();
    Ok(Report {
        experiment: "sketches".into(),
        ran_at: super::now_rfc3339(),
        parameters: json!({
            "bloom": { "bits": BLOOM_BITS, "hashes": BLOOM_HASHES, "filters_per_point": filters,
                       "absent_probes": ABSENT_PROBES, "points": bloom_points },
            "hyperloglog": { "precision": HLL_PRECISION, "trials": trials, "points": hll_points },
        }),
        columns: ["measurement", "measured", "formula", "difference"]
            .iter()
            .map(|c| (*c).to_owned())
            .collect(),
        rows,
        plot: Some(Plot {
            title: "HyperLogLog at p = 14: relative standard error against cardinality".into(),
            x_label: "log10(distinct keys)".into(),
            y_label: "RMS relative error (%)".into(),
            series: vec![
                Series { name: "measured".into(), points: measured_series },
                Series { name: "1.04/√m".into(), points: bound_series },
            ],
        }),
        findings,
    })
}
