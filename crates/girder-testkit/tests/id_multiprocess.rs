//! Several OS processes drawing ids from one backend counter never get the same id.
//!
//! The parent tests re-run this test binary as child processes (selecting
//! `child_process_entry_point` with `--exact`), tell each child through environment
//! variables which backend and counter to use and where to write, and then check
//! every id from every child for duplicates. This works the same under `cargo test`
//! and `cargo nextest run`, which both run libtest binaries.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use girder_core::services::{Service, require};
use girder_id::counter::{
    AllocatorConfig, AnySource, IdAllocator, PostgresSource, RangeSource, RedisSource, SqliteSource,
};
use girder_testkit::backends::{postgres_pool, redis_manager, sqlite_pool, unique_name};

/// Child processes per test.
const PROCESSES: usize = 4;
/// Ids each child draws: 4 × 250,000 = 1,000,000 in total.
const IDS_PER_PROCESS: u64 = 250_000;
/// Small batches mean many leases (10,000 per test), which is what is under test.
const BATCH_SIZE: u64 = 100;
/// Tasks per child sharing one allocator, so in-process concurrency is exercised too.
const TASKS_PER_PROCESS: u64 = 2;

/// `backend|target|counter`, e.g. `sqlite|/tmp/x/ids.db|mp` or `redis|redis://…|key`.
const BACKEND_ENV: &str = "GIRDER_TESTKIT_CHILD_BACKEND";
/// File the child writes its ids to, as little-endian u64s.
const OUT_ENV: &str = "GIRDER_TESTKIT_CHILD_OUT";

/// The child side. Spawned by the tests below with the environment set; run any other
/// way (a plain `cargo test`), it has no backend to draw from and returns at once.
#[test]
fn child_process_entry_point() {
    let (Ok(backend), Ok(out)) = (std::env::var(BACKEND_ENV), std::env::var(OUT_ENV)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ids = runtime.block_on(draw_ids(&backend));
    let mut file = BufWriter::new(std::fs::File::create(&out).expect("create output file"));
    for id in ids {
        file.write_all(&id.to_le_bytes()).expect("write id");
    }
    file.flush().expect("flush ids");
}

async fn open_source(spec: &str) -> AnySource {
    let mut parts = spec.splitn(3, '|');
    let (kind, target, counter) = (
        parts.next().expect("backend kind"),
        parts.next().expect("backend target"),
        parts.next().expect("counter name"),
    );
    match kind {
        "sqlite" => {
            let pool = sqlite_pool(Path::new(target)).await.expect("open sqlite");
            AnySource::Sqlite(SqliteSource::new(pool, counter).await.expect("sqlite counter"))
        }
        "postgres" => {
            let pool = postgres_pool(target).await.expect("connect postgres");
            AnySource::Postgres(PostgresSource::new(pool, counter).await.expect("postgres counter"))
        }
        "redis" => AnySource::Redis(RedisSource::new(
            redis_manager(target).await.expect("connect redis"),
            counter,
        )),
        other => panic!("unknown backend {other:?}"),
    }
}

async fn draw_ids(spec: &str) -> Vec<u64> {
    let source = open_source(spec).await;
    let allocator = Arc::new(IdAllocator::new(source, AllocatorConfig { batch_size: BATCH_SIZE }));
    let per_task = IDS_PER_PROCESS / TASKS_PER_PROCESS;
    let tasks: Vec<_> = (0..TASKS_PER_PROCESS)
        .map(|_| {
            let allocator = Arc::clone(&allocator);
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(per_task as usize);
                for _ in 0..per_task {
                    ids.push(allocator.next_id().await.expect("next_id"));
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(IDS_PER_PROCESS as usize);
    for task in tasks {
        ids.extend(task.await.expect("drawing task"));
    }
    ids
}

/// Runs the children against `spec`, then checks every id is unique and that a source
/// opened afterwards (a restart) continues past all of them.
async fn run_children_and_check(spec: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    let outputs: Vec<PathBuf> =
        (0..PROCESSES).map(|i| dir.path().join(format!("child-{i}.ids"))).collect();
    let children: Vec<_> = outputs
        .iter()
        .map(|out| {
            Command::new(&exe)
                .args(["--exact", "child_process_entry_point", "--nocapture", "--test-threads=1"])
                .env(BACKEND_ENV, spec)
                .env(OUT_ENV, out)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn child process")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().expect("wait for child");
        assert!(
            output.status.success(),
            "child failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let mut all = Vec::with_capacity(PROCESSES * IDS_PER_PROCESS as usize);
    for out in &outputs {
        let bytes = std::fs::read(out).expect("child output");
        assert_eq!(bytes.len() as u64, IDS_PER_PROCESS * 8, "{} is short", out.display());
        all.extend(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())));
    }
    all.sort_unstable();
    if let Some(w) = all.windows(2).find(|w| w[0] == w[1]) {
        panic!("id {} was handed out twice across processes", w[0]);
    }
    assert_eq!(all.len(), PROCESSES * IDS_PER_PROCESS as usize);

    let max = *all.last().expect("ids");
    let after = open_source(spec).await.lease(1).await.expect("lease after the children");
    assert!(after.start > max, "a reopened source granted {after:?} at or below {max}");
}

#[tokio::test]
async fn processes_sharing_a_sqlite_file_never_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ids.db");
    // Switch the new file to WAL once, up front: the switch takes an exclusive lock that
    // racing children would otherwise contend for. Table creation is left to the
    // children, so their CREATE TABLE IF NOT EXISTS race is exercised.
    sqlite_pool(&path).await.expect("create sqlite file").close().await;
    run_children_and_check(&format!("sqlite|{}|multiprocess", path.display())).await;
}

#[tokio::test]
async fn processes_sharing_a_postgres_counter_never_duplicate() {
    let Some(url) = require(Service::Postgres, "processes_sharing_a_postgres_counter") else {
        return;
    };
    let counter = unique_name("multiprocess");
    run_children_and_check(&format!("postgres|{url}|{counter}")).await;
    let pool = postgres_pool(&url).await.expect("connect postgres");
    sqlx::query("DELETE FROM girder_id_counters WHERE name = $1")
        .bind(&counter)
        .execute(&pool)
        .await
        .expect("clean up counter");
}

#[tokio::test]
async fn processes_sharing_a_redis_key_never_duplicate() {
    let Some(url) = require(Service::Redis, "processes_sharing_a_redis_key") else { return };
    let key = unique_name("girder:test:id-multiprocess");
    run_children_and_check(&format!("redis|{url}|{key}")).await;
    let mut conn = redis_manager(&url).await.expect("connect redis");
    let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.expect("clean up key");
}
