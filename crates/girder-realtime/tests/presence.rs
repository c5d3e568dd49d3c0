//! One presence suite on both stores: devices, join and leave, leases that run out,
//! last seen, bad ids.

use std::sync::Arc;
use std::time::Duration;

use girder_core::{Clock, ManualClock};
use girder_realtime::presence::{Change, MemoryPresence, Online, PresenceError, PresenceStore};

fn online(users: &[(&str, usize)]) -> Vec<Online> {
    users.iter().map(|(u, d)| Online { user: (*u).to_owned(), devices: *d }).collect()
}

/// `ttl` is the lease used; `pass` lets more than `ttl` pass.
async fn suite<S: PresenceStore, F, Fut>(store: &S, room: &str, ttl: u64, pass: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Two devices: online once, counted twice; the user goes offline with the last.
    assert_eq!(store.heartbeat(room, "ann", "phone", ttl).await.unwrap(), Change::CameOnline);
    assert_eq!(store.heartbeat(room, "ann", "laptop", ttl).await.unwrap(), Change::Unchanged);
    assert_eq!(store.heartbeat(room, "ann", "phone", ttl).await.unwrap(), Change::Unchanged);
    assert_eq!(store.heartbeat(room, "bob", "phone", ttl).await.unwrap(), Change::CameOnline);
    assert_eq!(store.online(room).await.unwrap(), online(&[("ann", 2), ("bob", 1)]));
    assert_eq!(store.leave(room, "ann", "phone").await.unwrap(), Change::Unchanged);
    assert_eq!(store.leave(room, "ann", "laptop").await.unwrap(), Change::WentOffline);
    assert_eq!(store.leave(room, "ann", "laptop").await.unwrap(), Change::Unchanged, "twice");
    assert_eq!(store.leave(room, "nobody", "x").await.unwrap(), Change::Unchanged);
    assert!(store.last_seen("ann").await.unwrap().is_some());
    assert_eq!(store.last_seen("never").await.unwrap(), None);
    // Bob stops beating (his instance died): offline once the lease runs out.
    pass().await;
    assert_eq!(store.online(room).await.unwrap(), online(&[]), "never online forever");
    assert_eq!(store.expire(room).await.unwrap(), ["bob".to_owned()]);
    assert_eq!(store.expire(room).await.unwrap(), Vec::<String>::new(), "reported once");
    assert_eq!(store.heartbeat(room, "bob", "phone", ttl).await.unwrap(), Change::CameOnline);
    // Bad ids are typed errors and change nothing.
    for (r, u, d) in [("", "u", "d"), (room, "", "d"), (room, "u", "a|b"), (room, "u\n", "d")] {
        assert!(
            matches!(store.heartbeat(r, u, d, ttl).await, Err(PresenceError::BadId(_))),
            "{r:?} {u:?} {d:?}"
        );
    }
    assert_eq!(store.online(room).await.unwrap(), online(&[("bob", 1)]));
}

#[tokio::test]
async fn memory_presence_keeps_the_contract() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = MemoryPresence::new(Arc::clone(&clock) as Arc<dyn Clock>);
    let c = Arc::clone(&clock);
    suite(&store, "video-1", 30_000, move || {
        c.advance(Duration::from_secs(31));
        async {}
    })
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_presence_keeps_the_contract_across_instances() {
    use girder_core::services::{Service, require};
    use girder_realtime::presence_redis::RedisPresence;
    let Some(url) = require(Service::Redis, "redis_presence_keeps_the_contract_across_instances")
    else {
        return;
    };
    let prefix = format!("girder-test:presence:{}", std::process::id());
    let conn = girder_testkit::backends::redis_manager(&url).await.unwrap();
    let store = RedisPresence::new(conn.clone(), prefix.clone());
    suite(&store, "video-1", 300, || tokio::time::sleep(Duration::from_millis(400))).await;
    // A second instance's store sees the same presence.
    let other = RedisPresence::new(
        girder_testkit::backends::redis_manager(&url).await.unwrap(),
        prefix.clone(),
    );
    assert_eq!(other.online("video-1").await.unwrap(), online(&[("bob", 1)]));
    assert_eq!(other.heartbeat("video-1", "bob", "tablet", 300).await.unwrap(), Change::Unchanged);
    let mut conn = conn;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
    }
}
