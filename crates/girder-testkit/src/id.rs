//! The conformance suite for [`RangeSource`]: every id backend (memory, SQLite,
//! PostgreSQL, Redis) must grant disjoint ranges of exactly the requested size, reject
//! invalid sizes, and stay disjoint under concurrency across several instances
//! pointed at the same counter.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use girder_id::counter::{
    AllocatorConfig, ID_LIMIT, IdAllocator, LeaseError, MAX_LEASE_SIZE, RangeSource,
};

/// Concurrent tasks in the disjointness checks.
const TASKS: u64 = 16;
/// Leases per task.
const LEASES_PER_TASK: u64 = 40;
/// Ids drawn per allocator task.
const IDS_PER_TASK: u64 = 1_500;

/// Runs the whole suite. `make` opens a new source on the *same* backend counter each
/// time it is called (a new pool or connection, as another process would); the
/// counter should be fresh for this run.
///
/// # Panics
/// On the first violated guarantee, with a message naming it.
pub async fn range_source_conformance<S, F, Fut>(make: F)
where
    S: RangeSource + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let a = Arc::new(make().await);
    let b = Arc::new(make().await);
    let mut granted = Vec::new();
    granted.extend(sizes_are_honoured(&*a).await);
    invalid_sizes_are_rejected(&*b).await;
    granted.extend(concurrent_leases_are_disjoint(&a, &b).await);
    let ids = allocators_never_duplicate(&a, &b).await;
    // A source opened after all that (a restart) still grants only fresh ids.
    let later = make().await;
    granted.push(later.lease(10).await.expect("lease from a reopened source"));
    assert_disjoint(granted, &ids);
}

/// Leases of 1, 2, 1000 and the maximum size hold exactly that many ids below the limit.
async fn sizes_are_honoured<S: RangeSource>(source: &S) -> Vec<Range<u64>> {
    let mut granted = Vec::new();
    for n in [1, 2, 1000, MAX_LEASE_SIZE, 3] {
        let range = source.lease(n).await.unwrap_or_else(|e| panic!("lease({n}) failed: {e}"));
        assert_eq!(range.end - range.start, n, "lease({n}) granted {range:?}");
        assert!(range.end <= ID_LIMIT, "lease({n}) granted {range:?}, past the id limit");
        granted.push(range);
    }
    granted
}

/// Zero and oversized leases fail with `InvalidSize` and consume nothing.
async fn invalid_sizes_are_rejected<S: RangeSource>(source: &S) {
    for n in [0, MAX_LEASE_SIZE + 1, u64::MAX] {
        assert_eq!(
            source.lease(n).await,
            Err(LeaseError::InvalidSize { requested: n, max: MAX_LEASE_SIZE }),
            "lease({n})"
        );
    }
}

/// Many tasks leasing through two instances at once never get overlapping ranges.
async fn concurrent_leases_are_disjoint<S: RangeSource + 'static>(
    a: &Arc<S>,
    b: &Arc<S>,
) -> Vec<Range<u64>> {
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let source = Arc::clone(if task % 2 == 0 { a } else { b });
            tokio::spawn(async move {
                let mut granted = Vec::new();
                for i in 0..LEASES_PER_TASK {
                    let n = (task * 7 + i * 13) % 50 + 1;
                    let range = source.lease(n).await.unwrap_or_else(|e| panic!("lease({n}): {e}"));
                    assert_eq!(range.end - range.start, n, "lease({n}) granted {range:?}");
                    granted.push(range);
                }
                granted
            })
        })
        .collect();
    let mut granted = Vec::new();
    for task in tasks {
        granted.extend(task.await.expect("leasing task panicked"));
    }
    granted
}

/// Allocators over both instances, drawn from by concurrent tasks, never repeat an id.
async fn allocators_never_duplicate<S: RangeSource + 'static>(a: &Arc<S>, b: &Arc<S>) -> Vec<u64> {
    let config = AllocatorConfig { batch_size: 13 };
    let allocators = [
        Arc::new(IdAllocator::new(Arc::clone(a), config)),
        Arc::new(IdAllocator::new(Arc::clone(b), config)),
    ];
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let allocator = Arc::clone(&allocators[(task % 2) as usize]);
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(IDS_PER_TASK as usize);
                for _ in 0..IDS_PER_TASK {
                    ids.push(allocator.next_id().await.unwrap_or_else(|e| panic!("next_id: {e}")));
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.expect("allocating task panicked"));
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        panic!("allocators handed out {} twice", w[0]);
    }
    ids
}

/// No two granted ranges overlap, and no allocator id falls inside a directly granted range.
fn assert_disjoint(mut granted: Vec<Range<u64>>, ids: &[u64]) {
    granted.sort_by_key(|r| r.start);
    for w in granted.windows(2) {
        assert!(w[0].end <= w[1].start, "ranges {:?} and {:?} overlap", w[0], w[1]);
    }
    for &id in ids {
        let i = granted.partition_point(|r| r.start <= id);
        if i > 0 {
            assert!(
                !granted[i - 1].contains(&id),
                "allocator id {id} was also in {:?}",
                granted[i - 1]
            );
        }
    }
}
