//! The guarantees of `ShardMap`, checked on every scheme: stable owners (golden values),
//! owners independent of join order, keys that move only to a joining shard or only
//! from a leaving one, about `1/N` of them, and an even spread — against the
//! catalogue's `hash % N`, which fails the movement checks.

use girder_shard::hash::measure::{
    Load, Movement, ideal_moved_fraction, load, movement, sample_key_hashes,
};
use girder_shard::hash::{
    AddError, BuildError, JumpHash, RemoveError, Rendezvous, Ring, RingConfig, ShardId, ShardMap,
    key_hash,
};

/// Keys per measurement: the brief's 100k. Binomial noise on a 1/9 share is ~0.9%
/// (one standard deviation), so a 5% tolerance is five of them for rendezvous and jump.
const KEYS: u64 = 100_000;

fn ids(range: std::ops::Range<u32>) -> impl Iterator<Item = ShardId> {
    range.map(ShardId)
}

fn ring(range: std::ops::Range<u32>, vnodes_per_shard: u32) -> Ring {
    Ring::new(ids(range), RingConfig { vnodes_per_shard }).unwrap()
}

fn rendezvous(range: std::ops::Range<u32>) -> Rendezvous {
    Rendezvous::new(ids(range)).unwrap()
}

fn jump(n: u32) -> JumpHash {
    JumpHash::new(n).unwrap()
}

/// The catalogue's baseline, `hash % N` over shards `0..N`: even, but not consistent.
struct ModN(u32);

impl ShardMap for ModN {
    fn shard_of_hash(&self, key_hash: u64) -> ShardId {
        ShardId((key_hash % u64::from(self.0)) as u32)
    }
    fn shard_count(&self) -> usize {
        self.0 as usize
    }
    fn contains(&self, shard: ShardId) -> bool {
        shard.0 < self.0
    }
    fn shards(&self) -> Vec<ShardId> {
        ids(0..self.0).collect()
    }
}

#[test]
fn owners_are_pinned_across_processes_and_versions() {
    // Golden values: a change here re-homes data in every deployment. The key hashes
    // are XXH3-64 with seed 0 (the first two are xxHash's own published values).
    let ring = ring(0..8, 256);
    let rendezvous = rendezvous(0..8);
    let jump = jump(8);
    let table: [(&str, u64, [u32; 3]); 6] = [
        ("", 0x2d06_8005_38d3_94c2, [2, 6, 0]),
        ("a", 0xe6c6_32b6_1e96_4e1f, [2, 4, 1]),
        ("user:1", 0x3b57_7afd_7fed_9501, [3, 1, 1]),
        ("user:42", 0x9fc1_e605_fa71_74aa, [6, 3, 1]),
        ("order:2026-01-01:17", 0x7396_4bc8_ad8e_38cf, [3, 3, 0]),
        ("\u{1F600}", 0x0b4f_ecf4_21a0_808e, [1, 4, 7]),
    ];
    for (key, hash, [r, h, j]) in table {
        let key = key.as_bytes();
        assert_eq!(key_hash(key), hash, "hash of {key:?}");
        let got = [ring.shard_of(key), rendezvous.shard_of(key), jump.shard_of(key)];
        assert_eq!(got, [ShardId(r), ShardId(h), ShardId(j)], "owners of {key:?}");
    }
}

#[test]
fn owners_do_not_depend_on_join_order() {
    // Built at once from a shuffled list, or grown one shard at a time in another
    // order: the same structure, so the same owners.
    let order = [5, 0, 7, 2, 6, 1, 4, 3];
    let mut grown_ring = ring(3..4, 256);
    let mut grown_hrw = rendezvous(3..4);
    for &i in order.iter().filter(|&&i| i != 3) {
        grown_ring.add(ShardId(i)).unwrap();
        grown_hrw.add(ShardId(i)).unwrap();
    }
    let shuffled = || order.iter().rev().map(|&i| ShardId(i));
    assert_eq!(grown_ring, Ring::new(shuffled(), RingConfig::default()).unwrap());
    assert_eq!(grown_hrw, Rendezvous::new(shuffled()).unwrap());
    // Jump: grown from 1 or built at 8.
    let mut grown_jump = jump(1);
    for _ in 1..8 {
        grown_jump.push().unwrap();
    }
    assert_eq!(grown_jump, jump(8));
    // And a remove undoes an add exactly.
    let mut ring9 = ring(0..8, 256);
    ring9.add(ShardId(100)).unwrap();
    ring9.remove(ShardId(100)).unwrap();
    assert_eq!(ring9, ring(0..8, 256));
}

/// Checks that between `before` and `after` no key moved needlessly, every moved key
/// went to a shard that joined or came from one that left, and the moved fraction is
/// within `tolerance` (relative) of the ideal `1 / max(N_before, N_after)`.
fn check_one_change(
    label: &str,
    before: &impl ShardMap,
    after: &impl ShardMap,
    tolerance: f64,
) -> Movement {
    let m = movement(before, after, sample_key_hashes(KEYS));
    assert_eq!(m.keys, KEYS);
    assert_eq!(m.needless, 0, "{label}: keys moved between shards that stayed: {m:?}");
    for h in sample_key_hashes(KEYS) {
        let (old, new) = (before.shard_of_hash(h), after.shard_of_hash(h));
        assert!(
            old == new || !after.contains(old) || !before.contains(new),
            "{label}: key {h:#x} moved from {old} to {new}"
        );
    }
    let ideal = ideal_moved_fraction(before.shard_count(), after.shard_count());
    let ratio = m.moved_fraction() / ideal;
    assert!(
        (ratio - 1.0).abs() <= tolerance,
        "{label}: moved {:.5}, ideal {ideal:.5}, ratio {ratio:.4}",
        m.moved_fraction()
    );
    m
}

#[test]
fn eight_to_nine_and_back_moves_about_one_ninth() {
    // The brief's check: 5% (relative) of K/N for 8 -> 9 and 9 -> 8.
    //
    // For rendezvous and jump the noise is binomial (~0.9%), so 5% is a wide margin.
    // For the ring it is not: the moved keys are the changed shard's share of the
    // ring, and with v virtual nodes a share varies by about 1/sqrt(v) = 6.25% at 256
    // (see `ring_shares_vary_as_one_over_sqrt_vnodes`). These particular ids measure
    // 0.968 (add 8) and 1.049 (remove 3) of the ideal: inside 5%, but another choice
    // of ids could land outside it.
    let r8 = ring(0..8, 256);
    let mut r9 = r8.clone();
    r9.add(ShardId(8)).unwrap();
    let mut r9_without_3 = r9.clone();
    r9_without_3.remove(ShardId(3)).unwrap();
    check_one_change("ring 8->9", &r8, &r9, 0.05);
    check_one_change("ring 9->8 (remove last)", &r9, &r8, 0.05);
    check_one_change("ring 9->8 (remove 3)", &r9, &r9_without_3, 0.05);

    let h8 = rendezvous(0..8);
    let mut h9 = h8.clone();
    h9.add(ShardId(8)).unwrap();
    let mut h9_without_3 = h9.clone();
    h9_without_3.remove(ShardId(3)).unwrap();
    check_one_change("rendezvous 8->9", &h8, &h9, 0.05);
    check_one_change("rendezvous 9->8 (remove last)", &h9, &h8, 0.05);
    check_one_change("rendezvous 9->8 (remove 3)", &h9, &h9_without_3, 0.05);

    let j8 = jump(8);
    let mut j9 = j8;
    j9.push().unwrap();
    let mut j8_again = j9;
    j8_again.pop().unwrap();
    check_one_change("jump 8->9", &j8, &j9, 0.05);
    check_one_change("jump 9->8", &j9, &j8_again, 0.05);
}

#[test]
fn every_single_join_or_leave_moves_only_what_it_must() {
    // Every position: remove each of 16 shards, add one below, between and above them.
    let r = ring(0..16, 64);
    let h = rendezvous(0..16);
    for s in 0..16 {
        let mut r_minus = r.clone();
        r_minus.remove(ShardId(s)).unwrap();
        check_one_change(&format!("ring remove {s}"), &r, &r_minus, 0.5);
        let mut h_minus = h.clone();
        h_minus.remove(ShardId(s)).unwrap();
        check_one_change(&format!("rendezvous remove {s}"), &h, &h_minus, 0.05);
    }
    for s in [u32::MAX, 16, 1_000] {
        let mut r_plus = r.clone();
        r_plus.add(ShardId(s)).unwrap();
        check_one_change(&format!("ring add {s}"), &r, &r_plus, 0.5);
        let mut h_plus = h.clone();
        h_plus.add(ShardId(s)).unwrap();
        check_one_change(&format!("rendezvous add {s}"), &h, &h_plus, 0.05);
    }
    for n in [1, 2, 3, 7, 8, 31, 64, 100] {
        check_one_change(&format!("jump {n}->{}", n + 1), &jump(n), &jump(n + 1), 0.05);
    }
}

#[test]
fn hash_mod_n_moves_almost_everything() {
    // The catalogue's "can't easily add shards (requires rehashing)", measured by the
    // same helper: 8/9 of the keys move, most between shards that both stayed.
    let m = movement(&ModN(8), &ModN(9), sample_key_hashes(KEYS));
    assert!((m.moved_fraction() - 8.0 / 9.0).abs() < 0.01, "{m:?}");
    assert!(m.needless > m.moved * 3 / 4, "{m:?}");
}

#[test]
fn ring_shares_vary_as_one_over_sqrt_vnodes() {
    // Add 32 different shards to the same 8-shard ring, one at a time: each takes its
    // own share of the keys. On average that is the ideal 1/9; shard to shard it varies
    // by about 1/sqrt(vnodes) (the sum of v exponential arcs), which is why the ring
    // needs many virtual nodes and still spreads keys less evenly than the others.
    for vnodes in [64, 256] {
        let base = ring(0..8, vnodes);
        let ratios: Vec<f64> = (100..132)
            .map(|s| {
                let mut plus = base.clone();
                plus.add(ShardId(s)).unwrap();
                let m = movement(&base, &plus, sample_key_hashes(KEYS));
                assert_eq!(m.needless, 0);
                m.moved_fraction() * 9.0
            })
            .collect();
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        let sd = (ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>()
            / (ratios.len() - 1) as f64)
            .sqrt();
        let expected_sd = 1.0 / f64::from(vnodes).sqrt();
        // Standard error of the mean of 32: expected_sd / 5.7; allow four of them.
        assert!(
            (mean - 1.0).abs() < 4.0 * expected_sd / 32f64.sqrt(),
            "vnodes {vnodes}: mean {mean:.4}"
        );
        assert!(
            (0.5 * expected_sd..1.5 * expected_sd).contains(&sd),
            "vnodes {vnodes}: sd {sd:.4}, expected about {expected_sd:.4}"
        );
    }
}

fn check_spread(label: &str, l: &Load, max_spread: f64) {
    assert_eq!(l.keys, KEYS);
    assert_eq!(l.per_shard.iter().map(|&(_, n)| n).sum::<u64>(), KEYS, "{label}");
    assert!(l.min() > 0, "{label}: an empty shard");
    assert!(l.spread() <= max_spread, "{label}: spread {:.4} > {max_spread}", l.spread());
}

#[test]
fn keys_spread_evenly() {
    // Bounds from the noise: rendezvous and jump are binomial (8 shards: 0.84% per
    // shard; 64: 2.5%), bounded at ~3.5 standard deviations above the mean. The ring
    // adds its 1/sqrt(256) = 6.25% share noise, bounded the same way.
    let keys = || sample_key_hashes(KEYS);
    check_spread("jump 8", &load(&jump(8), keys()), 1.03);
    check_spread("jump 64", &load(&jump(64), keys()), 1.10);
    check_spread("rendezvous 8", &load(&rendezvous(0..8), keys()), 1.03);
    check_spread("rendezvous 64", &load(&rendezvous(0..64), keys()), 1.10);
    check_spread("ring 8", &load(&ring(0..8, 256), keys()), 1.22);
    check_spread("ring 64", &load(&ring(0..64, 256), keys()), 1.30);
    // More virtual nodes, a more even ring; one per shard is badly skewed.
    let spreads: Vec<f64> =
        [1, 16, 256, 1024].iter().map(|&v| load(&ring(0..8, v), keys()).spread()).collect();
    assert!(spreads.windows(2).all(|w| w[0] > w[1]), "{spreads:?}");
    assert!(spreads[0] > 1.5, "{spreads:?}");
}

#[test]
fn refusals_are_typed_and_leave_the_set_unchanged() {
    let config = RingConfig::default();
    assert_eq!(Ring::new([], config), Err(BuildError::Empty));
    assert_eq!(Rendezvous::new([]), Err(BuildError::Empty));
    assert_eq!(JumpHash::new(0), Err(BuildError::Empty));
    assert_eq!(
        Ring::new([ShardId(1), ShardId(2), ShardId(1)], config),
        Err(BuildError::Duplicate(ShardId(1)))
    );
    assert_eq!(Rendezvous::new([ShardId(4), ShardId(4)]), Err(BuildError::Duplicate(ShardId(4))));
    assert_eq!(
        Ring::new([ShardId(1)], RingConfig { vnodes_per_shard: 0 }),
        Err(BuildError::ZeroVnodes)
    );

    let mut r = ring(0..2, 16);
    let mut h = rendezvous(0..2);
    let (r0, h0) = (r.clone(), h.clone());
    assert_eq!(r.add(ShardId(1)), Err(AddError::Duplicate(ShardId(1))));
    assert_eq!(h.add(ShardId(1)), Err(AddError::Duplicate(ShardId(1))));
    assert_eq!(r.remove(ShardId(9)), Err(RemoveError::Unknown(ShardId(9))));
    assert_eq!(h.remove(ShardId(9)), Err(RemoveError::Unknown(ShardId(9))));
    assert_eq!((&r, &h), (&r0, &h0));
    r.remove(ShardId(0)).unwrap();
    h.remove(ShardId(0)).unwrap();
    assert_eq!(r.remove(ShardId(1)), Err(RemoveError::LastShard(ShardId(1))));
    assert_eq!(h.remove(ShardId(1)), Err(RemoveError::LastShard(ShardId(1))));
    assert_eq!((r.shards(), h.shards()), (vec![ShardId(1)], vec![ShardId(1)]));
    assert_eq!(r.shard_of(b"anything"), ShardId(1));
    assert_eq!(h.shard_of(b"anything"), ShardId(1));
    // The errors say what happened.
    assert_eq!(
        RemoveError::LastShard(ShardId(1)).to_string(),
        "shard-1 is the last shard; a shard set is never empty"
    );
    assert_eq!(AddError::Duplicate(ShardId(7)).to_string(), "shard-7 is already in the set");
}
