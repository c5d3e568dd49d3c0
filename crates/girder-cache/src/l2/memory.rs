//! An in-process [`L2Store`]: a bounded map with TTLs on the cache's clock and a bounded
//! broadcast channel. Clones share one store, so several caches holding clones behave
//! like several processes sharing one Redis — with fault injection (outages, dropped
//! subscriptions) that a real Redis makes hard to trigger on demand.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use girder_core::Clock;
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};

use super::{L2BackendError, L2Error, L2Store, ListenEvent, Notice};

/// Bounds of a [`MemoryL2`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryL2Config {
    /// Upper bound on stored entries. At the bound, expired entries are purged and, if
    /// none were, an arbitrary entry is dropped (it is a cache).
    pub capacity_entries: usize,
    /// Messages a slow listener may fall behind by before it counts as disconnected
    /// (it then re-subscribes and reports [`ListenEvent::Subscribed`] again).
    pub bus_capacity_messages: usize,
}

impl Default for MemoryL2Config {
    fn default() -> Self {
        Self { capacity_entries: 1_000_000, bus_capacity_messages: 4_096 }
    }
}

/// An in-process L2 shared by its clones.
#[derive(Clone)]
pub struct MemoryL2 {
    shared: Arc<Shared>,
}

struct Shared {
    entries: Mutex<HashMap<String, Stored>>,
    /// Replaced to cut every current subscription (see `disconnect_listeners`).
    bus: Mutex<broadcast::Sender<Arc<(String, String)>>>,
    available: watch::Sender<bool>,
    /// Whether calls fail (a test-controlled outage); mirrors `available`.
    down: AtomicBool,
    clock: Arc<dyn Clock>,
    config: MemoryL2Config,
}

struct Stored {
    bytes: Vec<u8>,
    expires_at_ms: u64,
}

impl std::fmt::Debug for MemoryL2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryL2")
            .field("entries", &self.shared.entries.lock().len())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl MemoryL2 {
    /// An empty store with default bounds, reading time from `clock` (share the
    /// caches' clock, so a manual clock expires L1 and L2 together).
    #[must_use]
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_config(clock, MemoryL2Config::default())
    }

    /// An empty store with the given bounds (each at least 1).
    #[must_use]
    pub fn with_config(clock: Arc<dyn Clock>, config: MemoryL2Config) -> Self {
        let config = MemoryL2Config {
            capacity_entries: config.capacity_entries.max(1),
            bus_capacity_messages: config.bus_capacity_messages.max(1),
        };
        Self {
            shared: Arc::new(Shared {
                entries: Mutex::new(HashMap::new()),
                bus: Mutex::new(broadcast::channel(config.bus_capacity_messages).0),
                available: watch::Sender::new(true),
                down: AtomicBool::new(false),
                clock,
                config,
            }),
        }
    }

    /// Entries stored now, expired ones included until they are purged.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.entries.lock().len()
    }

    /// Whether no entries are stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fault injection: every current subscription is cut (listeners report
    /// [`ListenEvent::Lost`], re-subscribe and report [`ListenEvent::Subscribed`]);
    /// messages published in between are lost, as with a Redis connection drop.
    pub fn disconnect_listeners(&self) {
        let fresh = broadcast::channel(self.shared.config.bus_capacity_messages).0;
        // Dropping the old sender closes every receiver subscribed to it.
        drop(std::mem::replace(&mut *self.shared.bus.lock(), fresh));
    }

    /// Fault injection: while unavailable every call fails with [`L2Error::Backend`]
    /// and listeners stay disconnected; making it available again lets them
    /// re-subscribe.
    pub fn set_available(&self, available: bool) {
        self.shared.down.store(!available, Ordering::SeqCst);
        self.shared.available.send_replace(available);
        if !available {
            self.disconnect_listeners();
        }
    }

    fn check_available(&self) -> Result<(), L2Error> {
        if self.shared.down.load(Ordering::SeqCst) {
            return Err(L2BackendError::MadeUnavailable.into());
        }
        Ok(())
    }

    fn store(&self, key: &str, value: &[u8], ttl_ms: u64, only_if_absent: bool) -> bool {
        let now = self.shared.clock.now_ms();
        let mut entries = self.shared.entries.lock();
        if let Some(old) = entries.get(key) {
            if only_if_absent && now < old.expires_at_ms {
                return false;
            }
        } else if entries.len() >= self.shared.config.capacity_entries {
            entries.retain(|_, e| now < e.expires_at_ms);
            if entries.len() >= self.shared.config.capacity_entries {
                let victim = entries.keys().next().cloned();
                if let Some(victim) = victim {
                    entries.remove(&victim);
                }
            }
        }
        let stored = Stored { bytes: value.to_vec(), expires_at_ms: now.saturating_add(ttl_ms) };
        entries.insert(key.to_owned(), stored);
        true
    }
}

impl L2Store for MemoryL2 {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, L2Error> {
        self.check_available()?;
        let now = self.shared.clock.now_ms();
        let mut entries = self.shared.entries.lock();
        match entries.get(key) {
            Some(e) if now < e.expires_at_ms => Ok(Some(e.bytes.clone())),
            Some(_) => {
                entries.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn fill(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<bool, L2Error> {
        self.check_available()?;
        Ok(self.store(key, value, ttl_ms, true))
    }

    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
        notice: Notice<'_>,
    ) -> Result<(), L2Error> {
        self.check_available()?;
        self.store(key, value, ttl_ms, false);
        let message = Arc::new((notice.channel.to_owned(), notice.message.to_owned()));
        // No subscriber is not an error: nobody needed telling.
        let _ = self.shared.bus.lock().send(message);
        Ok(())
    }

    async fn listen(&self, channel: &str, on_event: &(dyn Fn(ListenEvent<'_>) + Send + Sync)) {
        let mut available = self.shared.available.subscribe();
        loop {
            // The sender is never dropped while `self` lives, so this cannot fail.
            let _ = available.wait_for(|up| *up).await;
            let mut rx = self.shared.bus.lock().subscribe();
            if !*available.borrow() {
                // An outage began between the wait and the subscription.
                continue;
            }
            on_event(ListenEvent::Subscribed);
            loop {
                match rx.recv().await {
                    Ok(message) if message.0 == channel => {
                        on_event(ListenEvent::Message(&message.1))
                    }
                    Ok(_) => {}
                    // Fell behind (messages lost) or cut off: re-subscribe, which the
                    // cache answers with a resync.
                    Err(
                        broadcast::error::RecvError::Lagged(_)
                        | broadcast::error::RecvError::Closed,
                    ) => {
                        on_event(ListenEvent::Lost);
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use girder_core::ManualClock;

    use super::*;

    #[tokio::test]
    async fn the_store_never_exceeds_its_capacity_and_purges_expired_entries_first() {
        let clock = ManualClock::new(1_000);
        let config = MemoryL2Config { capacity_entries: 2, ..MemoryL2Config::default() };
        let store = MemoryL2::with_config(Arc::new(clock.clone()), config);
        assert!(store.fill("short", b"1", 10).await.unwrap());
        assert!(store.fill("long", b"2", 1_000).await.unwrap());
        clock.advance(Duration::from_millis(10));
        // Full: the expired entry goes, the live one stays.
        assert!(store.fill("new", b"3", 1_000).await.unwrap());
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("long").await.unwrap().as_deref(), Some(&b"2"[..]));
        // Full of live entries: one of them goes, the bound holds.
        assert!(store.fill("newer", b"4", 1_000).await.unwrap());
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("newer").await.unwrap().as_deref(), Some(&b"4"[..]));
    }
}
