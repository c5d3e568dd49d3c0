//! Id generation throughput: Base62, the leased-range allocator, Snowflake, and
//! UUIDv7 against the `uuid` crate's own generator, measured in the same run.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, Throughput, criterion_main};
use girder_core::SystemClock;
use girder_id::base62;
use girder_id::counter::{AllocatorConfig, IdAllocator, MAX_LEASE_SIZE, MemorySource};
use girder_id::permute::KeyedPermutation;
use girder_id::snowflake::{Snowflake, SnowflakeConfig};
use girder_id::uuid7::{UuidV7Generator, to_base62};

/// Drives a future that never really waits (the memory source is always ready), so the
/// allocator's async slow path can be measured without a runtime.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// How many values each base62 case cycles through: enough that the branch predictor
/// cannot learn them, few enough (32 KiB) to stay in cache.
const BASE62_VALUES: usize = 4096;

/// `BASE62_VALUES` pseudo-random values in `[lo, hi)` (splitmix64, fixed seed). A case
/// cycles through them, so it stays at one digit count instead of drifting out of it.
fn values_in(lo: u64, hi: u64) -> Vec<u64> {
    girder_bench::splitmix64(0x0062_5EED_BA5E_0062)
        .take(BASE62_VALUES)
        .map(|z| lo + z % (hi - lo))
        .collect()
}

fn base62(c: &mut Criterion) {
    let mut group = c.benchmark_group("base62");
    group.throughput(Throughput::Elements(1));
    // The Bit.ly case: 7-character codes, values in [62^6, 62^7).
    let short = values_in(base62::capacity(6), base62::capacity(7));
    // Full-width u64 values: 11 digits, [62^10, 2^64).
    let wide = values_in(base62::capacity(10), u64::MAX);
    assert!(short.iter().all(|&n| base62::encode(n).len() == 7));
    assert!(wide.iter().all(|&n| base62::encode(n).len() == 11));
    let short_text: Vec<String> = short.iter().map(|&n| base62::encode(n)).collect();
    let wide_text: Vec<String> = wide.iter().map(|&n| base62::encode(n)).collect();
    let mut text = String::with_capacity(base62::MAX_U64_LEN);
    let mut i = 0;

    // Round trips without allocation: the code goes through `as_str()` (with its UTF-8
    // check) into `decode`, as text handed to a caller would.
    group.bench_function("7_digits/encode_fixed_buf+decode", |b| {
        b.iter(|| {
            i = (i + 1) % BASE62_VALUES;
            let code = base62::encode_fixed_buf(black_box(short[i]), 7).unwrap();
            base62::decode(black_box(code.as_str())).unwrap()
        });
    });
    group.bench_function("11_digits/encode_buf+decode", |b| {
        b.iter(|| {
            i = (i + 1) % BASE62_VALUES;
            let code = base62::encode_buf(black_box(wide[i]));
            base62::decode(black_box(code.as_str())).unwrap()
        });
    });

    // The halves on their own.
    group.bench_function("7_digits/encode_fixed_buf", |b| {
        b.iter(|| {
            i = (i + 1) % BASE62_VALUES;
            base62::encode_fixed_buf(black_box(short[i]), 7).unwrap()
        });
    });
    group.bench_function("7_digits/decode", |b| {
        b.iter(|| {
            i = (i + 1) % BASE62_VALUES;
            base62::decode(black_box(&short_text[i])).unwrap()
        });
    });
    group.bench_function("11_digits/encode_buf", |b| {
        b.iter(|| {
            i = (i + 1) % BASE62_VALUES;
            base62::encode_buf(black_box(wide[i]))
        });
    });
    group.bench_function("11_digits/decode", |b| {
        b.iter(|| {
            i = (i + 1) % BASE62_VALUES;
            base62::decode(black_box(&wide_text[i])).unwrap()
        });
    });

    // The String-returning API, for comparison.
    group.bench_function("7_digits/encode_fixed+decode", |b| {
        b.iter(|| {
            i = (i + 1) % BASE62_VALUES;
            let code = base62::encode_fixed(black_box(short[i]), 7).unwrap();
            base62::decode(black_box(&code)).unwrap()
        });
    });
    group.bench_function("7_digits/encode_into+decode", |b| {
        b.iter(|| {
            i = (i + 1) % BASE62_VALUES;
            text.clear();
            base62::encode_into(black_box(short[i]), &mut text);
            base62::decode(black_box(&text)).unwrap()
        });
    });
    group.bench_function("11_digits/encode_into+decode", |b| {
        b.iter(|| {
            i = (i + 1) % BASE62_VALUES;
            text.clear();
            base62::encode_into(black_box(wide[i]), &mut text);
            base62::decode(black_box(&text)).unwrap()
        });
    });
    group.bench_function("11_digits/encode", |b| {
        b.iter(|| {
            i = (i + 1) % BASE62_VALUES;
            base62::encode(black_box(wide[i]))
        });
    });

    let u = UuidV7Generator::new().next();
    group.bench_function("uuid_to_base62", |b| b.iter(|| to_base62(black_box(u))));
    group.finish();
}

fn permute(c: &mut Criterion) {
    let mut group = c.benchmark_group("permute");
    group.throughput(Throughput::Elements(1));
    // The short-URL case: shuffle counter ids within the 7-character code space.
    let shuffle = KeyedPermutation::new(*b"bench-secret-key", base62::capacity(7)).unwrap();
    let mut x: u64 = 0;
    group.bench_function("permute_62pow7", |b| {
        b.iter(|| {
            x = (x + 1) % shuffle.domain();
            shuffle.permute(black_box(x)).unwrap()
        });
    });
    group.finish();
}

fn allocator(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocator");
    group.throughput(Throughput::Elements(1));
    // A huge batch so the measurement is the in-process fast path, not leasing.
    let alloc =
        IdAllocator::new(MemorySource::new(0), AllocatorConfig { batch_size: MAX_LEASE_SIZE });
    group.bench_function("try_next", |b| {
        b.iter(|| alloc.try_next().unwrap_or_else(|| block_on(alloc.next_id()).unwrap()));
    });
    let alloc = IdAllocator::new(MemorySource::new(0), AllocatorConfig::default());
    group.bench_function("next_id_batch_1000", |b| b.iter(|| block_on(alloc.next_id()).unwrap()));
    group.finish();
}

fn snowflake(c: &mut Criterion) {
    let mut group = c.benchmark_group("snowflake");
    group.throughput(Throughput::Elements(1));
    let generator = Snowflake::new(SnowflakeConfig::default(), SystemClock).unwrap();
    // The ceiling is 4096 ids per millisecond (4.096M/s) on one machine id.
    group.bench_function("next_id_system_clock", |b| b.iter(|| generator.next_id().unwrap()));
    group.finish();
}

fn uuid_v7(c: &mut Criterion) {
    let mut group = c.benchmark_group("uuid_v7");
    group.throughput(Throughput::Elements(1));
    let generator = UuidV7Generator::new();
    group.bench_function("girder_UuidV7Generator::next", |b| b.iter(|| generator.next()));
    group.bench_function("uuid::Uuid::now_v7", |b| b.iter(uuid::Uuid::now_v7));
    group.finish();
}

mod group {
    // criterion_group! defines an undocumented `pub fn`.
    #![allow(missing_docs)]
    use super::{allocator, base62, permute, snowflake, uuid_v7};
    criterion::criterion_group!(benches, base62, permute, allocator, snowflake, uuid_v7);
}
criterion_main!(group::benches);
