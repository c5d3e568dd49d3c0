//! The per-process cache in front of a [`RangeSource`]: hands out ids from the
//! current lease without touching the backend, and leases the next block when it
//! runs dry — one lease at a time, whatever the number of waiting callers.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use super::cursor::Cursor;
use super::{LeaseError, MAX_LEASE_SIZE, RangeSource, check_lease_size};

/// How an [`IdAllocator`] leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorConfig {
    /// Ids leased per backend round trip, in `1..=MAX_LEASE_SIZE`. Larger batches mean
    /// fewer round trips and larger gaps when a process dies. Default 1000.
    pub batch_size: u64,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        Self { batch_size: 1000 }
    }
}

impl AllocatorConfig {
    /// Checks that `batch_size` is in `1..=MAX_LEASE_SIZE`.
    ///
    /// # Errors
    /// [`LeaseError::InvalidSize`] otherwise.
    pub fn validate(&self) -> Result<(), LeaseError> {
        check_lease_size(self.batch_size)
    }
}

/// Coordination of the slow path; the mutex is only ever held for a few instructions
/// and never across an `.await`. Leases are installed into the cursor under it.
#[derive(Debug)]
struct State {
    /// Whether some caller is leasing right now (the others wait for it).
    leasing: bool,
    /// Counts finished lease attempts, so a waiter knows when the one it waited for ended.
    attempts: u64,
    /// The error of the most recent attempt if it failed, handed to its waiters so a
    /// dead backend costs one timeout per attempt, not one per waiting caller.
    last_error: Option<LeaseError>,
    /// Tasks waiting for the attempt in flight. At most one entry per waiting task.
    waiters: Vec<Waker>,
}

/// Hands out ids from leased ranges of a [`RangeSource`].
///
/// Ids are unique across every allocator sharing the source's backend counter, and
/// increase within one lease; across leases and processes they are only unique, not
/// ordered.
#[derive(Debug)]
pub struct IdAllocator<S> {
    source: S,
    batch_size: u64,
    /// The length of every lease as the cursor sees it: `batch_size`, or 0 for an
    /// invalid batch size (nothing is ever installed then, and `try_next` must not
    /// read the empty cursor as a lease).
    lease_len: u64,
    /// The current lease, read without locking by `try_next`.
    cursor: Cursor,
    state: Mutex<State>,
}

impl<S: RangeSource> IdAllocator<S> {
    /// An allocator leasing `config.batch_size` ids at a time from `source`.
    ///
    /// An invalid batch size is reported by [`IdAllocator::next_id`] as
    /// [`LeaseError::InvalidSize`]; use [`IdAllocator::try_new`] to fail up front.
    pub fn new(source: S, config: AllocatorConfig) -> Self {
        Self {
            source,
            batch_size: config.batch_size,
            lease_len: if config.validate().is_ok() { config.batch_size } else { 0 },
            cursor: Cursor::empty(),
            state: Mutex::new(State {
                leasing: false,
                attempts: 0,
                last_error: None,
                waiters: Vec::new(),
            }),
        }
    }

    /// Like [`IdAllocator::new`], but rejects an invalid configuration.
    ///
    /// # Errors
    /// [`LeaseError::InvalidSize`] if the batch size is outside `1..=MAX_LEASE_SIZE`.
    pub fn try_new(source: S, config: AllocatorConfig) -> Result<Self, LeaseError> {
        config.validate()?;
        Ok(Self::new(source, config))
    }

    /// The next id of the current lease, or `None` if it is used up (then call
    /// [`IdAllocator::next_id`]). Never touches the backend.
    #[inline]
    pub fn try_next(&self) -> Option<u64> {
        self.cursor.try_take(self.lease_len)
    }

    /// The next id, leasing a new range from the source when the current one is used up.
    ///
    /// Concurrent callers that find the lease empty wait for a single lease instead of
    /// each leasing. Cancelling the call is safe: at worst the ids of an interrupted
    /// lease are skipped.
    ///
    /// # Errors
    /// Whatever the source's lease fails with; waiters for a failed lease get a copy
    /// of its error.
    pub async fn next_id(&self) -> Result<u64, LeaseError> {
        if self.batch_size == 0 || self.batch_size > MAX_LEASE_SIZE {
            return Err(LeaseError::InvalidSize {
                requested: self.batch_size,
                max: MAX_LEASE_SIZE,
            });
        }
        loop {
            if let Some(id) = self.try_next() {
                return Ok(id);
            }
            let waiting_for = {
                let mut state = self.state.lock();
                // Again under the lock: leases are installed under it, so if the lease is
                // used up now, it stays so until the leader chosen here installs one.
                if let Some(id) = self.try_next() {
                    return Ok(id);
                }
                if state.leasing {
                    Some(state.attempts)
                } else {
                    state.leasing = true;
                    None
                }
            };
            match waiting_for {
                Some(attempt) => {
                    WaitForLease { state: &self.state, attempt }.await;
                    let state = self.state.lock();
                    // Only the attempt this caller waited for decides its fate; after a
                    // later attempt it simply tries again.
                    if state.attempts == attempt + 1
                        && let Some(err) = &state.last_error
                    {
                        return Err(err.clone());
                    }
                }
                None => return self.lease_and_take().await,
            }
        }
    }

    /// Leases a range as the single leader, keeps its first id and publishes the rest.
    async fn lease_and_take(&self) -> Result<u64, LeaseError> {
        let mut guard = LeaderGuard {
            state: &self.state,
            cursor: &self.cursor,
            batch_size: self.batch_size,
            outcome: Outcome::Cancelled,
        };
        let leased = self.source.lease(self.batch_size).await;
        // The fast path assumes every lease has exactly batch_size ids; a source that
        // breaks its contract is an error, not a reason to hand out wrong ids.
        let result = leased.and_then(|range: Range<u64>| {
            if range.end.checked_sub(range.start) == Some(self.batch_size) {
                Ok(range.start)
            } else {
                Err(LeaseError::WrongLength { granted: range, requested: self.batch_size })
            }
        });
        match result {
            Ok(start) => {
                guard.outcome = Outcome::Leased(start);
                Ok(start)
            }
            Err(err) => {
                guard.outcome = Outcome::Failed(err.clone());
                Err(err)
            }
        }
    }

    /// The backend this allocator leases from.
    pub fn source(&self) -> &S {
        &self.source
    }
}

/// How the leader's attempt ended.
enum Outcome {
    /// The leader's future was dropped mid-lease; waiters retry.
    Cancelled,
    /// A lease starting here; the leader kept its first id.
    Leased(u64),
    /// The lease failed; waiters of this attempt get the same error.
    Failed(LeaseError),
}

/// Ends the leader's attempt however the leader's future ends (completion or drop):
/// publishes the outcome, clears `leasing`, and wakes the waiters.
struct LeaderGuard<'a> {
    state: &'a Mutex<State>,
    cursor: &'a Cursor,
    batch_size: u64,
    outcome: Outcome,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        let waiters = {
            let mut state = self.state.lock();
            match std::mem::replace(&mut self.outcome, Outcome::Cancelled) {
                Outcome::Leased(start) => {
                    self.cursor.install(start, 1, self.batch_size);
                    state.last_error = None;
                }
                Outcome::Failed(err) => state.last_error = Some(err),
                Outcome::Cancelled => state.last_error = None,
            }
            state.leasing = false;
            state.attempts += 1;
            std::mem::take(&mut state.waiters)
        };
        // Wake outside the lock: a woken task may run at once on another thread.
        for waker in waiters {
            waker.wake();
        }
    }
}

/// Resolves when the lease attempt numbered `attempt` has finished.
struct WaitForLease<'a> {
    state: &'a Mutex<State>,
    attempt: u64,
}

impl Future for WaitForLease<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.lock();
        if state.attempts != self.attempt {
            return Poll::Ready(());
        }
        if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            state.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
