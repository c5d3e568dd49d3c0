//! KeyedPermutation: a bijection on every domain, stable golden values, clean errors.

use girder_id::permute::{KeyedPermutation, PermuteError};
use proptest::prelude::*;

const KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// Golden values. They were computed by `golden/permute_reference.py`, an independent
/// implementation of the documented construction (SipHash-2-4 checked against the
/// paper's test vector), and agree with the Rust code. Several server instances rely on
/// computing the same mapping, so a change here is a breaking format change.
const GOLDEN: &[(&[u8; 16], u64, u64, u64)] = &[
    (&KEY, 1, 0, 0),
    (&KEY, 1000, 0, 231),
    (&KEY, 1000, 1, 296),
    (&KEY, 1000, 2, 814),
    (&KEY, 1000, 999, 206),
    (&KEY, 56_800_235_584, 0, 4_884_573_483),
    (&KEY, 56_800_235_584, 1, 11_266_116_726),
    (&KEY, 56_800_235_584, 2, 21_231_831_636),
    (&KEY, 56_800_235_584, 999, 41_172_304_478),
    (&KEY, 56_800_235_584, 56_800_235_583, 14_715_899_498),
    (&KEY, 1 << 32, 0, 449_452_211),
    (&KEY, 1 << 32, 1, 2_440_300_316),
    (&KEY, 1 << 32, 2, 2_847_026_312),
    (&KEY, 1 << 32, 999, 101_470_228),
    (&KEY, 1 << 32, u32::MAX as u64, 3_043_984_633),
    (&KEY, u64::MAX, 0, 9_141_366_593_741_271_266),
    (&KEY, u64::MAX, 1, 5_494_588_917_855_322_066),
    (&KEY, u64::MAX, 2, 16_003_383_162_598_004_354),
    (&KEY, u64::MAX, 999, 3_383_537_936_710_428_257),
    (&KEY, u64::MAX, u64::MAX - 1, 9_466_481_873_129_932_097),
    (b"girder-permute!!", 56_800_235_584, 0, 3_667_717_257),
    (b"girder-permute!!", 56_800_235_584, 1, 30_668_540_297),
    (b"girder-permute!!", 56_800_235_584, 2, 31_299_619_311),
    (b"girder-permute!!", 56_800_235_584, 3, 52_366_765_546),
];

#[test]
fn golden_values_never_change() {
    for &(key, domain, x, y) in GOLDEN {
        let p = KeyedPermutation::new(*key, domain).unwrap();
        assert_eq!(p.permute(x), Ok(y), "permute({x}) on domain {domain}");
        assert_eq!(p.invert(y), Ok(x), "invert({y}) on domain {domain}");
    }
}

#[test]
fn small_domains_are_permuted_exhaustively() {
    for domain in [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 100, 1000, 4095, 4096, 4097, 65_537] {
        let p = KeyedPermutation::new(KEY, domain).unwrap();
        let mut seen = vec![false; domain as usize];
        for x in 0..domain {
            let y = p.permute(x).unwrap();
            assert!(!seen[y as usize], "domain {domain}: {y} hit twice");
            seen[y as usize] = true;
            assert_eq!(p.invert(y), Ok(x));
        }
        assert!(seen.iter().all(|&hit| hit), "domain {domain}: not onto");
    }
}

#[test]
fn the_mapping_looks_shuffled_and_depends_on_the_key() {
    let domain = 1_000_000;
    let a = KeyedPermutation::new(KEY, domain).unwrap();
    let b = KeyedPermutation::new([7; 16], domain).unwrap();
    let outputs: Vec<u64> = (0..1000).map(|x| a.permute(x).unwrap()).collect();
    // A random permutation has about one fixed point; consecutive inputs land far apart.
    let fixed_points = outputs.iter().enumerate().filter(|&(x, &y)| x as u64 == y).count();
    assert!(fixed_points <= 3, "{fixed_points} fixed points");
    let adjacent = outputs.windows(2).filter(|w| w[0].abs_diff(w[1]) < 1000).count();
    assert!(adjacent <= 10, "{adjacent} neighbours stayed close");
    let same = (0..1000).filter(|&x| a.permute(x) == b.permute(x)).count();
    assert!(same <= 3, "two keys agreed on {same} of 1000 inputs");
}

#[test]
fn errors_are_reported() {
    assert_eq!(KeyedPermutation::new(KEY, 0).err(), Some(PermuteError::EmptyDomain));
    let p = KeyedPermutation::new(KEY, 10).unwrap();
    assert_eq!(p.domain(), 10);
    assert_eq!(p.permute(10), Err(PermuteError::OutOfDomain { value: 10, domain: 10 }));
    assert_eq!(p.invert(u64::MAX), Err(PermuteError::OutOfDomain { value: u64::MAX, domain: 10 }));
}

#[test]
fn debug_output_hides_the_key() {
    let p = KeyedPermutation::new([0xAB; 16], 10).unwrap();
    let text = format!("{p:?}");
    assert!(!text.contains("171"), "{text}");
    assert!(text.contains("domain: 10"), "{text}");
}

proptest! {
    #[test]
    fn bijection_on_any_domain(key in any::<[u8; 16]>(), domain in 1u64.., x in any::<u64>()) {
        let x = x % domain;
        let p = KeyedPermutation::new(key, domain).unwrap();
        let y = p.permute(x).unwrap();
        prop_assert!(y < domain);
        prop_assert_eq!(p.invert(y), Ok(x));
        prop_assert_eq!(p.permute(p.invert(x).unwrap()), Ok(x));
    }

    #[test]
    fn bijection_on_small_domains(key in any::<[u8; 16]>(), domain in 1u64..5000, x in any::<u64>()) {
        let x = x % domain;
        let p = KeyedPermutation::new(key, domain).unwrap();
        let y = p.permute(x).unwrap();
        prop_assert!(y < domain);
        prop_assert_eq!(p.invert(y), Ok(x));
    }
}
