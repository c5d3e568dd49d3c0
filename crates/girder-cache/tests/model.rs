//! Model-based property test: random reads, writes, invalidations, silent store
//! changes and clock moves, applied to the cache and to a trivially correct model (a
//! `HashMap` of what should be cached and until when). With no jitter and room for
//! every key, the cache must answer exactly as the model does: never a value the model
//! says has expired or been overwritten, and never a load the model says is a hit.
//! Run against L1 alone and against L1 + the in-process L2.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use girder_cache::{Cache, CacheConfig, L2Store, Loader, MemoryL2, NoL2};
use girder_core::ManualClock;
use parking_lot::Mutex;
use proptest::prelude::*;

const TTL_MS: u64 = 1_000;
const NEGATIVE_TTL_MS: u64 = 300;

#[derive(Debug, Clone)]
enum Op {
    /// Read through the cache.
    Get(u8),
    /// Store write followed by `put` (write-through).
    Put(u8, u32),
    /// Store delete followed by `invalidate` (write-around).
    Delete(u8),
    /// `invalidate` with no store change.
    Invalidate(u8),
    /// A store write the cache is not told about (staleness until the TTL is allowed).
    SilentWrite(u8, u32),
    /// Time passes.
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0_u8..6;
    prop_oneof![
        4 => key.clone().prop_map(Op::Get),
        1 => (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::Put(k, v)),
        1 => key.clone().prop_map(Op::Delete),
        1 => key.clone().prop_map(Op::Invalidate),
        1 => (key, any::<u32>()).prop_map(|(k, v)| Op::SilentWrite(k, v)),
        2 => (0_u16..1_500).prop_map(Op::Advance),
    ]
}

#[derive(Debug, thiserror::Error)]
#[error("never fails")]
struct Never;

#[derive(Default)]
struct Store {
    rows: Mutex<HashMap<u8, u32>>,
    loads: AtomicU64,
}

impl Loader<u8, u32> for Store {
    type Error = Never;

    async fn load(&self, key: &u8) -> Result<Option<u32>, Never> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Ok(self.rows.lock().get(key).copied())
    }
}

/// What the cache should hold: value (or absence) and the instant it stops being fresh.
#[derive(Default)]
struct Model {
    cached: HashMap<u8, (Option<u32>, u64)>,
    loads: u64,
}

fn run<S: L2Store>(ops: &[Op], l2: impl FnOnce(&ManualClock) -> S) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let clock = ManualClock::new(1_000_000);
        let store = Arc::new(Store::default());
        let config = CacheConfig {
            name: "model".into(),
            l1_capacity_entries: 1_000,
            ttl_ms: TTL_MS,
            ttl_jitter_fraction: 0.0,
            negative_ttl_ms: NEGATIVE_TTL_MS,
            // L2 entries expire with the L1 entries written alongside them, so the
            // model needs no separate L2 state; tombstones outlive nothing.
            l2_ttl_ms: TTL_MS,
            l2_tombstone_ms: 200,
            ..CacheConfig::default()
        };
        let cache = Cache::builder(config, Arc::clone(&store))
            .clock(Arc::new(clock.clone()))
            .l2(l2(&clock))
            .build()
            .unwrap();
        let mut model = Model::default();
        for (step, op) in ops.iter().enumerate() {
            let now = clock.now_ms();
            match *op {
                Op::Get(k) => {
                    let got = cache.get(&k).await.unwrap();
                    let want = match model.cached.get(&k) {
                        Some(&(value, fresh_until)) if now < fresh_until => value,
                        _ => {
                            model.loads += 1;
                            let value = store.rows.lock().get(&k).copied();
                            let ttl = if value.is_some() { TTL_MS } else { NEGATIVE_TTL_MS };
                            model.cached.insert(k, (value, now + ttl));
                            value
                        }
                    };
                    prop_assert_eq!(got, want, "step {}: {:?} at {}", step, op, now);
                }
                Op::Put(k, v) => {
                    store.rows.lock().insert(k, v);
                    cache.put(k, v).await.unwrap();
                    model.cached.insert(k, (Some(v), now + TTL_MS));
                }
                Op::Delete(k) => {
                    store.rows.lock().remove(&k);
                    cache.invalidate(&k).await.unwrap();
                    model.cached.remove(&k);
                }
                Op::Invalidate(k) => {
                    cache.invalidate(&k).await.unwrap();
                    model.cached.remove(&k);
                }
                Op::SilentWrite(k, v) => {
                    store.rows.lock().insert(k, v);
                }
                Op::Advance(by) => clock.advance(Duration::from_millis(u64::from(by))),
            }
            if !S::ENABLED {
                // Without L2 every model miss is exactly one load, every hit none.
                prop_assert_eq!(store.loads.load(Ordering::SeqCst), model.loads, "step {}", step);
            }
        }
        cache.shutdown().await;
        Ok(())
    })
}

use girder_core::Clock as _;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn l1_alone_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops, |_| NoL2)?;
    }

    #[test]
    fn l1_with_memory_l2_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops, |clock| MemoryL2::new(Arc::new(clock.clone())))?;
    }
}
