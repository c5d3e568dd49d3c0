//! A bounded retry wrapper around database transactions ("Pattern: ACID Transactions
//! for Atomicity"): begin, run the caller's statements, commit — and when the engine
//! aborts the transaction because of a concurrent one (PostgreSQL serialization
//! failure `40001` or deadlock `40P01`; SQLite `SQLITE_BUSY`/`SQLITE_LOCKED`), roll
//! back and run the whole thing again after a jittered backoff.
//!
//! Serializable isolation turns lost updates and write skew into errors; this wrapper
//! turns those errors back into success, so the caller writes plain read-then-write
//! code. The closure runs once per attempt, so it must not have effects outside the
//! transaction (no HTTP calls, no channel sends) that a retry would repeat.
//!
//! `with_pg_transaction` and `with_sqlite_transaction` take bodies that fail
//! only with `sqlx::Error`; `run_pg_transaction` and `run_sqlite_transaction` are
//! the general forms: the body's own error type (a refusal rolls back, an optimistic
//! conflict can be retried too), a caller-chosen retry test, and the attempt count.
//! `pg_transaction_once` and `sqlite_transaction_once` are one attempt of the same
//! (begin, body, commit, roll back at once on any error), for callers whose unit of
//! retry is larger than the transaction: an optimistic read phase that must run
//! before `BEGIN` and be repeated with it. They retry that unit with
//! [`crate::retry::retry_numbered`], which also tells each attempt its number (to
//! record) and reports the attempts made however the loop ends.
//!
//! The closure returns a boxed future borrowing the connection. Values it captures
//! must be cloned into each attempt's future (`let key = key.clone();` before
//! `Box::pin(async move { … })`), because the future may outlive nothing but the
//! connection borrow.

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use std::future::Future;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use std::pin::Pin;

use thiserror::Error;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::retry::{RetryError, RetryPolicy};

/// The future a transaction body returns: borrows the connection for `'c`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub type TxnFuture<'c, T> = TxnBodyFuture<'c, T, sqlx::Error>;

/// The future a transaction body with its own error type `E` returns.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub type TxnBodyFuture<'c, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>;

/// Why a transaction did not commit.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TxnError {
    /// Every attempt was aborted by a concurrent transaction (serialization failure,
    /// deadlock, busy database); the policy's attempts are spent.
    #[error("transaction aborted by contention {attempts} times; giving up")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
    },
    /// A database error that retrying cannot fix (or an error of the body's own); the
    /// source says which.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[error("database")]
    Db(#[from] sqlx::Error),
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl TxnError {
    fn from_retry(err: RetryError<sqlx::Error>) -> Self {
        match err {
            RetryError::Exhausted { attempts, .. } => Self::RetriesExhausted { attempts },
            RetryError::Failed(err) => Self::Db(err),
        }
    }
}

/// PostgreSQL isolation levels a transaction can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Isolation {
    /// Each statement sees data committed before it began; row locks taken by
    /// `UPDATE`/`SELECT … FOR UPDATE` re-check rows at their latest version.
    ReadCommitted,
    /// One snapshot for the whole transaction; concurrent writes to read rows abort.
    RepeatableRead,
    /// As if transactions ran one at a time; anything else aborts with `40001`.
    #[default]
    Serializable,
}

impl Isolation {
    /// The `BEGIN` statement that starts a transaction at this level.
    #[must_use]
    pub const fn begin_statement(self) -> &'static str {
        match self {
            Self::ReadCommitted => "BEGIN ISOLATION LEVEL READ COMMITTED",
            Self::RepeatableRead => "BEGIN ISOLATION LEVEL REPEATABLE READ",
            Self::Serializable => "BEGIN ISOLATION LEVEL SERIALIZABLE",
        }
    }
}

/// Whether a PostgreSQL error means "a concurrent transaction won; run again":
/// SQLSTATE `40001` (serialization_failure) or `40P01` (deadlock_detected).
#[cfg(feature = "postgres")]
#[must_use]
pub fn is_pg_retryable(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "40001" || code == "40P01")
}

/// Whether a SQLite error means "another connection holds the lock; run again":
/// primary result code 5 (`SQLITE_BUSY`, including `BUSY_SNAPSHOT`) or 6
/// (`SQLITE_LOCKED`). sqlx reports the extended code, whose low byte is the primary.
#[cfg(feature = "sqlite")]
#[must_use]
pub fn is_sqlite_retryable(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .and_then(|code| code.parse::<i64>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Runs `body` in a PostgreSQL transaction at `isolation` and commits, retrying the
/// whole transaction on serialization failures and deadlocks, at most
/// `policy.max_attempts` times in all.
///
/// A body error that is not retryable rolls back and returns at once. For bodies
/// with errors of their own (a refusal that must roll back, an optimistic conflict
/// to retry) and for the attempt count, use `run_pg_transaction`.
///
/// # Errors
/// [`TxnError::RetriesExhausted`] when every attempt was aborted by contention;
/// [`TxnError::Db`] for any other database error.
#[cfg(feature = "postgres")]
pub async fn with_pg_transaction<T, F>(
    pool: &sqlx::PgPool,
    policy: &RetryPolicy,
    isolation: Isolation,
    body: F,
) -> Result<T, TxnError>
where
    F: for<'c> FnMut(&'c mut sqlx::PgConnection) -> TxnFuture<'c, T>,
{
    run_pg_transaction(pool, policy, isolation, is_pg_retryable, body)
        .await
        .map(|(value, _)| value)
        .map_err(TxnError::from_retry)
}

/// The general form of `with_pg_transaction`: the body fails with the caller's
/// error type `E` (which database errors convert into), any body error rolls the
/// transaction back, and `is_retryable` decides which errors run the whole
/// transaction again (typically [`is_pg_retryable`] on database errors, plus the
/// caller's own conflicts). Returns the value and the attempts it took.
///
/// # Errors
/// [`RetryError::Failed`] with the first non-retryable error;
/// [`RetryError::Exhausted`] with the last error when the attempts are spent.
#[cfg(feature = "postgres")]
pub async fn run_pg_transaction<T, E, F>(
    pool: &sqlx::PgPool,
    policy: &RetryPolicy,
    isolation: Isolation,
    is_retryable: impl Fn(&E) -> bool,
    mut body: F,
) -> Result<(T, u32), RetryError<E>>
where
    E: From<sqlx::Error>,
    F: for<'c> FnMut(&'c mut sqlx::PgConnection) -> TxnBodyFuture<'c, T, E>,
{
    let max = policy.attempts();
    let mut attempt = 1;
    loop {
        match pg_transaction_once(pool, isolation, &mut body).await {
            Ok(value) => return Ok((value, attempt)),
            Err(err) if !is_retryable(&err) => return Err(RetryError::Failed(err)),
            Err(last) if attempt >= max => {
                return Err(RetryError::Exhausted { attempts: attempt, last });
            }
            Err(_) => {
                policy.backoff(attempt).await;
                attempt += 1;
            }
        }
    }
}

/// One attempt of `run_pg_transaction`, without retrying: begins at `isolation`, runs
/// `body`, commits. Any error — from `BEGIN`, the body or the commit — is returned as
/// it is, after the transaction has been rolled back, so the caller can back off
/// without holding a row lock.
///
/// # Errors
/// The body's error, or a database error converted into `E`.
#[cfg(feature = "postgres")]
pub async fn pg_transaction_once<T, E, F>(
    pool: &sqlx::PgPool,
    isolation: Isolation,
    body: F,
) -> Result<T, E>
where
    E: From<sqlx::Error>,
    F: for<'c> FnOnce(&'c mut sqlx::PgConnection) -> TxnBodyFuture<'c, T, E>,
{
    let mut tx = pool.begin_with(isolation.begin_statement()).await?;
    match body(&mut tx).await {
        // Under SERIALIZABLE the commit itself may be the statement that fails.
        Ok(value) => tx.commit().await.map(|()| value).map_err(E::from),
        Err(err) => {
            // Roll back now, releasing row locks before any backoff. If this fails
            // the connection is broken and the pool discards it.
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

/// Runs `body` in a SQLite transaction begun with `BEGIN IMMEDIATE` and commits,
/// retrying the whole transaction when the database is busy or locked, at most
/// `policy.max_attempts` times in all.
///
/// `BEGIN IMMEDIATE` takes the write lock up front: a deferred transaction that reads
/// and then writes can fail its upgrade with `SQLITE_BUSY` halfway through, after the
/// caller has already acted on what it read. With the lock held from the start,
/// SQLite transactions are serializable. For bodies with errors of their own and for
/// the attempt count, use `run_sqlite_transaction`.
///
/// # Errors
/// [`TxnError::RetriesExhausted`] when every attempt found the database busy;
/// [`TxnError::Db`] for any other database error.
#[cfg(feature = "sqlite")]
pub async fn with_sqlite_transaction<T, F>(
    pool: &sqlx::SqlitePool,
    policy: &RetryPolicy,
    body: F,
) -> Result<T, TxnError>
where
    F: for<'c> FnMut(&'c mut sqlx::SqliteConnection) -> TxnFuture<'c, T>,
{
    run_sqlite_transaction(pool, policy, is_sqlite_retryable, body)
        .await
        .map(|(value, _)| value)
        .map_err(TxnError::from_retry)
}

/// The general form of `with_sqlite_transaction`, as `run_pg_transaction` is of
/// `with_pg_transaction`: caller's error type, rollback on any body error,
/// caller-chosen retries, attempts reported.
///
/// # Errors
/// [`RetryError::Failed`] with the first non-retryable error;
/// [`RetryError::Exhausted`] with the last error when the attempts are spent.
#[cfg(feature = "sqlite")]
pub async fn run_sqlite_transaction<T, E, F>(
    pool: &sqlx::SqlitePool,
    policy: &RetryPolicy,
    is_retryable: impl Fn(&E) -> bool,
    mut body: F,
) -> Result<(T, u32), RetryError<E>>
where
    E: From<sqlx::Error>,
    F: for<'c> FnMut(&'c mut sqlx::SqliteConnection) -> TxnBodyFuture<'c, T, E>,
{
    let max = policy.attempts();
    let mut attempt = 1;
    loop {
        match sqlite_transaction_once(pool, &mut body).await {
            Ok(value) => return Ok((value, attempt)),
            Err(err) if !is_retryable(&err) => return Err(RetryError::Failed(err)),
            Err(last) if attempt >= max => {
                return Err(RetryError::Exhausted { attempts: attempt, last });
            }
            Err(_) => {
                policy.backoff(attempt).await;
                attempt += 1;
            }
        }
    }
}

/// One attempt of `run_sqlite_transaction`, without retrying: `BEGIN IMMEDIATE`, runs
/// `body`, commits. Any error is returned as it is, after the transaction has been
/// rolled back, so the write lock is free before the caller backs off.
///
/// # Errors
/// The body's error, or a database error converted into `E`.
#[cfg(feature = "sqlite")]
pub async fn sqlite_transaction_once<T, E, F>(pool: &sqlx::SqlitePool, body: F) -> Result<T, E>
where
    E: From<sqlx::Error>,
    F: for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> TxnBodyFuture<'c, T, E>,
{
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    match body(&mut tx).await {
        Ok(value) => tx.commit().await.map(|()| value).map_err(E::from),
        Err(err) => {
            // Release the write lock now (see pg_transaction_once).
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum BodyError {
        Refused,
        Db(sqlx::Error),
    }

    impl From<sqlx::Error> for BodyError {
        fn from(e: sqlx::Error) -> Self {
            Self::Db(e)
        }
    }

    async fn count(pool: &sqlx::SqlitePool) -> i64 {
        sqlx::query_scalar("SELECT n FROM counter").fetch_one(pool).await.unwrap()
    }

    #[tokio::test]
    async fn one_attempt_commits_or_rolls_back_and_returns_the_body_error() {
        // One connection, so every statement sees the same in-memory database.
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE counter (n INTEGER NOT NULL)").execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO counter VALUES (0)").execute(&pool).await.unwrap();

        let value = sqlite_transaction_once(&pool, |tx| {
            Box::pin(async move {
                sqlx::query("UPDATE counter SET n = n + 1").execute(&mut *tx).await?;
                Ok::<_, BodyError>(7)
            })
        })
        .await
        .unwrap();
        assert_eq!(value, 7);
        assert_eq!(count(&pool).await, 1);

        let refused: Result<(), _> = sqlite_transaction_once(&pool, |tx| {
            Box::pin(async move {
                sqlx::query("UPDATE counter SET n = n + 100").execute(&mut *tx).await?;
                Err(BodyError::Refused)
            })
        })
        .await;
        assert!(matches!(refused, Err(BodyError::Refused)), "{refused:?}");
        assert_eq!(count(&pool).await, 1, "a refused attempt's write survived");

        let failed: Result<(), _> = sqlite_transaction_once(&pool, |tx| {
            Box::pin(async move {
                sqlx::query("UPDATE counter SET n = n + 100").execute(&mut *tx).await?;
                sqlx::query("UPDATE nowhere SET n = 1").execute(&mut *tx).await?;
                Ok(())
            })
        })
        .await;
        assert!(
            matches!(&failed, Err(BodyError::Db(e)) if e.as_database_error().is_some()),
            "{failed:?}"
        );
        assert_eq!(count(&pool).await, 1, "a failed attempt's write survived");
    }
}
