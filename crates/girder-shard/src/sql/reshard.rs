//! Adding a shard online: the keys whose owner changes under the new map are copied
//! to their new owner and the router switches to the new map, while reads and writes
//! go on. [`super::ShardedDb::add_shard`] runs it; this is the protocol and why it holds.
//!
//! # Phases
//!
//! 1. **Prepare.** The new database gets the schema and must hold no rows of the
//!    table; the new map must be the current shards plus the new one.
//! 2. **Dual writes** (hand-over 1). From now on, a write of a key that moves (old
//!    owner ≠ new owner) takes the key's lock, runs on the old owner and then on the new
//!    one, and answers with the old owner's result. Every other write, and every read,
//!    still goes to the old owner only.
//! 3. **Copy.** A copier walks every old shard's keys in batches
//!    ([`MovableTable::list_keys`]). For the batch's moving keys it takes their locks and
//!    makes the new owner hold exactly the old owner's rows
//!    ([`MovableTable::copy_rows`]), then releases them.
//! 4. **Switch** (hand-over 2). Reads and writes follow the new map — unless the copy
//!    failed or a dual write failed on a new owner: then the addition is abandoned and
//!    the old map stays.
//! 5. **Cleanup.** Each shard deletes the rows it no longer owns
//!    ([`MovableTable::delete_rows`]).
//!
//! A hand-over takes the placement's write lock: it waits for every call in flight
//! (each call holds the read lock from start to end), changes the placement, and lets
//! calls go on under the new one. No call ever spans two placements.
//!
//! # Why no read is stale or missing
//!
//! - *Until the switch, the old owner holds the latest state of every key.* Every
//!   write runs there first, and a write is acknowledged with its result.
//! - *Once the copier has passed a moving key, its new owner holds the same rows as its
//!   old owner, and keeps doing so.* The copy runs under the key's lock, so it reads the
//!   latest rows and no write interleaves; every later write runs on both owners, one
//!   after the other under the same lock, and a deterministic statement applied to
//!   equal rows leaves equal rows. A key created after the copier passed its place in
//!   the listing arrives on both owners through dual writes; a key created before it is
//!   listed. Hand-over 1 waited for writes that began before dual writing, so none
//!   slips in unseen.
//! - *At the switch, no call is in flight*, so every moving key is equal on both owners
//!   at the instant reads move: the first read from the new owner returns what the last
//!   read from the old one could have, or newer.
//! - *After the switch*, only the new owner is read or written; the old rows are dead
//!   and cleanup removes them. [`super::ShardedDb::gather_page`] drops rows a shard holds
//!   but does not own, so a scatter-gather never sees them twice.
//!
//! **The delete race.** A copier that read a row before a concurrent delete must not
//! write it to the new owner afterwards. Here it cannot: the copier reads the old
//! owner and writes the new one while holding the key's lock, and the delete holds the
//! same lock while it deletes on both. Either the delete comes first (the copier finds
//! no row, and `copy_rows` leaves none on the new owner) or after (it deletes both).
//!
//! **Why a per-key lock**, not tombstones or row versions: it asks nothing of the
//! application's schema (no version column, no tombstone table to keep and purge); it
//! is correct on both engines at their default isolation (a "skip if a tombstone
//! exists" insert in READ COMMITTED can miss a tombstone committed concurrently); and
//! it costs only writes to moving keys during the copy — striped locks, bounded by
//! [`ReshardConfig::lock_stripes`], held per batch. Its price: the lock lives in this
//! process, so while a shard is added every write to the sharded tables must go
//! through this `ShardedDb`. Several application instances sharing the shards would
//! need the lock and the phase in a shared place (PostgreSQL advisory locks and a
//! placement table); that is not provided.
//!
//! **Why `copy_rows` replaces rather than inserts where absent.** Under the lock the
//! old owner's rows are the latest, so nothing newer can be overwritten. And a dual
//! write that ran before the copier reached its key may have left the new owner with a
//! different row — an upsert that incremented the old owner's counter inserted a fresh
//! one on the new — which only replacing repairs.
//!
//! # Failures
//!
//! - A write that fails on the old owner returns its error and is not run on the new.
//! - A write that fails on the new owner is acknowledged (the old owner has it) and
//!   marks the move diverged; the copier stops, and the switch abandons the addition:
//!   the router keeps the old map, which holds everything.
//! - A copy that fails abandons the addition the same way.
//!   After an abandoned addition the new database holds partial copies; empty it (or
//!   use a fresh one) before trying again — `add_shard` refuses a database with rows.
//! - A cleanup that fails leaves the switch in place and returns
//!   [`AddShardError::Cleanup`]; reads and pages are unaffected (foreign rows are never
//!   read and are dropped from pages). [`super::ShardedDb::retry_cleanup`] finishes it;
//!   the next addition is refused until then.
//! - An addition whose future is dropped before its switch is abandoned: dual writes
//!   stop at once (the old owners never stopped being authoritative) and the next
//!   addition replaces the move. Dropped during cleanup, it leaves the cleanup pending.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use girder_sql::Db;
use tokio::sync::{Mutex, MutexGuard};

use super::{MovableTable, QueryError, ShardedDb};
use crate::hash::{ShardId, ShardMap, key_hash};
use crate::router::{Router, RouterError};

/// The most keys [`ReshardConfig::batch_keys`] allows: one statement binds a
/// placeholder per key (two per row on insert), well under SQLite's 32,766 and
/// PostgreSQL's 65,535.
pub const MAX_BATCH_KEYS: usize = 10_000;

/// The most key-lock stripes [`ReshardConfig::lock_stripes`] allows.
pub const MAX_LOCK_STRIPES: usize = 1 << 16;

/// How an addition copies and locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReshardConfig {
    /// Keys listed, copied and deleted per statement, 1 to [`MAX_BATCH_KEYS`]. The
    /// copier holds a batch's key locks while it copies the batch, so a write to a
    /// moving key waits at most one batch's copy. Default 256.
    pub batch_keys: usize,
    /// Mutexes the moving keys hash onto, 1 to [`MAX_LOCK_STRIPES`]: more stripes, fewer
    /// writes of unrelated keys waiting on each other. Default 1,024.
    pub lock_stripes: usize,
}

impl Default for ReshardConfig {
    fn default() -> Self {
        Self { batch_keys: 256, lock_stripes: 1024 }
    }
}

/// What an addition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddReport {
    /// The shard added.
    pub shard: ShardId,
    /// Keys the copier listed on the old shards.
    pub keys_scanned: u64,
    /// Keys whose owner changed, copied to their new owner.
    pub keys_moved: u64,
    /// Rows written by the copier.
    pub rows_copied: u64,
    /// Rows the cleanup deleted from shards that no longer own them.
    pub rows_deleted: u64,
    /// From the start of dual writes to the end of the copy.
    pub copy_time: Duration,
    /// How long the switch waited for calls in flight.
    pub switch_wait: Duration,
    /// How long the cleanup took.
    pub cleanup_time: Duration,
}

/// Why a shard could not be added. Unless it is [`AddShardError::Cleanup`], the router
/// still uses the old map and every key is where it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddShardError {
    /// A setting is out of range.
    #[error("{field} must be between 1 and {max}")]
    Config {
        /// The setting.
        field: &'static str,
        /// Its maximum.
        max: usize,
    },
    /// The shard is already in the map.
    #[error("{0} is already a shard")]
    AlreadyPresent(ShardId),
    /// The new map is not the current shards plus the new one.
    #[error("the new map must hold the current shards and the new one")]
    Map(#[source] RouterError),
    /// A previous addition's cleanup failed; run [`ShardedDb::retry_cleanup`] first.
    #[error("a previous addition's cleanup has not finished")]
    CleanupPending,
    /// The schema failed on the new database.
    #[error("creating the tables on {shard}")]
    Schema {
        /// The new shard.
        shard: ShardId,
        /// The failed statement's error.
        #[source]
        source: sqlx::Error,
    },
    /// The new database already holds rows of the table (an abandoned addition's
    /// copies, or another table's data).
    #[error("{0} already holds rows; add an empty database")]
    NotEmpty(ShardId),
    /// Listing, reading or writing rows failed during the copy; the addition was
    /// abandoned.
    #[error("copying rows on {shard}; the addition was abandoned")]
    Copy {
        /// The shard whose statement failed.
        shard: ShardId,
        /// Its error.
        #[source]
        source: sqlx::Error,
    },
    /// The table's listing returned the same last key twice: it would never end.
    #[error("listing keys on {0} did not advance")]
    ListingStalled(ShardId),
    /// A dual write failed on this new owner, so it may miss a write; the addition was
    /// abandoned.
    #[error("a write failed on {shard} during the copy; the addition was abandoned")]
    Diverged {
        /// The new owner the write failed on.
        shard: ShardId,
    },
    /// The switch happened, but deleting moved rows from their old shard failed; run
    /// [`ShardedDb::retry_cleanup`]. Reads and pages are correct meanwhile.
    #[error("deleting moved rows from {shard}")]
    Cleanup {
        /// The shard.
        shard: ShardId,
        /// Its error.
        #[source]
        source: sqlx::Error,
    },
}

/// State kept between additions.
#[derive(Debug, Default)]
pub(super) struct Resharding {
    /// An addition switched but its cleanup failed.
    cleanup_pending: bool,
}

/// An addition between hand-over 1 and the switch.
#[derive(Debug)]
pub(super) struct Moving<M> {
    /// The router after the addition: the new map over every shard, new one included.
    pub(super) next: Router<M, Db>,
    /// Key locks: a moving key's writes and its copy hold `stripes[hash % len]`.
    stripes: Box<[Mutex<()>]>,
    /// The first new owner a dual write failed on.
    diverged: OnceLock<ShardId>,
    /// Set when the addition's future was dropped before its switch: writes go to the
    /// old owner only.
    dropped: Arc<AtomicBool>,
}

/// Marks a move dropped unless the addition reaches its switch.
struct DropGuard(Arc<AtomicBool>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl<M: ShardMap> Moving<M> {
    fn new(next: Router<M, Db>, stripes: usize, dropped: Arc<AtomicBool>) -> Self {
        let stripes = (0..stripes).map(|_| Mutex::new(())).collect();
        Self { next, stripes, diverged: OnceLock::new(), dropped }
    }

    fn stripe(&self, key: &[u8]) -> usize {
        // The high bits: the map's placement already used the hash's low ones.
        ((key_hash(key) >> 32) % self.stripes.len() as u64) as usize
    }

    /// Locks the stripes of `keys`, in ascending order so the copier and writers never
    /// wait on each other in a cycle.
    async fn lock_keys<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Vec<MutexGuard<'_, ()>> {
        let stripes: BTreeSet<usize> = keys.map(|k| self.stripe(k)).collect();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(self.stripes[stripe].lock().await);
        }
        guards
    }

    /// A write during the copy: `owner` is the key's owner under the old map.
    pub(super) async fn write<T, E, F, Fut>(
        &self,
        key: &[u8],
        owner: ShardId,
        owner_db: &Db,
        statement: F,
    ) -> Result<T, QueryError<E>>
    where
        E: Error + 'static,
        F: Fn(Db) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let (next_owner, next_db) = self.next.route(key)?;
        if next_owner == owner || self.dropped.load(Ordering::Relaxed) {
            return statement(owner_db.clone()).await.map_err(QueryError::on(owner));
        }
        let _lock = self.stripes[self.stripe(key)].lock().await;
        let answer = statement(owner_db.clone()).await.map_err(QueryError::on(owner))?;
        // Once diverged the addition will be abandoned: the new owner's copy is moot.
        if self.diverged.get().is_none() && statement(next_db.clone()).await.is_err() {
            let _ = self.diverged.set(next_owner);
        }
        Ok(answer)
    }
}

/// Counts kept by the copier.
#[derive(Debug, Default)]
struct Copied {
    keys_scanned: u64,
    keys_moved: u64,
    rows: u64,
}

impl ReshardConfig {
    fn validate(self) -> Result<Self, AddShardError> {
        if !(1..=MAX_BATCH_KEYS).contains(&self.batch_keys) {
            return Err(AddShardError::Config { field: "batch_keys", max: MAX_BATCH_KEYS });
        }
        if !(1..=MAX_LOCK_STRIPES).contains(&self.lock_stripes) {
            return Err(AddShardError::Config { field: "lock_stripes", max: MAX_LOCK_STRIPES });
        }
        Ok(self)
    }
}

impl<M: ShardMap + Send + Sync> ShardedDb<M> {
    /// Adds the database `db` as shard `shard`, with `next_map` (the current shards
    /// plus `shard`) as the map afterwards, moving `table`'s rows whose owner changes,
    /// while reads and writes go on. Returns when the moved rows have been deleted
    /// from their old shards. One addition runs at a time; a second waits.
    ///
    /// The protocol and its guarantees are in the [module docs](self).
    ///
    /// # Errors
    /// See [`AddShardError`]: every error but `Cleanup` leaves the old map in place.
    pub async fn add_shard<T: MovableTable>(
        &self,
        shard: ShardId,
        db: Db,
        next_map: M,
        table: &T,
        config: ReshardConfig,
    ) -> Result<AddReport, AddShardError> {
        let config = config.validate()?;
        let mut resharding = self.resharding.lock().await;
        if resharding.cleanup_pending {
            return Err(AddShardError::CleanupPending);
        }

        // 1. Prepare.
        if self.placement.read().await.router.map().contains(shard) {
            return Err(AddShardError::AlreadyPresent(shard));
        }
        self.schema.apply(&db).await.map_err(|source| AddShardError::Schema { shard, source })?;
        let held = table.list_keys(&db, None, 1).await;
        if !held.map_err(|source| AddShardError::Copy { shard, source })?.is_empty() {
            return Err(AddShardError::NotEmpty(shard));
        }

        // 2. Dual writes: hand-over 1.
        let started = Instant::now();
        let guard = DropGuard(Arc::new(AtomicBool::new(false)));
        {
            let mut placement = self.placement.write().await;
            let backends = placement
                .router
                .shards()
                .map(|(id, db)| (id, db.clone()))
                .chain(std::iter::once((shard, db)));
            let next = Router::new(next_map, backends).map_err(AddShardError::Map)?;
            placement.moving = Some(Moving::new(next, config.lock_stripes, guard.0.clone()));
        }

        // 3. Copy.
        let copied = self.copy(table, config.batch_keys).await;
        let copy_time = started.elapsed();

        // 4. Switch: hand-over 2, or abandon.
        let waiting = Instant::now();
        let copied = {
            let mut placement = self.placement.write().await;
            let moving = placement.moving.take();
            match (copied, moving) {
                (Err(e), _) => Err(e),
                (Ok(copied), Some(moving)) => match moving.diverged.get() {
                    Some(&failed) => Err(AddShardError::Diverged { shard: failed }),
                    None => {
                        placement.router = moving.next;
                        Ok(copied)
                    }
                },
                // Only this function sets and clears `moving`, under `resharding`.
                (Ok(_), None) => Err(AddShardError::Diverged { shard }),
            }
        }?;
        let switch_wait = waiting.elapsed();
        // Switched or abandoned: `moving` is gone, and the guard has nothing to stop.
        drop(guard);

        // 5. Cleanup.
        resharding.cleanup_pending = true;
        let cleaning = Instant::now();
        let rows_deleted = self.cleanup(table, config.batch_keys).await?;
        resharding.cleanup_pending = false;
        Ok(AddReport {
            shard,
            keys_scanned: copied.keys_scanned,
            keys_moved: copied.keys_moved,
            rows_copied: copied.rows,
            rows_deleted,
            copy_time,
            switch_wait,
            cleanup_time: cleaning.elapsed(),
        })
    }

    /// Finishes an addition whose cleanup failed: deletes from every shard the rows of
    /// `table` it does not own. Returns how many rows went. Harmless when nothing is
    /// pending.
    ///
    /// # Errors
    /// [`AddShardError::Cleanup`] again, or [`AddShardError::Config`].
    pub async fn retry_cleanup<T: MovableTable>(
        &self,
        table: &T,
        config: ReshardConfig,
    ) -> Result<u64, AddShardError> {
        let config = config.validate()?;
        let mut resharding = self.resharding.lock().await;
        let deleted = self.cleanup(table, config.batch_keys).await?;
        resharding.cleanup_pending = false;
        Ok(deleted)
    }

    /// Phase 3: copies every moving key's rows from its old owner to its new one.
    async fn copy<T: MovableTable>(
        &self,
        table: &T,
        batch: usize,
    ) -> Result<Copied, AddShardError> {
        // A read guard for the whole copy: calls go on beside it, and the only writer
        // of the placement is the caller, which waits for this to return.
        let placement = self.placement.read().await;
        let mut copied = Copied::default();
        let Some(moving) = &placement.moving else { return Ok(copied) };
        for (from, from_db) in placement.router.shards() {
            let mut after: Option<Vec<u8>> = None;
            loop {
                if moving.diverged.get().is_some() {
                    return Ok(copied);
                }
                let keys = table
                    .list_keys(from_db, after.as_deref(), batch)
                    .await
                    .map_err(|source| AddShardError::Copy { shard: from, source })?;
                let Some(last) = keys.last() else { break };
                if after.as_ref() == Some(last) {
                    return Err(AddShardError::ListingStalled(from));
                }
                after = Some(last.clone());
                copied.keys_scanned += keys.len() as u64;
                let listed = keys.len();
                let mut by_owner: BTreeMap<ShardId, Vec<Vec<u8>>> = BTreeMap::new();
                for key in keys {
                    let owner = moving.next.map().shard_of(&key);
                    if owner != from {
                        by_owner.entry(owner).or_default().push(key);
                    }
                }
                let moving_keys = by_owner.values().flatten().map(Vec::as_slice);
                let _locks = moving.lock_keys(moving_keys).await;
                for (to, keys) in &by_owner {
                    let to_db = moving
                        .next
                        .backend(*to)
                        .ok_or(AddShardError::Map(RouterError::Missing(*to)))?;
                    copied.rows += table
                        .copy_rows(from_db, to_db, keys)
                        .await
                        .map_err(|source| AddShardError::Copy { shard: *to, source })?;
                    copied.keys_moved += keys.len() as u64;
                }
                if listed < batch {
                    break;
                }
            }
        }
        Ok(copied)
    }

    /// Phase 5: deletes from every shard the rows it does not own.
    async fn cleanup<T: MovableTable>(
        &self,
        table: &T,
        batch: usize,
    ) -> Result<u64, AddShardError> {
        // No call reads or writes a key on a shard that does not own it, and pages drop
        // such rows: deleting them needs no lock.
        let placement = self.placement.read().await;
        let map = placement.router.map();
        let mut deleted = 0;
        for (shard, db) in placement.router.shards() {
            let failed = |source| AddShardError::Cleanup { shard, source };
            let mut after: Option<Vec<u8>> = None;
            loop {
                let keys = table.list_keys(db, after.as_deref(), batch).await.map_err(failed)?;
                let Some(last) = keys.last() else { break };
                if after.as_ref() == Some(last) {
                    return Err(AddShardError::ListingStalled(shard));
                }
                after = Some(last.clone());
                let listed = keys.len();
                let foreign: Vec<Vec<u8>> =
                    keys.into_iter().filter(|key| map.shard_of(key) != shard).collect();
                if !foreign.is_empty() {
                    deleted += table.delete_rows(db, &foreign).await.map_err(failed)?;
                }
                if listed < batch {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}
