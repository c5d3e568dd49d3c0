//! Seat state in girder-lock's reservation store: one pool per event, one item
//! per seat, AVAILABLE → RESERVED(until) → SOLD (Pattern: Status-Based
//! Workflow). The backend follows the database URL (SQLite or PostgreSQL) and
//! shares Ticketmaster's pool, so seat state survives a restart and every
//! instance sees the same seats.
//!
//! The store's holder is the reservation id, so "sold by this reservation" is
//! exact even when one user holds the same seat twice.

use std::collections::HashMap;
use std::sync::Arc;

use girder_core::Clock;
use girder_lock::reservation::{
    ConfirmError, Hold, HoldError as StoreHoldError, ItemStatus, PostgresReservationStore,
    ReservationConfig, ReservationError, ReservationStore, SqliteReservationStore,
};
use serde::{Deserialize, Serialize};

use girder_sql::Db;

use super::store::Reservation;

/// A seat's status on the seat map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeatState {
    /// Free to hold (including a lapsed hold).
    Available,
    /// Held by a reservation, unexpired.
    Held,
    /// Sold.
    Sold,
}

/// A row of the reservation store's table as change capture reports it: one seat
/// (`item`) of one event (`pool`) in one state.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct SeatRow {
    /// The event.
    pub(crate) pool: String,
    /// The seat.
    pub(crate) item: String,
    state: String,
    until_ms: Option<i64>,
}

impl SeatRow {
    /// Reads a captured row image; `None` when it is not a seat row.
    pub(crate) fn read(image: &serde_json::Value) -> Option<Self> {
        let row = Self::deserialize(image).ok()?;
        matches!(row.state.as_str(), "AVAILABLE" | "RESERVED" | "SOLD").then_some(row)
    }

    /// The seat's status at `now_ms` — a hold lapsed by then reads available, as on
    /// the seat map — and, while held, when the hold lapses.
    pub(crate) fn status(&self, now_ms: i64) -> (SeatState, Option<i64>) {
        match (self.state.as_str(), self.until_ms) {
            ("SOLD", _) => (SeatState::Sold, None),
            ("RESERVED", Some(until)) if until > now_ms => (SeatState::Held, Some(until)),
            _ => (SeatState::Available, None),
        }
    }
}

/// The reservation store failed; its own error is the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeatError {
    /// Opening the store, or adding, releasing, reading, listing or sweeping seats.
    #[error("reservation store")]
    Store(#[from] ReservationError),
    /// A hold, for any reason but seats taken or unknown (those are [`HoldError`]s).
    #[error("reservation store: hold")]
    Hold(#[from] StoreHoldError),
    /// A confirmation, for any reason but a hold that lapsed or was released.
    #[error("reservation store: confirm")]
    Confirm(#[from] ConfirmError),
}

/// Why a hold was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HoldError {
    /// These seats are held or sold.
    #[error("seats taken: {0:?}")]
    Taken(Vec<String>),
    /// These seats do not exist.
    #[error("unknown seats: {0:?}")]
    Unknown(Vec<String>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] SeatError),
}

/// A granted hold.
#[derive(Debug, Clone)]
pub struct SeatHold {
    /// The store's hold id.
    pub id: String,
    /// When it lapses, Unix milliseconds.
    pub until_ms: i64,
}

/// Seats per `add_items` call (the store bounds one call).
const ADD_CHUNK: usize = 5_000;
/// Seats per `list` page (the store bounds a page).
const LIST_PAGE: usize = 1_000;

/// The reservation store on the database Ticketmaster uses.
#[derive(Clone)]
pub enum Seats {
    /// SQLite backend.
    Sqlite(Arc<SqliteReservationStore>),
    /// PostgreSQL backend.
    Postgres(Arc<PostgresReservationStore>),
}

impl std::fmt::Debug for Seats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite(_) => "Seats::Sqlite",
            Self::Postgres(_) => "Seats::Postgres",
        })
    }
}

macro_rules! on_store {
    ($seats:expr, |$s:ident| $body:expr) => {
        match $seats {
            Seats::Sqlite($s) => $body,
            Seats::Postgres($s) => $body,
        }
    };
}

impl Seats {
    /// Opens the store on `db`'s pool, creating its tables.
    ///
    /// # Errors
    /// The tables cannot be created.
    pub async fn open(db: &Db, clock: Arc<dyn Clock>, hold_ttl_ms: u64) -> Result<Self, SeatError> {
        let defaults = ReservationConfig::default();
        let config =
            ReservationConfig { max_ttl_ms: defaults.max_ttl_ms.max(hold_ttl_ms), ..defaults };
        Ok(match db {
            Db::Sqlite(pool) => Self::Sqlite(Arc::new(
                SqliteReservationStore::new(pool.clone(), config, clock).await?,
            )),
            Db::Postgres(pool) => Self::Postgres(Arc::new(
                PostgresReservationStore::new(pool.clone(), config, clock).await?,
            )),
        })
    }

    /// Puts `seats` on sale in pool `event_id` (seats already there are left alone).
    ///
    /// # Errors
    /// The store failed.
    pub async fn add_items(&self, event_id: &str, seats: &[String]) -> Result<(), SeatError> {
        for chunk in seats.chunks(ADD_CHUNK) {
            let items: Vec<&str> = chunk.iter().map(String::as_str).collect();
            on_store!(self, |s| s.add_items(event_id, &items).await)?;
        }
        Ok(())
    }

    /// Holds all of `seats` for reservation `holder`, or none.
    ///
    /// # Errors
    /// Seats taken or unknown, or the store failed.
    pub async fn hold(
        &self,
        event_id: &str,
        seats: &[String],
        holder: &str,
        ttl_ms: u64,
    ) -> Result<SeatHold, HoldError> {
        let items: Vec<&str> = seats.iter().map(String::as_str).collect();
        let held = on_store!(self, |s| s.hold(event_id, &items, holder, ttl_ms).await);
        match held {
            Ok(hold) => Ok(SeatHold {
                id: hold.hold_id,
                until_ms: i64::try_from(hold.until_ms).unwrap_or(i64::MAX),
            }),
            Err(StoreHoldError::Unavailable { items }) => Err(HoldError::Taken(items)),
            Err(StoreHoldError::NotFound { items }) => Err(HoldError::Unknown(items)),
            Err(e) => Err(HoldError::Store(e.into())),
        }
    }

    fn hold_of(r: &Reservation) -> Hold {
        Hold {
            pool: r.event_id.clone(),
            items: r.seats.clone(),
            holder: r.id.clone(),
            hold_id: r.hold_id.clone(),
            until_ms: u64::try_from(r.until_ms).unwrap_or(0),
        }
    }

    /// Sells the reservation's seats if its hold still holds them (or already
    /// sold them). Returns `false` when the hold lapsed or was released.
    ///
    /// # Errors
    /// The store failed.
    pub async fn confirm(&self, r: &Reservation) -> Result<bool, SeatError> {
        let hold = Self::hold_of(r);
        match on_store!(self, |s| s.confirm(&hold).await) {
            Ok(()) => Ok(true),
            Err(ConfirmError::Expired | ConfirmError::NotHolder { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the reservation's seats back where its hold still reserves them.
    ///
    /// # Errors
    /// The store failed.
    pub async fn release(&self, r: &Reservation) -> Result<(), SeatError> {
        let hold = Self::hold_of(r);
        Ok(on_store!(self, |s| s.release(&hold).await.map(drop))?)
    }

    /// Whether every seat of the reservation is sold to it.
    ///
    /// # Errors
    /// The store failed.
    pub async fn sold_by(&self, r: &Reservation) -> Result<bool, SeatError> {
        for seat in &r.seats {
            let status = on_store!(self, |s| s.status(&r.event_id, seat).await);
            match status {
                Ok(ItemStatus::Sold { holder }) if holder == r.id => {}
                Ok(_) | Err(ReservationError::NotFound) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Every seat's status in `event_id` as of now (lapsed holds read available).
    ///
    /// # Errors
    /// The store failed.
    pub async fn states(&self, event_id: &str) -> Result<HashMap<String, SeatState>, SeatError> {
        let mut states = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = on_store!(self, |s| s.list(event_id, after.as_deref(), LIST_PAGE).await)?;
            let full = page.len() == LIST_PAGE;
            after = page.last().map(|(item, _)| item.clone());
            for (item, status) in page {
                let state = match status {
                    ItemStatus::Available => SeatState::Available,
                    ItemStatus::Reserved { .. } => SeatState::Held,
                    ItemStatus::Sold { .. } => SeatState::Sold,
                };
                states.insert(item, state);
            }
            if !full || after.is_none() {
                return Ok(states);
            }
        }
    }

    /// Resets up to `max_batch` lapsed holds to available; returns how many.
    ///
    /// # Errors
    /// The store failed.
    pub async fn sweep(&self, max_batch: usize) -> Result<usize, SeatError> {
        Ok(on_store!(self, |s| s.sweep(max_batch).await)?)
    }
}

#[cfg(test)]
mod tests {
    use girder_core::error::source_of;

    use super::*;

    #[test]
    fn captured_rows_read_as_the_seat_map_does() {
        let check = |image: serde_json::Value, want: Option<(SeatState, Option<i64>)>| {
            let got = SeatRow::read(&image).map(|row| row.status(1_000));
            assert_eq!(got, want, "{image}");
        };
        let row = |state: &str, until: Option<i64>| {
            serde_json::json!({"pool": "e_1", "item": "A-1-1", "state": state,
                "holder": "r_1", "hold_id": "h", "until_ms": until})
        };
        check(row("AVAILABLE", None), Some((SeatState::Available, None)));
        check(row("RESERVED", Some(1_001)), Some((SeatState::Held, Some(1_001))));
        check(row("RESERVED", Some(1_000)), Some((SeatState::Available, None)));
        check(row("RESERVED", None), Some((SeatState::Available, None)));
        check(row("SOLD", None), Some((SeatState::Sold, None)));
        check(row("LOST", None), None);
        check(serde_json::json!({"id": 1, "video": "v"}), None);
        check(serde_json::json!({"pool": "e_1", "item": 3, "state": "SOLD"}), None);
        let read = SeatRow::read(&row("SOLD", None)).expect("a seat");
        assert_eq!((read.pool.as_str(), read.item.as_str()), ("e_1", "A-1-1"));
    }

    #[tokio::test]
    async fn a_store_failure_keeps_the_database_error_as_its_source() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let db = Db::Sqlite(pool.clone());
        let seats = Seats::open(&db, Arc::new(girder_core::SystemClock), 60_000).await.unwrap();
        let seat = vec!["A-1-1".to_owned()];
        seats.add_items("e1", &seat).await.unwrap();
        pool.close().await;

        let err = seats.states("e1").await.unwrap_err();
        assert!(matches!(err, SeatError::Store(ReservationError::Backend(_))), "{err:?}");
        assert!(matches!(source_of::<sqlx::Error>(&err), Some(sqlx::Error::PoolClosed)), "{err:?}");
        let err = seats.hold("e1", &seat, "r1", 60_000).await.unwrap_err();
        assert!(
            matches!(err, HoldError::Store(SeatError::Hold(StoreHoldError::Backend(_)))),
            "{err:?}"
        );
        assert!(matches!(source_of::<sqlx::Error>(&err), Some(sqlx::Error::PoolClosed)), "{err:?}");
    }
}
