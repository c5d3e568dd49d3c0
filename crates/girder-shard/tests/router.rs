//! The router against one unsharded table: every key routed to its owner, and paging
//! through a gathered query gives exactly the rows, in the order, that the same query
//! on one table gives, for any rows, shard count and page size.

use std::collections::BTreeMap;
use std::sync::Mutex;

use girder_shard::hash::{JumpHash, Rendezvous, ShardId, ShardMap};
use girder_shard::router::{Router, RouterError, merge_sorted, salted, salts};
use proptest::prelude::*;

/// A row: sorted by (score, id), ids unique.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    id: u64,
    score: i32,
}

type Key = (i32, u64);

fn key(row: &Row) -> Key {
    (row.score, row.id)
}

/// One shard: a table ordered by key.
#[derive(Debug, Default)]
struct Table(Mutex<BTreeMap<Key, Row>>);

#[derive(Debug, thiserror::Error)]
#[error("shard down")]
struct Down;

impl Table {
    fn insert(&self, row: Row) {
        self.0.lock().expect("table").insert(key(&row), row);
    }

    /// The shard's side of a keyset page: its first `limit` rows after `after`.
    fn page(&self, after: Option<&Key>, limit: usize) -> Vec<Row> {
        let table = self.0.lock().expect("table");
        match after {
            Some(after) => table
                .range((std::ops::Bound::Excluded(*after), std::ops::Bound::Unbounded))
                .take(limit)
                .map(|(_, r)| r.clone())
                .collect(),
            None => table.values().take(limit).cloned().collect(),
        }
    }
}

fn router(shards: u32) -> Router<JumpHash, Table> {
    let map = JumpHash::new(shards).expect("map");
    Router::new(map, (0..shards).map(|i| (ShardId(i), Table::default()))).expect("router")
}

/// Pages through every shard with `limit` rows a page.
fn page_all(router: &Router<JumpHash, Table>, limit: usize) -> (Vec<Row>, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    let (mut rows, mut pages, mut cursor) = (Vec::new(), 0, None::<Key>);
    loop {
        let page = runtime
            .block_on(router.gather_page(cursor.as_ref(), limit, key, |_, table, after, n| {
                let rows = table.page(after, n);
                async move { Ok::<_, Down>(rows) }
            }))
            .expect("page");
        pages += 1;
        assert!(page.rows.len() <= limit);
        rows.extend(page.rows);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return (rows, pages),
        }
        assert!(pages <= rows.len() + 2, "paging terminates");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn gathered_pages_equal_one_table(
        scores in proptest::collection::vec(-50i32..50, 0..300),
        shards in 1u32..9,
        limit in 1usize..40,
    ) {
        let router = router(shards);
        let mut reference = BTreeMap::new();
        for (id, score) in scores.iter().enumerate() {
            let row = Row { id: id as u64, score: *score };
            let (owner, table) = router.route(&row.id.to_le_bytes()).expect("routed");
            prop_assert!(owner.0 < shards);
            table.insert(row.clone());
            reference.insert(key(&row), row);
        }
        let (rows, pages) = page_all(&router, limit);
        let want: Vec<Row> = reference.into_values().collect();
        prop_assert_eq!(&rows, &want);
        // No wasted round trips beyond the one that finds the end.
        prop_assert!(pages <= want.len() / limit + 2);
    }

    #[test]
    fn merge_equals_sort(runs in proptest::collection::vec(proptest::collection::vec(0u32..100, 0..30), 0..6), limit in 0usize..80) {
        let sorted_runs: Vec<Vec<u32>> = runs.iter().map(|r| { let mut r = r.clone(); r.sort_unstable(); r }).collect();
        let mut all: Vec<u32> = runs.concat();
        all.sort_unstable();
        all.truncate(limit);
        prop_assert_eq!(merge_sorted(sorted_runs, |x| *x, limit), all);
    }
}

#[test]
fn single_keys_go_to_their_owner_and_bad_backends_are_refused() {
    let map = Rendezvous::new((0..4).map(ShardId)).expect("map");
    let router = Router::new(map.clone(), (0..4).map(|i| (ShardId(i), i))).expect("router");
    for k in 0..1000u32 {
        let key = k.to_le_bytes();
        let (owner, backend) = router.route(&key).expect("routed");
        assert_eq!((owner, *backend), (map.shard_of(&key), owner.0));
    }
    assert_eq!(
        Router::new(map.clone(), (0..3).map(|i| (ShardId(i), i))).err(),
        Some(RouterError::Missing(ShardId(3)))
    );
    assert_eq!(
        Router::new(map, (0..5).map(|i| (ShardId(i), i))).err(),
        Some(RouterError::Unknown(ShardId(4)))
    );
}

#[tokio::test]
async fn a_failing_shard_fails_the_scatter_and_names_itself() {
    let router = router(3);
    let result = router
        .scatter(|id, _| async move { if id == ShardId(1) { Err(Down) } else { Ok(id.0) } })
        .await;
    let err = result.expect_err("shard 1 is down");
    assert_eq!(err.shard, ShardId(1));
    let ok = router.scatter(|id, _| async move { Ok::<_, Down>(id.0 * 10) }).await.expect("all up");
    assert_eq!(ok, vec![(ShardId(0), 0), (ShardId(1), 10), (ShardId(2), 20)]);
}

#[test]
fn a_hot_key_spreads_over_shards_through_its_salts() {
    let map = JumpHash::new(16).expect("map");
    let owners: std::collections::HashSet<ShardId> =
        salts(b"celebrity:42", 8).map(|k| map.shard_of(&k)).collect();
    assert!(owners.len() >= 4, "8 salts land on several shards: {owners:?}");
    assert_eq!(salted(b"k", 3), b"k#3");
    assert_eq!(
        salts(b"k", 3).collect::<Vec<_>>(),
        vec![b"k#0".to_vec(), b"k#1".to_vec(), b"k#2".to_vec()]
    );
}
