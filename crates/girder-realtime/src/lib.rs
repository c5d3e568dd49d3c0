//! Real-time updates: "Pub/Sub for Event Broadcasting" made real, the core that
//! Server-Sent Events, WebSockets and long polling are built on.
//!
//! **Problem.** Messages published on one topic must reach every interested
//! subscriber quickly, in order, without a slow subscriber holding up the publisher
//! or the others, and a client that reconnects must learn what it missed — or that it
//! cannot.
//!
//! **Guarantee.** [`hub::Hub`] delivers each topic's messages to every matching
//! subscriber in publish order. A subscriber's buffer is bounded; a full one either
//! drops its oldest message and reports the gap ([`hub::Event::Gap`]) or ends the
//! subscription, by its own policy — a publish never waits and a loss is never
//! silent. Each topic keeps a bounded history, and [`hub::Hub::resume`] continues a
//! subscription from a kept position with no gap and no duplicate, or answers
//! [`hub::Resume::Reset`] when the history no longer reaches back.
//!
//! **Trade-off.** Delivery is at most once and in memory: a message published while
//! nobody listens is only in the topic's bounded history, and a restart forgets it
//! (positions carry the hub's epoch, so a resume across a restart is a reset, never
//! a wrong replay). Topics are [`topic::Topic`]s (`news.sports.football`) and
//! subscriptions [`topic::Pattern`]s with `*` and `>` wildcards.
//!
//! On top of the hub: [`sse`] (an event stream with resume, gaps, heartbeats) and
//! [`longpoll`] (a held request woken by the publish).
//!
//! With feature `nats`, [`nats::NatsBroker`] joins the hubs of several instances, so
//! a subscriber on one receives what is published on another. With feature `redis`,
//! [`redis_broker::RedisBroker`] does the same over Redis pub/sub: each payload in a
//! small envelope naming its origin and number, a probe through Redis before it
//! returns and on every heartbeat, and every loss it can see — a dropped subscriber
//! connection, another instance's unacknowledged pipeline — reported to local
//! subscribers as a gap ([`hub::Hub::report_gap`]), never silent.
//!
//! [`presence`]: who is online in a room across devices, with leases that run out
//! (never "online forever"), in process or, with feature `redis`, shared through
//! Redis.
//!
//! [`ws`]: the WebSocket hub's registry — connections by user and device, bounded
//! outboxes that cut a slow reader with a close code, keep-alive timing — for a
//! server to drive its sockets with.
//!
//! Not yet: durable replay across instances (JetStream).

#[cfg(feature = "sql")]
pub mod cdc;
pub mod hub;
pub mod longpoll;
#[cfg(feature = "nats")]
pub mod nats;
pub mod presence;
#[cfg(feature = "redis")]
pub mod presence_redis;
#[cfg(feature = "redis")]
pub mod redis_broker;
pub mod sse;
pub mod topic;
pub mod ws;

pub use hub::{
    Closed, Event, Hub, HubConfig, HubError, MISSED_UNKNOWN, Message, Position, Published, Resume,
    SlowConsumer, SubscribeConfig, Subscription,
};
pub use topic::{Pattern, Topic, TopicError};
