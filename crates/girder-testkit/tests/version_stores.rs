//! Every VersionStore backend passes the conformance suite.

use std::sync::Arc;

use girder_core::services::{Service, require};
use girder_lock::version::{
    MemoryVersionStore, PostgresVersionStore, RedisVersionStore, SqliteVersionStore,
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
