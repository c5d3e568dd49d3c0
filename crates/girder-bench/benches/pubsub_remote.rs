//! girder-realtime's brokers between two instances' hubs against the raw clients they
//! are built on, measured in the same run: how much the hub, the envelope, the echo
//! skipping and the probes cost on the way from a publisher on instance A to a
//! subscriber on instance B.
//!
//! Each measured iteration publishes 10,000 messages of 64 bytes on one topic while
//! the subscriber drains them concurrently, and ends when the last one arrived; the
//! rate is messages per second end to end. Contenders:
//! - Redis: `RedisBroker` A → B (a hub subscriber on B); the same bytes as raw
//!   `PUBLISH`es in pipelines of 1,024 (the broker's batch) to a raw `SUBSCRIBE`
//!   connection, both through the `redis` crate; the same with a second connection
//!   holding the prefix's pattern (the broker's traffic: a publishing broker gets its
//!   own messages back); and raw `PUBLISH`es one at a time, each awaited (1,000 per
//!   iteration), the naive loop.
//! - NATS: `NatsBroker` A → B; raw `async-nats` publishes to a raw subscriber; the
//!   same with the publishing connection subscribed to the prefix's wildcard (the
//!   broker's traffic).
//!
//! Each broker receives its own messages back as well (one pattern for all topics)
//! and skips them: that echo is part of what is measured. The plain raw cases have
//! none; "plus a pattern subscriber" and "publisher subscribed too" carry the same
//! echo, so the broker's own cost is its ratio to those. Needs Redis and NATS
//! (`GIRDER_REDIS_URL`, `GIRDER_NATS_URL`, or the local defaults); a group whose
//! service is unreachable is skipped.
//!
//! Run: `cargo bench -p girder-bench --bench pubsub_remote`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_main};
use futures_util::StreamExt;
use girder_core::services::Service;
use girder_realtime::nats::NatsBroker;
use girder_realtime::redis_broker::RedisBroker;
use girder_realtime::{Event, Hub, HubConfig, Pattern, SubscribeConfig, Subscription, Topic};

/// Messages per measured iteration.
const BATCH: u64 = 10_000;
/// Messages per iteration when each publish waits for Redis' answer.
const ONE_AT_A_TIME: u64 = 1_000;
/// The raw pipelines' length, the broker's default `batch_max`.
const PIPELINE: u64 = 1_024;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt")
}

fn payload() -> Bytes {
    Bytes::from(vec![7u8; 64])
}

fn prefix(system: &str) -> String {
    format!("girder-bench.{system}{}", std::process::id())
}

fn hub() -> Hub {
    Hub::new(HubConfig::default()).expect("hub")
}

/// A subscriber on `hub` for `topic` that holds a whole batch.
fn subscriber(hub: &Hub, topic: &str) -> Subscription {
    let config = SubscribeConfig { capacity: 2 * BATCH as usize, ..SubscribeConfig::default() };
    hub.subscribe(&Pattern::new(topic).expect("pattern"), config).expect("subscribe")
}

/// Receives `n` messages, none missed.
async fn receive(sub: &mut Subscription, n: u64) {
    for _ in 0..n {
        match sub.recv().await.expect("open") {
            Event::Message(_) => {}
            Event::Gap { missed } => panic!("{missed} messages missed"),
        }
    }
}

/// Runs one round, failing loudly rather than hanging if a message is lost (pub/sub
/// is at most once: a raw client that reconnects does not say what it missed).
async fn round<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .unwrap_or_else(|_| panic!("{what}: a round did not complete within 30 s"))
}

/// Receives `n` raw Redis messages.
async fn receive_raw(inbound: &mut redis::aio::PubSubStream, n: u64) {
    for _ in 0..n {
        inbound.next().await.expect("a message");
    }
}

fn redis_remote(c: &mut Criterion) {
    if !Service::Redis.reachable() {
        eprintln!("Redis unreachable at {}: pubsub_remote_redis skipped", Service::Redis.url());
        return;
    }
    let url = Service::Redis.url();
    let rt = runtime();
    let mut group = c.benchmark_group("pubsub_remote_redis");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH));
    let topic = Topic::new("bench.remote").expect("topic");

    let prefix = prefix("redis");
    let (a, b) = rt.block_on(async {
        let a = RedisBroker::connect(&url, hub(), &prefix).await.expect("broker A");
        let b = RedisBroker::connect(&url, hub(), &prefix).await.expect("broker B");
        (a, b)
    });
    let mut on_b = subscriber(b.hub(), "bench.remote");
    group.bench_function("girder RedisBroker", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let publish = async {
                        for _ in 0..BATCH {
                            a.publish(&topic, payload()).await.expect("publish");
                        }
                    };
                    round("broker", async { tokio::join!(publish, receive(&mut on_b, BATCH)) })
                        .await;
                }
                started.elapsed()
            })
        });
    });
    let stats = b.stats();
    assert_eq!((stats.gaps, stats.dropped), (0, 0), "{stats:?}");
    drop((a, b, on_b));

    let channel = format!("{prefix}.raw");
    let client = redis::Client::open(url.as_str()).expect("client");
    let (mut conn, mut inbound) = rt.block_on(async {
        let conn = client.get_multiplexed_async_connection().await.expect("connection");
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
        pubsub.subscribe(&channel).await.expect("subscribe");
        (conn, pubsub.into_on_message())
    });
    group.bench_function("raw PUBLISH, pipelined", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let publish = async {
                        let mut left = BATCH;
                        while left > 0 {
                            let mut pipe = redis::pipe();
                            for _ in 0..left.min(PIPELINE) {
                                pipe.cmd("PUBLISH").arg(&channel).arg(&payload()[..]).ignore();
                            }
                            left -= left.min(PIPELINE);
                            pipe.query_async::<()>(&mut conn).await.expect("pipeline");
                        }
                    };
                    round("raw", async { tokio::join!(publish, receive_raw(&mut inbound, BATCH)) })
                        .await;
                }
                started.elapsed()
            })
        });
    });
    // The broker's traffic: a second connection holding the prefix's pattern gets
    // every message too, as the publishing broker's own subscription does.
    let mut echo = rt.block_on(async {
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
        pubsub.psubscribe(format!("{prefix}.*")).await.expect("psubscribe");
        pubsub.into_on_message()
    });
    group.bench_function("raw PUBLISH, pipelined, plus a pattern subscriber", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let publish = async {
                        let mut left = BATCH;
                        while left > 0 {
                            let mut pipe = redis::pipe();
                            for _ in 0..left.min(PIPELINE) {
                                pipe.cmd("PUBLISH").arg(&channel).arg(&payload()[..]).ignore();
                            }
                            left -= left.min(PIPELINE);
                            pipe.query_async::<()>(&mut conn).await.expect("pipeline");
                        }
                    };
                    let received = async {
                        tokio::join!(
                            receive_raw(&mut inbound, BATCH),
                            receive_raw(&mut echo, BATCH)
                        )
                    };
                    round("raw", async { tokio::join!(publish, received) }).await;
                }
                started.elapsed()
            })
        });
    });
    drop(echo);
    group.throughput(Throughput::Elements(ONE_AT_A_TIME));
    group.bench_function("raw PUBLISH, one at a time", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let publish = async {
                        for _ in 0..ONE_AT_A_TIME {
                            redis::cmd("PUBLISH")
                                .arg(&channel)
                                .arg(&payload()[..])
                                .query_async::<i64>(&mut conn)
                                .await
                                .expect("publish");
                        }
                    };
                    round("raw", async {
                        tokio::join!(publish, receive_raw(&mut inbound, ONE_AT_A_TIME))
                    })
                    .await;
                }
                started.elapsed()
            })
        });
    });
    group.finish();
}

fn nats_remote(c: &mut Criterion) {
    if !Service::Nats.reachable() {
        eprintln!("NATS unreachable at {}: pubsub_remote_nats skipped", Service::Nats.url());
        return;
    }
    let url = Service::Nats.url();
    let rt = runtime();
    let mut group = c.benchmark_group("pubsub_remote_nats");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH));
    let topic = Topic::new("bench.remote").expect("topic");

    let prefix = prefix("nats");
    let (a, b) = rt.block_on(async {
        let a = NatsBroker::connect(&url, hub(), &prefix).await.expect("broker A");
        let b = NatsBroker::connect(&url, hub(), &prefix).await.expect("broker B");
        (a, b)
    });
    let mut on_b = subscriber(b.hub(), "bench.remote");
    group.bench_function("girder NatsBroker", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let publish = async {
                        for _ in 0..BATCH {
                            a.publish(&topic, payload()).await.expect("publish");
                        }
                    };
                    round("broker", async { tokio::join!(publish, receive(&mut on_b, BATCH)) })
                        .await;
                }
                started.elapsed()
            })
        });
    });
    assert_eq!(b.stats().dropped, 0, "{:?}", b.stats());
    drop((a, b, on_b));

    let subject = format!("{prefix}.raw");
    let (publisher, subscriber, mut inbound) = rt.block_on(async {
        let publisher = async_nats::connect(&url).await.expect("publisher");
        let subscriber = async_nats::connect(&url).await.expect("subscriber");
        let inbound = subscriber.subscribe(subject.clone()).await.expect("subscribe");
        subscriber.flush().await.expect("flush");
        (publisher, subscriber, inbound)
    });
    group.bench_function("raw async-nats", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let publish = async {
                        for _ in 0..BATCH {
                            publisher.publish(subject.clone(), payload()).await.expect("publish");
                        }
                    };
                    let received = async {
                        for _ in 0..BATCH {
                            inbound.next().await.expect("a message");
                        }
                    };
                    round("raw", async { tokio::join!(publish, received) }).await;
                }
                started.elapsed()
            })
        });
    });
    // The broker's traffic: the publishing connection holds the prefix's wildcard,
    // so it gets its own messages back, as a publishing broker does.
    let mut echo = rt.block_on(async {
        let echo = publisher.subscribe(format!("{prefix}.>")).await.expect("subscribe");
        publisher.flush().await.expect("flush");
        echo
    });
    group.bench_function("raw async-nats, publisher subscribed too", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let publish = async {
                        for _ in 0..BATCH {
                            publisher.publish(subject.clone(), payload()).await.expect("publish");
                        }
                    };
                    let received = async {
                        for _ in 0..BATCH {
                            inbound.next().await.expect("a message");
                        }
                    };
                    let echoed = async {
                        for _ in 0..BATCH {
                            echo.next().await.expect("an echo");
                        }
                    };
                    round("raw", async { tokio::join!(publish, received, echoed) }).await;
                }
                started.elapsed()
            })
        });
    });
    group.finish();
    drop((inbound, echo, subscriber));
}

mod group {
    // criterion_group! defines an undocumented `pub fn`.
    #![allow(missing_docs)]
    use super::{nats_remote, redis_remote};
    criterion::criterion_group!(benches, redis_remote, nats_remote);
}
criterion_main!(group::benches);
