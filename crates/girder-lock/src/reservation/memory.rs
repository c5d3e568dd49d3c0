//! Reservations in process memory: the default for one server, and the model the
//! other backends are checked against. Every operation is one critical section.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use girder_core::{Clock, SystemClock};
use parking_lot::Mutex;

use super::{
    ConfirmAction, ConfirmError, Hold, HoldError, ItemStatus, ReservationConfig, ReservationError,
    ReservationStore, Stored, check_add, check_confirm, check_hold, check_release, decide_confirm,
    decide_hold, new_hold_id,
};

/// A [`ReservationStore`] in a mutex-guarded map of pools.
///
/// [`ReservationStore::sweep`] scans pools for expired holds (O(items)); it is
/// housekeeping only, since expired holds already read as AVAILABLE.
pub struct MemoryReservationStore {
    pools: Mutex<HashMap<String, BTreeMap<String, Stored>>>,
    config: ReservationConfig,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryReservationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReservationStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryReservationStore {
    fn default() -> Self {
        Self::new(ReservationConfig::default(), Arc::new(SystemClock))
    }
}

impl MemoryReservationStore {
    /// An empty store reading time from `clock`.
    #[must_use]
    pub fn new(config: ReservationConfig, clock: Arc<dyn Clock>) -> Self {
        Self { pools: Mutex::new(HashMap::new()), config, clock }
    }

    /// The states of `items` in `pool` that exist.
    fn found(
        pools: &HashMap<String, BTreeMap<String, Stored>>,
        pool: &str,
        items: impl Iterator<Item = impl AsRef<str>>,
    ) -> HashMap<String, Stored> {
        let Some(rows) = pools.get(pool) else { return HashMap::new() };
        items
            .filter_map(|item| {
                let item = item.as_ref();
                rows.get(item).map(|s| (item.to_owned(), s.clone()))
            })
            .collect()
    }
}

impl ReservationStore for MemoryReservationStore {
    async fn add_items(&self, pool: &str, items: &[&str]) -> Result<usize, ReservationError> {
        check_add(&self.config, items)?;
        let mut pools = self.pools.lock();
        let rows = pools.entry(pool.to_owned()).or_default();
        let mut added = 0;
        for item in items {
            if !rows.contains_key(*item) {
                rows.insert((*item).to_owned(), Stored::Available);
                added += 1;
            }
        }
        Ok(added)
    }

    async fn hold(
        &self,
        pool: &str,
        items: &[&str],
        holder: &str,
        ttl_ms: u64,
    ) -> Result<Hold, HoldError> {
        let now_ms = self.clock.now_ms();
        let until_ms = check_hold(&self.config, items, ttl_ms, now_ms)?;
        let hold_id = new_hold_id();
        let mut pools = self.pools.lock();
        decide_hold(items, &Self::found(&pools, pool, items.iter()), now_ms)?;
        let rows = pools.get_mut(pool).expect("decide_hold found the items");
        for item in items {
            rows.insert(
                (*item).to_owned(),
                Stored::Reserved { holder: holder.to_owned(), hold_id: hold_id.clone(), until_ms },
            );
        }
        Ok(Hold {
            pool: pool.to_owned(),
            items: items.iter().map(|i| (*i).to_owned()).collect(),
            holder: holder.to_owned(),
            hold_id,
            until_ms,
        })
    }

    async fn confirm(&self, hold: &Hold) -> Result<(), ConfirmError> {
        check_confirm(&self.config, hold)?;
        let now_ms = self.clock.now_ms();
        let mut pools = self.pools.lock();
        let found = Self::found(&pools, &hold.pool, hold.items.iter());
        if decide_confirm(hold, &found, now_ms)? == ConfirmAction::Sell {
            let rows = pools.get_mut(&hold.pool).expect("decide_confirm found the items");
            for item in &hold.items {
                rows.insert(
                    item.clone(),
                    Stored::Sold { holder: hold.holder.clone(), hold_id: hold.hold_id.clone() },
                );
            }
        }
        Ok(())
    }

    async fn release(&self, hold: &Hold) -> Result<usize, ReservationError> {
        check_release(&self.config, hold)?;
        let now_ms = self.clock.now_ms();
        let mut pools = self.pools.lock();
        let Some(rows) = pools.get_mut(&hold.pool) else { return Ok(0) };
        let mut released = 0;
        for item in &hold.items {
            if let Some(state) = rows.get_mut(item) {
                let held = matches!(state, Stored::Reserved { hold_id, until_ms, .. }
                    if *hold_id == hold.hold_id && *until_ms > now_ms);
                if held {
                    *state = Stored::Available;
                    released += 1;
                }
            }
        }
        Ok(released)
    }

    async fn status(&self, pool: &str, item: &str) -> Result<ItemStatus, ReservationError> {
        let now_ms = self.clock.now_ms();
        let pools = self.pools.lock();
        let state = pools.get(pool).and_then(|rows| rows.get(item));
        state.map(|s| s.status(now_ms)).ok_or(ReservationError::NotFound)
    }

    async fn list(
        &self,
        pool: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ItemStatus)>, ReservationError> {
        let now_ms = self.clock.now_ms();
        let limit = limit.min(self.config.max_page_items);
        let pools = self.pools.lock();
        let Some(rows) = pools.get(pool) else { return Ok(Vec::new()) };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(rows
            .range::<str, _>((start, Bound::Unbounded))
            .take(limit)
            .map(|(item, state)| (item.clone(), state.status(now_ms)))
            .collect())
    }

    async fn sweep(&self, max_batch: usize) -> Result<usize, ReservationError> {
        let now_ms = self.clock.now_ms();
        let max_batch = max_batch.min(self.config.max_sweep_batch);
        let mut pools = self.pools.lock();
        let mut reset = 0;
        for state in pools.values_mut().flat_map(BTreeMap::values_mut) {
            if reset == max_batch {
                break;
            }
            if matches!(state, Stored::Reserved { until_ms, .. } if *until_ms <= now_ms) {
                *state = Stored::Available;
                reset += 1;
            }
        }
        Ok(reset)
    }
}
