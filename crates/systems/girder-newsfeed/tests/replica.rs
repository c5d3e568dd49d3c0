//! News Feed over a PostgreSQL streaming replica (`.ci/run` starts one on port 5433):
//! feed queries go to the replica, and a reader's own follow is seen at once even
//! while the replica has stopped replaying (read-your-writes through the write's WAL
//! position). Pausing replay affects every user of the replica, so this binary runs
//! in the `postgres-replica` test group (`.config/nextest.toml`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use girder_core::SystemClock;
use girder_core::services::{Service, require};
use girder_newsfeed::{NewsFeed, NewsFeedConfig};
use girder_sql::replica::{ReadRouter, ReplicaConfig};
use girder_sql::{Db, PoolConfig};
use girder_system::Context;
use girder_testkit::backends::TestDb;
use girder_testkit::replica::Paused;
use sqlx::postgres::PgPoolOptions;

async fn feed_ids(feed: &NewsFeed, reader: &str) -> Vec<i64> {
    let page = feed.feed(reader, Some(i64::MAX), 50).await.expect("feed");
    page.items.iter().map(|i| i.post.id).collect()
}

#[tokio::test]
async fn replica_reads_see_the_readers_own_follow_while_replay_is_paused() {
    const TEST: &str = "replica_reads_see_the_readers_own_follow_while_replay_is_paused";
    let Some(replica_base) = require(Service::PostgresReplica, TEST) else { return };
    let Some(db) = TestDb::postgres(TEST).await else { return };
    let TestDb::Postgres { name, .. } = &db else { unreachable!("a PostgreSQL database") };
    let base = replica_base.split('?').next().unwrap_or(&replica_base);
    let replica_url = format!("{}/{name}", base.rsplit_once('/').expect("a path").0);
    // The database reaches the replica once its creation is replayed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let replica = loop {
        match PgPoolOptions::new().max_connections(2).connect(&replica_url).await {
            Ok(pool) => break pool,
            Err(e) => assert!(Instant::now() < deadline, "the replica never had {name}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = sqlx::query("SELECT pg_wal_replay_resume()").execute(&replica).await;

    let primary = Db::connect(db.url(), PoolConfig::default()).await.expect("primary");
    girder_sql::migrate::run(&primary, girder_sql::migrate::server()).await.expect("migrations");
    girder_sql::migrate::run(&primary, girder_newsfeed::migrations()).await.expect("migrations");
    let router = ReadRouter::connect(
        primary.clone(),
        std::slice::from_ref(&replica_url),
        ReplicaConfig::default(),
    )
    .await
    .expect("router");
    let open = |dir: &std::path::Path| {
        let context = Context::new(primary.clone(), Arc::new(SystemClock))
            .with_data_dir(dir)
            .with_reads(router.clone());
        // Threshold 0: every post is pulled, so the feed is the graph's query.
        let config = NewsFeedConfig { push_threshold: 0, ..NewsFeedConfig::new() };
        async move { NewsFeed::open_with(&context, config).await.expect("open") }
    };
    let (dir_a, dir_b) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
    let a = open(dir_a.path()).await;
    for user in ["star", "reader", "early"] {
        a.touch(user).await.expect("touch");
    }
    let mut posts = Vec::new();
    for n in 0..3 {
        posts.push(a.post("star", &format!("p{n}")).await.expect("post").id);
    }
    posts.reverse();
    a.follow("early", "star").await.expect("follow");
    // Wait until the replica has all of it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let follows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nf_follows")
            .fetch_one(&replica)
            .await
            .unwrap_or(0);
        if follows == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the replica did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    router.refresh().await;

    let paused = Paused::new(&replica, &replica_url).await;
    a.follow("reader", "star").await.expect("follow");
    // The reader's own follow is seen at once: the replica has not replayed it, so
    // the read waits its bound and goes to the primary.
    assert_eq!(feed_ids(&a, "reader").await, posts, "read-your-writes");
    // Another instance, which did not take the follow, reads from the replica as it
    // stands: the follow is not there yet — the reads really go to the replica.
    let b = open(dir_b.path()).await;
    assert_eq!(feed_ids(&b, "reader").await, Vec::<i64>::new(), "a paused replica answers");
    // A reader with no recent write reads from the replica, which has what it needs.
    assert_eq!(feed_ids(&a, "early").await, posts);
    drop(paused);
    // Replay resumed: the other instance sees the follow once the replica replays it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while feed_ids(&b, "reader").await != posts {
        assert!(Instant::now() < deadline, "the replica never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    replica.close().await;
    router.close_replicas().await;
    db.drop_db().await;
}
