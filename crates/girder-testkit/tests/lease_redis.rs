//! The Redis lease store passes the lease conformance suite and the concurrent history
//! check on two connections, and keeps its keys the documented way: the lease key
//! expires (TTL + grace) for garbage collection only, the fence counter never does.

use std::sync::Arc;
use std::time::Duration;

use girder_core::services::{Service, require};
use girder_core::{Clock, ManualClock, SystemClock};
use girder_lock::lease::{LeaseStore, RedisLeaseConfig, RedisLeaseStore};
use girder_testkit::backends::{redis_manager, unique_name};
use girder_testkit::lease::{lease_conformance, lease_history_run};

async fn store(url: &str, config: &RedisLeaseConfig, clock: &ManualClock) -> RedisLeaseStore {
    let conn = redis_manager(url).await.unwrap();
    RedisLeaseStore::with_clock(conn, config.clone(), Arc::new(clock.clone()))
}

fn config() -> RedisLeaseConfig {
    RedisLeaseConfig { key_prefix: unique_name("girder:test:lease") + ":", ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lease_store_conforms() {
    let Some(url) = require(Service::Redis, "redis_lease_store_conforms") else { return };
    let clock = ManualClock::new(SystemClock.now_ms());
    let config = config();
    let a = store(&url, &config, &clock).await;
    let b = store(&url, &config, &clock).await;
    lease_conformance(&a, &b, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lease_history_is_safe_under_concurrency() {
    let Some(url) = require(Service::Redis, "redis_lease_history") else { return };
    let clock = ManualClock::new(SystemClock.now_ms());
    let config = config();
    let stores = vec![
        Arc::new(store(&url, &config, &clock).await),
        Arc::new(store(&url, &config, &clock).await),
    ];
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
async fn redis_keys_expire_for_gc_only_and_fence_counters_persist() {
    let Some(url) = require(Service::Redis, "redis_lease_keys") else { return };
    let clock = ManualClock::new(SystemClock.now_ms());
    let config = RedisLeaseConfig { gc_grace_ms: 5_000, ..config() };
    let a = store(&url, &config, &clock).await;
    let mut admin = redis_manager(&url).await.unwrap();
    let lease = a.try_acquire("k", 1_000).await.unwrap().unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg(a.lease_key("k")).query_async(&mut admin).await.unwrap();
    assert!((5_000..=6_000).contains(&pttl), "lease key PTTL {pttl}, want ttl + grace");
    let fence_ttl: i64 =
        redis::cmd("PTTL").arg(a.fence_key("k")).query_async(&mut admin).await.unwrap();
    assert_eq!(fence_ttl, -1, "the fence counter must never expire");

    // Logical expiry is the stored one, not Redis's: past it by the clock, the key is
    // taken over although the Redis key still exists.
    clock.advance(Duration::from_millis(1_000));
    let exists: i64 =
        redis::cmd("EXISTS").arg(a.lease_key("k")).query_async(&mut admin).await.unwrap();
    assert_eq!(exists, 1);
    let next = a.try_acquire("k", 1_000).await.unwrap().expect("logically expired");
    assert_eq!(next.token(), lease.token() + 1);

    // Releasing deletes the lease key; the counter stays, so tokens keep growing even
    // after the lease key is gone.
    a.release(&next).await.unwrap();
    let exists: i64 =
        redis::cmd("EXISTS").arg(a.lease_key("k")).query_async(&mut admin).await.unwrap();
    assert_eq!(exists, 0);
    let _: () = redis::cmd("DEL").arg(a.lease_key("k")).query_async(&mut admin).await.unwrap();
    let again = a.try_acquire("k", 1_000).await.unwrap().unwrap();
    assert!(again.token() > next.token());
    let _: i64 = redis::cmd("DEL")
        .arg(a.lease_key("k"))
        .arg(a.fence_key("k"))
        .query_async(&mut admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_failure_keeps_the_driver_error_as_its_source() {
    use std::error::Error as _;

    use girder_lock::BackendError;
    use girder_lock::lease::LeaseError;

    let Some(url) = require(Service::Redis, "redis_lease_failure_source") else { return };
    let clock = ManualClock::new(SystemClock.now_ms());
    let a = store(&url, &config(), &clock).await;
    let mut admin = redis_manager(&url).await.unwrap();
    // A list where the lease's string should be: the script's GET fails on the server.
    let _: i64 =
        redis::cmd("RPUSH").arg(a.lease_key("k")).arg("x").query_async(&mut admin).await.unwrap();
    let err = a.try_acquire("k", 1_000).await.unwrap_err();
    assert!(matches!(err, LeaseError::Backend(BackendError::Redis(_))), "{err:?}");
    assert_eq!(err.to_string(), "lease backend");
    let backend = err.source().expect("the backend error");
    assert_eq!(backend.to_string(), "redis");
    let driver = backend.source().and_then(|e| e.downcast_ref::<redis::RedisError>());
    let driver = driver.expect("the redis error itself");
    assert!(driver.to_string().contains("WRONGTYPE"), "{driver}");
    let _: i64 = redis::cmd("DEL").arg(a.lease_key("k")).query_async(&mut admin).await.unwrap();
}
