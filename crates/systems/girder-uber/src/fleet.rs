//! Drivers' locations: fixes into the geo indexes, onto the ride's stream, and to
//! the zone leader; and, when the indexes are each instance's own, every other
//! instance's fixes into this instance's indexes.
//!
//! A fix needs the driver's status (on duty? holding a ride?), which lives in the
//! table; it is cached per driver for [`STATUS_CACHE_MS`], and dropped here when
//! this instance changes it. Another instance's change reaches this cache within
//! that time; meanwhile a matcher might see a driver as free who is not, which the
//! matcher's own check and the acceptance's unique index both catch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use girder_geo::Point;
use girder_geo::index::{GeoIndex, Update};
use girder_realtime::{Event, Pattern, SlowConsumer, SubscribeConfig};
use girder_system::Shutdown;
use serde::{Deserialize, Serialize};

use crate::{Uber, UberConfig, UberError, fixed_topic, interval_for, ride_topic};

/// How long a driver's status is trusted without reading the table again, ms.
pub(crate) const STATUS_CACHE_MS: i64 = 1_000;
/// The most drivers whose status is cached.
const CACHE_MAX: usize = 200_000;
/// The topic every fix is published on.
pub(crate) const LOC_TOPIC: &str = "uber.loc";

/// A driver's status, as a fix needs it.
#[derive(Debug, Clone)]
struct Status {
    online: bool,
    ride: Option<String>,
    read_ms: i64,
}

/// One fix, as it travels between instances and to the zone leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Loc {
    /// The instance that took the fix.
    pub i: String,
    /// The driver.
    pub d: String,
    /// Where (absent: the driver left the indexes).
    pub p: Option<(f64, f64)>,
    /// When the instance took it, ms (its clock).
    pub t: i64,
    /// Free to take a ride.
    pub free: bool,
}

/// The per-instance driver status cache.
#[derive(Debug)]
pub(crate) struct Fleet {
    status: parking_lot::Mutex<HashMap<String, Status>>,
    ttl_ms: u64,
}

/// What a batch of fixes did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reported {
    pub accepted: usize,
    pub on_ride: bool,
    pub next_interval_ms: u64,
}

impl Fleet {
    pub(crate) fn new(config: &UberConfig) -> Self {
        Self { status: parking_lot::Mutex::new(HashMap::new()), ttl_ms: config.driver_ttl_ms }
    }

    /// Drops a driver's cached status (this instance just changed it).
    pub(crate) fn forget(&self, driver: &str) {
        self.status.lock().remove(driver);
    }

    async fn status(&self, uber: &Uber, driver: &str) -> Result<Status, UberError> {
        let now = uber.now_ms();
        if let Some(s) = self.status.lock().get(driver)
            && now - s.read_ms < STATUS_CACHE_MS
        {
            return Ok(s.clone());
        }
        let (online, ride) = uber.store.driver_status(driver).await?;
        let status = Status { online, ride, read_ms: now };
        let mut cache = self.status.lock();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, s| now - s.read_ms < STATUS_CACHE_MS);
        }
        if cache.len() < CACHE_MAX {
            cache.insert(driver.to_owned(), status.clone());
        }
        Ok(status)
    }
}

impl Uber {
    /// Takes a driver's fixes, oldest first; the newest is where the driver is.
    ///
    /// # Errors
    /// [`UberError::Conflict`] for a driver not on duty; an index failed.
    pub(crate) async fn report(
        &self,
        driver: &str,
        fixes: &[(Point, i64)],
    ) -> Result<Reported, UberError> {
        let Some(&(last, at_ms)) = fixes.last() else {
            return Err(UberError::Invalid("at least one fix".into()));
        };
        for (p, _) in fixes {
            p.check_indexable().map_err(|e| UberError::Invalid(e.to_string()))?;
        }
        let status = self.fleet.status(self, driver).await?;
        if !status.online {
            return Err(UberError::Conflict("go on duty before reporting locations".into()));
        }
        let free = status.ride.is_none();
        self.apply(driver, Some(last), free).await?;
        self.counters.fixes.fetch_add(fixes.len() as u64, Ordering::Relaxed);
        let loc = Loc {
            i: self.instance.clone(),
            d: driver.to_owned(),
            p: Some((last.lat(), last.lon())),
            // This server's time, not the client's: the fences order a driver's
            // fixes by it and the airport queues by it, which a client's clock (or
            // a client) must not decide.
            t: self.now_ms(),
            free,
        };
        self.publish(&fixed_topic(LOC_TOPIC), serde_json::to_vec(&loc).unwrap_or_default()).await;
        if let Some(ride) = &status.ride {
            let frame = serde_json::json!({
                "type": "driver", "driver": driver, "lat": last.lat(), "lon": last.lon(), "at_ms": at_ms,
            });
            self.publish(&ride_topic(ride), frame.to_string().into_bytes()).await;
        }
        Ok(Reported {
            accepted: fixes.len(),
            on_ride: !free,
            next_interval_ms: interval_for(!free, false).as_millis() as u64,
        })
    }

    /// Puts a driver at `at` in the indexes (free or not), or takes them out.
    async fn apply(&self, driver: &str, at: Option<Point>, free: bool) -> Result<(), UberError> {
        match at {
            Some(point) => {
                let update = [Update { member: driver, point, ttl_ms: Some(self.fleet.ttl_ms) }];
                self.positions.upsert(&update).await?;
                if free {
                    self.available.upsert(&update).await?;
                } else {
                    self.available.remove(&[driver]).await?;
                }
            }
            None => {
                self.positions.remove(&[driver]).await?;
                self.available.remove(&[driver]).await?;
            }
        }
        Ok(())
    }

    /// Takes a driver who just took a ride out of the free index and every airport
    /// queue, and tells the other instances.
    ///
    /// # Errors
    /// The store or an index failed.
    pub(crate) async fn mark_busy(&self, driver: &str) -> Result<(), UberError> {
        self.fleet.forget(driver);
        self.available.remove(&[driver]).await?;
        self.store.queue_leave(None, driver).await?;
        let at = self.positions.position(driver).await?;
        let loc = Loc {
            i: self.instance.clone(),
            d: driver.to_owned(),
            p: at.map(|p| (p.lat(), p.lon())),
            t: self.now_ms(),
            free: false,
        };
        if loc.p.is_some() {
            self.publish(&fixed_topic(LOC_TOPIC), serde_json::to_vec(&loc).unwrap_or_default())
                .await;
        }
        Ok(())
    }

    /// Puts a driver on or off duty. Off duty takes them out of both indexes and
    /// every airport queue at once.
    ///
    /// # Errors
    /// The store or an index failed.
    pub(crate) async fn set_duty(&self, driver: &str, online: bool) -> Result<(), UberError> {
        self.store.set_online(driver, online, self.now_ms()).await?;
        self.fleet.forget(driver);
        if !online {
            self.apply(driver, None, false).await?;
            self.store.queue_leave(None, driver).await?;
            let loc = Loc {
                i: self.instance.clone(),
                d: driver.to_owned(),
                p: None,
                t: self.now_ms(),
                free: false,
            };
            self.publish(&fixed_topic(LOC_TOPIC), serde_json::to_vec(&loc).unwrap_or_default())
                .await;
        }
        Ok(())
    }
}

/// Keeps this instance's own indexes current with every other instance's fixes;
/// nothing to do when the indexes are shared in Redis or there is no broker.
pub(crate) async fn run_replica(uber: Arc<Uber>, shutdown: Shutdown) {
    if uber.shared_index || uber.broker.is_none() {
        return shutdown.wait().await;
    }
    let pattern = Pattern::new(LOC_TOPIC).unwrap_or_else(|_| unreachable!("a valid pattern"));
    let mut sub = match uber
        .hub
        .subscribe(&pattern, SubscribeConfig { capacity: 65_536, policy: SlowConsumer::DropOldest })
    {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!(error = %e, "Uber cannot follow other instances' fixes");
            return shutdown.wait().await;
        }
    };
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            () = &mut stop => return,
            event = sub.recv() => event,
        };
        match event {
            Ok(Event::Message(m)) => {
                let Ok(loc) = serde_json::from_slice::<Loc>(&m.payload) else { continue };
                if loc.i == uber.instance {
                    continue;
                }
                let at = loc.p.and_then(|(lat, lon)| Point::new(lat, lon).ok());
                if let Err(e) = uber.apply(&loc.d, at, loc.free).await {
                    tracing::debug!(error = %e, "another instance's fix was not applied");
                }
            }
            // Missed fixes are repaired by the drivers' next ones (every few seconds).
            Ok(Event::Gap { .. }) => {}
            Err(_) => return,
        }
    }
}
