//! Runners over the NATS JetStream partitioned log: aborted runners restart from their
//! checkpoints and the sink ends equal to the exact counts; bad settings are typed
//! errors.
#![cfg(feature = "nats")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use girder_core::services::{Service, require};
use girder_core::{Clock, SystemClock};
use girder_stream::jetstream::{JetStreamLog, JetStreamLogConfig};
use girder_stream::memory::MemoryCommitter;
use girder_stream::runner::{Committer, PartitionRunner, RunnerConfig};
use girder_stream::{Count, OperatorConfig, Source, SourceError, Window, WindowSpec};

const SIZE: i64 = 1_000;

fn name(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_runners_over_jetstream_count_each_event_once() {
    let Some(url) = require(Service::Nats, "aborted_runners_over_jetstream_count_each_event_once")
    else {
        return;
    };
    let log = Arc::new(
        JetStreamLog::connect(&url, JetStreamLogConfig::new(name("abort"), 3)).await.unwrap(),
    );
    let committer = Arc::new(MemoryCommitter::new());
    let runner = Arc::new(PartitionRunner {
        source: Arc::clone(&log),
        committer: Arc::clone(&committer),
        aggregate: Count,
        operator: OperatorConfig {
            out_of_orderness_ms: 0,
            ..OperatorConfig::new(WindowSpec::Tumbling { size_ms: SIZE })
        },
        config: RunnerConfig {
            batch_max: 32,
            poll_wait: Duration::from_millis(20),
            checkpoint_every: Duration::from_millis(5),
            checkpoint_records: 40,
            idle_after: None,
        },
        decode: Arc::new(|b: &[u8]| {
            let b: [u8; 16] = b.try_into().map_err(|_| "16 bytes".to_string())?;
            let (k, t) = b.split_at(8);
            Ok((
                u64::from_le_bytes(k.try_into().unwrap()),
                i64::from_le_bytes(t.try_into().unwrap()),
                1,
            ))
        }),
        refused: Arc::new(|r| panic!("refused {r:?}")),
        clock: Arc::new(SystemClock) as Arc<dyn Clock>,
    });
    let mut exact: BTreeMap<(Window, u64), u64> = BTreeMap::new();
    let mut t = 0i64;
    let mut ends = [0u64; 3];
    for round in 0..4 {
        for i in 0..300u64 {
            let k = (i * 7 + round) % 11;
            t += 3;
            let start = t - t.rem_euclid(SIZE);
            *exact.entry((Window { start, end: start + SIZE }, k)).or_insert(0) += 1;
            let mut rec = k.to_le_bytes().to_vec();
            rec.extend_from_slice(&t.to_le_bytes());
            let (p, offset) = log.append(&k.to_le_bytes(), rec).await.unwrap();
            ends[p as usize] = offset + 1;
        }
        for p in 0..3 {
            let r = Arc::clone(&runner);
            let task = tokio::spawn(async move { r.run(p, 0, std::future::pending()).await });
            tokio::time::sleep(Duration::from_millis(40)).await;
            task.abort();
            let _ = task.await;
        }
    }
    // A last event far ahead in every partition closes every window; then each
    // partition runs to its end and stops cleanly.
    for p in 0..3u32 {
        let k = (0u64..).find(|k| log.partition_of(&k.to_le_bytes()) == p).unwrap();
        let mut rec = k.to_le_bytes().to_vec();
        rec.extend_from_slice(&(t + 10 * SIZE).to_le_bytes());
        ends[p as usize] = log.append_to(p, rec).await.unwrap() + 1;
    }
    for p in 0..3u32 {
        let end = ends[p as usize];
        let c = Arc::clone(&committer);
        let stop = async move {
            while c.load(p).await.unwrap().is_none_or(|cp| cp.offset < end) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), runner.run(p, 0, stop))
            .await
            .expect("caught up")
            .unwrap();
    }
    assert_eq!(committer.results(), exact);
    drop(runner);
    let log = Arc::try_unwrap(log).expect("one owner");
    log.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_settings_and_partitions_are_checked() {
    let Some(url) = require(Service::Nats, "jetstream_settings_and_partitions_are_checked") else {
        return;
    };
    for bad in [
        JetStreamLogConfig::new("", 1),
        JetStreamLogConfig::new("has.dot", 1),
        JetStreamLogConfig::new("ok", 0),
        JetStreamLogConfig::new("ok", 5_000),
        JetStreamLogConfig { record_bytes_max: 0, ..JetStreamLogConfig::new("ok", 1) },
    ] {
        assert!(matches!(JetStreamLog::connect(&url, bad).await, Err(SourceError::Config(_))));
    }
    let n = name("checked");
    let log =
        Arc::new(JetStreamLog::connect(&url, JetStreamLogConfig::new(n.clone(), 2)).await.unwrap());
    assert!(matches!(
        JetStreamLog::connect(&url, JetStreamLogConfig::new(n.clone(), 3)).await,
        Err(SourceError::Config(_))
    ));
    assert!(matches!(
        log.append_to(2, vec![1]).await,
        Err(SourceError::NoPartition { partition: 2, count: 2 })
    ));
    assert!(matches!(log.append_to(0, vec![0; 2 << 20]).await, Err(SourceError::TooLarge { .. })));
    assert!(matches!(
        log.read(9, 1, 1, Duration::ZERO).await,
        Err(SourceError::NoPartition { .. })
    ));
    let a = log.append_to(0, b"a".to_vec()).await.unwrap();
    let b = log.append_to(1, b"b".to_vec()).await.unwrap();
    let c = log.append_to(0, b"c".to_vec()).await.unwrap();
    let got = log.read(0, 1, 10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(
        got.iter().map(|r| (r.offset, r.payload.clone())).collect::<Vec<_>>(),
        [(a, b"a".to_vec()), (c, b"c".to_vec())]
    );
    let got = log.read(1, 1, 10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [b]);
    // Reading on from where a read ended waits and returns nothing new.
    assert!(log.read(0, c + 1, 10, Duration::from_millis(50)).await.unwrap().is_empty());
    let log = Arc::try_unwrap(log).expect("one owner");
    log.delete().await.unwrap();
}
