//! The write-ahead log: order and durability across segments and restarts, group
//! commit under concurrency, recovery from every kind of tail damage, checkpoints,
//! typed errors, and a crash matrix of SIGKILLed appenders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use girder_log::wal::{DamageKind, Lsn, SyncPolicy, Wal, WalConfig, WalError};

/// A deterministic payload of `len` bytes for record `n`.
fn payload(n: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (n.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8).collect()
}

fn small(dir: &Path) -> WalConfig {
    WalConfig { segment_bytes: 4096, ..WalConfig::new(dir) }
}

async fn read_all(wal: &Wal, from: Lsn) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
    let mut reader = wal.reader(from)?;
    let mut out = Vec::new();
    while let Some(record) = reader.next_record()? {
        out.push((record.lsn.0, record.payload));
    }
    Ok(out)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn records_come_back_in_order_across_segments_and_restarts() {
    let dir = tempfile::tempdir().expect("dir");
    let (wal, recovery) = Wal::open(small(dir.path())).expect("open");
    assert_eq!((recovery.last_lsn, recovery.damage), (None, None));
    for n in 1..=500u64 {
        let lsn = wal.append(payload(n, (n % 300) as usize)).await.expect("append");
        assert_eq!(lsn, Lsn(n));
    }
    assert!(segments(dir.path()).len() > 10, "4 KiB segments roll");
    let all = read_all(&wal, Lsn::FIRST).await.expect("read");
    assert_eq!(all.len(), 500);
    for (lsn, bytes) in &all {
        assert_eq!(bytes, &payload(*lsn, (*lsn % 300) as usize), "record {lsn}");
    }
    let tail = read_all(&wal, Lsn(250)).await.expect("read from the middle");
    assert_eq!(tail.first().map(|r| r.0), Some(250));
    assert_eq!(tail.len(), 251);
    wal.close().await.expect("close");

    let (wal, recovery) = Wal::open(small(dir.path())).expect("reopen");
    assert_eq!((recovery.last_lsn, recovery.damage), (Some(Lsn(500)), None));
    assert_eq!(wal.append(b"after".to_vec()).await.expect("append"), Lsn(501));
    let all = read_all(&wal, Lsn(499)).await.expect("read");
    assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), vec![499, 500, 501]);
    assert_eq!(all[2].1, b"after");
    // A reader that has caught up sees records appended later.
    let mut reader = wal.reader(Lsn(502)).expect("reader at the end");
    assert!(reader.next_record().expect("caught up").is_none());
    wal.append(b"later".to_vec()).await.expect("append");
    assert_eq!(reader.next_record().expect("next").map(|r| r.payload), Some(b"later".to_vec()));
    wal.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_distinct_lsns_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let (wal, _) = Wal::open(WalConfig { segment_bytes: 64 << 10, ..WalConfig::new(dir.path()) })
        .expect("open");
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..64u64 {
        let wal = wal.clone();
        tasks.spawn(async move {
            let mut lsns = Vec::new();
            for i in 0..40u64 {
                let mut bytes = payload(task * 1000 + i, 128);
                bytes[0..8].copy_from_slice(&(task * 1000 + i).to_le_bytes());
                lsns.push(wal.append(bytes).await.expect("append"));
            }
            lsns
        });
    }
    let mut seen = Vec::new();
    while let Some(lsns) = tasks.join_next().await {
        let lsns = lsns.expect("task");
        assert!(lsns.windows(2).all(|w| w[0] < w[1]), "one task's appends stay in order");
        seen.extend(lsns);
    }
    seen.sort();
    assert_eq!(seen, (1..=2560).map(Lsn).collect::<Vec<_>>());
    let all = read_all(&wal, Lsn::FIRST).await.expect("read");
    assert_eq!(all.len(), 2560);
    let mut ids: Vec<u64> =
        all.iter().map(|(_, b)| u64::from_le_bytes(b[0..8].try_into().expect("8 bytes"))).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2560, "every record once");
    wal.close().await.expect("close");
}

/// Writes records 1..=n of `len(k)` bytes and closes; returns the segment path.
async fn log_of(dir: &Path, n: u64, len: impl Fn(u64) -> usize) -> PathBuf {
    let (wal, _) = Wal::open(WalConfig::new(dir)).expect("open");
    for k in 1..=n {
        wal.append(payload(k, len(k))).await.expect("append");
    }
    wal.close().await.expect("close");
    let files = segments(dir);
    assert_eq!(files.len(), 1);
    files[0].clone()
}

/// Opens a copy of `original` after `damage` changed its segment; checks recovery kept
/// exactly records 1..=kept with their bytes; returns the damage kind reported.
async fn recover_copy(
    original: &Path,
    len: impl Fn(u64) -> usize,
    damage: impl FnOnce(&mut Vec<u8>),
    kept: u64,
) -> Option<DamageKind> {
    let dir = tempfile::tempdir().expect("dir");
    let segment = segments(original).remove(0);
    let mut bytes = std::fs::read(&segment).expect("segment");
    damage(&mut bytes);
    std::fs::write(dir.path().join(segment.file_name().expect("name")), &bytes).expect("copy");
    let (wal, recovery) = Wal::open(WalConfig::new(dir.path())).expect("open damaged");
    assert_eq!(recovery.last_lsn, (kept > 0).then_some(Lsn(kept)));
    let all = read_all(&wal, Lsn::FIRST).await.expect("read");
    assert_eq!(all.len() as u64, kept);
    for (lsn, bytes) in &all {
        assert_eq!(bytes, &payload(*lsn, len(*lsn)), "record {lsn} intact");
    }
    // Appending resumes right after the last good record.
    assert_eq!(wal.append(b"next".to_vec()).await.expect("append"), Lsn(kept + 1));
    wal.close().await.expect("close");
    recovery.damage.map(|d| d.kind)
}

#[tokio::test]
async fn a_cut_at_every_offset_of_the_last_record_loses_only_that_record() {
    let len = |k: u64| 40 + (k as usize % 7);
    let dir = tempfile::tempdir().expect("dir");
    let segment = log_of(dir.path(), 20, len).await;
    let file_len = std::fs::metadata(&segment).expect("meta").len() as usize;
    let last_start = file_len - (8 + len(20));
    for cut in last_start..=file_len {
        let kept = if cut == file_len { 20 } else { 19 };
        let kind = recover_copy(dir.path(), len, |b| b.truncate(cut), kept).await;
        let expected = (cut != last_start && cut != file_len).then_some(DamageKind::TornRecord);
        assert_eq!(kind, expected, "cut at {cut}");
    }
}

#[tokio::test]
async fn a_flipped_bit_stops_recovery_before_the_damaged_record() {
    let len = |_: u64| 24;
    let dir = tempfile::tempdir().expect("dir");
    let segment = log_of(dir.path(), 12, len).await;
    let file_len = std::fs::metadata(&segment).expect("meta").len() as usize;
    let record = 8 + 24;
    // Every byte of the last three records, one bit each (the bit varies).
    for at in file_len - 3 * record..file_len {
        let damaged = 12 - ((file_len - at - 1) / record) as u64;
        let kind = recover_copy(dir.path(), len, |b| b[at] ^= 1 << (at % 8), damaged - 1).await;
        // A flipped length bit reads as a bad length or a torn record; anything else
        // fails the checksum.
        assert!(kind.is_some(), "damage at byte {at} is reported");
    }
}

#[tokio::test]
async fn a_zeroed_page_stops_recovery_at_the_first_record_it_touches() {
    let len = |_: u64| 100;
    let dir = tempfile::tempdir().expect("dir");
    log_of(dir.path(), 200, len).await;
    // Zero bytes 8192..12288: the first record touching them is the damaged one.
    let record = 8 + 100;
    let first_touched = (8192 - 32) / record as u64 + 1;
    let kind = recover_copy(dir.path(), len, |b| b[8192..12288].fill(0), first_touched - 1).await;
    assert_eq!(kind, Some(DamageKind::Checksum));
    // A zeroed header is a bad header: nothing is kept, and the file is moved aside.
    let kind = recover_copy(dir.path(), len, |b| b[0..32].fill(0), 0).await;
    assert_eq!(kind, Some(DamageKind::BadHeader));
}

#[tokio::test]
async fn damage_in_a_sealed_segment_is_an_error_for_readers_never_a_record() {
    let dir = tempfile::tempdir().expect("dir");
    let (wal, _) = Wal::open(small(dir.path())).expect("open");
    for k in 1..=300 {
        wal.append(payload(k, 50)).await.expect("append");
    }
    wal.close().await.expect("close");
    let first = segments(dir.path()).remove(0);
    let mut bytes = std::fs::read(&first).expect("read");
    let at = 32 + 3 * (8 + 50) + 20; // inside record 4
    bytes[at] ^= 0x40;
    std::fs::write(&first, bytes).expect("write");

    let (wal, recovery) = Wal::open(small(dir.path())).expect("open");
    assert_eq!((recovery.last_lsn, recovery.damage), (Some(Lsn(300)), None));
    let mut reader = wal.reader(Lsn::FIRST).expect("reader");
    for k in 1..=3 {
        assert_eq!(reader.next_record().expect("intact").map(|r| r.lsn), Some(Lsn(k)));
    }
    match reader.next_record() {
        Err(WalError::Corrupt { kind: DamageKind::Checksum, .. }) => {}
        other => panic!("expected a checksum error, got {other:?}"),
    }
    // Later records are still readable from past the damage.
    let later = read_all(&wal, Lsn(200)).await.expect("read later");
    assert_eq!(later.len(), 101);
    wal.close().await.expect("close");
}

#[tokio::test]
async fn a_torn_new_segment_is_moved_aside_and_the_log_resumes() {
    let dir = tempfile::tempdir().expect("dir");
    let (wal, _) = Wal::open(small(dir.path())).expect("open");
    for k in 1..=200 {
        wal.append(payload(k, 50)).await.expect("append");
    }
    wal.close().await.expect("close");
    let last = segments(dir.path()).pop().expect("a segment");
    let count_before = segments(dir.path()).len();
    // A crash while starting a segment: its header is half written.
    let torn = last.with_file_name(format!("{:020}.wal", 201));
    std::fs::write(&torn, [0x47, 0x49, 0x52]).expect("torn");
    let (wal, recovery) = Wal::open(small(dir.path())).expect("open");
    let damage = recovery.damage.expect("reported");
    assert_eq!(damage.kind, DamageKind::TornHeader);
    assert_eq!(damage.moved_aside.len(), 1);
    assert!(damage.moved_aside[0].exists(), "moved aside, not deleted");
    assert_eq!(segments(dir.path()).len(), count_before);
    assert_eq!(recovery.last_lsn, Some(Lsn(200)));
    assert_eq!(wal.append(b"x".to_vec()).await.expect("append"), Lsn(201));
    wal.close().await.expect("close");
}

#[tokio::test]
async fn checkpoints_delete_whole_segments_below_and_survive_restarts() {
    let dir = tempfile::tempdir().expect("dir");
    let (wal, _) = Wal::open(small(dir.path())).expect("open");
    for k in 1..=400 {
        wal.append(payload(k, 50)).await.expect("append");
    }
    let before = segments(dir.path()).len();
    assert!(!wal.would_free(Lsn(1)), "the first segment holds more than record 1");
    assert!(wal.would_free(Lsn(250)));
    assert!(matches!(wal.checkpoint(Lsn(401)), Err(WalError::Beyond { .. })));
    wal.checkpoint(Lsn(250)).expect("checkpoint");
    let oldest = wal.oldest_lsn();
    assert!(oldest.0 > 1 && oldest.0 <= 251, "oldest {oldest}");
    assert!(segments(dir.path()).len() < before);
    assert!(matches!(wal.reader(Lsn::FIRST), Err(WalError::Truncated { .. })));
    let kept = read_all(&wal, oldest).await.expect("read kept");
    assert_eq!(kept.last().map(|r| r.0), Some(400));
    // Checkpointing everything never deletes the segment being written.
    wal.checkpoint(Lsn(400)).expect("checkpoint all");
    assert_eq!(segments(dir.path()).len(), 1);
    wal.close().await.expect("close");

    let (wal, recovery) = Wal::open(small(dir.path())).expect("reopen");
    assert_eq!(recovery.checkpoint, Some(Lsn(400)));
    assert_eq!(recovery.last_lsn, Some(Lsn(400)));
    assert_eq!(wal.append(b"x".to_vec()).await.expect("append"), Lsn(401));
    wal.close().await.expect("close");
}

#[tokio::test]
async fn bad_input_and_closed_logs_get_typed_errors() {
    let dir = tempfile::tempdir().expect("dir");
    for bad in [
        WalConfig { segment_bytes: 100, ..WalConfig::new(dir.path()) },
        WalConfig { record_bytes_max: 0, ..WalConfig::new(dir.path()) },
        WalConfig { pending_bytes_max: 10, ..WalConfig::new(dir.path()) },
        WalConfig { sync: SyncPolicy::Interval(Duration::ZERO), ..WalConfig::new(dir.path()) },
    ] {
        assert!(matches!(Wal::open(bad), Err(WalError::Config(_))));
    }
    let config = WalConfig { record_bytes_max: 1024, ..WalConfig::new(dir.path()) };
    let (wal, _) = Wal::open(config).expect("open");
    assert!(matches!(
        wal.append(vec![0u8; 1025]).await,
        Err(WalError::TooLarge { len: 1025, max: 1024 })
    ));
    assert_eq!(wal.append(Vec::new()).await.expect("empty records are records"), Lsn(1));
    let many = (0..50u8).map(|i| vec![i; 10]).collect();
    assert_eq!(wal.append_many(many).await.expect("many"), (2..=51).map(Lsn).collect::<Vec<_>>());
    assert!(matches!(
        wal.append_many(vec![vec![0; 10], vec![0; 1025]]).await,
        Err(WalError::TooLarge { len: 1025, .. })
    ));
    assert_eq!(wal.last_lsn(), Some(Lsn(51)), "a refused batch appends nothing");
    // One open log per directory: a second open is refused while the first lives.
    assert!(matches!(Wal::open(WalConfig::new(dir.path())), Err(WalError::Locked(_))));
    let other = wal.clone();
    wal.close().await.expect("close");
    assert!(matches!(other.append(b"late".to_vec()).await, Err(WalError::Closed)));
    drop(other);
    let (reopened, _) = Wal::open(WalConfig::new(dir.path())).expect("free once closed");
    reopened.close().await.expect("close");
}

#[tokio::test]
async fn every_sync_policy_keeps_records_across_a_clean_close() {
    for sync in
        [SyncPolicy::EveryBatch, SyncPolicy::Interval(Duration::from_millis(5)), SyncPolicy::Never]
    {
        let dir = tempfile::tempdir().expect("dir");
        let (wal, _) = Wal::open(WalConfig { sync, ..small(dir.path()) }).expect("open");
        for k in 1..=100 {
            wal.append(payload(k, 64)).await.expect("append");
        }
        // A follower waiting for a record wakes when it is acknowledged.
        let follower = {
            let wal = wal.clone();
            tokio::spawn(async move { wal.wait_for(Lsn(101)).await })
        };
        wal.append(b"last".to_vec()).await.expect("append");
        follower.await.expect("task").expect("woken");
        tokio::time::sleep(Duration::from_millis(10)).await;
        wal.close().await.expect("close");
        let (wal, recovery) = Wal::open(small(dir.path())).expect("reopen");
        assert_eq!(recovery.last_lsn, Some(Lsn(101)), "{sync:?}");
        assert_eq!(read_all(&wal, Lsn::FIRST).await.expect("read").len(), 101);
        wal.close().await.expect("close");
    }
}

/// The crash matrix: a child process (this same test, re-run with `GIRDER_WAL_CHILD`)
/// appends from 16 tasks and prints each acknowledgement; the parent SIGKILLs it at a
/// random moment, 100 times on one log, and after every kill checks that each
/// acknowledged record is there with its bytes and that reading never fails.
#[test]
fn acknowledged_records_survive_sigkill_at_random_moments() {
    const CHILD: &str = "GIRDER_WAL_CHILD";
    if let Ok(dir) = std::env::var(CHILD) {
        return crash_child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().expect("dir");
    let runs: u32 =
        std::env::var("GIRDER_WAL_CRASH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(100);
    let exe = std::env::current_exe().expect("test binary");
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    for run in 0..runs {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "acknowledged_records_survive_sigkill_at_random_moments",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let reading = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let mut parts = rest.split(' ').map(|p| p.parse::<u64>());
                    if let (Some(Ok(lsn)), Some(Ok(id))) = (parts.next(), parts.next()) {
                        lines.push((lsn, id));
                    }
                }
            }
            lines
        });
        let wait = 20 + (u64::from(run) * 7919) % 80;
        std::thread::sleep(Duration::from_millis(wait));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        for (lsn, id) in reading.join().expect("reader thread") {
            assert!(
                acked.insert(lsn, id).is_none_or(|old| old == id),
                "LSN {lsn} acknowledged twice"
            );
        }
        let (wal, recovery) =
            Wal::open(WalConfig { segment_bytes: 256 << 10, ..WalConfig::new(dir.path()) })
                .expect("recover");
        let all = runtime.block_on(read_all(&wal, Lsn::FIRST)).expect("every record reads back");
        let found: HashMap<u64, Vec<u8>> = all.into_iter().collect();
        for (lsn, id) in &acked {
            let bytes = found
                .get(lsn)
                .unwrap_or_else(|| panic!("run {run}: acknowledged LSN {lsn} lost ({recovery:?})"));
            assert_eq!(bytes, &crash_payload(*id), "run {run}: LSN {lsn} holds record {id}");
        }
        runtime.block_on(wal.close()).expect("close");
    }
    assert!(acked.len() > runs as usize, "the children acknowledged records ({})", acked.len());
}

fn crash_payload(id: u64) -> Vec<u8> {
    let mut bytes = payload(id, 96);
    bytes[0..8].copy_from_slice(&id.to_le_bytes());
    bytes
}

fn crash_child(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let config = WalConfig { segment_bytes: 256 << 10, ..WalConfig::new(dir) };
        let (wal, _) = Wal::open(config).expect("child open");
        let pid = u64::from(std::process::id());
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..16u64 {
            let wal = wal.clone();
            tasks.spawn(async move {
                for seq in 0.. {
                    let id = (pid << 32) | (task << 24) | seq;
                    let lsn = wal.append(crash_payload(id)).await.expect("append");
                    println!("ACK {} {id}", lsn.0);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

/// `stats()` tells what a power failure would take now: nothing under `EveryBatch`
/// once an append has returned; under `Never`, everything acknowledged since the
/// last sync (here, since the log opened), until the log is closed.
#[tokio::test]
async fn stats_show_what_a_power_failure_would_take_under_each_policy() {
    use girder_log::wal::SyncPolicy;
    let dir = tempfile::tempdir().expect("dir");
    let (wal, _) = Wal::open(WalConfig::new(dir.path().join("every"))).expect("open");
    for n in 0..20 {
        let lsn = wal.append(payload(n, 64)).await.expect("append");
        let stats = wal.stats();
        assert!(stats.synced_lsn >= lsn.0 && stats.acked_lsn >= lsn.0, "{stats:?} after {lsn:?}");
    }
    wal.close().await.expect("close");

    let never = WalConfig { sync: SyncPolicy::Never, ..WalConfig::new(dir.path().join("never")) };
    let (wal, _) = Wal::open(never.clone()).expect("open");
    for n in 0..20 {
        wal.append(payload(n, 64)).await.expect("append");
    }
    let stats = wal.stats();
    assert_eq!((stats.acked_lsn, stats.synced_lsn, stats.syncs), (20, 0, 0), "{stats:?}");
    wal.close().await.expect("close");
    // Closing syncs: reopened, all twenty count as synced.
    let (wal, _) = Wal::open(never).expect("reopen");
    assert_eq!((wal.stats().acked_lsn, wal.stats().synced_lsn), (20, 20));
    wal.close().await.expect("close");
}
