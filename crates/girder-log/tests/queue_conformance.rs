//! One suite for every durable-queue backend: each property is a generic async fn
//! over [`MessageQueue`], run against the embedded queue on its WAL and (feature
//! `nats`) against JetStream on the local NATS server, each test on streams of its
//! own, deleted afterwards.
//!
//! JetStream times visibility and nack delays on the server, so no manual clock can
//! move them: the suite uses real, short durations for both backends and waits by
//! polling, with generous bounds. It asserts lower bounds only (a message is not
//! back before its delay), never that something was fast. Where the backends
//! differ by design (a lapsed receipt, fixed visibility), the property avoids the
//! difference and the JetStream-only tests at the end pin it down; the embedded
//! queue's own tests (`tests/queue.rs`) keep its manual-clock properties.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use girder_core::{Clock, SystemClock};
use girder_log::queue::{Delivery, MessageId, MessageQueue, Queue, QueueConfig, QueueError};
use girder_log::wal::WalConfig;

/// What a property needs from the queue it runs on.
#[derive(Debug, Clone, Copy)]
struct Spec {
    groups: &'static [&'static str],
    max_deliveries: u32,
    visibility: Duration,
    message_bytes_max: usize,
}

const ONE: &[&str] = &["default"];
const SHORT: Duration = Duration::from_millis(800);

const fn spec(groups: &'static [&'static str], max_deliveries: u32, visibility: Duration) -> Spec {
    Spec { groups, max_deliveries, visibility, message_bytes_max: 4096 }
}

fn now_ms() -> u64 {
    SystemClock.now_ms()
}

/// Dequeues one message of `group`, polling until one is visible.
async fn next<Q: MessageQueue>(q: &Q, group: &str, within: Duration) -> Delivery {
    let started = Instant::now();
    loop {
        let mut got = q.dequeue(group, 1, None).await.expect("dequeue");
        if let Some(d) = got.pop() {
            return d;
        }
        assert!(started.elapsed() < within, "no delivery within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_stale<T>(r: &Result<T, QueueError>) -> bool {
    matches!(r, Err(QueueError::StaleReceipt(_)))
}

// ---- the properties ----

/// Within a group, messages are handed out in enqueue order, each once while it is
/// in flight, with attempt 1 and a deadline one visibility timeout ahead.
async fn delivers_in_order_within_a_group<Q: MessageQueue>(q: &Q, s: Spec) {
    let mut ids = Vec::new();
    for i in 0..10u8 {
        ids.push(q.enqueue(vec![i; 5]).await.expect("enqueue"));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let mut got = Vec::new();
    loop {
        let before = now_ms();
        let batch = q.dequeue("default", 4, None).await.expect("dequeue");
        let after = now_ms();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 4);
        for d in &batch {
            let vis = u64::try_from(s.visibility.as_millis()).expect("ms");
            assert!((before + vis..=after + vis).contains(&d.visible_again_at_ms));
        }
        got.extend(batch);
    }
    assert_eq!(got.iter().map(|d| d.receipt.id).collect::<Vec<_>>(), ids, "in order, once");
    for (i, d) in got.iter().enumerate() {
        assert_eq!((d.receipt.attempt, &*d.payload), (1, &[i as u8; 5][..]));
    }
    for d in &got {
        q.ack("default", d.receipt).await.expect("ack");
    }
    assert!(q.dequeue("default", 10, None).await.expect("dequeue").is_empty());
}

/// An unacknowledged message comes back after its visibility timeout (never before)
/// as the next attempt; only the latest delivery's receipt acknowledges, once.
async fn redelivers_after_the_visibility_lapses<Q: MessageQueue>(q: &Q, s: Spec) {
    let id = q.enqueue(b"job".to_vec()).await.expect("enqueue");
    let first = next(q, "default", s.visibility * 5).await;
    assert_eq!((first.receipt.id, first.receipt.attempt), (id, 1));
    let second = next(q, "default", s.visibility * 10).await;
    assert!(now_ms() >= first.visible_again_at_ms, "not back before its timeout");
    assert_eq!((second.receipt.id, second.receipt.attempt, &*second.payload), (id, 2, &b"job"[..]));
    assert!(is_stale(&q.ack("default", first.receipt).await), "the lapsed delivery lost it");
    assert!(is_stale(&q.nack("default", first.receipt, Duration::ZERO).await));
    q.ack("default", second.receipt).await.expect("ack the latest");
    assert!(is_stale(&q.ack("default", second.receipt).await), "acknowledged once");
    let unknown = girder_log::queue::Receipt { id: MessageId(id.0 + 1000), attempt: 1 };
    assert!(is_stale(&q.ack("default", unknown).await));
    assert!(q.dequeue("default", 1, None).await.expect("dequeue").is_empty());
}

/// A nacked message is invisible for its delay, then comes back as the next attempt.
async fn nack_delays_redelivery<Q: MessageQueue>(q: &Q, s: Spec) {
    let delay = Duration::from_millis(600);
    let id = q.enqueue(b"retry me".to_vec()).await.expect("enqueue");
    let first = next(q, "default", s.visibility).await;
    let nacked_at = Instant::now();
    q.nack("default", first.receipt, delay).await.expect("nack");
    assert!(is_stale(&q.ack("default", first.receipt).await), "a nacked receipt is spent");
    let again = next(q, "default", delay * 10).await;
    assert!(nacked_at.elapsed() >= delay - Duration::from_millis(20), "not back before its delay");
    assert_eq!((again.receipt.id, again.receipt.attempt), (id, 2));
    q.ack("default", again.receipt).await.expect("ack");
}

/// After `max_deliveries` failed deliveries — nacked, or timed out — a message is a
/// dead letter with its attempts, never delivered again until redriven; redrive hands
/// it out afresh (attempt 1) and takes it off the dead-letter list.
async fn dead_letters_after_max_deliveries_and_redrive<Q: MessageQueue>(q: &Q, s: Spec) {
    assert_eq!(s.max_deliveries, 3);
    let poison = q.enqueue(b"poison".to_vec()).await.expect("enqueue");
    for attempt in 1..=3 {
        let d = next(q, "default", s.visibility * 5).await;
        assert_eq!((d.receipt.id, d.receipt.attempt), (poison, attempt));
        q.nack("default", d.receipt, Duration::ZERO).await.expect("nack");
    }
    let dead = q.dead_letters("default").await.expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].id, dead[0].attempts, &*dead[0].payload), (poison, 3, &b"poison"[..]));
    assert_eq!(q.stats("default").await.expect("stats").dead, 1);

    // Three deliveries that time out: dead too, and the fourth is never handed out.
    let slow = q.enqueue(b"slow".to_vec()).await.expect("enqueue");
    let mut last = None;
    for attempt in 1..=3 {
        let d = next(q, "default", s.visibility * 10).await;
        assert_eq!((d.receipt.id, d.receipt.attempt), (slow, attempt));
        last = Some(d);
    }
    let lapsed_at = last.expect("delivered").visible_again_at_ms;
    let started = Instant::now();
    loop {
        let got = q.dequeue("default", 1, None).await.expect("dequeue");
        assert!(got.is_empty(), "delivered past max_deliveries: {got:?}");
        if now_ms() > lapsed_at && q.stats("default").await.expect("stats").dead == 2 {
            break;
        }
        assert!(started.elapsed() < s.visibility * 10, "the timed-out message never died");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = q.dead_letters("default").await.expect("dead letters");
    let listed: Vec<_> = dead.iter().map(|d| (d.id, d.attempts, &*d.payload)).collect();
    assert_eq!(listed, [(poison, 3, &b"poison"[..]), (slow, 3, &b"slow"[..])]);

    assert!(matches!(
        q.redrive("default", MessageId(slow.0 + 1000)).await,
        Err(QueueError::NotDead(_))
    ));
    q.redrive("default", poison).await.expect("redrive");
    assert!(matches!(q.redrive("default", poison).await, Err(QueueError::NotDead(_))));
    let again = next(q, "default", s.visibility * 5).await;
    assert_eq!(
        (again.receipt.id, again.receipt.attempt, &*again.payload),
        (poison, 1, &b"poison"[..])
    );
    q.ack("default", again.receipt).await.expect("ack");
    let dead = q.dead_letters("default").await.expect("dead letters");
    assert_eq!(dead.iter().map(|d| d.id).collect::<Vec<_>>(), [slow]);
    let stats = q.stats("default").await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 1));
}

/// Every group receives every message; acknowledging in one leaves the others'.
async fn every_group_gets_every_message<Q: MessageQueue>(q: &Q, _: Spec) {
    let mut ids = Vec::new();
    for i in 0..3u8 {
        ids.push(q.enqueue(vec![i]).await.expect("enqueue"));
    }
    let billing = q.dequeue("billing", 10, None).await.expect("billing");
    assert_eq!(billing.iter().map(|d| d.receipt.id).collect::<Vec<_>>(), ids);
    for d in &billing {
        q.ack("billing", d.receipt).await.expect("ack");
    }
    assert!(is_stale(&q.ack("email", billing[0].receipt).await), "a receipt is its group's");
    let email = q.dequeue("email", 10, None).await.expect("email");
    assert_eq!(email.iter().map(|d| d.receipt.id).collect::<Vec<_>>(), ids, "untouched by billing");
    assert_eq!(q.stats("email").await.expect("stats").in_flight, 3);
    let billing = q.stats("billing").await.expect("stats");
    assert_eq!((billing.ready, billing.in_flight), (0, 0));
    for d in &email {
        q.ack("email", d.receipt).await.expect("ack");
    }
    assert!(q.dequeue("billing", 10, None).await.expect("billing").is_empty());
    assert!(q.dequeue("email", 10, None).await.expect("email").is_empty());
}

/// Stats count what waits, what is out, and what died.
async fn stats_count_ready_in_flight_and_dead<Q: MessageQueue>(q: &Q, s: Spec) {
    assert_eq!(s.max_deliveries, 1);
    for i in 0..5u8 {
        q.enqueue(vec![i]).await.expect("enqueue");
    }
    let stats = q.stats("default").await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (5, 0, 0));
    let out = q.dequeue("default", 3, None).await.expect("dequeue");
    let stats = q.stats("default").await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (2, 3, 0));
    q.ack("default", out[0].receipt).await.expect("ack");
    q.nack("default", out[1].receipt, Duration::ZERO).await.expect("nack: its last delivery");
    let stats = q.stats("default").await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (2, 1, 1));
}

/// Oversized messages and unknown groups are typed errors; nothing is stored.
async fn bad_input_gets_typed_errors<Q: MessageQueue>(q: &Q, s: Spec) {
    let max = s.message_bytes_max;
    assert!(matches!(
        q.enqueue(vec![0; max + 1]).await,
        Err(QueueError::TooLarge { len, max: m }) if len == max + 1 && m == max
    ));
    assert_eq!(q.stats("default").await.expect("stats").ready, 0, "nothing stored");
    let id = q.enqueue(vec![1; max]).await.expect("the largest allowed");
    let unknown =
        |r: Result<(), QueueError>| matches!(r, Err(QueueError::UnknownGroup(g)) if g == "sms");
    assert!(matches!(q.dequeue("sms", 1, None).await, Err(QueueError::UnknownGroup(_))));
    let d = q.dequeue("default", 1, None).await.expect("dequeue").remove(0);
    assert_eq!((d.receipt.id, d.payload.len()), (id, max));
    assert!(unknown(q.ack("sms", d.receipt).await));
    assert!(unknown(q.nack("sms", d.receipt, Duration::ZERO).await));
    assert!(unknown(q.redrive("sms", id).await));
    assert!(matches!(q.dead_letters("sms").await, Err(QueueError::UnknownGroup(_))));
    assert!(matches!(q.stats("sms").await, Err(QueueError::UnknownGroup(_))));
    q.ack("default", d.receipt).await.expect("ack");
}

/// Competing consumers acknowledge every message exactly once.
async fn competing_consumers_ack_each_message_once<Q: MessageQueue + Clone + 'static>(
    q: &Q,
    _: Spec,
) {
    let mut enqueued = HashSet::new();
    for i in 0..300u32 {
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
    assert_eq!(acked.len(), 300, "no message twice");
    assert_eq!(acked.into_iter().collect::<HashSet<_>>(), enqueued, "none lost");
}

// ---- the backends ----

fn embedded(dir: &Path, s: Spec) -> Queue {
    let config = QueueConfig {
        groups: s.groups.iter().map(|g| (*g).to_owned()).collect(),
        max_deliveries: s.max_deliveries,
        visibility: s.visibility,
        message_bytes_max: s.message_bytes_max,
        wal: WalConfig { segment_bytes: 64 << 10, ..WalConfig::new(dir) },
    };
    Queue::open(config, Arc::new(SystemClock)).expect("open")
}

macro_rules! conformance {
    ($($property:ident: $spec:expr;)*) => {
        mod embedded {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $property() {
                    let dir = tempfile::tempdir().expect("dir");
                    let q = super::embedded(dir.path(), $spec);
                    super::$property(&q, $spec).await;
                    q.close().await.expect("close");
                }
            )*
        }

        #[cfg(feature = "nats")]
        mod jetstream {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $property() {
                    let Some(q) = super::js::open(stringify!($property), $spec).await else {
                        return;
                    };
                    super::$property(&*q, $spec).await;
                }
            )*
        }
    };
}

conformance! {
    delivers_in_order_within_a_group: spec(ONE, 5, Duration::from_secs(30));
    redelivers_after_the_visibility_lapses: spec(ONE, 5, SHORT);
    nack_delays_redelivery: spec(ONE, 5, Duration::from_secs(30));
    dead_letters_after_max_deliveries_and_redrive: spec(ONE, 3, SHORT);
    every_group_gets_every_message: spec(&["billing", "email"], 5, Duration::from_secs(30));
    stats_count_ready_in_flight_and_dead: spec(ONE, 1, Duration::from_secs(30));
    bad_input_gets_typed_errors: spec(ONE, 5, Duration::from_secs(30));
    competing_consumers_ack_each_message_once: spec(ONE, 5, Duration::from_secs(30));
}

#[cfg(feature = "nats")]
mod js {
    //! JetStream queues for the suite, each on streams of its own that are deleted
    //! when the test ends (passed or failed), and the JetStream-only properties.

    use std::sync::atomic::{AtomicU32, Ordering};

    use girder_core::services::{Service, require};
    use girder_log::queue::jetstream::{JetStreamConfig, JetStreamQueue};

    use super::*;

    /// A queue that deletes its streams when dropped.
    pub(super) struct Scratch {
        queue: Option<JetStreamQueue>,
    }

    impl std::ops::Deref for Scratch {
        type Target = JetStreamQueue;
        fn deref(&self) -> &JetStreamQueue {
            self.queue.as_ref().expect("open until dropped")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let Some(queue) = self.queue.take() else { return };
            // Drop cannot await, and the test's runtime may be unwinding: delete from
            // a runtime of our own on a thread of our own (the queue's connection is
            // driven by the test's runtime, so tests using this are multi-threaded).
            let deleting = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                rt.map(|rt| rt.block_on(queue.delete()))
            });
            match deleting.join() {
                Ok(Ok(Ok(()))) => {}
                other => eprintln!("test streams not deleted: {other:?}"),
            }
        }
    }

    /// A name no other test (or run) uses: 1–32 of `[A-Za-z0-9-]`.
    pub(super) fn unique_name(test: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag: String = test.chars().filter(char::is_ascii_alphanumeric).take(10).collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("{tag}-{:x}-{nanos:x}{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
    }

    pub(super) fn config(test: &str, s: Spec) -> JetStreamConfig {
        JetStreamConfig {
            groups: s.groups.iter().map(|g| (*g).to_owned()).collect(),
            max_deliveries: s.max_deliveries,
            visibility: s.visibility,
            message_bytes_max: s.message_bytes_max,
            ..JetStreamConfig::new(unique_name(test))
        }
    }

    pub(super) async fn open(test: &str, s: Spec) -> Option<Scratch> {
        let url = require(Service::Nats, test)?;
        let queue = JetStreamQueue::connect(&url, config(test, s), Arc::new(SystemClock))
            .await
            .expect("open the JetStream queue");
        Some(Scratch { queue: Some(queue) })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn visibility_is_fixed_per_consumer() {
        let s = spec(ONE, 5, Duration::from_secs(30));
        let Some(q) = open("visibility_is_fixed_per_consumer", s).await else { return };
        q.enqueue(b"x".to_vec()).await.expect("enqueue");
        assert!(matches!(
            q.dequeue("default", 1, Some(Duration::from_secs(5))).await,
            Err(QueueError::FixedVisibility { .. })
        ));
        let same = q.dequeue("default", 1, Some(s.visibility)).await.expect("the configured one");
        assert_eq!(same.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_messages_are_refused_before_the_server() {
        let s = spec(ONE, 5, Duration::from_secs(30));
        let Some(url) = require(Service::Nats, "oversized_messages_are_refused_before_the_server")
        else {
            return;
        };
        let config = config("oversized", s);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        // The server takes payloads up to a megabyte, so a refusal of 4,097 bytes can only
        // come from the queue's own limit; the stream staying empty shows nothing was sent.
        let q = JetStreamQueue::connect(&url, config, clock).await.expect("open");
        let queue = Scratch { queue: Some(q) };
        let queue: &JetStreamQueue = &queue;
        assert!(matches!(
            queue.enqueue(vec![0; 4097]).await,
            Err(QueueError::TooLarge { len: 4097, max: 4096 })
        ));
        let stats = MessageQueue::stats(queue, "default").await.expect("stats");
        assert_eq!((stats.ready, stats.in_flight), (0, 0), "nothing reached the stream");
        queue.enqueue(vec![0; 4096]).await.expect("the limit itself is accepted");
        let stats = MessageQueue::stats(queue, "default").await.expect("stats");
        assert_eq!(stats.ready, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_configs_and_an_unreachable_server_are_typed_errors() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        for bad in [
            JetStreamConfig::new("has.dot"),
            JetStreamConfig::new("under_score"),
            JetStreamConfig::new(""),
            JetStreamConfig { groups: vec![], ..JetStreamConfig::new("q") },
            JetStreamConfig { groups: vec!["a".into(), "a".into()], ..JetStreamConfig::new("q") },
            JetStreamConfig { groups: vec!["a b".into()], ..JetStreamConfig::new("q") },
            JetStreamConfig { max_deliveries: 0, ..JetStreamConfig::new("q") },
            JetStreamConfig { visibility: Duration::ZERO, ..JetStreamConfig::new("q") },
            JetStreamConfig { in_flight_max: 0, ..JetStreamConfig::new("q") },
        ] {
            let err = JetStreamQueue::connect("nats://127.0.0.1:1", bad.clone(), clock.clone())
                .await
                .expect_err("refused");
            assert!(matches!(err, QueueError::Config(_)), "{bad:?}: {err:?}");
        }
        // Nothing listens on port 1: the client's own error is in the chain.
        let short = JetStreamConfig {
            request_timeout: Duration::from_secs(2),
            ..JetStreamConfig::new("q")
        };
        let err = JetStreamQueue::connect("nats://127.0.0.1:1", short, clock.clone())
            .await
            .expect_err("unreachable");
        assert!(matches!(err, QueueError::Nats(_) | QueueError::TimedOut { .. }), "{err:?}");
        if matches!(err, QueueError::Nats(_)) {
            assert!(
                girder_core::error::source_of::<async_nats::ConnectError>(&err).is_some(),
                "{err:?}"
            );
        }
        let Some(url) = require(Service::Nats, "bad_configs_and_an_unreachable_server") else {
            return;
        };
        let huge =
            JetStreamConfig { message_bytes_max: 64 << 20, ..config("huge", spec(ONE, 5, SHORT)) };
        assert!(matches!(
            JetStreamQueue::connect(&url, huge, clock.clone()).await,
            Err(QueueError::Config(_))
        ));
        // One group means a work-queue stream; reopening it with two groups is refused.
        let one = config("regroup", spec(ONE, 5, SHORT));
        let q = JetStreamQueue::connect(&url, one.clone(), clock.clone()).await.expect("open");
        let _scratch = Scratch { queue: Some(q) };
        let two = JetStreamConfig { groups: vec!["a".into(), "b".into()], ..one };
        assert!(matches!(
            JetStreamQueue::connect(&url, two, clock).await,
            Err(QueueError::Config(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_flight_deliveries_are_bounded_per_handle() {
        let s = spec(ONE, 5, Duration::from_secs(30));
        let Some(url) = require(Service::Nats, "in_flight_deliveries_are_bounded_per_handle")
        else {
            return;
        };
        let config = JetStreamConfig { in_flight_max: 3, ..config("inflight", s) };
        let q = JetStreamQueue::connect(&url, config, Arc::new(SystemClock)).await.expect("open");
        let q = Scratch { queue: Some(q) };
        for i in 0..5u8 {
            q.enqueue(vec![i]).await.expect("enqueue");
        }
        let out = q.dequeue("default", 10, None).await.expect("dequeue");
        assert_eq!(out.len(), 3, "no more than in_flight_max");
        assert!(matches!(
            q.dequeue("default", 1, None).await,
            Err(QueueError::InFlightFull { max: 3 })
        ));
        q.ack("default", out[0].receipt).await.expect("ack");
        assert_eq!(q.dequeue("default", 10, None).await.expect("dequeue").len(), 1);
    }
}
