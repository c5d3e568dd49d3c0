//! The batch writer: concurrent submissions share batches, every caller gets its own
//! item's result, bounds hold, backpressure waits or refuses, and closing writes
//! everything already submitted.

use std::sync::Arc;
use std::time::Duration;

use girder_log::batch::{BatchConfig, BatchWriter, Sink, SubmitError, WhenFull};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("item {0} refused")]
struct Refused(u64);

/// Doubles each item, refuses multiples of 7, records batch sizes, and can be held
/// shut by a gate.
struct Doubler {
    batches: Mutex<Vec<usize>>,
    gate: Option<Arc<Semaphore>>,
    answer_fewer: bool,
}

impl Doubler {
    fn new() -> Self {
        Self { batches: Mutex::new(Vec::new()), gate: None, answer_fewer: false }
    }
}

/// The sink the writer owns; the test keeps the other handle.
struct Shared(Arc<Doubler>);

impl std::ops::Deref for Shared {
    type Target = Doubler;
    fn deref(&self) -> &Doubler {
        &self.0
    }
}

impl Sink for Shared {
    type Item = u64;
    type Output = u64;
    type Error = Refused;

    async fn write(&self, items: Vec<u64>) -> Vec<Result<u64, Refused>> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate").forget();
        }
        // A write takes a moment, so submissions pile up behind it.
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.batches.lock().push(items.len());
        let mut answers: Vec<_> = items
            .into_iter()
            .map(|i| if i % 7 == 0 { Err(Refused(i)) } else { Ok(i * 2) })
            .collect();
        if self.answer_fewer {
            answers.pop();
        }
        answers
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_items_share_batches_and_each_gets_its_own_answer() {
    let sink = Arc::new(Doubler::new());
    let config = BatchConfig { max_items: 16, ..BatchConfig::default() };
    let writer = Arc::new(BatchWriter::start(Shared(Arc::clone(&sink)), config).expect("start"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=300u64 {
        let writer = Arc::clone(&writer);
        tasks.spawn(async move { (i, writer.submit(i).await) });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, answer) = done.expect("task");
        match answer {
            Ok(doubled) => assert_eq!(doubled, i * 2),
            Err(SubmitError::Sink(Refused(r))) => assert_eq!((r, i % 7), (i, 0)),
            Err(other) => panic!("item {i}: {other}"),
        }
    }
    let batches = sink.batches.lock().clone();
    assert_eq!(batches.iter().sum::<usize>(), 300, "every item written once");
    assert!(batches.iter().all(|&n| n <= 16), "max_items holds: {batches:?}");
    assert!(batches.len() < 300, "items shared batches: {} batches", batches.len());
    let stats = writer.stats();
    assert_eq!((stats.items, stats.batches), (300, batches.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_writer_refuses_or_waits_as_configured() {
    for when_full in [WhenFull::Reject, WhenFull::Wait] {
        let gate = Arc::new(Semaphore::new(0));
        let sink = Arc::new(Doubler { gate: Some(Arc::clone(&gate)), ..Doubler::new() });
        let config = BatchConfig { max_items: 1, capacity: 2, when_full, ..BatchConfig::default() };
        let writer =
            Arc::new(BatchWriter::start(Shared(Arc::clone(&sink)), config).expect("start"));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 1..=10u64 {
            let writer = Arc::clone(&writer);
            // Never a multiple of 7: the sink accepts them all.
            tasks.spawn(async move { writer.submit(i * 7 + 1).await });
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.add_permits(100);
        let (mut ok, mut full) = (0, 0);
        while let Some(done) = tasks.join_next().await {
            match done.expect("task") {
                Ok(_) => ok += 1,
                Err(SubmitError::Full) => full += 1,
                Err(e) => panic!("{when_full:?}: {e}"),
            }
        }
        match when_full {
            // One in the sink, one gathered, two waiting: the rest are refused.
            WhenFull::Reject => {
                assert!(full >= 5 && ok + full == 10, "ok {ok}, full {full}");
                assert_eq!(writer.stats().rejected, full);
            }
            WhenFull::Wait => assert_eq!((ok, full), (10, 0)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_writes_everything_submitted_and_refuses_the_rest() {
    let sink = Arc::new(Doubler::new());
    let writer = Arc::new(
        BatchWriter::start(Shared(Arc::clone(&sink)), BatchConfig::default()).expect("start"),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=50u64 {
        let writer = Arc::clone(&writer);
        tasks.spawn(async move { writer.submit(i * 7 + 1).await });
    }
    // Close while submissions are queued and batches are being written: whatever
    // was accepted is written, whatever came after is refused.
    tokio::time::sleep(Duration::from_millis(3)).await;
    writer.close().await;
    let mut answered = 0;
    while let Some(done) = tasks.join_next().await {
        match done.expect("task") {
            Ok(_) => answered += 1,
            Err(SubmitError::Closed) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(sink.batches.lock().iter().sum::<usize>(), answered, "every accepted item written");
    assert!(matches!(writer.submit(1).await, Err(SubmitError::Closed)));
    writer.close().await;
}

#[tokio::test]
async fn a_missing_answer_is_lost_not_invented() {
    let sink = Arc::new(Doubler { answer_fewer: true, ..Doubler::new() });
    let writer = BatchWriter::start(Shared(sink), BatchConfig::default()).expect("start");
    assert!(matches!(writer.submit(3).await, Err(SubmitError::Lost)));
    writer.close().await;
}

#[tokio::test(start_paused = true)]
async fn linger_gathers_items_that_arrive_within_it() {
    let sink = Arc::new(Doubler::new());
    let config =
        BatchConfig { max_items: 3, linger: Duration::from_millis(200), ..BatchConfig::default() };
    let writer = Arc::new(BatchWriter::start(Shared(Arc::clone(&sink)), config).expect("start"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=3u64 {
        let writer = Arc::clone(&writer);
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(10 * i)).await;
            writer.submit(i).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("written");
    }
    assert_eq!(*sink.batches.lock(), vec![3], "one batch of three");
    writer.close().await;
}

#[tokio::test]
async fn zero_settings_are_refused() {
    for config in [
        BatchConfig { max_items: 0, ..BatchConfig::default() },
        BatchConfig { capacity: 0, ..BatchConfig::default() },
        BatchConfig { max_in_flight: 0, ..BatchConfig::default() },
    ] {
        assert!(BatchWriter::start(Shared(Arc::new(Doubler::new())), config).is_err());
    }
}
