//! Read routing against a real PostgreSQL streaming replica (`.ci/run` starts one on
//! port 5433): read-your-writes while the replica lags, a replica going down and
//! coming back, lag measured and exported, and reads that do reach the replica.
//!
//! Pausing replay affects every user of the replica, so the tests in this binary run
//! one at a time: a lock here (threads under `cargo test`) and a nextest test group
//! (processes under nextest, `.config/nextest.toml`).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use girder_core::services::{Service, require};
use girder_sql::replica::{Health, PrimaryBecause, ReadRouter, ReplicaConfig, Served, WriteToken};
use girder_sql::{Db, PoolConfig};
use girder_testkit::replica::Paused;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The process's metrics recorder, installed before any router registers gauges.
fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("the only recorder");
        handle
    })
}

/// The value of `name{replica="label"}` in the exported metrics.
fn gauge(name: &str, label: &str) -> f64 {
    let prefix = format!("{name}{{replica=\"{label}\"}} ");
    let text = metrics().render();
    let line = text.lines().find(|l| l.starts_with(&prefix));
    let line = line.unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
    line[prefix.len()..].trim().parse().expect("a number")
}

/// The primary, the replica's URL, a direct pool on the replica, and a fresh table
/// `(id BIGINT PRIMARY KEY, v TEXT)` on the primary.
struct Setup {
    primary: Db,
    replica_url: String,
    replica: PgPool,
    table: String,
}

async fn setup(test: &str) -> Option<Setup> {
    let primary_url = require(Service::Postgres, test)?;
    let replica_url = require(Service::PostgresReplica, test)?;
    metrics();
    let config = PoolConfig { max_connections: 16, acquire_timeout_ms: 10_000 };
    let primary = Db::connect(&primary_url, config).await.expect("primary");
    let replica =
        PgPoolOptions::new().max_connections(2).connect(&replica_url).await.expect("replica");
    // A run killed while replay was paused would leave it paused.
    sqlx::query("SELECT pg_wal_replay_resume()").execute(&replica).await.expect("resume");
    let table = format!("replica_{test}_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, v TEXT NOT NULL)"))
        .execute(pg(&primary))
        .await
        .expect("create table");
    let setup = Setup { primary, replica_url, replica, table };
    setup.catch_up().await;
    Some(setup)
}

impl Setup {
    /// Waits until the replica has replayed everything the primary has written so
    /// far (the table, and whatever an earlier test left it to replay), bounded.
    async fn catch_up(&self) {
        let primary: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(pg(&self.primary))
            .await
            .expect("primary position");
        for _ in 0..6_000 {
            let replayed: Option<bool> =
                sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
                    .bind(&primary)
                    .fetch_one(&self.replica)
                    .await
                    .expect("replica position");
            if replayed == Some(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the replica did not replay {primary} within a minute; is it streaming?");
    }

    async fn router(&self, urls: &[&str], config: ReplicaConfig) -> ReadRouter {
        ReadRouter::connect(self.primary.clone(), urls, config).await.expect("router")
    }

    async fn insert(&self, db: &Db, id: i64, async_commit: bool) -> Result<(), sqlx::Error> {
        let mut tx = pg(db).begin().await?;
        if async_commit {
            // The commit returns before its WAL record is written out: the token must
            // still cover it.
            sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
        }
        sqlx::query(&format!("INSERT INTO {} (id, v) VALUES ($1, $2)", self.table))
            .bind(id)
            .bind(value_of(id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Row `id`'s value and whether the server that answered is a standby.
    async fn select(&self, db: &Db, id: i64) -> Result<(Option<String>, bool), sqlx::Error> {
        let sql =
            format!("SELECT (SELECT v FROM {} WHERE id = $1), pg_is_in_recovery()", self.table);
        sqlx::query_as(&sql).bind(id).fetch_one(pg(db)).await
    }

    async fn teardown(self) {
        let drop = format!("DROP TABLE {}", self.table);
        sqlx::query(&drop).execute(pg(&self.primary)).await.expect("drop table");
        self.primary.close().await;
        self.replica.close().await;
    }
}

fn pg(db: &Db) -> &PgPool {
    match db {
        Db::Postgres(pool) => pool,
        Db::Sqlite(_) => panic!("these tests run on PostgreSQL"),
    }
}

fn value_of(id: i64) -> String {
    format!("v{id}")
}

/// Asserts that where the router says a read ran is where it ran.
fn check_served(served: Served, in_recovery: bool) {
    assert_eq!(matches!(served, Served::Replica(_)), in_recovery, "{served:?}");
}

/// Writes rows `ids` through the router, each then read back with its token, from
/// `workers` concurrent callers; returns how many reads the replica served.
async fn write_then_read(
    setup: &Setup,
    router: &ReadRouter,
    ids: std::ops::Range<i64>,
    workers: i64,
) -> usize {
    let worker = |w: i64| {
        let ids = ids.clone();
        async move {
            let mut on_replica = 0;
            for id in ids.filter(|id| id % workers == w) {
                let ((), token) = router
                    .write(|db| async move { setup.insert(&db, id, id % 2 == 0).await })
                    .await
                    .expect("write");
                assert!(matches!(token, WriteToken::After(_)), "{token}");
                let read = router
                    .read_after(token, |db| async move { setup.select(&db, id).await })
                    .await
                    .expect("read");
                let (ref value, in_recovery) = read.value;
                assert_eq!(value.as_deref(), Some(&*value_of(id)), "row {id}, {read:?}");
                check_served(read.served, in_recovery);
                on_replica += usize::from(in_recovery);
            }
            on_replica
        }
    };
    futures_util::future::join_all((0..workers).map(worker)).await.into_iter().sum()
}

#[tokio::test]
async fn read_your_writes_holds_for_10k_pairs_while_the_replica_lags() {
    let _serial = SERIAL.lock().await;
    let Some(owned) = setup("ryw").await else { return };
    let setup = &owned;
    let router = setup.router(&[&setup.replica_url], ReplicaConfig::default()).await;
    assert_eq!(router.replicas()[0].health, Health::Healthy, "{:?}", router.replicas());
    {
        let _paused = Paused::new(&setup.replica, &setup.replica_url).await;
        router.refresh().await;
        assert!(router.replicas()[0].replay_paused);
        let on_replica = write_then_read(setup, &router, 0..10_000, 8).await;
        // The replica has none of these rows: a read it served would have failed above.
        assert_eq!(on_replica, 0);
        // It lags for real: a read without a token is served there, stale.
        let count = format!("SELECT count(*), pg_is_in_recovery() FROM {}", setup.table);
        let stale = router
            .read(|db| {
                let count = &count;
                async move { sqlx::query_as::<_, (i64, bool)>(count).fetch_one(pg(&db)).await }
            })
            .await
            .expect("count");
        assert_eq!(stale.served, Served::Replica(0));
        assert_eq!(stale.value, (0, true), "the paused replica saw none of the writes");
    }
    // Unpaused, the replica trails by moments: reads wait for it or go to the primary,
    // and still see their writes whether their commit was synchronous or not. The
    // monitor runs meanwhile, as it does in a server.
    setup.catch_up().await;
    router.refresh().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let work = async {
        let on_replica = write_then_read(setup, &router, 10_000..12_000, 8).await;
        let _ = stop.send(());
        on_replica
    };
    let ((), on_replica) =
        tokio::join!(router.monitor(async { stopped.await.unwrap_or(()) }), work);
    eprintln!("unpaused: {on_replica} of 2000 token reads served by the replica");
    assert!(on_replica > 0, "a caught-up replica serves token reads");
    owned.teardown().await;
}

#[tokio::test]
async fn reads_without_a_token_go_to_the_replica() {
    let _serial = SERIAL.lock().await;
    let Some(owned) = setup("plain").await else { return };
    let setup = &owned;
    let config = ReplicaConfig { read_your_writes_wait_ms: 10_000, ..ReplicaConfig::default() };
    let router = setup.router(&[&setup.replica_url], config).await;
    let ((), token) =
        router.write(|db| async move { setup.insert(&db, 1, false).await }).await.expect("write");
    // A generous wait: a replica that is streaming replays one row long before it.
    let read = router
        .read_after(token, |db| async move { setup.select(&db, 1).await })
        .await
        .expect("read");
    assert_eq!(read.value, (Some(value_of(1)), true));
    assert_eq!(read.served, Served::Replica(0));
    for _ in 0..50 {
        let read = router.read(|db| async move { setup.select(&db, 1).await }).await.expect("read");
        assert_eq!(read.served, Served::Replica(0));
        assert_eq!(read.value, (Some(value_of(1)), true), "answered by a standby");
    }
    let read = router
        .read_after(WriteToken::Primary, |db| async move { setup.select(&db, 1).await })
        .await
        .expect("read");
    assert_eq!(read.served, Served::Primary(PrimaryBecause::TokenNeedsPrimary));
    assert_eq!(read.value, (Some(value_of(1)), false), "answered by the primary");
    owned.teardown().await;
}

/// A TCP proxy to the replica that the test can cut, as if the replica went down.
struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    accept: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let mut proxy = Self { addr: ([127, 0, 0, 1], 0).into(), target, accept: None };
        proxy.restart().await;
        proxy
    }

    async fn restart(&mut self) {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        socket.bind(self.addr).expect("bind");
        let listener: TcpListener = socket.listen(64).expect("listen");
        self.addr = listener.local_addr().expect("addr");
        let target = self.target;
        self.accept = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Refuses new connections and cuts every open one.
    async fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@{}/postgres", self.addr)
    }
}

/// The replica's address, from its URL.
fn replica_addr(url: &str) -> SocketAddr {
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("replica url");
    let host = if options.get_host() == "localhost" { "127.0.0.1" } else { options.get_host() };
    format!("{host}:{}", options.get_port()).parse().expect("replica host is an IP address")
}

/// A port on which nothing listens.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn a_replica_going_down_changes_where_reads_go_never_what_they_answer() {
    let _serial = SERIAL.lock().await;
    let Some(owned) = setup("down").await else { return };
    let setup = &owned;
    let ids = 1..=40_i64;
    for id in ids.clone() {
        setup.insert(&setup.primary, id, false).await.expect("insert");
    }
    let mut proxy = Proxy::start(replica_addr(&setup.replica_url)).await;
    let config = ReplicaConfig { read_your_writes_wait_ms: 10_000, ..ReplicaConfig::default() };
    let proxied = proxy.url();
    let router = setup.router(&[&proxied], config).await;
    assert_eq!(router.replicas()[0].health, Health::Healthy);
    // Let the replica catch up, so that every answer is fixed from here on.
    let token = router.token().await;
    let caught_up = router
        .read_after(token, |db| async move { setup.select(&db, 1).await })
        .await
        .expect("read");
    assert_eq!(caught_up.served, Served::Replica(0));

    // Every read's answer, and where it ran.
    let answers = |router: ReadRouter| {
        let ids = ids.clone();
        async move {
            let mut out = Vec::new();
            for id in ids {
                let read = router
                    .read(|db| async move { setup.select(&db, id).await })
                    .await
                    .expect("read");
                check_served(read.served, read.value.1);
                out.push((read.value.0, read.served));
            }
            out
        }
    };
    let values = |answers: &[(Option<String>, Served)]| {
        answers.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>()
    };
    let expected: Vec<_> = ids.clone().map(|id| Some(value_of(id))).collect();
    let up = answers(router.clone()).await;
    assert_eq!(values(&up), expected);
    assert!(up.iter().all(|(_, s)| *s == Served::Replica(0)), "{up:?}");

    // Down between two probes: the first read fails there and is answered by the
    // primary; the replica is skipped from then on.
    proxy.cut().await;
    let down = answers(router.clone()).await;
    assert_eq!(values(&down), expected);
    assert_eq!(down[0].1, Served::Primary(PrimaryBecause::ReplicaFailed), "{down:?}");
    assert!(down[1..].iter().all(|(_, s)| *s == Served::Primary(PrimaryBecause::NoReplica)));
    assert_eq!(router.replicas()[0].health, Health::Down);
    assert_eq!(gauge("girder_sql_replica_healthy", &router.replicas()[0].label), 0.0);
    router.refresh().await;
    assert_eq!(router.replicas()[0].health, Health::Down, "still down at the next probe");
    let ((), token) =
        router.write(|db| async move { setup.insert(&db, 100, false).await }).await.expect("write");
    let read = router
        .read_after(token, |db| async move { setup.select(&db, 100).await })
        .await
        .expect("read");
    assert_eq!(read.value, (Some(value_of(100)), false));
    assert_eq!(read.served, Served::Primary(PrimaryBecause::NotCaughtUp));

    // Back up: the next probe brings it back.
    proxy.restart().await;
    router.refresh().await;
    assert_eq!(router.replicas()[0].health, Health::Healthy);
    assert_eq!(gauge("girder_sql_replica_healthy", &router.replicas()[0].label), 1.0);
    let back = answers(router.clone()).await;
    assert_eq!(values(&back), expected);
    assert!(back.iter().all(|(_, s)| *s == Served::Replica(0)), "{back:?}");

    // A replica that was never up is skipped from the start; the others serve.
    let dead = format!("postgres://postgres@127.0.0.1:{}/postgres", dead_port());
    let two = setup.router(&[&dead, &proxied], config).await;
    let health: Vec<_> = two.replicas().iter().map(|r| r.health).collect();
    assert_eq!(health, [Health::Down, Health::Healthy]);
    let mixed = answers(two.clone()).await;
    assert_eq!(values(&mixed), expected);
    assert!(mixed.iter().all(|(_, s)| *s == Served::Replica(1)), "{mixed:?}");
    // Only dead replicas: the primary answers everything.
    let none = setup.router(&[&dead], config).await;
    let alone = answers(none).await;
    assert_eq!(values(&alone), expected);
    assert!(alone.iter().all(|(_, s)| *s == Served::Primary(PrimaryBecause::NoReplica)));
    proxy.cut().await;
    owned.teardown().await;
}

#[tokio::test]
async fn lag_is_measured_exported_and_bounds_which_replicas_serve() {
    let _serial = SERIAL.lock().await;
    let Some(owned) = setup("lag").await else { return };
    let setup = &owned;
    let config = ReplicaConfig { read_your_writes_wait_ms: 10_000, ..ReplicaConfig::default() };
    let router = setup.router(&[&setup.replica_url], config).await;
    // A router that skips a replica more than 64 KiB behind.
    let strict = ReplicaConfig { lag_bytes_max: 64 * 1024, ..config };
    let strict = setup.router(&[&setup.replica_url], strict).await;
    let label = router.replicas()[0].label.clone();
    // Caught up first, so the replica has replayed a transaction to measure from.
    let ((), token) =
        router.write(|db| async move { setup.insert(&db, 0, false).await }).await.expect("write");
    let read = router
        .read_after(token, |db| async move { setup.select(&db, 0).await })
        .await
        .expect("read");
    assert_eq!(read.served, Served::Replica(0));
    router.refresh().await;
    let before = router.replicas()[0].lag_bytes;

    let paused = Paused::new(&setup.replica, &setup.replica_url).await;
    // About 1 MB of WAL the paused replica receives but does not replay.
    let insert = format!(
        "INSERT INTO {} (id, v) SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g",
        setup.table
    );
    sqlx::query(&insert).execute(pg(&setup.primary)).await.expect("bulk insert");
    router.refresh().await;
    let lagging = router.replicas()[0].clone();
    assert!(lagging.replay_paused);
    assert!(lagging.lag_bytes > before + 512 * 1024, "{before} then {lagging:?}");
    assert!(lagging.lag_secs > 0.0, "{lagging:?}");
    assert_eq!(lagging.health, Health::Healthy, "within the default 16 MiB");
    #[allow(clippy::cast_precision_loss)]
    let exported = lagging.lag_bytes as f64;
    assert_eq!(gauge("girder_sql_replica_lag_bytes", &label), exported);
    assert!(gauge("girder_sql_replica_lag_seconds", &label) > 0.0);
    strict.refresh().await;
    // The strict router skips it: reads without a token go to the primary.
    assert_eq!(strict.replicas()[0].health, Health::TooFarBehind);
    let read = strict.read(|db| async move { setup.select(&db, 0).await }).await.expect("read");
    assert_eq!(read.served, Served::Primary(PrimaryBecause::NoReplica));

    drop(paused);
    setup.catch_up().await;
    router.refresh().await;
    let token = router.token().await;
    let read = router
        .read_after(token, |db| async move { setup.select(&db, 1).await })
        .await
        .expect("read");
    assert_eq!(read.served, Served::Replica(0), "caught up after resuming");
    strict.refresh().await;
    let resumed = router.replicas()[0].clone();
    assert!(!resumed.replay_paused);
    assert!(resumed.lag_bytes < lagging.lag_bytes, "{resumed:?} after {lagging:?}");
    assert_eq!(strict.replicas()[0].health, Health::Healthy, "{:?}", strict.replicas());
    owned.teardown().await;
}
