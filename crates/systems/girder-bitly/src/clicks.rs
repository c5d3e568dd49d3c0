//! Click counting without a database write per redirect (Pattern: Write
//! Batching & Buffering). Redirects increment an in-memory map; a flusher
//! writes the map to the store in one transaction every interval, when the map
//! reaches its key bound, and on graceful shutdown.
//!
//! The trade-off, as the catalogue says: counts are eventually consistent, and a
//! crash loses at most one interval's clicks of this instance. Counts that
//! cannot be buffered because the map is full and the store is failing are
//! dropped and counted in `girder_bitly_clicks_dropped_total`, never allowed to
//! grow memory without bound.
//!
//! Every click is also a redirect: `girder_bitly_redirects_total` is advanced here, by
//! each flushed batch and by each dropped click, so the redirect path itself touches
//! no shared counter (the metric lags by at most one flush interval).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::store::LinkStore;

/// Bounds and timing of the click buffer.
#[derive(Debug, Clone, Copy)]
pub struct ClickBufferConfig {
    /// Flush at least this often.
    pub flush_interval_ms: u64,
    /// Distinct codes held before a flush is forced; beyond this clicks are dropped.
    pub keys_max: usize,
}

impl Default for ClickBufferConfig {
    fn default() -> Self {
        Self { flush_interval_ms: 1_000, keys_max: 100_000 }
    }
}

/// Shards of the buffer: redirects on different codes take different locks, so the
/// server's worker threads do not queue on one mutex for every click.
const SHARDS: usize = 16;

/// Buffered click counts, shared by the redirect handler and the flusher.
#[derive(Debug)]
pub struct ClickBuffer {
    shards: Box<[Mutex<HashMap<String, u64>>]>,
    /// Distinct codes held across all shards; only a new code touches it.
    keys: AtomicUsize,
    config: ClickBufferConfig,
    wake: Notify,
}

impl ClickBuffer {
    /// An empty buffer.
    #[must_use]
    pub fn new(config: ClickBufferConfig) -> Arc<Self> {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Arc::new(Self { shards, keys: AtomicUsize::new(0), config, wake: Notify::new() })
    }

    /// The shard holding `code` (FNV-1a of its bytes).
    fn shard(&self, code: &str) -> &Mutex<HashMap<String, u64>> {
        let hash = code.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        // The modulus is below SHARDS, so the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    /// Takes a slot for one more distinct code, if the bound allows.
    fn claim_key(&self) -> bool {
        if self.keys.fetch_add(1, Ordering::Relaxed) < self.config.keys_max {
            return true;
        }
        self.keys.fetch_sub(1, Ordering::Relaxed);
        false
    }

    /// Counts one click on `code`. Never blocks on I/O.
    pub fn record(&self, code: &str) {
        let mut pending = self.shard(code).lock();
        if let Some(n) = pending.get_mut(code) {
            *n += 1;
            return;
        }
        if !self.claim_key() {
            drop(pending);
            metrics::counter!("girder_bitly_clicks_dropped_total").increment(1);
            metrics::counter!("girder_bitly_redirects_total").increment(1);
            self.wake.notify_one();
            return;
        }
        pending.insert(code.to_owned(), 1);
        drop(pending);
        if self.keys.load(Ordering::Relaxed) >= self.config.keys_max {
            self.wake.notify_one();
        }
    }

    /// Clicks on `code` recorded here and not yet flushed.
    #[must_use]
    pub fn pending(&self, code: &str) -> u64 {
        self.shard(code).lock().get(code).copied().unwrap_or(0)
    }

    /// Writes everything buffered to `store` in one batch. On failure the counts
    /// are merged back (up to the key bound) for the next attempt.
    ///
    /// # Errors
    /// The store failed; the counts are retained where the bound allows.
    pub async fn flush(&self, store: &LinkStore) -> Result<usize, super::store::StoreError> {
        let mut batch: Vec<(String, u64)> = Vec::new();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock());
            self.keys.fetch_sub(taken.len(), Ordering::Relaxed);
            batch.extend(taken);
        }
        if batch.is_empty() {
            return Ok(0);
        }
        match store.add_clicks(&batch).await {
            Ok(()) => {
                metrics::counter!("girder_bitly_click_flushes_total").increment(1);
                let clicks: u64 = batch.iter().map(|(_, n)| n).sum();
                metrics::counter!("girder_bitly_redirects_total").increment(clicks);
                Ok(batch.len())
            }
            Err(e) => {
                for (code, n) in batch {
                    let mut pending = self.shard(&code).lock();
                    if let Some(existing) = pending.get_mut(&code) {
                        *existing += n;
                    } else if self.claim_key() {
                        pending.insert(code, n);
                    } else {
                        metrics::counter!("girder_bitly_clicks_dropped_total").increment(n);
                        metrics::counter!("girder_bitly_redirects_total").increment(n);
                    }
                }
                Err(e)
            }
        }
    }

    /// Flushes on the interval (or when woken by a full buffer) until `shutdown`
    /// resolves, then flushes once more.
    pub async fn run_flusher(
        self: Arc<Self>,
        store: LinkStore,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let interval = Duration::from_millis(self.config.flush_interval_ms.max(1));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(interval) => {}
                () = self.wake.notified() => {}
            }
            if let Err(e) = self.flush(&store).await {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "click flush failed; counts kept for the next attempt"
                );
            }
        }
        if let Err(e) = self.flush(&store).await {
            tracing::error!(
                error = &e as &dyn std::error::Error,
                "final click flush failed; buffered clicks lost"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Link;

    async fn store_with(codes: &[&str]) -> (tempfile::TempDir, LinkStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("t.db").display());
        let store = crate::store::test_store(&url).await;
        for code in codes {
            let link = Link {
                code: (*code).to_owned(),
                url: "https://e.com/".to_owned(),
                created_at_ms: 0,
                expires_at_ms: None,
                clicks: 0,
            };
            store.insert(&link).await.expect("insert");
        }
        (dir, store)
    }

    #[tokio::test]
    async fn flush_moves_counts_to_the_store_in_one_batch() {
        let (_dir, store) = store_with(&["aaa", "bbb"]).await;
        let buffer = ClickBuffer::new(ClickBufferConfig::default());
        for code in ["aaa", "bbb", "aaa", "aaa"] {
            buffer.record(code);
        }
        assert_eq!(buffer.pending("aaa"), 3);
        assert_eq!(buffer.flush(&store).await.expect("flush"), 2);
        assert_eq!(buffer.pending("aaa"), 0);
        let stored = |code: &'static str| {
            let store = store.clone();
            async move { store.get(code).await.expect("get").expect("exists").clicks }
        };
        assert_eq!(stored("aaa").await, 3);
        assert_eq!(stored("bbb").await, 1);
        buffer.record("aaa");
        buffer.flush(&store).await.expect("flush");
        assert_eq!(stored("aaa").await, 4);
    }

    #[tokio::test]
    async fn the_key_bound_holds_and_failed_flushes_keep_counts() {
        let (_dir, store) = store_with(&["aaa", "bbb"]).await;
        let buffer = ClickBuffer::new(ClickBufferConfig { flush_interval_ms: 1_000, keys_max: 2 });
        for code in ["aaa", "bbb", "ccc", "aaa"] {
            buffer.record(code);
        }
        // The third distinct code does not fit: dropped, not grown into.
        assert_eq!(
            (buffer.pending("aaa"), buffer.pending("bbb"), buffer.pending("ccc")),
            (2, 1, 0)
        );

        store.db().close().await;
        assert!(buffer.flush(&store).await.is_err(), "a closed store cannot take the batch");
        assert_eq!(
            (buffer.pending("aaa"), buffer.pending("bbb")),
            (2, 1),
            "counts survive a failed flush"
        );
    }

    #[test]
    fn concurrent_clicks_are_all_counted_and_the_bound_holds_across_shards() {
        let buffer = ClickBuffer::new(ClickBufferConfig { flush_interval_ms: 1_000, keys_max: 50 });
        std::thread::scope(|scope| {
            for t in 0..4 {
                let buffer = &buffer;
                scope.spawn(move || {
                    for i in 0..10_000 {
                        buffer.record(&format!("code{}", (i * 7 + t) % 100));
                    }
                });
            }
        });
        let held: Vec<u64> =
            (0..100).map(|c| buffer.pending(&format!("code{c}"))).filter(|n| *n > 0).collect();
        assert_eq!(held.len(), 50, "exactly keys_max distinct codes are held");
        assert_eq!(buffer.keys.load(Ordering::Relaxed), 50);
        // A code that got a slot keeps every later click: 400 clicks per code in all.
        assert!(held.iter().all(|n| *n <= 400), "{held:?}");
        assert!(held.iter().sum::<u64>() > 0);
    }
}
