//! The transaction retry wrapper ("Pattern: ACID Transactions for Atomicity") against
//! real engines: concurrent SERIALIZABLE read-then-write increments all land (the
//! losers' serialization failures are retried), a forced conflict exhausts a
//! one-attempt policy, and SQLite's busy write lock is retried within bounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use girder_core::services::{Service, require};
use girder_lock::retry::{RetryError, RetryPolicy};
use girder_lock::txn::{
    Isolation, TxnError, is_pg_retryable, is_sqlite_retryable, run_pg_transaction,
    run_sqlite_transaction, with_pg_transaction, with_sqlite_transaction,
};
use girder_testkit::backends::{sqlite_pool, unique_name};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};
use tokio::sync::Notify;

/// Concurrent read-then-write transactions on one row.
const WRITERS: u32 = 24;

async fn pg() -> Option<PgPool> {
    let url = require(Service::Postgres, "version_txn")?;
    let pool = PgPoolOptions::new().max_connections(8).connect(&url).await.unwrap();
    // One table for all these tests; rows are per test. Racing creators take turns.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(7420)").execute(&mut *tx).await.unwrap();
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS girder_test_txn (name TEXT PRIMARY KEY, n BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    Some(pool)
}

async fn pg_row(pool: &PgPool) -> String {
    let name = unique_name("txn");
    sqlx::query("INSERT INTO girder_test_txn (name, n) VALUES ($1, 0)")
        .bind(&name)
        .execute(pool)
        .await
        .unwrap();
    name
}

async fn pg_value(pool: &PgPool, name: &str) -> i64 {
    sqlx::query_scalar("SELECT n FROM girder_test_txn WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serializable_increments_are_retried_until_all_land() {
    let Some(pool) = pg().await else { return };
    let name = pg_row(&pool).await;
    let runs = Arc::new(AtomicU32::new(0));
    let policy = RetryPolicy { max_attempts: 200, base_delay_ms: 1, max_delay_ms: 20 };
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (pool, name, runs) = (pool.clone(), name.clone(), Arc::clone(&runs));
            tokio::spawn(async move {
                with_pg_transaction(&pool, &policy, Isolation::Serializable, |conn| {
                    let (name, runs) = (name.clone(), Arc::clone(&runs));
                    Box::pin(async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        // The classic lost update: read, compute in the app, write back.
                        let n: i64 =
                            sqlx::query_scalar("SELECT n FROM girder_test_txn WHERE name = $1")
                                .bind(&name)
                                .fetch_one(&mut *conn)
                                .await?;
                        tokio::task::yield_now().await;
                        sqlx::query("UPDATE girder_test_txn SET n = $1 WHERE name = $2")
                            .bind(n + 1)
                            .bind(&name)
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
                .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every increment commits after retries");
    }
    assert_eq!(pg_value(&pool, &name).await, i64::from(WRITERS), "an increment was lost");
    let runs = runs.load(Ordering::SeqCst);
    assert!(runs > WRITERS, "no transaction conflicted ({runs} runs), so nothing was retried");
    pg_drop_row(&pool, &name).await;
}

/// Makes the first attempt of a SERIALIZABLE read-then-write lose: after the body
/// reads, another session commits a write to the same row, so the body's write fails
/// with 40001. Returns the wrapper's result and how often the body ran.
async fn conflict_on_first_attempt(
    pool: &PgPool,
    name: &str,
    max_attempts: u32,
) -> (Result<(), TxnError>, u32) {
    let runs = Arc::new(AtomicU32::new(0));
    let read_done = Arc::new(Notify::new());
    let other_committed = Arc::new(Notify::new());
    let policy = RetryPolicy { max_attempts, base_delay_ms: 1, max_delay_ms: 5 };
    let txn = {
        let (pool, name) = (pool.clone(), name.to_owned());
        let (runs, read_done, other_committed) =
            (Arc::clone(&runs), Arc::clone(&read_done), Arc::clone(&other_committed));
        tokio::spawn(async move {
            with_pg_transaction(&pool, &policy, Isolation::Serializable, |conn| {
                let (name, runs) = (name.clone(), Arc::clone(&runs));
                let (read_done, other_committed) =
                    (Arc::clone(&read_done), Arc::clone(&other_committed));
                Box::pin(async move {
                    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    let n: i64 =
                        sqlx::query_scalar("SELECT n FROM girder_test_txn WHERE name = $1")
                            .bind(&name)
                            .fetch_one(&mut *conn)
                            .await?;
                    if run == 1 {
                        read_done.notify_one();
                        other_committed.notified().await;
                    }
                    sqlx::query("UPDATE girder_test_txn SET n = $1 WHERE name = $2")
                        .bind(n + 1)
                        .bind(&name)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .await
        })
    };
    read_done.notified().await;
    sqlx::query("UPDATE girder_test_txn SET n = n + 100 WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
    other_committed.notify_one();
    let result = txn.await.unwrap();
    (result, runs.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_conflict_exhausts_a_one_attempt_policy_and_a_retry_fixes_it() {
    let Some(pool) = pg().await else { return };
    let name = pg_row(&pool).await;
    let (result, runs) = conflict_on_first_attempt(&pool, &name, 1).await;
    assert!(matches!(result, Err(TxnError::RetriesExhausted { attempts: 1 })), "{result:?}");
    assert_eq!(runs, 1);
    assert_eq!(pg_value(&pool, &name).await, 100, "the aborted transaction wrote");

    let (result, runs) = conflict_on_first_attempt(&pool, &name, 3).await;
    result.expect("the second attempt commits");
    assert_eq!(runs, 2, "one retry after the serialization failure");
    assert_eq!(pg_value(&pool, &name).await, 201, "the retry read the other session's write");
    pg_drop_row(&pool, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_database_errors_pass_through_without_retry() {
    let Some(pool) = pg().await else { return };
    let runs = Arc::new(AtomicU32::new(0));
    let result: Result<(), _> =
        with_pg_transaction(&pool, &RetryPolicy::default(), Isolation::ReadCommitted, |conn| {
            let runs = Arc::clone(&runs);
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                sqlx::query("SELECT * FROM girder_no_such_table").execute(&mut *conn).await?;
                Ok(())
            })
        })
        .await;
    match result {
        Err(TxnError::Db(err)) => assert!(!is_pg_retryable(&err), "{err}"),
        other => panic!("expected a database error, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a non-retryable error was retried");
}

async fn sqlite_counter(pool: &SqlitePool) {
    sqlx::query("CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT OR IGNORE INTO counter (name, n) VALUES ('c', 0)")
        .execute(pool)
        .await
        .unwrap();
}

async fn sqlite_increment(pool: &SqlitePool, policy: &RetryPolicy) -> Result<(), TxnError> {
    with_sqlite_transaction(pool, policy, |conn| {
        Box::pin(async move {
            let n: i64 = sqlx::query_scalar("SELECT n FROM counter WHERE name = 'c'")
                .fetch_one(&mut *conn)
                .await?;
            tokio::task::yield_now().await;
            sqlx::query("UPDATE counter SET n = ?1 WHERE name = 'c'")
                .bind(n + 1)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_immediate_transactions_lose_no_increment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txn.db");
    let first = sqlite_pool(&path).await.unwrap();
    let second = sqlite_pool(&path).await.unwrap();
    sqlite_counter(&first).await;
    let policy = RetryPolicy::default();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let pool = if i % 2 == 0 { first.clone() } else { second.clone() };
            tokio::spawn(async move { sqlite_increment(&pool, &policy).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("increment");
    }
    let n: i64 = sqlx::query_scalar("SELECT n FROM counter").fetch_one(&first).await.unwrap();
    assert_eq!(n, i64::from(WRITERS), "BEGIN IMMEDIATE let an increment be lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sqlite_database_is_retried_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let holder = sqlite_pool(&path).await.unwrap();
    sqlite_counter(&holder).await;
    // A pool that does not wait for the lock, so each attempt sees SQLITE_BUSY at once.
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::ZERO);
    let impatient =
        SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();

    let mut lock = holder.begin_with("BEGIN IMMEDIATE").await.unwrap();
    let policy = RetryPolicy { max_attempts: 3, base_delay_ms: 1, max_delay_ms: 2 };
    let result = sqlite_increment(&impatient, &policy).await;
    assert!(matches!(result, Err(TxnError::RetriesExhausted { attempts: 3 })), "{result:?}");
    sqlx::query("UPDATE counter SET n = 10 WHERE name = 'c'").execute(&mut *lock).await.unwrap();
    lock.commit().await.unwrap();

    sqlite_increment(&impatient, &policy).await.expect("the lock is free again");
    let n: i64 = sqlx::query_scalar("SELECT n FROM counter").fetch_one(&holder).await.unwrap();
    assert_eq!(n, 11);
}

/// A body's own errors, as an app would have them.
#[derive(Debug)]
enum BodyError {
    Db(sqlx::Error),
    /// An optimistic conflict the app wants retried.
    Conflict,
    /// A business refusal: roll back, do not retry.
    Refused,
}

impl From<sqlx::Error> for BodyError {
    fn from(err: sqlx::Error) -> Self {
        Self::Db(err)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_bodies_with_their_own_errors_roll_back_and_retry_as_told() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("run.db")).await.unwrap();
    sqlite_counter(&pool).await;
    let policy = RetryPolicy { max_attempts: 5, base_delay_ms: 1, max_delay_ms: 2 };
    let retryable = |e: &BodyError| {
        matches!(e, BodyError::Conflict) || matches!(e, BodyError::Db(e) if is_sqlite_retryable(e))
    };
    let counter = |pool: SqlitePool| async move {
        sqlx::query_scalar::<_, i64>("SELECT n FROM counter").fetch_one(&pool).await.unwrap()
    };

    // Two conflicts, then success: each failed attempt's write was rolled back.
    let runs = Arc::new(AtomicU32::new(0));
    let result = run_sqlite_transaction(&pool, &policy, retryable, |conn| {
        let runs = Arc::clone(&runs);
        Box::pin(async move {
            sqlx::query("UPDATE counter SET n = n + 1").execute(&mut *conn).await?;
            if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                return Err(BodyError::Conflict);
            }
            Ok(sqlx::query_scalar::<_, i64>("SELECT n FROM counter").fetch_one(&mut *conn).await?)
        })
    })
    .await;
    assert_eq!(result.map_err(|e| format!("{e:?}")), Ok((1, 3)), "value and attempts");
    assert_eq!(counter(pool.clone()).await, 1);

    // A refusal after a write rolls it back and is not retried.
    runs.store(0, Ordering::SeqCst);
    let result: Result<((), u32), _> = run_sqlite_transaction(&pool, &policy, retryable, |conn| {
        let runs = Arc::clone(&runs);
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            sqlx::query("UPDATE counter SET n = n + 100").execute(&mut *conn).await?;
            Err(BodyError::Refused)
        })
    })
    .await;
    assert!(matches!(result, Err(RetryError::Failed(BodyError::Refused))), "{result:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(counter(pool.clone()).await, 1, "a refused transaction's write survived");

    // Conflicts every time: bounded by the policy, the last error kept.
    let tight = RetryPolicy { max_attempts: 2, ..policy };
    let result: Result<((), u32), _> = run_sqlite_transaction(&pool, &tight, retryable, |_| {
        Box::pin(async { Err(BodyError::Conflict) })
    })
    .await;
    assert!(
        matches!(result, Err(RetryError::Exhausted { attempts: 2, last: BodyError::Conflict })),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bodies_with_their_own_errors_roll_back_and_retry_as_told() {
    let Some(pool) = pg().await else { return };
    let name = pg_row(&pool).await;
    let policy = RetryPolicy { max_attempts: 5, base_delay_ms: 1, max_delay_ms: 2 };
    let retryable = |e: &BodyError| {
        matches!(e, BodyError::Conflict) || matches!(e, BodyError::Db(e) if is_pg_retryable(e))
    };
    let runs = Arc::new(AtomicU32::new(0));
    let result = run_pg_transaction(&pool, &policy, Isolation::ReadCommitted, retryable, |conn| {
        let (runs, name) = (Arc::clone(&runs), name.clone());
        Box::pin(async move {
            sqlx::query("UPDATE girder_test_txn SET n = n + 1 WHERE name = $1")
                .bind(&name)
                .execute(&mut *conn)
                .await?;
            match runs.fetch_add(1, Ordering::SeqCst) {
                0 => Err(BodyError::Conflict),
                1 => Err(BodyError::Refused),
                _ => Ok(()),
            }
        })
    })
    .await;
    assert!(matches!(result, Err(RetryError::Failed(BodyError::Refused))), "{result:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "retried the conflict, not the refusal");
    assert_eq!(pg_value(&pool, &name).await, 0, "a rolled-back attempt's write survived");
    pg_drop_row(&pool, &name).await;
}

async fn pg_drop_row(pool: &PgPool, name: &str) {
    sqlx::query("DELETE FROM girder_test_txn WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
}

/// One side of a deadlock: locks `first`, waits until the other side locked its
/// row (first attempt only), then locks `second`.
fn deadlock_side(
    pool: &PgPool,
    rows: (String, String),
    mine: Arc<Notify>,
    theirs: Arc<Notify>,
    runs: Arc<AtomicU32>,
) -> tokio::task::JoinHandle<Result<(), TxnError>> {
    let pool = pool.clone();
    let policy = RetryPolicy { max_attempts: 5, base_delay_ms: 1, max_delay_ms: 5 };
    tokio::spawn(async move {
        with_pg_transaction(&pool, &policy, Isolation::ReadCommitted, |conn| {
            let (rows, mine, theirs, runs) =
                (rows.clone(), Arc::clone(&mine), Arc::clone(&theirs), Arc::clone(&runs));
            Box::pin(async move {
                let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                for (i, row) in [&rows.0, &rows.1].into_iter().enumerate() {
                    if i == 1 && run == 1 {
                        mine.notify_one();
                        theirs.notified().await;
                    }
                    sqlx::query("UPDATE girder_test_txn SET n = n + 1 WHERE name = $1")
                        .bind(row)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
        .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_victim_is_retried() {
    let Some(pool) = pg().await else { return };
    let (a, b) = (pg_row(&pool).await, pg_row(&pool).await);
    let (a_locked, b_locked) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (runs_ab, runs_ba) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    // Opposite lock orders: PostgreSQL aborts one with 40P01 (after deadlock_timeout).
    let ab = deadlock_side(
        &pool,
        (a.clone(), b.clone()),
        Arc::clone(&a_locked),
        Arc::clone(&b_locked),
        Arc::clone(&runs_ab),
    );
    let ba = deadlock_side(
        &pool,
        (b.clone(), a.clone()),
        Arc::clone(&b_locked),
        Arc::clone(&a_locked),
        Arc::clone(&runs_ba),
    );
    ab.await.unwrap().expect("a→b commits");
    ba.await.unwrap().expect("b→a commits");
    let runs = runs_ab.load(Ordering::SeqCst) + runs_ba.load(Ordering::SeqCst);
    // At least one side was a victim and ran again. (Both may be: PostgreSQL can
    // pick both when their deadlock checks overlap, and the retries may deadlock anew.)
    assert!(runs >= 3, "no deadlock victim was retried ({runs} runs)");
    assert_eq!((pg_value(&pool, &a).await, pg_value(&pool, &b).await), (2, 2));
    pg_drop_row(&pool, &a).await;
    pg_drop_row(&pool, &b).await;
}
