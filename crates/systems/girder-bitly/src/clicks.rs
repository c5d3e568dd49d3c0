//! Click counting without a database write per redirect (Pattern: Write
//! Batching & Buffering). Each redirect adds one to its code in girder-log's
//! coalescing buffer (`batch::coalesce::Coalescer`); the buffer's counts are written
//! to the store in one transaction every interval, when the buffer reaches its key
//! bound, and on graceful shutdown.
//!
//! The trade-off, as the catalogue says: counts are eventually consistent, and a
//! crash loses at most one interval's clicks of this instance. Counts that
//! cannot be buffered because the buffer is full and the store is failing are
//! dropped and counted in `girder_bitly_clicks_dropped_total`, never allowed to
//! grow memory without bound.
//!
//! Every click is also a redirect: `girder_bitly_redirects_total` is advanced here, by
//! each flushed batch and by each dropped click, so the redirect path itself touches
//! no shared counter (the metric lags by at most one flush interval).

use std::time::Duration;

use girder_log::batch::ConfigError;
use girder_log::batch::coalesce::{CoalesceConfig, CoalesceSink, Coalescer, Overflow};

use super::store::{LinkStore, StoreError};

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

/// Where counts go: the store, one transaction per flush, and Bit.ly's metrics.
#[derive(Debug)]
struct ClickSink {
    store: LinkStore,
}

impl CoalesceSink for ClickSink {
    type Key = String;
    type Value = u64;
    type Error = StoreError;

    async fn write(&self, batch: &[(String, u64)]) -> Result<(), StoreError> {
        self.store.add_clicks(batch).await?;
        metrics::counter!("girder_bitly_click_flushes_total").increment(1);
        let clicks: u64 = batch.iter().map(|(_, n)| n).sum();
        metrics::counter!("girder_bitly_redirects_total").increment(clicks);
        Ok(())
    }

    fn dropped(&self, clicks: u64) {
        metrics::counter!("girder_bitly_clicks_dropped_total").increment(clicks);
        metrics::counter!("girder_bitly_redirects_total").increment(clicks);
    }
}

/// Buffered click counts, shared by the redirect handler and the flusher.
#[derive(Debug)]
pub struct ClickBuffer {
    counts: Coalescer<ClickSink>,
}

impl ClickBuffer {
    /// An empty buffer flushing into `store`; [`ClickBuffer::run_flusher`] drives its
    /// timed flushes.
    ///
    /// # Errors
    /// The interval or the key bound is zero.
    pub fn new(store: LinkStore, config: ClickBufferConfig) -> Result<Self, ConfigError> {
        let coalesce = CoalesceConfig {
            interval: Duration::from_millis(config.flush_interval_ms),
            // A full buffer is flushed at once rather than left to drop clicks.
            flush_keys: config.keys_max,
            keys_max: config.keys_max,
            overflow: Overflow::Drop,
            ..CoalesceConfig::default()
        };
        Ok(Self { counts: Coalescer::new(ClickSink { store }, coalesce)? })
    }

    /// Counts one click on `code`. Never blocks on I/O.
    pub fn record(&self, code: &str) {
        if let Err(refused) = self.counts.add(code, 1) {
            // Closed for shutdown: the click will not be flushed.
            self.counts.sink().dropped(refused.into_value());
        }
    }

    /// Clicks on `code` recorded here and not yet flushed.
    #[must_use]
    pub fn pending(&self, code: &str) -> u64 {
        self.counts.get(code).unwrap_or(0)
    }

    /// Writes everything buffered to the store in one batch. On failure the counts
    /// are merged back (up to the key bound) for the next attempt.
    ///
    /// # Errors
    /// The store failed; the counts are retained where the bound allows.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        self.counts.flush().await.map_err(|e| e.source)
    }

    /// Flushes on the interval (or when the buffer is full) until `shutdown`
    /// resolves, then flushes once more; clicks after that are dropped and counted.
    pub async fn run_flusher(&self, shutdown: impl std::future::Future<Output = ()>) {
        if let Err(e) = self.counts.run(shutdown).await {
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
        let buffer = ClickBuffer::new(store.clone(), ClickBufferConfig::default()).expect("config");
        for code in ["aaa", "bbb", "aaa", "aaa"] {
            buffer.record(code);
        }
        assert_eq!(buffer.pending("aaa"), 3);
        assert_eq!(buffer.flush().await.expect("flush"), 2);
        assert_eq!(buffer.pending("aaa"), 0);
        let stored = |code: &'static str| {
            let store = store.clone();
            async move { store.get(code).await.expect("get").expect("exists").clicks }
        };
        assert_eq!(stored("aaa").await, 3);
        assert_eq!(stored("bbb").await, 1);
        buffer.record("aaa");
        buffer.flush().await.expect("flush");
        assert_eq!(stored("aaa").await, 4);
    }

    #[tokio::test]
    async fn the_key_bound_holds_and_failed_flushes_keep_counts() {
        let (_dir, store) = store_with(&["aaa", "bbb"]).await;
        let config = ClickBufferConfig { flush_interval_ms: 1_000, keys_max: 2 };
        let buffer = ClickBuffer::new(store.clone(), config).expect("config");
        for code in ["aaa", "bbb", "ccc", "aaa"] {
            buffer.record(code);
        }
        // The third distinct code does not fit: dropped, not grown into.
        assert_eq!(
            (buffer.pending("aaa"), buffer.pending("bbb"), buffer.pending("ccc")),
            (2, 1, 0)
        );

        store.db().close().await;
        assert!(buffer.flush().await.is_err(), "a closed store cannot take the batch");
        assert_eq!(
            (buffer.pending("aaa"), buffer.pending("bbb")),
            (2, 1),
            "counts survive a failed flush"
        );
    }

    #[tokio::test]
    async fn concurrent_clicks_are_all_counted_and_the_bound_holds_across_shards() {
        let (_dir, store) = store_with(&[]).await;
        let config = ClickBufferConfig { flush_interval_ms: 1_000, keys_max: 50 };
        let buffer = ClickBuffer::new(store, config).expect("config");
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
        assert_eq!(buffer.counts.stats().keys, 50);
        // A code that got a slot keeps every later click: 400 clicks per code in all.
        assert!(held.iter().all(|n| *n <= 400), "{held:?}");
        assert!(held.iter().sum::<u64>() > 0);
    }
}
