//! Coalescing: concurrent checks on one [`super::RedisLimiter`] share script calls.
//!
//! Each rule's script decides for any number of keys in one atomic call (in order, at
//! one server time). The coalescer is a task that takes waiting checks off a channel
//! and sends them as one `EVALSHA` per batch, with at most `max_in_flight` batches
//! outstanding: while they are all out, new checks wait in the channel, so batches
//! grow exactly when Redis is the bottleneck and stay at one check when it is not.
//!
//! What it saves is the Redis server's per-call work (parsing, script lookup, the Lua
//! call, `TIME`), which on a busy server costs more than the decision itself. What it
//! costs: a check may wait for a batch slot, and its decision is made at the batch's
//! server time. When nothing is queued and a slot is free, a check skips the task and
//! makes its own call, so an idle limiter answers as fast as an uncoalesced one. Decisions are exactly those of the same checks made one by one in
//! batch order (tested); nothing about the limit loosens.
//!
//! A batch names several keys, so on Redis Cluster all of a limiter's keys must hash
//! to one slot (a `{tag}` in the key prefix) before coalescing is turned on.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::invoke;
use crate::{BackendError, Decision, LimitError, Rule, UnavailableError};

/// How concurrent checks are grouped; see [`super::RedisLimiter::coalescing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalescing {
    /// The most checks per script call (at most [`Coalescing::MAX_BATCH`]).
    pub max_batch: NonZeroUsize,
    /// The most script calls outstanding at once.
    pub max_in_flight: NonZeroUsize,
    /// The most checks waiting for a call. Beyond it (Redis stalled, or far slower
    /// than the traffic) a check fails at once with [`LimitError::Unavailable`]
    /// ([`UnavailableError::QueueFull`]), so the caller's fail-open or fail-closed
    /// policy applies instead of a queue that grows without bound.
    pub max_queued: NonZeroUsize,
}

impl Coalescing {
    /// The most checks one script call decides; a larger `max_batch` counts as this.
    /// Beyond a few dozen the saving per check is gone, and a longer call holds the
    /// single-threaded Redis server longer.
    pub const MAX_BATCH: usize = 256;
}

impl Default for Coalescing {
    /// 128 checks per call, 2 calls in flight, 4,096 checks waiting at most: one
    /// call being decided while the
    /// next one fills. Measured (`benches/ratelimit_redis.rs`, 64 callers): 4 in
    /// flight made batches half as big and decided 10% fewer checks per second; a
    /// bigger cap changed nothing, batches averaging about 21.
    fn default() -> Self {
        Self {
            max_batch: NonZeroUsize::new(128).expect("non-zero"),
            max_in_flight: NonZeroUsize::new(2).expect("non-zero"),
            max_queued: NonZeroUsize::new(4_096).expect("non-zero"),
        }
    }
}

/// What a coalescing limiter has sent so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CoalescingStats {
    /// Script calls made.
    pub calls: u64,
    /// Checks those calls decided.
    pub checks: u64,
}

/// What a limiter's callers and its coalescing task share.
struct Shared {
    /// Script calls that may be outstanding; the task holds one while it waits for
    /// checks, a caller that finds the queue empty takes one to call directly.
    slots: Arc<Semaphore>,
    /// Checks sent to the task and not yet taken off the channel.
    queued: AtomicU64,
    calls: AtomicU64,
    checks: AtomicU64,
}

impl Shared {
    /// Counts `n` checks as taken off the channel (never below zero: a replaced
    /// channel resets the count while senders to the old one may still back out).
    fn unqueue(&self, n: u64) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| Some(q.saturating_sub(n)));
    }
}

/// What a script call needs: the connection, the rule and its script.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) conn: ConnectionManager,
    pub(crate) rule: Rule,
    pub(crate) script: &'static Script,
}

impl Target {
    /// One script call deciding `checks` (Redis key, cost) in order: each decision and
    /// the server time it was made at.
    pub(crate) async fn run(
        &self,
        checks: &[(String, u64)],
        now_override_ms: Option<u64>,
    ) -> Result<Vec<(Decision, u64)>, LimitError> {
        // With a time override, keys would still expire by the server's real clock:
        // keep them an hour longer so a test's virtual time cannot outrun them.
        let (now_arg, grace_ms) = match now_override_ms {
            Some(now) => (now.to_string(), 3_600_000),
            None => (String::new(), 0),
        };
        let mut invocation = self.script.prepare_invoke();
        invocation
            .arg(now_arg)
            .arg(self.rule.limit)
            .arg(self.rule.period_ms)
            .arg(self.rule.burst)
            .arg(grace_ms);
        for (key, cost) in checks {
            invocation.key(key).arg(*cost);
        }
        let out: Vec<i64> = invoke(&invocation, &self.conn).await?;
        if out.len() != 6 * checks.len() {
            return Err(BackendError::UnexpectedReply(format!(
                "{} numbers for {} checks",
                out.len(),
                checks.len()
            ))
            .into());
        }
        out.chunks_exact(6)
            .map(|d| {
                let n = |i: usize| {
                    u64::try_from(d[i]).map_err(|_| {
                        LimitError::from(BackendError::UnexpectedReply(format!("{d:?}")))
                    })
                };
                let decision = Decision {
                    allowed: n(0)? == 1,
                    remaining: n(1)?,
                    retry_after_ms: n(2)?,
                    reset_after_ms: n(3)?,
                    limit: n(4)?,
                };
                Ok((decision, n(5)?))
            })
            .collect()
    }
}

type Answer = Result<(Decision, u64), LimitError>;

struct Pending {
    redis_key: String,
    cost: u64,
    reply: oneshot::Sender<Answer>,
}

/// The channel to a limiter's coalescing task, started on first use on the caller's
/// tokio runtime (and again if that runtime has gone).
pub(crate) struct Coalescer {
    settings: Coalescing,
    sender: Mutex<Option<mpsc::UnboundedSender<Pending>>>,
    shared: Arc<Shared>,
}

impl Coalescer {
    pub(crate) fn new(settings: Coalescing) -> Self {
        let max_batch = settings.max_batch.get().min(Coalescing::MAX_BATCH);
        let settings = Coalescing {
            max_batch: NonZeroUsize::new(max_batch).unwrap_or(NonZeroUsize::MIN),
            ..settings
        };
        let shared = Arc::new(Shared {
            slots: Arc::new(Semaphore::new(settings.max_in_flight.get())),
            queued: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            checks: AtomicU64::new(0),
        });
        Self { settings, sender: Mutex::new(None), shared }
    }

    pub(crate) fn settings(&self) -> Coalescing {
        self.settings
    }

    pub(crate) fn stats(&self) -> CoalescingStats {
        CoalescingStats {
            calls: self.shared.calls.load(Ordering::Relaxed),
            checks: self.shared.checks.load(Ordering::Relaxed),
        }
    }

    /// Queues one check and waits for its answer; `None` when there is no tokio
    /// runtime to run the task on (the caller then decides alone).
    pub(crate) async fn submit(
        &self,
        target: impl Fn() -> Target,
        redis_key: String,
        cost: u64,
    ) -> Option<Answer> {
        // Nothing waiting and a call slot free: Redis is not the bottleneck, so this
        // check goes alone, without the hop through the task.
        if self.shared.queued.load(Ordering::Acquire) == 0
            && let Ok(_slot) = self.shared.slots.try_acquire()
        {
            self.shared.calls.fetch_add(1, Ordering::Relaxed);
            self.shared.checks.fetch_add(1, Ordering::Relaxed);
            let answers = target().run(&[(redis_key, cost)], None).await;
            return Some(answers.and_then(|mut a| {
                a.pop()
                    .ok_or_else(|| BackendError::UnexpectedReply("no decision".to_owned()).into())
            }));
        }
        let (reply, answer) = oneshot::channel();
        let mut pending = Pending { redis_key, cost, reply };
        // At most two tries: a task whose runtime shut down leaves a closed channel,
        // which is replaced once.
        for _ in 0..2 {
            let sender = self.sender(&target)?;
            let ahead = self.shared.queued.fetch_add(1, Ordering::AcqRel);
            if ahead >= self.settings.max_queued.get() as u64 {
                self.shared.unqueue(1);
                let max_queued = self.settings.max_queued.get();
                return Some(Err(UnavailableError::QueueFull { max_queued }.into()));
            }
            match sender.send(pending) {
                Ok(()) => {
                    return Some(
                        answer
                            .await
                            .unwrap_or_else(|_| Err(UnavailableError::CoalescerStopped.into())),
                    );
                }
                Err(mpsc::error::SendError(back)) => {
                    self.shared.unqueue(1);
                    pending = back;
                }
            }
        }
        None
    }

    fn sender(&self, target: &impl Fn() -> Target) -> Option<mpsc::UnboundedSender<Pending>> {
        let mut slot = self.sender.lock();
        if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Some(sender.clone());
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        // Checks left in a closed channel were answered with an error when it closed.
        self.shared.queued.store(0, Ordering::Release);
        let (sender, receiver) = mpsc::unbounded_channel();
        let shared = Arc::clone(&self.shared);
        runtime.spawn(dispatch(receiver, target(), self.settings.max_batch.get(), shared));
        *slot = Some(sender.clone());
        Some(sender)
    }
}

/// The coalescing task: takes a batch slot, then everything waiting (up to
/// `max_batch`), and sends it off; ends when every limiter clone is gone.
async fn dispatch(
    mut receiver: mpsc::UnboundedReceiver<Pending>,
    target: Target,
    max_batch: usize,
    shared: Arc<Shared>,
) {
    loop {
        let Ok(slot) = Arc::clone(&shared.slots).acquire_owned().await else { return };
        let mut batch = Vec::with_capacity(max_batch);
        let taken = receiver.recv_many(&mut batch, max_batch).await;
        if taken == 0 {
            return;
        }
        shared.unqueue(taken as u64);
        // A caller that stopped waiting (its request timed out or was dropped) is not
        // charged: its check is not sent.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        shared.calls.fetch_add(1, Ordering::Relaxed);
        shared.checks.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let target = target.clone();
        tokio::spawn(async move {
            let checks: Vec<(String, u64)> =
                batch.iter_mut().map(|p| (std::mem::take(&mut p.redis_key), p.cost)).collect();
            let answers = target.run(&checks, None).await;
            drop(slot);
            match answers {
                Ok(answers) => {
                    for (pending, answer) in batch.into_iter().zip(answers) {
                        // A caller that stopped waiting is no one's concern.
                        let _ = pending.reply.send(Ok(answer));
                    }
                }
                Err(e) => {
                    for pending in batch {
                        let _ = pending.reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
