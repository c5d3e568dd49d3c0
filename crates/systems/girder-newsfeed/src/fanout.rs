//! Fan-out on write, through a durable queue ("Pattern: Asynchronous Processing with
//! Message Queues").
//!
//! A push post is committed with its fan-out outstanding (`fanout_done_ms IS NULL`,
//! the outbox), then a job naming it is enqueued; workers dequeue it, page through
//! the author's followers and insert the entry into each follower's feed shard, then
//! mark the post done and acknowledge. Every step may be repeated: the inserts skip
//! entries that exist, so a job delivered again after a worker died (its visibility
//! timeout lapsed) or re-enqueued by the sweeper writes nothing twice.
//!
//! The sweeper closes the one gap the queue cannot: an instance killed between the
//! post's commit and the enqueue. Every instance periodically claims (compare and
//! set on `claimed_until_ms`) push posts whose fan-out has been outstanding longer
//! than a grace period and enqueues them on its own queue, so a post is fanned out
//! even if the instance that took it never comes back.
//!
//! The other jobs keep what fan-out on write makes hard: a deleted post is removed
//! from the feeds it was written to (readers already skip it by its tombstone), an
//! unfollow removes the author's entries from the follower's feed (readers already
//! skip them), and a follow backfills the author's recent push posts.

use std::sync::Arc;
use std::time::Duration;

use girder_log::queue::jetstream::JetStreamQueue;
use girder_log::queue::{
    DeadLetter, Delivery, GroupStats, MessageId, MessageQueue, Queue, QueueError, Receipt,
};
use serde::{Deserialize, Serialize};

use crate::feeds::FeedError;
use crate::graph::GraphError;

/// The consumer group the workers share.
pub const GROUP: &str = "fanout";

/// A unit of fan-out work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Write a push post into its author's and their followers' feeds.
    Fanout {
        /// The post.
        post: i64,
        /// Its author.
        author: String,
    },
    /// Remove a deleted post from the feeds it was written to.
    Retract {
        /// The post.
        post: i64,
        /// Its author.
        author: String,
    },
    /// Remove an unfollowed author's entries from a follower's feed (if the follower
    /// has not followed again meanwhile).
    Unfollow {
        /// Whose feed.
        follower: String,
        /// Whose entries.
        followee: String,
    },
    /// Copy an author's recent push posts into a new follower's feed.
    Backfill {
        /// Whose feed.
        follower: String,
        /// Whose posts.
        followee: String,
    },
}

impl Job {
    /// The job's bytes on the queue.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A job from its bytes.
    ///
    /// # Errors
    /// The bytes are not a job (a message from something else, or corrupt).
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The metric label.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Fanout { .. } => "fanout",
            Self::Retract { .. } => "retract",
            Self::Unfollow { .. } => "unfollow",
            Self::Backfill { .. } => "backfill",
        }
    }
}

/// Why a job failed (it is retried with backoff, then dead-lettered).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The graph database failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A feed shard failed.
    #[error(transparent)]
    Feed(#[from] FeedError),
}

/// The queue the jobs travel through: embedded (a write-ahead log in the instance's
/// data directory, drained by this instance's workers) by default, or NATS JetStream
/// (one queue shared by every instance's workers) when the server has NATS.
#[derive(Clone)]
pub struct Jobs {
    backend: Backend,
    /// Wakes idle workers when this instance enqueues.
    notify: Arc<tokio::sync::Notify>,
}

#[derive(Clone)]
enum Backend {
    Embedded(Arc<Queue>),
    JetStream(Arc<JetStreamQueue>),
}

/// Runs one `MessageQueue` call on whichever backend is configured.
macro_rules! on_queue {
    ($backend:expr, |$q:ident| $body:expr) => {
        match $backend {
            Backend::Embedded($q) => $body,
            Backend::JetStream($q) => $body,
        }
    };
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").field("backend", &self.backend_name()).finish_non_exhaustive()
    }
}

impl Jobs {
    /// Jobs on the embedded `queue`.
    #[must_use]
    pub fn embedded(queue: Queue) -> Self {
        Self::with(Backend::Embedded(Arc::new(queue)))
    }

    /// Jobs on a JetStream queue shared by every instance.
    #[must_use]
    pub fn jetstream(queue: JetStreamQueue) -> Self {
        Self::with(Backend::JetStream(Arc::new(queue)))
    }

    fn with(backend: Backend) -> Self {
        Self { backend, notify: Arc::new(tokio::sync::Notify::new()) }
    }

    /// `embedded` or `jetstream`.
    #[must_use]
    pub const fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Embedded(_) => "embedded",
            Backend::JetStream(_) => "jetstream",
        }
    }

    /// Enqueues `job`; returns once it is durable.
    ///
    /// # Errors
    /// The queue failed.
    pub async fn push(&self, job: &Job) -> Result<(), QueueError> {
        on_queue!(&self.backend, |q| q.enqueue(job.encode()).await)?;
        metrics::counter!("girder_newsfeed_jobs_enqueued_total", "job" => job.kind()).increment(1);
        self.notify.notify_waiters();
        Ok(())
    }

    /// Up to `max` deliveries, each invisible to other workers for `visibility`.
    ///
    /// # Errors
    /// The queue failed.
    pub async fn take(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        on_queue!(&self.backend, |q| q.dequeue(GROUP, max, Some(visibility)).await)
    }

    /// Marks a delivery done.
    ///
    /// # Errors
    /// The receipt is stale (the job went to another worker), or the queue failed.
    pub async fn ack(&self, receipt: Receipt) -> Result<(), QueueError> {
        on_queue!(&self.backend, |q| q.ack(GROUP, receipt).await)
    }

    /// Gives a delivery back, visible again after `delay` (or dead-lettered after its
    /// last delivery).
    ///
    /// # Errors
    /// As [`Jobs::ack`].
    pub async fn nack(&self, receipt: Receipt, delay: Duration) -> Result<(), QueueError> {
        on_queue!(&self.backend, |q| q.nack(GROUP, receipt, delay).await)
    }

    /// Ready, in-flight and dead jobs.
    ///
    /// # Errors
    /// The queue failed.
    pub async fn stats(&self) -> Result<GroupStats, QueueError> {
        on_queue!(&self.backend, |q| q.stats(GROUP).await)
    }

    /// Jobs that failed every delivery.
    ///
    /// # Errors
    /// The queue failed.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        on_queue!(&self.backend, |q| q.dead_letters(GROUP).await)
    }

    /// Puts a dead letter back on the queue.
    ///
    /// # Errors
    /// The queue failed (or has no such dead letter).
    pub async fn redrive(&self, id: MessageId) -> Result<(), QueueError> {
        on_queue!(&self.backend, |q| q.redrive(GROUP, id).await)
    }

    /// Waits until this instance enqueues something or `idle` passes.
    pub async fn idle(&self, idle: Duration) {
        let _ = tokio::time::timeout(idle, self.notify.notified()).await;
    }
}
