//! Space-Saving against exact counts: every key's true total lies in its estimate's
//! error range, every key above `N/m` is monitored, before and after merges; the recall
//! of the top 100 on a Zipf stream; the serialized form refuses malformed bytes.

mod common;

use std::collections::HashMap;

use girder_sketch::DecodeError;
use girder_sketch::topk::SpaceSaving;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A stream of (key, count) adds over a key space larger than the summaries, skewed
/// towards small keys so that there are heavy hitters to find.
fn stream() -> impl Strategy<Value = Vec<(u16, u64)>> {
    proptest::collection::vec(
        (prop_oneof![0..10u16, 0..300u16], prop_oneof![1..5u64, 1..200u64]),
        0..400,
    )
}

fn summary_of(stream: &[(u16, u64)], capacity: u64) -> SpaceSaving {
    let mut s = SpaceSaving::new(capacity).expect("capacity");
    for (k, c) in stream {
        s.add(k.to_le_bytes(), *c);
    }
    s
}

fn exact(stream: &[(u16, u64)]) -> HashMap<u16, u64> {
    let mut m = HashMap::new();
    for (k, c) in stream {
        *m.entry(*k).or_insert(0) += c;
    }
    m
}

/// The guarantee of the module docs, checked against exact counts.
fn check_guarantee(s: &SpaceSaving, exact: &HashMap<u16, u64>) -> Result<(), TestCaseError> {
    let total: u64 = exact.values().sum();
    let m = u64::from(s.capacity());
    prop_assert_eq!(s.total(), total);
    prop_assert!(s.len() <= s.capacity() as usize);
    prop_assert!(s.floor() * m <= total, "floor {} above N/m = {total}/{m}", s.floor());
    for k in 0..300u16 {
        let truth = exact.get(&k).copied().unwrap_or(0);
        let e = s.estimate(k.to_le_bytes());
        prop_assert!(
            e.count - e.error <= truth && truth <= e.count,
            "key {k}: {e:?}, true {truth}"
        );
    }
    let monitored: Vec<_> = s.top(usize::MAX).iter().map(|h| h.key.to_vec()).collect();
    for (k, truth) in exact {
        if truth * m > total {
            prop_assert!(monitored.contains(&k.to_le_bytes().to_vec()), "heavy key {k} missing");
        }
        if *truth > s.floor() {
            prop_assert!(monitored.contains(&k.to_le_bytes().to_vec()), "key {k} above floor");
        }
    }
    let top = s.top(usize::MAX);
    prop_assert!(top.windows(2).all(|w| w[0].count >= w[1].count));
    Ok(())
}

fn framed(payload: &[u8]) -> Vec<u8> {
    common::framed(4, payload)
}

proptest! {
    #[test]
    fn estimates_bracket_the_truth_and_heavy_keys_are_kept(stream in stream(), m in 1..40u64) {
        check_guarantee(&summary_of(&stream, m), &exact(&stream))?;
    }

    #[test]
    fn merged_summaries_keep_the_guarantee(a in stream(), b in stream(), m in 1..40u64) {
        let mut merged = summary_of(&a, m);
        merged.merge(&summary_of(&b, m)).expect("same capacity");
        let both: Vec<_> = a.iter().chain(&b).copied().collect();
        check_guarantee(&merged, &exact(&both))?;
    }

    #[test]
    fn merge_trees_and_adds_after_merge_keep_the_guarantee(
        parts in proptest::collection::vec(stream(), 1..5),
        after in stream(),
        m in 1..40u64,
    ) {
        let mut merged = SpaceSaving::new(m).expect("capacity");
        for part in &parts {
            let mut s = summary_of(part, m);
            s.merge(&merged).expect("same capacity");
            merged = s;
        }
        for (k, c) in &after {
            merged.add(k.to_le_bytes(), *c);
        }
        let all: Vec<_> = parts.iter().flatten().chain(&after).copied().collect();
        check_guarantee(&merged, &exact(&all))?;
        // A merged summary still round-trips: its fields pass the decoder's checks.
        prop_assert_eq!(SpaceSaving::from_bytes(&merged.to_bytes()), Ok(merged));
    }

    #[test]
    fn bytes_round_trip(stream in stream(), m in 1..40u64) {
        let s = summary_of(&stream, m);
        let copy = SpaceSaving::from_bytes(&s.to_bytes()).expect("own bytes");
        prop_assert_eq!(&copy, &s);
        prop_assert_eq!(copy.to_bytes(), s.to_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = SpaceSaving::from_bytes(&bytes);
        if let Ok(s) = SpaceSaving::from_bytes(&framed(&bytes)) {
            prop_assert_eq!(SpaceSaving::from_bytes(&s.to_bytes()), Ok(s));
        }
    }

    #[test]
    fn plausible_payloads_never_panic(
        capacity in 0..6u32,
        total in prop_oneof![0..60u64, Just(u64::MAX)],
        floor in 0..4u64,
        len in 0..7u32,
        entries in proptest::collection::vec((0..3u8, 0..3u32, 0..12u64, 0..5u64), 7),
        slack in 0..3usize,
    ) {
        // Headers and entries near valid ones, so that each field check is reached as
        // well as the success path.
        let mut p = Vec::new();
        p.extend_from_slice(&capacity.to_le_bytes());
        p.extend_from_slice(&total.to_le_bytes());
        p.extend_from_slice(&floor.to_le_bytes());
        p.extend_from_slice(&len.to_le_bytes());
        for (byte, key_len, count, error) in entries.iter().take(len as usize) {
            p.extend_from_slice(&key_len.to_le_bytes());
            p.extend(std::iter::repeat_n(*byte, *key_len as usize));
            p.extend_from_slice(&count.to_le_bytes());
            p.extend_from_slice(&error.to_le_bytes());
        }
        p.truncate(p.len().saturating_sub(slack));
        if let Ok(s) = SpaceSaving::from_bytes(&framed(&p)) {
            prop_assert_eq!(s.capacity(), capacity);
            prop_assert!(s.len() <= capacity as usize);
            prop_assert_eq!(SpaceSaving::from_bytes(&s.to_bytes()), Ok(s));
        }
    }

    #[test]
    fn damaged_bytes_are_refused(stream in stream(), at in any::<prop::sample::Index>(), flip in 1..=255u8) {
        let mut bytes = summary_of(&stream, 8).to_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        prop_assert!(SpaceSaving::from_bytes(&bytes).is_err());
        let cut = at.index(bytes.len());
        prop_assert!(SpaceSaving::from_bytes(&bytes[..cut]).is_err());
    }
}

#[test]
fn fields_no_summary_can_hold_are_refused() {
    fn payload(capacity: u32, total: u64, floor: u64, entries: &[(&[u8], u64, u64)]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&capacity.to_le_bytes());
        p.extend_from_slice(&total.to_le_bytes());
        p.extend_from_slice(&floor.to_le_bytes());
        p.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for (key, count, error) in entries {
            p.extend_from_slice(&(key.len() as u32).to_le_bytes());
            p.extend_from_slice(key);
            p.extend_from_slice(&count.to_le_bytes());
            p.extend_from_slice(&error.to_le_bytes());
        }
        framed(&p)
    }
    fn check(bytes: &[u8], field: &'static str) {
        let got = SpaceSaving::from_bytes(bytes);
        assert!(matches!(got, Err(DecodeError::Invalid { field: f, .. }) if f == field), "{got:?}");
    }
    assert!(SpaceSaving::from_bytes(&payload(2, 5, 0, &[(b"a", 3, 0), (b"b", 2, 0)])).is_ok());
    check(&payload(0, 0, 0, &[]), "capacity");
    check(&payload(1, 5, 0, &[(b"a", 3, 0), (b"b", 2, 0)]), "keys above capacity");
    check(&payload(2, 9, 2, &[(b"a", 3, 0), (b"b", 1, 0)]), "count below floor");
    check(&payload(2, 9, 1, &[(b"a", 3, 2)]), "error above floor");
    check(&payload(2, 9, 0, &[(b"a", 3, 0), (b"a", 2, 0)]), "duplicate key");
    // Σ (count − floor) + m·floor = 2 + 1 + 2·1 = 5 > 4.
    check(&payload(2, 4, 1, &[(b"a", 3, 0), (b"b", 2, 1)]), "counts above total");
}

/// Samples ranks `0..n` with probability ∝ `1/(rank+1)^s` by inverting the CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|i| {
                acc += (i as f64).powf(-s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

#[test]
fn zipf_top_100_recall_is_at_least_99_percent() {
    const KEYS: usize = 100_000;
    const EVENTS: usize = 1_000_000;
    const K: usize = 100;
    const CAPACITY: u64 = 1_000;
    let zipf = Zipf::new(KEYS, 1.1);
    let mut rng = StdRng::seed_from_u64(0x70_4b);
    let mut summary = SpaceSaving::new(CAPACITY).expect("capacity");
    let mut exact: HashMap<Vec<u8>, u64> = HashMap::new();
    for _ in 0..EVENTS {
        let key = format!("video:{}", zipf.sample(&mut rng)).into_bytes();
        summary.add(&key, 1);
        *exact.entry(key).or_insert(0) += 1;
    }
    let mut truth: Vec<(&Vec<u8>, u64)> = exact.iter().map(|(k, c)| (k, *c)).collect();
    truth.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let reported = summary.top(K);
    let hits = truth[..K].iter().filter(|(k, _)| reported.iter().any(|h| h.key == k.as_slice()));
    let recall = hits.count() as f64 / K as f64;
    let exact_bytes = exact.capacity() * (std::mem::size_of::<(Vec<u8>, u64)>() + 1)
        + exact.keys().map(Vec::capacity).sum::<usize>();
    assert!(
        recall >= 0.99,
        "recall {recall} of the exact top {K} with m = {CAPACITY}: Space-Saving ≈ {} bytes, \
         exact counting of {} keys ≈ {exact_bytes} bytes",
        summary.memory_bytes(),
        exact.len(),
    );
    // The reported counts keep the guarantee too.
    for h in &reported {
        let truth = exact.get(h.key).copied().unwrap_or(0);
        assert!(h.count - h.error <= truth && truth <= h.count, "{h:?} vs {truth}");
    }
}
