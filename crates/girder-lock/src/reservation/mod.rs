//! Items that move AVAILABLE → RESERVED(holder, until) → SOLD, with expiry ("Pattern:
//! Status-Based Workflow", the Ticketmaster seat): a hold keeps a set of items for a
//! while, a confirm sells them, and a hold nobody confirms lapses on its own.
//!
//! [`ReservationStore`] is the trait; backends: [`MemoryReservationStore`] always,
//! `SqliteReservationStore`, `PostgresReservationStore` and `RedisReservationStore`
//! behind the features of those names.
//!
//! # Guarantees
//!
//! - Every transition is one atomic step (one transaction or one Lua script) and
//!   all-or-nothing over the items it names: a hold on three seats takes all three or
//!   none.
//! - An item is never SOLD to two holds. Confirming needs the item RESERVED by this
//!   very hold (its random `hold_id`) and unexpired.
//! - Expiry needs no background job: every read and every transition treats
//!   `RESERVED` with `until_ms <= now` as AVAILABLE. [`ReservationStore::sweep`] only
//!   tidies the stored rows, in bounded batches.
//!
//! # Time and clock skew
//!
//! `now` is the caller's [`Clock`](girder_core::Clock), passed into every statement
//! and script (not the database's clock), so tests move time with a manual clock on
//! every backend. With several servers, their clocks must agree to well within a
//! TTL: a server whose clock runs `d` ms fast sees holds expire `d` ms early and may
//! hand the item to someone else that much before the holder's deadline. Keep NTP on
//! and TTLs in minutes (the catalogue's 10) so skew of milliseconds is irrelevant;
//! holders should confirm well before `until_ms`, not at the last moment.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::collections::{HashMap, HashSet};
use std::future::Future;

use thiserror::Error;

use crate::BackendError;
use crate::retry::RetryPolicy;

pub use memory::MemoryReservationStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresReservationStore;
#[cfg(feature = "redis")]
pub use redis::RedisReservationStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteReservationStore;

/// Bounds and retry settings of a reservation store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationConfig {
    /// Most items one hold (or confirm, or release) may name.
    pub max_items_per_hold: usize,
    /// Longest hold, in milliseconds.
    pub max_ttl_ms: u64,
    /// Most items one [`ReservationStore::add_items`] call may add.
    pub max_items_per_add: usize,
    /// Most items one [`ReservationStore::list`] page may return.
    pub max_page_items: usize,
    /// Most rows one [`ReservationStore::sweep`] call may reset.
    pub max_sweep_batch: usize,
    /// Retries of a transaction the database aborted for contention (SQLite busy,
    /// PostgreSQL deadlock); unused by the memory and Redis backends.
    pub retry: RetryPolicy,
}

impl Default for ReservationConfig {
    /// 64 items per hold, holds up to an hour, 10 000 items per add, 1 000 per page
    /// and per sweep.
    fn default() -> Self {
        Self {
            max_items_per_hold: 64,
            max_ttl_ms: 60 * 60 * 1_000,
            max_items_per_add: 10_000,
            max_page_items: 1_000,
            max_sweep_batch: 1_000,
            retry: RetryPolicy::default(),
        }
    }
}

/// A granted hold: proof of who may confirm or release these items, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The pool (e.g. the event) the items belong to.
    pub pool: String,
    /// The items held, in the order asked for.
    pub items: Vec<String>,
    /// Who holds them (e.g. a user id); reported by [`ItemStatus`].
    pub holder: String,
    /// A random id of this hold. Only the hold carrying it may confirm or release;
    /// the same holder holding again gets a different id.
    pub hold_id: String,
    /// When the hold lapses, in milliseconds since the Unix epoch.
    pub until_ms: u64,
}

/// What an item is, as seen now (an expired hold reads as [`ItemStatus::Available`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemStatus {
    /// Free to hold.
    Available,
    /// Held until `until_ms` (exclusive).
    Reserved {
        /// Who holds it.
        holder: String,
        /// When the hold lapses.
        until_ms: u64,
    },
    /// Sold; final.
    Sold {
        /// Who bought it.
        holder: String,
    },
}

/// Why a hold was refused. Nothing was held.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HoldError {
    /// These items are reserved (unexpired) or sold.
    #[error("items unavailable: {items:?}")]
    Unavailable {
        /// The items that are taken.
        items: Vec<String>,
    },
    /// These items are not in the pool.
    #[error("items not found: {items:?}")]
    NotFound {
        /// The unknown items.
        items: Vec<String>,
    },
    /// More items than [`ReservationConfig::max_items_per_hold`].
    #[error("{requested} items in one hold; at most {max}")]
    TooMany {
        /// Items asked for.
        requested: usize,
        /// The bound.
        max: usize,
    },
    /// The TTL is 0 or above [`ReservationConfig::max_ttl_ms`].
    #[error("hold ttl {ttl_ms} ms outside 1..={max_ms}")]
    InvalidTtl {
        /// The TTL asked for.
        ttl_ms: u64,
        /// The bound.
        max_ms: u64,
    },
    /// No items, or the same item twice.
    #[error("invalid items: {0}")]
    InvalidItems(String),
    /// The clock reads so late that the hold's deadline would pass 2^53 ms, beyond
    /// what every backend stores exactly; nothing was sent.
    #[error("clock overflow: a hold at {now_ms} ms would end beyond 2^53 ms")]
    ClockOverflow {
        /// The clock's reading.
        now_ms: u64,
    },
    /// The backend failed; the source says how.
    #[error("reservation backend")]
    Backend(#[from] BackendError),
}

/// Why a confirm was refused. Nothing was sold.
///
/// Confirming a hold that already sold its items is not an error: it returns `Ok`
/// again, so a client retrying after a lost response cannot double-sell or fail.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfirmError {
    /// The hold no longer holds its items: its time ran out, or it was released.
    #[error("the hold expired or was released")]
    Expired,
    /// Another hold now owns these items (held them after this one lapsed, or bought
    /// them), or they are not in the pool.
    #[error("items now held or sold by someone else: {items:?}")]
    NotHolder {
        /// The items owned elsewhere.
        items: Vec<String>,
    },
    /// The hold names more items than [`ReservationConfig::max_items_per_hold`]
    /// (it was not issued by a store with this config).
    #[error("{requested} items in one hold; at most {max}")]
    TooMany {
        /// Items named.
        requested: usize,
        /// The bound.
        max: usize,
    },
    /// The backend failed; the source says how.
    #[error("reservation backend")]
    Backend(#[from] BackendError),
}

/// Why adding, releasing, reading, listing or sweeping failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReservationError {
    /// The item is not in the pool.
    #[error("item not found")]
    NotFound,
    /// More items in one call than the config allows.
    #[error("{requested} items in one call; at most {max}")]
    TooMany {
        /// Items named.
        requested: usize,
        /// The bound.
        max: usize,
    },
    /// An empty item id.
    #[error("invalid items: {0}")]
    InvalidItems(String),
    /// The backend failed; the source says how.
    #[error("reservation backend")]
    Backend(#[from] BackendError),
}

/// Items in pools that can be held for a while, sold, released, and lapse.
///
/// Guarantee: an item is sold to at most one hold, and only while that hold is
/// unexpired; each operation is atomic and all-or-nothing over its items. Admits:
/// a hold may lapse between a client's decision and its confirm (then the confirm
/// fails with [`ConfirmError::Expired`] or [`ConfirmError::NotHolder`]).
pub trait ReservationStore: Send + Sync {
    /// Adds items to `pool` as AVAILABLE; items already present are left as they
    /// are. Returns how many were new.
    fn add_items(
        &self,
        pool: &str,
        items: &[&str],
    ) -> impl Future<Output = Result<usize, ReservationError>> + Send;

    /// Holds all of `items` for `holder` for `ttl_ms`, or none of them.
    fn hold(
        &self,
        pool: &str,
        items: &[&str],
        holder: &str,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<Hold, HoldError>> + Send;

    /// Sells every item of `hold`, atomically, if the hold still holds them all.
    /// Idempotent: `Ok` again once sold by this hold.
    fn confirm(&self, hold: &Hold) -> impl Future<Output = Result<(), ConfirmError>> + Send;

    /// Makes the hold's items AVAILABLE again where this hold still reserves them,
    /// unexpired (never touching items another hold took or bought; lapsed ones
    /// already read as available). Returns how many.
    fn release(&self, hold: &Hold) -> impl Future<Output = Result<usize, ReservationError>> + Send;

    /// One item's status as of now.
    fn status(
        &self,
        pool: &str,
        item: &str,
    ) -> impl Future<Output = Result<ItemStatus, ReservationError>> + Send;

    /// A page of `pool`'s items in item order, starting after `after` (from the
    /// start when `None`), at most `limit` (capped by
    /// [`ReservationConfig::max_page_items`]) long.
    fn list(
        &self,
        pool: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, ItemStatus)>, ReservationError>> + Send;

    /// Resets up to `max_batch` (capped by [`ReservationConfig::max_sweep_batch`])
    /// expired holds, in any pool, to AVAILABLE; returns how many. Call until it
    /// returns 0. Optional housekeeping: expired holds already read as AVAILABLE.
    fn sweep(
        &self,
        max_batch: usize,
    ) -> impl Future<Output = Result<usize, ReservationError>> + Send;
}

impl<S: ReservationStore + ?Sized> ReservationStore for std::sync::Arc<S> {
    fn add_items(
        &self,
        pool: &str,
        items: &[&str],
    ) -> impl Future<Output = Result<usize, ReservationError>> + Send {
        (**self).add_items(pool, items)
    }

    fn hold(
        &self,
        pool: &str,
        items: &[&str],
        holder: &str,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<Hold, HoldError>> + Send {
        (**self).hold(pool, items, holder, ttl_ms)
    }

    fn confirm(&self, hold: &Hold) -> impl Future<Output = Result<(), ConfirmError>> + Send {
        (**self).confirm(hold)
    }

    fn release(&self, hold: &Hold) -> impl Future<Output = Result<usize, ReservationError>> + Send {
        (**self).release(hold)
    }

    fn status(
        &self,
        pool: &str,
        item: &str,
    ) -> impl Future<Output = Result<ItemStatus, ReservationError>> + Send {
        (**self).status(pool, item)
    }

    fn list(
        &self,
        pool: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, ItemStatus)>, ReservationError>> + Send {
        (**self).list(pool, after, limit)
    }

    fn sweep(
        &self,
        max_batch: usize,
    ) -> impl Future<Output = Result<usize, ReservationError>> + Send {
        (**self).sweep(max_batch)
    }
}

/// An item's state as stored, before expiry is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    /// AVAILABLE.
    Available,
    /// RESERVED; lapsed when `until_ms <= now`.
    Reserved { holder: String, hold_id: String, until_ms: u64 },
    /// SOLD, remembering the hold that bought it (for idempotent confirms).
    Sold { holder: String, hold_id: String },
}

impl Stored {
    /// Whether a new hold may take the item at `now_ms`.
    pub(crate) fn is_free(&self, now_ms: u64) -> bool {
        match self {
            Self::Available => true,
            Self::Reserved { until_ms, .. } => *until_ms <= now_ms,
            Self::Sold { .. } => false,
        }
    }

    /// The status as seen at `now_ms`.
    pub(crate) fn status(&self, now_ms: u64) -> ItemStatus {
        match self {
            Self::Reserved { holder, until_ms, .. } if *until_ms > now_ms => {
                ItemStatus::Reserved { holder: holder.clone(), until_ms: *until_ms }
            }
            Self::Sold { holder, .. } => ItemStatus::Sold { holder: holder.clone() },
            Self::Available | Self::Reserved { .. } => ItemStatus::Available,
        }
    }

    /// Decodes a SQL row's `(state, holder, hold_id, until_ms)`.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn from_row(
        state: &str,
        holder: Option<String>,
        hold_id: Option<String>,
        until_ms: Option<i64>,
    ) -> Result<Self, String> {
        let bad = || format!("corrupt reservation row: state {state}");
        match state {
            "AVAILABLE" => Ok(Self::Available),
            "RESERVED" => Ok(Self::Reserved {
                holder: holder.ok_or_else(bad)?,
                hold_id: hold_id.ok_or_else(bad)?,
                until_ms: until_ms.and_then(|u| u64::try_from(u).ok()).ok_or_else(bad)?,
            }),
            "SOLD" => Ok(Self::Sold {
                holder: holder.ok_or_else(bad)?,
                hold_id: hold_id.ok_or_else(bad)?,
            }),
            _ => Err(bad()),
        }
    }
}

/// Checks a hold request against the config; returns the hold's deadline.
pub(crate) fn check_hold(
    config: &ReservationConfig,
    items: &[&str],
    ttl_ms: u64,
    now_ms: u64,
) -> Result<u64, HoldError> {
    if items.is_empty() {
        return Err(HoldError::InvalidItems("a hold needs at least one item".to_owned()));
    }
    if items.len() > config.max_items_per_hold {
        return Err(HoldError::TooMany { requested: items.len(), max: config.max_items_per_hold });
    }
    let mut seen = HashSet::with_capacity(items.len());
    if let Some(dup) = items.iter().find(|item| !seen.insert(**item)) {
        return Err(HoldError::InvalidItems(format!("item {dup:?} named twice")));
    }
    if ttl_ms == 0 || ttl_ms > config.max_ttl_ms {
        return Err(HoldError::InvalidTtl { ttl_ms, max_ms: config.max_ttl_ms });
    }
    // Deadlines are stored as signed 64-bit in SQL and exact integers in Lua (2^53).
    let until_ms = now_ms.saturating_add(ttl_ms);
    if until_ms >= 1 << 53 {
        return Err(HoldError::ClockOverflow { now_ms });
    }
    Ok(until_ms)
}

/// Checks a hold's item count against the config before a confirm.
pub(crate) fn check_confirm(config: &ReservationConfig, hold: &Hold) -> Result<(), ConfirmError> {
    if hold.items.len() > config.max_items_per_hold {
        return Err(ConfirmError::TooMany {
            requested: hold.items.len(),
            max: config.max_items_per_hold,
        });
    }
    Ok(())
}

/// Checks item ids for [`ReservationStore::add_items`].
pub(crate) fn check_add(
    config: &ReservationConfig,
    items: &[&str],
) -> Result<(), ReservationError> {
    if items.len() > config.max_items_per_add {
        return Err(ReservationError::TooMany {
            requested: items.len(),
            max: config.max_items_per_add,
        });
    }
    if items.iter().any(|item| item.is_empty()) {
        return Err(ReservationError::InvalidItems("empty item id".to_owned()));
    }
    Ok(())
}

/// Checks a hold's item count before a release.
pub(crate) fn check_release(
    config: &ReservationConfig,
    hold: &Hold,
) -> Result<(), ReservationError> {
    if hold.items.len() > config.max_items_per_hold {
        return Err(ReservationError::TooMany {
            requested: hold.items.len(),
            max: config.max_items_per_hold,
        });
    }
    Ok(())
}

/// Decides a hold from the stored states of the requested items (`found` lacks the
/// unknown ones): `Ok` if every item exists and is free at `now_ms`.
pub(crate) fn decide_hold(
    items: &[&str],
    found: &HashMap<String, Stored>,
    now_ms: u64,
) -> Result<(), HoldError> {
    let missing: Vec<String> = items
        .iter()
        .filter(|item| !found.contains_key(**item))
        .map(|item| (*item).to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(HoldError::NotFound { items: missing });
    }
    let taken: Vec<String> = items
        .iter()
        .filter(|item| !found[**item].is_free(now_ms))
        .map(|item| (*item).to_owned())
        .collect();
    if taken.is_empty() { Ok(()) } else { Err(HoldError::Unavailable { items: taken }) }
}

/// What a confirm must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConfirmAction {
    /// Every item is reserved by the hold and unexpired: sell them.
    Sell,
    /// Every item was already sold to the hold: nothing to do.
    AlreadySold,
}

/// Decides a confirm from the stored states of the hold's items.
pub(crate) fn decide_confirm(
    hold: &Hold,
    found: &HashMap<String, Stored>,
    now_ms: u64,
) -> Result<ConfirmAction, ConfirmError> {
    let mine = |item: &String| match found.get(item) {
        Some(Stored::Reserved { hold_id, until_ms, .. }) => {
            *hold_id == hold.hold_id && *until_ms > now_ms
        }
        _ => false,
    };
    let sold_to_me = |item: &String| matches!(found.get(item), Some(Stored::Sold { hold_id, .. }) if *hold_id == hold.hold_id);
    if hold.items.iter().all(sold_to_me) {
        return Ok(ConfirmAction::AlreadySold);
    }
    if hold.items.iter().all(mine) {
        return Ok(ConfirmAction::Sell);
    }
    let elsewhere: Vec<String> = hold
        .items
        .iter()
        .filter(|item| match found.get(*item) {
            None => true,
            Some(Stored::Sold { hold_id, .. }) => *hold_id != hold.hold_id,
            Some(Stored::Reserved { hold_id, until_ms, .. }) => {
                *hold_id != hold.hold_id && *until_ms > now_ms
            }
            Some(Stored::Available) => false,
        })
        .cloned()
        .collect();
    if elsewhere.is_empty() {
        Err(ConfirmError::Expired)
    } else {
        Err(ConfirmError::NotHolder { items: elsewhere })
    }
}

/// A fresh random hold id.
pub(crate) fn new_hold_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
