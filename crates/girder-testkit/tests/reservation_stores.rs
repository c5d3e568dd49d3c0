//! Every ReservationStore backend passes the conformance suite, including the
//! concurrency check (10 000 hold attempts, 256 in flight, 100 items: each sold once).

use std::sync::Arc;

use girder_core::services::{Service, require};
use girder_core::{Clock, ManualClock, SystemClock};
use girder_lock::reservation::{
    MemoryReservationStore, PostgresReservationStore, RedisReservationStore, ReservationConfig,
    SqliteReservationStore,
};
use girder_testkit::backends::{redis_manager, sqlite_pool, unique_name};
use girder_testkit::reservation::reservation_suite;
use sqlx::postgres::PgPoolOptions;

fn clock() -> ManualClock {
    ManualClock::new(SystemClock.now_ms())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_reservation_store_conforms() {
    let clock = clock();
    // Memory stores share nothing, so "the same backend" is one shared store; the
    // first call's config is the suite's.
    let shared: std::sync::OnceLock<Arc<MemoryReservationStore>> = std::sync::OnceLock::new();
    reservation_suite(
        |config: ReservationConfig| {
            let store = shared.get_or_init(|| {
                Arc::new(MemoryReservationStore::new(config, Arc::new(clock.clone())))
            });
            let store = Arc::clone(store);
            async move { store }
        },
        &clock,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_reservation_store_conforms() {
    let clock = clock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reservations.db");
    reservation_suite(
        |config| {
            let (path, clock) = (path.clone(), clock.clone());
            async move {
                let pool = sqlite_pool(&path).await.unwrap();
                SqliteReservationStore::new(pool, config, Arc::new(clock)).await.unwrap()
            }
        },
        &clock,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_reservation_store_conforms() {
    let Some(url) = require(Service::Postgres, "postgres_reservation_store_conforms") else {
        return;
    };
    let clock = clock();
    let pools = reservation_suite(
        |config| {
            let (url, clock) = (url.clone(), clock.clone());
            async move {
                let pool = PgPoolOptions::new().max_connections(8).connect(&url).await.unwrap();
                PostgresReservationStore::new(pool, config, Arc::new(clock)).await.unwrap()
            }
        },
        &clock,
    )
    .await;
    // The suite's pools have unique names; drop their rows.
    let pool = PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    sqlx::query("DELETE FROM girder_reservations WHERE pool = ANY($1)")
        .bind(&pools)
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_reservation_store_conforms() {
    let Some(url) = require(Service::Redis, "redis_reservation_store_conforms") else { return };
    let clock = clock();
    // A prefix of its own: sweeps and pools of parallel runs never meet.
    let prefix = format!("{}:", unique_name("girder:test:resv"));
    reservation_suite(
        |config| {
            let (url, clock, prefix) = (url.clone(), clock.clone(), prefix.clone());
            async move {
                let conn = redis_manager(&url).await.unwrap();
                RedisReservationStore::new(conn, &prefix, config, Arc::new(clock))
            }
        },
        &clock,
    )
    .await;
    let mut conn = redis_manager(&url).await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_postgres_pool_is_the_source_of_the_backend_error() {
    use std::error::Error as _;

    use girder_lock::BackendError;
    use girder_lock::reservation::{ReservationError, ReservationStore};

    let Some(url) = require(Service::Postgres, "postgres_reservation_failure_source") else {
        return;
    };
    let pool = PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let clock = Arc::new(clock());
    let store = PostgresReservationStore::new(pool.clone(), ReservationConfig::default(), clock)
        .await
        .unwrap();
    pool.close().await;
    let err = store.status(&unique_name("pool"), "s1").await.unwrap_err();
    assert!(matches!(err, ReservationError::Backend(BackendError::Postgres(_))), "{err:?}");
    assert_eq!(err.to_string(), "reservation backend");
    let backend = err.source().expect("the backend error");
    assert_eq!(backend.to_string(), "postgres");
    let driver = backend.source().and_then(|e| e.downcast_ref());
    assert!(matches!(driver, Some(sqlx::Error::PoolClosed)), "{err:?}");
}
