//! The nearby search over distribution centres ("Pattern: Redis Geospatial Indexes",
//! in process): every instance keeps a [`MemoryGeoIndex`] of the centres and answers
//! "nearest centre" and "centres within R" through it, reading only the centres
//! near the point instead of every centre.
//!
//! **The scan's answers, exactly.** The index measures on Redis's sphere between
//! positions rounded to 52-bit geohash cells (within 0.3 m); GoPuff reports
//! [`geo::haversine_km`] on the IUGG sphere between the stored coordinates. So the
//! index only proposes candidates, searched a little wider than asked (the radius
//! scaled to the index's sphere, plus [`SLACK_M`]); each candidate's distance is then
//! computed as the scan computed it, filtered with the same `<=` and ordered the
//! same way (by distance, ties by id). "Nearest" first finds an upper bound — a
//! radius search for one hit, the radius growing ×4 from [`NEAREST_START_M`] until a
//! hit comes back, up to the whole sphere — then takes the exact minimum over every
//! centre within that bound.
//!
//! **Polar centres.** The index holds latitudes within ±[`INDEX_LAT_MAX`] (Redis's
//! limit). Centres beyond are kept aside and measured on every search (normally
//! none); a search from beyond runs from the nearest latitude the index takes, its
//! radius widened by the distance to it, which keeps every candidate (triangle
//! inequality).
//!
//! **Freshness, on every instance.** The index is loaded whole from the store at
//! start. A centre created through this instance is added before the request is
//! answered. A search that finds the last load older than `refresh_ms` reloads
//! first; searches arriving meanwhile use the index as it is, so one load at a time
//! runs. Centres created on other instances, or changed or removed in the database
//! directly, are therefore seen within `refresh_ms` (plus one load) — the bound the
//! cached centre list kept before. A load reads at most [`CENTERS_SCAN_MAX`] centres
//! and applies only the difference to the index.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use girder_core::Clock;
use girder_geo::index::{
    Area, Center as SearchCenter, EXTENT_M_MAX, GeoError, MemoryGeoIndex, MemoryIndexConfig,
    Search, Update,
};
use girder_geo::{INDEX_LAT_MAX, Point};
use parking_lot::RwLock;

use crate::geo;
use crate::store::{CENTERS_SCAN_MAX, Center, Store, StoreError};

/// How much wider than asked the index is searched, in metres: covers the index's
/// rounding of positions to their geohash cell (at most 0.3 m) with room to spare.
pub const SLACK_M: f64 = 1.0;

/// The first radius "nearest" searches, in metres.
pub const NEAREST_START_M: f64 = 2_000.0;

/// Index metres per GoPuff metre: the same angle on the index's sphere (Redis's
/// radius) is longer than on GoPuff's (the IUGG mean radius).
const SPHERE_RATIO: f64 = girder_geo::distance::EARTH_RADIUS_M / (geo::EARTH_RADIUS_KM * 1_000.0);

/// Half the circumference on the index's sphere (and a metre for rounding): every
/// point is within it.
const WHOLE_SPHERE_M: f64 = std::f64::consts::PI * girder_geo::distance::EARTH_RADIUS_M + SLACK_M;

/// Centres per index batch, so one upsert's validation and lock stay short.
const BATCH: usize = 1_024;

/// The centres, indexed for nearby searches, on this instance.
pub struct NearbyCenters {
    index: MemoryGeoIndex,
    known: RwLock<Known>,
    /// One load at a time; inserts wait for a running load so its snapshot of the
    /// store cannot undo them.
    loading: tokio::sync::Mutex<()>,
    loaded_at_ms: AtomicU64,
    refresh_ms: u64,
}

impl std::fmt::Debug for NearbyCenters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearbyCenters")
            .field("centers", &self.known.read().by_id.len())
            .field("refresh_ms", &self.refresh_ms)
            .finish_non_exhaustive()
    }
}

/// What the index's hits are looked up in.
#[derive(Debug, Default)]
struct Known {
    /// Every centre with valid coordinates, by id, with its position.
    by_id: HashMap<i64, (Center, Point)>,
    /// The ids of those beyond [`INDEX_LAT_MAX`], measured on every search.
    polar: BTreeSet<i64>,
}

impl NearbyCenters {
    /// An empty index, due for a reload once the last load is `refresh_ms` old (by
    /// the times its callers pass).
    #[must_use]
    pub fn new(refresh_ms: u64, clock: Arc<dyn Clock>) -> Self {
        // Centres carry no TTL; the index still reads the instance's one clock.
        let config = MemoryIndexConfig {
            members_max: usize::try_from(CENTERS_SCAN_MAX).unwrap_or(usize::MAX),
            reclaim_per_call: MemoryIndexConfig::default().reclaim_per_call,
            clock,
        };
        Self {
            index: MemoryGeoIndex::new(config),
            known: RwLock::new(Known::default()),
            loading: tokio::sync::Mutex::new(()),
            loaded_at_ms: AtomicU64::new(0),
            refresh_ms: refresh_ms.max(1),
        }
    }

    /// How many centres a search can find.
    #[must_use]
    pub fn len(&self) -> usize {
        self.known.read().by_id.len()
    }

    /// Whether no centre can be found.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads every centre from `store` now (waiting for a load in progress) and
    /// makes the index match it.
    ///
    /// # Errors
    /// The store failed; the index is as before.
    pub async fn reload(&self, store: &Store, now_ms: u64) -> Result<(), StoreError> {
        let _loading = self.loading.lock().await;
        self.reload_locked(store, now_ms).await
    }

    /// [`NearbyCenters::reload`] if the last load is `refresh_ms` old and no load
    /// is running.
    ///
    /// # Errors
    /// The store failed.
    pub async fn refresh_if_due(&self, store: &Store, now_ms: u64) -> Result<(), StoreError> {
        if !self.due(now_ms) {
            return Ok(());
        }
        // Another request is loading: this one answers from the index as it is.
        let Ok(_loading) = self.loading.try_lock() else {
            return Ok(());
        };
        if self.due(now_ms) { self.reload_locked(store, now_ms).await } else { Ok(()) }
    }

    fn due(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.loaded_at_ms.load(Ordering::Acquire)) >= self.refresh_ms
    }

    async fn reload_locked(&self, store: &Store, now_ms: u64) -> Result<(), StoreError> {
        let centers = store.all_centers().await?;
        self.replace_all(centers)?;
        self.loaded_at_ms.store(now_ms, Ordering::Release);
        Ok(())
    }

    /// Adds a centre just written through this instance.
    ///
    /// # Errors
    /// [`StoreError::Index`] if the index refuses it (a bug: it is validated first).
    pub async fn insert(&self, center: Center) -> Result<(), StoreError> {
        let _loading = self.loading.lock().await;
        self.apply(vec![center], &[])
    }

    /// Makes the index hold exactly `centers` (those with valid coordinates),
    /// changing only what differs.
    ///
    /// # Errors
    /// [`StoreError::Index`] if the index refuses a batch (a bug).
    pub fn replace_all(&self, centers: Vec<Center>) -> Result<(), StoreError> {
        let (changed, gone) = {
            let known = self.known.read();
            let ids: BTreeSet<i64> = centers.iter().map(|c| c.id).collect();
            let gone: Vec<i64> =
                known.by_id.keys().filter(|id| !ids.contains(id)).copied().collect();
            let changed: Vec<Center> = centers
                .into_iter()
                .filter(|c| known.by_id.get(&c.id).is_none_or(|(old, _)| old != c))
                .collect();
            (changed, gone)
        };
        self.apply(changed, &gone)
    }

    /// Removes `gone`, then adds or moves `changed`. Removals leave the lookup
    /// table before the index, additions enter the index first, so a hit always
    /// resolves to a centre (or is skipped while one is half applied).
    fn apply(&self, changed: Vec<Center>, gone: &[i64]) -> Result<(), StoreError> {
        if !gone.is_empty() {
            {
                let mut known = self.known.write();
                for id in gone {
                    known.by_id.remove(id);
                    known.polar.remove(id);
                }
            }
            let names: Vec<String> = gone.iter().map(i64::to_string).collect();
            self.remove_from_index(&names)?;
        }

        let mut indexable = Vec::with_capacity(changed.len());
        let mut polar = Vec::new();
        for center in changed {
            match Point::new(center.lat, center.lon) {
                Ok(at) if at.check_indexable().is_ok() => indexable.push((center, at)),
                Ok(at) => polar.push((center, at)),
                // The API validates coordinates; a row written around it is skipped,
                // as the scan skipped it.
                Err(e) => tracing::warn!(id = center.id, error = %e, "centre not indexed"),
            }
        }
        if !polar.is_empty() {
            // A centre moved beyond the index's latitudes leaves the index.
            let names: Vec<String> = polar.iter().map(|(c, _)| c.id.to_string()).collect();
            self.remove_from_index(&names)?;
            self.remember(polar, true);
        }
        for chunk in indexable.chunks(BATCH) {
            let names: Vec<String> = chunk.iter().map(|(c, _)| c.id.to_string()).collect();
            let batch: Vec<Update<'_>> = chunk
                .iter()
                .zip(&names)
                .map(|((_, at), name)| Update { member: name, point: *at, ttl_ms: None })
                .collect();
            match self.index.upsert_now(&batch) {
                Ok(_) => self.remember(chunk.to_vec(), false),
                Err(GeoError::Full { max }) => {
                    // As many as the store's scan reads: a centre beyond is not
                    // found, as the scan did not read it either.
                    tracing::warn!(max, "centre index full: newer centres are not searchable");
                    break;
                }
                Err(e) => return Err(StoreError::Index(e)),
            }
        }
        Ok(())
    }

    fn remove_from_index(&self, names: &[String]) -> Result<(), StoreError> {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.index.remove_now(&names).map(drop).map_err(StoreError::Index)
    }

    fn remember(&self, placed: Vec<(Center, Point)>, polar: bool) {
        let mut known = self.known.write();
        for (center, at) in placed {
            if polar {
                known.polar.insert(center.id);
            } else {
                known.polar.remove(&center.id);
            }
            known.by_id.insert(center.id, (center, at));
        }
    }

    /// The nearest centre to `from` and its distance in km (ties to the lowest id),
    /// `None` without centres: what [`geo::nearest`] over every centre in id order
    /// answers.
    ///
    /// # Errors
    /// [`StoreError::Index`] if the index refuses a search (a bug).
    pub fn nearest(&self, from: Point) -> Result<Option<(Center, f64)>, StoreError> {
        let origin = Origin::of(from);
        let mut bound_km = self.polar_within(from, f64::INFINITY).first().map(|(_, d)| *d);
        let mut radius_m = NEAREST_START_M;
        loop {
            if bound_km.is_some_and(|b| index_radius_m(b) <= radius_m) {
                break; // A polar centre is nearer than anything this search could add.
            }
            let query = Search::radius(SearchCenter::At(origin.at), origin.widen(radius_m))
                .limit(NonZeroUsize::MIN);
            let hits = self.index.search_now(&query).map_err(StoreError::Index)?;
            let found = {
                let known = self.known.read();
                hits.first()
                    .and_then(|hit| lookup(&known, &hit.member))
                    .map(|(_, at)| geo::haversine_km(from, *at))
            };
            if let Some(d) = found {
                bound_km = Some(bound_km.map_or(d, |b| b.min(d)));
                break;
            }
            if radius_m >= WHOLE_SPHERE_M {
                break;
            }
            radius_m = (radius_m * 4.0).min(WHOLE_SPHERE_M);
        }
        let Some(bound_km) = bound_km else {
            return Ok(None);
        };
        Ok(self.within(from, bound_km)?.into_iter().next())
    }

    /// The centres within `radius_km` of `from` with their distances in km, nearest
    /// first, ties by id: what [`geo::within`] over every centre in id order
    /// answers.
    ///
    /// # Errors
    /// [`StoreError::Index`] if the index refuses the search (a bug).
    pub fn within(&self, from: Point, radius_km: f64) -> Result<Vec<(Center, f64)>, StoreError> {
        let origin = Origin::of(from);
        let query = Search {
            center: SearchCenter::At(origin.at),
            area: Area::Radius { radius_m: origin.widen(index_radius_m(radius_km)) },
            order: None,
            count: None,
            any: false,
        };
        let hits = self.index.search_now(&query).map_err(StoreError::Index)?;
        let mut found = {
            let known = self.known.read();
            let mut found: Vec<(Center, f64)> = hits
                .iter()
                .filter_map(|hit| lookup(&known, &hit.member))
                .map(|(center, at)| (center.clone(), geo::haversine_km(from, *at)))
                .filter(|(_, d)| *d <= radius_km)
                .collect();
            drop(known);
            found.extend(self.polar_within(from, radius_km));
            found
        };
        found.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.id.cmp(&b.0.id)));
        Ok(found)
    }

    /// The polar centres within `radius_km` of `from`, nearest first, ties by id.
    fn polar_within(&self, from: Point, radius_km: f64) -> Vec<(Center, f64)> {
        let known = self.known.read();
        let candidates = known.polar.iter().filter_map(|id| known.by_id.get(id));
        geo::within(from, radius_km, candidates.map(|(c, at)| (c, *at)))
            .into_iter()
            .map(|(c, d)| (c.clone(), d))
            .collect()
    }
}

/// The index radius, in metres, that holds every centre within `radius_km` as
/// GoPuff measures it.
fn index_radius_m(radius_km: f64) -> f64 {
    radius_km * 1_000.0 * SPHERE_RATIO + SLACK_M
}

fn lookup<'a>(known: &'a Known, member: &str) -> Option<&'a (Center, Point)> {
    known.by_id.get(&member.parse::<i64>().ok()?)
}

/// Where the index is searched from: the point itself, or for a point beyond the
/// index's latitudes the nearest one within them, and how far that moved it.
#[derive(Debug, Clone, Copy)]
struct Origin {
    at: Point,
    moved_m: f64,
}

impl Origin {
    fn of(from: Point) -> Self {
        if from.check_indexable().is_ok() {
            return Self { at: from, moved_m: 0.0 };
        }
        let lat = from.lat().clamp(-INDEX_LAT_MAX, INDEX_LAT_MAX);
        let at = Point::new(lat, from.lon()).expect("a clamped latitude and a valid longitude");
        Self { at, moved_m: girder_geo::distance::haversine_m(from, at) }
    }

    /// `radius_m` around the point, as a radius around the origin (within the
    /// index's largest).
    fn widen(self, radius_m: f64) -> f64 {
        (radius_m + self.moved_m + if self.moved_m > 0.0 { SLACK_M } else { 0.0 }).min(EXTENT_M_MAX)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn center(id: i64, lat: f64, lon: f64) -> Center {
        Center { id, name: format!("dc{id}"), lat, lon }
    }

    fn nearby(centers: &[Center]) -> NearbyCenters {
        let index = NearbyCenters::new(1_000, Arc::new(girder_core::SystemClock));
        index.replace_all(centers.to_vec()).expect("indexed");
        index
    }

    /// The scan GoPuff ran before the index: every centre, in id order.
    fn scan_nearest(centers: &[Center], from: Point) -> Option<(i64, f64)> {
        let points: Vec<_> =
            centers.iter().filter_map(|c| Some((c, Point::new(c.lat, c.lon).ok()?))).collect();
        geo::nearest(from, points.iter().map(|(c, p)| (*c, *p))).map(|(c, d)| (c.id, d))
    }

    fn scan_within(centers: &[Center], from: Point, radius_km: f64) -> Vec<(i64, f64)> {
        let points: Vec<_> =
            centers.iter().filter_map(|c| Some((c, Point::new(c.lat, c.lon).ok()?))).collect();
        geo::within(from, radius_km, points.iter().map(|(c, p)| (*c, *p)))
            .into_iter()
            .map(|(c, d)| (c.id, d))
            .collect()
    }

    fn ids(found: Vec<(Center, f64)>) -> Vec<(i64, f64)> {
        found.into_iter().map(|(c, d)| (c.id, d)).collect()
    }

    /// A latitude and longitude: anywhere, near a pole, near the antimeridian, or
    /// in a small city-sized cluster where ties and near-ties happen.
    fn place() -> impl Strategy<Value = (f64, f64)> {
        prop_oneof![
            (-90.0..=90.0f64, -180.0..=180.0f64),
            (84.0..=90.0f64, -180.0..=180.0f64),
            (-90.0..=-84.0f64, -180.0..=180.0f64),
            (-60.0..=60.0f64, prop_oneof![179.0..=180.0f64, -180.0..=-179.0f64]),
            (51.45..=51.55f64, -0.2..=0.0f64),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn the_index_answers_as_the_scan(
            places in prop::collection::vec(place(), 0..60),
            queries in prop::collection::vec((place(), 0.0..=25_000.0f64), 1..12),
        ) {
            let mut centers: Vec<Center> =
                places.iter().enumerate().map(|(i, &(lat, lon))| center(i as i64 + 1, lat, lon)).collect();
            // A few exact duplicates: equal distances, broken by id.
            if let Some(first) = centers.first().cloned() {
                centers.push(Center { id: 1_000, ..first });
            }
            let index = nearby(&centers);
            for ((lat, lon), radius_km) in queries {
                let from = Point::new(lat, lon).unwrap();
                let got = index.nearest(from).unwrap().map(|(c, d)| (c.id, d));
                prop_assert_eq!(got, scan_nearest(&centers, from), "nearest to {:?}", from);
                for r in [radius_km, radius_km / 1_000.0, 0.0] {
                    prop_assert_eq!(
                        ids(index.within(from, r).unwrap()),
                        scan_within(&centers, from, r),
                        "within {} km of {:?}", r, from
                    );
                }
            }
        }

        #[test]
        fn reloads_apply_the_difference(
            first in prop::collection::vec(place(), 0..30),
            second in prop::collection::vec(place(), 0..30),
            from in place(),
        ) {
            let before: Vec<Center> =
                first.iter().enumerate().map(|(i, &(lat, lon))| center(i as i64 + 1, lat, lon)).collect();
            // The second load moves some centres, drops others, adds new ones.
            let after: Vec<Center> = second
                .iter()
                .enumerate()
                .map(|(i, &(lat, lon))| center(2 * i as i64 + 1, lat, lon))
                .collect();
            let index = nearby(&before);
            index.replace_all(after.clone()).unwrap();
            prop_assert_eq!(index.len(), after.len());
            let from = Point::new(from.0, from.1).unwrap();
            prop_assert_eq!(index.nearest(from).unwrap().map(|(c, d)| (c.id, d)), scan_nearest(&after, from));
            prop_assert_eq!(ids(index.within(from, 20_000.0).unwrap()), scan_within(&after, from, 20_000.0));
        }
    }

    #[test]
    fn poles_antimeridian_and_edges() {
        let centers = [
            center(1, 90.0, 0.0),
            center(2, 0.0, 179.99),
            center(3, 51.5074, -0.1278),
            center(4, -89.0, 45.0),
            center(5, 85.0, 10.0),
        ];
        let index = nearby(&centers);
        for (lat, lon) in
            [(89.5, -170.0), (-90.0, 0.0), (0.0, -179.99), (85.06, 10.0), (50.8, -0.13), (0.0, 0.0)]
        {
            let from = Point::new(lat, lon).unwrap();
            assert_eq!(
                index.nearest(from).unwrap().map(|(c, d)| (c.id, d)),
                scan_nearest(&centers, from),
                "from {from:?}"
            );
        }
        // A centre exactly on the radius is in, as in the scan.
        let from = Point::new(51.0, -0.1278).unwrap();
        let d = geo::haversine_km(from, Point::new(51.5074, -0.1278).unwrap());
        assert_eq!(ids(index.within(from, d).unwrap()), [(3, d)]);
        assert!(index.within(from, d * (1.0 - 1e-12)).unwrap().is_empty());
        // No centres, no answer.
        assert_eq!(nearby(&[]).nearest(Point::new(0.0, 0.0).unwrap()).unwrap(), None);
        // Invalid stored coordinates are skipped, as the scan skipped them.
        let index = nearby(&[center(1, 95.0, 0.0), center(2, 10.0, 10.0)]);
        assert_eq!(index.len(), 1);
    }
}
