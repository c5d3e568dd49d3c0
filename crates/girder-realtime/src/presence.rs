//! Presence: who is online in a room (a chat, a video), across devices and
//! instances, with join and leave events and last-seen times.
//!
//! **Model.** A device of a user is present in a room while its lease is alive: a
//! [`PresenceStore::heartbeat`] sets the lease to `now + ttl`; a clean
//! [`PresenceStore::leave`] ends it at once; a device whose instance crashed stops
//! beating and its lease runs out, so nobody stays "online forever" — at most `ttl`
//! after the last beat. A user is online in a room while any of their devices is.
//! [`PresenceStore::heartbeat`] and [`PresenceStore::leave`] say whether the user
//! just came online or went offline (a join or leave event to publish), and
//! [`PresenceStore::expire`] reports the users whose last lease ran out.
//!
//! Two stores behind one trait and one conformance suite: [`MemoryPresence`] for one
//! instance and, with feature `redis`, `RedisPresence` (a sorted set per room scored
//! by lease end, shared by every instance).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use girder_core::Clock;
use parking_lot::Mutex;

/// What a heartbeat or leave changed for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The user was offline in the room and is now online (publish a join).
    CameOnline,
    /// The user was and stays online (another device, or a repeat beat).
    Unchanged,
    /// The user's last device left: now offline (publish a leave).
    WentOffline,
}

/// One online user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Online {
    /// The user.
    pub user: String,
    /// Their live devices.
    pub devices: usize,
}

/// A presence store failed.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// An id out of bounds (1–128 bytes, no control characters or `|`).
    #[error("{0}: 1–128 bytes without control characters or '|'")]
    BadId(&'static str),
    /// The engine failed.
    #[error("presence store: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub(crate) fn check_id(what: &'static str, id: &str) -> Result<(), PresenceError> {
    let ok = !id.is_empty() && id.len() <= 128 && !id.chars().any(|c| c.is_control() || c == '|');
    if ok { Ok(()) } else { Err(PresenceError::BadId(what)) }
}

/// Where presence is kept. See the [module docs](self).
pub trait PresenceStore: Send + Sync {
    /// `device` of `user` is in `room` until `now + ttl_ms`.
    fn heartbeat(
        &self,
        room: &str,
        user: &str,
        device: &str,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<Change, PresenceError>> + Send;

    /// `device` of `user` left `room`.
    fn leave(
        &self,
        room: &str,
        user: &str,
        device: &str,
    ) -> impl Future<Output = Result<Change, PresenceError>> + Send;

    /// Users online in `room` now, sorted.
    fn online(&self, room: &str)
    -> impl Future<Output = Result<Vec<Online>, PresenceError>> + Send;

    /// Drops leases that ran out in `room`; returns the users who went offline.
    fn expire(&self, room: &str)
    -> impl Future<Output = Result<Vec<String>, PresenceError>> + Send;

    /// When `user` was last present anywhere (ms since the epoch), if ever.
    fn last_seen(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Option<u64>, PresenceError>> + Send;
}

#[derive(Debug, Default)]
struct Rooms {
    /// room → user → device → lease end.
    leases: BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>,
    last_seen: BTreeMap<String, u64>,
}

/// Presence in this process.
#[derive(Clone)]
pub struct MemoryPresence {
    rooms: Arc<Mutex<Rooms>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPresence").finish_non_exhaustive()
    }
}

impl MemoryPresence {
    /// Empty, on `clock`.
    #[must_use]
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { rooms: Arc::new(Mutex::new(Rooms::default())), clock }
    }
}

fn live(devices: &BTreeMap<String, u64>, now: u64) -> usize {
    devices.values().filter(|&&end| end > now).count()
}

impl PresenceStore for MemoryPresence {
    async fn heartbeat(
        &self,
        room: &str,
        user: &str,
        device: &str,
        ttl_ms: u64,
    ) -> Result<Change, PresenceError> {
        check_id("room", room)?;
        check_id("user", user)?;
        check_id("device", device)?;
        let now = self.clock.now_ms();
        let mut rooms = self.rooms.lock();
        let devices =
            rooms.leases.entry(room.to_owned()).or_default().entry(user.to_owned()).or_default();
        let before = live(devices, now);
        devices.insert(device.to_owned(), now.saturating_add(ttl_ms));
        rooms.last_seen.insert(user.to_owned(), now);
        Ok(if before == 0 { Change::CameOnline } else { Change::Unchanged })
    }

    async fn leave(&self, room: &str, user: &str, device: &str) -> Result<Change, PresenceError> {
        let now = self.clock.now_ms();
        let mut rooms = self.rooms.lock();
        let Some(users) = rooms.leases.get_mut(room) else { return Ok(Change::Unchanged) };
        let Some(devices) = users.get_mut(user) else { return Ok(Change::Unchanged) };
        let before = live(devices, now);
        devices.remove(device);
        let after = live(devices, now);
        if devices.is_empty() {
            users.remove(user);
        }
        if before > 0 {
            rooms.last_seen.insert(user.to_owned(), now);
        }
        Ok(if before > 0 && after == 0 { Change::WentOffline } else { Change::Unchanged })
    }

    async fn online(&self, room: &str) -> Result<Vec<Online>, PresenceError> {
        let now = self.clock.now_ms();
        let rooms = self.rooms.lock();
        Ok(rooms
            .leases
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|(user, devices)| {
                let n = live(devices, now);
                (n > 0).then(|| Online { user: user.clone(), devices: n })
            })
            .collect())
    }

    async fn expire(&self, room: &str) -> Result<Vec<String>, PresenceError> {
        let now = self.clock.now_ms();
        let mut rooms = self.rooms.lock();
        let mut gone = BTreeSet::new();
        if let Some(users) = rooms.leases.get_mut(room) {
            users.retain(|user, devices| {
                let had = !devices.is_empty();
                devices.retain(|_, end| *end > now);
                if had && devices.is_empty() {
                    gone.insert(user.clone());
                }
                !devices.is_empty()
            });
        }
        Ok(gone.into_iter().collect())
    }

    async fn last_seen(&self, user: &str) -> Result<Option<u64>, PresenceError> {
        Ok(self.rooms.lock().last_seen.get(user).copied())
    }
}

/// The store a server picked at start: in process, or (feature `redis`) shared
/// through Redis. One type for systems to hold whichever it is.
#[derive(Clone)]
#[non_exhaustive]
pub enum AnyPresence {
    /// In this process.
    Memory(MemoryPresence),
    /// Shared through Redis.
    #[cfg(feature = "redis")]
    Redis(Box<crate::presence_redis::RedisPresence>),
}

impl std::fmt::Debug for AnyPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Memory(_) => "AnyPresence::Memory",
            #[cfg(feature = "redis")]
            Self::Redis(_) => "AnyPresence::Redis",
        })
    }
}

macro_rules! on_presence {
    ($self:expr, |$p:ident| $body:expr) => {
        match $self {
            AnyPresence::Memory($p) => $body,
            #[cfg(feature = "redis")]
            AnyPresence::Redis($p) => $body,
        }
    };
}

impl PresenceStore for AnyPresence {
    async fn heartbeat(
        &self,
        room: &str,
        user: &str,
        device: &str,
        ttl_ms: u64,
    ) -> Result<Change, PresenceError> {
        on_presence!(self, |p| p.heartbeat(room, user, device, ttl_ms).await)
    }

    async fn leave(&self, room: &str, user: &str, device: &str) -> Result<Change, PresenceError> {
        on_presence!(self, |p| p.leave(room, user, device).await)
    }

    async fn online(&self, room: &str) -> Result<Vec<Online>, PresenceError> {
        on_presence!(self, |p| p.online(room).await)
    }

    async fn expire(&self, room: &str) -> Result<Vec<String>, PresenceError> {
        on_presence!(self, |p| p.expire(room).await)
    }

    async fn last_seen(&self, user: &str) -> Result<Option<u64>, PresenceError> {
        on_presence!(self, |p| p.last_seen(user).await)
    }
}
