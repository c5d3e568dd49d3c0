//! Single-flight: concurrent misses on one key share one load. The first caller leads
//! (runs L2 + loader); later callers wait for the leader's outcome, error included.
//!
//! Bound: the table holds one entry per key being loaded, and every entry has a live
//! leader, so its size never exceeds the number of callers (plus background
//! refreshes, bounded by `refreshes_max`) inside a load at that moment.
//!
//! A leader that goes away without an outcome (its future dropped, its loader
//! panicked) drops its channel; its waiters see that and retry, one of them leading.
//!
//! Writes race with loads: a load that began before `put`/`invalidate` may return a
//! value older than the write. The write marks the key's flight *superseded* and
//! detaches it; its result still goes to the callers already waiting (they asked
//! before the write), but it fills neither layer, and new callers start a new load.
//! The check and the fill happen under the table lock, the same lock the write
//! takes, so no write slips between them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

/// What a load produced: the value (or `None`), or the loader's error, shared by all
/// the callers of that load.
pub(crate) type Outcome<V, E> = Result<Option<V>, Arc<E>>;

type Slot<V, E> = Option<Outcome<V, E>>;

struct Flight<V, E> {
    id: u64,
    tx: watch::Sender<Slot<V, E>>,
    superseded: AtomicBool,
}

/// The table of loads in progress, one per key.
pub(crate) struct Flights<K, V, E> {
    map: Mutex<HashMap<K, Arc<Flight<V, E>>>>,
    next_id: AtomicU64,
}

/// A caller's part in a load.
pub(crate) enum Role<K: Hash + Eq + Clone, V, E> {
    /// This caller runs the load and must [`LeaderGuard::finish`] it.
    Leader(LeaderGuard<K, V, E>),
    /// Another caller runs it; wait with [`wait`].
    Waiter(watch::Receiver<Slot<V, E>>),
}

impl<K: Hash + Eq + Clone, V: Clone, E> Flights<K, V, E> {
    pub(crate) fn new() -> Self {
        Self { map: Mutex::new(HashMap::new()), next_id: AtomicU64::new(0) }
    }

    /// Joins the load of `key` in progress, or starts one with this caller leading.
    pub(crate) fn join(self: &Arc<Self>, key: &K) -> Role<K, V, E> {
        let mut map = self.map.lock();
        if let Some(flight) = map.get(key) {
            return Role::Waiter(flight.tx.subscribe());
        }
        Role::Leader(self.start(&mut map, key))
    }

    /// Starts a load of `key` led by the caller, unless one is already in progress.
    pub(crate) fn try_lead(self: &Arc<Self>, key: &K) -> Option<LeaderGuard<K, V, E>> {
        let mut map = self.map.lock();
        if map.contains_key(key) {
            return None;
        }
        Some(self.start(&mut map, key))
    }

    fn start(
        self: &Arc<Self>,
        map: &mut HashMap<K, Arc<Flight<V, E>>>,
        key: &K,
    ) -> LeaderGuard<K, V, E> {
        let flight = Arc::new(Flight {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tx: watch::Sender::new(None),
            superseded: AtomicBool::new(false),
        });
        map.insert(key.clone(), Arc::clone(&flight));
        LeaderGuard { flights: Arc::clone(self), key: key.clone(), flight, finished: false }
    }

    /// Supersedes the load of `key`, if any, then runs `then` — both under the table
    /// lock, so no load can fill between the two.
    pub(crate) fn supersede<R>(&self, key: &K, then: impl FnOnce() -> R) -> R {
        let mut map = self.map.lock();
        if let Some(flight) = map.remove(key) {
            flight.superseded.store(true, Ordering::Relaxed);
        }
        then()
    }

    /// Supersedes every load in progress, then runs `then`, under the table lock.
    pub(crate) fn supersede_all<R>(&self, then: impl FnOnce() -> R) -> R {
        let mut map = self.map.lock();
        for (_, flight) in map.drain() {
            flight.superseded.store(true, Ordering::Relaxed);
        }
        then()
    }

    /// Keys being loaded now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// Waits for the outcome of a load this caller joined; `None` if its leader went away
/// without one (the caller should join again).
pub(crate) async fn wait<V: Clone, E>(
    mut rx: watch::Receiver<Slot<V, E>>,
) -> Option<Outcome<V, E>> {
    match rx.wait_for(Option::is_some).await {
        Ok(slot) => slot.clone(),
        Err(_) => None,
    }
}

/// The leader's obligation: finish the load, or (when dropped unfinished) release its
/// waiters to retry.
pub(crate) struct LeaderGuard<K: Hash + Eq + Clone, V, E> {
    flights: Arc<Flights<K, V, E>>,
    key: K,
    flight: Arc<Flight<V, E>>,
    finished: bool,
}

impl<K: Hash + Eq + Clone, V, E> LeaderGuard<K, V, E> {
    /// The key being loaded.
    pub(crate) fn key(&self) -> &K {
        &self.key
    }

    /// Ends the load: unless a write superseded it, runs `fill` (under the table lock);
    /// then hands `outcome` to every waiter. Returns whether `fill` ran.
    pub(crate) fn finish(mut self, outcome: Outcome<V, E>, fill: impl FnOnce()) -> bool {
        let filled = {
            let mut map = self.flights.map.lock();
            let filled = !self.flight.superseded.load(Ordering::Relaxed);
            if filled {
                fill();
            }
            self.remove_own_entry(&mut map);
            filled
        };
        self.finished = true;
        // Sent outside the lock: waking a thousand waiters should not block writers.
        self.flight.tx.send_replace(Some(outcome));
        filled
    }

    fn remove_own_entry(&self, map: &mut HashMap<K, Arc<Flight<V, E>>>) {
        if map.get(&self.key).is_some_and(|f| f.id == self.flight.id) {
            map.remove(&self.key);
        }
    }
}

impl<K: Hash + Eq + Clone, V, E> Drop for LeaderGuard<K, V, E> {
    fn drop(&mut self) {
        if !self.finished {
            let mut map = self.flights.map.lock();
            self.remove_own_entry(&mut map);
            // Dropping the last `Arc<Flight>` drops the sender: waiters wake and retry.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Table = Arc<Flights<u32, u32, std::io::Error>>;

    fn leader(role: Role<u32, u32, std::io::Error>) -> LeaderGuard<u32, u32, std::io::Error> {
        match role {
            Role::Leader(guard) => guard,
            Role::Waiter(_) => panic!("expected to lead"),
        }
    }

    fn waiter(role: Role<u32, u32, std::io::Error>) -> watch::Receiver<Slot<u32, std::io::Error>> {
        match role {
            Role::Waiter(rx) => rx,
            Role::Leader(_) => panic!("expected to wait"),
        }
    }

    #[tokio::test]
    async fn waiters_get_the_leaders_outcome_and_the_entry_goes() {
        let table: Table = Arc::new(Flights::new());
        let lead = leader(table.join(&1));
        let rx = waiter(table.join(&1));
        assert!(table.try_lead(&1).is_none());
        assert!(lead.finish(Ok(Some(5)), || ()));
        assert!(matches!(wait(rx).await, Some(Ok(Some(5)))));
        assert_eq!(table.len(), 0);
    }

    #[tokio::test]
    async fn a_vanished_leader_releases_its_waiters_to_retry() {
        let table: Table = Arc::new(Flights::new());
        let lead = leader(table.join(&1));
        let rx = waiter(table.join(&1));
        drop(lead);
        assert!(wait(rx).await.is_none());
        assert_eq!(table.len(), 0);
    }

    #[tokio::test]
    async fn a_superseded_load_does_not_fill_and_leaves_the_new_flight_alone() {
        let table: Table = Arc::new(Flights::new());
        let old = leader(table.join(&1));
        let rx = waiter(table.join(&1));
        table.supersede(&1, || ());
        let new = leader(table.join(&1));
        assert!(!old.finish(Ok(Some(1)), || panic!("a superseded load must not fill")));
        assert!(matches!(wait(rx).await, Some(Ok(Some(1)))));
        assert_eq!(table.len(), 1, "the old leader removed the new flight");
        table.supersede_all(|| ());
        assert!(!new.finish(Ok(None), || panic!("superseded by supersede_all")));
        assert_eq!(table.len(), 0);
    }
}
