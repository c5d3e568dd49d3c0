//! The click count on Bit.ly's redirect path: girder-log's `Coalescer` against the
//! buffer Bit.ly used before it (16 `Mutex<HashMap<String, u64>>` shards picked by
//! FNV-1a, SipHash inside each map, a global key counter), reproduced here as
//! `OldClickMap` so both run in the same process.
//!
//! Cases: one hot code and 100,000 codes (7-character Base62, visited in a scattered
//! order, every code already buffered: the steady state between flushes), on one and
//! on two threads; and a refill: 100,000 new codes into an empty buffer followed by
//! the flush's drain, the work of one flush interval when every click is on a
//! different link.
//!
//! After the criterion groups, the same four add cases run interleaved: old and new
//! take turns, one batch of 100,000 adds each, for 31 rounds,
//! alternating which goes first; each round gives one ratio (new time over old), and
//! the median and range are printed. On a shared machine whose speed drifts between
//! criterion groups, these ratios are the ones to compare.
//!
//! Run: `cargo bench -p girder-bench --bench coalesce`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_main};
use girder_log::batch::coalesce::{CoalesceConfig, CoalesceSink, Coalescer};
use parking_lot::Mutex;

const KEYS: usize = 100_000;
const SHARDS: usize = 16;
/// Rounds of the interleaved comparison.
const ROUNDS: usize = 31;

/// Bit.ly's click buffer before the coalescer, without its metrics (only its drop
/// path touched them, and nothing is dropped here).
struct OldClickMap {
    shards: Box<[Mutex<HashMap<String, u64>>]>,
    keys: AtomicUsize,
    keys_max: usize,
}

impl OldClickMap {
    fn new(keys_max: usize) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Self { shards, keys: AtomicUsize::new(0), keys_max }
    }

    fn shard(&self, code: &str) -> &Mutex<HashMap<String, u64>> {
        let hash = code.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    fn claim_key(&self) -> bool {
        if self.keys.fetch_add(1, Ordering::Relaxed) < self.keys_max {
            return true;
        }
        self.keys.fetch_sub(1, Ordering::Relaxed);
        false
    }

    fn record(&self, code: &str) {
        let mut pending = self.shard(code).lock();
        if let Some(n) = pending.get_mut(code) {
            *n += 1;
            return;
        }
        if !self.claim_key() {
            return;
        }
        pending.insert(code.to_owned(), 1);
    }

    fn drain(&self) -> Vec<(String, u64)> {
        let mut batch = Vec::new();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock());
            self.keys.fetch_sub(taken.len(), Ordering::Relaxed);
            batch.extend(taken);
        }
        batch
    }
}

/// Accepts every batch.
struct Discard;

impl CoalesceSink for Discard {
    type Key = String;
    type Value = u64;
    type Error = std::io::Error;

    async fn write(&self, batch: &[(String, u64)]) -> Result<(), std::io::Error> {
        black_box(batch.len());
        Ok(())
    }
}

fn coalescer() -> Coalescer<Discard> {
    let config = CoalesceConfig { keys_max: KEYS, flush_keys: KEYS, ..CoalesceConfig::default() };
    Coalescer::new(Discard, config).expect("config")
}

/// `KEYS` distinct 7-character Base62 codes, in a scattered order.
fn codes() -> Vec<String> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut seen = std::collections::HashSet::new();
    girder_bench::splitmix64(0xC11C_C0DE_0000_0001)
        .map(|mut z| {
            (0..7)
                .map(|_| {
                    let c = ALPHABET[(z % 62) as usize] as char;
                    z /= 62;
                    c
                })
                .collect::<String>()
        })
        .filter(|c| seen.insert(c.clone()))
        .take(KEYS)
        .collect()
}

/// Runs `iters` adds split over two threads, thread `t` taking indices `t, t + 2, …`.
fn two_threads(iters: u64, add: &(dyn Fn(usize) + Sync)) -> Duration {
    on_threads(2, iters, add)
}

/// Runs `iters` adds split over `threads` threads, thread `t` taking indices `t, t +
/// threads, …`.
fn on_threads(threads: usize, iters: u64, add: &(dyn Fn(usize) + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in 0..iters / threads as u64 {
                    add((i as usize * threads + t) % KEYS);
                }
            });
        }
    });
    start.elapsed()
}

fn steady(c: &mut Criterion) {
    let codes = codes();
    let hot = "aZ3kQ9x";
    let old = OldClickMap::new(KEYS);
    let new = coalescer();
    for code in &codes {
        old.record(code);
        new.add(code.as_str(), 1).expect("room");
    }
    old.record(hot);
    // The hot code would not fit in a full coalescer; give it its own.
    let new_hot = coalescer();

    let mut group = c.benchmark_group("click_add_hot_key_1_thread");
    group.throughput(Throughput::Elements(1));
    group.bench_function("old_click_map", |b| b.iter(|| old.record(black_box(hot))));
    group.bench_function("coalescer", |b| b.iter(|| new_hot.add(black_box(hot), 1)));
    group.finish();

    let mut group = c.benchmark_group("click_add_hot_key_2_threads");
    group.throughput(Throughput::Elements(1));
    group.bench_function("old_click_map", |b| {
        b.iter_custom(|n| two_threads(n, &|_| old.record(black_box(hot))));
    });
    group.bench_function("coalescer", |b| {
        b.iter_custom(|n| {
            two_threads(n, &|_| {
                let _ = new_hot.add(black_box(hot), 1);
            })
        });
    });
    group.finish();

    let mut group = c.benchmark_group("click_add_100k_keys_1_thread");
    group.throughput(Throughput::Elements(1));
    group.bench_function("old_click_map", |b| {
        let mut i = 0;
        b.iter(|| {
            old.record(&codes[i]);
            i = (i + 1) % KEYS;
        });
    });
    group.bench_function("coalescer", |b| {
        let mut i = 0;
        b.iter(|| {
            let _ = new.add(codes[i].as_str(), 1);
            i = (i + 1) % KEYS;
        });
    });
    group.finish();

    let mut group = c.benchmark_group("click_add_100k_keys_2_threads");
    group.throughput(Throughput::Elements(1));
    group.bench_function("old_click_map", |b| {
        b.iter_custom(|n| two_threads(n, &|i| old.record(&codes[i])));
    });
    group.bench_function("coalescer", |b| {
        b.iter_custom(|n| {
            two_threads(n, &|i| {
                let _ = new.add(codes[i].as_str(), 1);
            })
        });
    });
    group.finish();
    assert_eq!(new.stats().dropped, 0, "every code fitted");
}

fn refill(c: &mut Criterion) {
    let codes = codes();
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let mut group = c.benchmark_group("click_refill_100k_keys_and_drain");
    group.throughput(Throughput::Elements(KEYS as u64));
    group.sample_size(20);
    let old = OldClickMap::new(KEYS);
    group.bench_function("old_click_map", |b| {
        b.iter(|| {
            for code in &codes {
                old.record(code);
            }
            black_box(old.drain().len())
        });
    });
    let new = coalescer();
    group.bench_function("coalescer", |b| {
        b.iter(|| {
            for code in &codes {
                let _ = new.add(code.as_str(), 1);
            }
            runtime.block_on(new.flush()).expect("flush")
        });
    });
    group.finish();
}

/// Old and new taking turns, one ratio per round; see the module docs.
fn interleaved() {
    let rounds = ROUNDS;
    let codes = codes();
    let hot = "aZ3kQ9x";
    let old = OldClickMap::new(KEYS);
    let new = coalescer();
    for code in &codes {
        old.record(code);
        new.add(code.as_str(), 1).expect("room");
    }
    let old_hot = OldClickMap::new(KEYS);
    let new_hot = coalescer();
    let old_hot_add = |_: usize| old_hot.record(black_box(hot));
    let new_hot_add = |_: usize| {
        let _ = new_hot.add(black_box(hot), 1);
    };
    let old_keys_add = |i: usize| old.record(&codes[i]);
    let new_keys_add = |i: usize| {
        let _ = new.add(codes[i].as_str(), 1);
    };
    type Add<'a> = &'a (dyn Fn(usize) + Sync);
    let cases: [(&str, usize, Add<'_>, Add<'_>); 4] = [
        ("hot key, 1 thread", 1, &old_hot_add, &new_hot_add),
        ("hot key, 2 threads", 2, &old_hot_add, &new_hot_add),
        ("100k keys, 1 thread", 1, &old_keys_add, &new_keys_add),
        ("100k keys, 2 threads", 2, &old_keys_add, &new_keys_add),
    ];
    println!(
        "interleaved, {rounds} rounds of {KEYS} adds each: coalescer time / old click map time"
    );
    for (name, threads, old_add, new_add) in cases {
        let batch = KEYS as u64;
        on_threads(threads, batch, old_add);
        on_threads(threads, batch, new_add);
        let mut ratios: Vec<f64> = (0..rounds)
            .map(|round| {
                let (old_t, new_t) = if round % 2 == 0 {
                    let o = on_threads(threads, batch, old_add);
                    (o, on_threads(threads, batch, new_add))
                } else {
                    let n = on_threads(threads, batch, new_add);
                    (on_threads(threads, batch, old_add), n)
                };
                new_t.as_secs_f64() / old_t.as_secs_f64()
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "  {name:<22} median {:.2}x  (min {:.2}x, max {:.2}x)",
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    steady(&mut c);
    refill(&mut c);
    interleaved();
}

criterion_main!(benches);
