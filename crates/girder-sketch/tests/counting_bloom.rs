//! The counting Bloom filter against an exact multiset: no false negatives while only
//! inserted keys are removed, the non-zero counters are the classic filter of the keys
//! present, merge is the filter of both insertion sequences, and the serialized form
//! refuses malformed bytes.

mod common;

use std::collections::BTreeMap;

use girder_sketch::DecodeError;
use girder_sketch::bloom::{
    BloomConfig, BloomFilter, CountingBloomConfig, CountingBloomFilter, Layout,
};
use proptest::prelude::*;

const KIND: u8 = 5;

#[derive(Debug, Clone)]
enum Op {
    Insert(u16),
    /// Removes the key, or (for the model's sake) a key the model holds.
    Remove(u16),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![3 => (0..300u16).prop_map(Op::Insert), 2 => (0..300u16).prop_map(Op::Remove)],
        0..600,
    )
}

fn config(seed: u64) -> CountingBloomConfig {
    CountingBloomConfig::new(200, 0.05).seed(seed)
}

fn empty(seed: u64) -> CountingBloomFilter {
    CountingBloomFilter::new(&config(seed)).expect("valid parameters")
}

/// The classic filter of the same shape holding `keys`.
fn classic_of<'a>(keys: impl Iterator<Item = &'a u16>, seed: u64) -> BloomFilter {
    let mut f = BloomFilter::new(&BloomConfig::new(200, 0.05).layout(Layout::Classic).seed(seed))
        .expect("valid parameters");
    for k in keys {
        f.insert(k.to_le_bytes());
    }
    f
}

proptest! {
    #[test]
    fn agrees_with_a_multiset(ops in ops(), seed in any::<u64>()) {
        let mut f = empty(seed);
        let mut model: BTreeMap<u16, u32> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(k) => {
                    let certainly_new = f.insert(k.to_le_bytes());
                    // "Certainly new" is never said of a key that is present.
                    prop_assert!(!(certainly_new && model.contains_key(&k)));
                    *model.entry(k).or_default() += 1;
                }
                Op::Remove(k) => {
                    // Only inserted keys are removed: the documented precondition for
                    // no false negatives.
                    if let Some(count) = model.get_mut(&k) {
                        prop_assert!(f.remove(k.to_le_bytes()));
                        *count -= 1;
                        if *count == 0 {
                            model.remove(&k);
                        }
                    } else if !f.contains(k.to_le_bytes()) {
                        let before = f.clone();
                        prop_assert!(!f.remove(k.to_le_bytes()));
                        prop_assert_eq!(&f, &before);
                    }
                }
            }
            for k in model.keys() {
                prop_assert!(f.contains(k.to_le_bytes()), "false negative for {}", k);
            }
        }
        // Without saturation, the counters that are set are exactly the classic
        // filter's bits for the keys present.
        if f.saturated() == 0 {
            prop_assert_eq!(f.to_bloom(), classic_of(model.keys(), seed));
        }
    }

    #[test]
    fn merge_is_the_filter_of_both_sequences(
        a in proptest::collection::vec(0..300u16, 0..300),
        b in proptest::collection::vec(0..300u16, 0..300),
        seed in any::<u64>(),
    ) {
        let of = |keys: &[u16]| {
            let mut f = empty(seed);
            for k in keys {
                f.insert(k.to_le_bytes());
            }
            f
        };
        let mut merged = of(&a);
        merged.merge(&of(&b)).expect("same shape");
        let both: Vec<u16> = a.iter().chain(&b).copied().collect();
        prop_assert_eq!(merged, of(&both));
    }

    #[test]
    fn bytes_round_trip(ops in ops(), seed in any::<u64>()) {
        let mut f = empty(seed);
        for op in ops {
            match op {
                Op::Insert(k) => { f.insert(k.to_le_bytes()); }
                Op::Remove(k) => { f.remove(k.to_le_bytes()); }
            }
        }
        prop_assert_eq!(CountingBloomFilter::from_bytes(&f.to_bytes()), Ok(f));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = CountingBloomFilter::from_bytes(&bytes);
        if let Ok(f) = CountingBloomFilter::from_bytes(&common::framed(KIND, &bytes)) {
            prop_assert_eq!(CountingBloomFilter::from_bytes(&f.to_bytes()), Ok(f));
        }
    }

    #[test]
    fn plausible_payloads_never_panic(
        hashes in 0..40u32,
        counters in 0..600u64,
        slack in -1i64..=1,
        fill in any::<u8>(),
    ) {
        let mut p = hashes.to_le_bytes().to_vec();
        p.extend_from_slice(&counters.to_le_bytes());
        p.extend_from_slice(&9u64.to_le_bytes());
        let len = counters.div_ceil(2) as i64 + slack;
        p.extend(std::iter::repeat_n(fill, len.max(0) as usize));
        if let Ok(f) = CountingBloomFilter::from_bytes(&common::framed(KIND, &p)) {
            prop_assert_eq!(f.counters(), counters);
            prop_assert_eq!(CountingBloomFilter::from_bytes(&f.to_bytes()), Ok(f));
        }
    }

    #[test]
    fn damaged_bytes_are_refused(keys in proptest::collection::vec(0..300u16, 0..100), at in any::<prop::sample::Index>(), flip in 1..=255u8) {
        let mut f = empty(3);
        for k in keys {
            f.insert(k.to_le_bytes());
        }
        let mut bytes = f.to_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        prop_assert!(CountingBloomFilter::from_bytes(&bytes).is_err());
        let cut = at.index(bytes.len());
        prop_assert!(CountingBloomFilter::from_bytes(&bytes[..cut]).is_err());
    }
}

#[test]
fn malformed_fields_get_their_own_errors() {
    let check = |payload: &[u8], field: &str| {
        let got = CountingBloomFilter::from_bytes(&common::framed(KIND, payload));
        assert!(
            matches!(&got, Err(DecodeError::Invalid { field: f, .. }) if *f == field),
            "{field}: {got:?}"
        );
    };
    let header = |hashes: u32, counters: u64| {
        let mut p = hashes.to_le_bytes().to_vec();
        p.extend_from_slice(&counters.to_le_bytes());
        p.extend_from_slice(&0u64.to_le_bytes());
        p
    };
    check(&header(0, 8), "hashes");
    check(&header(3, 0), "counters");
    check(&header(3, u64::MAX), "counters");
    // Three counters in two bytes: the fourth nibble must be clear.
    let mut p = header(3, 3);
    p.extend_from_slice(&[0x11, 0x10]);
    check(&p, "counter past the end");
    let got = CountingBloomFilter::from_bytes(&common::framed(KIND, &header(3, 3)));
    assert!(matches!(got, Err(DecodeError::Length { expected: 2, got: 0 })), "{got:?}");
}

#[test]
fn rate_matches_the_classic_filter_after_churn() {
    // Fill to capacity, remove half, insert as many fresh keys: the false-positive rate
    // is that of a classic filter holding the keys present (identical bits), near p.
    let (n, p) = (20_000u64, 0.01);
    let mut f = CountingBloomFilter::new(&CountingBloomConfig::new(n, p)).expect("valid");
    for i in 0..n {
        f.insert(format!("key:{i}"));
    }
    for i in 0..n / 2 {
        assert!(f.remove(format!("key:{i}")));
    }
    for i in n..n + n / 2 {
        f.insert(format!("key:{i}"));
    }
    assert_eq!(f.saturated(), 0, "distinct keys at capacity do not saturate 4-bit counters");
    for i in n / 2..n + n / 2 {
        assert!(f.contains(format!("key:{i}")));
    }
    let absent = 200_000;
    let hits = (0..absent).filter(|i| f.contains(format!("absent:{i}"))).count();
    let measured = hits as f64 / f64::from(absent);
    assert!(measured <= p * 1.10, "measured {measured}");
    let classic = f.to_bloom();
    let classic_hits = (0..absent).filter(|i| classic.contains(format!("absent:{i}"))).count();
    assert_eq!(hits, classic_hits);
}

#[test]
fn removing_a_false_positive_is_the_documented_hazard() {
    // A small filter: keys never inserted that read as present are removed (each from
    // a fresh copy), and some such removal makes an inserted key absent — the failure
    // the docs admit. Keys whose counters are all zero are refused instead.
    let mut f = CountingBloomFilter::with_shape(64, 2, 0).expect("shape");
    for i in 0..20u32 {
        f.insert(i.to_le_bytes());
    }
    let mut impostors = 0;
    let mut harmful = 0;
    for k in 1_000..2_000u32 {
        let mut copy = f.clone();
        if !f.contains(k.to_le_bytes()) {
            assert!(!copy.remove(k.to_le_bytes()));
            assert_eq!(copy, f);
            continue;
        }
        impostors += 1;
        assert!(copy.remove(k.to_le_bytes()), "a false positive cannot be told apart");
        if (0..20u32).any(|i| !copy.contains(i.to_le_bytes())) {
            harmful += 1;
        }
    }
    assert!(impostors > 0 && harmful > 0, "{impostors} impostors, {harmful} harmful");
    assert!(impostors < 1_000, "some keys are certainly absent");
}
