//! The in-process lease store passes the lease conformance suite and the concurrent
//! history check, and the fencing story end to end: a paused holder that outlived its
//! lease is refused by the fence.

use std::sync::Arc;
use std::time::Duration;

use girder_core::{Clock, ManualClock, SystemClock};
use girder_lock::fence::{FenceError, MemoryFence};
use girder_lock::lease::{
    AnyLeaseStore, LeaseError, LeaseStore, MemoryLeaseConfig, MemoryLeaseStore,
};
use girder_testkit::lease::{lease_conformance, lease_history_run};

fn store(clock: &ManualClock) -> Arc<MemoryLeaseStore> {
    Arc::new(MemoryLeaseStore::new(MemoryLeaseConfig::default(), Arc::new(clock.clone())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_lease_store_conforms() {
    let clock = ManualClock::new(SystemClock.now_ms());
    // Two handles on one in-process store: two Arcs of the same map.
    let shared = store(&clock);
    lease_conformance(&shared, &Arc::clone(&shared), &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_lease_store_conforms() {
    let clock = ManualClock::new(SystemClock.now_ms());
    let inner = MemoryLeaseStore::new(MemoryLeaseConfig::default(), Arc::new(clock.clone()));
    let shared = Arc::new(AnyLeaseStore::Memory(inner));
    lease_conformance(&shared, &Arc::clone(&shared), &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_lease_history_is_safe_under_concurrency() {
    let clock = ManualClock::new(SystemClock.now_ms());
    let shared = store(&clock);
    let history = lease_history_run(vec![Arc::clone(&shared), shared], 32, 4, 200, clock).await;
    history.check().unwrap();
    eprintln!(
        "{} acquisitions, {} held for a non-empty time, {} lost, {} busy",
        history.events().len(),
        history.held(),
        history.lost(),
        history.busy()
    );
    assert!(history.held() > 400, "too few non-empty holds: {}", history.held());
    assert!(history.lost() > 0, "no lease expired under its holder");
    assert!(history.busy() > 0, "no contention");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_is_fenced_off() {
    let clock = ManualClock::new(SystemClock.now_ms());
    let leases = store(&clock);
    let fence = MemoryFence::default();
    let first = leases.try_acquire("seat-12A", 1_000).await.unwrap().unwrap();
    fence.check_and_record("seat-12A", first.token()).unwrap();
    // The first holder stops the world for longer than its lease...
    clock.advance(Duration::from_millis(1_500));
    let second = leases.try_acquire("seat-12A", 1_000).await.unwrap().unwrap();
    fence.check_and_record("seat-12A", second.token()).unwrap();
    // ...wakes up and writes: the lease cannot stop it, the fence does.
    assert_eq!(
        fence.check_and_record("seat-12A", first.token()),
        Err(FenceError::Stale { presented: first.token(), highest: second.token() })
    );
    assert_eq!(leases.release(&first).await, Err(LeaseError::NotHolder));
}
