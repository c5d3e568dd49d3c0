//! HyperLogLog: the relative standard error at p = 14 (m = 16,384 registers) from 10 up
//! to 10^8 distinct keys, over many independent sketches, against the 1.04/√m the
//! catalogue quotes (0.81%), plotted against the cardinality.
//!
//! Two ways in. The main series feeds [`HyperLogLog::add_hash`] with SplitMix64 outputs
//! (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014), so
//! a point costs one mix and one register update per key and 10^8 keys × 100 sketches
//! fit in minutes. A sketch's `i`-th key hashes to `mix(s + i·γ)`: `γ` is odd, so
//! `i ↦ s + i·γ` is injective modulo 2^64, and `mix` (xor-shifts and multiplications by
//! odd constants, each invertible) is a bijection of `u64`, so distinct counters give
//! distinct hashes — the sketch sees exactly `n` distinct values, as from a hash without
//! collisions. The generator passes BigCrush, so the top 14 bits (the register) and
//! the leading zeros of the rest (the rank) are as good as uniform. What that path
//! leaves out is hashing the key bytes; the second series goes through
//! [`HyperLogLog::add`] (XXH3 of 8-byte keys) up to 10^7 keys for comparison.

use girder_sketch::hyperloglog::HyperLogLog;
use serde_json::json;

use super::{LabContext, Plot, Section, Series, thousands};

/// The catalogue's precision.
const PRECISION: u8 = 14;
/// SplitMix64's increment, `2^64/φ` rounded to odd.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a bijection of `u64` that mixes every input bit into
/// every output bit.
fn mix(state: u64) -> u64 {
    let z = (state ^ (state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How the keys of a trial reach the sketch.
#[derive(Debug, Clone, Copy)]
enum Feed {
    /// `add_hash` of SplitMix64 outputs (see the module docs).
    Mixed,
    /// `add` of 8-byte keys, hashed by the sketch (XXH3).
    Keys,
}

/// RMS relative error of `trials` independent sketches of `cardinality` distinct keys,
/// and their mean relative error (the bias).
fn error(cardinality: u64, trials: u64, feed: Feed) -> anyhow::Result<(f64, f64)> {
    let (mut sum_sq, mut sum) = (0.0, 0.0);
    for trial in 0..trials {
        let mut sketch = HyperLogLog::new(PRECISION, trial)?;
        match feed {
            Feed::Mixed => {
                // A start far from every other trial's, so the key sets are disjoint
                // but for a chance of about n²/2^64.
                let mut state = mix(trial ^ 0x5EED_0000_0000_0000);
                for _ in 0..cardinality {
                    state = state.wrapping_add(GAMMA);
                    sketch.add_hash(mix(state));
                }
            }
            Feed::Keys => {
                for i in 0..cardinality {
                    sketch.add((trial << 40 | i).to_le_bytes());
                }
            }
        }
        let relative = (sketch.estimate() - cardinality as f64) / cardinality as f64;
        sum_sq += relative * relative;
        sum += relative;
    }
    Ok(((sum_sq / trials as f64).sqrt(), sum / trials as f64))
}

/// The points of one series: `(cardinality, sketches)`.
type Plan = Vec<(u64, u64)>;

/// The plans of the mixed and the keyed series.
fn points(quick: bool) -> (Plan, Plan) {
    if quick {
        let mixed = [10, 100, 1_000, 10_000, 100_000].map(|n| (n, 100)).to_vec();
        let keys = [10, 100, 1_000, 10_000, 100_000].map(|n| (n, 20)).to_vec();
        return (mixed, keys);
    }
    // 1,000 sketches up to 10^7 (the RMS then carries about ±2.2% sampling error,
    // 1/√2000) and 300 at 10^8: about 4·10^10 mixed adds, some 3 minutes on one core,
    // and 2·10^9 keyed adds.
    let mut mixed: Plan =
        [10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000].map(|n| (n, 1_000)).to_vec();
    mixed.push((100_000_000, 300));
    let mut keys: Plan = [10, 100, 1_000, 10_000, 100_000, 1_000_000].map(|n| (n, 1_000)).to_vec();
    keys.push((10_000_000, 100));
    (mixed, keys)
}

pub(super) async fn run(ctx: &LabContext) -> anyhow::Result<Section> {
    let (mixed, keys) = points(ctx.options.quick);
    ctx.phase("HyperLogLog error, p = 14", (mixed.len() + keys.len()) as u64);
    let bound = 1.04 / f64::from(1u32 << PRECISION).sqrt();
    let mut rows = Vec::new();
    let mut series = Vec::new();
    let mut json_points = json!({});
    for (feed, plan, name, label) in [
        (Feed::Mixed, &mixed, "mixed", "SplitMix64 hashes"),
        (Feed::Keys, &keys, "keys", "XXH3 of 8-byte keys"),
    ] {
        let mut line = Vec::new();
        let mut measured = Vec::new();
        for &(cardinality, trials) in plan {
            let (rms, bias) =
                tokio::task::spawn_blocking(move || error(cardinality, trials, feed)).await??;
            line.push(((cardinality as f64).log10(), rms * 100.0));
            measured.push(json!({ "cardinality": cardinality, "trials": trials,
                                  "rms": rms, "bias": bias }));
            rows.push(vec![
                format!(
                    "HyperLogLog p=14, n={}, {label}, {trials} sketches",
                    thousands(cardinality as f64)
                ),
                format!("{:.3}%", rms * 100.0),
                format!("{:.3}%", bound * 100.0),
                format!("bias {:+.3}%", bias * 100.0),
            ]);
            ctx.progress.inc(1);
        }
        series.push(Series { name: format!("measured, {label}"), points: line });
        json_points[name] = serde_json::Value::Array(measured);
    }
    let cardinalities: Vec<u64> = mixed.iter().map(|&(n, _)| n).collect();
    series.push(Series {
        name: "1.04/√m".into(),
        points: cardinalities.iter().map(|&c| ((c as f64).log10(), bound * 100.0)).collect(),
    });
    let findings = vec![
        findings(&json_points["mixed"], bound, "SplitMix64 hashes"),
        findings(&json_points["keys"], bound, "XXH3 of 8-byte keys"),
    ];
    Ok(Section {
        rows,
        parameters: json!({ "precision": PRECISION, "bound": bound, "points": json_points }),
        findings,
        plot: Some(Plot {
            title: "HyperLogLog at p = 14: relative standard error against cardinality".into(),
            x_label: "log10(distinct keys)".into(),
            y_label: "RMS relative error (%)".into(),
            series,
            log_x: false,
            log_y: false,
        }),
    })
}

/// The worst RMS from 10^3 keys up, with the sampling error its trial count leaves.
fn findings(points: &serde_json::Value, bound: f64, label: &str) -> String {
    let points = points.as_array().map(Vec::as_slice).unwrap_or_default();
    let from_thousand = points.iter().filter(|p| p["cardinality"].as_u64() >= Some(1_000));
    let worst = from_thousand.max_by(|a, b| {
        a["rms"].as_f64().partial_cmp(&b["rms"].as_f64()).unwrap_or(std::cmp::Ordering::Equal)
    });
    let Some(worst) = worst else { return "HyperLogLog: no point from 10^3 keys up.".into() };
    let (rms, trials) =
        (worst["rms"].as_f64().unwrap_or(f64::NAN), worst["trials"].as_u64().unwrap_or(1));
    format!(
        "HyperLogLog at p = 14 ({label}): the worst RMS relative error from 1,000 to {} keys is {:.3}% (at {} keys, {trials} sketches, so ±{:.1}% of itself from sampling, 1/√(2T)), against 1.04/√m = {:.3}%.",
        thousands(points.last().and_then(|p| p["cardinality"].as_f64()).unwrap_or(0.0)),
        rms * 100.0,
        thousands(worst["cardinality"].as_f64().unwrap_or(f64::NAN)),
        100.0 / (2.0 * trials as f64).sqrt(),
        bound * 100.0
    )
}
