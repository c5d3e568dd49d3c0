//! Every RangeSource backend passes the conformance suite, plus each backend's own
//! edge cases (exhaustion at the id limit, a counter tampered with).

use std::sync::Arc;

use girder_core::services::{Service, require};
use girder_id::counter::{
    BackendError, Corruption, ID_LIMIT, LeaseError, MemorySource, PostgresSource, RangeSource,
    RedisSource, SqliteSource,
};
use girder_testkit::backends::{postgres_pool, redis_manager, sqlite_pool, unique_name};
use girder_testkit::id::range_source_conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_source_conforms() {
    // Instances of MemorySource share nothing, so "the same counter" is one shared value.
    let shared = Arc::new(MemorySource::new(0));
    range_source_conformance(|| {
        let shared = Arc::clone(&shared);
        async move { shared }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_source_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.db");
    // Each instance gets its own pool on the file, as separate processes would.
    range_source_conformance(|| async {
        let pool = sqlite_pool(&path).await.unwrap();
        SqliteSource::new(pool, "conformance").await.unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_source_conforms() {
    let Some(url) = require(Service::Postgres, "postgres_source_conforms") else { return };
    let counter = unique_name("conformance");
    range_source_conformance(|| async {
        let pool = postgres_pool(&url).await.unwrap();
        PostgresSource::new(pool, &counter).await.unwrap()
    })
    .await;
    let pool = postgres_pool(&url).await.unwrap();
    sqlx::query("DELETE FROM girder_id_counters WHERE name = $1")
        .bind(&counter)
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_source_conforms() {
    let Some(url) = require(Service::Redis, "redis_source_conforms") else { return };
    let key = unique_name("girder:test:id");
    range_source_conformance(|| async {
        RedisSource::new(redis_manager(&url).await.unwrap(), &key)
    })
    .await;
    let mut conn = redis_manager(&url).await.unwrap();
    let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
}

#[tokio::test]
async fn sqlite_source_stops_at_the_limit_and_reports_a_missing_row() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("ids.db")).await.unwrap();
    let source = SqliteSource::new(pool.clone(), "edge").await.unwrap();
    assert_eq!(source.counter(), "edge");
    sqlx::query("UPDATE girder_id_counters SET next_id = ?1 WHERE name = 'edge'")
        .bind(ID_LIMIT as i64 - 5)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(source.lease(5).await, Ok(ID_LIMIT - 5..ID_LIMIT));
    assert_eq!(source.lease(1).await, Err(LeaseError::Exhausted));
    // The refused lease left the counter intact (SQLite would otherwise turn it into a REAL).
    let (value, kind): (i64, String) = sqlx::query_as(
        "SELECT next_id, typeof(next_id) FROM girder_id_counters WHERE name = 'edge'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((value, kind.as_str()), (i64::MAX, "integer"));

    sqlx::query("DELETE FROM girder_id_counters").execute(&pool).await.unwrap();
    assert_eq!(
        source.lease(1).await,
        Err(LeaseError::Corrupt { counter: "edge".to_owned(), problem: Corruption::Missing })
    );
}

#[tokio::test]
async fn sqlite_source_reopened_continues_after_the_last_lease() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.db");
    let first = SqliteSource::new(sqlite_pool(&path).await.unwrap(), "restart").await.unwrap();
    assert_eq!(first.lease(10).await, Ok(0..10));
    drop(first);
    let second = SqliteSource::new(sqlite_pool(&path).await.unwrap(), "restart").await.unwrap();
    assert_eq!(second.lease(10).await, Ok(10..20));
    let other = SqliteSource::new(sqlite_pool(&path).await.unwrap(), "other").await.unwrap();
    assert_eq!(other.lease(3).await, Ok(0..3), "counters are independent");
}

#[tokio::test]
async fn postgres_source_stops_at_the_limit() {
    let Some(url) = require(Service::Postgres, "postgres_source_stops_at_the_limit") else {
        return;
    };
    let pool = postgres_pool(&url).await.unwrap();
    let counter = unique_name("edge");
    let source = PostgresSource::new(pool.clone(), &counter).await.unwrap();
    assert_eq!(source.lease(3).await, Ok(0..3));
    sqlx::query("UPDATE girder_id_counters SET next_id = $1 WHERE name = $2")
        .bind(ID_LIMIT as i64 - 5)
        .bind(&counter)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(source.lease(5).await, Ok(ID_LIMIT - 5..ID_LIMIT));
    assert_eq!(source.lease(1).await, Err(LeaseError::Exhausted));
    sqlx::query("DELETE FROM girder_id_counters WHERE name = $1")
        .bind(&counter)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        source.lease(1).await,
        Err(LeaseError::Corrupt { counter: counter.clone(), problem: Corruption::Missing })
    );
}

#[tokio::test]
async fn postgres_sources_created_concurrently_share_one_counter() {
    let Some(url) = require(Service::Postgres, "postgres_sources_created_concurrently") else {
        return;
    };
    let counter = unique_name("create-race");
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let (url, counter) = (url.clone(), counter.clone());
            tokio::spawn(async move {
                PostgresSource::new(postgres_pool(&url).await.unwrap(), &counter).await.unwrap()
            })
        })
        .collect();
    let mut next = 0;
    for open in opens {
        let source = open.await.unwrap();
        assert_eq!(source.lease(2).await, Ok(next..next + 2), "the row was created once");
        next += 2;
    }
    let pool = postgres_pool(&url).await.unwrap();
    sqlx::query("DELETE FROM girder_id_counters WHERE name = $1")
        .bind(&counter)
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn redis_source_stops_at_the_limit_and_rejects_a_tampered_key() {
    let Some(url) = require(Service::Redis, "redis_source_stops_at_the_limit") else { return };
    let mut conn = redis_manager(&url).await.unwrap();
    let key = unique_name("girder:test:id-edge");
    let source = RedisSource::new(conn.clone(), &key);
    assert_eq!(source.key(), key);
    assert_eq!(source.lease(4).await, Ok(0..4), "a missing key counts from 0");

    let set = |value: String| {
        let (mut conn, key) = (conn.clone(), key.clone());
        async move {
            let _: () =
                redis::cmd("SET").arg(&key).arg(value).query_async(&mut conn).await.unwrap();
        }
    };
    set((ID_LIMIT - 5).to_string()).await;
    assert_eq!(source.lease(5).await, Ok(ID_LIMIT - 5..ID_LIMIT));
    assert_eq!(source.lease(1).await, Err(LeaseError::Exhausted));

    let corrupt = |problem| Err(LeaseError::Corrupt { counter: key.clone(), problem });
    set("-100".to_owned()).await;
    assert_eq!(source.lease(1).await, corrupt(Corruption::Negative { value: -99 }));
    set("-8".to_owned()).await;
    assert_eq!(
        source.lease(10).await,
        corrupt(Corruption::BelowIncrement { value: 2, increment: 10 })
    );
    set("not a number".to_owned()).await;
    // Redis refuses INCRBY on a string; its own error is the source.
    let refused = source.lease(1).await;
    let Err(LeaseError::Backend(BackendError::Redis(err))) = &refused else {
        panic!("expected a Redis error, got {refused:?}");
    };
    assert_eq!(err.kind(), redis::ErrorKind::ResponseError, "{err:?}");

    let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
}
