//! The in-process L2 passes the L2 conformance suite and the multi-instance cache
//! suite: clones of one `MemoryL2` stand in for processes sharing one Redis.

use std::sync::Arc;
use std::time::Duration;

use girder_cache::MemoryL2;
use girder_core::{Clock, ManualClock, SystemClock};
use girder_testkit::cache::{l2_store_conformance, multi_instance_conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_l2_conforms() {
    let clock = ManualClock::new(SystemClock.now_ms());
    let store = MemoryL2::new(Arc::new(clock.clone()));
    l2_store_conformance(
        || {
            let store = store.clone();
            async move { store }
        },
        |ms| clock.advance(Duration::from_millis(ms)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_sharing_a_memory_l2_conform() {
    let clock = ManualClock::new(SystemClock.now_ms());
    let store = MemoryL2::new(Arc::new(clock.clone()));
    multi_instance_conformance(
        || {
            let store = store.clone();
            async move { store }
        },
        &clock,
    )
    .await;
}
