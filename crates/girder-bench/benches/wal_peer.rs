//! girder-log's WAL against okaywal at the same durability (each append acknowledged
//! only after an fsync covers it), same record size and writer counts, in one run.
//! `cargo bench -p girder-bench --bench wal_peer` (the directory is on the disk of
//! `GIRDER_BENCH_DIR`, default `target/`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use girder_log::wal::{Wal, WalConfig};

const SPAN: Duration = Duration::from_secs(2);
const RECORD: usize = 128;

fn scratch() -> tempfile::TempDir {
    let base = std::env::var("GIRDER_BENCH_DIR").unwrap_or_else(|_| "target".to_owned());
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::tempdir_in(base).expect("scratch dir")
}

/// Appends per second from `writers` tasks on girder-log's WAL (sync every batch).
fn girder(writers: usize, commit_delay: Duration) -> f64 {
    let dir = scratch();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let config = WalConfig { commit_delay, ..WalConfig::new(dir.path()) };
        let (wal, _) = Wal::open(config).expect("open");
        let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..writers {
            let (wal, stop, done) = (wal.clone(), Arc::clone(&stop), Arc::clone(&done));
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    wal.append(vec![7u8; RECORD]).await.expect("append");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        tokio::time::sleep(SPAN).await;
        stop.store(true, Ordering::Relaxed);
        while tasks.join_next().await.is_some() {}
        let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        wal.close().await.expect("close");
        rate
    })
}

/// Appends per second from `writers` threads on okaywal (each entry committed, which
/// waits for the fsync that covers it; concurrent commits share syncs).
fn okaywal(writers: usize) -> f64 {
    let dir = scratch();
    let log = okaywal::WriteAheadLog::recover(dir.path(), okaywal::LogVoid).expect("okaywal");
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (log, stop, done) = (log.clone(), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || {
                let record = vec![7u8; RECORD];
                while !stop.load(Ordering::Relaxed) {
                    let mut entry = log.begin_entry().expect("entry");
                    entry.write_chunk(&record).expect("chunk");
                    entry.commit().expect("commit");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(SPAN);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("writer");
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    log.shutdown().expect("shutdown");
    rate
}

fn main() {
    // `cargo bench` passes `--bench`; a filter would be ignored.
    println!(
        "| writers | girder-log WAL | girder-log WAL, commit delay 200 µs | okaywal | girder ÷ okaywal (best girder) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for round in 0..2 {
        for writers in [1usize, 16, 64] {
            let g = girder(writers, Duration::ZERO);
            let gd = girder(writers, Duration::from_micros(200));
            let o = okaywal(writers);
            println!(
                "| {writers} (round {}) | {g:.0}/s | {gd:.0}/s | {o:.0}/s | {:.2}× |",
                round + 1,
                g.max(gd) / o
            );
        }
    }
}
