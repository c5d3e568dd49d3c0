//! Redis as the cache's L2: the L2 conformance suite, the multi-instance suite (two
//! caches with separate L1s over one Redis: L2 hits, cross-instance invalidation), and
//! recovery from a dropped pub/sub connection.

use std::sync::Arc;
use std::time::Duration;

use girder_cache::l2::RedisL2Config;
use girder_cache::{Cache, CacheConfig, RedisL2, loader_fn};
use girder_core::services::{Service, require};
use girder_core::{Clock, ManualClock, SystemClock};
use girder_testkit::backends::{redis_manager, unique_name};
use girder_testkit::cache::{l2_store_conformance, multi_instance_conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_l2_conforms() {
    let Some(url) = require(Service::Redis, "redis_l2_conforms") else { return };
    // Redis expiry runs on real time: the suite polls for it instead of moving a clock.
    l2_store_conformance(|| async { RedisL2::connect(&url).await.expect("connect") }, |_| ()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_sharing_redis_conform() {
    let Some(url) = require(Service::Redis, "caches_sharing_redis_conform") else { return };
    let clock = ManualClock::new(SystemClock.now_ms());
    multi_instance_conformance(|| async { RedisL2::connect(&url).await.expect("connect") }, &clock)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_reconnects_and_clears_l1() {
    let Some(url) = require(Service::Redis, "a_dropped_subscription_reconnects") else { return };
    let mut admin = redis_manager(&url).await.unwrap();
    // The listener logs in as a user of its own, so the test can cut exactly its
    // connection (CLIENT KILL USER) without disturbing tests running alongside.
    let user = unique_name("girder-test-listener");
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", &user, "on", "nopass", "~*", "&*", "+@all"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut info = redis::Client::open(url.as_str()).unwrap().get_connection_info().clone();
    info.redis.username = Some(user.clone());
    info.redis.password = Some("unused".to_owned());
    let listener_client = redis::Client::open(info).unwrap();
    let config = RedisL2Config { reconnect_delay_min_ms: 10, ..RedisL2Config::default() };
    let l2 = RedisL2::new(listener_client, redis_manager(&url).await.unwrap(), config);

    let clock = ManualClock::new(SystemClock.now_ms());
    let loader = loader_fn(|code: String| async move {
        Ok::<_, std::io::Error>(Some(format!("https://example.com/{code}")))
    });
    let config = CacheConfig { name: unique_name("reconnect"), ..CacheConfig::default() };
    let cache = Cache::builder(config, loader).clock(Arc::new(clock)).l2(l2).build().unwrap();
    let mut progress = cache.listener_progress();
    let deadline = Duration::from_secs(10);
    tokio::time::timeout(deadline, progress.wait_for(|p| p.subscribed)).await.unwrap().unwrap();
    let key = "abc".to_owned();
    cache.get(&key).await.unwrap();
    assert!(cache.peek(&key).is_some());

    let killed: i64 =
        redis::cmd("CLIENT").arg(&["KILL", "USER", &user]).query_async(&mut admin).await.unwrap();
    assert_eq!(killed, 1, "expected to cut exactly the listener's connection");
    let resubscribed = tokio::time::timeout(deadline, progress.wait_for(|p| p.subscriptions >= 2));
    resubscribed.await.expect("the listener did not reconnect").unwrap();
    assert_eq!(cache.peek(&key), None, "L1 survived a gap in the invalidation stream");
    assert_eq!(cache.stats().resyncs, 2);

    cache.shutdown().await;
    let _: i64 = redis::cmd("ACL").arg(&["DELUSER", &user]).query_async(&mut admin).await.unwrap();
}
