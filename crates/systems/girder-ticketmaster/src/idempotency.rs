//! Idempotency keys for confirmations (Pattern: Idempotency Keys): the first
//! request with a key inserts a `pending` record (atomic insert-if-absent); a
//! concurrent duplicate sees `pending` and is told to retry (409
//! `confirmation-in-progress`, no waiting); a finished request stores its status
//! and body, which every later request with the key gets back verbatim. An
//! outcome that may change on retry (a payment timeout, a database failure) makes
//! the record `retryable`: the next request with the key takes it over and runs
//! again, which is safe because the payment provider is idempotent on the same
//! key.
//!
//! A `pending` record older than `pending_ttl_ms` is presumed orphaned (its
//! instance died mid-request) and may be taken over the same way.

use girder_sql::{Db, on_db};

use super::store::StoreError;

const PENDING: &str = "pending";
const RETRYABLE: &str = "retryable";
const COMPLETED: &str = "completed";

/// `(reservation_id, user_name, state, status, body, updated_at_ms)`.
type RecordRow = (String, String, String, Option<i32>, Option<String>, i64);

/// What a request holding a key should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The request owns the key: run the confirmation.
    Proceed,
    /// Another request with this key is running.
    InProgress,
    /// The key finished before: answer exactly this.
    Replay {
        /// HTTP status.
        status: u16,
        /// JSON body.
        body: String,
    },
    /// The key was used for a different reservation or user.
    Mismatch,
}

/// The idempotency records, in the shared database.
#[derive(Debug, Clone)]
pub struct Idempotency {
    db: Db,
    pending_ttl_ms: i64,
}

impl Idempotency {
    /// Records in `db`; pending records older than `pending_ttl_ms` are orphans.
    #[must_use]
    pub fn new(db: Db, pending_ttl_ms: u64) -> Self {
        Self { db, pending_ttl_ms: i64::try_from(pending_ttl_ms).unwrap_or(i64::MAX) }
    }

    /// Claims `key` for confirming `reservation_id` as `user`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn begin(
        &self,
        key: &str,
        reservation_id: &str,
        user: &str,
        now_ms: i64,
    ) -> Result<Begin, StoreError> {
        let inserted = on_db!(&self.db, |pool| sqlx::query(
            "INSERT INTO tm_idempotency (key, reservation_id, user_name, state, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING"
        )
        .bind(key)
        .bind(reservation_id)
        .bind(user)
        .bind(PENDING)
        .bind(now_ms)
        .execute(pool)
        .await?
        .rows_affected());
        if inserted == 1 {
            return Ok(Begin::Proceed);
        }
        let row: Option<RecordRow> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT reservation_id, user_name, state, status, body, updated_at_ms \
                     FROM tm_idempotency WHERE key = $1",
            )
            .bind(key)
            .fetch_optional(pool)
            .await?
        });
        // Records are never deleted, so a conflicting insert means a row exists.
        let Some((stored_reservation, stored_user, state, status, body, updated_at_ms)) = row
        else {
            return Ok(Begin::InProgress);
        };
        if stored_reservation != reservation_id || stored_user != user {
            return Ok(Begin::Mismatch);
        }
        match state.as_str() {
            COMPLETED => {
                let status = status
                    .and_then(|s| u16::try_from(s).ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("idempotency {key} status")))?;
                Ok(Begin::Replay { status, body: body.unwrap_or_default() })
            }
            RETRYABLE => Ok(self.take_over(key, RETRYABLE, updated_at_ms, now_ms).await?),
            PENDING if updated_at_ms.saturating_add(self.pending_ttl_ms) <= now_ms => {
                Ok(self.take_over(key, PENDING, updated_at_ms, now_ms).await?)
            }
            _ => Ok(Begin::InProgress),
        }
    }

    /// Moves the record back to `pending` if it is still as read; one racer wins.
    async fn take_over(
        &self,
        key: &str,
        state: &str,
        updated_at_ms: i64,
        now_ms: i64,
    ) -> Result<Begin, StoreError> {
        let n = on_db!(&self.db, |pool| sqlx::query(
            "UPDATE tm_idempotency SET state = $2, updated_at_ms = $3 \
             WHERE key = $1 AND state = $4 AND updated_at_ms = $5"
        )
        .bind(key)
        .bind(PENDING)
        .bind(now_ms)
        .bind(state)
        .bind(updated_at_ms)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(if n == 1 { Begin::Proceed } else { Begin::InProgress })
    }

    /// Stores the final answer for `key`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn complete(
        &self,
        key: &str,
        status: u16,
        body: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| sqlx::query(
            "UPDATE tm_idempotency SET state = $2, status = $3, body = $4, updated_at_ms = $5 \
             WHERE key = $1"
        )
        .bind(key)
        .bind(COMPLETED)
        .bind(i32::from(status))
        .bind(body)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Lets the next request with `key` run again.
    ///
    /// # Errors
    /// Database failures.
    pub async fn retryable(&self, key: &str, now_ms: i64) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| sqlx::query(
            "UPDATE tm_idempotency SET state = $2, updated_at_ms = $3 WHERE key = $1 AND state = $4"
        )
        .bind(key)
        .bind(RETRYABLE)
        .bind(now_ms)
        .bind(PENDING)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }
}
