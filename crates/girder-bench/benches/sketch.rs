//! girder-sketch against peer crates, one operation per iteration over a fixed ring
//! of 65,536 distinct 8-byte keys:
//!
//! - Bloom insert and query at equal memory and equal hash count: girder's classic
//!   layout sized for 1M items at 1% beside `fastbloom` built with the same number of
//!   bits and hashes, and girder's cache-blocked layout at its own size for the same
//!   target rate (it needs more bits to meet it; see `girder_sketch::bloom`).
//! - HyperLogLog add at p = 14: girder (dense, Ertl's estimator) beside
//!   `hyperloglockless` (dense).
//! - Count-Min update with d = 5 rows (δ = e⁻⁵), ε = 0.001.
//!
//! Run: `cargo bench -p girder-bench --bench sketch`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_main};
use girder_sketch::bloom::{BloomConfig, BloomFilter, Layout};
use girder_sketch::count_min::{CountMinConfig, CountMinSketch};
use girder_sketch::hyperloglog::HyperLogLog;

const RING: usize = 1 << 16;

fn keys() -> Vec<u64> {
    // A fixed, well-spread sequence (splitmix64 of 0..RING).
    (0..RING as u64)
        .map(|i| {
            let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
        .collect()
}

fn bloom(c: &mut Criterion) {
    let keys = keys();
    let classic_config = BloomConfig::new(1_000_000, 0.01).layout(Layout::Classic);
    let blocked_config = BloomConfig::new(1_000_000, 0.01).layout(Layout::Blocked);
    let mut classic = BloomFilter::new(&classic_config).expect("classic");
    let mut blocked = BloomFilter::new(&blocked_config).expect("blocked");
    let bits = usize::try_from(classic.bits()).expect("bits fit");
    let mut peer = fastbloom::BloomFilter::with_num_bits(bits).hashes(classic.hashes());
    eprintln!(
        "bloom: girder classic {} bits, {} hashes; girder blocked {} bits, {} hashes; fastbloom {} bits, {} hashes",
        classic.bits(),
        classic.hashes(),
        blocked.bits(),
        blocked.hashes(),
        peer.num_bits(),
        peer.num_hashes()
    );
    let mut group = c.benchmark_group("bloom_insert");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("girder classic", |b| {
        b.iter(|| {
            i = (i + 1) & (RING - 1);
            black_box(classic.insert(keys[i].to_le_bytes()))
        });
    });
    group.bench_function("girder blocked", |b| {
        b.iter(|| {
            i = (i + 1) & (RING - 1);
            black_box(blocked.insert(keys[i].to_le_bytes()))
        });
    });
    group.bench_function("fastbloom", |b| {
        b.iter(|| {
            i = (i + 1) & (RING - 1);
            black_box(peer.insert(&keys[i]))
        });
    });
    group.finish();
    // Queries: half the ring was inserted above (all of it, in fact); query keys
    // offset by half a ring of fresh values so half hit and half miss.
    let probes: Vec<u64> =
        keys.iter().enumerate().map(|(n, k)| if n % 2 == 0 { *k } else { !*k }).collect();
    let mut group = c.benchmark_group("bloom_contains");
    group.throughput(Throughput::Elements(1));
    group.bench_function("girder classic", |b| {
        b.iter(|| {
            i = (i + 1) & (RING - 1);
            black_box(classic.contains(probes[i].to_le_bytes()))
        });
    });
    group.bench_function("girder blocked", |b| {
        b.iter(|| {
            i = (i + 1) & (RING - 1);
            black_box(blocked.contains(probes[i].to_le_bytes()))
        });
    });
    group.bench_function("fastbloom", |b| {
        b.iter(|| {
            i = (i + 1) & (RING - 1);
            black_box(peer.contains(&probes[i]))
        });
    });
    group.finish();
}

fn hyperloglog(c: &mut Criterion) {
    let keys = keys();
    let mut ours = HyperLogLog::new(14, 7).expect("p = 14");
    let mut peer = hyperloglockless::HyperLogLog::seeded(14, 7);
    let mut group = c.benchmark_group("hll_add_p14");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("girder", |b| {
        b.iter(|| {
            i = (i + 1) & (RING - 1);
            black_box(ours.add(keys[i].to_le_bytes()))
        });
    });
    group.bench_function("hyperloglockless", |b| {
        b.iter(|| {
            i = (i + 1) & (RING - 1);
            peer.insert(&keys[i]);
        });
    });
    group.finish();
    eprintln!("hll: girder estimate {:.0}, hyperloglockless {}", ours.estimate(), peer.count());
}

fn count_min(c: &mut Criterion) {
    let keys = keys();
    let delta = (-5.0_f64).exp() * 1.01;
    let mut cms = CountMinSketch::new(&CountMinConfig::new(0.001, delta)).expect("shape");
    eprintln!("count-min: {} x {}", cms.depth(), cms.width());
    let mut group = c.benchmark_group("count_min_update");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("girder d=5", |b| {
        b.iter(|| {
            i = (i + 1) & (RING - 1);
            cms.add(keys[i].to_le_bytes(), 1);
        });
    });
    group.finish();
}

mod group {
    // criterion_group! defines an undocumented `pub fn`.
    #![allow(missing_docs)]
    use super::{bloom, count_min, hyperloglog};
    criterion::criterion_group!(benches, bloom, hyperloglog, count_min);
}
criterion_main!(group::benches);
