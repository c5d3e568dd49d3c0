//! A durable message queue on the write-ahead log ("Pattern: Asynchronous Processing
//! with Message Queues"), with SQS's delivery semantics.
//!
//! - **At least once.** [`Queue::dequeue`] hands a message out for a visibility
//!   timeout; unless it is acknowledged in time it becomes visible again and is
//!   delivered anew. Consumers must tolerate a second delivery (dedupe by
//!   [`MessageId`]).
//! - **Receipts.** Each delivery carries a [`Receipt`] (message and attempt). Only the
//!   latest delivery's receipt acknowledges: a consumer whose timeout lapsed and whose
//!   message went to someone else gets [`QueueError::StaleReceipt`].
//! - **Nack with delay, attempts and dead letters.** [`Queue::nack`] makes a message
//!   visible again after a delay. A message delivered `max_deliveries` times that is
//!   nacked or times out again goes to its group's dead letters, with its attempts;
//!   [`Queue::redrive`] puts it back.
//! - **Consumer groups.** Every group named at open receives every message; within a
//!   group, consumers compete. An unknown group is [`QueueError::UnknownGroup`].
//! - **Durability.** Every state change is a WAL record, appended (and synced, under
//!   the WAL's default policy) before the call returns; [`Queue::open`] replays the log.
//!   A message is never handed out before its enqueue is durable. The log is
//!   checkpointed below the oldest message some group still holds, so finished
//!   messages' segments are deleted; a message left in a dead-letter list keeps its
//!   segment (redrive or purge it).
//!
//! The state lives in memory: ids, attempts and deadlines for every live message, and
//! the payloads (bounded by `message_bytes_max` each).
//!
//! [`MessageQueue`] is the same operations as a trait. [`Queue`] implements it, and so
//! does `jetstream::JetStreamQueue` (feature `nats`): one stream per queue on a NATS
//! JetStream server, one durable pull consumer per group, redriven messages and dead
//! letters in two more. `tests/queue_conformance.rs` runs one suite against both.

#[cfg(feature = "nats")]
pub mod jetstream;
mod message_queue;
mod record;

pub use message_queue::MessageQueue;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use girder_core::Clock;
use parking_lot::Mutex;

use crate::wal::{Lsn, Wal, WalConfig, WalError};
use record::Event;

/// A message's id: the position of its enqueue in the log, unique and increasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub u64);

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Proof of one delivery: acknowledging needs the latest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The message.
    pub id: MessageId,
    /// Which delivery of it (1 for the first).
    pub attempt: u32,
}

/// A message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Acknowledge or nack with this.
    pub receipt: Receipt,
    /// The message's bytes.
    pub payload: Arc<[u8]>,
    /// When this delivery's visibility timeout ends, Unix ms.
    pub visible_again_at_ms: u64,
}

/// A message that failed `max_deliveries` times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message.
    pub id: MessageId,
    /// How many times it was delivered.
    pub attempts: u32,
    /// Its bytes.
    pub payload: Arc<[u8]>,
}

/// Depths of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Messages waiting (visible now or after a nack delay).
    pub ready: usize,
    /// Messages handed out and not yet acknowledged.
    pub in_flight: usize,
    /// Dead letters.
    pub dead: usize,
}

/// How a queue behaves.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The log underneath (its directory holds the queue).
    pub wal: WalConfig,
    /// The consumer groups; each receives every message. Default `["default"]`.
    pub groups: Vec<String>,
    /// Deliveries before a message is dead-lettered. Default 5.
    pub max_deliveries: u32,
    /// The visibility timeout when a dequeue names none. Default 30 s.
    pub visibility: Duration,
    /// The largest message accepted. Default 1 MiB.
    pub message_bytes_max: usize,
}

impl QueueConfig {
    /// The defaults, in `dir`.
    #[must_use]
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            wal: WalConfig::new(dir),
            groups: vec!["default".to_owned()],
            max_deliveries: 5,
            visibility: Duration::from_secs(30),
            message_bytes_max: 1 << 20,
        }
    }
}

/// Why a queue operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// A setting is out of range.
    #[error("invalid queue configuration: {0}")]
    Config(String),
    /// No such consumer group.
    #[error("unknown consumer group {0:?}")]
    UnknownGroup(String),
    /// The message is larger than `message_bytes_max`.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The receipt is not the message's latest delivery (it timed out and was
    /// delivered again, or the message is already acknowledged).
    #[error("receipt {0:?} is not the latest delivery of an unacknowledged message")]
    StaleReceipt(Receipt),
    /// No dead letter with this id.
    #[error("no dead letter {0} in this group")]
    NotDead(MessageId),
    /// The log failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The log holds a record this version cannot read.
    #[error("queue log record {lsn} is malformed")]
    Malformed {
        /// Where.
        lsn: u64,
    },
    /// The NATS server or the connection to it failed; the source is the client's
    /// error (`async_nats`'s, reachable with `girder_core::error::source_of`).
    #[cfg(feature = "nats")]
    #[error(transparent)]
    Nats(#[from] jetstream::NatsError),
    /// The server did not answer within the configured request timeout. The
    /// operation may or may not have taken effect (an enqueue may be stored).
    #[cfg(feature = "nats")]
    #[error("NATS {op} got no answer within {after:?}")]
    TimedOut {
        /// What was waiting.
        op: &'static str,
        /// The bound.
        after: std::time::Duration,
    },
    /// JetStream times visibility per consumer (its `AckWait`): a dequeue can only
    /// ask for the configured one.
    #[cfg(feature = "nats")]
    #[error("visibility {asked:?} asked; this queue's consumers have {fixed:?}")]
    FixedVisibility {
        /// What the dequeue asked for.
        asked: Duration,
        /// The consumers' `AckWait`.
        fixed: Duration,
    },
    /// This handle already holds `max` unacknowledged deliveries (`in_flight_max`).
    #[cfg(feature = "nats")]
    #[error("{max} deliveries already in flight through this handle")]
    InFlightFull {
        /// The bound.
        max: usize,
    },
    /// A stream holds a message this queue never writes (a header missing or
    /// unreadable).
    #[cfg(feature = "nats")]
    #[error("message {seq} of stream {stream} is malformed: {problem}")]
    BadMessage {
        /// The stream.
        stream: String,
        /// Its sequence there.
        seq: u64,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Where one message stands in one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Visible from this time on.
    Ready { at_ms: u64 },
    /// Handed out; visible again at `until_ms`.
    InFlight { until_ms: u64 },
    /// Dead-lettered.
    Dead,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    slot: Slot,
    attempts: u32,
}

#[derive(Debug, Default)]
struct Group {
    /// Live messages of this group: not yet acknowledged.
    entries: BTreeMap<u64, Entry>,
    /// Ready messages by (visible-at, id): the order they are handed out.
    ready: BTreeSet<(u64, u64)>,
    /// In-flight messages by (deadline, id).
    in_flight: BTreeSet<(u64, u64)>,
}

/// A message claimed for delivery: id, attempt, payload.
type Claim = (u64, u32, Arc<[u8]>);

#[derive(Debug, Default)]
struct State {
    groups: Vec<(String, Group)>,
    payloads: HashMap<u64, Arc<[u8]>>,
    /// How many groups still hold each message.
    holders: HashMap<u64, usize>,
    /// Message ids in enqueue order that some group holds (front: the oldest).
    live: VecDeque<u64>,
}

/// A durable queue. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    wal: Wal,
    state: Arc<Mutex<State>>,
    config: Arc<QueueConfig>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("dir", &self.wal.dir()).finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens the queue in `config.wal.dir`, replaying its log.
    ///
    /// # Errors
    /// A setting is out of range, the log cannot be opened or read, or it holds a
    /// record this version cannot read.
    pub fn open(config: QueueConfig, clock: Arc<dyn Clock>) -> Result<Self, QueueError> {
        if config.groups.is_empty() || config.max_deliveries == 0 || config.visibility.is_zero() {
            return Err(QueueError::Config(
                "groups, max_deliveries and visibility must be non-empty and positive".into(),
            ));
        }
        let mut names = config.groups.clone();
        names.sort();
        names.dedup();
        if names.len() != config.groups.len() || names.iter().any(|n| n.is_empty() || n.len() > 64)
        {
            return Err(QueueError::Config("group names must be distinct, 1–64 bytes".into()));
        }
        if config.message_bytes_max + 64 > config.wal.record_bytes_max as usize {
            return Err(QueueError::Config(
                "message_bytes_max must leave 64 bytes of room below the WAL's record_bytes_max"
                    .into(),
            ));
        }
        let (wal, recovery) = Wal::open(config.wal.clone())?;
        let mut state = State {
            groups: config.groups.iter().map(|g| (g.clone(), Group::default())).collect(),
            ..State::default()
        };
        let mut reader = wal.reader(recovery.oldest_lsn)?;
        while let Some(record) = reader.next_record()? {
            let event = Event::decode(&record.payload)
                .ok_or(QueueError::Malformed { lsn: record.lsn.0 })?;
            state.apply(record.lsn.0, event, config.max_deliveries);
        }
        Ok(Self { wal, state: Arc::new(Mutex::new(state)), config: Arc::new(config), clock })
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn group_index(&self, group: &str) -> Result<usize, QueueError> {
        self.config
            .groups
            .iter()
            .position(|g| g == group)
            .ok_or_else(|| QueueError::UnknownGroup(group.to_owned()))
    }

    /// Appends `event` durably, then applies it.
    async fn commit(&self, event: Event) -> Result<u64, QueueError> {
        let lsn = self.wal.append(event.encode()).await?.0;
        self.state.lock().apply(lsn, event, self.config.max_deliveries);
        Ok(lsn)
    }

    /// Enqueues `payload` for every group; returns once it is durable.
    ///
    /// # Errors
    /// [`QueueError::TooLarge`]; the log failed.
    pub async fn enqueue(&self, payload: impl Into<Vec<u8>>) -> Result<MessageId, QueueError> {
        let payload = payload.into();
        if payload.len() > self.config.message_bytes_max {
            return Err(QueueError::TooLarge {
                len: payload.len(),
                max: self.config.message_bytes_max,
            });
        }
        let at_ms = self.now_ms();
        let lsn = self.commit(Event::Enqueue { at_ms, payload }).await?;
        Ok(MessageId(lsn))
    }

    /// Hands out up to `max` visible messages of `group`, each invisible to other
    /// consumers for `visibility` (the configured default when `None`).
    ///
    /// # Errors
    /// [`QueueError::UnknownGroup`]; the log failed.
    pub async fn dequeue(
        &self,
        group: &str,
        max: usize,
        visibility: Option<Duration>,
    ) -> Result<Vec<Delivery>, QueueError> {
        let g = self.group_index(group)?;
        let now = self.now_ms();
        let visibility = visibility.unwrap_or(self.config.visibility);
        let until_ms =
            now.saturating_add(u64::try_from(visibility.as_millis()).unwrap_or(u64::MAX));
        // Claim under the lock, so concurrent consumers never get the same delivery,
        // then log the claims; the deliveries are returned once the log has them.
        let (claims, deaths) =
            self.state.lock().claim(g, now, max, until_ms, self.config.max_deliveries);
        // One append for the whole claim: its records share the writer's syncs.
        let mut records: Vec<Vec<u8>> =
            deaths.into_iter().map(|id| Event::Dead { group: g as u16, id }.encode()).collect();
        let mut deliveries = Vec::with_capacity(claims.len());
        for (id, attempt, payload) in claims {
            records.push(Event::Deliver { group: g as u16, id, attempt, until_ms }.encode());
            deliveries.push(Delivery {
                receipt: Receipt { id: MessageId(id), attempt },
                payload,
                visible_again_at_ms: until_ms,
            });
        }
        if !records.is_empty() {
            self.wal.append_many(records).await?;
        }
        Ok(deliveries)
    }

    /// Acknowledges a delivery: the message is done for `group`.
    ///
    /// # Errors
    /// [`QueueError::StaleReceipt`] unless `receipt` is the latest delivery of a
    /// message `group` holds; [`QueueError::UnknownGroup`]; the log failed.
    pub async fn ack(&self, group: &str, receipt: Receipt) -> Result<(), QueueError> {
        let g = self.group_index(group)?;
        self.check_receipt(g, receipt)?;
        self.commit(Event::Ack { group: g as u16, id: receipt.id.0, attempt: receipt.attempt })
            .await?;
        self.checkpoint()?;
        Ok(())
    }

    /// Gives a delivery back: visible again after `delay` (or dead-lettered, if it
    /// has been delivered `max_deliveries` times).
    ///
    /// # Errors
    /// As [`Queue::ack`].
    pub async fn nack(
        &self,
        group: &str,
        receipt: Receipt,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let g = self.group_index(group)?;
        self.check_receipt(g, receipt)?;
        let at_ms =
            self.now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self.commit(Event::Nack {
            group: g as u16,
            id: receipt.id.0,
            attempt: receipt.attempt,
            at_ms,
        })
        .await?;
        Ok(())
    }

    fn check_receipt(&self, g: usize, receipt: Receipt) -> Result<(), QueueError> {
        let state = self.state.lock();
        match state.groups[g].1.entries.get(&receipt.id.0) {
            Some(e) if e.attempts == receipt.attempt && matches!(e.slot, Slot::InFlight { .. }) => {
                Ok(())
            }
            _ => Err(QueueError::StaleReceipt(receipt)),
        }
    }

    /// The dead letters of `group`, oldest first.
    ///
    /// # Errors
    /// [`QueueError::UnknownGroup`].
    pub fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>, QueueError> {
        let g = self.group_index(group)?;
        let state = self.state.lock();
        Ok(state.groups[g]
            .1
            .entries
            .iter()
            .filter(|(_, e)| e.slot == Slot::Dead)
            .filter_map(|(&id, e)| {
                let payload = state.payloads.get(&id)?.clone();
                Some(DeadLetter { id: MessageId(id), attempts: e.attempts, payload })
            })
            .collect())
    }

    /// Puts a dead letter back in `group`'s queue with its attempts reset.
    ///
    /// # Errors
    /// [`QueueError::NotDead`]; [`QueueError::UnknownGroup`]; the log failed.
    pub async fn redrive(&self, group: &str, id: MessageId) -> Result<(), QueueError> {
        let g = self.group_index(group)?;
        let dead =
            self.state.lock().groups[g].1.entries.get(&id.0).is_some_and(|e| e.slot == Slot::Dead);
        if !dead {
            return Err(QueueError::NotDead(id));
        }
        let at_ms = self.now_ms();
        self.commit(Event::Redrive { group: g as u16, id: id.0, at_ms }).await?;
        Ok(())
    }

    /// Ready, in-flight and dead counts of `group`.
    ///
    /// # Errors
    /// [`QueueError::UnknownGroup`].
    pub fn stats(&self, group: &str) -> Result<GroupStats, QueueError> {
        let g = self.group_index(group)?;
        let state = self.state.lock();
        let group = &state.groups[g].1;
        Ok(GroupStats {
            ready: group.ready.len(),
            in_flight: group.in_flight.len(),
            dead: group.entries.values().filter(|e| e.slot == Slot::Dead).count(),
        })
    }

    /// Lets the log drop segments holding only finished messages.
    fn checkpoint(&self) -> Result<(), QueueError> {
        let below = {
            let state = self.state.lock();
            match state.live.front() {
                Some(&oldest) => oldest.saturating_sub(1),
                None => self.wal.last_lsn().map_or(0, |l| l.0),
            }
        };
        // Only when a segment would go: the checkpoint file costs two syncs, too many
        // to pay on every acknowledgement.
        if below > 0 && self.wal.would_free(Lsn(below)) {
            self.wal.checkpoint(Lsn(below))?;
        }
        Ok(())
    }

    /// Writes what is queued and closes the log.
    ///
    /// # Errors
    /// The final write failed.
    pub async fn close(self) -> Result<(), QueueError> {
        Ok(self.wal.close().await?)
    }
}

impl State {
    /// Applies one logged event (on replay and after each append).
    fn apply(&mut self, lsn: u64, event: Event, max_deliveries: u32) {
        match event {
            Event::Enqueue { at_ms, payload } => {
                self.payloads.insert(lsn, payload.into());
                self.holders.insert(lsn, self.groups.len());
                self.live.push_back(lsn);
                for (_, group) in &mut self.groups {
                    group.entries.insert(lsn, Entry { slot: Slot::Ready { at_ms }, attempts: 0 });
                    group.ready.insert((at_ms, lsn));
                }
            }
            Event::Deliver { group, id, attempt, until_ms } => {
                if let Some(g) = self.group_mut(group)
                    && let Some(entry) = g.entries.get_mut(&id)
                {
                    unindex(&mut g.ready, &mut g.in_flight, id, entry.slot);
                    entry.slot = Slot::InFlight { until_ms };
                    entry.attempts = attempt;
                    g.in_flight.insert((until_ms, id));
                }
            }
            Event::Ack { group, id, attempt } => {
                let done = self.group_mut(group).is_some_and(|g| match g.entries.get(&id) {
                    Some(e) if e.attempts == attempt => {
                        let slot = e.slot;
                        unindex(&mut g.ready, &mut g.in_flight, id, slot);
                        g.entries.remove(&id);
                        true
                    }
                    _ => false,
                });
                if done {
                    self.release(id);
                }
            }
            Event::Nack { group, id, attempt, at_ms } => {
                if let Some(g) = self.group_mut(group)
                    && let Some(entry) = g.entries.get_mut(&id)
                    && entry.attempts == attempt
                {
                    unindex(&mut g.ready, &mut g.in_flight, id, entry.slot);
                    if entry.attempts >= max_deliveries {
                        entry.slot = Slot::Dead;
                    } else {
                        entry.slot = Slot::Ready { at_ms };
                        g.ready.insert((at_ms, id));
                    }
                }
            }
            Event::Dead { group, id } => {
                if let Some(g) = self.group_mut(group)
                    && let Some(entry) = g.entries.get_mut(&id)
                {
                    unindex(&mut g.ready, &mut g.in_flight, id, entry.slot);
                    entry.slot = Slot::Dead;
                }
            }
            Event::Redrive { group, id, at_ms } => {
                if let Some(g) = self.group_mut(group)
                    && let Some(entry) = g.entries.get_mut(&id)
                    && entry.slot == Slot::Dead
                {
                    entry.slot = Slot::Ready { at_ms };
                    entry.attempts = 0;
                    g.ready.insert((at_ms, id));
                }
            }
        }
    }

    fn group_mut(&mut self, group: u16) -> Option<&mut Group> {
        self.groups.get_mut(usize::from(group)).map(|(_, g)| g)
    }

    /// One group finished `id`; the last one drops its payload.
    fn release(&mut self, id: u64) {
        let left = self.holders.get_mut(&id).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left == Some(0) {
            self.holders.remove(&id);
            self.payloads.remove(&id);
            while let Some(&front) = self.live.front() {
                if self.holders.contains_key(&front) {
                    break;
                }
                self.live.pop_front();
            }
        }
    }

    /// Picks up to `max` deliveries for group `g`: timed-out in-flight messages come
    /// back first (or die after `max_deliveries`), then ready ones in order. Marks
    /// them in flight; returns them and the ids that died.
    fn claim(
        &mut self,
        g: usize,
        now: u64,
        max: usize,
        until_ms: u64,
        max_deliveries: u32,
    ) -> (Vec<Claim>, Vec<u64>) {
        let group = &mut self.groups[g].1;
        let mut deaths = Vec::new();
        // Lapsed visibility timeouts: visible again, unless out of deliveries.
        let lapsed: Vec<(u64, u64)> = group.in_flight.range(..(now + 1, 0)).copied().collect();
        for (deadline, id) in lapsed {
            group.in_flight.remove(&(deadline, id));
            if let Some(entry) = group.entries.get_mut(&id) {
                if entry.attempts >= max_deliveries {
                    entry.slot = Slot::Dead;
                    deaths.push(id);
                } else {
                    entry.slot = Slot::Ready { at_ms: deadline };
                    group.ready.insert((deadline, id));
                }
            }
        }
        let mut claims = Vec::new();
        while claims.len() < max {
            let Some(&(at_ms, id)) = group.ready.first() else { break };
            if at_ms > now {
                break;
            }
            group.ready.remove(&(at_ms, id));
            let Some(entry) = group.entries.get_mut(&id) else { continue };
            entry.attempts += 1;
            entry.slot = Slot::InFlight { until_ms };
            group.in_flight.insert((until_ms, id));
            if let Some(payload) = self.payloads.get(&id) {
                claims.push((id, entry.attempts, Arc::clone(payload)));
            }
        }
        (claims, deaths)
    }
}

/// Removes `id` from the index its `slot` is in.
fn unindex(
    ready: &mut BTreeSet<(u64, u64)>,
    in_flight: &mut BTreeSet<(u64, u64)>,
    id: u64,
    slot: Slot,
) {
    match slot {
        Slot::Ready { at_ms } => {
            ready.remove(&(at_ms, id));
        }
        Slot::InFlight { until_ms } => {
            in_flight.remove(&(until_ms, id));
        }
        Slot::Dead => {}
    }
}
