//! The Count-Min sketch against exact counts: never an underestimate (plain and
//! conservative), merge equals the sketch of the concatenated stream, the error bound
//! holds, and the serialized form refuses malformed bytes.

mod common;

use std::collections::BTreeMap;

use girder_sketch::DecodeError;
use girder_sketch::count_min::{CountMinConfig, CountMinSketch};
use proptest::prelude::*;

/// A stream of (key, count) adds over a small key space, so that a narrow sketch has
/// plenty of collisions to get wrong.
fn stream() -> impl Strategy<Value = Vec<(u16, u64)>> {
    proptest::collection::vec((0..200u16, 1..1_000u64), 0..400)
}

fn sketch_of(stream: &[(u16, u64)], conservative: bool) -> CountMinSketch {
    let mut s = CountMinSketch::with_shape(16, 3, conservative, 42).expect("shape");
    for (k, c) in stream {
        s.add(k.to_le_bytes(), *c);
    }
    s
}

fn exact(stream: &[(u16, u64)]) -> BTreeMap<u16, u64> {
    let mut m = BTreeMap::new();
    for (k, c) in stream {
        *m.entry(*k).or_insert(0) += c;
    }
    m
}

fn framed(payload: &[u8]) -> Vec<u8> {
    common::framed(2, payload)
}

proptest! {
    #[test]
    fn never_underestimates(stream in stream(), conservative in any::<bool>()) {
        let s = sketch_of(&stream, conservative);
        let exact = exact(&stream);
        for (k, count) in &exact {
            prop_assert!(s.estimate(k.to_le_bytes()) >= *count, "key {k}");
        }
        prop_assert_eq!(s.total(), exact.values().sum::<u64>());
    }

    #[test]
    fn conservative_is_never_worse(stream in stream()) {
        let plain = sketch_of(&stream, false);
        let conservative = sketch_of(&stream, true);
        for k in 0..200u16 {
            prop_assert!(conservative.estimate(k.to_le_bytes()) <= plain.estimate(k.to_le_bytes()));
        }
    }

    #[test]
    fn merge_is_the_sketch_of_the_concatenated_stream(a in stream(), b in stream()) {
        let mut merged = sketch_of(&a, false);
        merged.merge(&sketch_of(&b, false)).expect("same shape");
        let both: Vec<_> = a.iter().chain(&b).copied().collect();
        prop_assert_eq!(merged, sketch_of(&both, false));
    }

    #[test]
    fn merged_conservative_sketches_never_underestimate(a in stream(), b in stream()) {
        let mut merged = sketch_of(&a, true);
        merged.merge(&sketch_of(&b, true)).expect("same shape");
        let both: Vec<_> = a.iter().chain(&b).copied().collect();
        for (k, count) in exact(&both) {
            prop_assert!(merged.estimate(k.to_le_bytes()) >= count, "key {k}");
        }
    }

    #[test]
    fn bytes_round_trip(stream in stream(), conservative in any::<bool>()) {
        let s = sketch_of(&stream, conservative);
        prop_assert_eq!(CountMinSketch::from_bytes(&s.to_bytes()), Ok(s));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = CountMinSketch::from_bytes(&bytes);
        if let Ok(s) = CountMinSketch::from_bytes(&framed(&bytes)) {
            prop_assert_eq!(CountMinSketch::from_bytes(&s.to_bytes()), Ok(s));
        }
    }

    #[test]
    fn plausible_payloads_never_panic(
        width in 0..20u32,
        depth in 0..5u32,
        conservative in 0..3u8,
        total in prop_oneof![0..50u64, Just(u64::MAX)],
        slack in -1i64..=1,
        cells in proptest::collection::vec(0..10u64, 100),
    ) {
        // Headers near the valid ones and counter arrays of about the right length, so
        // the length and row-sum checks are reached as well as the success path.
        let mut p = Vec::new();
        p.extend_from_slice(&width.to_le_bytes());
        p.extend_from_slice(&depth.to_le_bytes());
        p.push(conservative);
        p.extend_from_slice(&7u64.to_le_bytes());
        p.extend_from_slice(&total.to_le_bytes());
        let len = (i64::from(width) * i64::from(depth) + slack).max(0) as usize;
        for c in cells.iter().cycle().take(len) {
            p.extend_from_slice(&c.to_le_bytes());
        }
        if let Ok(s) = CountMinSketch::from_bytes(&framed(&p)) {
            prop_assert_eq!((s.width(), s.depth()), (width, depth));
            prop_assert_eq!(CountMinSketch::from_bytes(&s.to_bytes()), Ok(s));
        }
    }

    #[test]
    fn damaged_bytes_are_refused(stream in stream(), at in any::<prop::sample::Index>(), flip in 1..=255u8) {
        let mut bytes = sketch_of(&stream, false).to_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        prop_assert!(CountMinSketch::from_bytes(&bytes).is_err());
        let cut = at.index(bytes.len());
        prop_assert!(CountMinSketch::from_bytes(&bytes[..cut]).is_err());
    }
}

#[test]
fn row_sums_above_the_total_are_refused() {
    let mut s = CountMinSketch::with_shape(4, 2, false, 0).expect("shape");
    s.add("x", 10);
    let bytes = s.to_bytes();
    // Lower the stored total (offset 6 + 4 + 4 + 1 + 8) below the rows' sums.
    let mut body = bytes[..bytes.len() - 4].to_vec();
    body[23..31].copy_from_slice(&9u64.to_le_bytes());
    let got = CountMinSketch::from_bytes(&framed(&body[6..]));
    assert!(
        matches!(got, Err(DecodeError::Invalid { field: "row sum above total", value: 9 })),
        "{got:?}"
    );
}

#[test]
fn overestimates_stay_within_the_bound() {
    // ε = 0.01, δ = 0.01 over a skewed stream of 1M counts on 20k keys (key i gets
    // ⌈1000/(i+1)⌉ + 40): with probability 1 − δ a key's overestimate is at most εN,
    // so at most about 1% of the keys may miss it. The stream is fixed: deterministic.
    let config = CountMinConfig::new(0.01, 0.01);
    for conservative in [false, true] {
        let mut s =
            CountMinSketch::new(&config.conservative(conservative)).expect("valid parameters");
        let counts: Vec<u64> = (0..20_000u64).map(|i| 1000u64.div_ceil(i + 1) + 40).collect();
        for (i, c) in counts.iter().enumerate() {
            s.add(format!("key:{i}"), *c);
        }
        let bound = s.error_bound();
        assert_eq!(s.total(), counts.iter().sum::<u64>());
        let misses = counts
            .iter()
            .enumerate()
            .filter(|(i, c)| (s.estimate(format!("key:{i}")) - **c) as f64 > bound)
            .count();
        assert!(
            misses as f64 <= 0.01 * counts.len() as f64,
            "conservative={conservative}: {misses} of {} keys above εN = {bound}",
            counts.len()
        );
    }
}
