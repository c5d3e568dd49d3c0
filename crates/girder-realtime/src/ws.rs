//! The WebSocket hub's transport-free half: a registry of connections by user and
//! device, each with a bounded outbox, and the close codes and keep-alive timing a
//! server speaks. The socket itself (upgrade, frames, pings) is the server's; it
//! drains a [`Connection`]'s outbox and closes with the code the registry gives.
//!
//! **Per-user fan-out.** A user may be connected from several devices; one device
//! has at most one connection (a second registration of the same device closes the
//! first with [`CloseCode::Replaced`], as a reconnect that raced its own dead socket
//! must win). [`Registry::send_to_user`] puts a frame in every device's outbox.
//!
//! **Backpressure.** An outbox holds [`RegistryConfig::outbox`] frames. A send that
//! finds it full does not wait and does not drop a frame silently: it ends that
//! connection with [`CloseCode::SlowConsumer`]. A client that reconnects learns
//! what it missed from the system's own durable state (WhatsApp's inbox), which is
//! why a slow socket may be cut instead of buffered without bound.
//!
//! **Bounds.** At most [`RegistryConfig::connections_max`] connections in all and
//! [`RegistryConfig::devices_per_user_max`] per user; beyond them
//! [`RegisterError`] refuses the new one.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use foldhash::fast::RandomState;
use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Why a server closes a WebSocket (RFC 6455 §7.4; 4000–4999 are this library's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: the conversation is over.
    Normal,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1002: a frame broke the protocol (a missed pong, a binary frame where text is
    /// spoken).
    ProtocolError,
    /// 1003: a frame type this endpoint does not take.
    Unsupported,
    /// 1007: a message that is not what the endpoint speaks (invalid JSON).
    InvalidPayload,
    /// 1008: a rule was broken (too many connections).
    PolicyViolation,
    /// 1009: a message larger than the endpoint's maximum.
    TooBig,
    /// 1011: the server failed.
    InternalError,
    /// 1013: the server is overloaded; retry later.
    TryAgainLater,
    /// 4001: the bearer token the connection was opened with expired.
    TokenExpired,
    /// 4002: the same device connected again; this connection is the older one.
    Replaced,
    /// 4008: the client did not read fast enough and its outbox filled.
    SlowConsumer,
    /// 4009: the peer did not answer pings within the keep-alive deadline.
    Unresponsive,
}

impl CloseCode {
    /// The code on the wire.
    #[must_use]
    pub const fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::ProtocolError => 1002,
            Self::Unsupported => 1003,
            Self::InvalidPayload => 1007,
            Self::PolicyViolation => 1008,
            Self::TooBig => 1009,
            Self::InternalError => 1011,
            Self::TryAgainLater => 1013,
            Self::TokenExpired => 4001,
            Self::Replaced => 4002,
            Self::SlowConsumer => 4008,
            Self::Unresponsive => 4009,
        }
    }

    /// A short reason sent with the code (at most 123 bytes, as a close frame allows).
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Normal => "bye",
            Self::GoingAway => "server shutting down",
            Self::ProtocolError => "protocol error",
            Self::Unsupported => "text frames only",
            Self::InvalidPayload => "invalid message",
            Self::PolicyViolation => "policy violation",
            Self::TooBig => "message too big",
            Self::InternalError => "internal error",
            Self::TryAgainLater => "overloaded, retry later",
            Self::TokenExpired => "token expired",
            Self::Replaced => "replaced by a newer connection of this device",
            Self::SlowConsumer => "outbox full: read faster",
            Self::Unresponsive => "no pong within the keep-alive deadline",
        }
    }
}

/// Keep-alive: the server pings every `ping_interval` and closes with
/// [`CloseCode::Unresponsive`] when nothing (a pong or any frame) has arrived for
/// `idle_timeout`. A half-open TCP connection (a peer that vanished without a FIN) is
/// found within `idle_timeout + ping_interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Between pings.
    pub ping_interval: Duration,
    /// Silence after which the peer is taken for dead.
    pub idle_timeout: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        Self { ping_interval: Duration::from_secs(20), idle_timeout: Duration::from_secs(45) }
    }
}

/// How a registry is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Connections in all.
    pub connections_max: usize,
    /// Devices one user may have connected at once.
    pub devices_per_user_max: usize,
    /// Frames waiting in one connection's outbox (at least 1).
    pub outbox: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self { connections_max: 100_000, devices_per_user_max: 16, outbox: 1_024 }
    }
}

/// Why a connection was not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The registry holds `connections_max` connections.
    #[error("this server holds {max} connections")]
    Full {
        /// The bound.
        max: usize,
    },
    /// The user has `devices_per_user_max` devices connected.
    #[error("at most {max} devices of one user may be connected at once")]
    TooManyDevices {
        /// The bound.
        max: usize,
    },
    /// A user or device id that is empty or longer than 128 bytes.
    #[error("a {0} id must be 1–128 bytes")]
    BadId(&'static str),
}

/// What a [`Connection`] hands to its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound<T = Bytes> {
    /// A frame (or whatever the server turns into one).
    Text(T),
    /// Close with this code; nothing follows.
    Close(CloseCode),
}

/// What a fan-out did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fanout {
    /// Outboxes the frame was put in.
    pub delivered: usize,
    /// Connections closed because their outbox was full.
    pub cut: usize,
}

#[derive(Debug)]
struct Entry<T> {
    id: u64,
    tx: mpsc::Sender<T>,
    close: Arc<OnceLock<CloseCode>>,
}

impl<T> Entry<T> {
    /// Ends the connection with `code`: its socket sends what is queued, then closes.
    fn end(&self, code: CloseCode) {
        let _ = self.close.set(code);
    }
}

#[derive(Debug)]
struct Inner<T> {
    users: HashMap<String, HashMap<String, Entry<T>, RandomState>, RandomState>,
    total: usize,
    next_id: u64,
}

/// The connections of one server, whose outboxes hold `T` (frames as [`Bytes`] by
/// default, or a server's own type). Clones share it.
#[derive(Debug)]
pub struct Registry<T = Bytes> {
    inner: Arc<Mutex<Inner<T>>>,
    config: RegistryConfig,
}

fn check_id(what: &'static str, id: &str) -> Result<(), RegisterError> {
    if id.is_empty() || id.len() > 128 { Err(RegisterError::BadId(what)) } else { Ok(()) }
}

impl<T> Clone for Registry<T> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner), config: self.config }
    }
}

impl<T: Clone> Registry<T> {
    /// An empty registry.
    ///
    /// # Panics
    /// Never: a zero `outbox` is taken as 1.
    #[must_use]
    pub fn new(config: RegistryConfig) -> Self {
        let config = RegistryConfig { outbox: config.outbox.max(1), ..config };
        Self {
            inner: Arc::new(Mutex::new(Inner { users: HashMap::default(), total: 0, next_id: 0 })),
            config,
        }
    }

    /// Registers `device` of `user`. An earlier connection of the same device is
    /// closed with [`CloseCode::Replaced`] and this one takes its place.
    ///
    /// # Errors
    /// The registry or the user's device count is at its bound, or an id is bad.
    pub fn register(&self, user: &str, device: &str) -> Result<Connection<T>, RegisterError> {
        check_id("user", user)?;
        check_id("device", device)?;
        let mut inner = self.inner.lock();
        let replacing = inner.users.get(user).is_some_and(|d| d.contains_key(device));
        if !replacing {
            if inner.total >= self.config.connections_max {
                return Err(RegisterError::Full { max: self.config.connections_max });
            }
            let devices = inner.users.get(user).map_or(0, HashMap::len);
            if devices >= self.config.devices_per_user_max {
                return Err(RegisterError::TooManyDevices {
                    max: self.config.devices_per_user_max,
                });
            }
            inner.total += 1;
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let (tx, rx) = mpsc::channel(self.config.outbox);
        let close = Arc::new(OnceLock::new());
        let entry = Entry { id, tx, close: Arc::clone(&close) };
        let old = inner.users.entry(user.to_owned()).or_default().insert(device.to_owned(), entry);
        drop(inner);
        if let Some(old) = old {
            old.end(CloseCode::Replaced);
        }
        Ok(Connection {
            id,
            user: user.to_owned(),
            device: device.to_owned(),
            rx,
            close,
            registry: self.clone(),
        })
    }

    /// Puts `frame` in the outbox of every connected device of `user`. A full outbox
    /// ends its connection with [`CloseCode::SlowConsumer`].
    pub fn send_to_user(&self, user: &str, frame: &T) -> Fanout {
        let mut fanout = Fanout::default();
        let mut inner = self.inner.lock();
        let Some(devices) = inner.users.get_mut(user) else { return fanout };
        devices.retain(|_, entry| match entry.tx.try_send(frame.clone()) {
            Ok(()) => {
                fanout.delivered += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                entry.end(CloseCode::SlowConsumer);
                fanout.cut += 1;
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        let left = devices.len();
        let removed = fanout.cut;
        if left == 0 {
            inner.users.remove(user);
        }
        inner.total -= removed;
        fanout
    }

    /// Puts `frame` in the outbox of `device` of `user`, if connected; `false` when
    /// it is not (or was cut for a full outbox).
    pub fn send_to_device(&self, user: &str, device: &str, frame: T) -> bool {
        let inner = self.inner.lock();
        let Some(entry) = inner.users.get(user).and_then(|d| d.get(device)) else {
            return false;
        };
        match entry.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                entry.end(CloseCode::SlowConsumer);
                drop(inner);
                self.remove_device(user, device, None);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Puts `frame` in every outbox (a server-wide notice); full ones are cut as in
    /// [`Registry::send_to_user`].
    pub fn send_to_all(&self, frame: &T) -> Fanout {
        let users: Vec<String> = self.inner.lock().users.keys().cloned().collect();
        let mut all = Fanout::default();
        for user in users {
            let f = self.send_to_user(&user, frame);
            all.delivered += f.delivered;
            all.cut += f.cut;
        }
        all
    }

    /// Closes every connection of `user` with `code`; returns how many.
    pub fn close_user(&self, user: &str, code: CloseCode) -> usize {
        let mut inner = self.inner.lock();
        let Some(devices) = inner.users.remove(user) else { return 0 };
        let n = devices.len();
        inner.total -= n;
        drop(inner);
        for entry in devices.values() {
            entry.end(code);
        }
        n
    }

    /// Closes every connection with `code` (a shutdown: [`CloseCode::GoingAway`]).
    pub fn close_all(&self, code: CloseCode) -> usize {
        let mut inner = self.inner.lock();
        let users = std::mem::take(&mut inner.users);
        inner.total = 0;
        drop(inner);
        let mut n = 0;
        for entry in users.values().flat_map(HashMap::values) {
            entry.end(code);
            n += 1;
        }
        n
    }

    /// The devices of `user` connected now, sorted.
    #[must_use]
    pub fn devices(&self, user: &str) -> Vec<String> {
        let mut devices: Vec<String> = self
            .inner
            .lock()
            .users
            .get(user)
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        devices.sort_unstable();
        devices
    }

    /// Connections registered now.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.inner.lock().total
    }

    /// Users with at least one connection now.
    #[must_use]
    pub fn users(&self) -> usize {
        self.inner.lock().users.len()
    }

    /// Removes `device` of `user` if its entry is connection `id` (any, for `None`).
    fn remove_device(&self, user: &str, device: &str, id: Option<u64>) {
        let mut inner = self.inner.lock();
        let Some(devices) = inner.users.get_mut(user) else { return };
        if devices.get(device).is_some_and(|e| id.is_none_or(|id| e.id == id)) {
            devices.remove(device);
            if devices.is_empty() {
                inner.users.remove(user);
            }
            inner.total -= 1;
        }
    }
}

/// One registered connection: its outbox and how it must end. Dropping it
/// unregisters it (unless a newer connection of the device has replaced it).
#[derive(Debug)]
pub struct Connection<T: Clone = Bytes> {
    id: u64,
    user: String,
    device: String,
    rx: mpsc::Receiver<T>,
    close: Arc<OnceLock<CloseCode>>,
    registry: Registry<T>,
}

impl<T: Clone> Connection<T> {
    /// The user.
    #[must_use]
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The device.
    #[must_use]
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The next thing to write: a queued frame, or — once the registry ended this
    /// connection and everything queued before that was handed out — the close.
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Outbound<T> {
        match self.rx.recv().await {
            Some(frame) => Outbound::Text(frame),
            // Every path that ends a connection sets its code, then drops its entry
            // (the only sender).
            None => Outbound::Close(self.close.get().copied().unwrap_or(CloseCode::GoingAway)),
        }
    }
}

impl<T: Clone> Drop for Connection<T> {
    fn drop(&mut self) {
        self.registry.remove_device(&self.user, &self.device, Some(self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(outbox: usize) -> Registry {
        Registry::new(RegistryConfig { connections_max: 4, devices_per_user_max: 2, outbox })
    }

    #[tokio::test]
    async fn a_user_frame_reaches_every_device_in_order() {
        let r = registry(8);
        let mut phone = r.register("ann", "phone").unwrap();
        let mut laptop = r.register("ann", "laptop").unwrap();
        for i in 0..3 {
            let f = r.send_to_user("ann", &Bytes::from(format!("m{i}")));
            assert_eq!(f, Fanout { delivered: 2, cut: 0 });
        }
        for c in [&mut phone, &mut laptop] {
            for i in 0..3 {
                assert_eq!(c.recv().await, Outbound::Text(Bytes::from(format!("m{i}"))));
            }
        }
        assert_eq!(r.devices("ann"), ["laptop", "phone"]);
        assert_eq!(r.send_to_user("bob", &Bytes::from("x")), Fanout::default());
    }

    #[tokio::test]
    async fn a_full_outbox_cuts_that_connection_after_what_it_holds() {
        let r = registry(2);
        let mut slow = r.register("ann", "phone").unwrap();
        let mut fast = r.register("ann", "laptop").unwrap();
        r.send_to_user("ann", &Bytes::from("1"));
        assert_eq!(fast.recv().await, Outbound::Text(Bytes::from("1")));
        r.send_to_user("ann", &Bytes::from("2"));
        assert_eq!(fast.recv().await, Outbound::Text(Bytes::from("2")));
        let f = r.send_to_user("ann", &Bytes::from("3"));
        assert_eq!(f, Fanout { delivered: 1, cut: 1 });
        assert_eq!(slow.recv().await, Outbound::Text(Bytes::from("1")));
        assert_eq!(slow.recv().await, Outbound::Text(Bytes::from("2")));
        assert_eq!(slow.recv().await, Outbound::Close(CloseCode::SlowConsumer));
        assert_eq!(fast.recv().await, Outbound::Text(Bytes::from("3")));
        assert_eq!(r.devices("ann"), ["laptop"]);
        assert_eq!(r.connections(), 1);
    }

    #[tokio::test]
    async fn the_same_device_again_replaces_the_older_connection() {
        let r = registry(8);
        let mut old = r.register("ann", "phone").unwrap();
        let mut new = r.register("ann", "phone").unwrap();
        assert_eq!(old.recv().await, Outbound::Close(CloseCode::Replaced));
        assert_eq!(r.connections(), 1);
        // Dropping the replaced one does not unregister its successor.
        drop(old);
        assert_eq!(r.connections(), 1);
        assert!(r.send_to_device("ann", "phone", Bytes::from("hi")));
        assert_eq!(new.recv().await, Outbound::Text(Bytes::from("hi")));
        drop(new);
        assert_eq!(r.connections(), 0);
        assert_eq!(r.users(), 0);
    }

    #[tokio::test]
    async fn bounds_refuse_with_typed_errors() {
        let r = registry(8);
        let _a = r.register("ann", "1").unwrap();
        let _b = r.register("ann", "2").unwrap();
        assert_eq!(r.register("ann", "3").unwrap_err(), RegisterError::TooManyDevices { max: 2 });
        let _c = r.register("bob", "1").unwrap();
        let _d = r.register("cat", "1").unwrap();
        assert_eq!(r.register("dan", "1").unwrap_err(), RegisterError::Full { max: 4 });
        assert_eq!(r.register("", "1").unwrap_err(), RegisterError::BadId("user"));
        assert_eq!(
            r.register("eve", &"x".repeat(129)).unwrap_err(),
            RegisterError::BadId("device")
        );
    }

    #[tokio::test]
    async fn close_user_and_close_all_end_connections_with_their_code() {
        let r = registry(8);
        let mut a = r.register("ann", "1").unwrap();
        let mut b = r.register("bob", "1").unwrap();
        assert_eq!(r.close_user("ann", CloseCode::TokenExpired), 1);
        assert_eq!(a.recv().await, Outbound::Close(CloseCode::TokenExpired));
        assert_eq!(r.close_all(CloseCode::GoingAway), 1);
        assert_eq!(b.recv().await, Outbound::Close(CloseCode::GoingAway));
        assert_eq!(r.connections(), 0);
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        for code in [
            CloseCode::Normal,
            CloseCode::GoingAway,
            CloseCode::ProtocolError,
            CloseCode::Unsupported,
            CloseCode::InvalidPayload,
            CloseCode::PolicyViolation,
            CloseCode::TooBig,
            CloseCode::InternalError,
            CloseCode::TryAgainLater,
            CloseCode::TokenExpired,
            CloseCode::Replaced,
            CloseCode::SlowConsumer,
            CloseCode::Unresponsive,
        ] {
            assert!(code.reason().len() <= 123);
            assert!((1000..5000).contains(&code.code()));
        }
    }
}
