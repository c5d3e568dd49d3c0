//! Shard lookups per second: jump consistent hash, the consistent-hash ring (256
//! virtual nodes per shard) and rendezvous hashing at 8 and 64 shards, each on keys
//! already hashed to a `u64` and on byte keys (`user:<id>`, 6–13 bytes, hashed with
//! XXH3 inside the lookup), with `hash % N` and the key hash alone as floors.
//!
//! Each iteration looks up a batch of 4096 independent keys (32 KiB of hashes: the
//! working set stays in L1, so the schemes' own work is measured, not cache misses);
//! throughput is per key. One router thread resolving a stream of keys sees this rate;
//! a single isolated lookup takes longer, since consecutive lookups here overlap in
//! the CPU.

use std::hint::black_box;

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_main, measurement::WallTime};
use girder_shard::hash::{JumpHash, Rendezvous, Ring, RingConfig, ShardId, ShardMap, key_hash};

/// Keys per batch.
const BATCH: usize = 4096;

/// `BATCH` byte keys like a router sees: `user:` and a decimal id below 10^8.
fn byte_keys() -> Vec<Vec<u8>> {
    girder_bench::splitmix64(0x5EED_0000_5A4D_0001)
        .take(BATCH)
        .map(|z| format!("user:{}", z % 100_000_000).into_bytes())
        .collect()
}

/// The same keys, hashed once ahead of time (as when the key is a random id already).
fn hashed_keys(keys: &[Vec<u8>]) -> Vec<u64> {
    keys.iter().map(|k| key_hash(k)).collect()
}

/// The catalogue's `hash % N`, for scale.
struct ModN(u64);

impl ModN {
    #[inline]
    fn shard_of_hash(&self, h: u64) -> ShardId {
        ShardId((h % self.0) as u32)
    }
}

fn bench_map<M: ShardMap>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    map: &M,
    bytes: &[Vec<u8>],
    hashes: &[u64],
) {
    group.bench_function(format!("{name}/u64"), |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &h in hashes {
                acc ^= map.shard_of_hash(black_box(h)).0;
            }
            acc
        });
    });
    group.bench_function(format!("{name}/bytes"), |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for k in bytes {
                acc ^= map.shard_of(black_box(k)).0;
            }
            acc
        });
    });
}

fn lookups(c: &mut Criterion) {
    let bytes = byte_keys();
    let hashes = hashed_keys(&bytes);

    let mut group = c.benchmark_group("key_hash");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("xxh3_64/bytes", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for k in &bytes {
                acc ^= key_hash(black_box(k));
            }
            acc
        });
    });
    group.finish();

    for n in [8u32, 64] {
        let mut group = c.benchmark_group(format!("shard_lookup_{n}_shards"));
        group.throughput(Throughput::Elements(BATCH as u64));
        let jump = JumpHash::new(n).unwrap();
        let ring = Ring::new((0..n).map(ShardId), RingConfig::default()).unwrap();
        let rendezvous = Rendezvous::new((0..n).map(ShardId)).unwrap();
        bench_map(&mut group, "jump", &jump, &bytes, &hashes);
        bench_map(&mut group, "ring_256_vnodes", &ring, &bytes, &hashes);
        bench_map(&mut group, "rendezvous", &rendezvous, &bytes, &hashes);
        let modulo = ModN(u64::from(n));
        group.bench_function("hash_mod_n/u64", |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for &h in &hashes {
                    acc ^= modulo.shard_of_hash(black_box(h)).0;
                }
                acc
            });
        });
        group.finish();
    }
}

mod group {
    // criterion_group! defines an undocumented `pub fn`.
    #![allow(missing_docs)]
    use super::lookups;
    criterion::criterion_group!(benches, lookups);
}
criterion_main!(group::benches);
