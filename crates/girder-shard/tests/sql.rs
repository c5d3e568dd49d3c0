//! The router over real databases, on SQLite files and PostgreSQL databases: every
//! answer equals one unsharded table's (pages and cursors included), before, during
//! and after a shard is added; a shard added while writers and readers run never lets
//! a read see a stale or missing key; failed additions change nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use girder_shard::hash::{JumpHash, ShardId, ShardMap};
use girder_shard::sql::{
    AddShardError, KvTable, MovableTable, OpenError, QueryError, ReshardConfig, ShardedDb,
};
use girder_sql::{Db, PoolConfig, on_db};
use girder_testkit::backends::TestDb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const POOL: PoolConfig = PoolConfig { max_connections: 6, acquire_timeout_ms: 30_000 };

/// `n` fresh databases of one engine; `None` when PostgreSQL is skipped.
async fn databases(postgres: bool, n: usize, test: &str) -> Option<Vec<TestDb>> {
    let mut dbs = Vec::with_capacity(n);
    for _ in 0..n {
        dbs.push(if postgres { TestDb::postgres(test).await? } else { TestDb::sqlite() });
    }
    Some(dbs)
}

/// SQLite, then PostgreSQL when reachable: `n` databases each.
async fn engines(n: usize, test: &str) -> Vec<Vec<TestDb>> {
    let mut all = vec![databases(false, n, test).await.expect("sqlite")];
    all.extend(databases(true, n, test).await);
    all
}

async fn drop_all(dbs: Vec<TestDb>) {
    for db in dbs {
        db.drop_db().await;
    }
}

fn kv() -> KvTable {
    KvTable::new("kv").expect("name")
}

/// A sharded key-value store over the first `shards` of `dbs`, and the pool of each
/// other database in order.
async fn open(dbs: &[TestDb], shards: u32) -> (ShardedDb<JumpHash>, Vec<Db>) {
    let urls = dbs[..shards as usize]
        .iter()
        .enumerate()
        .map(|(i, db)| (ShardId(i as u32), db.url().to_owned()));
    let sharded =
        ShardedDb::open(JumpHash::new(shards).expect("map"), urls, POOL, kv().schema()).await;
    let mut spare = Vec::new();
    for db in &dbs[shards as usize..] {
        spare.push(Db::connect(db.url(), POOL).await.expect("spare"));
    }
    (sharded.expect("open"), spare)
}

async fn get(sharded: &ShardedDb<JumpHash>, key: &str) -> Option<String> {
    let kv = kv();
    sharded.read(key.as_bytes(), |db| async move { kv.get(&db, key).await }).await.expect("read")
}

async fn put(sharded: &ShardedDb<JumpHash>, key: &str, value: &str) {
    let kv = kv();
    sharded
        .write(key.as_bytes(), |db| {
            let kv = kv.clone();
            async move { kv.put(&db, key, value).await }
        })
        .await
        .expect("put");
}

async fn delete(sharded: &ShardedDb<JumpHash>, key: &str) -> bool {
    let kv = kv();
    sharded
        .write(key.as_bytes(), |db| {
            let kv = kv.clone();
            async move { kv.delete(&db, key).await }
        })
        .await
        .expect("delete")
}

/// The two orders pages are asked in: by key, and by value then key.
#[derive(Debug, Clone, Copy)]
enum Order {
    Key,
    Value,
}

type Row = (String, String);
type Cursor = (String, String);

impl Order {
    /// The cursor a row leaves, and the position rows sort by.
    fn key(self, (k, v): &Row) -> Cursor {
        match self {
            Self::Key => (k.clone(), String::new()),
            Self::Value => (v.clone(), k.clone()),
        }
    }

    /// One database's side of a keyset page.
    async fn page(
        self,
        db: &Db,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<Row>, sqlx::Error> {
        let limit = limit as i64;
        let rows = match (self, after) {
            (Self::Key, None) => {
                let sql = "SELECT k, v FROM kv ORDER BY k LIMIT $1";
                on_db!(db, |pool| sqlx::query_as(sql).bind(limit).fetch_all(pool).await?)
            }
            (Self::Key, Some((k, _))) => {
                let sql = "SELECT k, v FROM kv WHERE k > $1 ORDER BY k LIMIT $2";
                on_db!(db, |pool| sqlx::query_as(sql).bind(k).bind(limit).fetch_all(pool).await?)
            }
            (Self::Value, None) => {
                let sql = "SELECT k, v FROM kv ORDER BY v, k LIMIT $1";
                on_db!(db, |pool| sqlx::query_as(sql).bind(limit).fetch_all(pool).await?)
            }
            (Self::Value, Some((v, k))) => {
                let sql = "SELECT k, v FROM kv WHERE (v, k) > ($1, $2) ORDER BY v, k LIMIT $3";
                on_db!(db, |pool| {
                    sqlx::query_as(sql).bind(v).bind(k).bind(limit).fetch_all(pool).await?
                })
            }
        };
        Ok(rows)
    }
}

async fn gather(
    sharded: &ShardedDb<JumpHash>,
    order: Order,
    after: Option<&Cursor>,
    limit: usize,
) -> girder_shard::router::Page<Row, Cursor> {
    sharded
        .gather_page(
            after,
            limit,
            |row| order.key(row),
            |(k, _): &Row| k.clone().into_bytes(),
            |db, after, n| async move { order.page(&db, after, n).await },
        )
        .await
        .expect("gather")
}

/// Pages through everything in `order`, `limit` rows a page, checking each page and
/// its cursor against the same query on the unsharded `reference`.
async fn check_pages(sharded: &ShardedDb<JumpHash>, reference: &Db, order: Order, limit: usize) {
    let mut cursor: Option<Cursor> = None;
    let mut pages = 0;
    loop {
        let page = gather(sharded, order, cursor.as_ref(), limit).await;
        let want = order.page(reference, cursor.clone(), limit).await.expect("reference page");
        assert_eq!(page.rows, want, "{order:?} page {pages} after {cursor:?}, limit {limit}");
        pages += 1;
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), page.rows.last().map(|r| order.key(r)).as_ref());
                cursor = Some(next);
            }
            None => {
                let after = page.rows.last().map(|r| order.key(r)).or(cursor);
                let rest = order.page(reference, after, 1).await.expect("reference rest");
                assert!(rest.is_empty(), "{order:?}: no cursor, but the table has {rest:?}");
                return;
            }
        }
        assert!(pages < 10_000, "paging terminates");
    }
}

/// The salted hot counter's increment: one statement, deterministic on its row.
const INCREMENT: &str = "INSERT INTO kv (k, v) VALUES ($1, '1') ON CONFLICT (k) \
                         DO UPDATE SET v = CAST(CAST(kv.v AS INTEGER) + 1 AS TEXT)";

const HOT_SALTS: NonZeroU32 = NonZeroU32::MIN.saturating_add(3);

async fn increment_hot(sharded: &ShardedDb<JumpHash>, pick: u32) {
    sharded
        .write_salted(b"hot", pick, HOT_SALTS, |db, key| async move {
            let key = String::from_utf8(key).unwrap_or_default();
            on_db!(&db, |pool| sqlx::query(INCREMENT).bind(key).execute(pool).await.map(drop))
        })
        .await
        .expect("increment");
}

async fn hot_total(sharded: &ShardedDb<JumpHash>) -> i64 {
    let kv = kv();
    let counts = sharded
        .read_salted(b"hot", HOT_SALTS, |db, key| {
            let kv = kv.clone();
            async move { kv.get(&db, &String::from_utf8(key).unwrap_or_default()).await }
        })
        .await
        .expect("read salts");
    assert_eq!(counts.len(), 4);
    counts.iter().flatten().map(|v| v.parse::<i64>().expect("a count")).sum()
}

/// The model test: random puts, deletes, reads, hot-key increments and pages on three
/// shards and on one table, answer for answer; a fourth shard joins halfway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_answers_equal_one_unsharded_table() {
    for dbs in engines(5, "sharded_answers_equal_one_unsharded_table").await {
        let engine = dbs[0].engine();
        let (sharded, spare) = open(&dbs, 3).await;
        let (new_shard, reference) = (spare[0].clone(), spare[1].clone());
        kv().schema().apply(&reference).await.expect("reference schema");
        let kv = kv();
        let mut rng = StdRng::seed_from_u64(7);
        let (mut hot, mut salted_owners) = (0i64, BTreeSet::new());
        for step in 0..900u32 {
            if step == 450 {
                let report = sharded
                    .add_shard(
                        ShardId(3),
                        new_shard.clone(),
                        JumpHash::new(4).expect("map"),
                        &kv,
                        ReshardConfig { batch_keys: 16, ..Default::default() },
                    )
                    .await
                    .expect("add shard");
                assert!(
                    report.keys_moved > 0 && report.rows_deleted == report.rows_copied,
                    "{engine}: {report:?}"
                );
            }
            let key = format!("k{:03}", rng.random_range(0..150));
            match rng.random_range(0..100) {
                0..45 => {
                    let value = format!("v{}", rng.random_range(0..40));
                    put(&sharded, &key, &value).await;
                    kv.put(&reference, &key, &value).await.expect("reference put");
                }
                45..65 => {
                    let deleted = delete(&sharded, &key).await;
                    assert_eq!(
                        deleted,
                        kv.delete(&reference, &key).await.expect("ref"),
                        "{engine} delete {key}"
                    );
                }
                65..85 => {
                    let want = kv.get(&reference, &key).await.expect("reference get");
                    assert_eq!(get(&sharded, &key).await, want, "{engine} get {key} at {step}");
                }
                85..95 => {
                    increment_hot(&sharded, step).await;
                    let salt = format!("hot#{}", step % 4);
                    on_db!(&reference, |pool| {
                        sqlx::query(INCREMENT).bind(salt).execute(pool).await.map(drop)
                    })
                    .expect("reference increment");
                    hot += 1;
                    salted_owners.insert(
                        sharded
                            .owner(&girder_shard::router::salted(b"hot", step % 4))
                            .await
                            .expect("owner"),
                    );
                    assert_eq!(hot_total(&sharded).await, hot, "{engine} hot counter at {step}");
                }
                _ => {
                    let order = if rng.random_bool(0.5) { Order::Key } else { Order::Value };
                    check_pages(&sharded, &reference, order, rng.random_range(1..40)).await;
                }
            }
        }
        // Every page once more, at several sizes.
        for limit in [1, 2, 7, 50, 500] {
            check_pages(&sharded, &reference, Order::Key, limit).await;
            check_pages(&sharded, &reference, Order::Value, limit).await;
        }
        assert!(salted_owners.len() >= 2, "{engine}: the hot key spreads: {salted_owners:?}");
        assert_eq!(sharded.router().await.map().shard_count(), 4);
        sharded.close().await;
        drop_all(dbs).await;
    }
}

/// One key's history as its single writer made it: `present[v]` is whether version
/// `v` left the key present (its value is then `v`). Version 0 is the preload.
#[derive(Debug)]
struct History {
    present: Vec<bool>,
    /// The last version whose write was acknowledged.
    acked: usize,
}

impl History {
    /// Whether a read that began after version `acked_before` was acknowledged, and
    /// ended before version `started_after + 1` began, may answer `got`.
    fn allows(&self, acked_before: usize, got: Option<&str>) -> bool {
        let started_after = self.present.len() - 1;
        match got {
            Some(value) => value
                .parse::<usize>()
                .is_ok_and(|v| (acked_before..=started_after).contains(&v) && self.present[v]),
            None => (acked_before..=started_after).any(|v| !self.present[v]),
        }
    }
}

const KEYS: usize = 1200;
const WRITERS: usize = 3;
const READERS: usize = 2;
/// Keys per writer that take most of its writes.
const HOT_KEYS: usize = 40;

fn key_name(i: usize) -> String {
    format!("key{i:05}")
}

/// Online addition under load: writers update, insert and delete their own keys;
/// readers read every key over and over; a scanner pages through all of them; a shard
/// joins meanwhile. No read or page may miss a present key or return a value older
/// than the last acknowledged write before it began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_added_under_reads_and_writes_serves_no_stale_or_missing_key() {
    for dbs in engines(4, "a_shard_added_under_reads_and_writes").await {
        let engine = dbs[0].engine();
        let (sharded, spare) = open(&dbs, 3).await;
        let sharded = Arc::new(sharded);
        let histories: Arc<Vec<Mutex<History>>> = Arc::new(
            (0..KEYS)
                .map(|i| Mutex::new(History { present: vec![i % 5 != 0], acked: 0 }))
                .collect(),
        );
        for i in (0..KEYS).filter(|i| i % 5 != 0) {
            put(&sharded, &key_name(i), "0").await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (writes, reads) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (progress, _) = tokio::sync::watch::channel(0u64);
        let progress = Arc::new(progress);
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();

        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (sharded, histories, stop, writes, progress) = (
                sharded.clone(),
                histories.clone(),
                stop.clone(),
                writes.clone(),
                progress.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w as u64);
                let mine: Vec<usize> = (0..KEYS).filter(|i| i % WRITERS == w).collect();
                while !stop.load(Ordering::Relaxed) {
                    // Most writes hit a few hot keys, so the copier often finds a
                    // write racing the copy of a key.
                    let pool = if rng.random_bool(0.6) { HOT_KEYS } else { mine.len() };
                    let i = mine[rng.random_range(0..pool)];
                    let (version, present) = {
                        let mut h = histories[i].lock().expect("history");
                        let was = *h.present.last().expect("preload");
                        let present = !was || rng.random_bool(0.7);
                        h.present.push(present);
                        (h.present.len() - 1, present)
                    };
                    let key = key_name(i);
                    if present {
                        put(&sharded, &key, &version.to_string()).await;
                    } else {
                        delete(&sharded, &key).await;
                    }
                    histories[i].lock().expect("history").acked = version;
                    writes.fetch_add(1, Ordering::Relaxed);
                    progress.send_modify(|n| *n += 1);
                }
            }));
        }
        for r in 0..READERS {
            let (sharded, histories, stop, reads, violations) = (
                sharded.clone(),
                histories.clone(),
                stop.clone(),
                reads.clone(),
                violations.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut i = r * KEYS / READERS;
                while !stop.load(Ordering::Relaxed) {
                    let key = key_name(i);
                    let acked_before = histories[i].lock().expect("history").acked;
                    let got = get(&sharded, &key).await;
                    let h = histories[i].lock().expect("history");
                    if !h.allows(acked_before, got.as_deref()) {
                        violations.lock().expect("violations").push(format!(
                            "read {key} = {got:?}; acked before {acked_before}, history {:?}",
                            h.present
                        ));
                    }
                    drop(h);
                    reads.fetch_add(1, Ordering::Relaxed);
                    i = (i + 1) % KEYS;
                }
            }));
        }
        {
            let (sharded, histories, stop, violations) =
                (sharded.clone(), histories.clone(), stop.clone(), violations.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let acked_before: Vec<usize> =
                        histories.iter().map(|h| h.lock().expect("history").acked).collect();
                    let mut seen: BTreeMap<String, String> = BTreeMap::new();
                    let mut cursor = None;
                    loop {
                        let page = gather(&sharded, Order::Key, cursor.as_ref(), 97).await;
                        for (k, v) in page.rows {
                            if let Some((last, _)) = seen.last_key_value() {
                                assert!(*last < k, "page rows ascend without repeats");
                            }
                            seen.insert(k, v);
                        }
                        match page.next {
                            Some(next) => cursor = Some(next),
                            None => break,
                        }
                    }
                    for (i, before) in acked_before.into_iter().enumerate() {
                        let got = seen.get(&key_name(i)).map(String::as_str);
                        let h = histories[i].lock().expect("history");
                        if !h.allows(before, got) {
                            violations.lock().expect("violations").push(format!(
                                "scan {} = {got:?}; acked before {before}, history {:?}",
                                key_name(i),
                                h.present
                            ));
                        }
                    }
                }
            }));
        }

        let mut watch = progress.subscribe();
        watch.wait_for(|n| *n >= 300).await.expect("writers run");
        let (writes_at_start, reads_at_start) =
            (writes.load(Ordering::Relaxed), reads.load(Ordering::Relaxed));
        let kv = kv();
        let config = ReshardConfig { batch_keys: 32, lock_stripes: 64 };
        let report = sharded
            .add_shard(ShardId(3), spare[0].clone(), JumpHash::new(4).expect("map"), &kv, config)
            .await
            .expect("add shard");
        let during = (
            writes.load(Ordering::Relaxed) - writes_at_start,
            reads.load(Ordering::Relaxed) - reads_at_start,
        );
        let after_add = *watch.borrow();
        watch.wait_for(|n| *n >= after_add + 300).await.expect("writers run on");
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.expect("task");
        }

        let violations = violations.lock().expect("violations").clone();
        assert!(
            violations.is_empty(),
            "{engine}: {} violations: {:#?}",
            violations.len(),
            &violations[..violations.len().min(10)]
        );
        assert!(
            during.0 > 0 && during.1 > 0,
            "{engine}: traffic ran during the addition: {during:?}"
        );
        // About a quarter of the ~1,000 present keys move to the fourth shard.
        assert!(report.keys_moved > 100 && report.keys_moved < 500, "{engine}: {report:?}");

        // Afterwards: every key holds its last acknowledged state, on its owner only.
        let router = sharded.router().await;
        let mut held = 0;
        for (shard, db) in router.shards() {
            for (k, _) in kv.page(db, None, 10 * KEYS).await.expect("rows") {
                assert_eq!(router.map().shard_of(k.as_bytes()), shard, "{engine}: {k} on {shard}");
                held += 1;
            }
        }
        let mut present = 0;
        for i in 0..KEYS {
            let want = {
                let h = histories[i].lock().expect("history");
                h.present[h.acked].then(|| h.acked.to_string())
            };
            present += usize::from(want.is_some());
            assert_eq!(get(&sharded, &key_name(i)).await, want, "{engine}: {}", key_name(i));
        }
        assert_eq!(held, present, "{engine}: no copies left behind");
        sharded.close().await;
        drop_all(dbs).await;
    }
}

/// A table that fails on command: its copy after `copies_ok` batches, or every delete.
struct Failing {
    inner: KvTable,
    copies_ok: AtomicU64,
    deletes_fail: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("injected")]
struct Injected;

impl MovableTable for Failing {
    async fn list_keys(
        &self,
        db: &Db,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        self.inner.list_keys(db, after, limit).await
    }

    async fn copy_rows(&self, from: &Db, to: &Db, keys: &[Vec<u8>]) -> Result<u64, sqlx::Error> {
        let left = self.copies_ok.load(Ordering::Relaxed);
        if left == 0 {
            return Err(sqlx::Error::Io(std::io::Error::other(Injected)));
        }
        self.copies_ok.store(left - 1, Ordering::Relaxed);
        self.inner.copy_rows(from, to, keys).await
    }

    async fn delete_rows(&self, db: &Db, keys: &[Vec<u8>]) -> Result<u64, sqlx::Error> {
        if self.deletes_fail {
            return Err(sqlx::Error::Io(std::io::Error::other(Injected)));
        }
        self.inner.delete_rows(db, keys).await
    }
}

/// A copier that stops between reading a batch and writing it, until the test lets it
/// go on: the moment the delete race needs.
struct Pausing {
    inner: KvTable,
    /// Each batch's keys, as soon as they are read.
    read: tokio::sync::mpsc::UnboundedSender<Vec<String>>,
    /// One permit per batch allowed to write.
    go: tokio::sync::Semaphore,
}

impl MovableTable for Pausing {
    async fn list_keys(
        &self,
        db: &Db,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        self.inner.list_keys(db, after, limit).await
    }

    async fn copy_rows(&self, from: &Db, to: &Db, keys: &[Vec<u8>]) -> Result<u64, sqlx::Error> {
        let keys: Vec<String> =
            keys.iter().map(|k| String::from_utf8(k.clone()).expect("utf8")).collect();
        let mut rows = Vec::new();
        for key in &keys {
            rows.extend(self.inner.get(from, key).await?.map(|v| (key.clone(), v)));
        }
        let _ = self.read.send(keys.clone());
        self.go.acquire().await.expect("open").forget();
        let bytes: Vec<Vec<u8>> = keys.iter().map(|k| k.clone().into_bytes()).collect();
        self.inner.delete_rows(to, &bytes).await?;
        for (k, v) in &rows {
            self.inner.put(to, k, v).await?;
        }
        Ok(rows.len() as u64)
    }

    async fn delete_rows(&self, db: &Db, keys: &[Vec<u8>]) -> Result<u64, sqlx::Error> {
        self.inner.delete_rows(db, keys).await
    }
}

/// The copier has read a moving key's row when a writer deletes that key (and updates
/// another): neither the deleted row nor the old value may reach the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_racing_a_delete_never_resurrects_the_row() {
    for dbs in engines(3, "a_copy_racing_a_delete_never_resurrects_the_row").await {
        let engine = dbs[0].engine();
        let (sharded, spare) = open(&dbs, 2).await;
        let sharded = Arc::new(sharded);
        fill(&sharded, 200).await;
        let (read, mut batches) = tokio::sync::mpsc::unbounded_channel();
        let table = Arc::new(Pausing { inner: kv(), read, go: tokio::sync::Semaphore::new(0) });
        let adding = {
            let (sharded, table, new_db) = (sharded.clone(), table.clone(), spare[0].clone());
            let config = ReshardConfig { batch_keys: 1000, ..Default::default() };
            tokio::spawn(async move {
                let map = JumpHash::new(3).expect("map");
                sharded.add_shard(ShardId(2), new_db, map, table.as_ref(), config).await
            })
        };
        let batch = batches.recv().await.expect("a batch was read");
        assert!(batch.len() >= 2, "{engine}: {batch:?}");
        let (deleted, updated) = (batch[0].clone(), batch[1].clone());
        let mut writes = {
            let (sharded, deleted, updated) = (sharded.clone(), deleted.clone(), updated.clone());
            tokio::spawn(async move {
                assert!(delete(&sharded, &deleted).await);
                put(&sharded, &updated, "newer").await;
            })
        };
        // Give the writes every chance to land before the copy writes its stale rows (a
        // protocol without key locks lets them); the verdict below never depends on it.
        let finished =
            tokio::time::timeout(std::time::Duration::from_millis(300), &mut writes).await;
        assert!(finished.is_err(), "{engine}: a moving key's write waited for its copy");
        table.go.add_permits(1000);
        writes.await.expect("writes");
        adding.await.expect("task").expect("added");
        assert_eq!(get(&sharded, &deleted).await, None, "{engine}: {deleted} stays deleted");
        assert_eq!(get(&sharded, &updated).await.as_deref(), Some("newer"), "{engine}");
        let router = sharded.router().await;
        for (shard, db) in router.shards() {
            assert_eq!(kv().get(db, &deleted).await.expect("get"), None, "{engine}: {shard}");
        }
        sharded.close().await;
        drop_all(dbs).await;
    }
}

/// An addition whose future is dropped mid-copy changes nothing: writes of the keys it
/// was moving go on (to their old owner only), and a later addition succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_addition_is_abandoned() {
    for dbs in engines(4, "a_dropped_addition_is_abandoned").await {
        let engine = dbs[0].engine();
        let (sharded, spare) = open(&dbs, 2).await;
        let sharded = Arc::new(sharded);
        let mut model = fill(&sharded, 200).await;
        let (read, mut batches) = tokio::sync::mpsc::unbounded_channel();
        let table = Arc::new(Pausing { inner: kv(), read, go: tokio::sync::Semaphore::new(0) });
        let adding = {
            let (sharded, table, new_db) = (sharded.clone(), table.clone(), spare[0].clone());
            tokio::spawn(async move {
                let map = JumpHash::new(3).expect("map");
                let config = ReshardConfig::default();
                sharded.add_shard(ShardId(2), new_db, map, table.as_ref(), config).await
            })
        };
        let batch = batches.recv().await.expect("a batch was read");
        adding.abort();
        assert!(adding.await.is_err_and(|e| e.is_cancelled()), "{engine}");
        for key in &batch {
            put(&sharded, key, "after").await;
            model.insert(key.clone(), "after".to_owned());
            let abandoned = kv().get(&spare[0], key).await.expect("get");
            assert_eq!(abandoned, None, "{engine}: {key} written to the abandoned shard");
        }
        let map = JumpHash::new(3).expect("map");
        let config = ReshardConfig::default();
        sharded.add_shard(ShardId(2), spare[1].clone(), map, &kv(), config).await.expect("added");
        for (key, value) in &model {
            assert_eq!(get(&sharded, key).await.as_ref(), Some(value), "{engine}: {key}");
        }
        assert_eq!(row_count(&sharded).await, model.len() as i64, "{engine}");
        sharded.close().await;
        drop_all(dbs).await;
    }
}

async fn fill(sharded: &ShardedDb<JumpHash>, n: usize) -> BTreeMap<String, String> {
    let mut model = BTreeMap::new();
    for i in 0..n {
        let (key, value) = (key_name(i), format!("v{}", i % 13));
        put(sharded, &key, &value).await;
        model.insert(key, value);
    }
    model
}

async fn row_count(sharded: &ShardedDb<JumpHash>) -> i64 {
    let counts = sharded
        .scatter(|_, db| async move {
            on_db!(&db, |pool| sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM kv")
                .fetch_one(pool)
                .await)
        })
        .await
        .expect("count");
    counts.into_iter().map(|(_, n)| n).sum()
}

#[tokio::test]
async fn a_failed_copy_abandons_the_addition_and_changes_nothing() {
    for dbs in engines(3, "a_failed_copy_abandons_the_addition").await {
        let engine = dbs[0].engine();
        let (sharded, spare) = open(&dbs, 2).await;
        let model = fill(&sharded, 300).await;
        let failing = Failing { inner: kv(), copies_ok: AtomicU64::new(2), deletes_fail: false };
        let config = ReshardConfig { batch_keys: 20, ..Default::default() };
        let next = || JumpHash::new(3).expect("map");
        let failed =
            sharded.add_shard(ShardId(2), spare[0].clone(), next(), &failing, config).await;
        assert!(
            matches!(failed, Err(AddShardError::Copy { shard: ShardId(2), .. })),
            "{engine}: {failed:?}"
        );
        assert_eq!(sharded.router().await.map().shard_count(), 2, "{engine}: the old map stays");
        for (key, value) in &model {
            assert_eq!(get(&sharded, key).await.as_ref(), Some(value), "{engine}: {key}");
        }
        // The abandoned copies stay on the new database, which is refused until emptied.
        let refused = sharded.add_shard(ShardId(2), spare[0].clone(), next(), &kv(), config).await;
        assert!(
            matches!(refused, Err(AddShardError::NotEmpty(ShardId(2)))),
            "{engine}: {refused:?}"
        );
        let leftovers = kv().list_keys(&spare[0], None, 1000).await.expect("leftovers");
        kv().delete_rows(&spare[0], &leftovers).await.expect("empty it");
        sharded
            .add_shard(ShardId(2), spare[0].clone(), next(), &kv(), config)
            .await
            .expect("retry");
        for (key, value) in &model {
            assert_eq!(get(&sharded, key).await.as_ref(), Some(value), "{engine}: {key}");
        }
        assert_eq!(row_count(&sharded).await, model.len() as i64, "{engine}");
        sharded.close().await;
        drop_all(dbs).await;
    }
}

#[tokio::test]
async fn pages_drop_rows_an_unfinished_cleanup_left_behind() {
    for dbs in engines(4, "pages_drop_rows_an_unfinished_cleanup").await {
        let engine = dbs[0].engine();
        let (sharded, spare) = open(&dbs, 2).await;
        let reference = spare[1].clone();
        kv().schema().apply(&reference).await.expect("reference schema");
        let model = fill(&sharded, 400).await;
        for (key, value) in &model {
            kv().put(&reference, key, value).await.expect("reference");
        }
        let failing =
            Failing { inner: kv(), copies_ok: AtomicU64::new(u64::MAX), deletes_fail: true };
        let config = ReshardConfig { batch_keys: 25, ..Default::default() };
        let added = sharded
            .add_shard(
                ShardId(2),
                spare[0].clone(),
                JumpHash::new(3).expect("map"),
                &failing,
                config,
            )
            .await;
        assert!(matches!(added, Err(AddShardError::Cleanup { .. })), "{engine}: {added:?}");
        assert_eq!(sharded.router().await.map().shard_count(), 3, "{engine}: the switch stands");
        let copies = row_count(&sharded).await - model.len() as i64;
        assert!(copies > 50, "{engine}: old shards still hold the moved rows ({copies})");
        for limit in [1, 3, 10, 64, 1000] {
            check_pages(&sharded, &reference, Order::Key, limit).await;
            check_pages(&sharded, &reference, Order::Value, limit).await;
        }
        let again = sharded
            .add_shard(ShardId(3), spare[1].clone(), JumpHash::new(4).expect("map"), &kv(), config)
            .await;
        assert!(matches!(again, Err(AddShardError::CleanupPending)), "{engine}: {again:?}");
        let deleted = sharded.retry_cleanup(&kv(), config).await.expect("cleanup");
        assert_eq!(deleted as i64, copies, "{engine}");
        assert_eq!(row_count(&sharded).await, model.len() as i64, "{engine}");
        sharded.close().await;
        drop_all(dbs).await;
    }
}

#[tokio::test]
async fn bad_shard_sets_and_settings_are_refused() {
    let dbs = databases(false, 4, "bad_shard_sets").await.expect("sqlite");
    let (sharded, spare) = open(&dbs, 2).await;
    let config = ReshardConfig::default();
    let check = |result: Result<_, AddShardError>, want: &str| {
        let got = format!("{:?}", result.map(|_: girder_shard::sql::AddReport| ()));
        assert!(got.contains(want), "{got} should be {want}");
    };
    let map = |n| JumpHash::new(n).expect("map");
    check(
        sharded.add_shard(ShardId(1), spare[0].clone(), map(3), &kv(), config).await,
        "AlreadyPresent(ShardId(1))",
    );
    check(
        sharded.add_shard(ShardId(3), spare[0].clone(), map(3), &kv(), config).await,
        "Map(Unknown(ShardId(3)))",
    );
    check(
        sharded.add_shard(ShardId(2), spare[0].clone(), map(4), &kv(), config).await,
        "Map(Missing(ShardId(3)))",
    );
    for bad in [
        ReshardConfig { batch_keys: 0, ..config },
        ReshardConfig { lock_stripes: 1 << 20, ..config },
    ] {
        check(sharded.add_shard(ShardId(2), spare[0].clone(), map(3), &kv(), bad).await, "Config");
    }
    kv().schema().apply(&spare[1]).await.expect("schema");
    kv().put(&spare[1], "x", "y").await.expect("a row");
    check(
        sharded.add_shard(ShardId(2), spare[1].clone(), map(3), &kv(), config).await,
        "NotEmpty(ShardId(2))",
    );
    // Every refusal left the two shards serving.
    put(&sharded, "k", "v").await;
    assert_eq!(get(&sharded, "k").await.as_deref(), Some("v"));
    assert_eq!(sharded.router().await.map().shard_count(), 2);

    let urls = |n: usize| {
        dbs[..n].iter().enumerate().map(|(i, d)| (ShardId(i as u32), d.url().to_owned()))
    };
    let missing = ShardedDb::open(map(3), urls(2), POOL, kv().schema()).await;
    assert!(matches!(missing, Err(OpenError::Router(_))), "{missing:?}");
    let bad_url =
        ShardedDb::open(map(1), [(ShardId(0), "mysql://x".to_owned())], POOL, kv().schema()).await;
    assert!(matches!(bad_url, Err(OpenError::Connect { shard: ShardId(0), .. })), "{bad_url:?}");
    let bad_sql = ShardedDb::open(
        map(2),
        urls(2),
        POOL,
        girder_shard::sql::Schema::same(&["CREATE TABLE ("]),
    )
    .await;
    assert!(matches!(bad_sql, Err(OpenError::Schema { .. })), "{bad_sql:?}");
    // A statement's failure is named with its shard.
    let failed = sharded
        .read(b"k", |db| async move {
            on_db!(&db, |pool| sqlx::query("SELECT * FROM missing").execute(pool).await.map(drop))
        })
        .await;
    let owner = sharded.owner(b"k").await.expect("owner");
    assert!(matches!(failed, Err(QueryError::Shard { shard, .. }) if shard == owner), "{failed:?}");
    sharded.close().await;
    drop_all(dbs).await;
}
