//! Zones and what they drive: surge per H3 cell inside surge zones, first-in
//! first-out queues of free drivers inside airport zones, and the "driver
//! arriving" notice.
//!
//! Every instance keeps the zones (re-read from the table when any instance draws or
//! erases one, and every [`RELOAD_EVERY`] in case it missed that) and the last surge
//! map. One instance at a time — the holder of
//! the zone lease — follows every fix from every instance through the hub and runs
//! the geofences over them ([`girder_geo::fence`]): a free driver entering an
//! airport zone joins its queue and one leaving it (or taking a ride) leaves; a
//! driver coming within the arriving radius of their ride's pickup makes the rider
//! get an `arriving` event, once per approach. An accepted ride's fence is drawn as
//! soon as the leader hears of the acceptance (and on every tick, in case it missed it). The same instance recomputes surge
//! every `surge_interval_ms` and publishes it to every instance. If it dies, its
//! lease runs out and another instance takes over: fences start again from the next
//! fixes, queue entries keep their first entry time, and the arriving notice is
//! marked in the ride's row so it is not sent twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use girder_geo::Point;
use girder_geo::fence::{Area, Circle, GeoBox, Polygon};
use girder_geo::index::GeoIndex;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::{LatLon, SurgeCell, SurgeView, ZoneView};
use crate::store::Store;
use crate::{Uber, UberConfig, UberError};

/// How often each instance re-reads the zones.
pub(crate) const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// The most zones.
const ZONES_MAX: usize = 256;
/// The most vertices of a polygon zone.
const VERTICES_MAX: usize = 1_000;

/// What a zone is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ZoneKind {
    /// Prices follow demand over supply per H3 cell inside it.
    Surge,
    /// Free drivers inside it queue; pickups inside it go to the queue's head first.
    Airport,
}

impl ZoneKind {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Surge => "surge",
            Self::Airport => "airport",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "surge" => Some(Self::Surge),
            "airport" => Some(Self::Airport),
            _ => None,
        }
    }
}

/// A zone's area.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Shape {
    /// A circle.
    Circle {
        /// Centre latitude.
        #[schema(minimum = -85.05112878, maximum = 85.05112878)]
        lat: f64,
        /// Centre longitude.
        #[schema(minimum = -180, maximum = 180)]
        lon: f64,
        /// Radius in metres, 1–100,000.
        #[schema(minimum = 1, maximum = 100000)]
        radius_m: f64,
    },
    /// A box between two parallels and two meridians (west > east crosses the
    /// antimeridian).
    Box {
        /// Southern edge.
        #[schema(minimum = -85.05112878, maximum = 85.05112878)]
        south: f64,
        /// Western edge.
        #[schema(minimum = -180, maximum = 180)]
        west: f64,
        /// Northern edge.
        #[schema(minimum = -85.05112878, maximum = 85.05112878)]
        north: f64,
        /// Eastern edge.
        #[schema(minimum = -180, maximum = 180)]
        east: f64,
    },
    /// A simple polygon, 3–1,000 vertices in order (not closed: the last joins the
    /// first).
    Polygon {
        /// The vertices.
        #[schema(min_items = 3, max_items = 1000)]
        points: Vec<LatLon>,
    },
}

/// An airport zone's queue.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AirportQueueView {
    /// The zone.
    pub zone: String,
    /// Drivers first in first, with when they entered (ms).
    pub drivers: Vec<QueuedDriver>,
}

/// One queued driver.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueuedDriver {
    /// The driver.
    pub driver: String,
    /// When they entered the zone, ms.
    pub entered_ms: i64,
}

/// A zone as every instance holds it.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    pub name: String,
    pub kind: ZoneKind,
    pub shape: Shape,
    pub fence: Area,
    /// A circle around it: (centre, radius m), for searching the index.
    pub bound: (Point, f64),
}

/// One cell's surge, as computed by the leader.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct CellSurge {
    pub demand: u64,
    pub supply: u64,
    pub multiplier: f64,
}

/// The last surge map.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SurgeMap {
    pub computed_ms: i64,
    pub cells: HashMap<u64, CellSurge>,
}

/// Zones and the surge map of one instance.
#[derive(Debug)]
pub(crate) struct Zones {
    list: parking_lot::RwLock<Arc<Vec<Zone>>>,
    surge: parking_lot::RwLock<Arc<SurgeMap>>,
    resolution: u8,
}

/// Checks a shape and makes its fence.
pub(crate) fn fence_of(shape: &Shape) -> Result<Area, UberError> {
    let invalid = |e: &dyn std::fmt::Display| UberError::Invalid(format!("shape: {e}"));
    let point = |lat: f64, lon: f64| LatLon { lat, lon }.point("shape");
    match shape {
        Shape::Circle { lat, lon, radius_m } => {
            if !radius_m.is_finite() || !(1.0..=100_000.0).contains(radius_m) {
                return Err(UberError::Invalid("shape: radius_m 1–100000".into()));
            }
            Circle::new(point(*lat, *lon)?, *radius_m).map(Area::from).map_err(|e| invalid(&e))
        }
        Shape::Box { south, west, north, east } => {
            GeoBox::new(point(*south, *west)?, point(*north, *east)?)
                .map(Area::from)
                .map_err(|e| invalid(&e))
        }
        Shape::Polygon { points } => {
            if points.len() < 3 || points.len() > VERTICES_MAX {
                return Err(UberError::Invalid(format!("shape: 3–{VERTICES_MAX} points")));
            }
            let vertices =
                points.iter().map(|p| p.point("shape")).collect::<Result<Vec<_>, _>>()?;
            Polygon::new(&vertices).map(Area::from).map_err(|e| invalid(&e))
        }
    }
}

impl Zones {
    /// The zones in the table.
    pub(crate) async fn load(store: &Store, config: &UberConfig) -> Result<Self, UberError> {
        let resolution = config.surge_resolution;
        girder_geo::cells::mean_edge_m(resolution)
            .map_err(|e| UberError::Invalid(e.to_string()))?;
        let zones = Self {
            list: parking_lot::RwLock::new(Arc::new(Vec::new())),
            surge: parking_lot::RwLock::new(Arc::new(SurgeMap::default())),
            resolution,
        };
        zones.reload(store).await?;
        Ok(zones)
    }

    /// Re-reads the zones; a row this build cannot read is skipped and logged.
    pub(crate) async fn reload(&self, store: &Store) -> Result<(), UberError> {
        let mut list = Vec::new();
        for row in store.zones().await? {
            let parsed = ZoneKind::parse(&row.kind)
                .zip(serde_json::from_str::<Shape>(&row.shape).ok())
                .and_then(|(kind, shape)| fence_of(&shape).ok().map(|fence| (kind, shape, fence)));
            match parsed {
                Some((kind, shape, fence)) => {
                    let bound = bound_of(&shape);
                    list.push(Zone { name: row.name, kind, shape, fence, bound });
                }
                None => tracing::warn!(zone = %row.name, "an unreadable zone is skipped"),
            }
        }
        *self.list.write() = Arc::new(list);
        Ok(())
    }

    pub(crate) fn list(&self) -> Arc<Vec<Zone>> {
        Arc::clone(&self.list.read())
    }

    /// The surge multiplier at `at`: 1 outside surge zones and in calm cells.
    pub(crate) fn surge_at(&self, at: Point) -> f64 {
        let list = self.list();
        if !list.iter().any(|z| z.kind == ZoneKind::Surge && z.fence.contains(at)) {
            return 1.0;
        }
        let Ok(cell) = girder_geo::cells::Cell::of(at, self.resolution) else { return 1.0 };
        self.surge.read().cells.get(&cell.raw()).map_or(1.0, |c| c.multiplier)
    }

    /// The airport zone containing `at`, if any (the first by name).
    pub(crate) fn airport_at(&self, at: Point) -> Option<String> {
        self.list()
            .iter()
            .find(|z| z.kind == ZoneKind::Airport && z.fence.contains(at))
            .map(|z| z.name.clone())
    }

    pub(crate) fn set_surge(&self, map: SurgeMap) {
        *self.surge.write() = Arc::new(map);
    }

    pub(crate) fn surge_view(&self) -> SurgeView {
        let map = Arc::clone(&self.surge.read());
        let mut cells: Vec<SurgeCell> = map
            .cells
            .iter()
            .filter_map(|(raw, c)| {
                let cell = girder_geo::cells::Cell::from_raw(*raw).ok()?;
                let center = cell.center();
                Some(SurgeCell {
                    cell: cell.to_string(),
                    center: LatLon { lat: center.lat(), lon: center.lon() },
                    demand: c.demand,
                    supply: c.supply,
                    multiplier: c.multiplier,
                })
            })
            .collect();
        cells.sort_by(|a, b| a.cell.cmp(&b.cell));
        SurgeView { resolution: self.resolution, computed_ms: map.computed_ms, cells }
    }
}

impl Uber {
    /// Draws or redraws a zone.
    pub(crate) async fn put_zone(
        &self,
        name: &str,
        kind: ZoneKind,
        shape: &Shape,
    ) -> Result<(), UberError> {
        fence_of(shape)?;
        let list = self.zones.list();
        if list.len() >= ZONES_MAX && !list.iter().any(|z| z.name == name) {
            return Err(UberError::Conflict(format!("at most {ZONES_MAX} zones")));
        }
        let json = serde_json::to_string(shape).map_err(|e| UberError::Invalid(e.to_string()))?;
        self.store.put_zone(name, kind.as_str(), &json, self.now_ms()).await?;
        self.zones.reload(&self.store).await?;
        self.publish(&crate::fixed_topic(ZONES_TOPIC), name.as_bytes().to_vec()).await;
        Ok(())
    }

    /// Erases a zone and its queue.
    pub(crate) async fn delete_zone(&self, name: &str) -> Result<bool, UberError> {
        let gone = self.store.delete_zone(name).await?;
        self.zones.reload(&self.store).await?;
        self.publish(&crate::fixed_topic(ZONES_TOPIC), name.as_bytes().to_vec()).await;
        Ok(gone)
    }

    pub(crate) fn zone_views(&self) -> Vec<ZoneView> {
        self.zones
            .list()
            .iter()
            .map(|z| ZoneView { name: z.name.clone(), kind: z.kind, shape: z.shape.clone() })
            .collect()
    }

    pub(crate) async fn queue_view(&self, zone: &str) -> Result<AirportQueueView, UberError> {
        if !self.zones.list().iter().any(|z| z.name == zone && z.kind == ZoneKind::Airport) {
            return Err(UberError::NotFound);
        }
        let drivers = self
            .store
            .queue(zone, 1_000)
            .await?
            .into_iter()
            .map(|(driver, entered_ms)| QueuedDriver { driver, entered_ms })
            .collect();
        Ok(AirportQueueView { zone: zone.to_owned(), drivers })
    }

    pub(crate) fn surge_view(&self) -> SurgeView {
        self.zones.surge_view()
    }
}

/// A circle that holds the whole shape: its own for a circle; for a box or a
/// polygon, the centre of its extent and the farthest vertex (a box's far corner).
fn bound_of(shape: &Shape) -> (Point, f64) {
    let fallback = (
        Point::new(0.0, 0.0).unwrap_or_else(|_| unreachable!("a valid point")),
        girder_geo::index::EXTENT_M_MAX,
    );
    let from = |lat: f64, lon: f64, corners: &[(f64, f64)]| {
        let Ok(centre) = Point::new(lat, lon) else { return fallback };
        let radius = corners
            .iter()
            .filter_map(|&(a, b)| Point::new(a, b).ok())
            .map(|p| girder_geo::distance::haversine_m(centre, p))
            .fold(0.0, f64::max);
        // A metre of slack over the rounding of the index's stored positions.
        (centre, radius + 1.0)
    };
    match shape {
        Shape::Circle { lat, lon, radius_m } => {
            Point::new(*lat, *lon).map_or(fallback, |c| (c, radius_m + 1.0))
        }
        Shape::Box { south, west, north, east } => {
            let span = if west <= east { east - west } else { east + 360.0 - west };
            let mut mid = west + span / 2.0;
            if mid > 180.0 {
                mid -= 360.0;
            }
            // Meridians converge: the far corner is on the parallel nearer the equator
            // for the east–west part, so measure to all four corners.
            from(
                (south + north) / 2.0,
                mid,
                &[(*south, *west), (*south, *east), (*north, *west), (*north, *east)],
            )
        }
        Shape::Polygon { points } => {
            let lat = points.iter().map(|p| p.lat).sum::<f64>() / points.len().max(1) as f64;
            let lon = points.iter().map(|p| p.lon).sum::<f64>() / points.len().max(1) as f64;
            let corners: Vec<(f64, f64)> = points.iter().map(|p| (p.lat, p.lon)).collect();
            from(lat, lon, &corners)
        }
    }
}

/// Surge now: demand is the pickups requested within `surge_window_ms` inside
/// surge zones, supply the free drivers inside them, both counted per H3 cell; a
/// cell's multiplier is demand over supply, at least 1, at most `surge_max`, in
/// steps of 0.1 (the maximum where there is demand and no supply).
pub(crate) async fn compute_surge(uber: &Uber) -> Result<SurgeMap, UberError> {
    use girder_geo::cells::{CellCounts, demand_over_supply};
    use girder_geo::index::{Center, GeoIndex, Search};
    const CELLS_MAX: usize = 100_000;
    const PICKUPS_MAX: u32 = 100_000;
    let list = uber.zones.list();
    let surge: Vec<&Zone> = list.iter().filter(|z| z.kind == ZoneKind::Surge).collect();
    let now = uber.now_ms();
    let res = uber.config.surge_resolution;
    let counts = || CellCounts::new(res, CELLS_MAX).map_err(|e| UberError::Invalid(e.to_string()));
    let (mut demand, mut supply) = (counts()?, counts()?);
    if surge.is_empty() {
        return Ok(SurgeMap { computed_ms: now, cells: HashMap::new() });
    }
    let since = now - crate::signed(uber.config.surge_window_ms);
    for (lat, lon) in uber.store.pickups_since(since, PICKUPS_MAX).await? {
        let Ok(p) = Point::new(lat, lon) else { continue };
        if surge.iter().any(|z| z.fence.contains(p)) {
            // Full counts stop adding; the map is then a floor, never an invention.
            let _ = demand.add(p);
        }
    }
    let mut seen = std::collections::HashSet::new();
    for zone in &surge {
        let (centre, radius) = zone.bound;
        let query = Search {
            order: None,
            ..Search::radius(Center::At(centre), radius.min(girder_geo::index::EXTENT_M_MAX))
        };
        for hit in uber.available.search(&query).await? {
            if zone.fence.contains(hit.point) && seen.insert(hit.member.clone()) {
                let _ = supply.add(hit.point);
            }
        }
    }
    let cells: Vec<_> = demand.iter().chain(supply.iter()).map(|(c, _)| c).collect();
    let rows = demand_over_supply(&demand, &supply, &cells)
        .map_err(|e| UberError::Invalid(e.to_string()))?;
    let max = uber.config.surge_max;
    let cells = rows
        .into_iter()
        .map(|r| {
            let multiplier = match r.ratio() {
                None => max,
                Some(x) => ((x.clamp(1.0, max)) * 10.0).round() / 10.0,
            };
            (r.cell.raw(), CellSurge { demand: r.demand, supply: r.supply, multiplier })
        })
        .collect();
    Ok(SurgeMap { computed_ms: now, cells })
}

/// The lease whose holder runs the fences and computes surge.
const LEADER_KEY: &str = "uber:zones";
/// The leader's lease lasts this many reload ticks without an extension.
const LEADER_TICKS: u32 = 3;
/// Rides whose arriving fence the leader keeps at most.
const APPROACHING_MAX: u32 = 10_000;
/// The topic surge maps are published on.
pub(crate) const SURGE_TOPIC: &str = "uber.surge";
/// The topic a closed offer is announced on (payload: the driver), so the instance
/// holding its lease lets it go.
pub(crate) const CLOSED_TOPIC: &str = "uber.closed";
/// The topic an accepted ride is announced on (payload: the ride), so the leader
/// draws its arriving fence at once rather than on its next tick.
pub(crate) const MATCHED_TOPIC: &str = "uber.matched";
/// The topic a drawn or erased zone is announced on, so every instance reloads the
/// zones (and the leader redraws its fences) at once rather than on its next tick.
pub(crate) const ZONES_TOPIC: &str = "uber.zones";

/// A driver as a fence-set member.
fn driver_member(driver: &str) -> String {
    format!("d:{driver}")
}

/// A ride's pickup as a fence-set member (the target of its arriving fence).
fn pickup_member(ride: &str) -> String {
    format!("p:{ride}")
}

/// A ride's arriving fence.
fn arriving_fence(ride: &str) -> String {
    format!("a:{ride}")
}

/// An airport zone's fence.
fn zone_fence(zone: &str) -> String {
    format!("z:{zone}")
}

/// What the leader keeps between fixes.
struct Leader {
    lease: girder_lock::lease::Lease,
    fences: girder_geo::fence::FenceSet,
    /// The airport zones fenced, with their shapes (redrawn when a shape changes).
    airports: HashMap<String, Shape>,
    /// The rides fenced, with their drivers.
    approaching: HashMap<String, String>,
    /// The (zone, driver) queue entries this leader wrote, so that a fix inside a
    /// zone writes only when the driver's queue standing changes. Another instance
    /// taking a driver out (a ride accepted) also announces the driver as busy.
    queued: std::collections::HashSet<(String, String)>,
    last_surge_ms: i64,
}

/// Every instance: keeps the zones current, takes surge maps and closed offers from
/// the hub, and tries to lead. The leader also follows every fix.
pub(crate) async fn run(uber: Arc<Uber>, shutdown: girder_system::Shutdown) {
    use girder_realtime::{Event, Pattern, SlowConsumer, SubscribeConfig};
    let pattern = Pattern::new("uber.*").unwrap_or_else(|_| unreachable!("a valid pattern"));
    let config = SubscribeConfig { capacity: 65_536, policy: SlowConsumer::DropOldest };
    let mut sub = match uber.hub.subscribe(&pattern, config) {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!(error = %e, "Uber cannot follow zones, surge or fixes");
            return shutdown.wait().await;
        }
    };
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leader: Option<Leader> = None;
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {
                if let Err(e) = uber.zones.reload(&uber.store).await {
                    tracing::warn!(error = %e, "Uber zones were not reloaded");
                }
                leader = lead(&uber, leader.take()).await;
            }
            event = sub.recv() => match event {
                Ok(Event::Message(m)) => match m.topic.as_str() {
                    crate::fleet::LOC_TOPIC => {
                        if let Some(l) = leader.as_mut() {
                            let Ok(loc) = serde_json::from_slice::<crate::fleet::Loc>(&m.payload) else { continue };
                            if let Err(e) = follow(&uber, l, &loc).await {
                                tracing::warn!(error = %e, "a fix's zone events were not applied");
                            }
                        }
                    }
                    SURGE_TOPIC => {
                        if let Ok(map) = serde_json::from_slice::<SurgeMap>(&m.payload) {
                            uber.zones.set_surge(map);
                        }
                    }
                    ZONES_TOPIC => {
                        if let Err(e) = uber.zones.reload(&uber.store).await {
                            tracing::warn!(error = %e, "Uber zones were not reloaded");
                        }
                        if let Some(l) = leader.as_mut()
                            && let Err(e) = redraw(&uber, l).await
                        {
                            tracing::warn!(error = %e, "Uber's fences were not redrawn");
                        }
                    }
                    MATCHED_TOPIC => {
                        if let Some(l) = leader.as_mut()
                            && let Err(e) = redraw(&uber, l).await
                        {
                            tracing::warn!(error = %e, "Uber's fences were not redrawn");
                        }
                    }
                    CLOSED_TOPIC => {
                        if let Ok(driver) = std::str::from_utf8(&m.payload) {
                            uber.release_held(driver).await;
                        }
                    }
                    _ => {}
                },
                // Missed fixes: the drivers' next ones repair the fences.
                Ok(Event::Gap { .. }) => {}
                Err(_) => break,
            }
        }
    }
    if let Some(l) = leader {
        use girder_lock::lease::LeaseStore;
        // Let the next instance lead at once.
        let _ = uber.leases.release(&l.lease).await;
    }
}

/// One tick of leadership: extends or takes the lease; as leader, redraws the
/// airport fences, the arriving fences, and recomputes surge when it is due.
async fn lead(uber: &Uber, leader: Option<Leader>) -> Option<Leader> {
    use girder_lock::lease::LeaseStore;
    let ttl = u64::try_from(RELOAD_EVERY.as_millis()).unwrap_or(u64::MAX) * u64::from(LEADER_TICKS);
    let mut leader = match leader {
        Some(mut l) => match uber.leases.extend(&l.lease, ttl).await {
            Ok(lease) => {
                l.lease = lease;
                l
            }
            Err(e) => {
                tracing::info!(error = %e, "this instance no longer leads Uber's zones");
                return None;
            }
        },
        None => match uber.leases.try_acquire(LEADER_KEY, ttl).await {
            Ok(Some(lease)) => {
                tracing::info!("this instance leads Uber's zones");
                let fences = girder_geo::fence::FenceSet::new(girder_geo::fence::FenceConfig {
                    max_fences: ZONES_MAX + APPROACHING_MAX as usize,
                    max_members: uber.config.drivers_max + APPROACHING_MAX as usize,
                    max_id_bytes: 512,
                });
                Leader {
                    lease,
                    fences,
                    airports: HashMap::new(),
                    approaching: HashMap::new(),
                    queued: std::collections::HashSet::new(),
                    last_surge_ms: i64::MIN,
                }
            }
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "the Uber zone lease could not be read");
                return None;
            }
        },
    };
    if let Err(e) = redraw(uber, &mut leader).await {
        tracing::warn!(error = %e, "Uber's fences were not redrawn");
    }
    let now = uber.now_ms();
    if now.saturating_sub(leader.last_surge_ms) >= crate::signed(uber.config.surge_interval_ms) {
        match compute_surge(uber).await {
            Ok(map) => {
                leader.last_surge_ms = now;
                let payload = serde_json::to_vec(&map).unwrap_or_default();
                uber.publish(&crate::fixed_topic(SURGE_TOPIC), payload).await;
            }
            Err(e) => tracing::warn!(error = %e, "surge was not computed"),
        }
    }
    Some(leader)
}

/// Brings the fence set in line with the airport zones and the rides approaching
/// their pickups; events of fences added with a driver already inside are applied.
async fn redraw(uber: &Uber, leader: &mut Leader) -> Result<(), UberError> {
    use girder_geo::fence::{Fence, Roaming};
    let now = u64::try_from(uber.now_ms()).unwrap_or(0);
    let mut events = Vec::new();
    let list = uber.zones.list();
    let airports: HashMap<&str, &Zone> =
        list.iter().filter(|z| z.kind == ZoneKind::Airport).map(|z| (z.name.as_str(), z)).collect();
    let gone: Vec<String> = leader
        .airports
        .iter()
        .filter(|(name, shape)| airports.get(name.as_str()).is_none_or(|z| z.shape != **shape))
        .map(|(name, _)| name.clone())
        .collect();
    for name in gone {
        leader.airports.remove(&name);
        // The exits this makes are not queue departures: a redrawn zone's members
        // enter again below, and a deleted zone's queue went with it.
        let _ = leader.fences.remove_fence(&zone_fence(&name), now);
        leader.queued.retain(|(zone, _)| *zone != name);
    }
    for (name, zone) in airports {
        if leader.airports.contains_key(name) {
            continue;
        }
        match leader.fences.add_fence(&zone_fence(name), Fence::Static(zone.fence.clone()), now) {
            Ok(added) => {
                events.extend(added);
                leader.airports.insert(name.to_owned(), zone.shape.clone());
            }
            Err(e) => tracing::warn!(error = %e, zone = name, "an airport fence was not drawn"),
        }
    }
    let rides = uber.store.approaching(APPROACHING_MAX).await?;
    let mut wanted = HashMap::new();
    for (ride, driver, lat, lon, arriving_ms) in rides {
        if arriving_ms.is_some() {
            continue;
        }
        let Ok(pickup) = Point::new(lat, lon) else { continue };
        if !leader.approaching.contains_key(&ride) {
            let target = pickup_member(&ride);
            let roaming = Roaming::new(&target, uber.config.arriving_radius_m)
                .map_err(|e| UberError::Invalid(e.to_string()))?;
            // The pickup first, so that the fence's first disc is where it belongs.
            let _ = leader.fences.update(&target, pickup, now);
            match leader.fences.add_fence(&arriving_fence(&ride), Fence::Roaming(roaming), now) {
                Ok(added) => events.extend(added),
                Err(e) => {
                    tracing::warn!(error = %e, "an arriving fence was not drawn");
                    continue;
                }
            }
        }
        wanted.insert(ride, driver);
    }
    let stale: Vec<String> =
        leader.approaching.keys().filter(|r| !wanted.contains_key(*r)).cloned().collect();
    for ride in stale {
        let _ = leader.fences.remove_fence(&arriving_fence(&ride), now);
        let _ = leader.fences.remove_member(&pickup_member(&ride), now);
    }
    leader.approaching = wanted;
    for event in events {
        let driver = event.member.strip_prefix("d:").unwrap_or_default();
        let free = uber.available.position(driver).await?.is_some();
        apply_event(uber, leader, &event, free).await?;
    }
    Ok(())
}

/// Runs one fix through the fences and applies what it set off.
async fn follow(
    uber: &Uber,
    leader: &mut Leader,
    loc: &crate::fleet::Loc,
) -> Result<(), UberError> {
    let member = driver_member(&loc.d);
    let at_ms = u64::try_from(loc.t).unwrap_or(0);
    let events = match loc.p.and_then(|(lat, lon)| Point::new(lat, lon).ok()) {
        Some(point) => match leader.fences.update(&member, point, at_ms) {
            Ok(events) => events,
            // An older fix than one already applied, or a full set: nothing to do.
            Err(e) => {
                tracing::debug!(error = %e, "a fix was not fenced");
                return Ok(());
            }
        },
        None => leader.fences.remove_member(&member, at_ms).unwrap_or_default(),
    };
    for event in events {
        apply_event(uber, leader, &event, loc.free).await?;
    }
    Ok(())
}

/// One fence event: airport queue entries and exits, and the arriving notice.
async fn apply_event(
    uber: &Uber,
    leader: &mut Leader,
    event: &girder_geo::fence::FenceEvent,
    free: bool,
) -> Result<(), UberError> {
    use girder_geo::fence::EventKind;
    let Some(driver) = event.member.strip_prefix("d:") else { return Ok(()) };
    if let Some(zone) = event.fence.strip_prefix("z:") {
        let key = (zone.to_owned(), driver.to_owned());
        let stays = matches!(event.kind, EventKind::Enter | EventKind::Inside) && free;
        if stays && !leader.queued.contains(&key) {
            let at = i64::try_from(event.at_ms).unwrap_or(i64::MAX);
            uber.store.queue_enter(zone, driver, at).await?;
            leader.queued.insert(key);
        } else if !stays && (leader.queued.remove(&key) || event.kind == EventKind::Exit) {
            uber.store.queue_leave(Some(zone), driver).await?;
        }
    } else if let Some(ride) = event.fence.strip_prefix("a:") {
        let theirs = leader.approaching.get(ride).is_some_and(|d| d == driver);
        if event.kind == EventKind::Enter
            && theirs
            && uber.store.mark_arriving(ride, driver, uber.now_ms()).await?
        {
            let frame = serde_json::json!({
                "type": "arriving",
                "ride": ride,
                "distance_m": event.nearby.as_ref().map(|n| n.distance_m.round()),
            });
            uber.publish(&crate::ride_topic(ride), frame.to_string().into_bytes()).await;
        }
    }
    Ok(())
}
