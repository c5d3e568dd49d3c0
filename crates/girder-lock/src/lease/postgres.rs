//! Leases in PostgreSQL: a row per key in `girder_leases`, tokens from the durable
//! sequence `girder_lease_tokens`, every operation one statement.

use std::sync::Arc;

use girder_core::Clock;
use sqlx::PgPool;

use super::{Holder, Lease, LeaseError, LeaseStore, check_key, check_ttl, system_clock};
use crate::BackendError;

/// Advisory-lock key serialising table creation across processes (concurrent
/// `CREATE … IF NOT EXISTS` can fail on `pg_type`). ASCII of "girdlease".
const CREATE_LOCK_KEY: i64 = 0x6769_7264_6c65_6173;

/// A [`LeaseStore`] backed by PostgreSQL.
///
/// Acquire is one `INSERT … ON CONFLICT (key) DO UPDATE … WHERE expires_at_ms <= now`:
/// the row lock serialises acquirers of a key across instances, and the token of a
/// takeover is drawn with `nextval` *inside* the `DO UPDATE`, i.e. while holding the
/// row lock and after the previous holder's write committed, so it is greater than
/// every token the row ever had. Tokens survive restarts (the sequence is durable);
/// gaps are allowed (losing attempts burn a sequence value).
///
/// Release marks the row free (`expires_at_ms = 0`) instead of deleting it: a deleted
/// row would let the next `INSERT` use a token drawn *before* it saw the key, which a
/// concurrent acquire-and-release of the same key could overtake. The table therefore
/// keeps one small row per key ever used.
#[derive(Clone)]
pub struct PostgresLeaseStore {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PostgresLeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLeaseStore").finish_non_exhaustive()
    }
}

impl PostgresLeaseStore {
    /// A store on `pool` with the system clock, creating the table and sequence if absent.
    ///
    /// # Errors
    /// [`LeaseError::Backend`] (with [`BackendError::Postgres`]) if the database cannot
    /// be reached or written.
    pub async fn new(pool: PgPool) -> Result<Self, LeaseError> {
        Self::with_clock(pool, system_clock()).await
    }

    /// A store on `pool` judging expiry by `clock`, creating the table and sequence if
    /// absent.
    ///
    /// # Errors
    /// [`LeaseError::Backend`] (with [`BackendError::Postgres`]) if the database cannot
    /// be reached or written.
    pub async fn with_clock(pool: PgPool, clock: Arc<dyn Clock>) -> Result<Self, LeaseError> {
        let mut tx = pool.begin().await.map_err(BackendError::postgres)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CREATE_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(BackendError::postgres)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS girder_leases (key TEXT PRIMARY KEY, \
             holder TEXT NOT NULL, token BIGINT NOT NULL, expires_at_ms BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(BackendError::postgres)?;
        sqlx::query("CREATE SEQUENCE IF NOT EXISTS girder_lease_tokens")
            .execute(&mut *tx)
            .await
            .map_err(BackendError::postgres)?;
        tx.commit().await.map_err(BackendError::postgres)?;
        Ok(Self { pool, clock })
    }

    /// The current time and `now + ttl_ms`, both as `BIGINT`s.
    fn now_and_expiry(&self, ttl_ms: u64) -> Result<(i64, i64), LeaseError> {
        let now = self.clock.now_ms();
        let to_sql =
            |ms: u64| i64::try_from(ms).map_err(|_| LeaseError::ClockOverflow { at_ms: ms });
        Ok((to_sql(now)?, to_sql(now.saturating_add(ttl_ms))?))
    }
}

impl LeaseStore for PostgresLeaseStore {
    async fn try_acquire(&self, key: &str, ttl_ms: u64) -> Result<Option<Lease>, LeaseError> {
        check_key(key)?;
        check_ttl(ttl_ms)?;
        let holder = Holder::random();
        let (now, expires_at_ms) = self.now_and_expiry(ttl_ms)?;
        let token: Option<i64> = sqlx::query_scalar(
            "INSERT INTO girder_leases AS l (key, holder, token, expires_at_ms) \
             VALUES ($1, $2, nextval('girder_lease_tokens'), $3) \
             ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, \
               token = nextval('girder_lease_tokens'), expires_at_ms = excluded.expires_at_ms \
             WHERE l.expires_at_ms <= $4 \
             RETURNING token",
        )
        .bind(key)
        .bind(holder.to_string())
        .bind(expires_at_ms)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(BackendError::postgres)?;
        let Some(token) = token else { return Ok(None) };
        let token = u64::try_from(token).ok().filter(|&t| t > 0).ok_or_else(|| {
            BackendError::Unexpected(format!("girder_lease_tokens returned token {token}"))
        })?;
        #[allow(clippy::cast_sign_loss)] // non-negative: checked in now_and_expiry
        Ok(Some(Lease::new(Arc::from(key), holder, token, expires_at_ms as u64)))
    }

    async fn extend(&self, lease: &Lease, ttl_ms: u64) -> Result<Lease, LeaseError> {
        check_ttl(ttl_ms)?;
        let (now, expires_at_ms) = self.now_and_expiry(ttl_ms)?;
        let rows = sqlx::query(
            "UPDATE girder_leases SET expires_at_ms = $4 \
             WHERE key = $1 AND holder = $2 AND token = $3 AND expires_at_ms > $5",
        )
        .bind(lease.key())
        .bind(lease.holder().to_string())
        .bind(token_sql(lease)?)
        .bind(expires_at_ms)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(BackendError::postgres)?
        .rows_affected();
        if rows == 0 {
            return Err(LeaseError::NotHolder);
        }
        #[allow(clippy::cast_sign_loss)] // non-negative: checked in now_and_expiry
        Ok(lease.with_expiry(expires_at_ms as u64))
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let (now, _) = self.now_and_expiry(0)?;
        let rows = sqlx::query(
            "UPDATE girder_leases SET expires_at_ms = 0 \
             WHERE key = $1 AND holder = $2 AND token = $3 AND expires_at_ms > $4",
        )
        .bind(lease.key())
        .bind(lease.holder().to_string())
        .bind(token_sql(lease)?)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(BackendError::postgres)?
        .rows_affected();
        if rows == 0 { Err(LeaseError::NotHolder) } else { Ok(()) }
    }
}

fn token_sql(lease: &Lease) -> Result<i64, LeaseError> {
    // Tokens come from a BIGINT sequence; a larger one was never granted here.
    i64::try_from(lease.token()).map_err(|_| LeaseError::NotHolder)
}
