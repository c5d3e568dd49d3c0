//! The conformance suite for [`ReservationStore`] ("Pattern: Status-Based
//! Workflow"): holds are all-or-nothing, expiry frees items at once (on a manual
//! clock), a stale hold can neither confirm nor release what someone else now holds,
//! confirms are idempotent, pages and sweeps are bounded, and under heavy
//! concurrency no item is ever sold twice.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use girder_core::{Clock, ManualClock};
use girder_lock::reservation::{
    ConfirmError, Hold, HoldError, ItemStatus, ReservationConfig, ReservationError,
    ReservationStore,
};
use girder_lock::retry::RetryPolicy;
use parking_lot::Mutex;

use crate::backends::unique_name;

/// The config every store under test is opened with: small bounds, so the suite
/// can hit each of them.
#[must_use]
pub fn suite_config() -> ReservationConfig {
    ReservationConfig {
        max_items_per_hold: 8,
        max_ttl_ms: 10 * 60 * 1_000,
        max_items_per_add: 200,
        max_page_items: 50,
        max_sweep_batch: 4,
        retry: RetryPolicy { max_attempts: 50, base_delay_ms: 1, max_delay_ms: 50 },
    }
}

/// Items in the concurrency check.
pub const RACE_ITEMS: usize = 100;
/// Hold attempts in the concurrency check.
pub const RACE_ATTEMPTS: usize = 10_000;
/// Attempts in flight at once in the concurrency check.
pub const RACE_IN_FLIGHT: usize = 256;

/// Runs the whole suite: [`reservation_conformance`], then
/// [`no_item_is_sold_twice`]. `make_store(config)` opens a new handle on the *same*
/// backend each time (a new pool or connection, as another process would), reading
/// time from `clock`, which the suite moves. The two parts run one after the other
/// because sweeps act on every pool of the backend. Returns the pools it created,
/// for the caller to delete from a shared database.
///
/// # Panics
/// On the first violated guarantee, with a message naming it.
pub async fn reservation_suite<S, F, Fut>(make_store: F, clock: &ManualClock) -> Vec<String>
where
    S: ReservationStore + 'static,
    F: Fn(ReservationConfig) -> Fut,
    Fut: Future<Output = S>,
{
    let mut pools = reservation_conformance(&make_store, clock).await;
    pools.push(no_item_is_sold_twice(&make_store).await);
    pools
}

/// The functional checks: everything but the concurrency check. Returns the pools
/// it created.
///
/// # Panics
/// On the first violated guarantee, with a message naming it.
pub async fn reservation_conformance<S, F, Fut>(make_store: F, clock: &ManualClock) -> Vec<String>
where
    S: ReservationStore + 'static,
    F: Fn(ReservationConfig) -> Fut,
    Fut: Future<Output = S>,
{
    let a = make_store(suite_config()).await;
    let b = make_store(suite_config()).await;
    let pool = unique_name("girder-test-event");
    let seats: Vec<String> = (1..=9).map(|i| format!("s{i}")).collect();
    let seat_refs: Vec<&str> = seats.iter().map(String::as_str).collect();

    adding_is_idempotent_and_bounded(&a, &b, &pool, &seat_refs).await;
    holds_are_validated(&a, &pool).await;
    holds_are_all_or_nothing(&a, &b, &pool, clock).await;
    expiry_frees_at_once_and_stale_holds_are_powerless(&a, &b, &pool, clock).await;
    released_holds_cannot_confirm(&a, &b, &pool).await;
    let paged = pages_are_ordered_and_bounded(&a, clock).await;
    let swept = sweeps_are_bounded_and_reset_only_expired(&a, &b, clock).await;
    vec![pool, paged, swept]
}

async fn adding_is_idempotent_and_bounded<S: ReservationStore>(
    a: &S,
    b: &S,
    pool: &str,
    seats: &[&str],
) {
    assert_eq!(a.status(pool, "s1").await, Err(ReservationError::NotFound), "before adding");
    assert_eq!(a.add_items(pool, &seats[..5]).await, Ok(5));
    assert_eq!(b.add_items(pool, seats).await, Ok(seats.len() - 5), "re-adding counts only new");
    assert_eq!(a.add_items(pool, seats).await, Ok(0));
    for seat in seats {
        assert_eq!(b.status(pool, seat).await, Ok(ItemStatus::Available), "{seat}");
    }
    let too_many: Vec<String> = (0..201).map(|i| format!("x{i}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    assert_eq!(
        a.add_items(pool, &too_many).await,
        Err(ReservationError::TooMany { requested: 201, max: 200 })
    );
    assert!(matches!(a.add_items(pool, &[""]).await, Err(ReservationError::InvalidItems(_))));
    assert_eq!(a.status(pool, "x0").await, Err(ReservationError::NotFound), "a refused add wrote");
}

async fn holds_are_validated<S: ReservationStore>(a: &S, pool: &str) {
    let nine = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"];
    assert_eq!(
        a.hold(pool, &nine, "alice", 1_000).await,
        Err(HoldError::TooMany { requested: 9, max: 8 })
    );
    assert!(matches!(a.hold(pool, &[], "alice", 1_000).await, Err(HoldError::InvalidItems(_))));
    assert!(matches!(
        a.hold(pool, &["s1", "s1"], "alice", 1_000).await,
        Err(HoldError::InvalidItems(_))
    ));
    for ttl_ms in [0, 10 * 60 * 1_000 + 1] {
        assert_eq!(
            a.hold(pool, &["s1"], "alice", ttl_ms).await,
            Err(HoldError::InvalidTtl { ttl_ms, max_ms: 10 * 60 * 1_000 })
        );
    }
    assert_eq!(
        a.hold(pool, &["s1", "nope", "s2"], "alice", 1_000).await,
        Err(HoldError::NotFound { items: vec!["nope".to_owned()] })
    );
    assert_eq!(
        a.hold("girder-test-no-such-pool", &["s1"], "alice", 1_000).await,
        Err(HoldError::NotFound { items: vec!["s1".to_owned()] })
    );
    for seat in ["s1", "s2"] {
        assert_eq!(a.status(pool, seat).await, Ok(ItemStatus::Available), "a refused hold held");
    }
}

async fn holds_are_all_or_nothing<S: ReservationStore>(
    a: &S,
    b: &S,
    pool: &str,
    clock: &ManualClock,
) {
    let now = clock.now_ms();
    let alice = a.hold(pool, &["s1", "s2"], "alice", 60_000).await.expect("alice holds s1, s2");
    assert_eq!(alice.items, ["s1", "s2"]);
    assert_eq!((alice.pool.as_str(), alice.holder.as_str()), (pool, "alice"));
    assert_eq!(alice.until_ms, now + 60_000);
    let reserved = ItemStatus::Reserved { holder: "alice".to_owned(), until_ms: now + 60_000 };
    assert_eq!(b.status(pool, "s2").await, Ok(reserved));

    // Bob wants s2 and s3: s2 is taken, so he gets neither.
    assert_eq!(
        b.hold(pool, &["s3", "s2"], "bob", 60_000).await,
        Err(HoldError::Unavailable { items: vec!["s2".to_owned()] })
    );
    assert_eq!(a.status(pool, "s3").await, Ok(ItemStatus::Available), "half a hold was taken");
    let again = a.hold(pool, &["s2", "s1"], "alice", 60_000).await;
    assert!(
        matches!(again, Err(HoldError::Unavailable { ref items }) if items.len() == 2),
        "{again:?}"
    );

    // Confirm sells both, through another handle; confirming again is a no-op success.
    b.confirm(&alice).await.expect("confirm");
    a.confirm(&alice).await.expect("a second confirm is idempotent");
    for seat in ["s1", "s2"] {
        assert_eq!(a.status(pool, seat).await, Ok(ItemStatus::Sold { holder: "alice".to_owned() }));
    }
    assert_eq!(
        b.hold(pool, &["s1"], "bob", 60_000).await,
        Err(HoldError::Unavailable { items: vec!["s1".to_owned()] }),
        "a sold item was held"
    );
    assert_eq!(a.release(&alice).await, Ok(0), "release un-sold an item");
    assert_eq!(a.status(pool, "s1").await, Ok(ItemStatus::Sold { holder: "alice".to_owned() }));

    // Sold is final: even after the hold's time, the sale stands and confirm stays Ok.
    clock.advance(Duration::from_millis(120_000));
    a.confirm(&alice).await.expect("confirm after the deadline of a sold hold");
    assert_eq!(a.status(pool, "s2").await, Ok(ItemStatus::Sold { holder: "alice".to_owned() }));
}

async fn expiry_frees_at_once_and_stale_holds_are_powerless<S: ReservationStore>(
    a: &S,
    b: &S,
    pool: &str,
    clock: &ManualClock,
) {
    let bob = a.hold(pool, &["s3", "s4"], "bob", 1_000).await.expect("bob holds s3, s4");
    clock.advance(Duration::from_millis(999));
    assert!(matches!(b.status(pool, "s3").await, Ok(ItemStatus::Reserved { .. })), "early expiry");
    assert_eq!(
        b.hold(pool, &["s4"], "carol", 1_000).await,
        Err(HoldError::Unavailable { items: vec!["s4".to_owned()] })
    );
    // At until_ms the hold is over: no sweep needed.
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        b.status(pool, "s3").await,
        Ok(ItemStatus::Available),
        "expired hold still reserved"
    );
    let carol = b.hold(pool, &["s3", "s5"], "carol", 5_000).await.expect("carol takes s3 at once");

    // Bob's stale hold can neither buy nor free what carol holds.
    assert_eq!(
        a.confirm(&bob).await,
        Err(ConfirmError::NotHolder { items: vec!["s3".to_owned()] })
    );
    assert_eq!(a.release(&bob).await, Ok(0), "a stale hold released something");
    let carols = ItemStatus::Reserved { holder: "carol".to_owned(), until_ms: carol.until_ms };
    assert_eq!(a.status(pool, "s3").await, Ok(carols));
    assert_eq!(a.status(pool, "s4").await, Ok(ItemStatus::Available));

    // The same holder holding again gets a new hold id; a hold with someone else's id
    // (or a forged one) cannot confirm.
    let forged = Hold { hold_id: "forged".to_owned(), ..carol.clone() };
    assert_eq!(
        b.confirm(&forged).await,
        Err(ConfirmError::NotHolder { items: vec!["s3".to_owned(), "s5".to_owned()] })
    );
    assert_eq!(b.release(&forged).await, Ok(0));
    a.confirm(&carol).await.expect("carol confirms in time");
    assert_eq!(
        a.confirm(&bob).await,
        Err(ConfirmError::NotHolder { items: vec!["s3".to_owned()] })
    );

    // A lapsed hold nobody replaced: confirm reports the expiry and sells nothing.
    let dave = a.hold(pool, &["s6"], "dave", 100).await.expect("dave holds s6");
    clock.advance(Duration::from_millis(100));
    assert_eq!(b.confirm(&dave).await, Err(ConfirmError::Expired));
    assert_eq!(a.status(pool, "s6").await, Ok(ItemStatus::Available), "an expired hold sold");
}

async fn released_holds_cannot_confirm<S: ReservationStore>(a: &S, b: &S, pool: &str) {
    let erin = a.hold(pool, &["s7", "s8"], "erin", 60_000).await.expect("erin holds s7, s8");
    assert_eq!(b.release(&erin).await, Ok(2));
    assert_eq!(a.status(pool, "s7").await, Ok(ItemStatus::Available));
    assert_eq!(a.release(&erin).await, Ok(0), "released twice");
    assert_eq!(b.confirm(&erin).await, Err(ConfirmError::Expired), "a released hold sold");
    let frank = b.hold(pool, &["s8"], "frank", 60_000).await.expect("frank takes s8 at once");
    assert_eq!(a.release(&erin).await, Ok(0), "a released hold freed frank's item");
    assert!(
        matches!(a.status(pool, "s8").await, Ok(ItemStatus::Reserved { holder, .. }) if holder == "frank")
    );
    assert_eq!(
        a.confirm(&erin).await,
        Err(ConfirmError::NotHolder { items: vec!["s8".to_owned()] })
    );
    b.confirm(&frank).await.expect("frank confirms");
}

async fn pages_are_ordered_and_bounded<S: ReservationStore>(a: &S, clock: &ManualClock) -> String {
    let pool = unique_name("girder-test-page");
    // 60 items, added out of order; ids sort bytewise.
    let items: Vec<String> = (0..60).rev().map(|i| format!("r{i:02}")).collect();
    let refs: Vec<&str> = items.iter().map(String::as_str).collect();
    assert_eq!(a.add_items(&pool, &refs).await, Ok(60));
    let held = a.hold(&pool, &["r05"], "gina|ops", 1_000).await.expect("hold r05");
    let first = a.list(&pool, None, 1_000).await.expect("list");
    assert_eq!(first.len(), 50, "a page exceeded max_page_items");
    let names: Vec<&str> = first.iter().map(|(item, _)| item.as_str()).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("r{i:02}")).collect();
    assert_eq!(names, expected, "pages are in item order");
    assert_eq!(
        first[5].1,
        ItemStatus::Reserved { holder: "gina|ops".to_owned(), until_ms: held.until_ms }
    );
    assert_eq!(first[4].1, ItemStatus::Available);
    let rest = a.list(&pool, Some("r49"), 1_000).await.expect("list");
    let names: Vec<&str> = rest.iter().map(|(item, _)| item.as_str()).collect();
    assert_eq!(names.len(), 10);
    assert_eq!((names[0], names[9]), ("r50", "r59"));
    let small = a.list(&pool, Some("r03"), 2).await.expect("list");
    assert_eq!(small.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(), ["r04", "r05"]);
    assert_eq!(a.list(&pool, Some("r59"), 10).await, Ok(Vec::new()));
    assert_eq!(a.list("girder-test-no-such-pool", None, 10).await, Ok(Vec::new()));
    // Expiry shows in listings too.
    clock.advance(Duration::from_millis(1_000));
    let page = a.list(&pool, Some("r04"), 1).await.expect("list");
    assert_eq!(page, [("r05".to_owned(), ItemStatus::Available)]);
    pool
}

async fn sweeps_are_bounded_and_reset_only_expired<S: ReservationStore>(
    a: &S,
    b: &S,
    clock: &ManualClock,
) -> String {
    let pool = unique_name("girder-test-sweep");
    let items: Vec<String> = (0..7).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = items.iter().map(String::as_str).collect();
    a.add_items(&pool, &refs).await.expect("add");
    let before = clock.now_ms();
    for item in &refs[..6] {
        a.hold(&pool, &[item], "hank", 1_000).await.expect("hold");
    }
    let keeper = a.hold(&pool, &["w6"], "ivy", 600_000).await.expect("long hold");
    clock.advance(Duration::from_millis(1_000));

    // Other pools on a shared database may add expired holds of their own, so the
    // counts are bounds, and which rows were reset is read back below.
    assert_eq!(b.sweep(2).await, Ok(2), "a sweep ignored its batch size");
    assert_eq!(b.sweep(0).await, Ok(0));
    let capped = a.sweep(1_000).await.expect("sweep");
    assert!(capped <= 4, "a sweep exceeded max_sweep_batch: {capped}");
    let mut rounds = 0;
    while a.sweep(1_000).await.expect("sweep") > 0 {
        rounds += 1;
        assert!(rounds < 10_000, "sweeping never finished");
    }

    // Turn the clock back to before the deadlines: a row the sweep did not reset
    // would read as RESERVED again; swept rows stay AVAILABLE.
    clock.set_ms(before);
    for item in &refs[..6] {
        assert_eq!(a.status(&pool, item).await, Ok(ItemStatus::Available), "{item} not swept");
    }
    let ivy = ItemStatus::Reserved { holder: "ivy".to_owned(), until_ms: keeper.until_ms };
    assert_eq!(a.status(&pool, "w6").await, Ok(ivy), "a live hold was swept");
    clock.advance(Duration::from_millis(1_000));
    b.confirm(&keeper).await.expect("the live hold still confirms");
    pool
}

/// [`RACE_ATTEMPTS`] hold-then-confirm attempts on random single items of a pool of
/// [`RACE_ITEMS`], [`RACE_IN_FLIGHT`] at a time, across two handles: every item ends
/// SOLD exactly once, to the hold whose confirm succeeded. Run it on a multi-thread
/// runtime; the clock does not move, so no hold expires.
///
/// Returns the pool it created.
///
/// # Panics
/// If an item is sold twice, a sale is lost, or any operation fails other than
/// with [`HoldError::Unavailable`].
pub async fn no_item_is_sold_twice<S, F, Fut>(make_store: F) -> String
where
    S: ReservationStore + 'static,
    F: Fn(ReservationConfig) -> Fut,
    Fut: Future<Output = S>,
{
    let stores =
        [Arc::new(make_store(suite_config()).await), Arc::new(make_store(suite_config()).await)];
    let pool = unique_name("girder-test-race");
    let items: Vec<String> = (0..RACE_ITEMS).map(|i| format!("seat-{i:03}")).collect();
    let refs: Vec<&str> = items.iter().map(String::as_str).collect();
    assert_eq!(stores[0].add_items(&pool, &refs).await, Ok(RACE_ITEMS));

    let next = Arc::new(AtomicUsize::new(0));
    let sales: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let workers: Vec<_> = (0..RACE_IN_FLIGHT)
        .map(|w| {
            let store = Arc::clone(&stores[w % 2]);
            let (pool, next, sales) = (pool.clone(), Arc::clone(&next), Arc::clone(&sales));
            tokio::spawn(async move {
                loop {
                    let attempt = next.fetch_add(1, Ordering::Relaxed);
                    if attempt >= RACE_ATTEMPTS {
                        return;
                    }
                    let item = format!("seat-{:03}", mix(attempt as u64) % RACE_ITEMS as u64);
                    let holder = format!("buyer-{attempt}");
                    match store.hold(&pool, &[&item], &holder, 60_000).await {
                        Ok(hold) => {
                            store.confirm(&hold).await.expect("an unexpired hold confirms");
                            sales.lock().push((item, holder, hold.hold_id));
                        }
                        Err(HoldError::Unavailable { items }) => assert_eq!(items, [item]),
                        Err(err) => panic!("hold failed: {err}"),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("race worker panicked");
    }

    let sales = std::mem::take(&mut *sales.lock());
    let mut buyer_of: HashMap<&str, &str> = HashMap::new();
    for (item, holder, _) in &sales {
        if let Some(first) = buyer_of.insert(item, holder) {
            panic!("{item} sold twice: to {first} and to {holder}");
        }
    }
    let hold_ids: HashSet<&str> = sales.iter().map(|(_, _, id)| id.as_str()).collect();
    assert_eq!(hold_ids.len(), sales.len(), "hold ids repeat");
    assert_eq!(sales.len(), RACE_ITEMS, "every item sells exactly once");
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = stores[1].list(&pool, after.as_deref(), 50).await.expect("list");
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        listed.extend(page);
    }
    assert_eq!(listed.len(), RACE_ITEMS);
    for (item, status) in listed {
        let buyer = buyer_of[item.as_str()].to_owned();
        assert_eq!(status, ItemStatus::Sold { holder: buyer }, "{item} sold to someone else");
    }
    pool
}

/// A fixed, well-mixed pseudo-random number from `n` (SplitMix64's finaliser).
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
