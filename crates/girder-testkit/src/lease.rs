//! The conformance suite for `girder-lock` leases: [`lease_conformance`] checks the
//! [`LeaseStore`] contract step by step on a manual clock, and [`lease_history_run`]
//! drives many concurrent clients and records a [`LeaseHistory`] whose
//! [`LeaseHistory::check`] proves no two holders overlapped and tokens only grew.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use girder_core::{Clock, ManualClock};
use girder_lock::lease::{LeaseError, LeaseStore, MAX_KEY_BYTES, MAX_TTL_MS};

use tokio::sync::watch;

use crate::backends::unique_name;

/// How long a client of [`lease_history_run`] waits for a busy key's holder to finish
/// before the run counts as stuck.
const STUCK: Duration = Duration::from_secs(30);

/// Runs the [`LeaseStore`] suite on two handles of the *same* backend (two connections,
/// as two processes would have). Both stores must judge time by `clock`; the suite
/// moves it forward only (start it near real time for Redis, whose garbage-collection
/// expiry runs on real time).
///
/// Boundary semantics checked: a lease with `expires_at_ms = t` is live at `t - 1` and
/// expired — acquirable, no longer extendable or releasable — at exactly `t`.
///
/// # Panics
/// On the first violated guarantee, with a message naming it.
#[allow(clippy::too_many_lines)] // one linear story is easier to follow than fragments
pub async fn lease_conformance<S: LeaseStore>(a: &S, b: &S, clock: &ManualClock) {
    let prefix = unique_name("girder-test-lease");
    let key = |name: &str| format!("{prefix}/{name}");
    let ms = Duration::from_millis;
    let mut tokens = Vec::new();

    // Mutual exclusion: while a's lease is live nobody else gets the key, a included.
    let k = key("exclusive");
    let t0 = clock.now_ms();
    let la = a.try_acquire(&k, 100).await.unwrap().expect("a free key is acquired");
    assert_eq!(la.key(), k);
    assert_eq!(la.expires_at_ms(), t0 + 100, "expiry is the store's now + ttl");
    assert!(la.token() > 0, "tokens start above 0");
    tokens.push(la.token());
    assert_eq!(b.try_acquire(&k, 100).await.unwrap(), None, "second holder on a live lease");
    assert_eq!(a.try_acquire(&k, 100).await.unwrap(), None, "leases are not re-entrant");

    // Boundary: live at expires_at_ms - 1, expired at expires_at_ms.
    clock.set_ms(la.expires_at_ms() - 1);
    assert_eq!(b.try_acquire(&k, 100).await.unwrap(), None, "taken over 1 ms early");
    clock.set_ms(la.expires_at_ms());
    let lb = b.try_acquire(&k, 100).await.unwrap().expect("expired lease not taken over");
    assert!(lb.token() > la.token(), "takeover token {} <= {}", lb.token(), la.token());
    assert_ne!(lb.holder(), la.holder(), "every acquisition has its own holder id");
    tokens.push(lb.token());

    // The expired holder can neither extend nor release, and its release must not
    // remove the new holder's lease.
    assert_eq!(a.extend(&la, 100).await, Err(LeaseError::NotHolder), "extend of a stale lease");
    assert_eq!(a.release(&la).await, Err(LeaseError::NotHolder), "release of a stale lease");
    assert_eq!(
        a.try_acquire(&k, 100).await.unwrap(),
        None,
        "a stale release removed the new holder's lease"
    );

    // Extend moves expiry from now, keeps the token, and really protects the key.
    clock.advance(ms(50));
    let lb2 = b.extend(&lb, 500).await.expect("holder extends a live lease");
    assert_eq!(lb2.expires_at_ms(), clock.now_ms() + 500);
    assert_eq!((lb2.token(), lb2.holder(), lb2.key()), (lb.token(), lb.holder(), lb.key()));
    clock.set_ms(lb.expires_at_ms() + 10);
    assert_eq!(a.try_acquire(&k, 100).await.unwrap(), None, "extension not honoured");
    // A lease obtained through one handle can be extended through another.
    let lb3 = a.extend(&lb2, 500).await.expect("extend through the other handle");
    assert_eq!(lb3.token(), lb.token());
    // Extend exactly at expiry fails, and the key is free again.
    clock.set_ms(lb3.expires_at_ms());
    assert_eq!(b.extend(&lb3, 500).await, Err(LeaseError::NotHolder), "extend at expiry");
    assert_eq!(b.release(&lb3).await, Err(LeaseError::NotHolder), "release at expiry");
    let lc = a.try_acquire(&k, 100).await.unwrap().expect("expired, not taken over: acquirable");
    assert!(lc.token() > lb.token());
    tokens.push(lc.token());

    // Release frees the key at once (no time passes), once.
    a.release(&lc).await.expect("holder releases");
    assert_eq!(a.release(&lc).await, Err(LeaseError::NotHolder), "double release");
    assert_eq!(a.extend(&lc, 100).await, Err(LeaseError::NotHolder), "extend after release");
    let ld = b.try_acquire(&k, 100).await.unwrap().expect("released key not free");
    assert!(ld.token() > lc.token(), "token reused after release");
    tokens.push(ld.token());
    assert_eq!(a.release(&lc).await, Err(LeaseError::NotHolder), "old release hit new holder");
    assert_eq!(a.try_acquire(&k, 100).await.unwrap(), None, "new holder's lease removed");
    b.release(&ld).await.unwrap();

    // Many cycles, alternating handles and release vs expiry: tokens strictly increase.
    for i in 0..20_u64 {
        let (x, y) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let lease = x.try_acquire(&k, 10).await.unwrap().expect("free key");
        tokens.push(lease.token());
        assert_eq!(y.try_acquire(&k, 10).await.unwrap(), None);
        if i % 3 == 0 {
            clock.advance(ms(10));
            assert_eq!(y.release(&lease).await, Err(LeaseError::NotHolder));
        } else {
            y.release(&lease).await.expect("release through the other handle");
        }
    }
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens not strictly increasing: {tokens:?}");

    // Keys are independent: holding, extending or releasing one leaves another alone.
    let (k1, k2) = (key("one"), key("two"));
    let l1 = a.try_acquire(&k1, 100).await.unwrap().expect("k1 free");
    let l2 = b.try_acquire(&k2, 100).await.unwrap().expect("k2 free while k1 is held");
    b.release(&l2).await.unwrap();
    assert_eq!(b.try_acquire(&k1, 100).await.unwrap(), None, "releasing k2 freed k1");
    let l2 = b.try_acquire(&k2, 100).await.unwrap().expect("k2 free again");
    assert_eq!(a.release(&l1).await, Ok(()), "k1's holder releases despite activity on k2");
    b.release(&l2).await.unwrap();

    // Invalid input is refused with typed errors, before touching the backend.
    let ok = key("input");
    for ttl_ms in [0, MAX_TTL_MS + 1, u64::MAX] {
        assert_eq!(a.try_acquire(&ok, ttl_ms).await, Err(LeaseError::InvalidTtl { ttl_ms }));
    }
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    for bad in ["", long.as_str(), "nul\0key"] {
        assert_eq!(
            a.try_acquire(bad, 100).await,
            Err(LeaseError::InvalidKey { len: bad.len() }),
            "key of {} bytes",
            bad.len()
        );
    }
    let longest = format!("{prefix}/{}", "k".repeat(MAX_KEY_BYTES - prefix.len() - 1));
    assert_eq!(longest.len(), MAX_KEY_BYTES);
    let max = a.try_acquire(&longest, MAX_TTL_MS).await.unwrap().expect("limits are inclusive");
    assert_eq!(max.expires_at_ms(), clock.now_ms() + MAX_TTL_MS);
    assert_eq!(a.extend(&max, 0).await, Err(LeaseError::InvalidTtl { ttl_ms: 0 }));
    assert_eq!(
        a.extend(&max, MAX_TTL_MS + 1).await,
        Err(LeaseError::InvalidTtl { ttl_ms: MAX_TTL_MS + 1 })
    );
    a.release(&max).await.unwrap();
}

/// One acquisition as a client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEvent {
    /// Which client acquired.
    pub client: usize,
    /// The key acquired.
    pub key: String,
    /// The fencing token granted.
    pub token: u64,
    /// Client time when the acquire *response* arrived: the client believes it holds
    /// the key from here.
    pub acquired_at_ms: u64,
    /// Until when the client believed it held the key: the lease's expiry (after any
    /// extensions), or the time the release *request* was sent if earlier.
    pub held_until_ms: u64,
}

impl LeaseEvent {
    /// Whether the client held the key for a non-empty time `[acquired, held_until)`.
    #[must_use]
    pub fn held(&self) -> bool {
        self.acquired_at_ms < self.held_until_ms
    }
}

/// A record of acquisitions across clients, and the checker of its safety properties.
#[derive(Debug, Clone, Default)]
pub struct LeaseHistory {
    events: Vec<LeaseEvent>,
    /// Operations whose lease turned out to be lost (extend or release refused).
    lost: usize,
    /// Acquire attempts that found the key held.
    busy: usize,
}

impl LeaseHistory {
    /// An empty history.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one acquisition.
    pub fn record(&mut self, event: LeaseEvent) {
        self.events.push(event);
    }

    /// The recorded acquisitions, in recording order.
    #[must_use]
    pub fn events(&self) -> &[LeaseEvent] {
        &self.events
    }

    /// How many leases were found lost (expired or taken over) by extend or release.
    #[must_use]
    pub fn lost(&self) -> usize {
        self.lost
    }

    /// How many acquire attempts found the key held by someone else.
    #[must_use]
    pub fn busy(&self) -> usize {
        self.busy
    }

    /// How many acquisitions were held for a non-empty time (the ones the overlap
    /// check can say something about).
    #[must_use]
    pub fn held(&self) -> usize {
        self.events.iter().filter(|e| e.held()).count()
    }

    /// Checks, per key: no token was granted twice, and taken in token order, every
    /// non-empty hold `[acquired_at_ms, held_until_ms)` ends no later than the next
    /// one starts — so holds never overlap and token order is acquisition order.
    ///
    /// Sound when all clients read one clock that never goes back: a takeover needs the
    /// store's now to reach the old expiry, which precedes the new holder's
    /// `acquired_at_ms`, and a release request precedes the next grant. An empty hold
    /// (the response arrived after the lease had expired) claims nothing.
    ///
    /// # Errors
    /// A description of the first violation found.
    pub fn check(&self) -> Result<(), String> {
        let mut by_key: HashMap<&str, Vec<&LeaseEvent>> = HashMap::new();
        for event in &self.events {
            by_key.entry(&event.key).or_default().push(event);
        }
        let mut keys: Vec<_> = by_key.into_iter().collect();
        keys.sort_unstable_by_key(|(key, _)| *key);
        for (key, mut events) in keys {
            events.sort_by_key(|e| e.token);
            if let Some(w) = events.windows(2).find(|w| w[0].token == w[1].token) {
                return Err(format!(
                    "key {key}: token {} granted twice (clients {} and {})",
                    w[0].token, w[0].client, w[1].client
                ));
            }
            let held: Vec<_> = events.into_iter().filter(|e| e.held()).collect();
            if let Some(w) = held.windows(2).find(|w| w[0].held_until_ms > w[1].acquired_at_ms) {
                let (p, n) = (w[0], w[1]);
                return Err(format!(
                    "key {key}: client {} (token {}) held [{}, {}) overlapping client {} \
                     (token {}) from {}",
                    p.client,
                    p.token,
                    p.acquired_at_ms,
                    p.held_until_ms,
                    n.client,
                    n.token,
                    n.acquired_at_ms
                ));
            }
        }
        Ok(())
    }
}

/// A small deterministic generator (splitmix64), so the testkit needs no RNG crate.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `1 / n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n.max(1))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Runs `clients` concurrent tasks, client `i` on `stores[i % stores.len()]`, each doing
/// `ops_per_client` acquire attempts on `keys` keys (fresh names): hold for a few
/// yields, sometimes extend, then release. Returns what they saw; call
/// [`LeaseHistory::check`] on it.
///
/// Every store must judge time by `clock`. The clients themselves move it forward — a
/// holder by 1 ms every other step of its hold, every client by about 1 ms per round of
/// all clients' operations, plus rare jumps past every TTL — so leases both get released
/// and expire into takeovers, at any backend speed, without a single sleep. TTLs are
/// 5..=24 ms; holds are 0..=5 steps, one in ten 30 steps (those mostly expire). Use a
/// multi-thread runtime for real concurrency.
///
/// # Panics
/// If a store returns an error other than [`LeaseError::NotHolder`], or a client task
/// panics.
pub async fn lease_history_run<S: LeaseStore + 'static>(
    stores: Vec<Arc<S>>,
    clients: usize,
    keys: usize,
    ops_per_client: usize,
    clock: ManualClock,
) -> LeaseHistory {
    assert!(!stores.is_empty() && keys > 0, "need a store and a key");
    let prefix = unique_name("girder-test-lease-history");
    // Per key, a generation bumped whenever a holder finishes with it: a client that
    // found the key busy waits for the next bump instead of spinning on the backend.
    // Scheduling only — the checker, not this, judges safety.
    let keys: Arc<Vec<(String, watch::Sender<u64>)>> =
        Arc::new((0..keys).map(|k| (format!("{prefix}/{k}"), watch::Sender::new(0))).collect());
    let seed = u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap());
    let clients_u64 = u64::try_from(clients).unwrap_or(u64::MAX);
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let store = Arc::clone(&stores[client % stores.len()]);
        let keys = Arc::clone(&keys);
        let clock = clock.clone();
        let mut rng = SplitMix(seed ^ (client as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        tasks.spawn(async move {
            let mut history = LeaseHistory::new();
            // Each step, one client in `clients` moves time by 1 ms: ~1 ms per round.
            let step = |rng: &mut SplitMix| {
                if rng.one_in(clients_u64) {
                    clock.advance(Duration::from_millis(1));
                }
            };
            for _ in 0..ops_per_client {
                step(&mut rng);
                if rng.one_in(100 * clients_u64) {
                    // A pause long enough to expire every lease: the takeover case.
                    clock.advance(Duration::from_millis(30));
                }
                let (key, finished) = &keys[usize::try_from(rng.below(keys.len() as u64)).unwrap()];
                let mut finished_rx = finished.subscribe();
                let ttl_ms = 5 + rng.below(20);
                let Some(mut lease) = store.try_acquire(key, ttl_ms).await.unwrap() else {
                    history.busy += 1;
                    // Whoever holds the key bumps the generation when done with it, even
                    // if it bumped between our subscribe and now (then this is immediate).
                    let waited = tokio::time::timeout(STUCK, finished_rx.changed()).await;
                    assert!(waited.is_ok(), "a holder of {key} never finished");
                    continue;
                };
                let acquired_at_ms = clock.now_ms();
                let mut lost = false;
                let hold_steps = if rng.one_in(10) { 30 } else { rng.below(6) };
                for _ in 0..hold_steps {
                    tokio::task::yield_now().await;
                    // Holders move time too, so holds span time at any backend speed.
                    if rng.one_in(2) {
                        clock.advance(Duration::from_millis(1));
                    }
                    if rng.one_in(4) {
                        match store.extend(&lease, ttl_ms).await {
                            Ok(extended) => {
                                assert_eq!(extended.token(), lease.token(), "extend changed token");
                                lease = extended;
                            }
                            Err(LeaseError::NotHolder) => {
                                lost = true;
                                break;
                            }
                            Err(e) => panic!("extend: {e}"),
                        }
                    }
                }
                let held_until_ms = if lost {
                    lease.expires_at_ms()
                } else {
                    let sent_ms = clock.now_ms();
                    match store.release(&lease).await {
                        Ok(()) => {}
                        Err(LeaseError::NotHolder) => lost = true,
                        Err(e) => panic!("release: {e}"),
                    }
                    sent_ms.min(lease.expires_at_ms())
                };
                finished.send_modify(|generation| *generation += 1);
                history.lost += usize::from(lost);
                history.record(LeaseEvent {
                    client,
                    key: key.clone(),
                    token: lease.token(),
                    acquired_at_ms,
                    held_until_ms,
                });
            }
            history
        });
    }
    let mut history = LeaseHistory::new();
    while let Some(done) = tasks.join_next().await {
        let part = done.expect("a client task panicked");
        history.events.extend(part.events);
        history.lost += part.lost;
        history.busy += part.busy;
    }
    history
}

#[cfg(test)]
mod tests {
    use girder_core::SystemClock;
    use girder_lock::lease::{Lease, MemoryLeaseConfig, MemoryLeaseStore};
    use parking_lot::Mutex;

    use super::*;

    fn event(client: usize, token: u64, acquired_at_ms: u64, held_until_ms: u64) -> LeaseEvent {
        LeaseEvent { client, key: "k".to_owned(), token, acquired_at_ms, held_until_ms }
    }

    fn history(events: Vec<LeaseEvent>) -> LeaseHistory {
        LeaseHistory { events, ..LeaseHistory::default() }
    }

    #[test]
    fn checker_accepts_a_clean_history() {
        let h = history(vec![
            event(0, 1, 10, 20),
            event(1, 3, 20, 25), // starts exactly when the previous hold ends
            event(2, 4, 30, 30), // empty hold: claims nothing
            event(0, 7, 26, 40), // acquired out of recording order: sorted by token
            LeaseEvent { key: "other".to_owned(), ..event(3, 2, 10, 40) },
        ]);
        assert_eq!(h.check(), Ok(()));
        assert_eq!(h.held(), 4);
    }

    #[test]
    fn checker_catches_a_planted_overlap() {
        let h = history(vec![event(0, 1, 10, 20), event(1, 2, 19, 30)]);
        let err = h.check().unwrap_err();
        assert!(err.contains("overlapping") && err.contains("client 0"), "{err}");
    }

    #[test]
    fn checker_catches_tokens_out_of_acquisition_order() {
        // Disjoint holds, but the later hold has the lower token.
        let h = history(vec![event(0, 2, 10, 20), event(1, 1, 30, 40)]);
        assert!(h.check().unwrap_err().contains("overlapping"));
    }

    #[test]
    fn checker_catches_a_repeated_token() {
        let h = history(vec![event(0, 5, 10, 20), event(1, 5, 30, 40)]);
        let err = h.check().unwrap_err();
        assert!(err.contains("token 5 granted twice"), "{err}");
        // Even when one of them was an empty hold.
        let h = history(vec![event(0, 5, 10, 10), event(1, 5, 30, 40)]);
        assert!(h.check().unwrap_err().contains("granted twice"));
    }

    /// A broken backend: on a busy key it releases the live holder's lease behind its
    /// back and grants the key anyway (tokens still unique and increasing).
    struct Stealing {
        inner: MemoryLeaseStore,
        current: Mutex<HashMap<String, Lease>>,
    }

    impl LeaseStore for Stealing {
        async fn try_acquire(&self, key: &str, ttl_ms: u64) -> Result<Option<Lease>, LeaseError> {
            let mut lease = self.inner.try_acquire(key, ttl_ms).await?;
            if lease.is_none() {
                let victim = self.current.lock().get(key).cloned();
                if let Some(victim) = victim {
                    let _ = self.inner.release(&victim).await;
                }
                lease = self.inner.try_acquire(key, ttl_ms).await?;
            }
            if let Some(lease) = &lease {
                self.current.lock().insert(key.to_owned(), lease.clone());
            }
            Ok(lease)
        }
        async fn extend(&self, lease: &Lease, ttl_ms: u64) -> Result<Lease, LeaseError> {
            self.inner.extend(lease, ttl_ms).await
        }
        async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
            self.inner.release(lease).await
        }
    }

    fn memory(clock: &ManualClock) -> MemoryLeaseStore {
        MemoryLeaseStore::new(MemoryLeaseConfig::default(), Arc::new(clock.clone()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_run_catches_a_store_that_breaks_exclusion() {
        let clock = ManualClock::new(SystemClock.now_ms());
        let store = Arc::new(Stealing { inner: memory(&clock), current: Mutex::default() });
        let h = lease_history_run(vec![store], 8, 2, 200, clock).await;
        let err = h.check().unwrap_err();
        assert!(err.contains("overlapping"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_run_catches_handles_that_share_no_state() {
        // Two stores that should be one backend but are not: tokens repeat.
        let clock = ManualClock::new(SystemClock.now_ms());
        let stores = vec![Arc::new(memory(&clock)), Arc::new(memory(&clock))];
        let h = lease_history_run(stores, 8, 2, 200, clock).await;
        let err = h.check().unwrap_err();
        assert!(err.contains("granted twice"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_run_on_a_correct_store_passes_and_exercises_expiry() {
        let clock = ManualClock::new(SystemClock.now_ms());
        let store = Arc::new(memory(&clock));
        let h = lease_history_run(vec![store], 8, 2, 300, clock).await;
        h.check().unwrap();
        assert!(h.held() > 100, "too few non-empty holds to mean anything: {}", h.held());
        assert!(h.lost() > 0, "no lease expired under its holder");
        assert!(h.busy() > 0, "no contention");
    }
}
