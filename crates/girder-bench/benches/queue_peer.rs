//! girder-log's durable queue, embedded on its WAL, against the same queue on NATS
//! JetStream, through the one `MessageQueue` trait at the same concurrency, in one run.
//!
//! Each of `tasks` workers loops: enqueue a 128-byte message (returns once durable),
//! dequeue one message, acknowledge it (returns once recorded). The rate is completed
//! enqueue+ack pairs per second over 2 s. Contenders:
//! - embedded, `fdatasync` before every acknowledgement (the WAL's default);
//! - embedded, synced every 120 s: JetStream's own default (a file-store write is
//!   acknowledged before any `fsync`; the server syncs every two minutes), so this
//!   column compares the two at the same durability;
//! - JetStream on the local server (`GIRDER_NATS_URL` or 127.0.0.1:4222), a stream of
//!   its own per measurement, deleted afterwards.
//!
//! Run: `cargo bench -p girder-bench --bench queue_peer` (the WAL's directory is on
//! the disk of `GIRDER_BENCH_DIR`, default `target/`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use girder_core::services::Service;
use girder_core::{Clock, SystemClock};
use girder_log::queue::jetstream::{JetStreamConfig, JetStreamQueue};
use girder_log::queue::{MessageQueue, Queue, QueueConfig};
use girder_log::wal::{SyncPolicy, WalConfig};

const SPAN: Duration = Duration::from_secs(2);
const MESSAGE: usize = 128;

fn scratch() -> tempfile::TempDir {
    let base = std::env::var("GIRDER_BENCH_DIR").unwrap_or_else(|_| "target".to_owned());
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::tempdir_in(base).expect("scratch dir")
}

/// Enqueue+ack pairs per second from `tasks` workers on `q`.
async fn pairs<Q: MessageQueue + Clone + 'static>(q: &Q, tasks: usize) -> f64 {
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (q, stop, done) = (q.clone(), Arc::clone(&stop), Arc::clone(&done));
        workers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                q.enqueue(vec![7u8; MESSAGE]).await.expect("enqueue");
                for d in q.dequeue("default", 1, None).await.expect("dequeue") {
                    q.ack("default", d.receipt).await.expect("ack");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(SPAN).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(worker) = workers.join_next().await {
        worker.expect("worker");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt")
}

fn embedded(tasks: usize, sync: SyncPolicy) -> f64 {
    let dir = scratch();
    runtime().block_on(async {
        let config = QueueConfig {
            wal: WalConfig { sync, ..WalConfig::new(dir.path()) },
            ..QueueConfig::new(dir.path())
        };
        let q = Queue::open(config, Arc::new(SystemClock)).expect("open");
        let rate = pairs(&q, tasks).await;
        q.close().await.expect("close");
        rate
    })
}

fn jetstream(url: &str, tasks: usize) -> f64 {
    runtime().block_on(async {
        let name = format!("bench-{:x}-{:x}", std::process::id(), SystemClock.now_ms());
        let q = JetStreamQueue::connect(url, JetStreamConfig::new(name), Arc::new(SystemClock))
            .await
            .expect("open the JetStream queue");
        let rate = pairs(&q, tasks).await;
        q.delete().await.expect("delete the bench's streams");
        rate
    })
}

fn main() {
    // `cargo bench` passes `--bench`; a filter would be ignored.
    let url = Service::Nats.reachable().then(|| Service::Nats.url());
    if url.is_none() {
        eprintln!("NATS unreachable at {}: JetStream column skipped", Service::Nats.url());
    }
    println!(
        "| tasks | embedded, fdatasync every batch | embedded, sync every 120 s | JetStream | embedded ÷ JetStream (same durability) | embedded synced ÷ JetStream |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for round in 0..2 {
        for tasks in [1usize, 16, 64] {
            let synced = embedded(tasks, SyncPolicy::EveryBatch);
            let lazy = embedded(tasks, SyncPolicy::Interval(Duration::from_secs(120)));
            let js = url.as_deref().map(|url| jetstream(url, tasks));
            let cell = |r: Option<f64>, f: &dyn Fn(f64) -> String| r.map_or("–".to_owned(), f);
            println!(
                "| {tasks} (round {}) | {synced:.0}/s | {lazy:.0}/s | {} | {} | {} |",
                round + 1,
                cell(js, &|j| format!("{j:.0}/s")),
                cell(js, &|j| format!("{:.2}×", lazy / j)),
                cell(js, &|j| format!("{:.2}×", synced / j)),
            );
        }
    }
}
