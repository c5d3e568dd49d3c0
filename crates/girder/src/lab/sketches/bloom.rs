//! Bloom: the false-positive rate of the classic layout with m = 10,000 bits and k = 3
//! hashes as n grows, against `(1 − e^(−kn/m))^k`, including the catalogue's example
//! (n = 1,000: "≈ 2%"; the formula gives 1.74%). Each point averages several filters
//! (different seeds) over 100,000 keys never inserted.

use girder_sketch::bloom::{BloomFilter, Layout, expected_false_positive_rate};
use serde_json::json;

use super::{LabContext, Section};

/// The catalogue's Bloom example.
const BITS: u64 = 10_000;
const HASHES: u32 = 3;
/// Keys never inserted, probed per filter.
const ABSENT_PROBES: u64 = 100_000;
/// The item counts measured.
const ITEMS: [u64; 6] = [100, 250, 500, 1_000, 1_500, 2_000];

/// The measured false-positive rate of the classic filter at `n` items, averaged over
/// `filters` seeds.
fn rate(n: u64, filters: u64) -> anyhow::Result<f64> {
    let mut false_positives = 0u64;
    for seed in 0..filters {
        let mut filter = BloomFilter::with_shape(BITS, HASHES, Layout::Classic, seed)?;
        for i in 0..n {
            filter.insert((seed << 40 | i).to_le_bytes());
        }
        false_positives += (0..ABSENT_PROBES)
            .filter(|i| filter.contains((1 << 63 | seed << 40 | i).to_le_bytes()))
            .count() as u64;
    }
    Ok(false_positives as f64 / (filters * ABSENT_PROBES) as f64)
}

pub(super) async fn run(ctx: &LabContext) -> anyhow::Result<Section> {
    let filters = if ctx.options.quick { 4u64 } else { 20 };
    ctx.phase("Bloom false positives", ITEMS.len() as u64);
    let (mut rows, mut points) = (Vec::new(), Vec::new());
    for n in ITEMS {
        let measured = tokio::task::spawn_blocking(move || rate(n, filters)).await??;
        let formula = expected_false_positive_rate(BITS, HASHES, n);
        points.push(json!({ "n": n, "measured": measured, "formula": formula }));
        rows.push(vec![
            format!("Bloom m=10,000 k=3, n={n}"),
            format!("{:.3}%", measured * 100.0),
            format!("{:.3}%", formula * 100.0),
            format!("{:+.1}%", (measured / formula - 1.0) * 100.0),
        ]);
        ctx.progress.inc(1);
    }
    let example = points.iter().find(|p| p["n"] == 1_000).cloned().unwrap_or_default();
    let findings = vec![format!(
        "Bloom, the catalogue's example (m = 10,000, k = 3, n = 1,000): measured {:.2}%, formula {:.2}% (the catalogue rounds it to ≈ 2%).",
        example["measured"].as_f64().unwrap_or(f64::NAN) * 100.0,
        example["formula"].as_f64().unwrap_or(f64::NAN) * 100.0
    )];
    Ok(Section {
        rows,
        parameters: json!({ "bits": BITS, "hashes": HASHES, "filters_per_point": filters,
                            "absent_probes": ABSENT_PROBES, "points": points }),
        findings,
        plot: None,
    })
}
