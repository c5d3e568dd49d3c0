//! Every VersionStore backend passes the conformance suite, and reports data tampered
//! with as corrupt rather than as a driver failure.

use std::sync::Arc;

use girder_core::services::{Service, require};
use girder_lock::BackendError;
use girder_lock::version::{
    MemoryVersionStore, PostgresVersionStore, RedisVersionStore, SqliteVersionStore, VersionError,
    VersionStore,
};
use girder_testkit::backends::{postgres_pool, redis_manager, sqlite_pool, unique_name};
use girder_testkit::version::version_conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_version_store_conforms() {
    // Memory stores share nothing, so "the same backend" is one shared store.
    let shared = Arc::new(MemoryVersionStore::new());
    version_conformance(|| {
        let shared = Arc::clone(&shared);
        async move { shared }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_version_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("versions.db");
    version_conformance(|| async {
        SqliteVersionStore::new(sqlite_pool(&path).await.unwrap()).await.unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_version_store_conforms() {
    let Some(url) = require(Service::Postgres, "postgres_version_store_conforms") else { return };
    let prefix = version_conformance(|| async {
        PostgresVersionStore::new(postgres_pool(&url).await.unwrap()).await.unwrap()
    })
    .await;
    let pool = postgres_pool(&url).await.unwrap();
    sqlx::query("DELETE FROM girder_versioned WHERE starts_with(key, $1)")
        .bind(&prefix)
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_version_store_conforms() {
    let Some(url) = require(Service::Redis, "redis_version_store_conforms") else { return };
    let prefix = format!("{}:", unique_name("girder:test:ver"));
    version_conformance(|| async {
        RedisVersionStore::new(redis_manager(&url).await.unwrap(), &prefix)
    })
    .await;
    let mut conn = redis_manager(&url).await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
}

#[tokio::test]
async fn sqlite_version_store_reports_tampered_rows() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("versions.db")).await.unwrap();
    let store = SqliteVersionStore::new(pool.clone()).await.unwrap();
    store.insert("seat", b"free").await.unwrap();
    sqlx::query("UPDATE girder_versioned SET version = -3 WHERE key = 'seat'")
        .execute(&pool)
        .await
        .unwrap();
    let corrupt = VersionError::Corrupt { key: "seat".to_owned(), problem: "negative version" };
    assert_eq!(store.get("seat").await, Err(corrupt.clone()));
    assert_eq!(
        store.compare_and_set("seat", 1, b"sold").await,
        Err(corrupt),
        "the conflict's current version is read back too"
    );
    assert_eq!(
        store.compare_and_set("seat", u64::MAX, b"sold").await,
        Err(VersionError::VersionTooLarge { version: u64::MAX })
    );
    pool.close().await;
    let closed = store.get("seat").await;
    assert!(
        matches!(&closed, Err(VersionError::Backend(BackendError::Sqlite(err)))
            if matches!(**err, sqlx::Error::PoolClosed)),
        "{closed:?}"
    );
}

#[tokio::test]
async fn redis_version_store_reports_tampered_hashes() {
    let Some(url) = require(Service::Redis, "redis_version_store_reports_tampered_hashes") else {
        return;
    };
    let prefix = format!("{}:", unique_name("girder:test:ver-tamper"));
    let mut conn = redis_manager(&url).await.unwrap();
    let store = RedisVersionStore::new(conn.clone(), &prefix);
    let hash = format!("{prefix}seat");
    let corrupt = |problem| Err(VersionError::Corrupt { key: hash.clone(), problem });

    let _: i64 =
        redis::cmd("HSET").arg(&hash).arg("v").arg("free").query_async(&mut conn).await.unwrap();
    assert_eq!(store.get("seat").await, corrupt("hash lacks its value or its version"));
    let _: i64 =
        redis::cmd("HSET").arg(&hash).arg("n").arg(-3).query_async(&mut conn).await.unwrap();
    assert_eq!(store.get("seat").await, corrupt("negative version"));
    let _: () = redis::cmd("SET").arg(&hash).arg("a string").query_async(&mut conn).await.unwrap();
    let refused = store.get("seat").await;
    let Err(VersionError::Backend(BackendError::Redis(err))) = &refused else {
        panic!("expected a Redis error, got {refused:?}");
    };
    assert_eq!(err.kind(), redis::ErrorKind::ExtensionError, "{err:?}");

    let _: i64 = redis::cmd("DEL").arg(&hash).query_async(&mut conn).await.unwrap();
}
