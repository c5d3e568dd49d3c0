//! The durable queue: delivery, visibility timeouts and receipts, nack delays, dead
//! letters and redrive, consumer groups, state that survives a reopen, checkpoints,
//! typed errors, and concurrent consumers that ack every message exactly once.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use girder_core::ManualClock;
use girder_log::queue::{MessageId, Queue, QueueConfig, QueueError};
use girder_log::wal::WalConfig;

const T0: u64 = 1_800_000_000_000;
const VIS: Duration = Duration::from_secs(10);

fn config(dir: &Path, groups: &[&str]) -> QueueConfig {
    QueueConfig {
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        max_deliveries: 3,
        visibility: VIS,
        wal: WalConfig { segment_bytes: 4096, ..WalConfig::new(dir) },
        ..QueueConfig::new(dir)
    }
}

fn open(dir: &Path, clock: &ManualClock, groups: &[&str]) -> Queue {
    Queue::open(config(dir, groups), Arc::new(clock.clone())).expect("open")
}

#[tokio::test]
async fn messages_are_delivered_in_order_and_acked_once() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(T0);
    let q = open(dir.path(), &clock, &["default"]);
    let mut ids = Vec::new();
    for i in 0..5u8 {
        ids.push(q.enqueue(vec![i; 3]).await.expect("enqueue"));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let got = q.dequeue("default", 3, None).await.expect("dequeue");
    assert_eq!(got.iter().map(|d| d.receipt.id).collect::<Vec<_>>(), ids[..3]);
    assert_eq!(&*got[1].payload, &[1, 1, 1]);
    assert_eq!(got[0].receipt.attempt, 1);
    assert_eq!(got[0].visible_again_at_ms, T0 + 10_000);
    let stats = q.stats("default").expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (2, 3, 0));
    for d in &got {
        q.ack("default", d.receipt).await.expect("ack");
    }
    // A second ack of the same delivery is stale.
    assert!(matches!(q.ack("default", got[0].receipt).await, Err(QueueError::StaleReceipt(_))));
    let rest = q.dequeue("default", 10, None).await.expect("dequeue");
    assert_eq!(rest.iter().map(|d| d.receipt.id).collect::<Vec<_>>(), ids[3..]);
    assert!(q.dequeue("default", 10, None).await.expect("empty").is_empty());
    q.close().await.expect("close");
}

#[tokio::test]
async fn an_unacked_message_comes_back_after_its_visibility_timeout() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(T0);
    let q = open(dir.path(), &clock, &["default"]);
    let id = q.enqueue(b"job".to_vec()).await.expect("enqueue");
    let first = q.dequeue("default", 1, None).await.expect("dequeue").remove(0);
    clock.advance(VIS - Duration::from_millis(1));
    assert!(q.dequeue("default", 1, None).await.expect("still invisible").is_empty());
    clock.advance(Duration::from_millis(1));
    let second = q.dequeue("default", 1, None).await.expect("dequeue").remove(0);
    assert_eq!((second.receipt.id, second.receipt.attempt), (id, 2));
    // The first consumer lost the message: its receipt no longer acknowledges.
    assert!(matches!(q.ack("default", first.receipt).await, Err(QueueError::StaleReceipt(_))));
    q.ack("default", second.receipt).await.expect("ack");
    q.close().await.expect("close");
}

#[tokio::test]
async fn nacks_delay_and_dead_letters_can_be_redriven() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(T0);
    let q = open(dir.path(), &clock, &["default"]);
    let id = q.enqueue(b"poison".to_vec()).await.expect("enqueue");
    for attempt in 1..=3 {
        let d = q.dequeue("default", 1, None).await.expect("dequeue").remove(0);
        assert_eq!(d.receipt.attempt, attempt);
        q.nack("default", d.receipt, Duration::from_secs(5)).await.expect("nack");
        if attempt < 3 {
            assert!(q.dequeue("default", 1, None).await.expect("delayed").is_empty());
            clock.advance(Duration::from_secs(5));
        }
    }
    // Three deliveries failed: dead, with its attempts, and never delivered again.
    let dead = q.dead_letters("default").expect("dead letters");
    assert_eq!((dead.len(), dead[0].id, dead[0].attempts), (1, id, 3));
    assert_eq!(&*dead[0].payload, b"poison");
    clock.advance(Duration::from_secs(60));
    assert!(q.dequeue("default", 1, None).await.expect("dead stays dead").is_empty());
    assert!(matches!(
        q.redrive("default", MessageId(id.0 + 1000)).await,
        Err(QueueError::NotDead(_))
    ));
    q.redrive("default", id).await.expect("redrive");
    let again = q.dequeue("default", 1, None).await.expect("redriven").remove(0);
    assert_eq!((again.receipt.id, again.receipt.attempt), (id, 1), "attempts reset");

    // A message that times out after its last delivery dies too.
    let id2 = q.enqueue(b"slow".to_vec()).await.expect("enqueue");
    q.ack("default", again.receipt).await.expect("ack");
    for _ in 0..3 {
        assert_eq!(q.dequeue("default", 1, None).await.expect("dequeue")[0].receipt.id, id2);
        clock.advance(VIS);
    }
    assert!(q.dequeue("default", 1, None).await.expect("dequeue").is_empty());
    assert_eq!(q.stats("default").expect("stats").dead, 1);
    q.close().await.expect("close");
}

#[tokio::test]
async fn every_group_gets_every_message() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(T0);
    let q = open(dir.path(), &clock, &["billing", "email"]);
    let id = q.enqueue(b"order".to_vec()).await.expect("enqueue");
    let billing = q.dequeue("billing", 5, None).await.expect("billing");
    q.ack("billing", billing[0].receipt).await.expect("ack");
    let email = q.dequeue("email", 5, None).await.expect("email");
    assert_eq!(email.len(), 1, "acking in one group leaves the other's copy");
    assert_eq!(email[0].receipt.id, id);
    assert!(matches!(q.dequeue("sms", 1, None).await, Err(QueueError::UnknownGroup(_))));
    assert!(matches!(q.stats("sms"), Err(QueueError::UnknownGroup(_))));
    q.close().await.expect("close");
}

#[tokio::test]
async fn state_survives_a_reopen_and_finished_segments_are_deleted() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(T0);
    let q = open(dir.path(), &clock, &["default"]);
    let mut ids = Vec::new();
    for i in 0..300u32 {
        ids.push(q.enqueue(i.to_le_bytes().repeat(8)).await.expect("enqueue"));
    }
    // Ack the first 200, hold 10 in flight, dead-letter one.
    let batch = q.dequeue("default", 210, None).await.expect("dequeue");
    for d in &batch[..200] {
        q.ack("default", d.receipt).await.expect("ack");
    }
    let segments = |dir: &Path| {
        std::fs::read_dir(dir)
            .expect("dir")
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wal")))
            .count()
    };
    let before = segments(dir.path());
    q.close().await.expect("close");

    let q = open(dir.path(), &clock, &["default"]);
    let stats = q.stats("default").expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (90, 10), "acked stay acked, in flight stays");
    // The ten in flight come back after their timeout, as their second delivery.
    clock.advance(VIS);
    let again = q.dequeue("default", 100, None).await.expect("dequeue");
    assert_eq!(again.len(), 100);
    let redelivered: Vec<_> =
        again.iter().filter(|d| d.receipt.attempt == 2).map(|d| d.receipt.id).collect();
    assert_eq!(redelivered, ids[200..210]);
    for d in &again {
        q.ack("default", d.receipt).await.expect("ack");
    }
    assert!(segments(dir.path()) < before.max(2), "finished messages' segments go");
    q.close().await.expect("close");
    let q = open(dir.path(), &clock, &["default"]);
    assert_eq!(
        q.stats("default").expect("stats").ready + q.stats("default").expect("stats").in_flight,
        0
    );
    q.close().await.expect("close");
}

#[tokio::test]
async fn bad_input_gets_typed_errors() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(T0);
    for bad in [
        QueueConfig { groups: Vec::new(), ..config(dir.path(), &["a"]) },
        QueueConfig { groups: vec!["a".into(), "a".into()], ..config(dir.path(), &["a"]) },
        QueueConfig { max_deliveries: 0, ..config(dir.path(), &["a"]) },
        QueueConfig { visibility: Duration::ZERO, ..config(dir.path(), &["a"]) },
        QueueConfig { message_bytes_max: 64 << 20, ..config(dir.path(), &["a"]) },
    ] {
        assert!(matches!(Queue::open(bad, Arc::new(clock.clone())), Err(QueueError::Config(_))));
    }
    let q = Queue::open(
        QueueConfig { message_bytes_max: 100, ..config(dir.path(), &["a"]) },
        Arc::new(clock.clone()),
    )
    .expect("open");
    assert!(matches!(
        q.enqueue(vec![0; 101]).await,
        Err(QueueError::TooLarge { len: 101, max: 100 })
    ));
    q.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_ack_every_message_exactly_once() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(T0);
    let q = open(dir.path(), &clock, &["default"]);
    let mut enqueued = HashSet::new();
    for i in 0..400u32 {
        enqueued.insert(q.enqueue(i.to_le_bytes().to_vec()).await.expect("enqueue"));
    }
    let mut consumers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let q = q.clone();
        consumers.spawn(async move {
            let mut acked = Vec::new();
            loop {
                let got = q.dequeue("default", 7, None).await.expect("dequeue");
                if got.is_empty() {
                    return acked;
                }
                for d in got {
                    q.ack("default", d.receipt).await.expect("ack");
                    acked.push(d.receipt.id);
                }
            }
        });
    }
    let mut acked = Vec::new();
    while let Some(done) = consumers.join_next().await {
        acked.extend(done.expect("consumer"));
    }
    assert_eq!(acked.len(), 400, "no message twice");
    assert_eq!(acked.into_iter().collect::<HashSet<_>>(), enqueued, "none lost");
    q.close().await.expect("close");
}

/// Producers and consumers in a child process (this test, re-run with
/// `GIRDER_QUEUE_CHILD`) are SIGKILLed at random moments, 20 times on one queue; then
/// the parent drains it. Every message whose enqueue returned is acknowledged at
/// least once by someone, and none whose acknowledgement returned is delivered again.
#[test]
fn messages_survive_sigkilled_producers_and_consumers() {
    const CHILD: &str = "GIRDER_QUEUE_CHILD";
    if let Ok(dir) = std::env::var(CHILD) {
        return queue_child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().expect("dir");
    let exe = std::env::current_exe().expect("test binary");
    let (mut enqueued, mut acking, mut acked) = (HashSet::new(), HashSet::new(), HashSet::new());
    for run in 0..20u64 {
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "messages_survive_sigkilled_producers_and_consumers", "--nocapture"])
            .env(CHILD, dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let reading = std::thread::spawn(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(60 + (run * 37) % 120));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        for line in reading.join().expect("reader") {
            let mut parts = line.split(' ');
            let (Some(kind), Some(Ok(id))) = (parts.next(), parts.next().map(str::parse::<u64>))
            else {
                continue;
            };
            match kind {
                "ENQ" => {
                    enqueued.insert(id);
                }
                "ACKING" => {
                    acking.insert(id);
                }
                "ACK" => {
                    acked.insert(id);
                }
                _ => {}
            }
        }
    }
    // Drain what is left: wait out the visibility of deliveries the children held.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let drained = runtime.block_on(async {
        let clock = Arc::new(girder_core::SystemClock);
        let q = Queue::open(crash_config(dir.path()), clock).expect("recover");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut drained = Vec::new();
        loop {
            let got = q.dequeue("default", 64, None).await.expect("dequeue");
            if got.is_empty() {
                break;
            }
            for d in got {
                q.ack("default", d.receipt).await.expect("ack");
                drained.push(d.receipt.id.0);
            }
        }
        q.close().await.expect("close");
        drained
    });
    let drained_set: HashSet<u64> = drained.iter().copied().collect();
    assert_eq!(drained_set.len(), drained.len(), "the drain saw no message twice");
    assert!(enqueued.len() > 20, "the children enqueued messages ({})", enqueued.len());
    for id in &enqueued {
        assert!(
            drained_set.contains(id) || acking.contains(id),
            "message {id} was enqueued but never acknowledged nor left in the queue"
        );
    }
    for id in &acked {
        assert!(!drained_set.contains(id), "message {id} was acknowledged, then delivered again");
    }
}

fn crash_config(dir: &Path) -> QueueConfig {
    QueueConfig {
        max_deliveries: 1_000,
        visibility: Duration::from_millis(200),
        wal: WalConfig { segment_bytes: 64 << 10, ..WalConfig::new(dir) },
        ..QueueConfig::new(dir)
    }
}

fn queue_child(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let q = Queue::open(crash_config(dir), Arc::new(girder_core::SystemClock)).expect("open");
        let mut tasks = tokio::task::JoinSet::new();
        for producer in 0..2u64 {
            let q = q.clone();
            tasks.spawn(async move {
                for seq in 0u64.. {
                    let id = q
                        .enqueue((producer << 40 | seq).to_le_bytes().to_vec())
                        .await
                        .expect("enqueue");
                    println!("ENQ {}", id.0);
                }
            });
        }
        for _ in 0..2 {
            let q = q.clone();
            tasks.spawn(async move {
                loop {
                    let got = q.dequeue("default", 8, None).await.expect("dequeue");
                    if got.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    for d in got {
                        println!("ACKING {}", d.receipt.id.0);
                        if q.ack("default", d.receipt).await.is_ok() {
                            println!("ACK {}", d.receipt.id.0);
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}
