//! The matcher: every instance runs one. It claims waiting rides from the table
//! (never two matchers on one ride), closes lapsed offers, cancels rides past their
//! matching deadline, and offers each ride to one driver at a time under a lease on
//! that driver.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use girder_geo::index::{Center, GeoIndex, Search};
use girder_lock::lease::LeaseStore;
use girder_system::Shutdown;

use crate::ride::RideState;
use crate::store::RideRow;
use crate::{OfferView, Uber, UberError, signed, user_topic};

/// Rides claimed per round.
const BATCH: u32 = 32;
/// Rounds run back to back while each claims a full batch (a burst of requests),
/// before the loop looks at shutdown and waits for its tick again.
const FULL_ROUNDS_MAX: usize = 64;
/// A ride with no driver to offer it to is looked at again after this long.
const RETRY_MS: i64 = 1_000;
/// The lease outlives the offer's deadline by this margin, so the driver cannot be
/// offered another ride while the first offer could still be accepted.
const LEASE_MARGIN_MS: u64 = 1_000;

/// The lease key of offers to `driver`.
fn offer_key(driver: &str) -> String {
    format!("uber:offer:{driver}")
}

/// Runs rounds until shutdown: on every tick, and at once when a ride is requested,
/// declined or handed back on this instance. A round that claimed a full batch is
/// followed by another at once (up to [`FULL_ROUNDS_MAX`]): the rides behind a
/// burst do not wait a tick per batch.
pub(crate) async fn run(uber: Arc<Uber>, shutdown: Shutdown) {
    let tick = Duration::from_millis(uber.config.match_tick_ms);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = uber.wake_matcher.notified() => {}
            () = tokio::time::sleep(tick) => {}
        }
        for _ in 0..FULL_ROUNDS_MAX {
            match round(&uber).await {
                Ok(n) if n == BATCH as usize => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "an Uber matching round failed; the next one retries");
                    break;
                }
            }
        }
    }
}

/// One round: claims up to [`BATCH`] waiting rides and works each.
///
/// # Errors
/// The store or an index failed; claimed rides are retried once their claim runs out.
pub(crate) async fn round(uber: &Uber) -> Result<usize, UberError> {
    let now = uber.now_ms();
    let claim = now + signed(uber.config.claim_ms);
    let rides = uber.store.claim_waiting(now, claim, BATCH).await?;
    let n = rides.len();
    for ride in rides {
        match_one(uber, ride).await?;
    }
    Ok(n)
}

async fn match_one(uber: &Uber, mut ride: RideRow) -> Result<(), UberError> {
    let now = uber.now_ms();
    if let (Some(driver), Some(token)) = (ride.offer_driver.clone(), ride.offer_token) {
        // Claimed again only once the offer's deadline passed: it lapsed.
        uber.store.expire_offer(&ride.id, &driver, token, now).await?;
        uber.counters.lapsed.fetch_add(1, Ordering::Relaxed);
        uber.release_held(&driver).await;
        let claim = ride.claim_until_ms;
        match uber.store.ride(&ride.id).await? {
            Some(fresh) if fresh.state == RideState::Requested.as_str() => {
                ride = RideRow { claim_until_ms: claim, ..fresh };
            }
            // Cancelled by its rider meanwhile.
            _ => return Ok(()),
        }
    }
    if now >= ride.match_deadline_ms {
        let cancelled = uber
            .store
            .transition(
                &ride.id,
                RideState::Requested,
                ride.version,
                RideState::Cancelled,
                Some("no_driver"),
                now,
            )
            .await?;
        if cancelled {
            uber.counters.no_driver.fetch_add(1, Ordering::Relaxed);
            if let Some(after) = uber.store.ride(&ride.id).await? {
                uber.publish_ride(&after).await;
            }
        }
        return Ok(());
    }
    let tried = uber.store.offered_drivers(&ride.id).await?;
    for driver in candidates(uber, &ride).await? {
        if tried.contains(&driver) {
            continue;
        }
        // The indexes may lag a driver going off duty (a fix taken on another
        // instance just before) or taking a ride; the table has the last word.
        match uber.store.driver_status(&driver).await? {
            (true, None) => {}
            (true, Some(_)) => continue,
            (false, _) => {
                uber.available.remove(&[driver.as_str()]).await?;
                continue;
            }
        }
        let ttl = uber.config.offer_timeout_ms + LEASE_MARGIN_MS;
        let lease = match uber.leases.try_acquire(&offer_key(&driver), ttl).await {
            Ok(Some(lease)) => lease,
            // Another ride's offer holds this driver.
            Ok(None) => continue,
            Err(e) => return Err(UberError::Backend(e.to_string())),
        };
        let now = uber.now_ms();
        let deadline = now + signed(uber.config.offer_timeout_ms);
        let token = i64::try_from(lease.token()).unwrap_or(i64::MAX);
        if !uber
            .store
            .record_offer(&ride.id, ride.claim_until_ms, &driver, token, deadline, now)
            .await?
        {
            // The ride moved on (cancelled by its rider) or the claim was lost.
            if let Err(e) = uber.leases.release(&lease).await {
                tracing::debug!(error = %e, "an unused offer lease runs out on its own");
            }
            return Ok(());
        }
        uber.held.lock().insert(driver.clone(), lease);
        uber.counters.offers.fetch_add(1, Ordering::Relaxed);
        let offer = OfferView::new(&ride, token, deadline);
        let frame = serde_json::json!({ "type": "offer", "offer": offer });
        uber.publish(&user_topic(&driver), frame.to_string().into_bytes()).await;
        return Ok(());
    }
    // Nobody free now: look again shortly (a driver may come on duty or into range).
    uber.store.reclaim(&ride.id, ride.claim_until_ms, now + RETRY_MS).await?;
    Ok(())
}

/// The drivers a ride may be offered to, best first: an airport zone's queue for a
/// pickup inside one, then the free drivers nearest the pickup.
async fn candidates(uber: &Uber, ride: &RideRow) -> Result<Vec<String>, UberError> {
    let pickup = girder_geo::Point::new(ride.pickup_lat, ride.pickup_lon)
        .map_err(|e| UberError::Invalid(e.to_string()))?;
    let mut out = Vec::new();
    if let Some(zone) = uber.zones.airport_at(pickup) {
        for (driver, _) in uber.store.queue(&zone, 16).await? {
            // Only drivers still free and on duty: the index is the truth for that.
            if uber.available.position(&driver).await?.is_some() {
                out.push(driver);
            }
        }
    }
    let count = NonZeroUsize::new(uber.config.candidates.max(1)).unwrap_or(NonZeroUsize::MIN);
    let query = Search::radius(Center::At(pickup), uber.config.search_radius_m).limit(count);
    for hit in uber.available.search(&query).await? {
        if !out.iter().any(|d| **d == *hit.member) {
            out.push(hit.member.to_string());
        }
    }
    Ok(out)
}
