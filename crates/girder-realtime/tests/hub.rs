//! The in-process hub: order, wildcards, slow consumers, resume.

use std::time::Duration;

use girder_realtime::{
    Closed, Event, Hub, HubConfig, HubError, MISSED_UNKNOWN, Pattern, Position, Resume,
    SlowConsumer, SubscribeConfig, Topic,
};
use proptest::prelude::*;

fn t(s: &str) -> Topic {
    Topic::new(s).unwrap()
}

fn p(s: &str) -> Pattern {
    Pattern::new(s).unwrap()
}

fn hub(history: usize) -> Hub {
    Hub::new(HubConfig { history_per_topic: history, ..HubConfig::default() }).unwrap()
}

fn payloads(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Message(m) => String::from_utf8(m.payload.to_vec()).unwrap(),
            Event::Gap { missed } => format!("gap {missed}"),
        })
        .collect()
}

fn drain(sub: &mut girder_realtime::Subscription) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(Some(e)) = sub.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test]
async fn subscribers_get_matching_topics_in_publish_order() {
    let hub = hub(10);
    let mut exact = hub.subscribe(&p("news.sports"), SubscribeConfig::default()).unwrap();
    let mut one = hub.subscribe(&p("news.*"), SubscribeConfig::default()).unwrap();
    let mut rest = hub.subscribe(&p("news.>"), SubscribeConfig::default()).unwrap();
    for (topic, body) in [
        ("news.sports", "a"),
        ("news.weather", "b"),
        ("news.sports.football", "c"),
        ("other", "d"),
        ("news.sports", "e"),
    ] {
        hub.publish(&t(topic), body.to_owned()).unwrap();
    }
    assert_eq!(payloads(&drain(&mut exact)), ["a", "e"]);
    assert_eq!(payloads(&drain(&mut one)), ["a", "b", "e"]);
    assert_eq!(payloads(&drain(&mut rest)), ["a", "b", "c", "e"]);
    // recv waits for the next one.
    let publisher = hub.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        publisher.publish(&t("news.sports"), "f").unwrap();
    });
    assert_eq!(payloads(&[exact.recv().await.unwrap()]), ["f"]);
    later.await.unwrap();
    // Dropped subscriptions get nothing more and are not counted.
    drop(one);
    drop(rest);
    let published = hub.publish(&t("news.sports"), "g").unwrap();
    assert_eq!(published.delivered, 1);
}

#[tokio::test]
async fn a_full_buffer_drops_the_oldest_and_says_so_or_disconnects() {
    let hub = hub(0);
    let config = SubscribeConfig { capacity: 3, policy: SlowConsumer::DropOldest };
    let mut dropping = hub.subscribe(&p("x"), config).unwrap();
    let mut leaving = hub
        .subscribe(&p("x"), SubscribeConfig { policy: SlowConsumer::Disconnect, ..config })
        .unwrap();
    for i in 0..5 {
        hub.publish(&t("x"), format!("{i}")).unwrap();
    }
    assert_eq!(payloads(&drain(&mut dropping)), ["gap 2", "2", "3", "4"]);
    assert_eq!(leaving.try_recv(), Err(Closed::SlowConsumer));
    assert_eq!(leaving.recv().await, Err(Closed::SlowConsumer));
    // The publisher never waited, and the closed subscriber is gone from the topic.
    assert_eq!(hub.publish(&t("x"), "5").unwrap().delivered, 1);
}

#[tokio::test]
async fn a_loss_upstream_is_a_gap_for_every_subscriber_and_a_reset_for_older_positions() {
    let hub = hub(100);
    let topic = t("room.1");
    let mut exact = hub.subscribe(&p("room.1"), SubscribeConfig::default()).unwrap();
    let mut wild = hub.subscribe(&p("room.*"), SubscribeConfig::default()).unwrap();
    let strict = SubscribeConfig { capacity: 2, policy: SlowConsumer::Disconnect };
    let mut leaving = hub.subscribe(&p("room.1"), strict).unwrap();
    let before = hub.publish(&topic, "before").unwrap().position;
    hub.report_gap();
    let after = hub.publish(&topic, "after").unwrap().position;
    let unknown = format!("gap {MISSED_UNKNOWN}");
    // What was buffered joins the gap, so what follows it is contiguous.
    for sub in [&mut exact, &mut wild, &mut leaving] {
        assert_eq!(payloads(&drain(sub)), [unknown.as_str(), "after"]);
    }
    // A resume from before the loss cannot be complete; from after it, it is.
    let (_, resume) = hub.resume(&topic, Some(before), SubscribeConfig::default()).unwrap();
    assert_eq!(resume, Resume::Reset { oldest: Some(after) });
    let (_, resume) = hub.resume(&topic, Some(after), SubscribeConfig::default()).unwrap();
    assert_eq!(resume, Resume::Complete(Vec::new()));
    // An unknown count stays unknown when the buffer overflows as well.
    let small = SubscribeConfig { capacity: 1, policy: SlowConsumer::DropOldest };
    let mut full = hub.subscribe(&p("room.1"), small).unwrap();
    hub.report_gap();
    hub.publish(&topic, "x").unwrap();
    hub.publish(&topic, "y").unwrap();
    assert_eq!(payloads(&drain(&mut full)), [unknown.as_str(), "y"]);
    // A subscriber that arrives later has nothing to hear about.
    let mut late = hub.subscribe(&p("room.1"), SubscribeConfig::default()).unwrap();
    hub.publish(&topic, "z").unwrap();
    assert_eq!(payloads(&drain(&mut late)), ["z"]);
}

#[tokio::test]
async fn resume_replays_exactly_what_was_missed_or_says_it_cannot() {
    let hub = hub(5);
    let topic = t("chat:room:1");
    let mut positions = Vec::new();
    for i in 1..=8 {
        positions.push(hub.publish(&topic, format!("m{i}")).unwrap().position);
    }
    // History holds m4..m8: after m5 the resume is complete.
    let (mut sub, resume) =
        hub.resume(&topic, Some(positions[4]), SubscribeConfig::default()).unwrap();
    let Resume::Complete(replayed) = resume else { panic!("{resume:?}") };
    assert_eq!(replayed.iter().map(|m| m.position.seq).collect::<Vec<_>>(), [6, 7, 8]);
    hub.publish(&topic, "m9").unwrap();
    assert_eq!(payloads(&drain(&mut sub)), ["m9"], "live messages follow, none twice");
    // The history now holds m5..m9. After m4: m5 is the oldest kept, nothing missing.
    let (_, resume) = hub.resume(&topic, Some(positions[3]), SubscribeConfig::default()).unwrap();
    assert!(matches!(resume, Resume::Complete(ref m) if m.len() == 5), "{resume:?}");
    // After m3: m4 is gone, so the resume is a reset.
    let (_, resume) = hub.resume(&topic, Some(positions[2]), SubscribeConfig::default()).unwrap();
    assert!(matches!(resume, Resume::Reset { oldest: Some(o) } if o.seq == 5), "{resume:?}");
    // Positions from another hub, another incarnation or the future are resets.
    let other = Position { epoch: hub.epoch() ^ 1, ..positions[6] };
    let future = Position { seq: 99, ..positions[6] };
    let stream = Position { stream: positions[6].stream + 7, ..positions[6] };
    for bad in [other, future, stream] {
        let (_, resume) = hub.resume(&topic, Some(bad), SubscribeConfig::default()).unwrap();
        assert!(matches!(resume, Resume::Reset { .. }), "{bad:?}: {resume:?}");
    }
    // Up to date: complete and empty.
    let last = hub.last_position(&topic).unwrap();
    let (_, resume) = hub.resume(&topic, Some(last), SubscribeConfig::default()).unwrap();
    assert_eq!(resume, Resume::Complete(Vec::new()));
}

#[tokio::test]
async fn a_resume_racing_publishers_sees_every_message_once() {
    let hub = hub(100_000);
    let topic = t("race");
    let publisher = {
        let (hub, topic) = (hub.clone(), topic.clone());
        tokio::spawn(async move {
            for i in 0..20_000u32 {
                hub.publish(&topic, i.to_le_bytes().to_vec()).unwrap();
                if i % 256 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    let first = hub.publish(&topic, vec![0xff; 4]).unwrap().position;
    let (mut sub, resume) = hub
        .resume(
            &topic,
            Some(first),
            SubscribeConfig { capacity: 100_000, policy: SlowConsumer::Disconnect },
        )
        .unwrap();
    let Resume::Complete(mut seen) = resume else { panic!("the history holds everything") };
    publisher.await.unwrap();
    while let Ok(Some(Event::Message(m))) = sub.try_recv() {
        seen.push(m);
    }
    let seqs: Vec<u64> = seen.iter().map(|m| m.position.seq).collect();
    let last = hub.last_position(&topic).unwrap().seq;
    assert_eq!(seqs, ((first.seq + 1)..=last).collect::<Vec<_>>(), "no gap, no duplicate");
}

#[test]
fn positions_round_trip_and_garbage_is_none() {
    let pos = Position { epoch: 0xabc, stream: 3, seq: 99 };
    assert_eq!(Position::decode(&pos.encode()), Some(pos));
    for bad in ["", "1-2", "1-2-3-4", "x-1-1", "1--1", &"f".repeat(70)] {
        assert_eq!(Position::decode(bad), None, "{bad:?}");
    }
}

#[test]
fn bounds_are_typed_errors() {
    let hub = Hub::new(HubConfig { message_bytes_max: 4, ..HubConfig::default() }).unwrap();
    assert_eq!(hub.publish(&t("a"), vec![0; 5]), Err(HubError::TooLarge { len: 5, max: 4 }));
    assert!(
        hub.subscribe(&p("a"), SubscribeConfig { capacity: 0, ..SubscribeConfig::default() })
            .is_err()
    );
    assert!(Hub::new(HubConfig { topics_max: 0, ..HubConfig::default() }).is_err());
    // Beyond topics_max, topics nobody listens to are forgotten; listened ones stay.
    let hub = Hub::new(HubConfig { topics_max: 3, ..HubConfig::default() }).unwrap();
    let _kept = hub.subscribe(&p("kept"), SubscribeConfig::default()).unwrap();
    for i in 0..10 {
        hub.publish(&t(&format!("t{i}")), "x").unwrap();
    }
    assert!(hub.topics() <= 3, "{}", hub.topics());
    assert_eq!(hub.publish(&t("kept"), "y").unwrap().delivered, 1);
    // When every topic has a subscriber, a new one is refused; known ones still work.
    let _b = hub.subscribe(&p("b"), SubscribeConfig::default()).unwrap();
    let _c = hub.subscribe(&p("c"), SubscribeConfig::default()).unwrap();
    assert_eq!(hub.publish(&t("d"), "z"), Err(HubError::TooManyTopics { max: 3 }));
    assert!(hub.subscribe(&p("e"), SubscribeConfig::default()).is_err());
    assert_eq!(hub.publish(&t("b"), "w").unwrap().delivered, 1);
}

proptest! {
    /// Against a model: each subscriber receives exactly the matching messages, in
    /// order, when its buffer never fills.
    #[test]
    fn delivery_matches_a_model(
        publishes in prop::collection::vec((0usize..4, 0usize..3), 0..200),
    ) {
        let topics = ["a.b", "a.c", "a.b.c", "d"];
        let patterns = ["a.*", "a.>", "d"];
        let hub = hub(0);
        let mut subs: Vec<_> = patterns.iter().map(|q| hub.subscribe(&p(q), SubscribeConfig { capacity: 1_000, policy: SlowConsumer::Disconnect }).unwrap()).collect();
        for (i, (topic, _)) in publishes.iter().enumerate() {
            hub.publish(&t(topics[*topic]), format!("{i}")).unwrap();
        }
        for (s, pattern) in patterns.iter().enumerate() {
            let want: Vec<String> = publishes.iter().enumerate().filter(|(_, (topic, _))| p(pattern).matches(&t(topics[*topic]))).map(|(i, _)| i.to_string()).collect();
            prop_assert_eq!(payloads(&drain(&mut subs[s])), want);
        }
    }
}
