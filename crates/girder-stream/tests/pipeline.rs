//! Runners over the embedded partitioned log: crashes mid-stream and restarts leave
//! the sink equal to the exact counts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use girder_core::{Clock, SystemClock};
use girder_stream::log::{LogConfig, PartitionedLog};
use girder_stream::memory::MemoryCommitter;
use girder_stream::runner::{Decoder, PartitionRunner, RunnerConfig};
use girder_stream::{Count, OperatorConfig, Source, SourceError, Window, WindowSpec};

const MINUTE: i64 = 60_000;

fn encode(key: u64, t: i64) -> Vec<u8> {
    format!("{key} {t}").into_bytes()
}

fn decoder() -> Decoder<u64, u64> {
    Arc::new(|bytes: &[u8]| {
        let s = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        let (k, t) = s.split_once(' ').ok_or("no space")?;
        Ok((k.parse().map_err(|_| "key")?, t.parse().map_err(|_| "time")?, 1))
    })
}

type Runner = PartitionRunner<Arc<PartitionedLog>, MemoryCommitter<u64, u64>, Count, u64>;

fn runner(
    log: &Arc<PartitionedLog>,
    committer: &Arc<MemoryCommitter<u64, u64>>,
    refused: Arc<AtomicU64>,
) -> Arc<Runner> {
    Arc::new(PartitionRunner {
        source: Arc::clone(log),
        committer: Arc::clone(committer),
        aggregate: Count,
        operator: OperatorConfig {
            out_of_orderness_ms: 10_000,
            ..OperatorConfig::new(WindowSpec::Tumbling { size_ms: MINUTE })
        },
        config: RunnerConfig {
            batch_max: 64,
            poll_wait: Duration::from_millis(20),
            checkpoint_every: Duration::from_millis(5),
            checkpoint_records: 100,
            idle_after: None,
        },
        decode: decoder(),
        refused: Arc::new(move |_| {
            refused.fetch_add(1, Ordering::Relaxed);
        }),
        clock: Arc::new(SystemClock) as Arc<dyn Clock>,
    })
}

/// Event times move forward with a few seconds of disorder.
fn events(n: usize) -> Vec<(u64, i64)> {
    (0..n)
        .map(|i| {
            let key = (i as u64 * 7_919) % 23;
            let t = i as i64 * 97 - ((i as i64 * 31) % 5_000);
            (key, t)
        })
        .collect()
}

fn exact(events: &[(u64, i64)]) -> BTreeMap<(Window, u64), u64> {
    let mut out = BTreeMap::new();
    for &(k, t) in events {
        let start = t - t.rem_euclid(MINUTE);
        *out.entry((Window { start, end: start + MINUTE }, k)).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_runners_restart_from_their_checkpoints_and_count_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(PartitionedLog::open(&LogConfig::new(dir.path(), 4)).unwrap());
    let committer = Arc::new(MemoryCommitter::new());
    let refused = Arc::new(AtomicU64::new(0));
    let all = events(20_000);
    // The last event is far ahead, so every window before it closes.
    let mut with_end = all.clone();
    with_end.push((0, 20_000 * 97 + 2 * MINUTE));
    for chunk in with_end.chunks(2_000) {
        for &(k, t) in chunk {
            log.append(&k.to_le_bytes(), encode(k, t)).await.unwrap();
        }
        // Run every partition briefly and abort it mid-stream: no final flush.
        for p in 0..4 {
            let r = runner(&log, &committer, Arc::clone(&refused));
            let task = tokio::spawn(async move { r.run(p, 0, std::future::pending()).await });
            tokio::time::sleep(Duration::from_millis(15)).await;
            task.abort();
            let _ = task.await;
        }
    }
    // Then run each to the end and stop it cleanly.
    for p in 0..4 {
        let r = runner(&log, &committer, Arc::clone(&refused));
        let end = log.end_offset(p).unwrap();
        let stop = {
            let log = Arc::clone(&log);
            let committer = Arc::clone(&committer);
            async move {
                // Stop once the committed checkpoint is at the end.
                loop {
                    use girder_stream::runner::Committer;
                    if committer.load(p).await.unwrap().is_some_and(|c| c.offset >= end) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                drop(log);
            }
        };
        let stats = tokio::time::timeout(Duration::from_secs(30), r.run(p, 0, stop))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stats.offset, end);
    }
    assert_eq!(refused.load(Ordering::Relaxed), 0, "nothing late within the bound");
    // Windows close per partition: those the partitions' watermarks have passed.
    let mut watermarks = [i64::MIN; 4];
    for &(k, t) in &with_end {
        let p = log.partition_of(&k.to_le_bytes()) as usize;
        watermarks[p] = watermarks[p].max(t - 10_000);
    }
    let mut want = exact(&all);
    want.retain(|(w, k), _| w.end <= watermarks[log.partition_of(&k.to_le_bytes()) as usize]);
    let got = committer.results();
    let diff: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(k) != Some(v))
        .map(|(k, v)| (k, v, got.get(k)))
        .take(10)
        .collect();
    assert!(diff.is_empty(), "want vs got: {diff:?}");
    assert_eq!(got.len(), want.len());
    assert!(committer.commits() > 8, "{} commits", committer.commits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_runner_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(PartitionedLog::open(&LogConfig::new(dir.path(), 1)).unwrap());
    let committer = Arc::new(MemoryCommitter::new());
    log.append(b"k", encode(1, 0)).await.unwrap();
    let r = runner(&log, &committer, Arc::new(AtomicU64::new(0)));
    let epoch = committer.fence(0);
    assert_eq!(epoch, 1);
    let newer = committer.fence(0);
    let err = r.run(0, epoch, tokio::time::sleep(Duration::from_millis(50))).await.unwrap_err();
    assert!(err.to_string().contains("epoch"), "{err}");
    r.run(0, newer, tokio::time::sleep(Duration::from_millis(50))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_go_to_the_side_output_and_bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(PartitionedLog::open(&LogConfig::new(dir.path(), 1)).unwrap());
    let committer = Arc::new(MemoryCommitter::new());
    log.append(b"k", b"not an event".to_vec()).await.unwrap();
    log.append(b"k", vec![0xff, 0xfe]).await.unwrap();
    log.append(b"k", encode(3, 1_000)).await.unwrap();
    let refused = Arc::new(AtomicU64::new(0));
    let r = runner(&log, &committer, Arc::clone(&refused));
    let stats = r.run(0, 0, tokio::time::sleep(Duration::from_millis(100))).await.unwrap();
    assert_eq!((stats.records, stats.malformed, stats.offset), (3, 2, 4));
    assert_eq!(refused.load(Ordering::Relaxed), 2);

    assert!(matches!(
        log.read(5, 1, 10, Duration::ZERO).await,
        Err(SourceError::NoPartition { partition: 5, count: 1 })
    ));
    assert!(matches!(log.append_to(0, vec![0; 2 << 20]).await, Err(SourceError::TooLarge { .. })));
    drop(r);
    let Ok(log) = Arc::try_unwrap(log) else { panic!("one owner") };
    log.close().await.unwrap();
    // Reopened with another partition count: refused, nothing changed.
    assert!(matches!(
        PartitionedLog::open(&LogConfig::new(dir.path(), 3)),
        Err(SourceError::Config(_))
    ));
    assert!(matches!(
        PartitionedLog::open(&LogConfig::new(dir.path(), 0)),
        Err(SourceError::Config(_))
    ));
    let log = Arc::new(PartitionedLog::open(&LogConfig::new(dir.path(), 1)).unwrap());
    assert_eq!(log.end_offset(0).unwrap(), 4);
}
