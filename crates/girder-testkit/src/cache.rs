//! The conformance suites for `girder-cache`: [`l2_store_conformance`] checks the
//! [`L2Store`] contract (TTLs, set-if-absent fills, writes that announce, pub/sub
//! delivery), and [`multi_instance_conformance`] runs two caches with separate L1s over
//! one shared L2 (an L2 hit after an L1 miss, invalidation and write-through reaching
//! the other instance). Every L2 backend runs both.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use girder_cache::l2::{ListenEvent, Notice};
use girder_cache::{Cache, CacheConfig, L2Store, Loader};
use girder_core::ManualClock;
use parking_lot::Mutex;

use crate::backends::unique_name;

/// How long any single wait in these suites may take before it counts as a failure.
const DEADLINE: Duration = Duration::from_secs(10);

/// Waits (yielding, never sleeping a fixed time) until `cond` holds.
///
/// # Panics
/// After [`DEADLINE`], naming `what`.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waited = tokio::time::timeout(DEADLINE, async {
        while !cond().await {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out after {DEADLINE:?} waiting for {what}");
}

/// Runs the [`L2Store`] suite. `make` opens a new handle on the *same* backend each
/// time (a new connection, as another process would). `pass_time(ms)` makes at least
/// `ms` of the backend's time pass: advance the manual clock of an in-process store;
/// do nothing for a store on real time (the suite then polls with a deadline).
///
/// # Panics
/// On the first violated guarantee, with a message naming it.
pub async fn l2_store_conformance<S, F, Fut>(make: F, pass_time: impl Fn(u64))
where
    S: L2Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let a = Arc::new(make().await);
    let b = Arc::new(make().await);
    let prefix = unique_name("girder:test:l2");
    let key = |name: &str| format!("{prefix}:{name}");
    let channel = key("channel");
    let notice = Notice { channel: &channel, message: "m" };

    // Absent keys read as None; writes are visible to every handle, binary-safe.
    assert_eq!(a.get(&key("absent")).await.expect("get"), None, "absent key");
    let binary: Vec<u8> = (0..=255_u8).chain([0, 0, 255]).collect();
    a.write(&key("bin"), &binary, 60_000, notice).await.expect("write");
    assert_eq!(b.get(&key("bin")).await.expect("get").as_deref(), Some(&binary[..]), "binary");
    let large = vec![0xA5_u8; 1 << 20];
    b.write(&key("large"), &large, 60_000, notice).await.expect("write 1 MiB");
    assert_eq!(a.get(&key("large")).await.expect("get").map(|v| v.len()), Some(1 << 20));

    // Fills store only into absent keys; writes overwrite.
    assert!(a.fill(&key("f"), b"first", 60_000).await.expect("fill"), "fill of an absent key");
    assert!(!b.fill(&key("f"), b"second", 60_000).await.expect("fill"), "fill overwrote");
    assert_eq!(a.get(&key("f")).await.expect("get").as_deref(), Some(&b"first"[..]));
    b.write(&key("f"), b"written", 60_000, notice).await.expect("write");
    assert_eq!(a.get(&key("f")).await.expect("get").as_deref(), Some(&b"written"[..]));
    assert!(!a.fill(&key("f"), b"late fill", 60_000).await.expect("fill"), "fill beat a write");

    // Entries expire at their TTL, and a fill may then take the key.
    a.write(&key("ttl"), b"short", 1, notice).await.expect("write");
    assert!(a.fill(&key("ttl-fill"), b"short", 1).await.expect("fill"));
    pass_time(2);
    eventually("a 1 ms entry to expire", || async {
        a.get(&key("ttl")).await.expect("get").is_none()
            && b.get(&key("ttl-fill")).await.expect("get").is_none()
    })
    .await;
    assert!(b.fill(&key("ttl"), b"refill", 60_000).await.expect("fill"), "fill after expiry");

    concurrent_fills_store_once(&a, &b, &key("race")).await;
    listeners_hear_writes(&a, &b, &key("pubsub")).await;
}

/// Many fills of one key through two handles at once: exactly one stores.
async fn concurrent_fills_store_once<S: L2Store>(a: &Arc<S>, b: &Arc<S>, key: &str) {
    let tasks: Vec<_> = (0..32_u32)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { a } else { b });
            let key = key.to_owned();
            tokio::spawn(async move {
                let stored = store.fill(&key, &i.to_le_bytes(), 60_000).await.expect("fill");
                (i, stored)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (i, stored) = task.await.expect("fill task panicked");
        if stored {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "concurrent fills stored {winners:?}");
    let held = a.get(key).await.expect("get");
    assert_eq!(held.as_deref(), Some(&winners[0].to_le_bytes()[..]), "the winner's value");
}

/// What one listener heard, in order.
#[derive(Default)]
struct Heard {
    subscriptions: AtomicU64,
    messages: Mutex<Vec<String>>,
}

impl Heard {
    fn record(&self, event: ListenEvent<'_>) {
        match event {
            ListenEvent::Subscribed => {
                self.subscriptions.fetch_add(1, Ordering::SeqCst);
            }
            ListenEvent::Message(text) => self.messages.lock().push(text.to_owned()),
            ListenEvent::Lost => {}
        }
    }
}

/// Listeners on two handles hear every write's notice on their channel (their own
/// handle's included), only after the value is visible, and nothing from other channels.
async fn listeners_hear_writes<S: L2Store>(a: &Arc<S>, b: &Arc<S>, prefix: &str) {
    let channel = format!("{prefix}:channel");
    let other = format!("{prefix}:other-channel");
    let heard: Vec<Arc<Heard>> = (0..2).map(|_| Arc::new(Heard::default())).collect();
    let listeners: Vec<_> = [a, b]
        .into_iter()
        .zip(&heard)
        .map(|(store, heard)| {
            let (store, heard, channel) = (Arc::clone(store), Arc::clone(heard), channel.clone());
            tokio::spawn(async move {
                let record = |event: ListenEvent<'_>| heard.record(event);
                store.listen(&channel, &record).await;
            })
        })
        .collect();
    eventually("both listeners to subscribe", || async {
        heard.iter().all(|h| h.subscriptions.load(Ordering::SeqCst) >= 1)
    })
    .await;

    let key = format!("{prefix}:value");
    a.write(&key, b"v1", 60_000, Notice { channel: &other, message: "elsewhere" })
        .await
        .expect("write");
    a.write(&key, b"v2", 60_000, Notice { channel: &channel, message: "from a" })
        .await
        .expect("write");
    b.write(&key, b"v3", 60_000, Notice { channel: &channel, message: "from b" })
        .await
        .expect("write");
    for (i, heard) in heard.iter().enumerate() {
        eventually("both notices to arrive", || async { heard.messages.lock().len() >= 2 }).await;
        let messages = heard.messages.lock().clone();
        assert_eq!(messages, ["from a", "from b"], "listener {i} heard the wrong messages");
    }
    // The notice follows the write: a listener that heard "from b" reads v3.
    assert_eq!(a.get(&key).await.expect("get").as_deref(), Some(&b"v3"[..]));
    for listener in listeners {
        listener.abort();
        assert!(listener.await.expect_err("a listener returned").is_cancelled());
    }
}

/// The system of record behind the caches of [`multi_instance_conformance`].
#[derive(Default)]
struct Table {
    rows: Mutex<HashMap<String, String>>,
    loads: AtomicU64,
}

/// The loader never fails.
#[derive(Debug)]
pub struct NeverFails;

impl std::fmt::Display for NeverFails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never fails")
    }
}

impl std::error::Error for NeverFails {}

impl Loader<String, String> for Table {
    type Error = NeverFails;

    async fn load(&self, key: &String) -> Result<Option<String>, NeverFails> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Ok(self.rows.lock().get(key).cloned())
    }
}

/// Runs two caches, each with its own L1, over two handles `make` opens on one shared
/// L2, with time from `clock`. Checks: an L1 miss on B is an L2 hit after A loaded; an
/// invalidation or write on A evicts B's L1 copy (awaited through B's listener
/// progress, with a deadline); B then reads the new value; neither evicts on its own
/// messages.
///
/// # Panics
/// On the first violated guarantee, with a message naming it.
pub async fn multi_instance_conformance<S, F, Fut>(make: F, clock: &ManualClock)
where
    S: L2Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let table = Arc::new(Table::default());
    // A name unique to the run keeps concurrent runs on one Redis apart.
    let config = CacheConfig {
        name: unique_name("conformance"),
        ttl_ms: 60_000,
        ttl_jitter_fraction: 0.0,
        ..CacheConfig::default()
    };
    let build = |store: S| {
        Cache::builder(config.clone(), Arc::clone(&table))
            .clock(Arc::new(clock.clone()))
            .l2(store)
            .build()
            .expect("build cache")
    };
    let a = build(make().await);
    let b = build(make().await);
    for cache in [&a, &b] {
        let mut progress = cache.listener_progress();
        let subscribed = tokio::time::timeout(DEADLINE, progress.wait_for(|p| p.subscribed)).await;
        assert!(matches!(subscribed, Ok(Ok(_))), "a cache's listener never subscribed");
    }
    let set = |key: &str, value: &str| table.rows.lock().insert(key.to_owned(), value.to_owned());
    let loads = || table.loads.load(Ordering::SeqCst);
    let link = "link".to_owned();

    // L1 miss on B after A loaded: an L2 hit, no second load.
    set("link", "v1");
    assert_eq!(a.get(&link).await.expect("get").as_deref(), Some("v1"));
    assert_eq!(b.get(&link).await.expect("get").as_deref(), Some("v1"));
    assert_eq!(loads(), 1, "B loaded instead of reading L2");
    assert_eq!(b.stats().l2_hits, 1, "B's read was not an L2 hit");
    assert_eq!(b.peek(&link), Some(Some("v1".to_owned())));

    // Write-around on A reaches B's L1.
    set("link", "v2");
    a.invalidate(&link).await.expect("invalidate");
    let mut progress = b.listener_progress();
    let applied =
        tokio::time::timeout(DEADLINE, progress.wait_for(|p| p.invalidations_applied >= 1));
    assert!(matches!(applied.await, Ok(Ok(_))), "B never heard A's invalidation");
    assert_eq!(b.peek(&link), None, "B's L1 kept the invalidated entry");
    assert_eq!(b.get(&link).await.expect("get").as_deref(), Some("v2"));
    assert_eq!(loads(), 2, "the tombstone should send B to the loader");

    // Write-through on A reaches B's L1, and B then reads A's value from L2.
    set("link", "v3");
    a.put(link.clone(), "v3".to_owned()).await.expect("put");
    let applied =
        tokio::time::timeout(DEADLINE, progress.wait_for(|p| p.invalidations_applied >= 2));
    assert!(matches!(applied.await, Ok(Ok(_))), "B never heard A's write");
    assert_eq!(b.peek(&link), None, "B's L1 kept the overwritten entry");
    let l2_hits = b.stats().l2_hits;
    assert_eq!(b.get(&link).await.expect("get").as_deref(), Some("v3"));
    assert_eq!((loads(), b.stats().l2_hits), (2, l2_hits + 1), "B should read A's write from L2");

    // And back: B's write evicts A's copy; A ignores its own messages.
    assert_eq!(a.peek(&link), Some(Some("v3".to_owned())), "A evicted on its own message");
    b.invalidate(&link).await.expect("invalidate");
    let mut progress = a.listener_progress();
    let applied =
        tokio::time::timeout(DEADLINE, progress.wait_for(|p| p.invalidations_applied >= 1));
    assert!(matches!(applied.await, Ok(Ok(_))), "A never heard B's invalidation");
    assert_eq!(a.peek(&link), None);
    assert_eq!(a.stats().invalidations_received, 1, "A counted its own messages");

    a.shutdown().await;
    b.shutdown().await;
}
