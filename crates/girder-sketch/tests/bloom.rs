//! The Bloom filter against an exact set: no false negatives, union, the serialized
//! form, and the catalogue's false-positive rate measured against its formula.

mod common;

use std::collections::BTreeSet;

use girder_sketch::DecodeError;
use girder_sketch::bloom::{
    BloomConfig, BloomFilter, Layout, expected_false_positive_rate,
    expected_false_positive_rate_blocked,
};
use proptest::prelude::*;

fn layouts() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::Classic), Just(Layout::Blocked)]
}

fn keys() -> impl Strategy<Value = BTreeSet<Vec<u8>>> {
    proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 0..12), 0..300)
}

fn filter_of(keys: &BTreeSet<Vec<u8>>, layout: Layout, seed: u64) -> BloomFilter {
    let mut f = BloomFilter::new(&BloomConfig::new(200, 0.05).layout(layout).seed(seed))
        .expect("valid parameters");
    for k in keys {
        f.insert(k);
    }
    f
}

fn framed(payload: &[u8]) -> Vec<u8> {
    common::framed(1, payload)
}

proptest! {
    #[test]
    fn no_false_negatives(keys in keys(), layout in layouts(), seed in any::<u64>()) {
        let f = filter_of(&keys, layout, seed);
        for k in &keys {
            prop_assert!(f.contains(k));
        }
    }

    #[test]
    fn insert_reports_certainly_new_keys(keys in keys(), layout in layouts()) {
        let mut f = BloomFilter::new(&BloomConfig::new(200, 0.05).layout(layout)).expect("valid parameters");
        for k in &keys {
            let before = f.clone();
            let new = f.insert(k);
            // "new" exactly when the filter changed, and a second insert never is.
            prop_assert_eq!(new, f != before);
            prop_assert!(!f.insert(k));
        }
    }

    #[test]
    fn union_is_the_filter_of_the_union(a in keys(), b in keys(), layout in layouts(), seed in any::<u64>()) {
        let mut fa = filter_of(&a, layout, seed);
        fa.union(&filter_of(&b, layout, seed)).expect("same shape");
        let both: BTreeSet<Vec<u8>> = a.union(&b).cloned().collect();
        prop_assert_eq!(fa, filter_of(&both, layout, seed));
    }

    #[test]
    fn bytes_round_trip(keys in keys(), layout in layouts(), seed in any::<u64>()) {
        let f = filter_of(&keys, layout, seed);
        prop_assert_eq!(BloomFilter::from_bytes(&f.to_bytes()), Ok(f));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = BloomFilter::from_bytes(&bytes);
        // Behind a valid checksum, too, where every field check is reached.
        if let Ok(f) = BloomFilter::from_bytes(&framed(&bytes)) {
            prop_assert_eq!(BloomFilter::from_bytes(&f.to_bytes()), Ok(f));
        }
    }

    #[test]
    fn plausible_payloads_never_panic(
        layout in 0..3u8,
        hashes in 0..40u32,
        bits in 0..3000u64,
        seed in any::<u64>(),
        slack in -1i64..=1,
        fill in any::<u8>(),
    ) {
        // Headers near the valid ones, with word arrays of about the right length, so
        // the length and tail-bit checks are reached as well as the success path.
        let mut p = vec![layout];
        p.extend_from_slice(&hashes.to_le_bytes());
        p.extend_from_slice(&bits.to_le_bytes());
        p.extend_from_slice(&seed.to_le_bytes());
        let len = (bits.div_ceil(64) * 8) as i64 + slack;
        p.extend(std::iter::repeat_n(fill, len.max(0) as usize));
        if let Ok(f) = BloomFilter::from_bytes(&framed(&p)) {
            prop_assert_eq!(f.bits(), bits);
            prop_assert_eq!(BloomFilter::from_bytes(&f.to_bytes()), Ok(f));
        }
    }

    #[test]
    fn damaged_bytes_are_refused(keys in keys(), layout in layouts(), at in any::<prop::sample::Index>(), flip in 1..=255u8) {
        let mut bytes = filter_of(&keys, layout, 7).to_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        prop_assert!(BloomFilter::from_bytes(&bytes).is_err());
        let cut = at.index(bytes.len());
        prop_assert!(BloomFilter::from_bytes(&bytes[..cut]).is_err());
    }
}

#[test]
fn malformed_frames_get_their_own_errors() {
    let good = BloomFilter::with_shape(128, 3, Layout::Classic, 0).expect("shape").to_bytes();
    let check = |bytes: &[u8], want: fn(&DecodeError) -> bool| {
        let got = BloomFilter::from_bytes(bytes);
        assert!(matches!(&got, Err(e) if want(e)), "{got:?}");
    };
    check(&good[..5], |e| matches!(e, DecodeError::TooShort { .. }));
    check(b"NOPE\x01\x01\0\0\0\0", |e| matches!(e, DecodeError::BadMagic));
    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    check(&bad_crc, |e| matches!(e, DecodeError::Checksum { .. }));
    // Another kind, another version: reframed with a valid checksum.
    let payload = &good[6..good.len() - 4];
    let mut other_kind = framed(payload);
    other_kind[4] = 2;
    let other_kind = framed_raw(&other_kind[..other_kind.len() - 4]);
    check(&other_kind, |e| matches!(e, DecodeError::WrongKind { expected: 1, found: 2 }));
    let mut other_version = framed(payload);
    other_version[5] = 9;
    let other_version = framed_raw(&other_version[..other_version.len() - 4]);
    check(&other_version, |e| matches!(e, DecodeError::UnsupportedVersion(9)));
    // Field checks.
    let mut p = payload.to_vec();
    p[0] = 5;
    check(&framed(&p), |e| matches!(e, DecodeError::Invalid { field: "layout", .. }));
    let mut p = payload.to_vec();
    p[1..5].copy_from_slice(&0u32.to_le_bytes());
    check(&framed(&p), |e| matches!(e, DecodeError::Invalid { field: "hashes", .. }));
    let mut p = payload.to_vec();
    p[5..13].copy_from_slice(&u64::MAX.to_le_bytes());
    check(&framed(&p), |e| matches!(e, DecodeError::Invalid { field: "bits", .. }));
    check(&framed(&payload[..payload.len() - 1]), |e| matches!(e, DecodeError::Length { .. }));
    // 120 bits: the last word's top 8 bits must be clear.
    let mut p = BloomFilter::with_shape(120, 3, Layout::Classic, 0).expect("shape").to_bytes();
    p.truncate(p.len() - 4);
    let n = p.len();
    p[n - 1] = 0x80;
    check(&framed_raw(&p), |e| matches!(e, DecodeError::Invalid { .. }));
}

fn framed_raw(body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    let crc = common::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Measures the false-positive rate over `absent` keys never inserted.
fn measured_rate(f: &BloomFilter, absent: u64) -> f64 {
    let hits = (0..absent).filter(|i| f.contains(format!("absent:{i}"))).count();
    hits as f64 / absent as f64
}

#[test]
fn classic_rate_matches_the_catalogue_formula() {
    // The catalogue's example: m = 10,000 bits, k = 3, n = 1,000 → p ≈ 2%. One
    // filter's rate varies with its keys (about ±5% relative at this size), so the
    // rate is averaged over 10 filters with different seeds, each probed with 100k
    // absent keys; all keys are fixed, so the test is deterministic.
    let (m, k, n) = (10_000, 3, 1_000);
    let formula = expected_false_positive_rate(m, k, n);
    assert!((formula - 0.0174).abs() < 0.0001, "formula {formula}");
    let mut total = 0.0;
    for seed in 0..10 {
        let mut f = BloomFilter::with_shape(m, k, Layout::Classic, seed).expect("shape");
        for i in 0..n {
            f.insert(format!("present:{i}"));
        }
        total += measured_rate(&f, 100_000);
    }
    let measured = total / 10.0;
    let relative = (measured - formula).abs() / formula;
    assert!(
        relative <= 0.10,
        "measured {measured}, formula {formula}, off by {:.1}%",
        relative * 100.0
    );
}

#[test]
fn sized_filters_meet_their_target_rate() {
    // Filled to capacity, a filter sized for p stays near p (the blocked layout is
    // sized by its own formula, so it meets p too, with more memory).
    for (layout, slack) in [(Layout::Classic, 1.10), (Layout::Blocked, 1.15)] {
        for p in [0.01, 0.001] {
            let n = 20_000;
            let mut f =
                BloomFilter::new(&BloomConfig::new(n, p).layout(layout)).expect("valid parameters");
            for i in 0..n {
                f.insert(format!("present:{i}"));
            }
            let measured = measured_rate(&f, 200_000);
            assert!(measured <= p * slack, "{layout:?} p={p}: measured {measured}");
            let estimate = f.estimated_len();
            let tolerance = if layout == Layout::Classic { 0.02 } else { 0.10 };
            assert!(
                (estimate - n as f64).abs() / n as f64 <= tolerance,
                "{layout:?} p={p}: estimated {estimate} of {n}"
            );
        }
    }
}

#[test]
fn blocked_rate_matches_its_formula() {
    // 20 blocks' worth of keys per 10,240 bits: the blocked formula's 1.0% against the
    // measured rate, averaged over 10 seeds of 100k absent keys each.
    let (m, k, n) = (10_240, 7, 1_000);
    let formula = expected_false_positive_rate_blocked(m, k, n);
    assert!(formula > expected_false_positive_rate(m, k, n), "blocks fill unevenly");
    let mut total = 0.0;
    for seed in 0..10 {
        let mut f = BloomFilter::with_shape(m, k, Layout::Blocked, seed).expect("shape");
        for i in 0..n {
            f.insert(format!("present:{i}"));
        }
        total += measured_rate(&f, 100_000);
    }
    let measured = total / 10.0;
    let relative = (measured - formula).abs() / formula;
    assert!(
        relative <= 0.10,
        "measured {measured}, formula {formula}, off by {:.1}%",
        relative * 100.0
    );
}
