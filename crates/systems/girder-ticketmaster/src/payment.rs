//! A fake payment provider with a real provider's contract: charges are
//! idempotent per key on the provider's side (Stripe-style), so asking again
//! with the same key returns the existing charge instead of charging twice.
//! Its ledger lives in the shared database, so several server instances talk to
//! one provider.
//!
//! The payment token picks the behaviour:
//! - `tok_ok`: the charge succeeds;
//! - `tok_decline`: declined (and declined again for the same key);
//! - `tok_timeout_before`: the first call times out *before* charging; a later
//!   call with the same key charges;
//! - `tok_timeout_after`: the first call charges but its answer is lost (a
//!   timeout); a later call with the same key returns that charge;
//! - anything else: declined as an unknown token.

use std::sync::Arc;

use girder_core::Clock;

use girder_sql::{Db, on_db};

use super::store::StoreError;

/// A charge in the provider's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// `ch_` + 32 hex digits.
    pub id: String,
    /// The idempotency key it was made with.
    pub key: String,
    /// What it pays for (the reservation id).
    pub reference: String,
    /// Amount charged.
    pub amount_cents: i64,
    /// Whether it was refunded since.
    pub refunded: bool,
}

/// Why a charge did not go through.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentError {
    /// The card was declined; nothing was charged. Final for this key.
    #[error("payment declined: {0}")]
    Declined(String),
    /// No answer in time: the charge may or may not exist. Ask again with the
    /// same key to find out.
    #[error("payment provider timed out")]
    Timeout,
    /// The key was used before for a different amount or reference.
    #[error("idempotency key reused with different parameters")]
    KeyReused,
    /// The ledger failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Ledger row states.
const CHARGED: &str = "charged";
const REFUNDED: &str = "refunded";
const DECLINED: &str = "declined";
/// A `tok_timeout_before` call was seen; nothing charged yet.
const ATTEMPTED: &str = "attempted";

/// How many times a racing insert is re-read before giving up (two callers
/// with one key: one inserts, the other reads it on the next turn).
const RACE_ROUNDS_MAX: usize = 4;

/// The fake provider.
#[derive(Clone)]
pub struct FakeProvider {
    db: Db,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider").field("engine", &self.db.engine()).finish_non_exhaustive()
    }
}

struct Row {
    charge_id: Option<String>,
    reference: String,
    amount_cents: i64,
    state: String,
}

impl FakeProvider {
    /// A provider keeping its ledger in `db` (the table exists once
    /// [`Db::connect`] ran).
    #[must_use]
    pub fn new(db: Db, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    async fn row(&self, key: &str) -> Result<Option<Row>, StoreError> {
        let row: Option<(Option<String>, String, i64, String)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT charge_id, reference, amount_cents, state FROM tm_payments WHERE key = $1",
            )
            .bind(key)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(charge_id, reference, amount_cents, state)| Row {
            charge_id,
            reference,
            amount_cents,
            state,
        }))
    }

    /// Inserts a ledger row unless the key has one. Returns whether it did.
    async fn insert(
        &self,
        key: &str,
        reference: &str,
        amount_cents: i64,
        state: &str,
        charge_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = on_db!(&self.db, |pool| {
            sqlx::query(
            "INSERT INTO tm_payments (key, charge_id, reference, amount_cents, state, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO NOTHING"
        )
        .bind(key)
        .bind(charge_id)
        .bind(reference)
        .bind(amount_cents)
        .bind(state)
        .bind(self.now_ms())
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(n == 1)
    }

    /// Charges `amount_cents` for `reference` with `token`, at most once per
    /// `key`: a second call with the same key returns the first call's charge
    /// (or decline) and never charges again.
    ///
    /// # Errors
    /// Declined, timed out (the charge may exist: retry with the same key), the
    /// key reused for other parameters, or the ledger failed.
    pub async fn charge(
        &self,
        key: &str,
        reference: &str,
        amount_cents: i64,
        token: &str,
    ) -> Result<Charge, PaymentError> {
        for _ in 0..RACE_ROUNDS_MAX {
            match self.row(key).await? {
                Some(row) => {
                    if row.reference != reference || row.amount_cents != amount_cents {
                        return Err(PaymentError::KeyReused);
                    }
                    match row.state.as_str() {
                        CHARGED | REFUNDED => {
                            let id = row.charge_id.ok_or_else(|| {
                                StoreError::Corrupt(format!("payment {key} has no charge id"))
                            })?;
                            return Ok(Charge {
                                id,
                                key: key.to_owned(),
                                reference: row.reference,
                                amount_cents,
                                refunded: row.state == REFUNDED,
                            });
                        }
                        DECLINED => return Err(PaymentError::Declined("card declined".into())),
                        ATTEMPTED => {
                            // The earlier call timed out before charging; this one
                            // charges. The state guard makes the race single-winner.
                            let id = new_charge_id();
                            on_db!(&self.db, |pool| sqlx::query(
                                "UPDATE tm_payments SET state = $2, charge_id = $3 \
                                 WHERE key = $1 AND state = $4"
                            )
                            .bind(key)
                            .bind(CHARGED)
                            .bind(&id)
                            .bind(ATTEMPTED)
                            .execute(pool)
                            .await
                            .map(drop)
                            .map_err(StoreError::from))?;
                            // Re-read: either ours or a racer's charge is there now.
                        }
                        other => {
                            return Err(
                                StoreError::Corrupt(format!("payment state {other:?}")).into()
                            );
                        }
                    }
                }
                None => {
                    let (state, charge_id, outcome) = match token {
                        "tok_ok" => (CHARGED, Some(new_charge_id()), None),
                        "tok_timeout_after" => {
                            (CHARGED, Some(new_charge_id()), Some(PaymentError::Timeout))
                        }
                        "tok_timeout_before" => (ATTEMPTED, None, Some(PaymentError::Timeout)),
                        _ => (DECLINED, None, None),
                    };
                    if self
                        .insert(key, reference, amount_cents, state, charge_id.as_deref())
                        .await?
                        && let Some(error) = outcome
                    {
                        return Err(error);
                    }
                    // Re-read what is stored: ours, or a concurrent caller's.
                }
            }
        }
        Err(PaymentError::Timeout)
    }

    /// Refunds a charge. Returns whether it was charged (not already refunded).
    ///
    /// # Errors
    /// The ledger failed.
    pub async fn refund(&self, charge_id: &str) -> Result<bool, StoreError> {
        let n = on_db!(&self.db, |pool| sqlx::query(
            "UPDATE tm_payments SET state = $2 WHERE charge_id = $1 AND state = $3"
        )
        .bind(charge_id)
        .bind(REFUNDED)
        .bind(CHARGED)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    /// Refunds whatever was charged with `key`, if anything. Returns whether a
    /// charge was refunded.
    ///
    /// # Errors
    /// The ledger failed.
    pub async fn refund_key(&self, key: &str) -> Result<bool, StoreError> {
        let n = on_db!(&self.db, |pool| sqlx::query(
            "UPDATE tm_payments SET state = $2 WHERE key = $1 AND state = $3"
        )
        .bind(key)
        .bind(REFUNDED)
        .bind(CHARGED)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    /// Every charge (refunded or not) made with `key`: at most one, by design.
    ///
    /// # Errors
    /// The ledger failed.
    pub async fn charges_for(&self, key: &str) -> Result<Vec<Charge>, StoreError> {
        self.charges_where("key", key).await
    }

    /// Every charge (refunded or not) made for `reference`.
    ///
    /// # Errors
    /// The ledger failed.
    pub async fn charges_for_reference(&self, reference: &str) -> Result<Vec<Charge>, StoreError> {
        self.charges_where("reference", reference).await
    }

    async fn charges_where(&self, column: &str, value: &str) -> Result<Vec<Charge>, StoreError> {
        debug_assert!(matches!(column, "key" | "reference"));
        let rows: Vec<(String, String, String, i64, String)> = on_db!(&self.db, |pool| {
            sqlx::query_as(&format!(
                "SELECT charge_id, key, reference, amount_cents, state FROM tm_payments \
                 WHERE {column} = $1 AND state IN ('charged', 'refunded') ORDER BY created_at_ms"
            ))
            .bind(value)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, key, reference, amount_cents, state)| Charge {
                id,
                key,
                reference,
                amount_cents,
                refunded: state == REFUNDED,
            })
            .collect())
    }

    /// How many charges stand (charged and not refunded), and how many were
    /// refunded, over the whole ledger.
    ///
    /// # Errors
    /// The ledger failed.
    pub async fn totals(&self) -> Result<(u64, u64), StoreError> {
        let (charged, refunded): (i64, i64) = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT \
                   COALESCE(SUM(CASE WHEN state = 'charged' THEN 1 ELSE 0 END), 0), \
                   COALESCE(SUM(CASE WHEN state = 'refunded' THEN 1 ELSE 0 END), 0) \
                 FROM tm_payments",
            )
            .fetch_one(pool)
            .await?
        });
        Ok((u64::try_from(charged).unwrap_or(0), u64::try_from(refunded).unwrap_or(0)))
    }
}

fn new_charge_id() -> String {
    format!("ch_{:032x}", rand::random::<u128>())
}
