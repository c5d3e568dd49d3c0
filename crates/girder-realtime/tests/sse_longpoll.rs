//! SSE frames and streams, and long polling.

use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use girder_realtime::longpoll::{Poll, poll};
use girder_realtime::sse::{SseConfig, stream, write_comment, write_event};
use girder_realtime::{Hub, HubConfig, Position, SlowConsumer, SubscribeConfig, Topic};

fn t(s: &str) -> Topic {
    Topic::new(s).unwrap()
}

fn text(b: &BytesMut) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[test]
fn frames_follow_the_event_stream_format() {
    let mut out = BytesMut::new();
    write_event(&mut out, Some("7"), Some("comment"), "one\ntwo\r\nthree\rfour");
    assert_eq!(
        text(&out),
        "event: comment\nid: 7\ndata: one\ndata: two\ndata: three\ndata: four\n\n"
    );
    let mut out = BytesMut::new();
    write_event(&mut out, Some("bad\nid"), Some("bad\nname"), "");
    assert_eq!(text(&out), "data: \n\n", "fields that would break the frame are left out");
    let mut out = BytesMut::new();
    write_comment(&mut out, "keep\nalive");
    assert_eq!(text(&out), ": keep alive\n\n");
}

#[tokio::test]
async fn a_stream_says_whether_it_recovered_then_carries_messages_gaps_and_the_end() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let topic = t("video.1.comments");
    let seen = hub.publish(&topic, "first").unwrap().position;
    hub.publish(&topic, "second").unwrap();
    let config = SubscribeConfig { capacity: 2, policy: SlowConsumer::DropOldest };
    let (sub, resume) = hub.resume(&topic, Some(seen), config).unwrap();
    let sse = SseConfig {
        event: Some("comment".into()),
        heartbeat: Duration::from_millis(50),
        retry: None,
    };
    let mut frames = Box::pin(stream(sub, resume, sse));
    let opening = String::from_utf8(frames.next().await.unwrap().to_vec()).unwrap();
    assert!(opening.starts_with("event: resume\ndata: {\"recovered\":true}\n\n"), "{opening}");
    assert!(
        opening.contains("event: comment\nid: ") && opening.contains("data: second\n\n"),
        "{opening}"
    );
    assert!(!opening.contains("data: first"), "nothing twice");
    // Three published into a buffer of two: a gap, then the two kept.
    for body in ["a", "b", "c"] {
        hub.publish(&topic, body).unwrap();
    }
    let gap = String::from_utf8(frames.next().await.unwrap().to_vec()).unwrap();
    assert_eq!(gap, "event: gap\ndata: {\"missed\":1}\n\n");
    let rest = String::from_utf8(frames.next().await.unwrap().to_vec()).unwrap();
    assert!(rest.contains("data: b\n") && rest.contains("data: c\n"), "{rest}");
    // A loss upstream of the hub: a gap of unknown size.
    hub.report_gap();
    let gap = String::from_utf8(frames.next().await.unwrap().to_vec()).unwrap();
    assert_eq!(gap, "event: gap\ndata: {\"missed\":null}\n\n");
    // Idle: a heartbeat comment.
    let idle = String::from_utf8(frames.next().await.unwrap().to_vec()).unwrap();
    assert_eq!(idle, ": heartbeat\n\n");
    hub.close();
    let end = String::from_utf8(frames.next().await.unwrap().to_vec()).unwrap();
    assert_eq!(end, "event: closed\ndata: {\"reason\":\"shutdown\"}\n\n");
    assert!(frames.next().await.is_none());
    // A resume from a position the history lost opens with recovered: false.
    let (sub, resume) = hub
        .resume(&topic, Some(Position { seq: 999, ..seen }), SubscribeConfig::default())
        .unwrap();
    let mut frames = Box::pin(stream(sub, resume, SseConfig::default()));
    let opening = String::from_utf8(frames.next().await.unwrap().to_vec()).unwrap();
    assert!(
        opening.starts_with("retry: 2000\n\n") && opening.contains("{\"recovered\":false}"),
        "{opening}"
    );
}

#[tokio::test]
async fn a_long_poll_answers_at_once_waits_for_a_publish_or_times_out() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let topic = t("scores");
    let p1 = hub.publish(&topic, "1-0").unwrap().position;
    hub.publish(&topic, "2-0").unwrap();
    // Newer messages exist: answered at once.
    let Poll::Messages(got) =
        poll(&hub, &topic, Some(p1), 10, Duration::from_secs(5)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(got.len(), 1);
    let last = got[0].position;
    // Up to date: held until a publish wakes it.
    let publisher = {
        let (hub, topic) = (hub.clone(), topic.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            hub.publish(&topic, "3-0").unwrap();
        })
    };
    let started = std::time::Instant::now();
    let Poll::Messages(got) =
        poll(&hub, &topic, Some(last), 10, Duration::from_secs(5)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(got[0].payload.as_ref(), b"3-0");
    assert!(started.elapsed() < Duration::from_secs(4), "woken by the publish, not the timeout");
    publisher.await.unwrap();
    // Nothing published: an empty answer after the timeout.
    let last = hub.last_position(&topic);
    assert_eq!(
        poll(&hub, &topic, last, 10, Duration::from_millis(30)).await.unwrap(),
        Poll::Messages(Vec::new())
    );
    // A lost position: reset. Bad max: typed error.
    let lost = Position { seq: 0, ..p1 };
    assert!(matches!(
        poll(&hub, &topic, Some(Position { stream: 77, ..lost }), 10, Duration::ZERO)
            .await
            .unwrap(),
        Poll::Reset { .. }
    ));
    assert!(poll(&hub, &topic, None, 0, Duration::ZERO).await.is_err());
}
