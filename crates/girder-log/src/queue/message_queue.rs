//! The durable queue's operations as one trait, so code (and the conformance suite)
//! can run on either backend: the embedded [`Queue`] on girder-log's WAL, or the
//! NATS JetStream queue behind the `nats` feature.

use std::future::Future;
use std::time::Duration;

use super::{DeadLetter, Delivery, GroupStats, MessageId, Queue, QueueError, Receipt};

/// A durable queue with SQS's delivery semantics ("Pattern: Asynchronous Processing
/// with Message Queues").
///
/// Guarantee: a message whose [`enqueue`](MessageQueue::enqueue) returned is durable
/// and is delivered to every consumer group at least once, until it is acknowledged
/// in that group or dead-lettered there after `max_deliveries` deliveries. Within a
/// group, consumers compete: a delivery is invisible to the others for its
/// visibility timeout. Admits: a second delivery of the same message (its visibility
/// lapsed, or a consumer crashed), so consumers dedupe by [`MessageId`]; an
/// acknowledgement with a receipt that is not the latest delivery's fails with
/// [`QueueError::StaleReceipt`] and changes nothing.
///
/// What differs between backends (ordering after a redrive, when a lapsed receipt
/// turns stale, how stats count a delivery whose timeout lapsed) is written on each
/// backend's type.
pub trait MessageQueue: Send + Sync {
    /// Stores `payload` for every group; returns its id once it is durable.
    fn enqueue(
        &self,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<MessageId, QueueError>> + Send;

    /// Hands out up to `max` visible messages of `group`, oldest first, each
    /// invisible to the group's other consumers for `visibility` (the backend's
    /// configured timeout when `None`). Empty when nothing is visible; never waits
    /// for a message to arrive.
    fn dequeue(
        &self,
        group: &str,
        max: usize,
        visibility: Option<Duration>,
    ) -> impl Future<Output = Result<Vec<Delivery>, QueueError>> + Send;

    /// Acknowledges a delivery: the message is done for `group`.
    fn ack(
        &self,
        group: &str,
        receipt: Receipt,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Gives a delivery back, visible again after `delay`, or dead-lettered if it was
    /// the message's `max_deliveries`-th delivery.
    fn nack(
        &self,
        group: &str,
        receipt: Receipt,
        delay: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// The dead letters of `group`, by id.
    fn dead_letters(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, QueueError>> + Send;

    /// Puts a dead letter back in `group`'s queue, its attempts counted from zero.
    fn redrive(
        &self,
        group: &str,
        id: MessageId,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Ready, in-flight and dead counts of `group`.
    fn stats(&self, group: &str) -> impl Future<Output = Result<GroupStats, QueueError>> + Send;
}

/// The embedded queue: every operation is one record in its WAL, decided in memory.
///
/// Its clock is the one it was opened with (a manual clock in tests), so visibility
/// timeouts and nack delays lapse exactly when that clock says; a lapsed delivery
/// stays in flight (and its receipt still acknowledges) until the next dequeue of
/// its group finds it, which hands it out again or dead-letters it.
impl MessageQueue for Queue {
    fn enqueue(
        &self,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<MessageId, QueueError>> + Send {
        Queue::enqueue(self, payload)
    }

    fn dequeue(
        &self,
        group: &str,
        max: usize,
        visibility: Option<Duration>,
    ) -> impl Future<Output = Result<Vec<Delivery>, QueueError>> + Send {
        Queue::dequeue(self, group, max, visibility)
    }

    fn ack(
        &self,
        group: &str,
        receipt: Receipt,
    ) -> impl Future<Output = Result<(), QueueError>> + Send {
        Queue::ack(self, group, receipt)
    }

    fn nack(
        &self,
        group: &str,
        receipt: Receipt,
        delay: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send {
        Queue::nack(self, group, receipt, delay)
    }

    fn dead_letters(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, QueueError>> + Send {
        std::future::ready(Queue::dead_letters(self, group))
    }

    fn redrive(
        &self,
        group: &str,
        id: MessageId,
    ) -> impl Future<Output = Result<(), QueueError>> + Send {
        Queue::redrive(self, group, id)
    }

    fn stats(&self, group: &str) -> impl Future<Output = Result<GroupStats, QueueError>> + Send {
        std::future::ready(Queue::stats(self, group))
    }
}

impl<Q: MessageQueue + ?Sized> MessageQueue for std::sync::Arc<Q> {
    fn enqueue(
        &self,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<MessageId, QueueError>> + Send {
        (**self).enqueue(payload)
    }

    fn dequeue(
        &self,
        group: &str,
        max: usize,
        visibility: Option<Duration>,
    ) -> impl Future<Output = Result<Vec<Delivery>, QueueError>> + Send {
        (**self).dequeue(group, max, visibility)
    }

    fn ack(
        &self,
        group: &str,
        receipt: Receipt,
    ) -> impl Future<Output = Result<(), QueueError>> + Send {
        (**self).ack(group, receipt)
    }

    fn nack(
        &self,
        group: &str,
        receipt: Receipt,
        delay: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send {
        (**self).nack(group, receipt, delay)
    }

    fn dead_letters(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, QueueError>> + Send {
        (**self).dead_letters(group)
    }

    fn redrive(
        &self,
        group: &str,
        id: MessageId,
    ) -> impl Future<Output = Result<(), QueueError>> + Send {
        (**self).redrive(group, id)
    }

    fn stats(&self, group: &str) -> impl Future<Output = Result<GroupStats, QueueError>> + Send {
        (**self).stats(group)
    }
}
