//! The Redis geo index passes the geo conformance suite (time from a manual clock
//! passed to the scripts), and by default judges TTLs by the server's `TIME`.

use std::sync::Arc;

use girder_core::services::{Service, require};
use girder_core::{Clock, ManualClock, SystemClock};
use girder_geo::Point;
use girder_geo::index::{
    AnyGeoIndex, Center, GeoError, GeoIndex, RedisGeoIndex, RedisIndexConfig, Search, Update,
};
use girder_testkit::backends::{redis_manager, unique_name};
use girder_testkit::geo::{SMALL_MAX, geo_conformance};

async fn index(url: &str, clock: Option<&ManualClock>, members_max: usize) -> RedisGeoIndex {
    let conn = redis_manager(url).await.unwrap();
    let config = RedisIndexConfig {
        key: unique_name("girder:test:geo"),
        members_max,
        purge_per_call: 4,
        clock: clock.map(|c| Arc::new(c.clone()) as Arc<dyn Clock>),
    };
    RedisGeoIndex::new(conn, config)
}

async fn drop_keys(url: &str, index: &RedisGeoIndex) {
    let mut admin = redis_manager(url).await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(index.geo_key())
        .arg(index.ttl_key())
        .query_async(&mut admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_geo_index_conforms() {
    let Some(url) = require(Service::Redis, "redis_geo_index_conforms") else { return };
    let clock = ManualClock::new(SystemClock.now_ms());
    let big = index(&url, Some(&clock), 1_000).await;
    let small = index(&url, Some(&clock), SMALL_MAX).await;
    geo_conformance(&big, &small, &clock).await;
    drop_keys(&url, &big).await;
    drop_keys(&url, &small).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_redis_geo_index_conforms() {
    let Some(url) = require(Service::Redis, "any_redis_geo_index_conforms") else { return };
    let clock = ManualClock::new(SystemClock.now_ms());
    let big = index(&url, Some(&clock), 1_000).await;
    let small = index(&url, Some(&clock), SMALL_MAX).await;
    let keys = [big.clone(), small.clone()];
    geo_conformance(&AnyGeoIndex::Redis(big), &AnyGeoIndex::Redis(small), &clock).await;
    for k in &keys {
        drop_keys(&url, k).await;
    }
}

/// Without a clock the scripts read the server's `TIME`: a deadline in the past by
/// the server's clock is expired, one far ahead is not, whatever this process's clock
/// says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_geo_ttls_follow_the_server_clock() {
    let Some(url) = require(Service::Redis, "redis_geo_ttls_follow_the_server_clock") else {
        return;
    };
    let index = index(&url, None, 1_000).await;
    let p = Point::new(10.0, 10.0).unwrap();
    let batch = [
        Update { member: "soon", point: p, ttl_ms: Some(60_000) },
        Update { member: "plain", point: p, ttl_ms: None },
    ];
    index.upsert(&batch).await.unwrap();
    assert_eq!(index.len().await.unwrap(), 2);
    // Move "soon"'s deadline to the server's past by hand: it is expired at once.
    let mut admin = redis_manager(&url).await.unwrap();
    let _: i64 = redis::cmd("ZADD")
        .arg(index.ttl_key())
        .arg(1)
        .arg("soon")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(index.len().await.unwrap(), 1);
    assert_eq!(index.position("soon").await.unwrap(), None);
    let hits = index.search(&Search::radius(Center::At(p), 10.0)).await.unwrap();
    assert_eq!(hits.iter().map(|h| &*h.member).collect::<Vec<_>>(), ["plain"]);
    // The next call purged it from both sets.
    let left: i64 = redis::cmd("ZCARD").arg(index.geo_key()).query_async(&mut admin).await.unwrap();
    assert_eq!(left, 1);
    drop_keys(&url, &index).await;
}

/// A failing backend is `GeoError::Backend` with the driver's error as its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_geo_failure_is_a_backend_error() {
    use std::error::Error as _;

    let Some(url) = require(Service::Redis, "redis_geo_backend_error") else { return };
    let index = index(&url, None, 1_000).await;
    let mut admin = redis_manager(&url).await.unwrap();
    // A string where the sorted set should be: the script's ZSCORE fails.
    let _: () =
        redis::cmd("SET").arg(index.geo_key()).arg("x").query_async(&mut admin).await.unwrap();
    let err = index.position("a").await.unwrap_err();
    assert!(matches!(err, GeoError::Backend(_)), "{err:?}");
    assert_eq!(err.source().map(ToString::to_string).as_deref(), Some("redis"));
    let driver = girder_core::error::source_of::<redis::RedisError>(&err);
    assert!(driver.expect("the redis error").to_string().contains("WRONGTYPE"), "{err:?}");
    drop_keys(&url, &index).await;
}
