//! The storage side of fencing: remember the highest fencing token seen per resource
//! and refuse writes that present a lower one (see [`crate::lease`] for why a TTL lock
//! needs this).
//!
//! [`MemoryFence`] guards in-process state; [`fence_postgres`] and [`fence_sqlite`]
//! check a token *inside the caller's own transaction*, against the table
//! `girder_fences`. The guarded write and the fence check must be in the same
//! transaction: the fence row stays locked until commit, so a holder with an older
//! token cannot slip its write in between, and a rolled-back write leaves no record.

#[cfg(feature = "postgres")]
use sqlx::PgConnection;
#[cfg(feature = "sqlite")]
use sqlx::SqliteConnection;

use std::collections::HashMap;

use parking_lot::Mutex;
use thiserror::Error;

use crate::BackendError;

/// Why a fenced write was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FenceError {
    /// A newer holder has already written: the presented token is below the highest
    /// recorded. The write must be abandoned (and the caller's transaction rolled back).
    #[error("stale fencing token {presented}: the resource has seen {highest}")]
    Stale {
        /// The token the writer presented.
        presented: u64,
        /// The highest token the resource has accepted.
        highest: u64,
    },
    /// The token does not fit the SQL `BIGINT` column (above `i64::MAX`); no lease store
    /// in this crate grants one.
    #[error("fencing token {0} beyond BIGINT")]
    TokenOutOfRange(u64),
    /// [`MemoryFence`] tracks `max_resources` resources and cannot add another.
    #[error("fence full ({max_resources} resources)")]
    Full {
        /// The configured bound.
        max_resources: usize,
    },
    /// The database failed; the source says how.
    #[error("fence backend")]
    Backend(#[from] BackendError),
}

/// In-process fence: the highest token accepted per resource.
///
/// Entries are never pruned — forgetting a resource's highest token would let a stale
/// holder through — so the number of resources is bounded by `max_resources`.
#[derive(Debug)]
pub struct MemoryFence {
    highest: Mutex<HashMap<String, u64>>,
    max_resources: usize,
}

impl Default for MemoryFence {
    /// A fence for up to 100 000 resources.
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl MemoryFence {
    /// A fence tracking at most `max_resources` resources.
    #[must_use]
    pub fn new(max_resources: usize) -> Self {
        Self { highest: Mutex::new(HashMap::new()), max_resources }
    }

    /// Accepts `token` for `resource` if it is at least the highest accepted so far
    /// (equal: the same holder writing again) and records it; refuses a lower one.
    ///
    /// Call it under the same lock as the write it guards, or the check can pass and
    /// the write land after a newer holder's.
    ///
    /// # Errors
    /// [`FenceError::Stale`] for a lower token, [`FenceError::Full`] for a new resource
    /// when `max_resources` are tracked.
    pub fn check_and_record(&self, resource: &str, token: u64) -> Result<(), FenceError> {
        let mut highest = self.highest.lock();
        if let Some(seen) = highest.get_mut(resource) {
            if token < *seen {
                return Err(FenceError::Stale { presented: token, highest: *seen });
            }
            *seen = token;
            return Ok(());
        }
        if highest.len() >= self.max_resources {
            return Err(FenceError::Full { max_resources: self.max_resources });
        }
        highest.insert(resource.to_owned(), token);
        Ok(())
    }

    /// The highest token accepted for `resource`, if any.
    #[must_use]
    pub fn highest(&self, resource: &str) -> Option<u64> {
        self.highest.lock().get(resource).copied()
    }
}

/// The upsert both SQL fences run: it records the token unless a higher one is stored,
/// in which case no row is affected.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
const FENCE_UPSERT: &str = "INSERT INTO girder_fences (resource, token) VALUES ($1, $2) \
     ON CONFLICT (resource) DO UPDATE SET token = excluded.token \
     WHERE girder_fences.token <= excluded.token";

#[cfg(any(feature = "postgres", feature = "sqlite"))]
const FENCE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS girder_fences (resource TEXT PRIMARY KEY, token BIGINT NOT NULL)";

#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn token_sql(token: u64) -> Result<i64, FenceError> {
    i64::try_from(token).map_err(|_| FenceError::TokenOutOfRange(token))
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn stale(presented: u64, highest: i64) -> FenceError {
    FenceError::Stale { presented, highest: u64::try_from(highest).unwrap_or(0) }
}

/// Creates `girder_fences` in PostgreSQL if absent (serialised by an advisory lock, as
/// concurrent `CREATE TABLE IF NOT EXISTS` can race).
///
/// # Errors
/// [`FenceError::Backend`] if the database fails.
#[cfg(feature = "postgres")]
pub async fn create_fence_table_postgres(pool: &sqlx::PgPool) -> Result<(), FenceError> {
    /// ASCII of "girdfenc".
    const CREATE_LOCK_KEY: i64 = 0x6769_7264_6665_6e63;
    let mut tx = pool.begin().await.map_err(BackendError::postgres)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CREATE_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(BackendError::postgres)?;
    sqlx::query(FENCE_TABLE).execute(&mut *tx).await.map_err(BackendError::postgres)?;
    tx.commit().await.map_err(BackendError::postgres)?;
    Ok(())
}

/// Checks and records `token` for `resource` on `conn`, which should be inside the
/// transaction that performs the guarded write (pass `&mut *tx`).
///
/// The upsert locks the fence row until the transaction ends, so concurrent writers of
/// one resource serialise and the highest token wins. Under `READ COMMITTED` (the
/// default) the check sees the latest committed token.
///
/// # Errors
/// [`FenceError::Stale`] when a higher token is recorded (roll the transaction back),
/// [`FenceError::TokenOutOfRange`] and [`FenceError::Backend`].
#[cfg(feature = "postgres")]
pub async fn fence_postgres(
    conn: &mut PgConnection,
    resource: &str,
    token: u64,
) -> Result<(), FenceError> {
    let token_sql = token_sql(token)?;
    let rows = sqlx::query(FENCE_UPSERT)
        .bind(resource)
        .bind(token_sql)
        .execute(&mut *conn)
        .await
        .map_err(BackendError::postgres)?
        .rows_affected();
    if rows > 0 {
        return Ok(());
    }
    // The upsert left the row locked, so this reads the value that beat us.
    let highest: i64 = sqlx::query_scalar("SELECT token FROM girder_fences WHERE resource = $1")
        .bind(resource)
        .fetch_one(&mut *conn)
        .await
        .map_err(BackendError::postgres)?;
    Err(stale(token, highest))
}

/// Creates `girder_fences` in SQLite if absent.
///
/// # Errors
/// [`FenceError::Backend`] if the database fails.
#[cfg(feature = "sqlite")]
pub async fn create_fence_table_sqlite(conn: &mut SqliteConnection) -> Result<(), FenceError> {
    sqlx::query(FENCE_TABLE).execute(conn).await.map_err(BackendError::sqlite)?;
    Ok(())
}

/// Checks and records `token` for `resource` on `conn`, which should be inside the
/// transaction that performs the guarded write (SQLite serialises writers, so open it
/// with `BEGIN IMMEDIATE` to avoid busy upgrades).
///
/// # Errors
/// [`FenceError::Stale`] when a higher token is recorded (roll the transaction back),
/// [`FenceError::TokenOutOfRange`] and [`FenceError::Backend`].
#[cfg(feature = "sqlite")]
pub async fn fence_sqlite(
    conn: &mut SqliteConnection,
    resource: &str,
    token: u64,
) -> Result<(), FenceError> {
    let token_sql = token_sql(token)?;
    let rows = sqlx::query(FENCE_UPSERT)
        .bind(resource)
        .bind(token_sql)
        .execute(&mut *conn)
        .await
        .map_err(BackendError::sqlite)?
        .rows_affected();
    if rows > 0 {
        return Ok(());
    }
    let highest: i64 = sqlx::query_scalar("SELECT token FROM girder_fences WHERE resource = $1")
        .bind(resource)
        .fetch_one(&mut *conn)
        .await
        .map_err(BackendError::sqlite)?;
    Err(stale(token, highest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_fence_accepts_equal_and_higher_and_refuses_lower() {
        let fence = MemoryFence::new(10);
        fence.check_and_record("seat-1", 5).unwrap();
        fence.check_and_record("seat-1", 5).unwrap();
        fence.check_and_record("seat-1", 7).unwrap();
        assert_eq!(
            fence.check_and_record("seat-1", 6),
            Err(FenceError::Stale { presented: 6, highest: 7 })
        );
        assert_eq!(fence.highest("seat-1"), Some(7), "a refused token is not recorded");
        // Resources are independent.
        fence.check_and_record("seat-2", 1).unwrap();
        assert_eq!(fence.highest("seat-2"), Some(1));
    }

    #[test]
    fn memory_fence_is_bounded() {
        let fence = MemoryFence::new(1);
        fence.check_and_record("a", 1).unwrap();
        assert_eq!(fence.check_and_record("b", 1), Err(FenceError::Full { max_resources: 1 }));
        fence.check_and_record("a", 2).unwrap();
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_fence_refuses_stale_tokens_and_rolls_back_with_the_write() {
        use sqlx::{Connection, Row};
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        create_fence_table_sqlite(&mut conn).await.unwrap();
        create_fence_table_sqlite(&mut conn).await.unwrap();
        sqlx::query("CREATE TABLE seats (id TEXT PRIMARY KEY, owner TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();

        // A guarded write: fence check and write in one transaction.
        async fn write(
            conn: &mut SqliteConnection,
            token: u64,
            owner: &str,
        ) -> Result<(), FenceError> {
            let mut tx = conn.begin().await.unwrap();
            fence_sqlite(&mut tx, "seat-1", token).await?;
            sqlx::query("INSERT OR REPLACE INTO seats (id, owner) VALUES ('seat-1', $1)")
                .bind(owner)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            Ok(())
        }
        write(&mut conn, 1, "first").await.unwrap();
        write(&mut conn, 2, "second").await.unwrap();
        write(&mut conn, 2, "second again").await.unwrap();
        assert_eq!(
            write(&mut conn, 1, "paused first").await,
            Err(FenceError::Stale { presented: 1, highest: 2 })
        );
        let owner: String =
            sqlx::query("SELECT owner FROM seats").fetch_one(&mut conn).await.unwrap().get(0);
        assert_eq!(owner, "second again");

        // A fenced transaction that rolls back leaves no record of its token.
        let mut tx = conn.begin().await.unwrap();
        fence_sqlite(&mut tx, "seat-1", 9).await.unwrap();
        tx.rollback().await.unwrap();
        write(&mut conn, 3, "third").await.unwrap();
        assert_eq!(
            fence_sqlite(&mut conn, "seat-1", u64::MAX).await,
            Err(FenceError::TokenOutOfRange(u64::MAX))
        );
    }
}
