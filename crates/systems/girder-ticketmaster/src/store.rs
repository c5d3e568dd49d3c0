//! Ticketmaster's own tables — venues, events, reservations, the waiting-room
//! queue and shared settings — on SQLite or PostgreSQL. Seat *state* is not here:
//! it lives in girder-lock's reservation store (see `seats.rs`); a reservation row
//! records which hold belongs to which user and how its confirmation went.
//!
//! Every statement is written once with `$n` placeholders, which both engines
//! accept, and run on either pool through `girder_sql::on_db!`.

use girder_sql::{Db, on_db};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// Failures of the Ticketmaster tables.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed or is unreachable; the source says how.
    #[error("database")]
    Database(#[from] sqlx::Error),
    /// A stored value does not decode (a bug or a hand-edited row); the message names it.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A JSON column (a venue's sections, a reservation's seats) does not encode or
    /// decode; the source says why.
    #[error("JSON column: {what}")]
    Json {
        /// Which value, of which row.
        what: String,
        /// The encoder's or decoder's error.
        source: serde_json::Error,
    },
}

/// Ticketmaster's tables, on the instance's one pool.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

/// The settings table holding Ticketmaster's shared keys.
pub(crate) const SETTINGS_TABLE: &str = "tm_settings";

/// A section of a venue: `rows` × `seats_per_row` seats at one price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// 1–16 characters of `A-Z a-z 0-9 _`; the first part of a seat id.
    #[schema(example = "A", pattern = r"^[A-Za-z0-9_]{1,16}$")]
    pub name: String,
    /// 1–100.
    #[schema(minimum = 1, maximum = 100)]
    pub rows: u32,
    /// 1–100.
    #[schema(minimum = 1, maximum = 100)]
    pub seats_per_row: u32,
    /// Price of one seat, 0–10,000,000 cents.
    #[schema(minimum = 0, maximum = 10_000_000)]
    pub price_cents: i64,
}

/// A stored venue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Venue {
    /// `v_` + 32 hex digits.
    pub id: String,
    /// Display name.
    pub name: String,
    /// City.
    pub city: String,
    /// Its sections, in order.
    pub sections: Vec<Section>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `e_` + 32 hex digits; also the reservation-store pool of its seats.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The venue whose sections are the seats.
    pub venue_id: String,
    /// Start time, Unix milliseconds.
    pub starts_at_ms: i64,
    /// Waiting-room admission rate, when the event has one.
    pub admit_per_sec: Option<i64>,
    /// When the waiting room opened (Unix ms): the event's creation time.
    pub queue_opened_at_ms: Option<i64>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
}

/// The state of a reservation row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReservationState {
    /// Seats held until `until_ms`.
    Held,
    /// Paid and sold.
    Confirmed,
    /// Released by the owner.
    Cancelled,
    /// The hold lapsed.
    Expired,
}

impl ReservationState {
    /// The stored spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "held" => Self::Held,
            "confirmed" => Self::Confirmed,
            "cancelled" => Self::Cancelled,
            "expired" => Self::Expired,
            other => return Err(StoreError::Corrupt(format!("reservation state {other:?}"))),
        })
    }
}

/// A stored reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// `r_` + 32 hex digits.
    pub id: String,
    /// The event.
    pub event_id: String,
    /// The user holding it.
    pub user: String,
    /// Seat ids, sorted.
    pub seats: Vec<String>,
    /// The reservation store's hold id.
    pub hold_id: String,
    /// When the hold lapses, Unix milliseconds.
    pub until_ms: i64,
    /// Where it stands.
    pub state: ReservationState,
    /// The provider's charge, once confirmed.
    pub charge_id: Option<String>,
    /// The Idempotency-Key that owns the confirmation, once one started. Only
    /// this key may charge for the reservation, so two keys never both charge.
    pub confirming_key: Option<String>,
    /// Sum of the seats' prices.
    pub amount_cents: i64,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
}

const RESERVATION_COLUMNS: &str = "id, event_id, user_name, seats, hold_id, until_ms, state, \
                                   charge_id, confirming_key, amount_cents, created_at_ms";
const EVENT_COLUMNS: &str =
    "id, name, venue_id, starts_at_ms, admit_per_sec, queue_opened_at_ms, created_at_ms";

impl Store {
    /// The tables on `db`, which the server has migrated ([`crate::migrations`]).
    #[must_use]
    pub const fn new(db: Db) -> Self {
        Self { db }
    }

    /// The pool they live in.
    #[must_use]
    pub const fn pool(&self) -> &Db {
        &self.db
    }

    /// The engine's name, for logs and metrics.
    #[must_use]
    pub const fn engine(&self) -> &'static str {
        self.db.engine()
    }

    /// Stores a new venue.
    ///
    /// # Errors
    /// Database failures.
    pub async fn insert_venue(&self, venue: &Venue) -> Result<(), StoreError> {
        let sections = serde_json::to_string(&venue.sections).map_err(|source| {
            StoreError::Json { what: format!("venue {} sections", venue.id), source }
        })?;
        on_db!(&self.db, |pool| sqlx::query(
            "INSERT INTO tm_venues (id, name, city, sections, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(&venue.id)
        .bind(&venue.name)
        .bind(&venue.city)
        .bind(&sections)
        .bind(venue.created_at_ms)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Looks a venue up.
    ///
    /// # Errors
    /// Database failures or a corrupt row.
    pub async fn venue(&self, id: &str) -> Result<Option<Venue>, StoreError> {
        let row: Option<(String, String, String, String, i64)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, name, city, sections, created_at_ms FROM tm_venues WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(|(id, name, city, sections, created_at_ms)| {
            let sections = serde_json::from_str(&sections).map_err(|source| StoreError::Json {
                what: format!("venue {id} sections"),
                source,
            })?;
            Ok(Venue { id, name, city, sections, created_at_ms })
        })
        .transpose()
    }

    /// Stores a new event.
    ///
    /// # Errors
    /// Database failures.
    pub async fn insert_event(&self, event: &Event) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| sqlx::query(&format!(
            "INSERT INTO tm_events ({EVENT_COLUMNS}, name_lower) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&event.id)
        .bind(&event.name)
        .bind(&event.venue_id)
        .bind(event.starts_at_ms)
        .bind(event.admit_per_sec)
        .bind(event.queue_opened_at_ms)
        .bind(event.created_at_ms)
        .bind(event.name.to_lowercase())
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Looks an event up.
    ///
    /// # Errors
    /// Database failures.
    pub async fn event(&self, id: &str) -> Result<Option<Event>, StoreError> {
        let row = on_db!(&self.db, |pool| sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM tm_events WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .map(|r| event_from_row(&r))
        .transpose()?);
        Ok(row)
    }

    /// One page of events ordered by `(starts_at_ms, id)`, strictly after
    /// `after`, whose lower-cased name contains `q` (already lower-cased), and
    /// whose start lies in `[from_ms, to_ms)`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list_events(
        &self,
        q: Option<&str>,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        // The pattern is a bound parameter; LIKE's wildcards in it are escaped so
        // `q` is a plain substring.
        let pattern = q.map(|q| {
            let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            format!("%{escaped}%")
        });
        let (after_t, after_id) = after.map_or((None, None), |(t, id)| (Some(t), Some(id)));
        // NULL parameters switch their condition off; one statement for every
        // combination of filters.
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM tm_events \
             WHERE ($1 IS NULL OR name_lower LIKE $1 ESCAPE '\\') \
               AND ($2 IS NULL OR starts_at_ms >= $2) \
               AND ($3 IS NULL OR starts_at_ms < $3) \
               AND ($4 IS NULL OR starts_at_ms > $4 OR (starts_at_ms = $4 AND id > $5)) \
             ORDER BY starts_at_ms, id LIMIT $6"
        );
        let limit = i64::from(limit);
        let rows = match &self.db {
            Db::Sqlite(pool) => sqlx::query(&sql)
                .bind(pattern)
                .bind(from_ms)
                .bind(to_ms)
                .bind(after_t)
                .bind(after_id)
                .bind(limit)
                .fetch_all(pool)
                .await?
                .iter()
                .map(event_from_row)
                .collect::<Result<Vec<_>, _>>()?,
            Db::Postgres(pool) => {
                // PostgreSQL needs the NULL parameters' types spelled out, and
                // bytewise id order to match the cursor's comparison.
                let sql = sql
                    .replace("$1 IS NULL", "$1::text IS NULL")
                    .replace("$2 IS NULL", "$2::bigint IS NULL")
                    .replace("$3 IS NULL", "$3::bigint IS NULL")
                    .replace("$4 IS NULL", "$4::bigint IS NULL")
                    .replace("id > $5", "id COLLATE \"C\" > $5")
                    .replace(
                        "ORDER BY starts_at_ms, id",
                        "ORDER BY starts_at_ms, id COLLATE \"C\"",
                    );
                sqlx::query(&sql)
                    .bind(pattern)
                    .bind(from_ms)
                    .bind(to_ms)
                    .bind(after_t)
                    .bind(after_id)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(event_from_row)
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(rows)
    }

    /// Stores a new reservation row.
    ///
    /// # Errors
    /// Database failures.
    pub async fn insert_reservation(&self, r: &Reservation) -> Result<(), StoreError> {
        let seats = serde_json::to_string(&r.seats).map_err(|source| StoreError::Json {
            what: format!("reservation {} seats", r.id),
            source,
        })?;
        on_db!(&self.db, |pool| sqlx::query(&format!(
            "INSERT INTO tm_reservations ({RESERVATION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&r.id)
        .bind(&r.event_id)
        .bind(&r.user)
        .bind(&seats)
        .bind(&r.hold_id)
        .bind(r.until_ms)
        .bind(r.state.as_str())
        .bind(&r.charge_id)
        .bind(&r.confirming_key)
        .bind(r.amount_cents)
        .bind(r.created_at_ms)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Looks a reservation up.
    ///
    /// # Errors
    /// Database failures or a corrupt row.
    pub async fn reservation(&self, id: &str) -> Result<Option<Reservation>, StoreError> {
        on_db!(&self.db, |pool| sqlx::query(&format!(
            "SELECT {RESERVATION_COLUMNS} FROM tm_reservations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .map(|r| reservation_from_row(&r))
        .transpose())
    }

    /// Every reservation of an event, at most `limit`, oldest first.
    ///
    /// # Errors
    /// Database failures or a corrupt row.
    pub async fn reservations_of_event(
        &self,
        event_id: &str,
        limit: u32,
    ) -> Result<Vec<Reservation>, StoreError> {
        on_db!(&self.db, |pool| sqlx::query(&format!(
            "SELECT {RESERVATION_COLUMNS} FROM tm_reservations WHERE event_id = $1 \
             ORDER BY created_at_ms, id LIMIT $2"
        ))
        .bind(event_id)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(reservation_from_row)
        .collect())
    }

    /// Makes `key` the one confirmation allowed to charge for reservation `id`:
    /// succeeds when the row is held and no other key owns it. The guard is one
    /// conditional UPDATE, so two keys racing cannot both win.
    ///
    /// # Errors
    /// Database failures.
    pub async fn claim_confirmation(&self, id: &str, key: &str) -> Result<bool, StoreError> {
        let n = on_db!(&self.db, |pool| sqlx::query(
            "UPDATE tm_reservations SET confirming_key = $2 \
             WHERE id = $1 AND state = 'held' AND (confirming_key IS NULL OR confirming_key = $2)"
        )
        .bind(id)
        .bind(key)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    /// Gives up `key`'s claim (the charge was declined, nothing was charged),
    /// so the owner may pay with another key.
    ///
    /// # Errors
    /// Database failures.
    pub async fn release_confirmation(&self, id: &str, key: &str) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| sqlx::query(
            "UPDATE tm_reservations SET confirming_key = NULL WHERE id = $1 AND confirming_key = $2"
        )
        .bind(id)
        .bind(key)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Records a sale: the reservation store already moved the seats to SOLD,
    /// which is the truth, so this also overrides a sweeper's `expired`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn mark_confirmed(&self, id: &str, charge_id: &str) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| sqlx::query(
            "UPDATE tm_reservations SET state = 'confirmed', charge_id = $2 \
             WHERE id = $1 AND state IN ('held', 'expired')"
        )
        .bind(id)
        .bind(charge_id)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Moves a held row to `state` (`cancelled` or `expired`). Returns whether
    /// it was held.
    ///
    /// # Errors
    /// Database failures.
    pub async fn end_hold(&self, id: &str, state: ReservationState) -> Result<bool, StoreError> {
        debug_assert!(matches!(state, ReservationState::Cancelled | ReservationState::Expired));
        let n = on_db!(&self.db, |pool| sqlx::query(
            "UPDATE tm_reservations SET state = $2 WHERE id = $1 AND state = 'held'"
        )
        .bind(id)
        .bind(state.as_str())
        .execute(pool)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    /// Cancels a held row no confirmation has claimed. Returns whether it did;
    /// one conditional UPDATE, so it cannot interleave with a claim.
    ///
    /// # Errors
    /// Database failures.
    pub async fn cancel_hold(&self, id: &str) -> Result<bool, StoreError> {
        let n = on_db!(&self.db, |pool| sqlx::query(
            "UPDATE tm_reservations SET state = 'cancelled' \
             WHERE id = $1 AND state = 'held' AND confirming_key IS NULL"
        )
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    /// Held rows whose hold lapsed by `now_ms`, at most `limit`, earliest first.
    ///
    /// # Errors
    /// Database failures or a corrupt row.
    pub async fn due_reservations(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<Reservation>, StoreError> {
        on_db!(&self.db, |pool| sqlx::query(&format!(
            "SELECT {RESERVATION_COLUMNS} FROM tm_reservations \
             WHERE state = 'held' AND until_ms <= $1 ORDER BY until_ms LIMIT $2"
        ))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(reservation_from_row)
        .collect())
    }

    /// The user's position in the event's queue, if they joined.
    ///
    /// # Errors
    /// Database failures.
    pub async fn queue_position(
        &self,
        event_id: &str,
        user: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(on_db!(&self.db, |pool| sqlx::query_scalar::<_, i64>(
            "SELECT position FROM tm_queue WHERE event_id = $1 AND user_name = $2"
        )
        .bind(event_id)
        .bind(user)
        .fetch_optional(pool)
        .await?))
    }

    /// Joins the event's queue, returning the user's position (1-based). Joining
    /// again returns the same position. The event row's counter hands positions
    /// out under its row lock, and a duplicate join rolls its increment back, so
    /// positions are dense and every instance agrees.
    ///
    /// # Errors
    /// Database failures.
    pub async fn queue_join(
        &self,
        event_id: &str,
        user: &str,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        if let Some(position) = self.queue_position(event_id, user).await? {
            return Ok(position);
        }
        let joined: Result<i64, sqlx::Error> = on_db!(&self.db, |pool| {
            async {
            // The first statement writes, so SQLite takes its write lock at once
            // and never has to upgrade a read snapshot.
            let mut tx = pool.begin().await?;
            let position: i64 = sqlx::query_scalar(
                "UPDATE tm_events SET queue_next = queue_next + 1 WHERE id = $1 RETURNING queue_next",
            )
            .bind(event_id)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO tm_queue (event_id, user_name, position, joined_at_ms) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(event_id)
            .bind(user)
            .bind(position)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<i64, sqlx::Error>(position)
        }
        .await
        });
        match joined {
            Ok(position) => Ok(position),
            // The same user joined concurrently through another request: theirs counts.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => self
                .queue_position(event_id, user)
                .await?
                .ok_or_else(|| StoreError::Corrupt("queue row vanished".to_owned())),
            Err(e) => Err(e.into()),
        }
    }
}

fn event_from_row<R: Row>(row: &R) -> Result<Event, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Event {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        venue_id: row.try_get("venue_id")?,
        starts_at_ms: row.try_get("starts_at_ms")?,
        admit_per_sec: row.try_get("admit_per_sec")?,
        queue_opened_at_ms: row.try_get("queue_opened_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn reservation_from_row<R: Row>(row: &R) -> Result<Reservation, StoreError>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let seats: String = row.try_get("seats")?;
    let seats = serde_json::from_str(&seats)
        .map_err(|source| StoreError::Json { what: format!("reservation {id} seats"), source })?;
    let state: String = row.try_get("state")?;
    Ok(Reservation {
        event_id: row.try_get("event_id")?,
        user: row.try_get("user_name")?,
        seats,
        hold_id: row.try_get("hold_id")?,
        until_ms: row.try_get("until_ms")?,
        state: ReservationState::parse(&state)?,
        charge_id: row.try_get("charge_id")?,
        confirming_key: row.try_get("confirming_key")?,
        amount_cents: row.try_get("amount_cents")?,
        created_at_ms: row.try_get("created_at_ms")?,
        id,
    })
}
