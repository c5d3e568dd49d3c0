//! Model-based property tests: random joins and leaves on each scheme, mirrored on a
//! `BTreeSet` of ids (or a count, for jump). After every operation the scheme must
//! have refused exactly what the model says is invalid, hold exactly the model's
//! shards, give every key an owner from that set, and equal a scheme built from
//! scratch over the same set (owners depend on the set, not on its history).

use std::collections::BTreeSet;

use girder_shard::hash::measure::sample_key_hashes;
use girder_shard::hash::{
    AddError, BuildError, JumpHash, RemoveError, Rendezvous, Ring, RingConfig, ShardId, ShardMap,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Add(u32),
    Remove(u32),
}

/// Small ids so that duplicates, unknowns and the last shard come up often.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![(0u32..12).prop_map(Op::Add), (0u32..12).prop_map(Op::Remove)]
}

fn expected_add(model: &BTreeSet<u32>, id: u32) -> Result<(), AddError> {
    if model.contains(&id) { Err(AddError::Duplicate(ShardId(id))) } else { Ok(()) }
}

fn expected_remove(model: &BTreeSet<u32>, id: u32) -> Result<(), RemoveError> {
    match (model.contains(&id), model.len()) {
        (false, _) => Err(RemoveError::Unknown(ShardId(id))),
        (true, 1) => Err(RemoveError::LastShard(ShardId(id))),
        (true, _) => Ok(()),
    }
}

fn apply(model: &mut BTreeSet<u32>, op: &Op) {
    match *op {
        Op::Add(id) => {
            model.insert(id);
        }
        Op::Remove(id) if model.len() > 1 => {
            model.remove(&id);
        }
        Op::Remove(_) => {}
    }
}

/// Every key's owner is a current shard, and the set is the model's.
fn check_owners(map: &impl ShardMap, model: &BTreeSet<u32>) -> Result<(), TestCaseError> {
    let expected: Vec<ShardId> = model.iter().map(|&i| ShardId(i)).collect();
    prop_assert_eq!(map.shards(), expected);
    prop_assert_eq!(map.shard_count(), model.len());
    for h in sample_key_hashes(500).chain([0, 1, u64::MAX]) {
        let owner = map.shard_of_hash(h);
        prop_assert!(model.contains(&owner.0), "owner {} of {:#x} not in {:?}", owner, h, model);
        prop_assert!(map.contains(owner));
    }
    Ok(())
}

fn initial_set() -> impl Strategy<Value = BTreeSet<u32>> {
    proptest::collection::btree_set(0u32..12, 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ring_follows_the_model(
        start in initial_set(),
        vnodes in 1u32..48,
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let config = RingConfig { vnodes_per_shard: vnodes };
        let mut model = start;
        let mut ring = Ring::new(model.iter().map(|&i| ShardId(i)), config).unwrap();
        for op in &ops {
            let before = ring.clone();
            match *op {
                Op::Add(id) => prop_assert_eq!(ring.add(ShardId(id)), expected_add(&model, id)),
                Op::Remove(id) => {
                    prop_assert_eq!(ring.remove(ShardId(id)), expected_remove(&model, id));
                }
            }
            let changed = ring != before;
            let len_before = model.len();
            apply(&mut model, op);
            prop_assert_eq!(changed, model.len() != len_before, "refused ops change nothing");
            check_owners(&ring, &model)?;
            prop_assert_eq!(ring.point_count(), model.len() * vnodes as usize);
            let fresh = Ring::new(model.iter().map(|&i| ShardId(i)), config).unwrap();
            prop_assert_eq!(&ring, &fresh);
        }
    }

    #[test]
    fn rendezvous_follows_the_model(
        start in initial_set(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut model = start;
        let mut map = Rendezvous::new(model.iter().map(|&i| ShardId(i))).unwrap();
        for op in &ops {
            let before = map.clone();
            match *op {
                Op::Add(id) => prop_assert_eq!(map.add(ShardId(id)), expected_add(&model, id)),
                Op::Remove(id) => {
                    prop_assert_eq!(map.remove(ShardId(id)), expected_remove(&model, id));
                }
            }
            let changed = map != before;
            let len_before = model.len();
            apply(&mut model, op);
            prop_assert_eq!(changed, model.len() != len_before, "refused ops change nothing");
            check_owners(&map, &model)?;
            let fresh = Rendezvous::new(model.iter().map(|&i| ShardId(i))).unwrap();
            prop_assert_eq!(&map, &fresh);
        }
    }

    #[test]
    fn jump_follows_the_model(
        start in 1u32..6,
        grow in proptest::collection::vec(any::<bool>(), 1..40),
    ) {
        let mut n = start;
        let mut map = JumpHash::new(n).unwrap();
        for push in grow {
            if push {
                prop_assert_eq!(map.push(), Ok(ShardId(n)));
                n += 1;
            } else if n == 1 {
                prop_assert_eq!(map.pop(), Err(RemoveError::LastShard(ShardId(0))));
            } else {
                prop_assert_eq!(map.pop(), Ok(ShardId(n - 1)));
                n -= 1;
            }
            check_owners(&map, &(0..n).collect())?;
            prop_assert_eq!(map, JumpHash::new(n).unwrap());
        }
    }

    #[test]
    fn any_key_bytes_get_an_owner_from_the_set(
        set in proptest::collection::btree_set(any::<u32>(), 1..20),
        key in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let ids = || set.iter().map(|&i| ShardId(i));
        let ring = Ring::new(ids(), RingConfig { vnodes_per_shard: 8 }).unwrap();
        let hrw = Rendezvous::new(ids()).unwrap();
        let jump = JumpHash::new(set.len() as u32).unwrap();
        prop_assert!(set.contains(&ring.shard_of(&key).0));
        prop_assert!(set.contains(&hrw.shard_of(&key).0));
        prop_assert!((jump.shard_of(&key).0 as usize) < set.len());
        // The same bytes, the same owner.
        prop_assert_eq!(ring.shard_of(&key), ring.shard_of(&key.clone()));
    }

    #[test]
    fn bad_sets_are_refused_with_the_reason(
        set in proptest::collection::vec(0u32..8, 0..10),
        vnodes in 0u32..5000,
    ) {
        let unique: BTreeSet<u32> = set.iter().copied().collect();
        let config = RingConfig { vnodes_per_shard: vnodes };
        let ids = || set.iter().map(|&i| ShardId(i));
        let ring = Ring::new(ids(), config);
        let hrw = Rendezvous::new(ids());
        // The reason the model gives, in the order the constructors check.
        let set_error = if set.is_empty() {
            Some(BuildError::Empty)
        } else if unique.len() < set.len() {
            let mut sorted = set.clone();
            sorted.sort_unstable();
            sorted.windows(2).find(|w| w[0] == w[1]).map(|w| BuildError::Duplicate(ShardId(w[0])))
        } else {
            None
        };
        let config_error = match vnodes {
            0 => Some(BuildError::ZeroVnodes),
            v if v > 4096 => Some(BuildError::TooManyVnodes { vnodes: v, max: 4096 }),
            _ => None,
        };
        prop_assert_eq!(hrw.err(), set_error.clone());
        prop_assert_eq!(ring.err(), config_error.or(set_error));
    }
}
