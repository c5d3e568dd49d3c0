//! The conformance suite for [`VersionStore`] ("Pattern: Optimistic Locking with
//! Version Fields"): versions start at 1 and grow by one, a write naming a stale
//! version is refused and changes nothing, racing writers of one version produce
//! exactly one winner, and concurrent read-modify-write increments lose no update.

use std::future::Future;
use std::sync::Arc;

use girder_lock::retry::{RetryPolicy, UpdateError, update_with_retry};
use girder_lock::version::{VersionError, VersionStore, Versioned};

use crate::backends::unique_name;

/// Concurrent increments in the lost-update check.
const INCREMENTS: u64 = 48;
/// Concurrent compare-and-sets of one version in the single-winner check.
const RACERS: usize = 16;

/// Runs the whole suite. `make` opens a new handle on the *same* backend each time
/// (a new pool or connection, as another process would). Every key the suite
/// writes starts with the returned prefix, for the caller to delete.
///
/// # Panics
/// On the first violated guarantee, with a message naming it.
pub async fn version_conformance<S, F, Fut>(make: F) -> String
where
    S: VersionStore + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let a = Arc::new(make().await);
    let b = Arc::new(make().await);
    let prefix = unique_name("girder-test-ver");
    let key = |name: &str| format!("{prefix}:{name}");

    // Insert starts at version 1, once; every handle sees it, bytes intact.
    let k = key("basic");
    assert_eq!(a.get(&k).await.expect("get"), None, "absent key");
    let binary: Vec<u8> = (0..=255_u8).chain([0, 0]).collect();
    let first = a.insert(&k, &binary).await.expect("insert");
    assert_eq!(first, Versioned { value: binary.clone(), version: 1 });
    assert_eq!(b.insert(&k, b"again").await, Err(VersionError::Exists), "second insert");
    assert_eq!(b.get(&k).await.expect("get"), Some(first.clone()), "read through another handle");

    // Compare-and-set bumps the version by one; a stale version is refused and the
    // value stays the winner's.
    let second = b.compare_and_set(&k, 1, b"").await.expect("cas at v1");
    assert_eq!(second, Versioned { value: Vec::new(), version: 2 }, "empty values are values");
    assert_eq!(
        a.compare_and_set(&k, 1, b"stale").await,
        Err(VersionError::Conflict { expected: 1, current: Some(2) }),
        "a write naming a stale version"
    );
    assert_eq!(a.compare_and_set(&k, 3, b"future").await.err(), Some(conflict(3, Some(2))));
    assert_eq!(a.get(&k).await.expect("get"), Some(second), "a refused write changed the value");
    let third = a.compare_and_set(&k, 2, b"three").await.expect("cas at v2");
    assert_eq!(third.version, 3);

    // Absent keys conflict with no current version.
    let absent = key("absent");
    assert_eq!(a.compare_and_set(&absent, 1, b"x").await.err(), Some(conflict(1, None)));
    assert_eq!(a.delete(&absent, 1).await, Err(conflict(1, None)));

    // Delete also compares; afterwards the key starts over at version 1.
    assert_eq!(b.delete(&k, 2).await, Err(conflict(2, Some(3))), "delete at a stale version");
    assert_eq!(a.get(&k).await.expect("get").map(|v| v.version), Some(3), "refused delete");
    b.delete(&k, 3).await.expect("delete at v3");
    assert_eq!(a.get(&k).await.expect("get"), None, "deleted");
    assert_eq!(a.compare_and_set(&k, 3, b"gone").await.err(), Some(conflict(3, None)));
    assert_eq!(a.insert(&k, b"reborn").await.expect("insert").version, 1, "restart at 1");

    racing_writers_of_one_version_have_one_winner(&a, &b, &key("race")).await;
    update_with_retry_loses_nothing(&a, &b, &key("counter")).await;
    update_with_retry_reports_refusal_and_absence(&*a, &key("refuse")).await;
    prefix
}

fn conflict(expected: u64, current: Option<u64>) -> VersionError {
    VersionError::Conflict { expected, current }
}

/// Many compare-and-sets naming the same version at once: exactly one succeeds,
/// and the stored value is the winner's.
async fn racing_writers_of_one_version_have_one_winner<S: VersionStore + 'static>(
    a: &Arc<S>,
    b: &Arc<S>,
    key: &str,
) {
    a.insert(key, b"start").await.expect("insert");
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { a } else { b });
            let key = key.to_owned();
            tokio::spawn(async move {
                let value = format!("writer-{i}").into_bytes();
                (value.clone(), store.compare_and_set(&key, 1, &value).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("cas task panicked") {
            (value, Ok(stored)) => {
                assert_eq!(stored.version, 2);
                winners.push(value);
            }
            (_, Err(err)) => assert_eq!(err, conflict(1, Some(2)), "a loser's error"),
        }
    }
    assert_eq!(winners.len(), 1, "racing writers of version 1 all got {winners:?}");
    let stored = a.get(key).await.expect("get").expect("present");
    assert_eq!(stored, Versioned { value: winners.remove(0), version: 2 }, "the winner's value");
}

/// [`INCREMENTS`] concurrent read-modify-write increments of one counter through two
/// handles: the counter ends at exactly [`INCREMENTS`] (no lost update), its version
/// at `1 + INCREMENTS`, and the attempts reveal the conflicts that were retried.
async fn update_with_retry_loses_nothing<S: VersionStore + 'static>(
    a: &Arc<S>,
    b: &Arc<S>,
    key: &str,
) {
    a.insert(key, &0_u64.to_le_bytes()).await.expect("insert");
    // Generous but bounded: every task must finish even if it loses many races.
    let policy = RetryPolicy { max_attempts: 1_000, base_delay_ms: 1, max_delay_ms: 16 };
    let tasks: Vec<_> = (0..INCREMENTS)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { a } else { b });
            let key = key.to_owned();
            tokio::spawn(async move {
                update_with_retry(&*store, &key, &policy, |current| {
                    let n = u64::from_le_bytes(current.try_into().map_err(|_| "not a u64")?);
                    Ok::<_, &str>((n + 1).to_le_bytes().to_vec())
                })
                .await
            })
        })
        .collect();
    let mut attempts = 0;
    let mut versions = Vec::new();
    for task in tasks {
        let updated = task.await.expect("increment task panicked").expect("increment");
        attempts += u64::from(updated.attempts);
        versions.push(updated.versioned.version);
    }
    let stored = a.get(key).await.expect("get").expect("present");
    let value = u64::from_le_bytes(stored.value.as_slice().try_into().expect("8 bytes"));
    assert_eq!(value, INCREMENTS, "lost updates: {INCREMENTS} increments left {value}");
    assert_eq!(stored.version, 1 + INCREMENTS);
    versions.sort_unstable();
    let expected: Vec<u64> = (2..=1 + INCREMENTS).collect();
    assert_eq!(versions, expected, "each success wrote its own version");
    assert!(attempts >= INCREMENTS, "attempts are counted ({attempts})");
}

/// `update_with_retry` reports an absent key and a refusing update, writing nothing.
async fn update_with_retry_reports_refusal_and_absence<S: VersionStore>(store: &S, key: &str) {
    let policy = RetryPolicy::default();
    let absent = update_with_retry(store, key, &policy, |_| Ok::<_, ()>(Vec::new())).await;
    assert_eq!(absent, Err(UpdateError::NotFound));
    store.insert(key, b"keep").await.expect("insert");
    let refused = update_with_retry(store, key, &policy, |_| Err("no")).await;
    assert_eq!(refused, Err(UpdateError::Refused("no")));
    let stored = store.get(key).await.expect("get").expect("present");
    assert_eq!(stored, Versioned { value: b"keep".to_vec(), version: 1 }, "a refusal wrote");
}
