//! Count-Min: each sketch reads the whole Zipf stream, then every key of the universe
//! (seen or not) is estimated. Reported: the mean, largest and smallest overestimate
//! (estimate − true count), and the fraction of keys whose overestimate passes the
//! `ε·N` bound, which the sketch promises for all but a fraction `δ`. Plain and
//! conservative update share a seed, so they hash alike and the conservative
//! counters can be compared with the plain ones cell for cell.

use std::sync::Arc;

use girder_sketch::count_min::{CountMinConfig, CountMinSketch};
use serde_json::json;

use super::{LabContext, Section, ZipfStream, thousands};

/// `(ε, δ)`: the catalogue's example, and a ten times wider error.
const CONFIGS: [(f64, f64); 2] = [(0.001, 0.01), (0.01, 0.01)];

/// What one sketch did over the stream.
#[derive(Debug)]
struct Outcome {
    width: u32,
    depth: u32,
    bound: f64,
    delta: f64,
    mean: f64,
    max: i128,
    min: i128,
    above: f64,
}

fn measure(stream: &ZipfStream, config: &CountMinConfig) -> anyhow::Result<Outcome> {
    let mut sketch = CountMinSketch::new(config)?;
    for &key in &stream.events {
        sketch.add(u64::from(key).to_le_bytes(), 1);
    }
    let bound = sketch.error_bound();
    let (mut sum, mut max, mut min, mut above) = (0i128, i128::MIN, i128::MAX, 0u64);
    for (key, &count) in stream.counts.iter().enumerate() {
        // Signed, so an underestimate would show instead of wrapping.
        let over = i128::from(sketch.estimate((key as u64).to_le_bytes())) - i128::from(count);
        sum += over;
        max = max.max(over);
        min = min.min(over);
        above += u64::from(over as f64 > bound);
    }
    let keys = stream.counts.len() as f64;
    Ok(Outcome {
        width: sketch.width(),
        depth: sketch.depth(),
        bound,
        delta: sketch.delta(),
        mean: sum as f64 / keys,
        max,
        min,
        above: above as f64 / keys,
    })
}

pub(super) async fn run(ctx: &LabContext, stream: &Arc<ZipfStream>) -> anyhow::Result<Section> {
    ctx.phase("Count-Min overestimates", (CONFIGS.len() * 2) as u64);
    let (mut rows, mut points, mut findings) = (Vec::new(), Vec::new(), Vec::new());
    for (epsilon, delta) in CONFIGS {
        let mut means = Vec::new();
        for conservative in [false, true] {
            let config = CountMinConfig::new(epsilon, delta).conservative(conservative).seed(7);
            let shared = Arc::clone(stream);
            let o = tokio::task::spawn_blocking(move || measure(&shared, &config)).await??;
            let update = if conservative { "conservative" } else { "plain" };
            points.push(json!({
                "epsilon": epsilon, "delta": delta, "conservative": conservative,
                "width": o.width, "depth": o.depth, "memory_bytes": u64::from(o.width) * u64::from(o.depth) * 8,
                "bound": o.bound, "sketch_delta": o.delta,
                "mean_overestimate": o.mean, "max_overestimate": o.max as f64,
                "min_overestimate": o.min as f64, "fraction_above_bound": o.above,
            }));
            rows.push(vec![
                format!("Count-Min ε={epsilon} δ={delta} ({}×{}), {update}", o.width, o.depth),
                format!(
                    "over mean {:.1}, max {}; {:.4}% above εN",
                    o.mean,
                    thousands(o.max as f64),
                    o.above * 100.0
                ),
                format!("εN = {}; δ = {:.2}%", thousands(o.bound), o.delta * 100.0),
                format!("max = {:.3}·εN", o.max as f64 / o.bound),
            ]);
            means.push((o.mean, o.max, o.above, o.bound, o.delta));
            ctx.progress.inc(1);
        }
        if let [plain, conservative] = means[..] {
            findings.push(format!(
                "Count-Min ε = {epsilon}, δ = {delta}, Zipf({}) over {} keys, N = {}: εN = {}; the mean overestimate is {:.1} plain and {:.1} conservative, the largest {} and {} ({:.2} and {:.2} of εN); {:.4}% and {:.4}% of keys pass εN, against the sketch's δ = e^(−{}) = {:.2}%.",
                stream.exponent,
                thousands(stream.counts.len() as f64),
                thousands(stream.events.len() as f64),
                thousands(plain.3),
                plain.0,
                conservative.0,
                thousands(plain.1 as f64),
                thousands(conservative.1 as f64),
                plain.1 as f64 / plain.3,
                conservative.1 as f64 / conservative.3,
                plain.2 * 100.0,
                conservative.2 * 100.0,
                (-plain.4.ln()).round(),
                plain.4 * 100.0,
            ));
        }
    }
    Ok(Section { rows, parameters: json!({ "points": points }), findings, plot: None })
}
