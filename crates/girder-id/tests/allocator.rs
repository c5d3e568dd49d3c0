//! IdAllocator over in-process sources: batching, validation, concurrency, failure
//! and cancellation.

use std::error::Error as _;
use std::future::Future;
use std::ops::Range;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use girder_id::counter::{
    AllocatorConfig, AnySource, BackendError, ID_LIMIT, IdAllocator, LeaseError, MAX_LEASE_SIZE,
    MemorySource, RangeSource,
};

fn config(batch_size: u64) -> AllocatorConfig {
    AllocatorConfig { batch_size }
}

/// Counts leases and can be told to fail, or to hold the first lease until a gate
/// opens, around a memory counter. Tests poll by hand, so no waker is needed.
#[derive(Default)]
struct Scripted {
    inner: MemorySource,
    leases: AtomicU64,
    /// Leases numbered below this fail.
    fail_first: u64,
    /// When set, lease 0 stays pending until this is true.
    gate: Option<Arc<AtomicBool>>,
}

impl RangeSource for Scripted {
    async fn lease(&self, n: u64) -> Result<Range<u64>, LeaseError> {
        let number = self.leases.fetch_add(1, Ordering::SeqCst);
        if let (0, Some(gate)) = (number, &self.gate) {
            std::future::poll_fn(|_| {
                if gate.load(Ordering::SeqCst) { Poll::Ready(()) } else { Poll::Pending }
            })
            .await;
        }
        if number < self.fail_first {
            return Err(BackendError::other(ScriptedFailure(number)).into());
        }
        self.inner.lease(n).await
    }
}

/// The engine failure [`Scripted`] reports for each of its first `fail_first` leases.
#[derive(Debug, thiserror::Error)]
#[error("scripted failure of lease {0}")]
struct ScriptedFailure(u64);

/// The number of the lease that failed, if `err` is a [`ScriptedFailure`].
fn scripted_failure(err: &LeaseError) -> Option<u64> {
    match err {
        LeaseError::Backend(engine) => {
            engine.source()?.downcast_ref::<ScriptedFailure>().map(|failure| failure.0)
        }
        _ => None,
    }
}

fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test]
async fn hands_out_a_batch_then_leases_the_next() {
    let alloc = IdAllocator::new(MemorySource::new(100), config(10));
    assert_eq!(alloc.try_next(), None, "nothing leased yet");
    assert_eq!(alloc.next_id().await, Ok(100));
    let rest: Vec<u64> = std::iter::from_fn(|| alloc.try_next()).collect();
    assert_eq!(rest, (101..110).collect::<Vec<_>>());
    assert_eq!(alloc.source().peek(), 110);
    assert_eq!(alloc.next_id().await, Ok(110));
    assert_eq!(alloc.source().peek(), 120);
}

#[tokio::test]
async fn batch_size_is_validated() {
    for bad in [0, MAX_LEASE_SIZE + 1, u64::MAX] {
        let want = LeaseError::InvalidSize { requested: bad, max: MAX_LEASE_SIZE };
        assert_eq!(config(bad).validate(), Err(want.clone()));
        assert_eq!(
            IdAllocator::try_new(MemorySource::new(0), config(bad)).err(),
            Some(want.clone())
        );
        let alloc = IdAllocator::new(MemorySource::new(0), config(bad));
        assert_eq!(alloc.try_next(), None);
        assert_eq!(alloc.next_id().await, Err(want));
        assert_eq!(alloc.try_next(), None);
        assert_eq!(alloc.source().peek(), 0, "an invalid size leased nothing");
    }
    for good in [1, 1000, MAX_LEASE_SIZE] {
        assert!(IdAllocator::try_new(MemorySource::new(0), config(good)).is_ok());
    }
    assert_eq!(AllocatorConfig::default().batch_size, 1000);
}

#[tokio::test]
async fn memory_source_stops_at_the_id_limit() {
    let source = MemorySource::new(ID_LIMIT - 5);
    assert_eq!(source.lease(5).await, Ok(ID_LIMIT - 5..ID_LIMIT));
    assert_eq!(source.lease(1).await, Err(LeaseError::Exhausted));
    let alloc = IdAllocator::new(MemorySource::new(ID_LIMIT - 3), config(2));
    assert_eq!(alloc.next_id().await, Ok(ID_LIMIT - 3));
    assert_eq!(alloc.next_id().await, Ok(ID_LIMIT - 2));
    assert_eq!(alloc.next_id().await, Err(LeaseError::Exhausted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_get_distinct_ids_from_exactly_the_leases_needed() {
    let (tasks, per_task, batch) = (64u64, 5_000u64, 7u64);
    let alloc = Arc::new(IdAllocator::new(Scripted::default(), config(batch)));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let alloc = Arc::clone(&alloc);
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(per_task as usize);
                for _ in 0..per_task {
                    ids.push(alloc.next_id().await.unwrap());
                    // Yield now and then so tasks interleave on every worker.
                    if ids.len() % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                ids
            })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        let ids = handle.await.unwrap();
        assert!(ids.windows(2).all(|w| w[0] != w[1]));
        all.extend(ids);
    }
    let total = tasks * per_task;
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len() as u64, total, "duplicate ids");
    // One lease at a time, and only when the previous one is used up: every lease
    // but the last is fully consumed, so the count is exactly ceil(total / batch).
    assert_eq!(alloc.source().leases.load(Ordering::SeqCst), total.div_ceil(batch));
}

#[tokio::test]
async fn waiters_share_the_failure_of_the_lease_they_waited_for() {
    let gate = Arc::new(AtomicBool::new(false));
    let source = Scripted { fail_first: 1, gate: Some(Arc::clone(&gate)), ..Default::default() };
    let alloc = IdAllocator::new(source, config(10));
    // Three callers find the lease empty at once: the first leads, the others wait.
    let mut a = pin!(alloc.next_id());
    let mut b = pin!(alloc.next_id());
    let mut c = pin!(alloc.next_id());
    assert!(poll_once(a.as_mut()).is_pending());
    assert!(poll_once(b.as_mut()).is_pending());
    assert!(poll_once(c.as_mut()).is_pending());
    gate.store(true, Ordering::SeqCst);
    let Poll::Ready(Err(failure)) = poll_once(a.as_mut()) else {
        panic!("the leader's lease should have failed");
    };
    assert_eq!(scripted_failure(&failure), Some(0), "{failure:?}");
    // Engine errors compare by identity: the waiters hold the leader's very error.
    assert_eq!(poll_once(b.as_mut()), Poll::Ready(Err(failure.clone())));
    assert_eq!(poll_once(c.as_mut()), Poll::Ready(Err(failure)));
    assert_eq!(alloc.source().leases.load(Ordering::SeqCst), 1, "one attempt, not three");
    // The backend recovers: the next call leases again.
    assert_eq!(alloc.next_id().await, Ok(0));
}

#[tokio::test]
async fn waiters_wait_for_the_leader_and_share_its_lease() {
    // The first lease hangs until the leader is dropped; meanwhile two callers wait.
    let gate = Arc::new(AtomicBool::new(false));
    let source = Scripted { gate: Some(gate), ..Default::default() };
    let alloc = IdAllocator::new(source, config(10));
    let mut leader = Box::pin(alloc.next_id());
    let mut waiter = pin!(alloc.next_id());
    assert!(poll_once(leader.as_mut()).is_pending());
    assert!(poll_once(waiter.as_mut()).is_pending());
    assert!(poll_once(waiter.as_mut()).is_pending(), "still waiting, no second lease");
    assert_eq!(alloc.source().leases.load(Ordering::SeqCst), 1);
    // Cancel the leader mid-lease: the waiter takes over and leases itself.
    drop(leader);
    assert_eq!(poll_once(waiter.as_mut()), Poll::Ready(Ok(0)));
    assert_eq!(alloc.source().leases.load(Ordering::SeqCst), 2);
    assert_eq!(alloc.try_next(), Some(1));
}

/// Grants one id fewer than asked: a source that breaks its contract.
struct Short;

impl RangeSource for Short {
    async fn lease(&self, n: u64) -> Result<Range<u64>, LeaseError> {
        Ok(0..n - 1)
    }
}

#[tokio::test]
async fn a_lease_of_the_wrong_length_hands_out_nothing() {
    let alloc = IdAllocator::new(Short, config(10));
    assert_eq!(
        alloc.next_id().await,
        Err(LeaseError::WrongLength { granted: 0..9, requested: 10 })
    );
    assert_eq!(alloc.try_next(), None, "no id of the short lease was installed");
}

#[tokio::test]
async fn any_source_delegates() {
    let alloc = IdAllocator::new(AnySource::Memory(MemorySource::new(5)), config(3));
    assert_eq!(alloc.next_id().await, Ok(5));
    assert_eq!(alloc.source().lease(2).await, Ok(8..10));
    assert_eq!(
        alloc.source().lease(0).await,
        Err(LeaseError::InvalidSize { requested: 0, max: MAX_LEASE_SIZE })
    );
}
