//! Two hubs joined through NATS: a subscriber on one receives what the other
//! publishes, once, in order.
#![cfg(feature = "nats")]

use std::time::Duration;

use girder_core::services::{Service, require};
use girder_realtime::nats::{BrokerError, NatsBroker};
use girder_realtime::{Event, Hub, HubConfig, Pattern, SubscribeConfig, Topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_one_instance_reaches_subscribers_on_both_once_in_order() {
    let Some(url) = require(
        Service::Nats,
        "a_publish_on_one_instance_reaches_subscribers_on_both_once_in_order",
    ) else {
        return;
    };
    let prefix = format!("girder-test.rt{}", std::process::id());
    let a =
        NatsBroker::connect(&url, Hub::new(HubConfig::default()).unwrap(), &prefix).await.unwrap();
    let b =
        NatsBroker::connect(&url, Hub::new(HubConfig::default()).unwrap(), &prefix).await.unwrap();
    let pattern = Pattern::new("chat.>").unwrap();
    let mut on_a = a.hub().subscribe(&pattern, SubscribeConfig::default()).unwrap();
    let mut on_b = b.hub().subscribe(&pattern, SubscribeConfig::default()).unwrap();
    let topic = Topic::new("chat.room-1").unwrap();
    for i in 0..100 {
        let broker = if i < 50 { &a } else { &b };
        broker.publish(&topic, format!("{i}")).await.unwrap();
        if i == 49 {
            a.flush().await.unwrap();
            // B's own later messages must come after A's in B's hub: wait for A's.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while b.stats().received < 50 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "A's messages never reached B: {:?} {:?}",
                    a.stats(),
                    b.stats()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    b.flush().await.unwrap();
    for sub in [&mut on_a, &mut on_b] {
        let mut got = Vec::new();
        while got.len() < 100 {
            let event = tokio::time::timeout(Duration::from_secs(5), sub.recv())
                .await
                .expect("in time")
                .unwrap();
            let Event::Message(m) = event else { panic!("no gap expected") };
            got.push(String::from_utf8(m.payload.to_vec()).unwrap().parse::<u32>().unwrap());
        }
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(sub.try_recv(), Ok(None), "nothing twice (no echo of one's own messages)");
    }
    assert_eq!((a.stats().sent, a.stats().received), (50, 50));
    assert!(matches!(
        NatsBroker::connect(&url, Hub::new(HubConfig::default()).unwrap(), "bad prefix").await,
        Err(BrokerError::Prefix(_))
    ));
    assert!(
        NatsBroker::connect("nats://127.0.0.1:1", Hub::new(HubConfig::default()).unwrap(), "ok")
            .await
            .is_err()
    );
}
