//! Change data capture on SQLite and PostgreSQL: the change stream against a model
//! of the committed history (rollbacks, restarts, concurrent writers), before and
//! after images with typed values, stale consumers, pruning, and bad input.
#![cfg(feature = "sql")]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use girder_core::ManualClock;
use girder_realtime::cdc::{
    AckError, Capture, CdcPosition, Change, ConsumerConfig, DropError, InstallError, Op, OpenError,
    PollError,
};
use girder_sql::{Db, PoolConfig, on_db};
use girder_testkit::backends::{TestDb, unique_name};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// A slot name no other test or run uses.
fn unique_consumer(prefix: &str) -> String {
    unique_name(prefix).replace('-', "_")
}

/// Runs `body` on a fresh database of each engine with capture opened on it. A
/// PostgreSQL slot left behind would hold WAL forever (and keep the test database
/// from being dropped), so every slot of the database is dropped afterwards, also
/// when the body panics.
async fn on_each_engine<F, Fut>(test: &str, body: F)
where
    F: Fn(Capture, ManualClock) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    for db in TestDb::all(test).await {
        let config = PoolConfig { max_connections: 6, acquire_timeout_ms: 30_000 };
        let pool = Db::connect(db.url(), config).await.expect("database");
        let clock = ManualClock::new(1_000_000_000);
        let capture =
            Capture::open(pool.clone(), Arc::new(clock.clone())).await.expect("migrations");
        let outcome = tokio::spawn(body(capture, clock)).await;
        if let Db::Postgres(p) = &pool {
            sqlx::query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE database = current_database() AND NOT active",
            )
            .execute(p)
            .await
            .expect("dropping the test's slots");
        }
        pool.close().await;
        db.drop_db().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

async fn exec(db: &Db, sql: &str) {
    on_db!(db, |pool| {
        sqlx::raw_sql(sql).execute(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}

/// Polls until nothing new comes, acking each batch.
async fn drain(consumer: &mut girder_realtime::cdc::Consumer) -> Vec<Change> {
    let mut all = Vec::new();
    loop {
        let batch = consumer.poll(1_000).await.expect("poll");
        let Some(last) = batch.last() else { return all };
        consumer.ack(last.position).await.expect("ack");
        all.extend(batch);
    }
}

/// What a change says, without its position and time.
type Seen = (String, Op, Option<Value>, Option<Value>);

fn seen(change: &Change) -> Seen {
    (change.table.clone(), change.op, change.before.clone(), change.after.clone())
}

fn item(id: i64, name: &str, qty: i64) -> Value {
    json!({"id": id, "name": name, "qty": qty})
}

/// The model test's writes: a few hundred seeded transactions of inserts, updates
/// and deletes, a fifth rolled back; returns the committed ones' changes.
async fn random_transactions(
    db: &Db,
    rng: &mut StdRng,
    rows: &mut BTreeMap<i64, (String, i64)>,
    next_id: &mut i64,
    txns: usize,
) -> Vec<Vec<Seen>> {
    let mut committed = Vec::new();
    for _ in 0..txns {
        let mut scratch = rows.clone();
        let mut changes = Vec::new();
        let mut statements = Vec::new();
        for _ in 0..rng.random_range(1..=5) {
            let existing: Vec<i64> = scratch.keys().copied().collect();
            let pick = rng.random_range(0..10);
            if existing.is_empty() || pick < 4 {
                let (id, name, qty) =
                    (*next_id, format!("n{}", *next_id), rng.random_range(0..100));
                *next_id += 1;
                statements.push((
                    "INSERT INTO items (id, name, qty) VALUES ($1, $2, $3)",
                    id,
                    Some(name.clone()),
                    Some(qty),
                ));
                changes.push(("items".to_owned(), Op::Insert, None, Some(item(id, &name, qty))));
                scratch.insert(id, (name, qty));
            } else if pick < 8 {
                let id = existing[rng.random_range(0..existing.len())];
                let (name, qty) = scratch[&id].clone();
                let new_qty = qty + rng.random_range(1..10);
                let new_name = format!("{name}'");
                statements.push((
                    "UPDATE items SET name = $2, qty = $3 WHERE id = $1",
                    id,
                    Some(new_name.clone()),
                    Some(new_qty),
                ));
                changes.push((
                    "items".to_owned(),
                    Op::Update,
                    Some(item(id, &name, qty)),
                    Some(item(id, &new_name, new_qty)),
                ));
                scratch.insert(id, (new_name, new_qty));
            } else {
                let id = existing[rng.random_range(0..existing.len())];
                let (name, qty) = scratch.remove(&id).expect("exists");
                statements.push(("DELETE FROM items WHERE id = $1", id, None, None));
                changes.push(("items".to_owned(), Op::Delete, Some(item(id, &name, qty)), None));
            }
        }
        let commit = rng.random_bool(0.8);
        on_db!(db, |pool| {
            let mut tx = pool.begin().await.expect("begin");
            for (sql, id, name, qty) in &statements {
                let mut q = sqlx::query(sql).bind(id);
                if let (Some(name), Some(qty)) = (name, qty) {
                    q = q.bind(name).bind(qty);
                }
                q.execute(&mut *tx).await.expect("write");
            }
            if commit {
                tx.commit().await.expect("commit")
            } else {
                tx.rollback().await.expect("rollback")
            }
        });
        if commit {
            *rows = scratch;
            committed.push(changes);
        }
    }
    committed
}

#[tokio::test]
async fn the_stream_is_the_committed_history_across_a_restart() {
    on_each_engine("cdc_the_stream_is_the_committed_history", |capture, _clock| async move {
        let db = capture.db().clone();
        let postgres = matches!(db, Db::Postgres(_));
        exec(
            &db,
            "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, qty BIGINT NOT NULL)",
        )
        .await;
        capture.install("items").await.expect("install");
        let name = unique_consumer("model");
        let config = ConsumerConfig { max_changes_per_poll: 50, ..ConsumerConfig::default() };
        let mut consumer = capture.consumer(&name, config.clone()).await.expect("open");

        let mut rng = StdRng::seed_from_u64(0x00C0_FFEE);
        let (mut rows, mut next_id) = (BTreeMap::new(), 1);
        let mut history = Vec::new();
        let mut received: Vec<Change> = Vec::new();
        // Writes in rounds with polls between them; acks land anywhere in a batch,
        // also inside a transaction.
        for round in 0..6 {
            history.extend(random_transactions(&db, &mut rng, &mut rows, &mut next_id, 50).await);
            for _ in 0..rng.random_range(1..4) {
                let batch = consumer.poll(rng.random_range(1..40)).await.expect("poll");
                if let Some(first) = batch.first() {
                    assert!(first.position > consumer.acked());
                }
                if !batch.is_empty() && rng.random_bool(0.7) {
                    let at = batch[rng.random_range(0..batch.len())].position;
                    consumer.ack(at).await.expect("ack");
                }
                received.extend(batch);
            }
            if round == 2 {
                // A restart after an ack inside a transaction: the rest of it comes
                // again, and nothing at or before the ack does.
                let batch = consumer.poll(40).await.expect("poll");
                let inside = batch
                    .windows(2)
                    .find(|w| w[0].txn == w[1].txn)
                    .map(|w| w[0].clone())
                    .expect("a transaction of several changes");
                consumer.ack(inside.position).await.expect("ack inside a transaction");
                received.extend(batch);
                drop(consumer);
                consumer = capture.consumer(&name, config.clone()).await.expect("reopen");
                assert_eq!(consumer.acked(), inside.position, "resumes at the stored ack");
                let batch = consumer.poll(50).await.expect("poll after reopen");
                assert!(
                    batch.iter().all(|c| c.position > inside.position),
                    "nothing before the ack"
                );
                assert_eq!(batch[0].txn, inside.txn, "the rest of the acknowledged transaction");
                received.extend(batch);
            }
        }
        received.extend(drain(&mut consumer).await);
        if let Db::Postgres(pool) = &db {
            // Acknowledging everything moved the slot past the last commit: its WAL
            // can go.
            let confirmed: i64 = sqlx::query_scalar(
                "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slots \
                 WHERE slot_name = $1",
            )
            .bind(&name)
            .fetch_one(pool)
            .await
            .unwrap();
            let last = received.iter().map(|c| c.position).max().unwrap();
            assert!(confirmed as u64 > last.parts().0, "slot at {confirmed}, last commit {last}");
        }

        let mut deduped: BTreeMap<CdcPosition, Change> = BTreeMap::new();
        for change in received {
            if let Some(earlier) = deduped.insert(change.position, change.clone()) {
                assert_eq!(earlier, change, "a redelivery is the same change");
            }
        }
        let stream: Vec<Seen> = deduped.values().map(seen).collect();
        let flat: Vec<Seen> = history.iter().flatten().cloned().collect();
        assert_eq!(stream.len(), flat.len());
        assert_eq!(stream, flat, "the stream is the committed history, in commit order");

        // Commit grouping: every committed transaction sits in one group. On
        // PostgreSQL a group is exactly one transaction; on SQLite it may join
        // consecutive ones.
        let changes: Vec<&Change> = deduped.values().collect();
        let mut at = 0;
        let mut bounds = Vec::new();
        for txn in &history {
            let group = &changes[at..at + txn.len()];
            assert!(group.iter().all(|c| c.txn == group[0].txn), "a transaction is never split");
            bounds.push(group[0].txn);
            at += txn.len();
        }
        assert!(changes.windows(2).all(|w| w[0].txn <= w[1].txn), "groups in commit order");
        if postgres {
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "one group per transaction");
        }
        assert!(capture.drop_consumer(&name).await.expect("drop"));
    })
    .await;
}

#[tokio::test]
async fn concurrent_writers_are_seen_whole_and_in_their_order() {
    on_each_engine("cdc_concurrent_writers", |capture, _clock| async move {
        let db = capture.db().clone();
        exec(&db, "CREATE TABLE log (writer BIGINT NOT NULL, n BIGINT NOT NULL, part BIGINT NOT NULL, PRIMARY KEY (writer, n, part))")
            .await;
        capture.install("log").await.expect("install");
        let name = unique_consumer("concurrent");
        let mut consumer = capture.consumer(&name, ConsumerConfig::default()).await.expect("open");
        const WRITERS: i64 = 4;
        const TXNS: i64 = 40;
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let db = db.clone();
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(w as u64);
                    let mut sizes = Vec::new();
                    for n in 0..TXNS {
                        let parts = rng.random_range(1..=4_i64);
                        on_db!(&db, |pool| {
                            let mut tx = pool.begin().await.expect("begin");
                            for part in 0..parts {
                                sqlx::query("INSERT INTO log (writer, n, part) VALUES ($1, $2, $3)")
                                    .bind(w)
                                    .bind(n)
                                    .bind(part)
                                    .execute(&mut *tx)
                                    .await
                                    .expect("insert");
                            }
                            tx.commit().await.expect("commit");
                        });
                        sizes.push(parts);
                    }
                    sizes
                })
            })
            .collect();
        // Read while they write: a group must never be cut by a commit in flight.
        // A poll returns whole groups: a group once delivered never grows.
        let mut received: Vec<Change> = Vec::new();
        while !writers.iter().all(tokio::task::JoinHandle::is_finished) {
            let batch = consumer.poll(rng_free_max(received.len())).await.expect("poll");
            if let (Some(before), Some(first)) = (received.last(), batch.first()) {
                assert!(before.txn < first.txn, "group {} came in two polls", first.txn);
            }
            if let Some(last) = batch.last() {
                consumer.ack(last.position).await.expect("ack");
            }
            received.extend(batch);
            tokio::task::yield_now().await;
        }
        let mut sizes = HashMap::new();
        for (w, writer) in writers.into_iter().enumerate() {
            sizes.insert(w as i64, writer.await.expect("writer"));
        }
        received.extend(drain(&mut consumer).await);

        let total: i64 = sizes.values().flatten().sum();
        assert_eq!(received.len() as i64, total, "every committed row once");
        let mut next_n: HashMap<i64, i64> = HashMap::new();
        let mut i = 0;
        while i < received.len() {
            let after = received[i].after.as_ref().expect("an insert");
            let (w, n) = (after["writer"].as_i64().unwrap(), after["n"].as_i64().unwrap());
            assert_eq!(next_n.get(&w).copied().unwrap_or(0), n, "writer {w}'s transactions in order");
            next_n.insert(w, n + 1);
            let parts = sizes[&w][n as usize] as usize;
            let txn = &received[i..i + parts];
            for (part, change) in txn.iter().enumerate() {
                let after = change.after.as_ref().unwrap();
                assert_eq!((after["writer"].as_i64(), after["n"].as_i64()), (Some(w), Some(n)));
                assert_eq!(after["part"].as_i64(), Some(part as i64), "a transaction's rows together");
                assert_eq!(change.txn, txn[0].txn, "one group");
            }
            i += parts;
        }
        assert!(received.windows(2).all(|w| w[0].position < w[1].position && w[0].txn <= w[1].txn));
        assert!(capture.drop_consumer(&name).await.expect("drop"));
    })
    .await;
}

/// Small and varied poll sizes, without a random source shared with the writers.
fn rng_free_max(seen: usize) -> usize {
    1 + seen % 13
}

#[tokio::test]
async fn images_carry_typed_values_before_and_after() {
    on_each_engine("cdc_images_carry_typed_values", |capture, _clock| async move {
        let db = capture.db().clone();
        let postgres = matches!(db, Db::Postgres(_));
        let blob = if postgres { "BYTEA" } else { "BLOB" };
        exec(
            &db,
            &format!(
                "CREATE TABLE typed (id BIGINT PRIMARY KEY, label TEXT, flag BOOLEAN, note TEXT, \
                 ratio DOUBLE PRECISION, doc JSON, data {blob})"
            ),
        )
        .await;
        // 70 columns: more than one SQLite function call's worth of arguments.
        let wide_columns: Vec<String> = (0..70).map(|i| format!("c{i} BIGINT")).collect();
        exec(
            &db,
            &format!("CREATE TABLE wide (id BIGINT PRIMARY KEY, {})", wide_columns.join(", ")),
        )
        .await;
        for table in ["typed", "typed", "wide"] {
            capture.install(table).await.expect("install is idempotent");
        }
        assert_eq!(capture.tables().await.expect("tables"), ["typed", "wide"]);
        let name = unique_consumer("typed");
        let mut consumer = capture.consumer(&name, ConsumerConfig::default()).await.expect("open");

        exec(
            &db,
            "INSERT INTO typed (id, label, flag, note, ratio, doc, data) \
             VALUES (1, 'a', TRUE, NULL, 1.5, '{\"k\": [1, 2], \"s\": \"x\"}', NULL)",
        )
        .await;
        exec(
            &db,
            "UPDATE typed SET label = 'b', flag = FALSE, note = 'it''s', ratio = 2.25 WHERE id = 1",
        )
        .await;
        let bytes = if postgres { "'\\x0102'::bytea" } else { "x'0102'" };
        exec(&db, &format!("UPDATE typed SET data = {bytes} WHERE id = 1")).await;
        exec(&db, "DELETE FROM typed WHERE id = 1").await;
        let values: Vec<String> = (0..70).map(|i| (i * 3).to_string()).collect();
        let names: Vec<String> = (0..70).map(|i| format!("c{i}")).collect();
        exec(
            &db,
            &format!(
                "INSERT INTO wide (id, {}) VALUES (7, {})",
                names.join(", "),
                values.join(", ")
            ),
        )
        .await;

        let changes = drain(&mut consumer).await;
        let first = json!({"id": 1, "label": "a", "flag": true, "note": null, "ratio": 1.5,
                           "doc": {"k": [1, 2], "s": "x"}, "data": null});
        let second = json!({"id": 1, "label": "b", "flag": false, "note": "it's", "ratio": 2.25,
                            "doc": {"k": [1, 2], "s": "x"}, "data": null});
        let mut third = second.clone();
        third["data"] = json!(if postgres { "\\x0102" } else { "0102" });
        let mut wide = serde_json::Map::new();
        wide.insert("id".into(), json!(7));
        for i in 0..70 {
            wide.insert(format!("c{i}"), json!(i * 3));
        }
        let want: Vec<Seen> = vec![
            ("typed".into(), Op::Insert, None, Some(first.clone())),
            ("typed".into(), Op::Update, Some(first), Some(second.clone())),
            ("typed".into(), Op::Update, Some(second), Some(third.clone())),
            ("typed".into(), Op::Delete, Some(third), None),
            ("wide".into(), Op::Insert, None, Some(Value::Object(wide))),
        ];
        assert_eq!(changes.iter().map(seen).collect::<Vec<_>>(), want, "{}", capture.db().engine());
        assert!(changes.iter().all(|c| c.unchanged.is_empty() && c.at_ms > 1_600_000_000_000));

        // Removing capture stops it.
        assert!(capture.uninstall("wide").await.expect("uninstall"));
        assert!(!capture.uninstall("wide").await.expect("again"));
        exec(&db, "DELETE FROM wide").await;
        exec(&db, "INSERT INTO typed (id) VALUES (2)").await;
        let changes = drain(&mut consumer).await;
        assert_eq!(
            changes.iter().map(|c| (c.table.as_str(), c.op)).collect::<Vec<_>>(),
            [("typed", Op::Insert)]
        );
        assert!(capture.drop_consumer(&name).await.expect("drop"));
    })
    .await;
}

#[tokio::test]
async fn unread_consumers_are_reported_stale_and_dropping_frees_them() {
    on_each_engine("cdc_unread_consumers_are_stale", |capture, clock| async move {
        let db = capture.db().clone();
        let postgres = matches!(db, Db::Postgres(_));
        exec(&db, "CREATE TABLE seats (id BIGINT PRIMARY KEY, state TEXT NOT NULL)").await;
        capture.install("seats").await.expect("install");
        let (idle, busy) = (unique_consumer("idle"), unique_consumer("busy"));
        let mut idle_consumer =
            capture.consumer(&idle, ConsumerConfig::default()).await.expect("open");
        let mut busy_consumer =
            capture.consumer(&busy, ConsumerConfig::default()).await.expect("open");
        exec(&db, "INSERT INTO seats (id, state) VALUES (1, 'free'), (2, 'free')").await;

        let hour = Duration::from_secs(3_600);
        clock.advance(hour);
        let _ = drain(&mut busy_consumer).await;
        let stale = capture.stale_consumers(60_000).await.expect("stale");
        let names: Vec<&str> = stale.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&idle.as_str()), "{names:?}");
        assert!(!names.contains(&busy.as_str()), "a consumer that reads is not stale: {names:?}");
        let report = stale.iter().find(|s| s.name == idle).unwrap();
        assert_eq!(report.read_at_ms, Some(1_000_000_000));
        assert!(!report.active);
        if postgres {
            assert!(report.retained_bytes.is_some_and(|b| b > 0), "{report:?}");
        } else {
            assert_eq!(report.retained_changes, Some(2), "{report:?}");
        }
        assert!(
            capture
                .stale_consumers(2 * 3_600_000)
                .await
                .expect("stale")
                .iter()
                .all(|s| s.name != idle)
        );

        assert!(capture.drop_consumer(&idle).await.expect("drop"));
        assert!(!capture.drop_consumer(&idle).await.expect("drop twice"), "gone");
        assert!(
            capture.stale_consumers(60_000).await.expect("stale").iter().all(|s| s.name != idle)
        );
        if let Db::Postgres(pool) = &db {
            let slots: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            )
            .bind(&idle)
            .fetch_one(pool)
            .await
            .unwrap();
            assert_eq!(slots, 0, "its slot is dropped");
        }
        // The dropped consumer's handle finds out at its next poll.
        clock.advance(hour);
        assert!(matches!(idle_consumer.poll(10).await, Err(PollError::Dropped(n)) if n == idle));
        assert!(capture.drop_consumer(&busy).await.expect("drop"));
    })
    .await;
}

#[tokio::test]
async fn sqlite_prunes_only_what_every_consumer_acknowledged() {
    let db = TestDb::sqlite();
    let pool = Db::connect(db.url(), PoolConfig::default()).await.expect("db");
    let capture = Capture::open(pool.clone(), Arc::new(ManualClock::new(1))).await.expect("open");
    exec(&pool, "CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    capture.install("t").await.expect("install");
    let mut slow = capture.consumer("slow", ConsumerConfig::default()).await.expect("open");
    let mut fast = capture.consumer("fast", ConsumerConfig::default()).await.expect("open");
    // The fast consumer reads after each commit, which seals it into a group of its
    // own; unread, the ten commits would form one group, and a poll returns whole
    // groups.
    let mut all = Vec::new();
    for id in 1..=10 {
        exec(&pool, &format!("INSERT INTO t (id) VALUES ({id})")).await;
        all.extend(drain(&mut fast).await);
    }
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].txn < w[1].txn), "a group per commit");
    let batch = slow.poll(4).await.expect("poll");
    slow.ack(batch[3].position).await.expect("ack");
    let remaining = |pool: Db| async move {
        on_db!(&pool, |p| sqlx::query_scalar::<_, i64>("SELECT count(*) FROM girder_cdc_changes")
            .fetch_one(p)
            .await
            .unwrap())
    };
    assert_eq!(capture.prune(3).await.expect("prune"), 3, "bounded per call");
    assert_eq!(capture.prune(100).await.expect("prune"), 1, "up to the slowest ack");
    assert_eq!(remaining(pool.clone()).await, 6);
    assert_eq!(drain(&mut slow).await.len(), 6, "the slow consumer still gets the rest");
    assert_eq!(capture.prune(100).await.expect("prune"), 6);
    // Positions are never reused after pruning: a new change comes after all of them.
    exec(&pool, "INSERT INTO t (id) VALUES (11)").await;
    let next = fast.poll(10).await.expect("poll");
    assert!(next[0].position > all[9].position);
    pool.close().await;
}

#[tokio::test]
async fn next_waits_for_a_change_and_a_notification_wakes_it() {
    on_each_engine("cdc_next_waits", |capture, _clock| async move {
        let db = capture.db().clone();
        exec(&db, "CREATE TABLE comments (id BIGINT PRIMARY KEY, body TEXT NOT NULL)").await;
        capture.install("comments").await.expect("install");
        let name = unique_consumer("next");
        // A poll interval far beyond the test's time bound: only the notification
        // can end the wait in time.
        let config = ConsumerConfig { poll_interval_ms: 600_000, ..ConsumerConfig::default() };
        let mut consumer = capture.consumer(&name, config).await.expect("open");
        let wake = Arc::new(tokio::sync::Notify::new());
        let writer = {
            let (db, wake) = (db.clone(), Arc::clone(&wake));
            tokio::spawn(async move {
                exec(&db, "INSERT INTO comments (id, body) VALUES (1, 'first!')").await;
                wake.notify_waiters();
            })
        };
        let changes = tokio::time::timeout(Duration::from_secs(30), consumer.next(10, Some(&wake)))
            .await
            .expect("woken well before the poll interval")
            .expect("next");
        writer.await.expect("writer");
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].after, Some(json!({"id": 1, "body": "first!"})));
        consumer.ack(changes[0].position).await.expect("ack");
        assert!(capture.drop_consumer(&name).await.expect("drop"));
    })
    .await;
}

#[tokio::test]
async fn rewind_redelivers_and_an_unacknowledged_backlog_is_bounded() {
    on_each_engine("cdc_rewind_and_backlog", |capture, _clock| async move {
        let db = capture.db().clone();
        let postgres = matches!(db, Db::Postgres(_));
        exec(&db, "CREATE TABLE t (id BIGINT PRIMARY KEY)").await;
        capture.install("t").await.expect("install");
        let name = unique_consumer("backlog");
        let config = ConsumerConfig { max_decode_rows: 12, ..ConsumerConfig::default() };
        let mut consumer = capture.consumer(&name, config).await.expect("open");
        // Another consumer reads after each commit, so on SQLite each is a group of
        // its own (a poll returns whole groups).
        let sealer_name = unique_consumer("sealer");
        let mut sealer =
            capture.consumer(&sealer_name, ConsumerConfig::default()).await.expect("open");
        for id in 1..=6 {
            exec(&db, &format!("INSERT INTO t (id) VALUES ({id})")).await;
            assert_eq!(drain(&mut sealer).await.len(), 1);
        }
        let ids = |changes: &[Change]| -> Vec<i64> {
            changes.iter().map(|c| c.after.as_ref().unwrap()["id"].as_i64().unwrap()).collect()
        };

        // Polls without acks deliver each change once; PostgreSQL decodes the
        // unacknowledged ones again each time, and refuses past the bound.
        let (mut got, mut refused) = (Vec::new(), None);
        for _ in 0..10 {
            match consumer.poll(2).await {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => got.extend(batch),
                Err(PollError::Backlog { unacked_rows, max }) => {
                    refused = Some((unacked_rows, max));
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let delivered = ids(&got);
        assert_eq!(
            delivered,
            (1..=delivered.len() as i64).collect::<Vec<_>>(),
            "once each, in order"
        );
        if postgres {
            let (unacked_rows, max) = refused.expect("a backlog past max_decode_rows is refused");
            assert!(unacked_rows >= 12 && max == 12, "{unacked_rows} {max}");
        } else {
            assert_eq!((delivered.len(), refused), (6, None));
        }

        // A rewind delivers everything since the last ack again; acking as it goes
        // keeps the backlog empty.
        consumer.rewind();
        assert_eq!(consumer.delivered(), consumer.acked());
        assert_eq!(ids(&drain(&mut consumer).await), (1..=6).collect::<Vec<_>>());
        for name in [&name, &sealer_name] {
            assert!(capture.drop_consumer(name).await.expect("drop"));
        }
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_a_typed_error() {
    on_each_engine("cdc_bad_input_is_a_typed_error", |capture, _clock| async move {
        let db = capture.db().clone();
        let postgres = matches!(db, Db::Postgres(_));
        exec(&db, "CREATE TABLE t (id BIGINT PRIMARY KEY)").await;
        exec(&db, "CREATE VIEW v AS SELECT id FROM t").await;
        for table in ["", "bad name", "t;drop table t", "1t", "girder_cdc_changes", "a.b.c", "\"t\""] {
            assert!(
                matches!(capture.install(table).await, Err(InstallError::InvalidTable(ref n)) if n == table),
                "{table:?}"
            );
        }
        for table in ["missing", "v"] {
            assert!(
                matches!(capture.install(table).await, Err(InstallError::UnknownTable(ref n)) if n == table),
                "{table:?}"
            );
        }
        let schema_qualified = capture.install("public.t").await;
        if postgres {
            schema_qualified.expect("PostgreSQL takes schema.table");
        } else {
            assert!(matches!(schema_qualified, Err(InstallError::InvalidTable(_))));
        }
        let long = "a".repeat(64);
        for name in ["", "Upper", "a-b", "a b", "é", long.as_str()] {
            let opened = capture.consumer(name, ConsumerConfig::default()).await;
            assert!(matches!(opened, Err(OpenError::InvalidName(ref n)) if n == name), "{name:?}");
            assert!(matches!(capture.drop_consumer(name).await, Err(DropError::InvalidName(_))));
        }
        assert!(!capture.drop_consumer("never_opened").await.expect("nothing to drop"));

        capture.install("t").await.expect("install");
        let name = unique_consumer("bad");
        let mut consumer = capture.consumer(&name, ConsumerConfig::default()).await.expect("open");
        exec(&db, "INSERT INTO t (id) VALUES (1)").await;
        let batch = consumer.poll(10).await.expect("poll");
        let ahead = CdcPosition::from_parts(batch[0].position.parts().0 + 1, 0);
        assert!(matches!(
            consumer.ack(ahead).await,
            Err(AckError::Ahead { position, delivered }) if position == ahead && delivered == batch[0].position
        ));
        consumer.ack(batch[0].position).await.expect("ack");
        consumer.ack(CdcPosition::START).await.expect("an older ack changes nothing");
        assert_eq!(consumer.acked(), batch[0].position);

        if let Db::Postgres(pool) = &db {
            // A slot dropped behind the consumer's back is reported, not silently
            // recreated past the changes it held.
            sqlx::query("SELECT pg_drop_replication_slot($1)").bind(&name).execute(pool).await.unwrap();
            assert!(matches!(consumer.poll(10).await, Err(PollError::Dropped(ref n)) if *n == name));
            assert!(matches!(
                capture.consumer(&name, ConsumerConfig::default()).await,
                Err(OpenError::SlotMissing(ref n)) if *n == name
            ));
            // A slot of that name that is not a pgoutput slot of this database.
            let physical = unique_consumer("physical");
            sqlx::query("SELECT pg_create_physical_replication_slot($1)").bind(&physical).execute(pool).await.unwrap();
            let opened = capture.consumer(&physical, ConsumerConfig::default()).await;
            sqlx::query("SELECT pg_drop_replication_slot($1)").bind(&physical).execute(pool).await.unwrap();
            assert!(matches!(opened, Err(OpenError::ForeignSlot(ref n)) if *n == physical));
        }
        assert!(capture.drop_consumer(&name).await.expect("drop"));
    })
    .await;
}
