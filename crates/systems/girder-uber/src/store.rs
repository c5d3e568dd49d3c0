//! Uber's tables: drivers' status, rides with their state machine and history,
//! offers, zones and airport queues, on the instance's database.
//!
//! **No double assignment, whatever the leases do.** Every change to a ride is one
//! conditional statement from the state (and offer, and claim) it was decided
//! against, so of two concurrent changes exactly one applies. Two partial unique
//! indexes hold the guarantees themselves: a driver is the driver of at most one
//! ride under way, and a rider has at most one ride under way. The matcher's lease
//! only keeps a driver from being offered two rides at once; if a lease store lost
//! its state, the worst outcome would be an offer the driver cannot accept.

use girder_sql::{Db, on_db};

use crate::ride::RideState;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A stored ride has a state this build does not know.
    #[error("ride {0} has an unknown state")]
    Corrupt(String),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A ride as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RideRow {
    /// Its id.
    pub id: String,
    /// Who asked for it.
    pub rider: String,
    /// Its state's stored name ([`RideState::as_str`]).
    pub state: String,
    /// Pickup latitude.
    pub pickup_lat: f64,
    /// Pickup longitude.
    pub pickup_lon: f64,
    /// Drop-off latitude.
    pub dropoff_lat: f64,
    /// Drop-off longitude.
    pub dropoff_lon: f64,
    /// The surge multiplier quoted when it was requested.
    pub surge: f64,
    /// Its driver, once one accepted.
    pub driver: Option<String>,
    /// The driver it is offered to now, if any.
    pub offer_driver: Option<String>,
    /// The fencing token of that offer's lease.
    pub offer_token: Option<i64>,
    /// When that offer lapses, ms.
    pub offer_deadline_ms: Option<i64>,
    /// When an unaccepted ride is cancelled, ms.
    pub match_deadline_ms: i64,
    /// Until when a matcher holds it, ms.
    pub claim_until_ms: i64,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// When the rider was told the driver is arriving, ms.
    pub arriving_ms: Option<i64>,
    /// When it was requested, ms.
    pub created_ms: i64,
    /// When it last changed, ms.
    pub updated_ms: i64,
    /// Bumped by every change.
    pub version: i64,
}

impl RideRow {
    /// Its state.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a name this build does not know.
    pub fn state(&self) -> Result<RideState> {
        RideState::parse(&self.state).ok_or_else(|| StoreError::Corrupt(self.id.clone()))
    }
}

/// A new ride.
#[derive(Debug, Clone)]
pub struct NewRide<'a> {
    /// Its id.
    pub id: &'a str,
    /// Who asks.
    pub rider: &'a str,
    /// Pickup (lat, lon).
    pub pickup: (f64, f64),
    /// Drop-off (lat, lon).
    pub dropoff: (f64, f64),
    /// The surge multiplier quoted.
    pub surge: f64,
    /// When an unaccepted ride is cancelled, ms.
    pub match_deadline_ms: i64,
    /// Now, ms.
    pub now_ms: i64,
}

/// One transition in a ride's history.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RideEvent {
    /// The ride.
    pub ride_id: String,
    /// 1, 2, 3, … per ride.
    pub seq: i64,
    /// The state entered.
    pub state: String,
    /// The ride's driver after it.
    pub driver: Option<String>,
    /// When, ms.
    pub at_ms: i64,
}

/// An offer as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OfferRow {
    /// The ride.
    pub ride_id: String,
    /// To whom.
    pub driver: String,
    /// The lease's fencing token.
    pub token: i64,
    /// When, ms.
    pub offered_ms: i64,
    /// `pending`, `accepted`, `declined`, `expired`, `handed_back` or `withdrawn`.
    pub outcome: String,
}

/// A stored zone.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ZoneRow {
    /// Its name.
    pub name: String,
    /// `surge` or `airport`.
    pub kind: String,
    /// Its shape, as JSON.
    pub shape: String,
    /// When it last changed, ms.
    pub updated_ms: i64,
}

/// Why an accept did not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// The driver now holds the ride.
    Accepted,
    /// The offer is not this driver's any more (lapsed, withdrawn, another token) or
    /// the ride is no longer waiting.
    OfferGone,
    /// The driver already holds another ride under way.
    DriverBusy,
}

const RIDE_COLUMNS: &str = "id, rider, state, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, \
     surge, driver, offer_driver, offer_token, offer_deadline_ms, match_deadline_ms, \
     claim_until_ms, cancel_reason, arriving_ms, created_ms, updated_ms, version";

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Uber's tables on one database.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// The store on `db` (migrated by [`crate::migrations`]).
    #[must_use]
    pub const fn new(db: Db) -> Self {
        Self { db }
    }

    /// The database.
    #[must_use]
    pub const fn db(&self) -> &Db {
        &self.db
    }

    /// Marks a driver on or off duty.
    ///
    /// # Errors
    /// The database failed.
    pub async fn set_online(&self, driver: &str, online: bool, now_ms: i64) -> Result<()> {
        on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO uber_drivers (id, online, updated_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET online = excluded.online, updated_ms = excluded.updated_ms",
            )
            .bind(driver)
            .bind(online)
            .bind(now_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// A driver's standing in one read: on duty (`false` if never registered), and the
    /// ride they hold under way, if any.
    ///
    /// # Errors
    /// The database failed.
    pub async fn driver_status(&self, driver: &str) -> Result<(bool, Option<String>)> {
        let row: Option<(bool, Option<String>)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT d.online, r.id FROM uber_drivers d LEFT JOIN uber_rides r \
                 ON r.driver = d.id AND r.state IN ('matched', 'en_route', 'in_progress') \
                 WHERE d.id = $1",
            )
            .bind(driver)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.unwrap_or((false, None)))
    }

    /// The ride a driver holds under way, if any.
    ///
    /// # Errors
    /// The database failed.
    pub async fn active_ride_of_driver(&self, driver: &str) -> Result<Option<String>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT id FROM uber_rides WHERE driver = $1 \
                 AND state IN ('matched', 'en_route', 'in_progress')",
            )
            .bind(driver)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Inserts a requested ride; `false` when the rider already has one under way.
    ///
    /// # Errors
    /// The database failed.
    pub async fn insert_ride(&self, ride: &NewRide<'_>) -> Result<bool> {
        let inserted = on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "INSERT INTO uber_rides (id, rider, state, pickup_lat, pickup_lon, dropoff_lat, \
                 dropoff_lon, surge, match_deadline_ms, claim_until_ms, created_ms, updated_ms, version) \
                 VALUES ($1, $2, 'requested', $3, $4, $5, $6, $7, $8, 0, $9, $9, 1)",
            )
            .bind(ride.id)
            .bind(ride.rider)
            .bind(ride.pickup.0)
            .bind(ride.pickup.1)
            .bind(ride.dropoff.0)
            .bind(ride.dropoff.1)
            .bind(ride.surge)
            .bind(ride.match_deadline_ms)
            .bind(ride.now_ms)
            .execute(&mut *tx)
            .await;
            match done {
                Err(e) if is_unique_violation(&e) => false,
                Err(e) => return Err(e.into()),
                Ok(_) => {
                    insert_event(&mut tx, ride.id, "requested", None, ride.now_ms).await?;
                    tx.commit().await?;
                    true
                }
            }
        });
        Ok(inserted)
    }

    /// A ride by id.
    ///
    /// # Errors
    /// The database failed.
    pub async fn ride(&self, id: &str) -> Result<Option<RideRow>> {
        let sql = format!("SELECT {RIDE_COLUMNS} FROM uber_rides WHERE id = $1");
        Ok(on_db!(&self.db, |pool| { sqlx::query_as(&sql).bind(id).fetch_optional(pool).await? }))
    }

    /// The rides a user took part in, as rider or driver, newest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn rides_of(&self, user: &str, limit: u32) -> Result<Vec<RideRow>> {
        let sql = format!(
            "SELECT {RIDE_COLUMNS} FROM uber_rides WHERE rider = $1 OR driver = $1 \
             ORDER BY created_ms DESC, id DESC LIMIT $2"
        );
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(&sql).bind(user).bind(i64::from(limit)).fetch_all(pool).await?
        }))
    }

    /// Every ride, oldest first (operators and history checks).
    ///
    /// # Errors
    /// The database failed.
    pub async fn all_rides(&self, limit: u32) -> Result<Vec<RideRow>> {
        let sql = format!("SELECT {RIDE_COLUMNS} FROM uber_rides ORDER BY created_ms, id LIMIT $1");
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(&sql).bind(i64::from(limit)).fetch_all(pool).await?
        }))
    }

    /// Counts rides by state.
    ///
    /// # Errors
    /// The database failed.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as("SELECT state, COUNT(*) FROM uber_rides GROUP BY state ORDER BY state")
                .fetch_all(pool)
                .await?
        }))
    }

    /// A ride's history, oldest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn events(&self, ride: &str) -> Result<Vec<RideEvent>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT ride_id, seq, state, driver, at_ms FROM uber_ride_events \
                 WHERE ride_id = $1 ORDER BY seq",
            )
            .bind(ride)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Every transition of every ride, in ride and sequence order (history checks).
    ///
    /// # Errors
    /// The database failed.
    pub async fn all_events(&self) -> Result<Vec<RideEvent>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT ride_id, seq, state, driver, at_ms FROM uber_ride_events ORDER BY ride_id, seq",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// The ride offered to `driver` now (open and unexpired at `now_ms`), if any.
    ///
    /// # Errors
    /// The database failed.
    pub async fn open_offer_of(&self, driver: &str, now_ms: i64) -> Result<Option<RideRow>> {
        let sql = format!(
            "SELECT {RIDE_COLUMNS} FROM uber_rides WHERE offer_driver = $1 \
             AND state = 'requested' AND offer_deadline_ms > $2 ORDER BY created_ms LIMIT 1"
        );
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(&sql).bind(driver).bind(now_ms).fetch_optional(pool).await?
        }))
    }

    /// Rides a driver holds that are not yet picked up: `(ride, driver, pickup lat, lon,
    /// arriving_ms)` (the arriving fences).
    ///
    /// # Errors
    /// The database failed.
    pub async fn approaching(
        &self,
        limit: u32,
    ) -> Result<Vec<(String, String, f64, f64, Option<i64>)>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, driver, pickup_lat, pickup_lon, arriving_ms FROM uber_rides \
                 WHERE state IN ('matched', 'en_route') AND driver IS NOT NULL \
                 ORDER BY updated_ms DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        }))
    }

    /// Requested rides no matcher holds (`claim_until_ms <= now`), oldest first, each
    /// claimed until `until_ms` by a compare-and-set on its claim, so two matchers
    /// never work on one ride at once.
    ///
    /// # Errors
    /// The database failed.
    pub async fn claim_waiting(
        &self,
        now_ms: i64,
        until_ms: i64,
        limit: u32,
    ) -> Result<Vec<RideRow>> {
        let sql = format!(
            "SELECT {RIDE_COLUMNS} FROM uber_rides WHERE state = 'requested' \
             AND claim_until_ms <= $1 ORDER BY claim_until_ms, created_ms LIMIT $2"
        );
        let waiting: Vec<RideRow> = on_db!(&self.db, |pool| {
            sqlx::query_as(&sql).bind(now_ms).bind(i64::from(limit)).fetch_all(pool).await?
        });
        let mut claimed = Vec::with_capacity(waiting.len());
        for mut ride in waiting {
            let took = on_db!(&self.db, |pool| {
                sqlx::query(
                    "UPDATE uber_rides SET claim_until_ms = $1 WHERE id = $2 \
                     AND state = 'requested' AND claim_until_ms = $3",
                )
                .bind(until_ms)
                .bind(&ride.id)
                .bind(ride.claim_until_ms)
                .execute(pool)
                .await?
                .rows_affected()
            });
            if took == 1 {
                ride.claim_until_ms = until_ms;
                claimed.push(ride);
            }
        }
        Ok(claimed)
    }

    /// Moves a matcher's claim on a waiting ride from `claim_ms` to `until_ms`
    /// (0 hands it to the next matcher at once); `false` if the claim was lost.
    ///
    /// # Errors
    /// The database failed.
    pub async fn reclaim(&self, ride: &str, claim_ms: i64, until_ms: i64) -> Result<bool> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE uber_rides SET claim_until_ms = $1 WHERE id = $2 \
                 AND state = 'requested' AND claim_until_ms = $3",
            )
            .bind(until_ms)
            .bind(ride)
            .bind(claim_ms)
            .execute(pool)
            .await?
            .rows_affected()
                == 1
        }))
    }

    /// The drivers a ride was already offered to (never offered twice).
    ///
    /// # Errors
    /// The database failed.
    pub async fn offered_drivers(&self, ride: &str) -> Result<Vec<String>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT driver FROM uber_offers WHERE ride_id = $1")
                .bind(ride)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Every offer of a ride, oldest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn offers(&self, ride: &str) -> Result<Vec<OfferRow>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT ride_id, driver, token, offered_ms, outcome FROM uber_offers \
                 WHERE ride_id = $1 ORDER BY offered_ms, driver",
            )
            .bind(ride)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The ride of every offer that lapsed unanswered, once per such offer (for
    /// histories over many rides, in one read).
    ///
    /// # Errors
    /// The database failed.
    pub async fn expired_offer_rides(&self) -> Result<Vec<String>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT ride_id FROM uber_offers WHERE outcome = 'expired'")
                .fetch_all(pool)
                .await?
        }))
    }

    /// Records an offer of a claimed ride to `driver` under lease `token`, valid until
    /// `deadline_ms`; the claim moves to the deadline so no matcher touches the ride
    /// while the driver decides. `false` if the claim was lost or the ride moved on.
    ///
    /// # Errors
    /// The database failed.
    pub async fn record_offer(
        &self,
        ride: &str,
        claim_ms: i64,
        driver: &str,
        token: i64,
        deadline_ms: i64,
        now_ms: i64,
    ) -> Result<bool> {
        Ok(on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let took = sqlx::query(
                "UPDATE uber_rides SET offer_driver = $1, offer_token = $2, offer_deadline_ms = $3, \
                 claim_until_ms = $3, updated_ms = $4, version = version + 1 \
                 WHERE id = $5 AND state = 'requested' AND claim_until_ms = $6",
            )
            .bind(driver)
            .bind(token)
            .bind(deadline_ms)
            .bind(now_ms)
            .bind(ride)
            .bind(claim_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if took != 1 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO uber_offers (ride_id, driver, token, offered_ms, outcome) \
                 VALUES ($1, $2, $3, $4, 'pending')",
            )
            .bind(ride)
            .bind(driver)
            .bind(token)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            true
        }))
    }

    /// Closes a ride's lapsed offer (`expired`) so the next matcher can go on; no-op
    /// if the offer was answered meanwhile.
    ///
    /// # Errors
    /// The database failed.
    pub async fn expire_offer(
        &self,
        ride: &str,
        driver: &str,
        token: i64,
        now_ms: i64,
    ) -> Result<()> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let cleared = sqlx::query(
                "UPDATE uber_rides SET offer_driver = NULL, offer_token = NULL, offer_deadline_ms = NULL, \
                 updated_ms = $1, version = version + 1 \
                 WHERE id = $2 AND state = 'requested' AND offer_driver = $3 AND offer_token = $4 \
                 AND offer_deadline_ms <= $1",
            )
            .bind(now_ms)
            .bind(ride)
            .bind(driver)
            .bind(token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if cleared == 1 {
                sqlx::query(
                    "UPDATE uber_offers SET outcome = 'expired' \
                     WHERE ride_id = $1 AND driver = $2 AND outcome = 'pending'",
                )
                .bind(ride)
                .bind(driver)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The driver accepts the ride offered to them under `token`: the ride becomes
    /// theirs only if the offer is still theirs, unexpired at `now_ms`, and they hold
    /// no other ride under way.
    ///
    /// # Errors
    /// The database failed.
    pub async fn accept(
        &self,
        ride: &str,
        driver: &str,
        token: i64,
        now_ms: i64,
    ) -> Result<AcceptOutcome> {
        Ok(on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let took = sqlx::query(
                "UPDATE uber_rides SET state = 'matched', driver = $1, offer_driver = NULL, \
                 offer_token = NULL, offer_deadline_ms = NULL, claim_until_ms = 0, \
                 updated_ms = $2, version = version + 1 \
                 WHERE id = $3 AND state = 'requested' AND offer_driver = $1 AND offer_token = $4 \
                 AND offer_deadline_ms > $2",
            )
            .bind(driver)
            .bind(now_ms)
            .bind(ride)
            .bind(token)
            .execute(&mut *tx)
            .await;
            match took {
                Err(e) if is_unique_violation(&e) => AcceptOutcome::DriverBusy,
                Err(e) => return Err(e.into()),
                Ok(done) if done.rows_affected() != 1 => AcceptOutcome::OfferGone,
                Ok(_) => {
                    sqlx::query(
                        "UPDATE uber_offers SET outcome = 'accepted' WHERE ride_id = $1 AND driver = $2",
                    )
                    .bind(ride)
                    .bind(driver)
                    .execute(&mut *tx)
                    .await?;
                    insert_event(&mut tx, ride, "matched", Some(driver), now_ms).await?;
                    tx.commit().await?;
                    AcceptOutcome::Accepted
                }
            }
        }))
    }

    /// The driver declines the ride offered to them under `token`; the ride goes
    /// straight back to the matchers. `false` if the offer was no longer theirs.
    ///
    /// # Errors
    /// The database failed.
    pub async fn decline(&self, ride: &str, driver: &str, token: i64, now_ms: i64) -> Result<bool> {
        Ok(on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let took = sqlx::query(
                "UPDATE uber_rides SET offer_driver = NULL, offer_token = NULL, offer_deadline_ms = NULL, \
                 claim_until_ms = 0, updated_ms = $1, version = version + 1 \
                 WHERE id = $2 AND state = 'requested' AND offer_driver = $3 AND offer_token = $4",
            )
            .bind(now_ms)
            .bind(ride)
            .bind(driver)
            .bind(token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if took != 1 {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE uber_offers SET outcome = 'declined' WHERE ride_id = $1 AND driver = $2",
            )
            .bind(ride)
            .bind(driver)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            true
        }))
    }

    /// Moves a ride from `from` (at `version`) to `to`, recording the transition;
    /// `false` if it changed meanwhile. A cancellation carries its reason; a pending
    /// offer is withdrawn.
    ///
    /// # Errors
    /// The database failed.
    pub async fn transition(
        &self,
        ride: &str,
        from: RideState,
        version: i64,
        to: RideState,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<bool> {
        Ok(on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let took: Option<Option<String>> = sqlx::query_scalar(
                "UPDATE uber_rides SET state = $1, cancel_reason = COALESCE($2, cancel_reason), \
                 offer_driver = NULL, offer_token = NULL, offer_deadline_ms = NULL, \
                 updated_ms = $3, version = version + 1 \
                 WHERE id = $4 AND state = $5 AND version = $6 RETURNING driver",
            )
            .bind(to.as_str())
            .bind(reason)
            .bind(now_ms)
            .bind(ride)
            .bind(from.as_str())
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(driver) = took else { return Ok(false) };
            if from == RideState::Requested {
                sqlx::query(
                    "UPDATE uber_offers SET outcome = 'withdrawn' WHERE ride_id = $1 AND outcome = 'pending'",
                )
                .bind(ride)
                .execute(&mut *tx)
                .await?;
            }
            insert_event(&mut tx, ride, to.as_str(), driver.as_deref(), now_ms).await?;
            tx.commit().await?;
            true
        }))
    }

    /// The driver hands a matched or en-route ride back: it returns to `requested`
    /// without a driver, with a fresh matching deadline, and is never offered to
    /// them again. `false` if it changed meanwhile.
    ///
    /// # Errors
    /// The database failed.
    pub async fn hand_back(
        &self,
        ride: &str,
        from: RideState,
        version: i64,
        driver: &str,
        match_deadline_ms: i64,
        now_ms: i64,
    ) -> Result<bool> {
        Ok(on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let took = sqlx::query(
                "UPDATE uber_rides SET state = 'requested', driver = NULL, claim_until_ms = 0, \
                 match_deadline_ms = $1, arriving_ms = NULL, updated_ms = $2, version = version + 1 \
                 WHERE id = $3 AND state = $4 AND version = $5 AND driver = $6",
            )
            .bind(match_deadline_ms)
            .bind(now_ms)
            .bind(ride)
            .bind(from.as_str())
            .bind(version)
            .bind(driver)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if took != 1 {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE uber_offers SET outcome = 'handed_back' WHERE ride_id = $1 AND driver = $2",
            )
            .bind(ride)
            .bind(driver)
            .execute(&mut *tx)
            .await?;
            insert_event(&mut tx, ride, "requested", None, now_ms).await?;
            tx.commit().await?;
            true
        }))
    }

    /// Marks that the rider was told the driver is arriving; `true` only the first
    /// time for this driver's approach (so the notice is sent once).
    ///
    /// # Errors
    /// The database failed.
    pub async fn mark_arriving(&self, ride: &str, driver: &str, now_ms: i64) -> Result<bool> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE uber_rides SET arriving_ms = $1 WHERE id = $2 AND driver = $3 \
                 AND state IN ('matched', 'en_route') AND arriving_ms IS NULL",
            )
            .bind(now_ms)
            .bind(ride)
            .bind(driver)
            .execute(pool)
            .await?
            .rows_affected()
                == 1
        }))
    }

    /// Adds or replaces a zone.
    ///
    /// # Errors
    /// The database failed.
    pub async fn put_zone(&self, name: &str, kind: &str, shape: &str, now_ms: i64) -> Result<()> {
        on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO uber_zones (name, kind, shape, updated_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, shape = excluded.shape, \
                 updated_ms = excluded.updated_ms",
            )
            .bind(name)
            .bind(kind)
            .bind(shape)
            .bind(now_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Deletes a zone and its queue; `false` if there was none.
    ///
    /// # Errors
    /// The database failed.
    pub async fn delete_zone(&self, name: &str) -> Result<bool> {
        Ok(on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let gone = sqlx::query("DELETE FROM uber_zones WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM uber_airport_queue WHERE zone = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            gone == 1
        }))
    }

    /// Every zone, by name.
    ///
    /// # Errors
    /// The database failed.
    pub async fn zones(&self) -> Result<Vec<ZoneRow>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as("SELECT name, kind, shape, updated_ms FROM uber_zones ORDER BY name")
                .fetch_all(pool)
                .await?
        }))
    }

    /// A driver joins an airport zone's queue at `entered_ms` (kept if already in it).
    ///
    /// # Errors
    /// The database failed.
    pub async fn queue_enter(&self, zone: &str, driver: &str, entered_ms: i64) -> Result<()> {
        on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO uber_airport_queue (zone, driver, entered_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (zone, driver) DO NOTHING",
            )
            .bind(zone)
            .bind(driver)
            .bind(entered_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// A driver leaves an airport zone's queue (`None`: every queue).
    ///
    /// # Errors
    /// The database failed.
    pub async fn queue_leave(&self, zone: Option<&str>, driver: &str) -> Result<()> {
        on_db!(&self.db, |pool| {
            match zone {
                Some(zone) => {
                    sqlx::query("DELETE FROM uber_airport_queue WHERE zone = $1 AND driver = $2")
                        .bind(zone)
                        .bind(driver)
                        .execute(pool)
                        .await?
                }
                None => {
                    sqlx::query("DELETE FROM uber_airport_queue WHERE driver = $1")
                        .bind(driver)
                        .execute(pool)
                        .await?
                }
            };
        });
        Ok(())
    }

    /// An airport zone's queue, first in first: `(driver, entered_ms)`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn queue(&self, zone: &str, limit: u32) -> Result<Vec<(String, i64)>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT driver, entered_ms FROM uber_airport_queue WHERE zone = $1 \
                 ORDER BY entered_ms, driver LIMIT $2",
            )
            .bind(zone)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        }))
    }

    /// Pickups requested since `since_ms`: `(lat, lon)` (surge demand).
    ///
    /// # Errors
    /// The database failed.
    pub async fn pickups_since(&self, since_ms: i64, limit: u32) -> Result<Vec<(f64, f64)>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT pickup_lat, pickup_lon FROM uber_rides WHERE created_ms >= $1 \
                 ORDER BY created_ms DESC LIMIT $2",
            )
            .bind(since_ms)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        }))
    }
}

/// Appends one transition to a ride's history inside `tx`.
async fn insert_event<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    ride: &str,
    state: &str,
    driver: Option<&str>,
    at_ms: i64,
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
{
    sqlx::query(
        "INSERT INTO uber_ride_events (ride_id, seq, state, driver, at_ms) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 FROM uber_ride_events WHERE ride_id = $1",
    )
    .bind(ride)
    .bind(state)
    .bind(driver)
    .bind(at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
