//! Bounded retries with full-jitter exponential backoff, for the conflicts optimistic
//! concurrency ("Pattern: Optimistic Locking with Version Fields") and serializable
//! transactions ("Pattern: ACID Transactions for Atomicity") report by design.
//!
//! [`retry`] retries any async operation; [`retry_numbered`] is the same loop for
//! callers that record the attempt (each attempt is told its number, and the attempts
//! made are reported however the loop ends); [`update_with_retry`] is the
//! read-modify-compare-and-set loop on a [`VersionStore`]. All count attempts, so
//! callers (and the lab) can see how much contention cost.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use thiserror::Error;

use crate::version::{VersionError, VersionStore, Versioned};

/// How often and how patiently to retry.
///
/// The delay before retry `n` (1-based) is uniform in `0..=min(max_delay_ms,
/// base_delay_ms * 2^(n-1))` ("full jitter"): contenders that collided once spread
/// out instead of colliding again in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; 0 is treated as 1.
    pub max_attempts: u32,
    /// The backoff cap before the first retry, in milliseconds.
    pub base_delay_ms: u64,
    /// The largest backoff cap, in milliseconds.
    pub max_delay_ms: u64,
}

impl Default for RetryPolicy {
    /// 10 attempts, 2 ms base, 200 ms cap: at most about a second of waiting.
    fn default() -> Self {
        Self { max_attempts: 10, base_delay_ms: 2, max_delay_ms: 200 }
    }
}

impl RetryPolicy {
    /// Attempts allowed, never less than 1.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }

    /// The largest delay before retry number `retry` (1-based): the jitter's upper bound.
    #[must_use]
    pub fn delay_cap_ms(&self, retry: u32) -> u64 {
        let shift = retry.saturating_sub(1).min(63);
        self.base_delay_ms.saturating_mul(1_u64 << shift).min(self.max_delay_ms)
    }

    /// A random delay for retry number `retry` (1-based), within [`Self::delay_cap_ms`].
    #[must_use]
    pub fn delay_ms(&self, retry: u32) -> u64 {
        let cap = self.delay_cap_ms(retry);
        if cap == 0 { 0 } else { rand::rng().random_range(0..=cap) }
    }

    /// Sleeps (on tokio's clock) before retry number `retry`.
    pub(crate) async fn backoff(&self, retry: u32) {
        let delay_ms = self.delay_ms(retry);
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
    }
}

/// Why [`retry`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RetryError<E> {
    /// Every attempt failed with a retryable error; `last` is the final one.
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: E,
    },
    /// An attempt failed with an error that retrying cannot fix.
    #[error("{0}")]
    Failed(E),
}

/// Runs `f` until it succeeds, fails with an error `is_retryable` rejects, or the
/// policy's attempts are spent, sleeping a jittered backoff between attempts.
///
/// # Errors
/// [`RetryError::Failed`] with the first non-retryable error, or
/// [`RetryError::Exhausted`] with the last error once the attempts are spent.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    is_retryable: impl Fn(&E) -> bool,
    f: F,
) -> Result<T, RetryError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_counted(policy, is_retryable, f).await.map(|(value, _)| value)
}

/// [`retry`], also returning how many attempts the success took (1 = no retry).
///
/// # Errors
/// As [`retry`].
pub async fn retry_counted<T, E, F, Fut>(
    policy: &RetryPolicy,
    is_retryable: impl Fn(&E) -> bool,
    mut f: F,
) -> Result<(T, u32), RetryError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let Attempted { result, attempts } = retry_numbered(policy, is_retryable, |_| f()).await;
    result.map(|value| (value, attempts))
}

/// How a [`retry_numbered`] loop ended, and the attempts it made either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempted<T, E> {
    /// The value, or why the loop stopped.
    pub result: Result<T, RetryError<E>>,
    /// Attempts made, the last one included (1 = no retry), whatever the result.
    pub attempts: u32,
}

/// The loop behind [`retry`] and [`retry_counted`], for callers that record the
/// attempt: `f` is given the attempt's number (1-based), and the attempts made come
/// back with the result even when it is an error — a non-retryable failure on the
/// third attempt reports 3, which [`RetryError::Failed`] alone cannot say.
///
/// Each attempt is a whole unit of work: a caller whose unit is "read, then one
/// transaction" (optimistic locking) runs both in `f`, so a conflict re-reads, and one
/// policy bounds the pair.
pub async fn retry_numbered<T, E, F, Fut>(
    policy: &RetryPolicy,
    is_retryable: impl Fn(&E) -> bool,
    mut f: F,
) -> Attempted<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let max = policy.attempts();
    let mut attempt = 1;
    loop {
        let result = match f(attempt).await {
            Ok(value) => Ok(value),
            Err(err) if !is_retryable(&err) => Err(RetryError::Failed(err)),
            Err(last) if attempt >= max => Err(RetryError::Exhausted { attempts: attempt, last }),
            Err(_) => {
                policy.backoff(attempt).await;
                attempt += 1;
                continue;
            }
        };
        return Attempted { result, attempts: attempt };
    }
}

/// A successful [`update_with_retry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated {
    /// The value and version now stored.
    pub versioned: Versioned,
    /// Attempts it took (1 = no conflict).
    pub attempts: u32,
}

/// Why [`update_with_retry`] failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UpdateError<E> {
    /// The key holds no value (or it was deleted while retrying).
    #[error("no value under this key")]
    NotFound,
    /// The update function refused the current value; nothing was written.
    #[error("update refused: {0}")]
    Refused(E),
    /// Every attempt lost a compare-and-set race.
    #[error("still conflicting after {attempts} attempts")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(VersionError),
}

/// Read-modify-write on `key` without a lock: reads the value and its version,
/// computes the new value with `update`, and stores it only if the version is
/// unchanged; on a conflict it re-reads and tries again (`update` runs once per
/// attempt, on the value that attempt read), bounded by `policy`.
///
/// Guarantee: no lost update — every successful call's `update` saw the value the
/// previous successful call wrote.
///
/// # Errors
/// [`UpdateError::NotFound`] if the key is absent, [`UpdateError::Refused`] if
/// `update` returns an error, [`UpdateError::Exhausted`] when conflicts outlast the
/// policy, [`UpdateError::Store`] when the store fails.
pub async fn update_with_retry<S, E>(
    store: &S,
    key: &str,
    policy: &RetryPolicy,
    mut update: impl FnMut(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Updated, UpdateError<E>>
where
    S: VersionStore + ?Sized,
{
    let max = policy.attempts();
    let mut attempt = 1;
    loop {
        let current = store.get(key).await.map_err(UpdateError::Store)?;
        let current = current.ok_or(UpdateError::NotFound)?;
        let next = update(&current.value).map_err(UpdateError::Refused)?;
        match store.compare_and_set(key, current.version, &next).await {
            Ok(versioned) => return Ok(Updated { versioned, attempts: attempt }),
            Err(VersionError::Conflict { current: None, .. }) => {
                return Err(UpdateError::NotFound);
            }
            Err(VersionError::Conflict { .. }) if attempt < max => {
                policy.backoff(attempt).await;
                attempt += 1;
            }
            Err(VersionError::Conflict { .. }) => {
                return Err(UpdateError::Exhausted { attempts: attempt });
            }
            Err(err) => return Err(UpdateError::Store(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn caps_double_up_to_the_maximum() {
        let policy = RetryPolicy { max_attempts: 5, base_delay_ms: 10, max_delay_ms: 75 };
        let caps: Vec<u64> = (1..=5).map(|n| policy.delay_cap_ms(n)).collect();
        assert_eq!(caps, [10, 20, 40, 75, 75]);
        assert_eq!(policy.delay_cap_ms(u32::MAX), 75, "huge retry counts saturate");
        for n in 1..=5 {
            for _ in 0..100 {
                assert!(policy.delay_ms(n) <= policy.delay_cap_ms(n));
            }
        }
        let zero = RetryPolicy { max_attempts: 0, base_delay_ms: 0, max_delay_ms: 0 };
        assert_eq!(zero.attempts(), 1);
        assert_eq!(zero.delay_ms(3), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_and_counts_attempts() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy { max_attempts: 5, base_delay_ms: 100, max_delay_ms: 1_000 };
        let started = tokio::time::Instant::now();
        let result = retry_counted(
            &policy,
            |e: &&str| *e == "busy",
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n < 3 { Err("busy") } else { Ok(n) }
            },
        )
        .await;
        assert_eq!(result, Ok((3, 3)));
        // Two backoffs, capped at 100 ms and 200 ms.
        assert!(started.elapsed() <= Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn exhaustion_is_bounded_and_keeps_the_last_error() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy { max_attempts: 4, base_delay_ms: 1, max_delay_ms: 5 };
        let result: Result<(), _> =
            retry(&policy, |_: &u32| true, || async { Err(calls.fetch_add(1, Ordering::SeqCst)) })
                .await;
        assert_eq!(result, Err(RetryError::Exhausted { attempts: 4, last: 3 }));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn numbered_attempts_are_told_their_number_and_counted_on_failure() {
        let mut seen = Vec::new();
        let policy = RetryPolicy { max_attempts: 5, base_delay_ms: 1, max_delay_ms: 5 };
        // Two retryable failures, then one retrying cannot fix: three attempts made.
        let run: Attempted<(), &str> = retry_numbered(
            &policy,
            |e: &&str| *e == "busy",
            |attempt| {
                seen.push(attempt);
                async move { Err(if attempt < 3 { "busy" } else { "refused" }) }
            },
        )
        .await;
        assert_eq!(run, Attempted { result: Err(RetryError::Failed("refused")), attempts: 3 });
        assert_eq!(seen, [1, 2, 3]);

        let run: Attempted<(), ()> =
            retry_numbered(&policy, |_: &()| true, |_| async { Err(()) }).await;
        assert_eq!(run.result, Err(RetryError::Exhausted { attempts: 5, last: () }));
        assert_eq!(run.attempts, 5, "bounded by the policy");

        let run = retry_numbered(
            &policy,
            |_: &()| true,
            |attempt| async move { if attempt == 2 { Ok(attempt) } else { Err(()) } },
        )
        .await;
        assert_eq!(run, Attempted { result: Ok(2), attempts: 2 });
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_errors_pass_through_at_once() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry(
            &RetryPolicy::default(),
            |e: &&str| *e == "busy",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("broken")
            },
        )
        .await;
        assert_eq!(result, Err(RetryError::Failed("broken")));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

#[cfg(test)]
mod update_tests {
    use super::*;
    use crate::version::MemoryVersionStore;

    /// A store where every compare-and-set loses to a writer that got there first.
    struct AlwaysConflicting(MemoryVersionStore);

    impl VersionStore for AlwaysConflicting {
        async fn get(&self, key: &str) -> Result<Option<Versioned>, VersionError> {
            self.0.get(key).await
        }

        async fn insert(&self, key: &str, value: &[u8]) -> Result<Versioned, VersionError> {
            self.0.insert(key, value).await
        }

        async fn compare_and_set(
            &self,
            key: &str,
            expected_version: u64,
            value: &[u8],
        ) -> Result<Versioned, VersionError> {
            // Someone else writes between our read and our write, every time.
            let current = self.0.get(key).await?.expect("present");
            self.0.compare_and_set(key, current.version, b"theirs").await?;
            self.0.compare_and_set(key, expected_version, value).await
        }

        async fn delete(&self, key: &str, expected_version: u64) -> Result<(), VersionError> {
            self.0.delete(key, expected_version).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn conflicts_are_retried_and_exhaustion_is_bounded() {
        let store = AlwaysConflicting(MemoryVersionStore::new());
        store.insert("k", b"mine").await.unwrap();
        let mut calls = 0;
        let policy = RetryPolicy { max_attempts: 5, base_delay_ms: 1, max_delay_ms: 10 };
        let result = update_with_retry(&store, "k", &policy, |current| {
            calls += 1;
            Ok::<_, ()>(current.to_vec())
        })
        .await;
        assert_eq!(result, Err(UpdateError::Exhausted { attempts: 5 }));
        assert_eq!(calls, 5, "the update ran once per attempt, on a fresh read");
        // Only the interfering writes landed.
        assert_eq!(store.0.get("k").await.unwrap().unwrap().version, 6);
    }

    /// The output of a future that never waits (the memory store's), from sync code.
    fn ready<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("the memory store waited"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_conflict_costs_one_retry_on_fresh_data() {
        let store = MemoryVersionStore::new();
        store.insert("k", b"a").await.unwrap();
        let mut seen = Vec::new();
        let mut interfered = false;
        let policy = RetryPolicy::default();
        // The first update is overtaken by a direct write before its compare-and-set.
        let updated = update_with_retry(&store, "k", &policy, |current| {
            seen.push(current.to_vec());
            if !interfered {
                interfered = true;
                ready(store.compare_and_set("k", 1, b"b")).unwrap();
            }
            let mut next = current.to_vec();
            next.push(b'+');
            Ok::<_, ()>(next)
        })
        .await
        .unwrap();
        assert_eq!(updated.attempts, 2);
        assert_eq!(updated.versioned, Versioned { value: b"b+".to_vec(), version: 3 });
        assert_eq!(seen, [b"a".to_vec(), b"b".to_vec()]);
    }
}
