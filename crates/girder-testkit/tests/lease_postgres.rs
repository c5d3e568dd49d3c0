//! The PostgreSQL lease store passes the lease conformance suite and the concurrent
//! history check on two pools; tokens keep growing across a fresh store on a fresh pool
//! (a restarted instance); and `fence_postgres` refuses a stale holder inside a real
//! transaction, including when the newer holder's transaction is still open.

use std::sync::Arc;
use std::time::Duration;

use girder_core::services::{Service, require};
use girder_core::{Clock, ManualClock, SystemClock};
use girder_lock::fence::{FenceError, create_fence_table_postgres, fence_postgres};
use girder_lock::lease::{LeaseStore, PostgresLeaseStore};
use girder_testkit::backends::{postgres_pool, unique_name};
use girder_testkit::lease::{lease_conformance, lease_history_run};

async fn store(url: &str, clock: &ManualClock) -> PostgresLeaseStore {
    let pool = postgres_pool(url).await.unwrap();
    PostgresLeaseStore::with_clock(pool, Arc::new(clock.clone())).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_store_conforms() {
    let Some(url) = require(Service::Postgres, "postgres_lease_store_conforms") else { return };
    let clock = ManualClock::new(SystemClock.now_ms());
    let a = store(&url, &clock).await;
    let b = store(&url, &clock).await;
    lease_conformance(&a, &b, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_history_is_safe_under_concurrency() {
    let Some(url) = require(Service::Postgres, "postgres_lease_history") else { return };
    let clock = ManualClock::new(SystemClock.now_ms());
    let stores = vec![Arc::new(store(&url, &clock).await), Arc::new(store(&url, &clock).await)];
    let history = lease_history_run(stores, 32, 4, 200, clock).await;
    history.check().unwrap();
    eprintln!(
        "{} acquisitions, {} held for a non-empty time, {} lost, {} busy",
        history.events().len(),
        history.held(),
        history.lost(),
        history.busy()
    );
    assert!(history.held() > 400, "too few non-empty holds: {}", history.held());
    assert!(history.lost() > 0, "no lease expired under its holder");
    assert!(history.busy() > 0, "no contention");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keep_growing_across_a_fresh_store() {
    let Some(url) = require(Service::Postgres, "postgres_lease_tokens_durable") else { return };
    let clock = ManualClock::new(SystemClock.now_ms());
    let key = unique_name("girder-test-lease-restart");
    let before = {
        let first = store(&url, &clock).await;
        let lease = first.try_acquire(&key, 100).await.unwrap().unwrap();
        first.release(&lease).await.unwrap();
        lease.token()
    };
    // A new pool and a new store, as after a restart of the instance.
    let second = store(&url, &clock).await;
    let after = second.try_acquire(&key, 100).await.unwrap().unwrap();
    assert!(after.token() > before, "token {} after restart <= {before}", after.token());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_is_fenced_off_in_postgres() {
    let Some(url) = require(Service::Postgres, "postgres_fence") else { return };
    let pool = postgres_pool(&url).await.unwrap();
    create_fence_table_postgres(&pool).await.unwrap();
    create_fence_table_postgres(&pool).await.unwrap();
    let clock = ManualClock::new(SystemClock.now_ms());
    let leases = store(&url, &clock).await;
    let seat = unique_name("girder-test-seat");

    let first = leases.try_acquire(&seat, 1_000).await.unwrap().unwrap();
    clock.advance(Duration::from_millis(1_500));
    let second = leases.try_acquire(&seat, 1_000).await.unwrap().unwrap();

    // The newer holder fences first and keeps its transaction open...
    let mut newer = pool.begin().await.unwrap();
    fence_postgres(&mut newer, &seat, second.token()).await.unwrap();
    // ...the paused holder wakes up: its fence check waits on the row, then loses.
    let stale = {
        let pool = pool.clone();
        let seat = seat.clone();
        let token = first.token();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let result = fence_postgres(&mut tx, &seat, token).await;
            tx.rollback().await.unwrap();
            result
        })
    };
    // Commit only once the stale check is really blocked on the fence row.
    let blocked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO girder_fences%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    });
    blocked.await.expect("the stale fence check never blocked on the row lock");
    newer.commit().await.unwrap();
    assert_eq!(
        stale.await.unwrap(),
        Err(FenceError::Stale { presented: first.token(), highest: second.token() })
    );

    // The same holder may write again; a rolled-back fence leaves no trace.
    let mut conn = pool.acquire().await.unwrap();
    fence_postgres(&mut conn, &seat, second.token()).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    fence_postgres(&mut tx, &seat, second.token() + 100).await.unwrap();
    tx.rollback().await.unwrap();
    fence_postgres(&mut conn, &seat, second.token() + 1).await.unwrap();
    assert_eq!(
        fence_postgres(&mut conn, &seat, u64::MAX).await,
        Err(FenceError::TokenOutOfRange(u64::MAX))
    );
    sqlx::query("DELETE FROM girder_fences WHERE resource = $1")
        .bind(&seat)
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pool_is_the_source_and_a_late_clock_is_its_own_error() {
    use std::error::Error as _;

    use girder_lock::BackendError;
    use girder_lock::lease::LeaseError;

    let Some(url) = require(Service::Postgres, "postgres_lease_failure_source") else { return };
    let pool = postgres_pool(&url).await.unwrap();
    let store = PostgresLeaseStore::with_clock(pool.clone(), Arc::new(SystemClock)).await.unwrap();
    // A clock beyond BIGINT milliseconds is refused before anything is sent.
    let late = ManualClock::new(u64::MAX - 10);
    let late = PostgresLeaseStore::with_clock(pool.clone(), Arc::new(late)).await.unwrap();
    assert_eq!(
        late.try_acquire("k", 1_000).await,
        Err(LeaseError::ClockOverflow { at_ms: u64::MAX - 10 })
    );

    pool.close().await;
    let err = store.try_acquire(&unique_name("k"), 1_000).await.unwrap_err();
    assert!(matches!(err, LeaseError::Backend(BackendError::Postgres(_))), "{err:?}");
    assert_eq!(err.to_string(), "lease backend");
    let driver = err.source().and_then(|e| e.source()).and_then(|e| e.downcast_ref());
    assert!(matches!(driver, Some(sqlx::Error::PoolClosed)), "{err:?}");
}
