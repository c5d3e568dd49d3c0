//! The in-process hub: topics, subscribers and per-topic history.
//!
//! **Order.** A topic's messages get consecutive sequence numbers and reach every
//! subscriber in that order: a publish appends to the topic's history and hands the
//! message to each matching subscriber while it holds the topic's lock.
//!
//! **Slow consumers.** Each subscriber has a bounded buffer. When it is full the
//! subscriber's [`SlowConsumer`] policy decides: `DropOldest` drops the oldest
//! buffered message and counts it, and the subscriber's next receive is an
//! [`Event::Gap`] saying how many it missed — never a silent loss; `Disconnect` ends
//! the subscription with [`Closed::SlowConsumer`]. A publish never waits for a
//! subscriber.
//!
//! **Resume.** [`Hub::resume`] subscribes to one topic from a [`Position`] a client
//! kept (an SSE `Last-Event-ID`): under the topic's lock it takes every message after
//! that position from the history and registers the subscriber, so the client gets
//! each later message exactly once — no gap, no duplicate — or, when the history no
//! longer reaches back that far (or the position is from another hub, or another
//! incarnation of the topic), an explicit [`Resume::Reset`]: the client learns its
//! resume was incomplete and reloads.
//!
//! **Losses upstream.** A hub fed from elsewhere (a broker joining instances) can
//! lose messages before they reach it. [`Hub::report_gap`] makes that explicit: every
//! subscriber's next receive is an [`Event::Gap`] with [`MISSED_UNKNOWN`], and a
//! resume from a position published before it is a [`Resume::Reset`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use foldhash::fast::RandomState;
use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::topic::{Pattern, Topic};

/// Where a message sits: the hub's epoch (random per start), the topic's incarnation
/// and the message's sequence number in it (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The hub's epoch.
    pub epoch: u64,
    /// The topic's incarnation in this hub.
    pub stream: u64,
    /// The message's number in the topic.
    pub seq: u64,
}

impl Position {
    /// `epoch-stream-seq` in hex, for an SSE `id`.
    #[must_use]
    pub fn encode(&self) -> String {
        format!("{:x}-{:x}-{:x}", self.epoch, self.stream, self.seq)
    }

    /// Reads [`encode`](Self::encode)'s form; `None` for anything else.
    #[must_use]
    pub fn decode(text: &str) -> Option<Self> {
        if text.len() > 60 {
            return None;
        }
        let mut parts = text.split('-').map(|p| u64::from_str_radix(p, 16).ok());
        let position = Self { epoch: parts.next()??, stream: parts.next()??, seq: parts.next()?? };
        parts.next().is_none().then_some(position)
    }
}

/// One published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its topic.
    pub topic: Topic,
    /// Its position.
    pub position: Position,
    /// Its bytes.
    pub payload: Bytes,
}

/// What a subscriber does with a full buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Drop the oldest buffered message and report the gap.
    DropOldest,
    /// End the subscription.
    Disconnect,
}

/// A subscriber's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeConfig {
    /// Messages buffered before the policy applies (at least 1).
    pub capacity: usize,
    /// What happens then.
    pub policy: SlowConsumer,
}

impl Default for SubscribeConfig {
    fn default() -> Self {
        Self { capacity: 1_024, policy: SlowConsumer::DropOldest }
    }
}

/// [`Event::Gap`]'s count when how many were missed is not known: the hub was told
/// of a loss upstream ([`Hub::report_gap`]).
pub const MISSED_UNKNOWN: u64 = u64::MAX;

/// What a subscription receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message.
    Message(Message),
    /// Messages were missed: dropped because the buffer was full, or lost upstream
    /// ([`Hub::report_gap`]). The ones after follow without a gap.
    Gap {
        /// How many, or [`MISSED_UNKNOWN`].
        missed: u64,
    },
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Closed {
    /// The hub is gone.
    #[error("the hub closed")]
    Hub,
    /// The subscriber fell behind and its policy is to disconnect.
    #[error("disconnected: the subscriber fell behind")]
    SlowConsumer,
}

/// The outcome of a resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Every message after the position, in order; live messages follow on the
    /// subscription without a gap or a duplicate.
    Complete(Vec<Message>),
    /// The history does not reach back to the position: what was missed is unknown.
    /// Live messages follow; the client must reload what it shows.
    Reset {
        /// The oldest position the history still holds, if any.
        oldest: Option<Position>,
    },
}

/// Why a publish or subscribe was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The payload is larger than [`HubConfig::message_bytes_max`].
    #[error("a message of {len} bytes is larger than {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A setting is out of range.
    #[error("{0}")]
    Config(&'static str),
    /// The hub holds `topics_max` topics, every one with a subscriber.
    #[error("the hub holds {max} topics, each with subscribers")]
    TooManyTopics {
        /// The bound.
        max: usize,
    },
}

/// How a hub is bounded.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// Messages kept per topic for resume.
    pub history_per_topic: usize,
    /// Topics kept; beyond it, topics without subscribers are forgotten (with their
    /// history: a resume there is a reset), and when every topic has subscribers a
    /// new one is refused with [`HubError::TooManyTopics`].
    pub topics_max: usize,
    /// The largest payload.
    pub message_bytes_max: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self { history_per_topic: 1_000, topics_max: 100_000, message_bytes_max: 64 << 10 }
    }
}

#[derive(Debug)]
struct SubState {
    queue: VecDeque<Message>,
    missed: u64,
    closed: Option<Closed>,
}

#[derive(Debug)]
struct SubShared {
    state: Mutex<SubState>,
    notify: Notify,
    config: SubscribeConfig,
}

impl SubShared {
    /// Buffers `message` under the policy; `false` once the subscriber is closed.
    fn deliver(&self, message: &Message) -> bool {
        let mut state = self.state.lock();
        if state.closed.is_some() {
            return false;
        }
        let was_empty = state.queue.is_empty() && state.missed == 0;
        if state.queue.len() >= self.config.capacity {
            match self.config.policy {
                SlowConsumer::DropOldest => {
                    state.queue.pop_front();
                    // Saturates at MISSED_UNKNOWN, which stays unknown.
                    state.missed = state.missed.saturating_add(1);
                }
                SlowConsumer::Disconnect => {
                    state.closed = Some(Closed::SlowConsumer);
                    state.queue.clear();
                    drop(state);
                    self.notify.notify_one();
                    return false;
                }
            }
        }
        state.queue.push_back(message.clone());
        drop(state);
        if was_empty {
            self.notify.notify_one();
        }
        true
    }

    /// A loss upstream: what is buffered joins the gap, so whatever the subscriber
    /// receives after the gap is contiguous.
    fn interrupt(&self) {
        let mut state = self.state.lock();
        if state.closed.is_some() {
            return;
        }
        state.queue.clear();
        state.missed = MISSED_UNKNOWN;
        drop(state);
        self.notify.notify_one();
    }

    fn close(&self, why: Closed) {
        let mut state = self.state.lock();
        if state.closed.is_none() {
            state.closed = Some(why);
        }
        drop(state);
        self.notify.notify_one();
    }
}

#[derive(Debug)]
struct TopicState {
    stream: u64,
    next_seq: u64,
    /// Positions below it were published before a [`Hub::report_gap`]: a resume
    /// from one is a reset.
    floor: u64,
    history: VecDeque<Message>,
    subscribers: Vec<(u64, Arc<SubShared>)>,
}

#[derive(Debug)]
struct Inner {
    epoch: u64,
    config: HubConfig,
    topics: RwLock<HashMap<Topic, Arc<Mutex<TopicState>>, RandomState>>,
    wildcards: RwLock<Vec<(u64, Pattern, Arc<SubShared>)>>,
    next_id: AtomicU64,
    next_stream: AtomicU64,
}

/// An in-process pub/sub hub. Clones share it. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The message's position.
    pub position: Position,
    /// Subscribers it was buffered for.
    pub delivered: usize,
}

impl Hub {
    /// A hub with a fresh random epoch.
    ///
    /// # Errors
    /// [`HubError::Config`] for a zero bound.
    pub fn new(config: HubConfig) -> Result<Self, HubError> {
        if config.topics_max == 0 || config.message_bytes_max == 0 {
            return Err(HubError::Config("topics_max and message_bytes_max must be at least 1"));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                epoch: rand::random::<u64>() >> 1,
                config,
                topics: RwLock::new(HashMap::with_hasher(RandomState::default())),
                wildcards: RwLock::new(Vec::new()),
                next_id: AtomicU64::new(1),
                next_stream: AtomicU64::new(1),
            }),
        })
    }

    /// This hub's epoch (positions from another epoch never resume here).
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    fn topic(&self, topic: &Topic) -> Result<Arc<Mutex<TopicState>>, HubError> {
        if let Some(state) = self.inner.topics.read().get(topic) {
            return Ok(Arc::clone(state));
        }
        let mut topics = self.inner.topics.write();
        if let Some(state) = topics.get(topic) {
            return Ok(Arc::clone(state));
        }
        let max = self.inner.config.topics_max;
        if topics.len() >= max {
            // Forget topics nobody listens to (their history goes with them).
            topics.retain(|_, t| t.try_lock().is_none_or(|t| !t.subscribers.is_empty()));
            if topics.len() >= max {
                return Err(HubError::TooManyTopics { max });
            }
        }
        let state = Arc::new(Mutex::new(TopicState {
            stream: self.inner.next_stream.fetch_add(1, Ordering::Relaxed),
            next_seq: 1,
            floor: 0,
            history: VecDeque::new(),
            subscribers: Vec::new(),
        }));
        topics.insert(topic.clone(), Arc::clone(&state));
        Ok(state)
    }

    /// Publishes `payload` on `topic` to every matching subscriber.
    ///
    /// # Errors
    /// [`HubError::TooLarge`].
    pub fn publish(&self, topic: &Topic, payload: impl Into<Bytes>) -> Result<Published, HubError> {
        let payload = payload.into();
        let max = self.inner.config.message_bytes_max;
        if payload.len() > max {
            return Err(HubError::TooLarge { len: payload.len(), max });
        }
        let state = self.topic(topic)?;
        let mut state = state.lock();
        let position =
            Position { epoch: self.inner.epoch, stream: state.stream, seq: state.next_seq };
        state.next_seq += 1;
        let message = Message { topic: topic.clone(), position, payload };
        let mut delivered = 0;
        state.subscribers.retain(|(_, sub)| {
            let alive = sub.deliver(&message);
            delivered += usize::from(alive);
            alive
        });
        {
            let wildcards = self.inner.wildcards.read();
            for (_, pattern, sub) in wildcards.iter() {
                if pattern.matches(topic) && sub.deliver(&message) {
                    delivered += 1;
                }
            }
        }
        let keep = self.inner.config.history_per_topic;
        if keep > 0 {
            if state.history.len() >= keep {
                state.history.pop_front();
            }
            state.history.push_back(message);
        }
        Ok(Published { position, delivered })
    }

    fn new_sub(&self, config: SubscribeConfig) -> Result<(u64, Arc<SubShared>), HubError> {
        if config.capacity == 0 {
            return Err(HubError::Config("a subscriber's capacity must be at least 1"));
        }
        let shared = Arc::new(SubShared {
            state: Mutex::new(SubState { queue: VecDeque::new(), missed: 0, closed: None }),
            notify: Notify::new(),
            config,
        });
        Ok((self.inner.next_id.fetch_add(1, Ordering::Relaxed), shared))
    }

    /// Subscribes to every topic `pattern` matches, from now on.
    ///
    /// # Errors
    /// [`HubError::Config`] for a zero capacity.
    pub fn subscribe(
        &self,
        pattern: &Pattern,
        config: SubscribeConfig,
    ) -> Result<Subscription, HubError> {
        let (id, shared) = self.new_sub(config)?;
        let target = match pattern.exact() {
            Some(topic) => {
                self.topic(&topic)?.lock().subscribers.push((id, Arc::clone(&shared)));
                Target::Topic(topic)
            }
            None => {
                self.inner.wildcards.write().push((id, pattern.clone(), Arc::clone(&shared)));
                Target::Wildcard
            }
        };
        Ok(Subscription { id, shared, hub: Arc::downgrade(&self.inner), target })
    }

    /// Subscribes to `topic` after `since` (see the [module docs](self)); `None`
    /// subscribes from now on, a complete resume with nothing to replay.
    ///
    /// # Errors
    /// [`HubError::Config`] for a zero capacity.
    pub fn resume(
        &self,
        topic: &Topic,
        since: Option<Position>,
        config: SubscribeConfig,
    ) -> Result<(Subscription, Resume), HubError> {
        let (id, shared) = self.new_sub(config)?;
        let state = self.topic(topic)?;
        let mut state = state.lock();
        let oldest = state.history.front().map(|m| m.position);
        let last = state.next_seq - 1;
        let resume = match since {
            None => Resume::Complete(Vec::new()),
            Some(p)
                if p.epoch != self.inner.epoch
                    || p.stream != state.stream
                    || p.seq > last
                    || p.seq < state.floor =>
            {
                Resume::Reset { oldest }
            }
            Some(p) => {
                let first_kept = oldest.map_or(state.next_seq, |o| o.seq);
                if p.seq + 1 < first_kept {
                    Resume::Reset { oldest }
                } else {
                    Resume::Complete(
                        state.history.iter().filter(|m| m.position.seq > p.seq).cloned().collect(),
                    )
                }
            }
        };
        state.subscribers.push((id, Arc::clone(&shared)));
        drop(state);
        Ok((
            Subscription {
                id,
                shared,
                hub: Arc::downgrade(&self.inner),
                target: Target::Topic(topic.clone()),
            },
            resume,
        ))
    }

    /// The last position published on `topic`, if any.
    #[must_use]
    pub fn last_position(&self, topic: &Topic) -> Option<Position> {
        let state = Arc::clone(self.inner.topics.read().get(topic)?);
        let state = state.lock();
        (state.next_seq > 1).then(|| Position {
            epoch: self.inner.epoch,
            stream: state.stream,
            seq: state.next_seq - 1,
        })
    }

    /// Topics known (with history or subscribers).
    #[must_use]
    pub fn topics(&self) -> usize {
        self.inner.topics.read().len()
    }

    /// Reports that messages meant for this hub may have been lost before reaching
    /// it (a broker's connection to the other instances dropped): every current
    /// subscriber's buffer is dropped and its next receive is an [`Event::Gap`] with
    /// [`MISSED_UNKNOWN`] — whatever its [`SlowConsumer`] policy, since it did not
    /// fall behind —, and each topic's history is forgotten, so a resume from a
    /// position published before this call is a [`Resume::Reset`]. Messages
    /// published after the call follow the gap in order.
    pub fn report_gap(&self) {
        for state in self.inner.topics.read().values() {
            let mut state = state.lock();
            state.floor = state.next_seq;
            state.history.clear();
            for (_, sub) in &state.subscribers {
                sub.interrupt();
            }
        }
        for (_, _, sub) in self.inner.wildcards.read().iter() {
            sub.interrupt();
        }
    }

    /// Ends every subscription with [`Closed::Hub`].
    pub fn close(&self) {
        for state in self.inner.topics.read().values() {
            for (_, sub) in state.lock().subscribers.drain(..) {
                sub.close(Closed::Hub);
            }
        }
        for (_, _, sub) in self.inner.wildcards.write().drain(..) {
            sub.close(Closed::Hub);
        }
    }
}

#[derive(Debug)]
enum Target {
    Topic(Topic),
    Wildcard,
}

/// A live subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    shared: Arc<SubShared>,
    hub: std::sync::Weak<Inner>,
    target: Target,
}

impl Subscription {
    /// The next event, waiting for one.
    ///
    /// # Errors
    /// [`Closed`] once the subscription has ended (after what it buffered).
    pub async fn recv(&mut self) -> Result<Event, Closed> {
        loop {
            if let Some(event) = self.try_recv()? {
                return Ok(event);
            }
            if self.hub.strong_count() == 0 {
                return Err(Closed::Hub);
            }
            self.shared.notify.notified().await;
        }
    }

    /// The next event if one is buffered.
    ///
    /// # Errors
    /// [`Closed`] once the subscription has ended.
    pub fn try_recv(&mut self) -> Result<Option<Event>, Closed> {
        let mut state = self.shared.state.lock();
        if state.missed > 0 {
            let missed = std::mem::take(&mut state.missed);
            return Ok(Some(Event::Gap { missed }));
        }
        if let Some(message) = state.queue.pop_front() {
            return Ok(Some(Event::Message(message)));
        }
        match state.closed {
            Some(why) => Err(why),
            None => Ok(None),
        }
    }

    /// Messages buffered now.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.shared.state.lock().queue.len()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(inner) = self.hub.upgrade() else { return };
        match &self.target {
            Target::Topic(topic) => {
                let state = inner.topics.read().get(topic).map(Arc::clone);
                if let Some(state) = state {
                    state.lock().subscribers.retain(|(id, _)| *id != self.id);
                }
            }
            Target::Wildcard => inner.wildcards.write().retain(|(id, _, _)| *id != self.id),
        }
    }
}
