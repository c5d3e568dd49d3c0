//! The durable queue: delivery, visibility timeouts and receipts, nack delays, dead
//! letters and redrive, consumer groups, state that survives a reopen, checkpoints,
//! typed errors, concurrent consumers that ack every message exactly once, and
//! producers and consumers SIGKILLed under load (on JetStream too, feature `nats`).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use girder_core::ManualClock;
use girder_log::queue::{MessageId, MessageQueue, Queue, QueueConfig, QueueError};
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

// ---- producers and consumers SIGKILLed under load, on either backend ----

/// Set in a child process: where its queue is (a directory, or a JetStream queue name).
const CHILD: &str = "GIRDER_QUEUE_CHILD";
const CRASH_MAX_DELIVERIES: u32 = 3;
const CRASH_VISIBILITY: Duration = Duration::from_millis(200);

/// Producers and consumers in a child process (this test, re-run with
/// `GIRDER_QUEUE_CHILD`) are SIGKILLed at random moments, 20 times on one queue; every
/// tenth message is poison (its consumers nack it). Then the parent drains the queue
/// and checks what `check_crash_survivors` says.
#[test]
fn messages_survive_sigkilled_producers_and_consumers() {
    const TEST: &str = "messages_survive_sigkilled_producers_and_consumers";
    if let Ok(dir) = std::env::var(CHILD) {
        return child_runtime().block_on(async {
            let clock = Arc::new(girder_core::SystemClock);
            queue_child(Queue::open(crash_config(Path::new(&dir)), clock).expect("open")).await;
        });
    }
    let dir = tempfile::tempdir().expect("dir");
    let log = kill_children(TEST, dir.path().to_str().expect("utf-8 path"));
    child_runtime().block_on(async {
        let clock = Arc::new(girder_core::SystemClock);
        let q = Queue::open(crash_config(dir.path()), clock).expect("recover");
        check_crash_survivors(&q, &log).await;
        q.close().await.expect("close");
    });
}

/// The same on NATS JetStream, on a stream of its own (deleted afterwards).
#[cfg(feature = "nats")]
#[test]
fn messages_survive_sigkilled_producers_and_consumers_on_jetstream() {
    use girder_core::Clock;
    use girder_core::services::{Service, require};
    use girder_log::queue::jetstream::{JetStreamConfig, JetStreamQueue};
    const TEST: &str = "messages_survive_sigkilled_producers_and_consumers_on_jetstream";
    let config = |name: &str| JetStreamConfig {
        max_deliveries: CRASH_MAX_DELIVERIES,
        visibility: CRASH_VISIBILITY,
        ..JetStreamConfig::new(name)
    };
    let open = |url: String, name: String| async move {
        let clock = Arc::new(girder_core::SystemClock);
        JetStreamQueue::connect(&url, config(&name), clock).await.expect("open")
    };
    if let Ok(name) = std::env::var(CHILD) {
        return child_runtime().block_on(async {
            queue_child(open(Service::Nats.url(), name).await).await;
        });
    }
    let Some(url) = require(Service::Nats, TEST) else { return };
    let name = format!("crash-{:x}-{:x}", std::process::id(), girder_core::SystemClock.now_ms());
    let runtime = child_runtime();
    // Created before the first child, so no child spends its life creating streams.
    let q = runtime.block_on(open(url, name.clone()));
    let log = kill_children(TEST, &name);
    let checked = runtime.block_on(async {
        let checking = q.clone();
        let checked =
            tokio::spawn(async move { check_crash_survivors(&checking, &log).await }).await;
        q.delete().await.expect("delete the test's streams");
        checked
    });
    if let Err(failed) = checked {
        std::panic::resume_unwind(failed.into_panic());
    }
}

fn crash_config(dir: &Path) -> QueueConfig {
    QueueConfig {
        max_deliveries: CRASH_MAX_DELIVERIES,
        visibility: CRASH_VISIBILITY,
        wal: WalConfig { segment_bytes: 64 << 10, ..WalConfig::new(dir) },
        ..QueueConfig::new(dir)
    }
}

fn child_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt")
}

/// What the children said before they were killed.
#[derive(Debug, Default)]
struct ChildLog {
    /// Messages whose enqueue returned.
    enqueued: HashSet<u64>,
    /// Those of them that are poison.
    poison: HashSet<u64>,
    /// Messages a consumer was acknowledging (the ack may or may not have landed).
    acking: HashSet<u64>,
    /// Messages whose acknowledgement returned.
    acked: HashSet<u64>,
}

/// Runs `test` as a child 20 times with `GIRDER_QUEUE_CHILD=where`, SIGKILLs each at
/// a random moment, and collects what the children printed.
fn kill_children(test: &str, r#where: &str) -> ChildLog {
    let exe = std::env::current_exe().expect("test binary");
    let mut log = ChildLog::default();
    for run in 0..20u64 {
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", test, "--nocapture"])
            .env(CHILD, r#where)
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
                    log.enqueued.insert(id);
                }
                "ENQP" => {
                    log.enqueued.insert(id);
                    log.poison.insert(id);
                }
                "ACKING" => {
                    log.acking.insert(id);
                }
                "ACK" => {
                    log.acked.insert(id);
                }
                _ => {}
            }
        }
    }
    log
}

/// Drains the queue the children left and checks: every message whose enqueue
/// returned is acknowledged (by a child or the drain) and was delivered at least
/// once; none whose acknowledgement returned is delivered again; every poison message
/// is a dead letter after exactly `max_deliveries` attempts, and redriving the dead
/// letters delivers each again, afresh.
async fn check_crash_survivors<Q: MessageQueue>(q: &Q, log: &ChildLog) {
    assert!(log.enqueued.len() > 20, "the children enqueued messages ({})", log.enqueued.len());
    assert!(!log.poison.is_empty(), "the children enqueued poison");
    // First drain: acknowledge good messages, nack poison until it dies.
    let mut delivered = HashSet::new();
    let mut acked = drain(q, &mut delivered, false).await;
    let dead = q.dead_letters("default").await.expect("dead letters");
    let dead_ids: HashSet<u64> = dead.iter().map(|d| d.id.0).collect();
    assert_eq!(dead_ids.len(), dead.len(), "one dead letter per message");
    for d in &dead {
        assert_eq!(d.attempts, CRASH_MAX_DELIVERIES, "dead letter {} with its attempts", d.id);
        if log.enqueued.contains(&d.id.0) {
            assert_eq!(d.payload[0] == b'P', log.poison.contains(&d.id.0), "dead letter {}", d.id);
        }
    }
    for id in &log.poison {
        assert!(dead_ids.contains(id), "poison message {id} is not a dead letter");
    }
    // Some good messages may die too: held by children killed three times.
    let good_dead = dead.iter().filter(|d| d.payload[0] != b'P').count();
    eprintln!("{} dead letters, {good_dead} of them killed with their consumers", dead.len());
    for d in &dead {
        q.redrive("default", d.id).await.expect("redrive");
    }
    let mut redelivered = HashSet::new();
    let second = drain(q, &mut redelivered, true).await;
    assert_eq!(second, dead_ids, "every redriven message delivered and acknowledged again");
    acked.extend(second);
    delivered.extend(redelivered);
    assert!(q.dead_letters("default").await.expect("dead letters").is_empty());
    for id in &log.enqueued {
        assert!(
            acked.contains(id) || log.acking.contains(id),
            "message {id} was enqueued but never acknowledged nor left in the queue"
        );
    }
    for id in &log.acked {
        assert!(!delivered.contains(id), "message {id} was acknowledged, then delivered again");
    }
}

/// Dequeues until the group is empty, nothing in flight. Acknowledges every message
/// (poison too when `ack_poison`, else nacks it); returns the ids acknowledged.
async fn drain<Q: MessageQueue>(
    q: &Q,
    delivered: &mut HashSet<u64>,
    ack_poison: bool,
) -> HashSet<u64> {
    let started = std::time::Instant::now();
    let mut acked = HashSet::new();
    loop {
        let got = q.dequeue("default", 64, None).await.expect("dequeue");
        if got.is_empty() {
            let stats = q.stats("default").await.expect("stats");
            if stats.ready == 0 && stats.in_flight == 0 {
                return acked;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the queue never drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        for d in got {
            delivered.insert(d.receipt.id.0);
            // A receipt whose visibility ran out before the answer (a loaded machine)
            // is stale: the message is delivered again, and answered then.
            if d.payload[0] == b'P' && !ack_poison {
                match q.nack("default", d.receipt, Duration::ZERO).await {
                    Ok(()) | Err(QueueError::StaleReceipt(_)) => {}
                    Err(e) => panic!("nack: {e:?}"),
                }
            } else {
                match q.ack("default", d.receipt).await {
                    Ok(()) => assert!(
                        acked.insert(d.receipt.id.0),
                        "the drain acknowledged {} twice",
                        d.receipt.id
                    ),
                    Err(QueueError::StaleReceipt(_)) => {}
                    Err(e) => panic!("ack: {e:?}"),
                }
            }
        }
    }
}

/// Two producers enqueue (every tenth message poison), two consumers acknowledge good
/// messages and nack poison, until the process is killed.
async fn queue_child<Q: MessageQueue + Clone + 'static>(q: Q) {
    let mut tasks = tokio::task::JoinSet::new();
    for producer in 0..2u64 {
        let q = q.clone();
        tasks.spawn(async move {
            for seq in 0u64.. {
                let poison = seq % 10 == 3;
                let mut payload = vec![if poison { b'P' } else { b'M' }];
                payload.extend_from_slice(&(producer << 40 | seq).to_le_bytes());
                let id = q.enqueue(payload).await.expect("enqueue");
                println!("{} {}", if poison { "ENQP" } else { "ENQ" }, id.0);
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
                    if d.payload[0] == b'P' {
                        let _ = q.nack("default", d.receipt, Duration::ZERO).await;
                        continue;
                    }
                    println!("ACKING {}", d.receipt.id.0);
                    if q.ack("default", d.receipt).await.is_ok() {
                        println!("ACK {}", d.receipt.id.0);
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}
