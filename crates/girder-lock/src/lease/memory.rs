//! Leases in process memory: one mutex over a map, for a single server instance and as
//! the model the other backends are tested against.

use std::collections::HashMap;
use std::sync::Arc;

use girder_core::Clock;
use parking_lot::Mutex;

use super::{Holder, Lease, LeaseError, LeaseStore, check_key, check_ttl, system_clock};

/// Bounds of a [`MemoryLeaseStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLeaseConfig {
    /// The most keys kept. Released and expired entries are pruned when a new key would
    /// pass this bound; if every entry is live, acquiring a new key fails with
    /// [`LeaseError::Full`]. Keys already present are never refused.
    pub max_keys: usize,
}

impl Default for MemoryLeaseConfig {
    fn default() -> Self {
        Self { max_keys: 100_000 }
    }
}

/// A [`LeaseStore`] in process memory.
///
/// One [`parking_lot::Mutex`] guards the map and the token counter; every operation
/// holds it for a hash lookup. Tokens come from one store-wide counter, so they strictly
/// increase per key even though entries are pruned (a pruned key restarts from the
/// counter, which is above anything it ever had). Share one store between tasks with an
/// `Arc`; tokens do not survive the process.
pub struct MemoryLeaseStore {
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    config: MemoryLeaseConfig,
}

struct Inner {
    /// Released entries stay (with `expires_at_ms == 0`) so that re-acquiring a hot key
    /// allocates nothing; pruning removes them when the map is full.
    entries: HashMap<Arc<str>, Entry>,
    /// The last token granted by this store.
    last_token: u64,
}

struct Entry {
    key: Arc<str>,
    holder: Holder,
    token: u64,
    expires_at_ms: u64,
}

impl std::fmt::Debug for MemoryLeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("MemoryLeaseStore")
            .field("keys", &inner.entries.len())
            .field("last_token", &inner.last_token)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryLeaseStore {
    fn default() -> Self {
        Self::new(MemoryLeaseConfig::default(), system_clock())
    }
}

impl MemoryLeaseStore {
    /// An empty store judging expiry by `clock`.
    #[must_use]
    pub fn new(config: MemoryLeaseConfig, clock: Arc<dyn Clock>) -> Self {
        let inner = Inner { entries: HashMap::new(), last_token: 0 };
        Self { inner: Mutex::new(inner), clock, config }
    }

    /// How many entries the map holds (live, expired and released not yet pruned).
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Whether the map holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The acquire, synchronous: the memory store never waits.
    fn acquire_now(&self, key: &str, ttl_ms: u64) -> Result<Option<Lease>, LeaseError> {
        check_key(key)?;
        check_ttl(ttl_ms)?;
        let holder = Holder::random();
        let mut guard = self.inner.lock();
        let now = self.clock.now_ms();
        let expires_at_ms = now.saturating_add(ttl_ms);
        let Inner { entries, last_token } = &mut *guard;
        if let Some(entry) = entries.get_mut(key) {
            if now < entry.expires_at_ms {
                return Ok(None);
            }
            *last_token += 1;
            debug_assert!(*last_token > entry.token, "token counter went backwards");
            entry.holder = holder;
            entry.token = *last_token;
            entry.expires_at_ms = expires_at_ms;
            return Ok(Some(Lease::new(
                Arc::clone(&entry.key),
                holder,
                *last_token,
                expires_at_ms,
            )));
        }
        if entries.len() >= self.config.max_keys {
            entries.retain(|_, e| now < e.expires_at_ms);
            if entries.len() >= self.config.max_keys {
                return Err(LeaseError::Full { max_keys: self.config.max_keys });
            }
        }
        *last_token += 1;
        let key: Arc<str> = Arc::from(key);
        let entry = Entry { key: Arc::clone(&key), holder, token: *last_token, expires_at_ms };
        entries.insert(Arc::clone(&key), entry);
        Ok(Some(Lease::new(key, holder, *last_token, expires_at_ms)))
    }

    /// Runs `f` on the entry of `lease` if the lease is its live current holder.
    fn with_live_entry<T>(
        &self,
        lease: &Lease,
        f: impl FnOnce(&mut Entry, u64) -> T,
    ) -> Result<T, LeaseError> {
        let mut guard = self.inner.lock();
        let now = self.clock.now_ms();
        match guard.entries.get_mut(lease.key()) {
            Some(entry)
                if entry.holder == lease.holder()
                    && entry.token == lease.token()
                    && now < entry.expires_at_ms =>
            {
                Ok(f(entry, now))
            }
            _ => Err(LeaseError::NotHolder),
        }
    }
}

impl LeaseStore for MemoryLeaseStore {
    fn try_acquire(
        &self,
        key: &str,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<Option<Lease>, LeaseError>> + Send {
        std::future::ready(self.acquire_now(key, ttl_ms))
    }

    fn extend(
        &self,
        lease: &Lease,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<Lease, LeaseError>> + Send {
        let result = check_ttl(ttl_ms).and_then(|()| {
            self.with_live_entry(lease, |entry, now| {
                entry.expires_at_ms = now.saturating_add(ttl_ms);
                lease.with_expiry(entry.expires_at_ms)
            })
        });
        std::future::ready(result)
    }

    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), LeaseError>> + Send {
        // Marked free rather than removed: the next acquire of a hot key reuses the entry.
        std::future::ready(self.with_live_entry(lease, |entry, _| entry.expires_at_ms = 0))
    }
}

#[cfg(test)]
mod tests {
    use girder_core::ManualClock;

    use super::*;

    fn store(max_keys: usize) -> (MemoryLeaseStore, ManualClock) {
        let clock = ManualClock::new(1_000);
        (MemoryLeaseStore::new(MemoryLeaseConfig { max_keys }, Arc::new(clock.clone())), clock)
    }

    fn now<T>(fut: impl Future<Output = T>) -> T {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("the memory store never waits"),
        }
    }

    #[test]
    fn full_store_prunes_dead_entries_then_refuses() {
        let (store, clock) = store(2);
        let a = now(store.try_acquire("a", 10)).unwrap().unwrap();
        let _b = now(store.try_acquire("b", 100)).unwrap().unwrap();
        assert_eq!(now(store.try_acquire("c", 10)), Err(LeaseError::Full { max_keys: 2 }));
        // A key already present is never refused, full or not.
        assert_eq!(now(store.try_acquire("a", 10)), Ok(None));
        now(store.release(&a)).unwrap();
        let c = now(store.try_acquire("c", 10)).unwrap().unwrap();
        assert_eq!(store.len(), 2, "the released entry was pruned");
        assert!(c.token() > a.token());
        clock.advance(std::time::Duration::from_millis(10));
        // "c" expired exactly now: pruned to make room for "d".
        let d = now(store.try_acquire("d", 10)).unwrap().unwrap();
        assert_eq!(store.len(), 2);
        // Tokens stay strictly increasing for a pruned key re-entering the map.
        let c2 = now(store.try_acquire("c", 10));
        assert_eq!(c2, Err(LeaseError::Full { max_keys: 2 }));
        now(store.release(&d)).unwrap();
        let c2 = now(store.try_acquire("c", 10)).unwrap().unwrap();
        assert!(c2.token() > d.token() && d.token() > c.token());
    }

    #[test]
    fn reacquiring_a_hot_key_reuses_its_entry() {
        let (store, _clock) = store(1);
        for _ in 0..100 {
            let lease = now(store.try_acquire("hot", 10)).unwrap().unwrap();
            now(store.release(&lease)).unwrap();
        }
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_a_release_or_times_out() {
        use crate::lease::{AcquireConfig, acquire};
        let (store, clock) = store(10);
        let store = Arc::new(store);
        let held = store.try_acquire("k", 60_000).await.unwrap().unwrap();
        let config = AcquireConfig { max_wait_ms: 100, backoff_min_ms: 1, backoff_max_ms: 10 };
        // Busy for the whole wait: a typed timeout after exactly max_wait_ms (tokio time).
        assert_eq!(
            acquire(&*store, "k", 1_000, &config).await,
            Err(LeaseError::Timeout { waited_ms: 100 })
        );
        let waiter = {
            let store = Arc::clone(&store);
            let config = config.clone();
            tokio::spawn(async move { acquire(&*store, "k", 1_000, &config).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        store.release(&held).await.unwrap();
        let got = waiter.await.unwrap().expect("acquired after the release");
        assert!(got.token() > held.token());
        assert_eq!(got.expires_at_ms(), clock.now_ms() + 1_000);
    }
}
