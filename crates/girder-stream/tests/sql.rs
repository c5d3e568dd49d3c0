//! Checkpoints, fenced leases and rebalancing on both engines.
#![cfg(feature = "sql")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use girder_core::{Clock, ManualClock, SystemClock};
use girder_sql::{Db, PoolConfig, on_db};
use girder_stream::log::{LogConfig, PartitionedLog};
use girder_stream::runner::{Checkpoint, Committer, PartitionRunner, RunnerConfig};
use girder_stream::sql::{
    Coordinator, CoordinatorConfig, SqlCommitter, SqlSink, SqlStreamError, SqlTx, StreamStore,
    assignment, migrations,
};
use girder_stream::{Count, Emission, EmissionKind, OperatorConfig, WindowSpec};
use girder_testkit::backends::TestDb;

/// Upserts counts into a table of its own; fails on demand.
#[derive(Debug, Default)]
struct CountSink {
    fail: std::sync::atomic::AtomicBool,
}

impl SqlSink<u64, u64> for CountSink {
    async fn write(
        &self,
        tx: SqlTx<'_>,
        _partition: u32,
        emissions: &[Emission<u64, u64>],
    ) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO counts (k, start_ms, n) VALUES ($1, $2, $3) \
                   ON CONFLICT (k, start_ms) DO UPDATE SET n = excluded.n";
        assert!(
            emissions.iter().all(|e| e.kind != EmissionKind::Retract),
            "tumbling windows never retract"
        );
        match tx {
            SqlTx::Sqlite(conn) => {
                for e in emissions {
                    sqlx::query(sql)
                        .bind(e.key as i64)
                        .bind(e.window.start)
                        .bind(e.value as i64)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            SqlTx::Postgres(conn) => {
                for e in emissions {
                    sqlx::query(sql)
                        .bind(e.key as i64)
                        .bind(e.window.start)
                        .bind(e.value as i64)
                        .execute(&mut *conn)
                        .await?;
                }
            }
        }
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(sqlx::Error::Protocol("the sink failed on purpose".into()));
        }
        Ok(())
    }
}

async fn open(db: &TestDb) -> Db {
    let db = Db::connect(db.url(), PoolConfig::default()).await.unwrap();
    girder_sql::migrate::run(&db, migrations()).await.unwrap();
    on_db!(&db, |pool| {
        sqlx::query("CREATE TABLE IF NOT EXISTS counts (k BIGINT NOT NULL, start_ms BIGINT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (k, start_ms))")
            .execute(pool)
            .await
            .unwrap();
    });
    db
}

async fn counts(db: &Db) -> BTreeMap<(i64, i64), i64> {
    let rows: Vec<(i64, i64, i64)> = on_db!(db, |pool| {
        sqlx::query_as("SELECT k, start_ms, n FROM counts").fetch_all(pool).await.unwrap()
    });
    rows.into_iter().map(|(k, s, n)| ((k, s), n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_fence_stale_holders_and_commits_are_atomic() {
    for test_db in TestDb::all("leases_fence_stale_holders_and_commits_are_atomic").await {
        let db = open(&test_db).await;
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = StreamStore::new(db.clone(), "p", clock.clone() as Arc<dyn Clock>);
        let lease = Duration::from_secs(10);
        let a = store.claim(0, "a", lease).await.unwrap().expect("free");
        assert_eq!(store.claim(0, "b", lease).await.unwrap(), None, "held by a");
        store.renew(0, a, lease).await.unwrap();
        // a's lease runs out; b takes the partition under a newer epoch.
        clock.advance(Duration::from_secs(11));
        let b = store.claim(0, "b", lease).await.unwrap().expect("expired");
        assert!(b > a);
        assert!(matches!(store.renew(0, a, lease).await, Err(SqlStreamError::Fenced { .. })));
        let sink = CountSink::default();
        let committer = SqlCommitter { store: store.clone(), sink };
        let emission = |n| Emission {
            key: 7u64,
            window: girder_stream::Window { start: 0, end: 60_000 },
            value: n,
            kind: EmissionKind::Final,
        };
        let cp = |offset| Checkpoint { offset, state: vec![offset as u8] };
        // The stale holder's commit writes nothing.
        let err = committer.commit(0, a, &cp(5), &[emission(3)]).await.unwrap_err();
        assert!(matches!(err, SqlStreamError::Fenced { epoch, .. } if epoch == a), "{err}");
        assert!(counts(&db).await.is_empty());
        assert_eq!(Committer::<u64, u64>::load(&committer, 0).await.unwrap(), None);
        // The holder's commit writes both.
        committer.commit(0, b, &cp(5), &[emission(3)]).await.unwrap();
        assert_eq!(counts(&db).await, BTreeMap::from([((7, 0), 3)]));
        assert_eq!(Committer::<u64, u64>::load(&committer, 0).await.unwrap(), Some(cp(5)));
        // A failing sink rolls the checkpoint back with it.
        committer.sink.fail.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(committer.commit(0, b, &cp(9), &[emission(4)]).await.is_err());
        assert_eq!(counts(&db).await, BTreeMap::from([((7, 0), 3)]));
        assert_eq!(Committer::<u64, u64>::load(&committer, 0).await.unwrap(), Some(cp(5)));
        // Released, anyone may claim it; the same member re-claiming moves the epoch on.
        store.release(0, b).await.unwrap();
        let c = store.claim(0, "c", lease).await.unwrap().expect("released");
        let c2 = store.claim(0, "c", lease).await.unwrap().expect("its own");
        assert!(c2 > c && c > b);
        let rows = store.partitions().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].owner.as_deref(), rows[0].epoch, rows[0].next_offset),
            (Some("c"), c2, Some(5))
        );
        db.close().await;
        test_db.drop_db().await;
    }
}

#[test]
fn assignment_splits_partitions_round_robin() {
    let live: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    assert_eq!(assignment(8, &live, "a"), [0, 3, 6]);
    assert_eq!(assignment(8, &live, "c"), [2, 5]);
    assert_eq!(assignment(8, &live, "z"), Vec::<u32>::new());
    let mut all: Vec<u32> = live.iter().flat_map(|m| assignment(8, &live, m)).collect();
    all.sort_unstable();
    assert_eq!(all, (0..8).collect::<Vec<_>>());
}

/// Two members share four partitions of one log; one leaves mid-stream; the other
/// takes its partitions over and the counts end exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_rebalance_when_one_leaves_and_counts_stay_exact() {
    for test_db in TestDb::all("members_rebalance_when_one_leaves_and_counts_stay_exact").await {
        let db = open(&test_db).await;
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(PartitionedLog::open(&LogConfig::new(dir.path(), 4)).unwrap());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = StreamStore::new(db.clone(), "rebalance", clock.clone());
        let committer = Arc::new(SqlCommitter { store: store.clone(), sink: CountSink::default() });
        let runner = Arc::new(PartitionRunner {
            source: Arc::clone(&log),
            committer: Arc::clone(&committer),
            aggregate: Count,
            operator: OperatorConfig {
                out_of_orderness_ms: 0,
                ..OperatorConfig::new(WindowSpec::Tumbling { size_ms: 1_000 })
            },
            config: RunnerConfig {
                batch_max: 50,
                poll_wait: Duration::from_millis(10),
                checkpoint_every: Duration::from_millis(10),
                checkpoint_records: 50,
                idle_after: None,
            },
            decode: Arc::new(|b: &[u8]| {
                let b: [u8; 16] = b.try_into().map_err(|_| "16 bytes".to_string())?;
                let k = u64::from_le_bytes(b[..8].try_into().unwrap());
                let t = i64::from_le_bytes(b[8..].try_into().unwrap());
                Ok((k, t, 1))
            }),
            refused: Arc::new(|r| panic!("refused {r:?}")),
            clock: clock.clone(),
        });
        let config = CoordinatorConfig {
            heartbeat: Duration::from_millis(30),
            member_ttl: Duration::from_millis(300),
            lease: Duration::from_millis(600),
        };
        let member = |name: &str| {
            let coordinator = Coordinator::new(store.clone(), name, 4, config);
            let runner = Arc::clone(&runner);
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                coordinator
                    .run(
                        move |p, epoch, stop| {
                            let runner = Arc::clone(&runner);
                            async move {
                                if let Err(e) = runner.run(p, epoch, stop).await {
                                    tracing::warn!("runner {p}: {e}");
                                }
                            }
                        },
                        async move {
                            let _ = rx.await;
                        },
                    )
                    .await;
            });
            (tx, task)
        };
        let (stop_a, a) = member("a");
        let mut b_member = Some(member("b"));
        let mut exact: BTreeMap<(i64, i64), i64> = BTreeMap::new();
        let mut t = 0i64;
        for round in 0..3 {
            for i in 0..400u64 {
                let k = (i * 13) % 17;
                t += 7;
                *exact.entry((k as i64, t - t.rem_euclid(1_000))).or_insert(0) += 1;
                let mut rec = k.to_le_bytes().to_vec();
                rec.extend_from_slice(&t.to_le_bytes());
                log.append(&k.to_le_bytes(), rec).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if round == 0 {
                let rows = store.partitions().await.unwrap();
                let owners: Vec<_> = rows.iter().filter_map(|r| r.owner.clone()).collect();
                assert_eq!(owners.len(), 4, "{rows:?}");
                assert!(
                    owners.contains(&"a".to_string()) && owners.contains(&"b".to_string()),
                    "{rows:?}"
                );
            }
            if round == 1 {
                // b leaves cleanly: a takes all four partitions.
                let (stop_b, b) = b_member.take().expect("b runs until round 1");
                let _ = stop_b.send(());
                b.await.unwrap();
            }
        }
        // Close every window: one far-future event per partition.
        for p in 0..4 {
            let k = (0u64..).find(|k| log.partition_of(&k.to_le_bytes()) == p).unwrap();
            let mut rec = k.to_le_bytes().to_vec();
            rec.extend_from_slice(&(t + 10_000).to_le_bytes());
            log.append_to(p, rec).await.unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let rows = store.partitions().await.unwrap();
            let done = rows.len() == 4
                && rows.iter().all(|r| {
                    r.owner.as_deref() == Some("a")
                        && r.next_offset == Some(log.end_offset(r.partition).unwrap())
                });
            if done && counts(&db).await == exact {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{rows:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop_a.send(());
        a.await.unwrap();
        assert!(
            store.partitions().await.unwrap().iter().all(|r| r.owner.is_none()),
            "released on leave"
        );
        db.close().await;
        test_db.drop_db().await;
    }
}
