//! The coalescing buffer: values merge per key, nothing added is lost or counted twice
//! under concurrent adds and failing flushes (what is flushed plus what was counted as
//! dropped or refused equals what was added), flushes fire on time and on the key
//! count, a failed or cancelled flush puts its values back in order, closing flushes
//! and refuses later adds, and the key bound holds under either policy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use girder_log::batch::coalesce::{
    AddError, CoalesceConfig, CoalesceSink, Coalescer, Merge, Overflow,
};
use parking_lot::Mutex;
use proptest::prelude::*;
use tokio::sync::{Semaphore, mpsc};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the store is down")]
struct Down;

/// Adds each batch into `written`, failing the writes the test asks to fail (a failed
/// write applies nothing), and reports each attempt on a channel.
#[derive(Default)]
struct Recorder {
    written: Mutex<BTreeMap<String, u64>>,
    dropped: AtomicU64,
    dropped_calls: AtomicU64,
    attempts: AtomicU64,
    /// Every `fail_every`-th write fails (0: none).
    fail_every: u64,
    /// Writes still to fail, before `fail_every` applies.
    fail_next: AtomicU64,
    /// A write waits for a permit here, when set.
    gate: Option<Arc<Semaphore>>,
    events: Option<mpsc::UnboundedSender<usize>>,
}

impl CoalesceSink for Recorder {
    type Key = String;
    type Value = u64;
    type Error = Down;

    async fn write(&self, batch: &[(String, u64)]) -> Result<(), Down> {
        let attempt = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(events) = &self.events {
            let _ = events.send(batch.len());
        }
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate").forget();
        }
        let failing = self
            .fail_next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if failing || (self.fail_every > 0 && attempt.is_multiple_of(self.fail_every)) {
            return Err(Down);
        }
        let mut written = self.written.lock();
        for (key, n) in batch {
            *written.entry(key.clone()).or_default() += n;
        }
        Ok(())
    }

    fn dropped(&self, value: u64) {
        self.dropped.fetch_add(value, Ordering::Relaxed);
        self.dropped_calls.fetch_add(1, Ordering::Relaxed);
    }
}

fn config(keys_max: usize) -> CoalesceConfig {
    CoalesceConfig { keys_max, flush_keys: keys_max, ..CoalesceConfig::default() }
}

fn total(written: &BTreeMap<String, u64>) -> u64 {
    written.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_are_all_flushed_dropped_or_refused_never_lost_or_doubled() {
    // (keys_max, overflow, every n-th write fails); 200 distinct keys are added.
    for (keys_max, overflow, fail_every) in
        [(1_000, Overflow::Drop, 2), (64, Overflow::Drop, 3), (64, Overflow::Reject, 3)]
    {
        let config = CoalesceConfig {
            interval: Duration::from_millis(1),
            flush_keys: keys_max / 2,
            keys_max,
            overflow,
            shards: 8,
        };
        // The first write fails too, so every row sees at least one failure.
        let sink = Recorder { fail_every, fail_next: AtomicU64::new(1), ..Recorder::default() };
        let coalescer = Arc::new(Coalescer::new(sink, config).expect("config"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn({
            let coalescer = Arc::clone(&coalescer);
            async move {
                coalescer
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        // Four threads add at once; each keeps its own model of what it added.
        let models: Vec<(BTreeMap<String, u64>, u64)> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    let coalescer = &coalescer;
                    scope.spawn(move || {
                        let (mut added, mut refused) = (BTreeMap::new(), 0);
                        for i in 0..20_000u64 {
                            let key = format!("k{}", (i * 7 + t) % 200);
                            let n = i % 5 + 1;
                            match coalescer.add(key.as_str(), n) {
                                Ok(()) => *added.entry(key).or_default() += n,
                                Err(AddError::Full(v)) => refused += v,
                                Err(e) => panic!("{e}"),
                            }
                        }
                        (added, refused)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().expect("adder")).collect()
        });
        stop.send(()).expect("runner alive");
        let mut last = runner.await.expect("runner");
        // The last flush may be one the sink fails; closing again retries it.
        while last.is_err() {
            last = coalescer.close().await;
        }
        let mut added = BTreeMap::<String, u64>::new();
        let mut refused = 0;
        for (model, r) in models {
            for (key, n) in model {
                *added.entry(key).or_default() += n;
            }
            refused += r;
        }
        let sink = coalescer.sink();
        let written = sink.written.lock().clone();
        let dropped = sink.dropped.load(Ordering::Relaxed);
        let stats = coalescer.stats();
        let label = format!("{keys_max} {overflow:?} 1/{fail_every}");
        // Accepted values are written or counted as dropped, nothing else.
        assert_eq!(total(&written) + dropped, total(&added), "{label}");
        assert_eq!(total(&added) + refused, 4 * (0..20_000u64).map(|i| i % 5 + 1).sum::<u64>());
        assert_eq!(stats.dropped, sink.dropped_calls.load(Ordering::Relaxed), "{label}");
        assert_eq!(stats.keys, 0, "{label}: everything flushed");
        assert!(stats.failed_flushes > 0, "{label}: the sink failed some flushes");
        if keys_max >= 200 {
            assert_eq!(written, added, "{label}: with room for every key, each key exact");
            assert_eq!(dropped, 0);
        }
        if overflow == Overflow::Reject {
            assert!(stats.rejected > 0 && refused > 0, "{label}: the bound was reached");
        } else {
            assert_eq!(stats.rejected, 0);
        }
        assert!(matches!(coalescer.add("k1", 1), Err(AddError::Closed(1))), "{label}");
    }
}

/// Waits for the next write attempt, up to `within` of (paused) time.
async fn next_write(
    events: &mut mpsc::UnboundedReceiver<usize>,
    within: Duration,
) -> Option<usize> {
    tokio::time::timeout(within, events.recv()).await.ok().flatten()
}

fn observed(config: CoalesceConfig) -> (Arc<Coalescer<Recorder>>, mpsc::UnboundedReceiver<usize>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = Recorder { events: Some(tx), ..Recorder::default() };
    (Arc::new(Coalescer::new(sink, config).expect("config")), rx)
}

fn spawn_run(
    coalescer: &Arc<Coalescer<Recorder>>,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<usize, String>>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let coalescer = Arc::clone(coalescer);
    let task = tokio::spawn(async move {
        coalescer
            .run(async {
                let _ = stopped.await;
            })
            .await
            .map_err(|e| e.to_string())
    });
    (stop, task)
}

#[tokio::test(start_paused = true)]
async fn run_flushes_when_the_interval_is_up() {
    let config = CoalesceConfig { interval: Duration::from_secs(10), ..config(1_000) };
    let (coalescer, mut events) = observed(config);
    let (stop, task) = spawn_run(&coalescer);
    for key in ["a", "b", "a"] {
        coalescer.add(key, 1).expect("add");
    }
    assert_eq!(next_write(&mut events, Duration::from_secs(9)).await, None, "not before");
    assert_eq!(next_write(&mut events, Duration::from_secs(2)).await, Some(2), "at 10 s");
    assert_eq!(coalescer.sink().written.lock().get("a"), Some(&2));
    // Nothing buffered: the next interval calls no sink.
    assert_eq!(next_write(&mut events, Duration::from_secs(15)).await, None);
    stop.send(()).expect("running");
    assert_eq!(task.await.expect("run"), Ok(0));
}

#[tokio::test(start_paused = true)]
async fn run_flushes_early_when_flush_keys_are_buffered() {
    let config =
        CoalesceConfig { interval: Duration::from_secs(3_600), flush_keys: 3, ..config(10) };
    let (coalescer, mut events) = observed(config);
    let (stop, task) = spawn_run(&coalescer);
    for key in ["a", "b", "a", "b"] {
        coalescer.add(key, 1).expect("add");
    }
    assert_eq!(next_write(&mut events, Duration::from_secs(1)).await, None, "two keys wait");
    coalescer.add("c", 1).expect("add");
    assert_eq!(next_write(&mut events, Duration::from_secs(1)).await, Some(3), "the third flushes");
    stop.send(()).expect("running");
    assert_eq!(task.await.expect("run"), Ok(0));
    assert_eq!(coalescer.stats().flushes, 1);
}

#[tokio::test(start_paused = true)]
async fn after_a_failed_flush_run_waits_an_interval_before_retrying() {
    let config = CoalesceConfig { interval: Duration::from_secs(10), flush_keys: 1, ..config(10) };
    let (tx, mut events) = mpsc::unbounded_channel();
    let sink = Recorder { events: Some(tx), fail_next: AtomicU64::new(1), ..Recorder::default() };
    let coalescer = Arc::new(Coalescer::new(sink, config).expect("config"));
    let (stop, task) = spawn_run(&coalescer);
    coalescer.add("a", 1).expect("add");
    assert_eq!(next_write(&mut events, Duration::from_secs(1)).await, Some(1), "fails");
    // The key count asks for a flush again, but a failing store is not hammered.
    coalescer.add("b", 1).expect("add");
    assert_eq!(next_write(&mut events, Duration::from_secs(8)).await, None, "backing off");
    assert_eq!(next_write(&mut events, Duration::from_secs(3)).await, Some(2), "retried");
    assert_eq!(total(&coalescer.sink().written.lock()), 2);
    stop.send(()).expect("running");
    assert_eq!(task.await.expect("run"), Ok(0));
}

#[tokio::test]
async fn a_failed_flush_puts_values_back_merged_with_newer_ones() {
    let gate = Arc::new(Semaphore::new(0));
    let sink = Recorder {
        gate: Some(Arc::clone(&gate)),
        fail_next: AtomicU64::new(1),
        ..Recorder::default()
    };
    let coalescer = Arc::new(Coalescer::new(sink, config(10)).expect("config"));
    coalescer.add("a", 3).expect("add");
    coalescer.add("b", 1).expect("add");
    let flush = tokio::spawn({
        let coalescer = Arc::clone(&coalescer);
        async move { coalescer.flush().await }
    });
    // While the sink holds the batch, the buffer is empty and takes new values.
    until(|| coalescer.sink().attempts.load(Ordering::Relaxed) > 0).await;
    assert_eq!(coalescer.get("a"), None, "the batch is out");
    coalescer.add("a", 4).expect("add");
    gate.add_permits(1);
    let err = flush.await.expect("flush task").expect_err("the sink fails");
    assert_eq!((err.source, err.keys, err.kept_keys, err.dropped_keys), (Down, 2, 2, 0));
    assert_eq!((coalescer.get("a"), coalescer.get("b")), (Some(7), Some(1)));
    assert_eq!(coalescer.stats().failed_flushes, 1);
    gate.add_permits(1);
    assert_eq!(coalescer.flush().await.expect("second flush"), 2);
    let written = coalescer.sink().written.lock().clone();
    assert_eq!(written, BTreeMap::from([("a".to_owned(), 7), ("b".to_owned(), 1)]));
    let stats = coalescer.stats();
    assert_eq!((stats.flushes, stats.flushed_keys, stats.keys), (1, 2, 0));
}

/// Lets the other tasks run until `done` holds; a bounded wait, so a broken
/// coalescer fails the test instead of hanging it.
async fn until(done: impl Fn() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the awaited state never came");
}

/// A value that keeps every addition in order, to check what merges first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Trail(Vec<u32>);

impl Merge for Trail {
    fn merge(&mut self, later: Self) {
        self.0.extend(later.0);
    }
}

/// Fails every write, after waiting at the gate.
struct Refuser {
    gate: Arc<Semaphore>,
}

impl CoalesceSink for Refuser {
    type Key = u32;
    type Value = Trail;
    type Error = Down;

    async fn write(&self, _batch: &[(u32, Trail)]) -> Result<(), Down> {
        self.gate.acquire().await.expect("gate").forget();
        Err(Down)
    }
}

#[tokio::test]
async fn put_back_values_come_before_the_ones_added_during_the_flush() {
    let gate = Arc::new(Semaphore::new(0));
    let sink = Refuser { gate: Arc::clone(&gate) };
    let coalescer = Arc::new(Coalescer::new(sink, config(10)).expect("config"));
    coalescer.add(&1, Trail(vec![1])).expect("add");
    coalescer.add(&1, Trail(vec![2])).expect("add");
    let flush = tokio::spawn({
        let coalescer = Arc::clone(&coalescer);
        async move { coalescer.flush().await.map_err(|e| e.kept_keys) }
    });
    until(|| coalescer.get(&1).is_none()).await;
    coalescer.add(&1, Trail(vec![3])).expect("add");
    gate.add_permits(1);
    assert_eq!(flush.await.expect("flush task"), Err(1));
    assert_eq!(coalescer.get(&1), Some(Trail(vec![1, 2, 3])));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_flush_puts_its_batch_back() {
    let gate = Arc::new(Semaphore::new(0));
    let sink = Recorder { gate: Some(gate), ..Recorder::default() };
    let coalescer = Coalescer::new(sink, config(10)).expect("config");
    coalescer.add("a", 5).expect("add");
    // The gate never opens: the write hangs until the flush is dropped.
    let flush = coalescer.flush();
    assert!(tokio::time::timeout(Duration::from_millis(20), flush).await.is_err());
    assert_eq!(coalescer.get("a"), Some(5));
    let stats = coalescer.stats();
    assert_eq!((stats.keys, stats.failed_flushes, stats.flushes), (1, 1, 0));
}

#[tokio::test]
async fn a_failed_flush_with_no_room_left_drops_and_counts() {
    let gate = Arc::new(Semaphore::new(0));
    let sink = Recorder {
        gate: Some(Arc::clone(&gate)),
        fail_next: AtomicU64::new(1),
        ..Recorder::default()
    };
    let coalescer = Arc::new(Coalescer::new(sink, config(2)).expect("config"));
    coalescer.add("a", 1).expect("add");
    coalescer.add("b", 2).expect("add");
    let flush = tokio::spawn({
        let coalescer = Arc::clone(&coalescer);
        async move { coalescer.flush().await }
    });
    until(|| coalescer.stats().keys == 0).await;
    // Two new keys fill the emptied buffer while the batch is out; then it fails.
    coalescer.add("c", 10).expect("add");
    coalescer.add("a", 20).expect("add");
    gate.add_permits(1);
    let err = flush.await.expect("flush task").expect_err("fails");
    assert_eq!((err.kept_keys, err.dropped_keys), (1, 1), "a merges back, b has no room");
    assert_eq!(
        (coalescer.get("a"), coalescer.get("b"), coalescer.get("c")),
        (Some(21), None, Some(10))
    );
    let sink = coalescer.sink();
    assert_eq!(sink.dropped.load(Ordering::Relaxed), 2, "b's value went to the drop hook");
    assert_eq!(coalescer.stats().dropped, 1);
}

#[tokio::test]
async fn the_key_bound_drops_or_rejects_as_configured() {
    for overflow in [Overflow::Drop, Overflow::Reject] {
        let config = CoalesceConfig { overflow, ..config(2) };
        let coalescer = Coalescer::new(Recorder::default(), config).expect("config");
        coalescer.add("a", 1).expect("add");
        coalescer.add("b", 1).expect("add");
        let third = coalescer.add("c", 5);
        // Keys already held still merge.
        coalescer.add("a", 1).expect("merge");
        assert_eq!((coalescer.get("a"), coalescer.get("c")), (Some(2), None), "{overflow:?}");
        let stats = coalescer.stats();
        assert_eq!(stats.keys, 2);
        match overflow {
            Overflow::Drop => {
                assert_eq!(third, Ok(()));
                assert_eq!((stats.dropped, stats.rejected), (1, 0));
                assert_eq!(coalescer.sink().dropped.load(Ordering::Relaxed), 5);
            }
            Overflow::Reject => {
                assert_eq!(third, Err(AddError::Full(5)));
                assert_eq!((stats.dropped, stats.rejected), (0, 1));
            }
        }
        // A flush frees the slots.
        assert_eq!(coalescer.flush().await.expect("flush"), 2);
        coalescer.add("c", 5).expect("room again");
    }
}

#[tokio::test]
async fn closing_flushes_everything_and_refuses_later_adds() {
    let coalescer = Coalescer::new(Recorder::default(), config(100)).expect("config");
    for i in 0..50u64 {
        coalescer.add(format!("k{}", i % 10).as_str(), i).expect("add");
    }
    assert!(!coalescer.is_closed());
    assert_eq!(coalescer.close().await.expect("close"), 10);
    assert!(coalescer.is_closed());
    assert_eq!(total(&coalescer.sink().written.lock()), (0..50).sum::<u64>());
    assert_eq!(coalescer.add("k1", 7).map_err(AddError::into_value), Err(7));
    assert_eq!(coalescer.get("k1"), None);
    assert_eq!(coalescer.close().await.expect("again"), 0, "closing twice is harmless");
}

#[tokio::test]
async fn run_closes_and_flushes_on_shutdown() {
    let config = CoalesceConfig { interval: Duration::from_secs(3_600), ..config(100) };
    let (coalescer, _events) = observed(config);
    let (stop, task) = spawn_run(&coalescer);
    coalescer.add("a", 1).expect("add");
    coalescer.add("b", 1).expect("add");
    stop.send(()).expect("running");
    assert_eq!(task.await.expect("run"), Ok(2));
    assert!(coalescer.is_closed());
    assert!(matches!(coalescer.add("a", 1), Err(AddError::Closed(1))));
}

#[test]
fn invalid_settings_are_refused() {
    for bad in [
        CoalesceConfig { keys_max: 0, flush_keys: 0, ..CoalesceConfig::default() },
        CoalesceConfig { flush_keys: 0, ..CoalesceConfig::default() },
        CoalesceConfig { shards: 0, ..CoalesceConfig::default() },
        CoalesceConfig { interval: Duration::ZERO, ..CoalesceConfig::default() },
        CoalesceConfig { keys_max: 10, flush_keys: 11, ..CoalesceConfig::default() },
    ] {
        assert!(Coalescer::new(Recorder::default(), bad).is_err(), "{bad:?}");
    }
    assert!(Coalescer::new(Recorder::default(), CoalesceConfig::default()).is_ok());
}

#[test]
fn counts_saturate_instead_of_overflowing() {
    let mut n = u64::MAX - 1;
    n.merge(5);
    assert_eq!(n, u64::MAX);
    let mut m = i32::MIN + 1;
    m.merge(-5);
    assert_eq!(m, i32::MIN);
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8, u64),
    Flush { fail: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8, 1u64..100).prop_map(|(k, v)| Op::Add(k, v)),
        1 => any::<bool>().prop_map(|fail| Op::Flush { fail }),
    ]
}

proptest! {
    /// Against a model (a map of what is buffered, a map of what was written, a sum of
    /// what was dropped), single-threaded: every read and every write agrees.
    #[test]
    fn matches_a_model(ops in proptest::collection::vec(op(), 1..60), keys_max in 1usize..6) {
        let runtime =
            tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let coalescer = Coalescer::new(Recorder::default(), config(keys_max)).expect("config");
        let mut buffered = BTreeMap::<String, u64>::new();
        let mut written = BTreeMap::<String, u64>::new();
        let mut dropped = 0;
        for op in ops {
            match op {
                Op::Add(k, v) => {
                    let key = format!("k{k}");
                    coalescer.add(key.as_str(), v).expect("drop policy never errs");
                    if let Some(held) = buffered.get_mut(&key) {
                        *held += v;
                    } else if buffered.len() < keys_max {
                        buffered.insert(key, v);
                    } else {
                        dropped += v;
                    }
                }
                Op::Flush { fail } => {
                    coalescer.sink().fail_next.store(u64::from(fail), Ordering::Relaxed);
                    let result = runtime.block_on(coalescer.flush());
                    if buffered.is_empty() {
                        // Nothing to write: the sink is not called, so nothing fails.
                        prop_assert_eq!(result.expect("empty flush"), 0);
                        coalescer.sink().fail_next.store(0, Ordering::Relaxed);
                    } else if fail {
                        prop_assert_eq!(result.expect_err("fails").kept_keys, buffered.len());
                    } else {
                        prop_assert_eq!(result.expect("flush"), buffered.len());
                        for (key, v) in std::mem::take(&mut buffered) {
                            *written.entry(key).or_default() += v;
                        }
                    }
                }
            }
            for k in 0..8 {
                let key = format!("k{k}");
                prop_assert_eq!(coalescer.get(key.as_str()), buffered.get(&key).copied());
            }
            prop_assert_eq!(coalescer.stats().keys, buffered.len());
        }
        prop_assert_eq!(&*coalescer.sink().written.lock(), &written);
        prop_assert_eq!(coalescer.sink().dropped.load(Ordering::Relaxed), dropped);
    }
}
