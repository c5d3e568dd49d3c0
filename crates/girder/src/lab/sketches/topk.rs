//! Top-K: Space-Saving summaries of several capacities `m` read the Zipf stream, each
//! reports its top k = 100, and exact counting of the same stream scores them.
//!
//! A reported key is a hit when its true count is at least the k-th largest true
//! count, so keys tied at the boundary count as hits. Recall is hits/k and precision
//! hits/reported; they coincide here, since every summary monitors more than k keys and
//! reports k. *Certified* keys are those whose lower bound (count − error) is at least
//! every unreported key's upper bound (the (k+1)-th count, or the floor): they are in
//! the true top k whatever the stream, so their precision must be 1 — a check of the
//! summary's bounds, not of its luck.
//!
//! Memory: [`SpaceSaving::memory_bytes`] beside the exact counter, a
//! `HashMap<u64, u64>` as it stands after counting the stream, with the same
//! accounting (allocated entries × (entry + one control byte); both leave out the
//! buckets the table keeps free). The summary's keys are byte strings held twice (slot
//! and index); the exact map's are bare `u64`s, the cheapest exact form for these keys.

use std::collections::HashMap;
use std::sync::Arc;

use girder_sketch::topk::SpaceSaving;
use serde_json::json;

use super::{LabContext, Section, ZipfStream, thousands};

/// How many keys are asked for.
const K: usize = 100;
/// The summary capacities `m`.
const CAPACITIES: [u64; 4] = [200, 500, 1_000, 2_000];

/// What one summary reported, scored.
#[derive(Debug)]
struct Outcome {
    recall: f64,
    precision: f64,
    certified: usize,
    certified_hits: usize,
    memory_bytes: usize,
}

fn measure(stream: &ZipfStream, capacity: u64, threshold: u64) -> anyhow::Result<Outcome> {
    let mut summary = SpaceSaving::new(capacity)?;
    for &key in &stream.events {
        summary.add(u64::from(key).to_le_bytes(), 1);
    }
    let top = summary.top(K + 1);
    let reported = &top[..top.len().min(K)];
    // The largest upper bound of any key left out of the report.
    let outside = top.get(K).map_or(summary.floor(), |h| h.count).max(summary.floor());
    let true_count = |key: &[u8]| -> anyhow::Result<u64> {
        let rank = u64::from_le_bytes(key.try_into()?);
        Ok(stream.counts[usize::try_from(rank)?])
    };
    let (mut hits, mut certified, mut certified_hits) = (0, 0, 0);
    for h in reported {
        let hit = true_count(h.key)? >= threshold;
        hits += usize::from(hit);
        if h.count - h.error >= outside {
            certified += 1;
            certified_hits += usize::from(hit);
        }
    }
    Ok(Outcome {
        recall: hits.min(K) as f64 / K as f64,
        precision: hits as f64 / reported.len().max(1) as f64,
        certified,
        certified_hits,
        memory_bytes: summary.memory_bytes(),
    })
}

/// The exact counter's memory, counted as `SpaceSaving::memory_bytes` counts its own
/// table, and the number of distinct keys.
fn exact_counting(stream: &ZipfStream) -> (usize, usize) {
    let mut exact: HashMap<u64, u64> = HashMap::new();
    for &key in &stream.events {
        *exact.entry(u64::from(key)).or_default() += 1;
    }
    (exact.capacity() * (std::mem::size_of::<(u64, u64)>() + 1), exact.len())
}

pub(super) async fn run(ctx: &LabContext, stream: &Arc<ZipfStream>) -> anyhow::Result<Section> {
    ctx.phase("Top-K recall", CAPACITIES.len() as u64 + 1);
    let shared = Arc::clone(stream);
    let (exact_bytes, distinct) =
        tokio::task::spawn_blocking(move || exact_counting(&shared)).await?;
    ctx.progress.inc(1);
    let mut sorted = stream.counts.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let threshold = sorted.get(K - 1).copied().unwrap_or(0);
    let (mut rows, mut points) = (Vec::new(), Vec::new());
    for capacity in CAPACITIES {
        let shared = Arc::clone(stream);
        let o =
            tokio::task::spawn_blocking(move || measure(&shared, capacity, threshold)).await??;
        points.push(json!({
            "capacity": capacity, "recall": o.recall, "precision": o.precision,
            "certified": o.certified, "certified_hits": o.certified_hits,
            "memory_bytes": o.memory_bytes,
        }));
        rows.push(vec![
            format!("Top-K k={K}, Space-Saving m={capacity}"),
            format!("recall {:.2}, precision {:.2}", o.recall, o.precision),
            format!("memory {} KiB vs exact {} KiB", o.memory_bytes / 1024, exact_bytes / 1024),
            format!("{} certified, {} of them right", o.certified, o.certified_hits),
        ]);
        ctx.progress.inc(1);
    }
    let all_right = points.iter().all(|p| p["certified"] == p["certified_hits"]);
    let summary_of = |capacity: u64| points.iter().find(|p| p["capacity"] == capacity);
    let findings = summary_of(1_000)
        .map(|p| {
            format!(
                "Top-K, k = {K} on Zipf({}) over {} events ({} distinct keys): Space-Saving with m = 1,000 has recall {:.2} in {} KiB, beside {} KiB for exact counting; {}.",
                stream.exponent,
                thousands(stream.events.len() as f64),
                thousands(distinct as f64),
                p["recall"].as_f64().unwrap_or(f64::NAN),
                p["memory_bytes"].as_u64().unwrap_or(0) / 1024,
                exact_bytes / 1024,
                if all_right {
                    "every certified key was in the true top k, at every m"
                } else {
                    "A CERTIFIED KEY WAS WRONG: the summary's bounds do not hold"
                },
            )
        })
        .into_iter()
        .collect();
    Ok(Section {
        rows,
        parameters: json!({
            "k": K, "threshold": threshold, "distinct_keys": distinct,
            "exact_memory_bytes": exact_bytes, "points": points,
        }),
        findings,
        plot: None,
    })
}
