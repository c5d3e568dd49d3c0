//! The cache's features, each driven through the public API with a manual clock (no
//! sleeps): TTL and jitter, negative caching, stale-while-revalidate, single-flight
//! under 1,000 concurrent misses, error sharing, cancellation, capacity, write-through
//! and write-around, races between loads and writes, the in-process L2 and its
//! failures, query keys, metrics, and shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use girder_cache::l2::MemoryL2Config;
use girder_cache::{
    BuildError, Cache, CacheConfig, ConfigError, GetError, L2Error, Loader, MemoryL2, QueryKey,
    WriteError,
};
use girder_core::{Clock, ManualClock};
use parking_lot::Mutex;
use tokio::sync::watch;

const T0: u64 = 1_700_000_000_000;

#[derive(Debug, thiserror::Error)]
#[error("table unavailable")]
struct Unavailable;

/// The system of record: a table of rows, counting reads, optionally failing, and
/// optionally holding every read at a gate until the test opens it.
struct Table {
    rows: Mutex<HashMap<u64, String>>,
    calls: AtomicU64,
    failing: AtomicBool,
    gate: watch::Sender<bool>,
}

impl Table {
    fn new(rows: &[(u64, &str)]) -> Arc<Self> {
        Arc::new(Self {
            rows: Mutex::new(rows.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()),
            calls: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            gate: watch::Sender::new(true),
        })
    }

    fn set(&self, key: u64, value: &str) {
        self.rows.lock().insert(key, value.to_owned());
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn close_gate(&self) {
        self.gate.send_replace(false);
    }

    fn open_gate(&self) {
        self.gate.send_replace(true);
    }
}

impl Loader<u64, String> for Table {
    type Error = Unavailable;

    async fn load(&self, key: &u64) -> Result<Option<String>, Unavailable> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // Read the row before waiting, as a query that started before a write would.
        let row = self.rows.lock().get(key).cloned();
        let mut gate = self.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
        if self.failing.load(Ordering::SeqCst) { Err(Unavailable) } else { Ok(row) }
    }
}

type TestCache = Cache<u64, String, Arc<Table>>;
type SharedCache = Cache<u64, String, Arc<Table>, MemoryL2>;

fn config() -> CacheConfig {
    CacheConfig {
        name: "test".into(),
        l1_capacity_entries: 10_000,
        ttl_ms: 1_000,
        ttl_jitter_fraction: 0.0,
        negative_ttl_ms: 500,
        stale_ms: 0,
        ..CacheConfig::default()
    }
}

fn cache(config: CacheConfig, table: &Arc<Table>, clock: &ManualClock) -> TestCache {
    Cache::builder(config, Arc::clone(table)).clock(Arc::new(clock.clone())).build().unwrap()
}

fn shared(table: &Arc<Table>, clock: &ManualClock, l2: &MemoryL2) -> SharedCache {
    Cache::builder(config(), Arc::clone(table))
        .clock(Arc::new(clock.clone()))
        .l2(l2.clone())
        .build()
        .unwrap()
}

async fn get<S: girder_cache::L2Store>(
    cache: &Cache<u64, String, Arc<Table>, S>,
    key: u64,
) -> Option<String> {
    cache.get(&key).await.expect("load failed")
}

/// Waits until `cond` holds, yielding to other tasks; fails after a generous deadline.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !cond() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test]
async fn entries_expire_exactly_at_their_ttl() {
    let clock = ManualClock::new(T0);
    let table = Table::new(&[(1, "v1")]);
    let cache = cache(config(), &table, &clock);
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v1"));
    table.set(1, "v2");
    clock.advance(ms(999));
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v1"), "fresh until the TTL");
    assert_eq!(table.calls(), 1);
    clock.advance(ms(1));
    assert_eq!(cache.peek(&1), None, "expired at the TTL");
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v2"));
    assert_eq!(table.calls(), 2);
    let stats = cache.stats();
    assert_eq!((stats.l1_hits, stats.l1_misses, stats.loader_calls), (1, 2, 2));
}

#[tokio::test]
async fn a_cache_with_its_own_clock_ignores_the_wall_clock_on_hits() {
    // Ahead of the wall clock, so a hit judged by the coarse clock's time would
    // still see the entry as fresh after this clock has moved past its TTL.
    let clock = ManualClock::new(4_000_000_000_000);
    let table = Table::new(&[(1, "v1")]);
    let cache = cache(config(), &table, &clock);
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v1"));
    assert_eq!(cache.get_cached(&1), Some(Some("v1".to_owned())));
    clock.advance(ms(1_000));
    assert_eq!(cache.get_cached(&1), None, "served past its TTL");
    assert_eq!(cache.stats().l1_hits, 1);
}

#[tokio::test]
async fn jitter_spreads_expiry_within_its_bounds() {
    let clock = ManualClock::new(T0);
    let table = Table::new(&[]);
    let cfg = CacheConfig {
        ttl_ms: 10_000,
        ttl_jitter_fraction: 0.1,
        negative_ttl_ms: 10_000,
        ..config()
    };
    let cache = cache(cfg, &table, &clock);
    let keys = 0..1_000_u64;
    for key in keys.clone() {
        assert_eq!(get(&cache, key).await, None);
    }
    let fresh = || keys.clone().filter(|k| cache.peek(k).is_some()).count();
    clock.advance(ms(8_999));
    assert_eq!(fresh(), 1_000, "expired before ttl * 0.9");
    clock.advance(ms(1_001));
    let halfway = fresh();
    assert!((300..=700).contains(&halfway), "{halfway} of 1000 fresh at exactly the TTL");
    clock.advance(ms(1_000));
    assert_eq!(fresh(), 0, "still fresh at ttl * 1.1");
}

#[tokio::test]
async fn absent_rows_are_cached_for_the_negative_ttl_only() {
    let clock = ManualClock::new(T0);
    let table = Table::new(&[]);
    let cache = cache(config(), &table, &clock);
    assert_eq!(get(&cache, 9).await, None);
    table.set(9, "now exists");
    clock.advance(ms(499));
    assert_eq!(get(&cache, 9).await, None, "the absence is cached");
    assert_eq!((table.calls(), cache.stats().negative_hits), (1, 1));
    clock.advance(ms(1));
    assert_eq!(get(&cache, 9).await.as_deref(), Some("now exists"));
    assert_eq!(table.calls(), 2);

    let uncached = cache_with(CacheConfig { negative_ttl_ms: 0, ..config() }, &table, &clock);
    for _ in 0..3 {
        assert_eq!(get(&uncached, 10).await, None);
    }
    assert_eq!(uncached.stats().loader_calls, 3, "negative caching disabled");
}

fn cache_with(config: CacheConfig, table: &Arc<Table>, clock: &ManualClock) -> TestCache {
    cache(config, table, clock)
}

#[tokio::test]
async fn stale_entries_are_served_while_one_refresh_runs() {
    let clock = ManualClock::new(T0);
    let table = Table::new(&[(1, "v1")]);
    let cache = cache(CacheConfig { stale_ms: 500, ..config() }, &table, &clock);
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v1"));
    table.set(1, "v2");
    clock.advance(ms(1_000));
    // Past the TTL, within the stale window: the old value, at once, twice, with one
    // refresh started for both.
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v1"));
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v1"));
    let stats = cache.stats();
    assert_eq!((stats.stale_served, stats.refreshes), (2, 1));
    cache.join_refreshes().await;
    assert_eq!(cache.peek(&1), Some(Some("v2".to_owned())));
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v2"));
    assert_eq!(table.calls(), 2);

    // Past the stale window nothing stale is served: the read loads inline.
    table.set(1, "v3");
    clock.advance(ms(1_500));
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v3"));
    assert_eq!(cache.stats().refreshes, 1);
}

#[tokio::test]
async fn refreshes_are_bounded_by_refreshes_max() {
    let clock = ManualClock::new(T0);
    let table = Table::new(&[(1, "a"), (2, "b"), (3, "c")]);
    let cfg = CacheConfig { stale_ms: 500, refreshes_max: 2, ..config() };
    let cache = cache(cfg, &table, &clock);
    for key in 1..=3 {
        get(&cache, key).await;
    }
    table.close_gate();
    clock.advance(ms(1_000));
    for key in 1..=3 {
        assert!(get(&cache, key).await.is_some());
    }
    assert_eq!(cache.stats().refreshes, 2, "a third refresh started past the bound");
    table.open_gate();
    cache.join_refreshes().await;
    assert!(get(&cache, 3).await.is_some());
    assert_eq!(cache.stats().refreshes, 3, "a slot freed up for key 3");
}

/// Starts `n` concurrent reads of `key` behind a closed gate, waits until all of them
/// are inside the cache (one loading, `n - 1` coalesced), and returns their tasks.
async fn concurrent_misses(
    cache: &Arc<TestCache>,
    table: &Table,
    key: u64,
    n: u64,
) -> Vec<tokio::task::JoinHandle<Result<Option<String>, GetError<Unavailable>>>> {
    table.close_gate();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let cache = Arc::clone(cache);
            tokio::spawn(async move { cache.get(&key).await })
        })
        .collect();
    eventually("every reader to join the load", || cache.stats().loads_coalesced == n - 1).await;
    assert_eq!(table.calls(), 1);
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_cause_one_load() {
    let clock = ManualClock::new(T0);
    let table = Table::new(&[(7, "seven")]);
    let cache = Arc::new(cache(config(), &table, &clock));
    let tasks = concurrent_misses(&cache, &table, 7, 1_000).await;
    table.open_gate();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().as_deref(), Some("seven"));
    }
    let stats = cache.stats();
    assert_eq!((stats.loader_calls, stats.loads_coalesced, stats.l1_misses), (1, 999, 1_000));
    assert_eq!(get(&cache, 7).await.as_deref(), Some("seven"));
    assert_eq!(table.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_error_reaches_every_waiter_and_is_not_cached() {
    let clock = ManualClock::new(T0);
    let table = Table::new(&[(7, "seven")]);
    table.failing.store(true, Ordering::SeqCst);
    let cache = Arc::new(cache(config(), &table, &clock));
    let tasks = concurrent_misses(&cache, &table, 7, 1_000).await;
    table.open_gate();
    let mut first: Option<Arc<Unavailable>> = None;
    for task in tasks {
        let Err(GetError::Load(err)) = task.await.unwrap() else { panic!("expected an error") };
        let first = first.get_or_insert_with(|| Arc::clone(&err));
        assert!(Arc::ptr_eq(first, &err), "waiters got different errors");
    }
    assert_eq!(cache.stats().loader_errors, 1);
    table.failing.store(false, Ordering::SeqCst);
    assert_eq!(get(&cache, 7).await.as_deref(), Some("seven"), "the error was cached");
    assert_eq!(table.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_hands_the_load_to_a_waiter() {
    let clock = ManualClock::new(T0);
    let table = Table::new(&[(7, "seven")]);
    let cache = Arc::new(cache(config(), &table, &clock));
    table.close_gate();
    let leader = tokio::spawn({
        let cache = Arc::clone(&cache);
        async move { cache.get(&7).await }
    });
    eventually("the leader to start loading", || table.calls() == 1).await;
    let waiter = tokio::spawn({
        let cache = Arc::clone(&cache);
        async move { cache.get(&7).await }
    });
    eventually("the waiter to join", || cache.stats().loads_coalesced == 1).await;
    leader.abort();
    eventually("the waiter to take over", || table.calls() == 2).await;
    table.open_gate();
    assert_eq!(waiter.await.unwrap().unwrap().as_deref(), Some("seven"));
}

#[tokio::test]
async fn l1_never_holds_more_than_its_capacity() {
    let clock = ManualClock::new(T0);
    // Keys below 500 exist; the rest are cached absences.
    let rows: Vec<(u64, String)> = (0..500).map(|key| (key, format!("v{key}"))).collect();
    let rows: Vec<(u64, &str)> = rows.iter().map(|(key, value)| (*key, value.as_str())).collect();
    let table = Table::new(&rows);
    let small =
        CacheConfig { l1_capacity_entries: 100, l1_negative_capacity_entries: 50, ..config() };
    let bounded = cache(small, &table, &clock);
    for key in (0..1_000).map(|i| (i * 7) % 1_000) {
        get(&bounded, key).await;
        assert!(bounded.stats().l1_entries <= 150, "L1 grew past its capacity at key {key}");
    }
    let stats = bounded.stats();
    assert!(stats.evictions >= 850, "{} evictions for 1000 entries in 150 slots", stats.evictions);

    // A flood of absences does not evict values, and stays within its own bound.
    let roomy =
        CacheConfig { l1_capacity_entries: 1_000, l1_negative_capacity_entries: 100, ..config() };
    let flooded = cache(roomy, &table, &clock);
    for key in (0..100).chain(10_000..20_000) {
        get(&flooded, key).await;
    }
    let held = (0..100).filter(|key| flooded.peek(key) == Some(Some(format!("v{key}")))).count();
    assert_eq!(held, 100, "values were evicted by 10,000 absent keys");
    assert!(flooded.stats().l1_entries < 300, "absences outgrew their bound");
}

#[tokio::test]
async fn put_writes_through_and_invalidate_writes_around() {
    let clock = ManualClock::new(T0);
    let table = Table::new(&[(1, "v1")]);
    let cache = cache(config(), &table, &clock);
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v1"));
    table.set(1, "v2");
    cache.put(1, "v2".to_owned()).await.unwrap();
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v2"));
    assert_eq!(table.calls(), 1, "put did not fill L1");
    table.set(1, "v3");
    cache.invalidate(&1).await.unwrap();
    assert_eq!(cache.peek(&1), None);
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v3"));
    assert_eq!(table.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_overtaken_by_a_write_fills_nothing() {
    let clock = ManualClock::new(T0);
    let l2 = MemoryL2::new(Arc::new(clock.clone()));
    let table = Table::new(&[(1, "old"), (2, "old")]);
    let cache = Arc::new(shared(&table, &clock, &l2));
    for (key, write_is_put) in [(1, true), (2, false)] {
        table.close_gate();
        let reader = tokio::spawn({
            let cache = Arc::clone(&cache);
            async move { cache.get(&key).await }
        });
        eventually("the load to read the old row", || table.calls() == key).await;
        table.set(key, "new");
        if write_is_put {
            cache.put(key, "new".to_owned()).await.unwrap();
        } else {
            cache.invalidate(&key).await.unwrap();
        }
        table.open_gate();
        // The reader asked before the write: the old value is a legitimate answer...
        assert_eq!(reader.await.unwrap().unwrap().as_deref(), Some("old"));
        // ...but it must not be cached anywhere.
        let want = write_is_put.then(|| Some("new".to_owned()));
        assert_eq!(cache.peek(&key), want, "key {key}");
        assert_eq!(get(&cache, key).await.as_deref(), Some("new"), "key {key}");
    }
}

#[tokio::test]
async fn an_l2_hit_spares_the_loader_and_keeps_the_l2_expiry() {
    let clock = ManualClock::new(T0);
    let l2 = MemoryL2::new(Arc::new(clock.clone()));
    let table = Table::new(&[(1, "v1")]);
    let a = shared(&table, &clock, &l2);
    let b = shared(&table, &clock, &l2);
    assert_eq!(get(&a, 1).await.as_deref(), Some("v1"));
    assert_eq!(get(&b, 1).await.as_deref(), Some("v1"));
    assert_eq!(table.calls(), 1, "B loaded instead of reading L2");
    let stats = b.stats();
    assert_eq!((stats.l2_hits, stats.l2_misses, stats.loader_calls), (1, 0, 0));
    // Absences are shared too.
    assert_eq!(get(&a, 2).await, None);
    assert_eq!(get(&b, 2).await, None);
    assert_eq!(table.calls(), 2);
    // An L1 entry filled from L2 never outlives the L2 entry (l2_ttl_ms = 600 s here).
    let c = shared(&table, &clock, &l2);
    clock.advance(ms(599_500));
    assert_eq!(get(&c, 1).await.as_deref(), Some("v1"));
    clock.advance(ms(499));
    assert!(c.peek(&1).is_some());
    clock.advance(ms(1));
    assert_eq!(c.peek(&1), None, "L1 kept a value past its L2 expiry");
}

#[tokio::test]
async fn resubscribing_clears_l1_because_invalidations_may_have_been_missed() {
    let clock = ManualClock::new(T0);
    let l2 = MemoryL2::new(Arc::new(clock.clone()));
    let table = Table::new(&[(1, "v1")]);
    let cache = shared(&table, &clock, &l2);
    let mut progress = cache.listener_progress();
    progress.wait_for(|p| p.subscriptions == 1).await.unwrap();
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v1"));
    l2.disconnect_listeners();
    progress.wait_for(|p| p.subscriptions == 2).await.unwrap();
    assert_eq!(cache.peek(&1), None, "L1 kept an entry across a gap in the subscription");
    assert_eq!(cache.stats().resyncs, 2);
}

#[tokio::test]
async fn a_lagging_listener_resyncs_too() {
    let clock = ManualClock::new(T0);
    let config = MemoryL2Config { bus_capacity_messages: 2, ..MemoryL2Config::default() };
    let l2 = MemoryL2::with_config(Arc::new(clock.clone()), config);
    let table = Table::new(&[(1, "v1")]);
    let a = shared(&table, &clock, &l2);
    let b = shared(&table, &clock, &l2);
    let mut progress = b.listener_progress();
    progress.wait_for(|p| p.subscriptions == 1).await.unwrap();
    // On this single-threaded runtime B's listener cannot run while A publishes.
    for key in 10..20 {
        a.invalidate(&key).await.unwrap();
    }
    progress.wait_for(|p| p.subscriptions == 2).await.unwrap();
    assert!(b.stats().resyncs >= 2);
}

#[tokio::test]
async fn an_l2_outage_degrades_reads_to_the_loader_and_fails_writes() {
    let clock = ManualClock::new(T0);
    let l2 = MemoryL2::new(Arc::new(clock.clone()));
    let table = Table::new(&[(1, "v1")]);
    let cache = shared(&table, &clock, &l2);
    l2.set_available(false);
    assert_eq!(get(&cache, 1).await.as_deref(), Some("v1"));
    assert_eq!(cache.stats().l2_errors, 2, "a failed read and a failed fill");
    let err = cache.put(1, "v2".to_owned()).await.unwrap_err();
    assert!(matches!(err, WriteError::L2(L2Error::Backend(_))), "{err}");
    assert_eq!(cache.peek(&1), Some(Some("v2".to_owned())), "L1 is updated regardless");
    assert!(cache.invalidate(&1).await.is_err());
    assert_eq!(cache.peek(&1), None);
    l2.set_available(true);
    cache.put(1, "v3".to_owned()).await.unwrap();
}

#[tokio::test]
async fn query_keys_share_entries_across_formatting_but_not_parameters() {
    let calls = Arc::new(AtomicU64::new(0));
    let loader = girder_cache::loader_fn({
        let calls = Arc::clone(&calls);
        move |_key: QueryKey| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Unavailable>(Some(vec!["row".to_owned()])) }
        }
    });
    let cache: Cache<QueryKey, Vec<String>, _> = Cache::new(config(), loader).unwrap();
    let sql = "SELECT code, url FROM links WHERE owner = $1 AND created_at > $2";
    let reformatted = "SELECT code, url\n  FROM links\n WHERE owner = $1\n   AND created_at > $2";
    let key = |q: &str, owner: &str| QueryKey::new(q, &(owner, 1_700_000_000_i64)).unwrap();
    cache.get(&key(sql, "ann")).await.unwrap();
    cache.get(&key(reformatted, "ann")).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    cache.get(&key(sql, "bob")).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn counters_are_emitted_as_metrics_labelled_with_the_cache_name() {
    /// A registered counter: name, labels, value.
    type Registered = (String, Vec<(String, String)>, Arc<AtomicU64>);

    #[derive(Default)]
    struct Recorder {
        counters: Mutex<Vec<Registered>>,
    }
    impl metrics::Recorder for Recorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            let value = Arc::new(AtomicU64::new(0));
            let labels = key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
            self.counters.lock().push((key.name().to_owned(), labels, Arc::clone(&value)));
            metrics::Counter::from_arc(value)
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    let recorder = Recorder::default();
    let clock = ManualClock::new(T0);
    let table = Table::new(&[(1, "v1")]);
    let cfg = CacheConfig { name: "links".into(), ..config() };
    let cache = metrics::with_local_recorder(&recorder, || cache(cfg, &table, &clock));
    get(&cache, 1).await;
    get(&cache, 1).await;
    get(&cache, 2).await;
    let metric = |name: &str| {
        let counters = recorder.counters.lock();
        let (_, labels, value) = counters.iter().find(|(n, ..)| n == name).expect(name);
        assert_eq!(labels, &[("cache".to_owned(), "links".to_owned())]);
        value.load(Ordering::SeqCst)
    };
    // Miss-path counters reach metrics as they happen...
    assert_eq!(metric("girder_cache_l1_misses_total"), 2);
    assert_eq!(metric("girder_cache_loader_calls_total"), 2);
    // ...hit counters when the coarse clock's thread flushes them (about once a second)
    // or when stats() is read.
    let stats = cache.stats();
    assert_eq!((stats.l1_hits, stats.l1_misses, stats.loader_calls), (1, 2, 2));
    assert_eq!(metric("girder_cache_l1_hits_total"), 1);
    assert_eq!(metric("girder_cache_negative_hits_total"), 0);
    get(&cache, 2).await;
    let _ = cache.stats();
    let _ = cache.stats();
    assert_eq!(metric("girder_cache_l1_hits_total"), 2, "a flush counted twice");
    assert_eq!(metric("girder_cache_negative_hits_total"), 1);
}

#[tokio::test]
async fn invalid_configs_and_missing_runtimes_are_refused() {
    let table = Table::new(&[]);
    let bad = CacheConfig { l1_capacity_entries: 0, ..config() };
    let err = Cache::<u64, String, _>::new(bad, Arc::clone(&table)).unwrap_err();
    assert_eq!(err, BuildError::Config(ConfigError::ZeroCapacity));

    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let outside = std::thread::spawn(move || {
        Cache::<u64, String, _>::builder(config(), table).l2(MemoryL2::new(clock)).build().map(drop)
    });
    assert_eq!(outside.join().unwrap(), Err(BuildError::NoRuntime));
}

#[tokio::test]
async fn shutdown_stops_and_joins_background_work() {
    let clock = ManualClock::new(T0);
    let l2 = MemoryL2::new(Arc::new(clock.clone()));
    let table = Table::new(&[(1, "v1")]);
    let cache: SharedCache =
        Cache::builder(CacheConfig { stale_ms: 500, ..config() }, Arc::clone(&table))
            .clock(Arc::new(clock.clone()))
            .l2(l2.clone())
            .build()
            .unwrap();
    cache.listener_progress().wait_for(|p| p.subscribed).await.unwrap();
    get(&cache, 1).await;
    table.close_gate();
    clock.advance(ms(1_000));
    get(&cache, 1).await; // starts a refresh, held at the gate
    assert_eq!(cache.stats().refreshes, 1);
    cache.shutdown().await;
    // Everything the cache spawned is gone: only the test holds the table now.
    drop(cache);
    assert_eq!(Arc::strong_count(&table), 1, "a background task outlived its cache");
}

/// `get_cached_by` answers from fresh entries only, with a borrowed key: a value, a
/// cached absence, nothing for a stale entry (which needs an owned key to refresh) or
/// a missing one; hits are counted like `get_cached`'s.
#[tokio::test]
async fn get_cached_by_answers_fresh_entries_with_a_borrowed_key() {
    let clock = ManualClock::new(T0);
    let loader = girder_cache::loader_fn(|key: String| async move {
        Ok::<_, std::io::Error>((key != "absent").then_some(key.len()))
    });
    let config = CacheConfig { ttl_ms: 1_000, stale_ms: 5_000, ..config() };
    let cache = Cache::builder(config, loader).clock(Arc::new(clock.clone())).build().unwrap();
    assert_eq!(cache.get_cached_by("seven"), None, "nothing cached yet");
    assert_eq!(cache.get(&"seven".to_owned()).await.unwrap(), Some(5));
    assert_eq!(cache.get(&"absent".to_owned()).await.unwrap(), None);
    assert_eq!(cache.get_cached_by("seven"), Some(Some(5)));
    assert_eq!(cache.get_cached_by("absent"), Some(None), "a cached absence");
    assert_eq!(cache.stats().l1_hits, 2);
    clock.advance(Duration::from_millis(1_500));
    assert_eq!(cache.get_cached_by("seven"), None, "stale: left to the owned-key path");
    assert_eq!(cache.get_cached(&"seven".to_owned()), Some(Some(5)), "which serves it stale");
}
