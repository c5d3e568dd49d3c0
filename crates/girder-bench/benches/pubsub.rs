//! girder-realtime's in-process hub against `tokio::sync::broadcast`, the standard
//! in-process fan-out channel, measured in the same run.
//!
//! - One subscriber: publish 1,000 messages of 64 bytes, then drain them (a
//!   subscriber that keeps up, buffer 1,024), per message.
//! - Fan-out: one publish reaching 1,000 subscribers, then each drains it, per
//!   delivery.
//!
//! The hub does more per message than the channel: it keeps the topic's history for
//! resume, matches wildcard subscribers and gives each subscriber its own bounded
//! buffer (a broadcast channel shares one ring and makes slow receivers lag).
//!
//! Run: `cargo bench -p girder-bench --bench pubsub`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_main};
use girder_realtime::{Event, Hub, HubConfig, Pattern, SlowConsumer, SubscribeConfig, Topic};

const BATCH: u64 = 1_000;
const FANOUT: usize = 1_000;

fn one_subscriber(c: &mut Criterion) {
    let mut group = c.benchmark_group("pubsub_one_subscriber");
    group.throughput(Throughput::Elements(BATCH));
    let payload = Bytes::from(vec![7u8; 64]);
    let hub = Hub::new(HubConfig::default()).expect("hub");
    let topic = Topic::new("bench.one").expect("topic");
    let config = SubscribeConfig { capacity: 1_024, policy: SlowConsumer::DropOldest };
    let mut sub = hub.subscribe(&Pattern::new("bench.one").expect("pattern"), config).expect("sub");
    group.bench_function("girder hub", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                hub.publish(&topic, payload.clone()).expect("publish");
            }
            let mut n = 0;
            while let Ok(Some(Event::Message(m))) = sub.try_recv() {
                n += m.payload.len();
            }
            black_box(n)
        });
    });
    let (tx, mut rx) = tokio::sync::broadcast::channel::<Bytes>(1_024);
    group.bench_function("tokio broadcast", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                tx.send(payload.clone()).expect("send");
            }
            let mut n = 0;
            while let Ok(m) = rx.try_recv() {
                n += m.len();
            }
            black_box(n)
        });
    });
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("pubsub_fanout_1000");
    group.throughput(Throughput::Elements(FANOUT as u64));
    let payload = Bytes::from(vec![7u8; 64]);
    let hub = Hub::new(HubConfig::default()).expect("hub");
    let topic = Topic::new("bench.fan").expect("topic");
    let pattern = Pattern::new("bench.fan").expect("pattern");
    let mut subs: Vec<_> = (0..FANOUT)
        .map(|_| hub.subscribe(&pattern, SubscribeConfig::default()).expect("sub"))
        .collect();
    group.bench_function("girder hub", |b| {
        b.iter(|| {
            hub.publish(&topic, payload.clone()).expect("publish");
            for sub in &mut subs {
                black_box(sub.try_recv().expect("open"));
            }
        });
    });
    let (tx, _keep) = tokio::sync::broadcast::channel::<Bytes>(1_024);
    let mut rxs: Vec<_> = (0..FANOUT).map(|_| tx.subscribe()).collect();
    group.bench_function("tokio broadcast", |b| {
        b.iter(|| {
            tx.send(payload.clone()).expect("send");
            for rx in &mut rxs {
                black_box(rx.try_recv().expect("one"));
            }
        });
    });
    group.finish();
}

mod group {
    // criterion_group! defines an undocumented `pub fn`.
    #![allow(missing_docs)]
    use super::{fan_out, one_subscriber};
    criterion::criterion_group!(benches, one_subscriber, fan_out);
}
criterion_main!(group::benches);
