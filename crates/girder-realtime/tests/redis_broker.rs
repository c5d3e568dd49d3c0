//! Two hubs joined through Redis pub/sub: a subscriber on one receives what the
//! other publishes, once, in order; a lost subscriber connection or an
//! unacknowledged pipeline reaches local subscribers as a gap, never silently.
#![cfg(feature = "redis")]

use std::time::Duration;

use girder_core::services::{Service, require};
use girder_realtime::redis_broker::{BrokerError, RedisBroker, RedisBrokerConfig};
use girder_realtime::{
    Event, Hub, HubConfig, HubError, MISSED_UNKNOWN, Pattern, Resume, SubscribeConfig,
    Subscription, Topic,
};

fn t(s: &str) -> Topic {
    Topic::new(s).unwrap()
}

fn hub() -> Hub {
    Hub::new(HubConfig::default()).unwrap()
}

fn prefix(test: &str) -> String {
    format!("girder-test.rb{}-{test}", std::process::id())
}

/// `url` on database `db`: pub/sub ignores databases, but `CLIENT LIST` shows them,
/// which lets a test find its own broker's connections among other tests'.
fn on_db(url: &str, db: u8) -> String {
    let mut url = redis::parse_redis_url(url).expect("a Redis URL");
    url.set_path(&format!("/{db}"));
    url.to_string()
}

/// Waits (boundedly) for `done`.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn next(sub: &mut Subscription) -> Event {
    tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.expect("in time").unwrap()
}

fn text(event: &Event) -> String {
    match event {
        Event::Message(m) => String::from_utf8(m.payload.to_vec()).unwrap(),
        Event::Gap { missed: MISSED_UNKNOWN } => "gap".to_owned(),
        Event::Gap { missed } => format!("gap {missed}"),
    }
}

/// Everything buffered now.
fn drain(sub: &mut Subscription) -> Vec<String> {
    std::iter::from_fn(|| sub.try_recv().unwrap()).map(|e| text(&e)).collect()
}

/// Kills the connections of `kind` (`pubsub` or `normal`) on database `db`; how many.
async fn kill(url: &str, kind: &str, db: u8) -> usize {
    let mut admin =
        redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg(kind)
        .query_async(&mut admin)
        .await
        .unwrap();
    let ids: Vec<String> = list
        .lines()
        .filter(|line| line.split(' ').any(|f| f == format!("db={db}")))
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")).map(str::to_owned))
        .collect();
    for id in &ids {
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    ids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_one_instance_reaches_the_other_once_in_order() {
    let Some(url) =
        require(Service::Redis, "a_publish_on_one_instance_reaches_the_other_once_in_order")
    else {
        return;
    };
    let prefix = prefix("order");
    let a = RedisBroker::connect(&url, hub(), &prefix).await.unwrap();
    let b = RedisBroker::connect(&url, hub(), &prefix).await.unwrap();
    let pattern = Pattern::new("chat.>").unwrap();
    let config = SubscribeConfig { capacity: 20_000, ..SubscribeConfig::default() };
    let mut on_a = a.hub().subscribe(&pattern, config).unwrap();
    let mut on_b = b.hub().subscribe(&pattern, config).unwrap();
    let topic = t("chat.room-1");
    const N: u64 = 10_000;
    for i in 0..N {
        a.publish(&topic, i.to_string()).await.unwrap();
    }
    a.flush().await.unwrap();
    wait_until("A's messages on B", || b.stats().received == N).await;
    // B's message comes after all of A's on both: in B's hub (A's are in) and in
    // Redis (A's were acknowledged), so once A has it, A has every echo of its own.
    b.publish(&topic, "end").await.unwrap();
    b.flush().await.unwrap();
    wait_until("B's message on A", || a.stats().received == 1).await;
    let want: Vec<String> = (0..N).map(|i| i.to_string()).chain(["end".to_owned()]).collect();
    assert_eq!(drain(&mut on_b), want, "B: A's messages once, in order, then its own");
    assert_eq!(drain(&mut on_a), want, "A: its own messages once (echoes skipped)");
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.sent, sa.received, sa.gaps, sa.dropped), (N, 1, 0, 0), "{sa:?}");
    assert_eq!((sb.sent, sb.received, sb.gaps, sb.dropped), (1, N, 0, 0), "{sb:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_subscribers_on_one_instance_get_the_others_matching_topics() {
    let Some(url) = require(Service::Redis, "wildcard_subscribers_on_one_instance") else {
        return;
    };
    let prefix = prefix("wild");
    let a = RedisBroker::connect(&url, hub(), &prefix).await.unwrap();
    let b = RedisBroker::connect(&url, hub(), &prefix).await.unwrap();
    let sub = |p: &str| b.hub().subscribe(&Pattern::new(p).unwrap(), SubscribeConfig::default());
    let (mut one, mut rest, mut exact) =
        (sub("news.*").unwrap(), sub("news.>").unwrap(), sub("news.sports").unwrap());
    for (topic, body) in [
        ("news.sports", "a"),
        ("news.weather", "b"),
        ("news.sports.football", "c"),
        ("other", "d"),
        ("news.sports", "e"),
    ] {
        a.publish(&t(topic), body).await.unwrap();
    }
    a.flush().await.unwrap();
    wait_until("A's messages on B", || b.stats().received == 5).await;
    assert_eq!(drain(&mut one), ["a", "b", "e"]);
    assert_eq!(drain(&mut rest), ["a", "b", "c", "e"]);
    assert_eq!(drain(&mut exact), ["a", "e"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_happen_before_redis() {
    let Some(url) = require(Service::Redis, "refusals_happen_before_redis") else {
        return;
    };
    let prefix = prefix("refuse");
    let small = Hub::new(HubConfig { message_bytes_max: 16, ..HubConfig::default() }).unwrap();
    let a = RedisBroker::connect(&url, small, &prefix).await.unwrap();
    let b = RedisBroker::connect(&url, hub(), &prefix).await.unwrap();
    let topic = t("big");
    assert!(matches!(
        a.publish(&topic, vec![0u8; 17]).await,
        Err(BrokerError::Hub(HubError::TooLarge { len: 17, max: 16 }))
    ));
    a.publish(&topic, vec![1u8; 16]).await.unwrap();
    a.flush().await.unwrap();
    wait_until("the message that fits", || b.stats().received == 1).await;
    assert_eq!(a.stats().sent, 1, "the refused one never went to Redis");
    for bad in ["", "bad prefix", "a..b", "a.*", "a.>", &"x".repeat(65)] {
        assert!(
            matches!(RedisBroker::connect(&url, hub(), bad).await, Err(BrokerError::Prefix(_))),
            "{bad:?}"
        );
    }
    let zero = RedisBrokerConfig { outbound_max: 0, ..RedisBrokerConfig::default() };
    assert!(matches!(
        RedisBroker::connect_with(&url, hub(), "ok", zero).await,
        Err(BrokerError::Config(_))
    ));
    let quick = RedisBrokerConfig { timeout_ms: 1_000, ..RedisBrokerConfig::default() };
    let started = std::time::Instant::now();
    assert!(RedisBroker::connect_with("redis://127.0.0.1:1/", hub(), "ok", quick).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscriber_connection_is_a_gap_then_the_broker_resubscribes() {
    let Some(url) = require(Service::Redis, "a_lost_subscriber_connection_is_a_gap") else {
        return;
    };
    const DB: u8 = 11;
    let prefix = prefix("kill-sub");
    let a = RedisBroker::connect(&url, hub(), &prefix).await.unwrap();
    let b = RedisBroker::connect(&on_db(&url, DB), hub(), &prefix).await.unwrap();
    let topic = t("chat.room-1");
    let mut on_b =
        b.hub().subscribe(&Pattern::new("chat.>").unwrap(), SubscribeConfig::default()).unwrap();
    let one = a.publish(&topic, "one").await.unwrap();
    assert_eq!(text(&next(&mut on_b).await), "one");
    let one_on_b = b.hub().last_position(&topic).unwrap();
    assert_ne!(one_on_b.epoch, one.position.epoch, "each hub numbers on its own");

    assert_eq!(kill(&url, "pubsub", DB).await, 1, "B's subscriber connection");
    assert_eq!(next(&mut on_b).await, Event::Gap { missed: MISSED_UNKNOWN });
    wait_until("B to resubscribe", || b.stats().reconnects == 1).await;
    a.publish(&topic, "two").await.unwrap();
    a.flush().await.unwrap();
    // The second gap (once resubscribed) may have merged with the first.
    let mut after = Vec::new();
    while after.last().is_none_or(|e| e != "two") {
        after.push(text(&next(&mut on_b).await));
    }
    assert!(after[..after.len() - 1].iter().all(|e| e == "gap"), "{after:?}");
    // Counted just after the hub delivered it.
    wait_until("B to count it", || b.stats().received == 2).await;
    let stats = b.stats();
    assert_eq!((stats.gaps, stats.reconnects, stats.received), (2, 1, 2), "{stats:?}");
    // A client that saw "one" cannot resume completely on B: what it missed is unknown.
    let (_, resume) = b.hub().resume(&topic, Some(one_on_b), SubscribeConfig::default()).unwrap();
    assert!(matches!(resume, Resume::Reset { .. }), "{resume:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_pipeline_is_a_gap_on_the_other_instance() {
    let Some(url) = require(Service::Redis, "an_unacknowledged_pipeline_is_a_gap") else {
        return;
    };
    const DB: u8 = 12;
    let prefix = prefix("kill-pub");
    let a = RedisBroker::connect(&on_db(&url, DB), hub(), &prefix).await.unwrap();
    let b = RedisBroker::connect(&url, hub(), &prefix).await.unwrap();
    let topic = t("feed");
    let mut on_b =
        b.hub().subscribe(&Pattern::new("feed").unwrap(), SubscribeConfig::default()).unwrap();
    a.publish(&topic, "first").await.unwrap();
    a.flush().await.unwrap();
    assert_eq!(text(&next(&mut on_b).await), "first");
    // Cut A's publishing connection until a pipeline goes unacknowledged.
    let mut lost = 0;
    for attempt in 0..5 {
        assert_eq!(kill(&url, "normal", DB).await, 1, "A's publishing connection");
        a.publish(&topic, format!("lost {attempt}")).await.unwrap();
        if let Err(BrokerError::Unacknowledged { messages }) = a.flush().await {
            lost = messages;
            break;
        }
    }
    assert_eq!(lost, 1, "a pipeline went unacknowledged");
    // The connection comes back; the next message shows the jump on B.
    let mut last = Err(BrokerError::Stopped);
    for _ in 0..20 {
        a.publish(&topic, "after").await.unwrap();
        last = a.flush().await;
        if last.is_ok() {
            break;
        }
    }
    last.unwrap();
    let mut got = Vec::new();
    while got.last().is_none_or(|e| e != "after") {
        got.push(text(&next(&mut on_b).await));
    }
    assert!(got.contains(&"gap".to_owned()), "the loss is a gap on B: {got:?}");
    assert!(b.stats().missed >= 1, "{:?}", b.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_probe_is_a_gap_then_the_broker_resubscribes() {
    let Some(url) = require(Service::Redis, "an_unanswered_probe_is_a_gap") else {
        return;
    };
    const DB: u8 = 13;
    let prefix = prefix("probe");
    let config =
        RedisBrokerConfig { heartbeat_ms: 20, timeout_ms: 300, ..RedisBrokerConfig::default() };
    let b = RedisBroker::connect_with(&on_db(&url, DB), hub(), &prefix, config).await.unwrap();
    let mut on_b =
        b.hub().subscribe(&Pattern::new("x").unwrap(), SubscribeConfig::default()).unwrap();
    // The subscriber connection stays up, but a probe is lost with the pipeline that
    // carried it when B's publishing connection is cut: only the heartbeat can tell.
    let mut attempts = 0;
    while b.stats().reconnects == 0 {
        attempts += 1;
        assert!(attempts <= 10, "no probe was lost: {:?}", b.stats());
        kill(&url, "normal", DB).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1_000);
        while b.stats().reconnects == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(next(&mut on_b).await, Event::Gap { missed: MISSED_UNKNOWN });
    assert!(b.stats().gaps >= 2, "{:?}", b.stats());
    // Live again: a message from another instance arrives after the gap.
    let a = RedisBroker::connect(&url, hub(), &prefix).await.unwrap();
    a.publish(&t("x"), "back").await.unwrap();
    a.flush().await.unwrap();
    let mut got = Vec::new();
    while got.last().is_none_or(|e| e != "back") {
        got.push(text(&next(&mut on_b).await));
    }
    assert!(got[..got.len() - 1].iter().all(|e| e == "gap"), "{got:?}");
}
