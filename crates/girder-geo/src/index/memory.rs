//! The in-process [`GeoIndex`]: members' Redis scores in a sorted array of chunks,
//! searched by the key ranges of a covering and filtered with Redis's formulas, so
//! its answers equal `GEOSEARCH`'s — without the members Redis's search misses (see
//! the module doc of [`crate::index`]).
//!
//! Layout: a slab of entries (name, score, deadline) addressed by slot, a hash map
//! from name to slot, the sorted `(key, slot)` pairs ([`SortedKeys`]) and the TTL'd
//! slots ordered by deadline. One `RwLock` around all of it: searches share it,
//! writes take it alone. The synchronous methods (`upsert_now`, `search_now`, …) are
//! the hot path; the [`GeoIndex`] methods call them.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;

use girder_core::{Clock, SystemClock};
use parking_lot::RwLock;

use super::sorted::SortedKeys;
use super::{
    Area, Center, GeoError, GeoIndex, Hit, Search, Update, Upserted, finish_hits, validate_batch,
    validate_member, validate_search,
};
use crate::distance::Origin;
use crate::geohash::score::decode_key;
use crate::geohash::{Score, Shape, score_ranges};
use crate::point::Point;

/// The most members an index can hold: slots are 31-bit (the tag's top bit marks
/// an edge member).
pub const MEMBERS_MAX_LIMIT: usize = (1 << 31) - 1;

/// Tag bit: the member's score lies on the grid's north or east edge, so its key was
/// pulled into the grid and its position must be decoded from the entry's score.
const EDGE: u32 = 1 << 31;

/// "No deadline".
const NEVER: u64 = u64::MAX;

/// Cells a search's covering may use (see [`score_ranges`]): finer coverings scan
/// fewer members outside the area, at one binary search per merged range.
const COVER_CELLS_MAX: u64 = 24;

/// Settings of a [`MemoryGeoIndex`].
#[derive(Clone)]
pub struct MemoryIndexConfig {
    /// The most live members; an upsert that would go beyond is refused whole
    /// ([`GeoError::Full`]). At most [`MEMBERS_MAX_LIMIT`] (larger values are
    /// treated as it). Default 10,000,000.
    pub members_max: usize,
    /// The most expired members a write reclaims on the way (bounded work per call;
    /// [`MemoryGeoIndex::purge_expired`] reclaims more). Default 64.
    pub reclaim_per_call: usize,
    /// The clock TTLs are judged by. Default: the system clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for MemoryIndexConfig {
    fn default() -> Self {
        Self { members_max: 10_000_000, reclaim_per_call: 64, clock: Arc::new(SystemClock) }
    }
}

impl std::fmt::Debug for MemoryIndexConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryIndexConfig")
            .field("members_max", &self.members_max)
            .field("reclaim_per_call", &self.reclaim_per_call)
            .finish_non_exhaustive()
    }
}

/// A [`GeoIndex`] in this process.
pub struct MemoryGeoIndex {
    members_max: usize,
    reclaim_per_call: usize,
    clock: Arc<dyn Clock>,
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for MemoryGeoIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryGeoIndex")
            .field("members_max", &self.members_max)
            .field("members", &self.inner.read().names.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Entry {
    /// `None` while the slot is free.
    member: Option<Arc<str>>,
    score: Score,
    /// Live while the clock is below it; [`NEVER`] without a TTL.
    deadline_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    names: HashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    entries: Vec<Entry>,
    free: Vec<u32>,
    keys: SortedKeys,
    /// `(deadline_ms, slot)` of every member with a TTL, expired or not.
    deadlines: BTreeSet<(u64, u32)>,
}

/// The sorted pair of a member.
fn tag_of(slot: u32, score: Score) -> (u64, u32) {
    let key = score.key();
    (key, if key == score.raw() { slot } else { slot | EDGE })
}

impl Inner {
    /// Removes the member in `slot` from every structure and frees the slot.
    fn drop_slot(&mut self, slot: u32) {
        let e = &mut self.entries[slot as usize];
        let member = e.member.take();
        debug_assert!(member.is_some(), "slot {slot} dropped twice");
        let (key, tag) = tag_of(slot, e.score);
        let deadline = e.deadline_ms;
        if let Some(m) = member {
            self.names.remove(&m);
        }
        let removed = self.keys.remove(key, tag);
        assert!(removed, "slot {slot} missing from the sorted keys");
        if deadline != NEVER {
            self.deadlines.remove(&(deadline, slot));
        }
        self.free.push(slot);
    }

    /// Reclaims up to `max` members expired at `now_ms`; how many.
    fn reclaim(&mut self, now_ms: u64, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.deadlines.first() {
                Some(&(deadline, slot)) if deadline <= now_ms => {
                    self.drop_slot(slot);
                    n += 1;
                }
                _ => break,
            }
        }
        n
    }

    /// The slot of `member` if it is live at `now_ms`.
    fn live(&self, member: &str, now_ms: u64) -> Option<u32> {
        let &slot = self.names.get(member)?;
        (self.entries[slot as usize].deadline_ms > now_ms).then_some(slot)
    }

    fn expired_count(&self, now_ms: u64) -> usize {
        self.deadlines.range(..=(now_ms, u32::MAX)).count()
    }

    /// Adds or moves one member (already validated).
    fn apply(&mut self, u: &Update<'_>, now_ms: u64, out: &mut Upserted) {
        let score = Score::encode_raw(u.point.lat(), u.point.lon());
        let deadline = u.ttl_ms.map_or(NEVER, |t| now_ms.saturating_add(t));
        if let Some(&slot) = self.names.get(u.member) {
            let e = &mut self.entries[slot as usize];
            if e.deadline_ms > now_ms {
                out.updated += 1;
            } else {
                out.added += 1;
            }
            if e.score != score {
                let (old_key, old_tag) = tag_of(slot, e.score);
                let (key, tag) = tag_of(slot, score);
                e.score = score;
                let removed = self.keys.remove(old_key, old_tag);
                assert!(removed, "slot {slot} missing from the sorted keys");
                self.keys.insert(key, tag);
            }
            if e.deadline_ms != deadline {
                if e.deadline_ms != NEVER {
                    self.deadlines.remove(&(e.deadline_ms, slot));
                }
                if deadline != NEVER {
                    self.deadlines.insert((deadline, slot));
                }
                e.deadline_ms = deadline;
            }
            return;
        }
        let member: Arc<str> = Arc::from(u.member);
        let entry = Entry { member: Some(Arc::clone(&member)), score, deadline_ms: deadline };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.entries[slot as usize] = entry;
                slot
            }
            None => {
                // Below MEMBERS_MAX_LIMIT (checked by the caller), so it fits 31 bits.
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        debug_assert!(slot & EDGE == 0);
        self.names.insert(member, slot);
        let (key, tag) = tag_of(slot, score);
        self.keys.insert(key, tag);
        if deadline != NEVER {
            self.deadlines.insert((deadline, slot));
        }
        out.added += 1;
    }
}

/// A search's membership test, with Redis's formulas term for term.
#[derive(Debug, Clone, Copy)]
enum Test {
    Radius { origin: Origin, radius_m: f64 },
    Box { origin: Origin, lat: f64, lon: f64, half_w_m: f64, half_h_m: f64 },
}

impl Test {
    fn new(lat: f64, lon: f64, area: Area) -> Self {
        let origin = Origin::new(lat, lon);
        match area {
            Area::Radius { radius_m } => Self::Radius { origin, radius_m },
            Area::Box { width_m, height_m } => {
                Self::Box { origin, lat, lon, half_w_m: width_m / 2.0, half_h_m: height_m / 2.0 }
            }
        }
    }

    /// The distance from the centre if `(lat, lon)` is inside.
    #[inline]
    fn distance_if_inside(&self, lat: f64, lon: f64) -> Option<f64> {
        match *self {
            Self::Radius { origin, radius_m } => {
                let d = origin.to(lat, lon);
                (d <= radius_m).then_some(d)
            }
            Self::Box { origin, lat: clat, lon: clon, half_w_m, half_h_m } => {
                // geohashGetDistanceIfInRectangle: north–south first (cheaper), then
                // east–west along the member's own parallel, then the distance.
                if crate::distance::meridian_m(lat, clat) > half_h_m {
                    return None;
                }
                if Origin::new(lat, lon).to(lat, clon) > half_w_m {
                    return None;
                }
                Some(origin.to(lat, lon))
            }
        }
    }
}

impl MemoryGeoIndex {
    /// An empty index.
    #[must_use]
    pub fn new(config: MemoryIndexConfig) -> Self {
        Self {
            members_max: config.members_max.min(MEMBERS_MAX_LIMIT),
            reclaim_per_call: config.reclaim_per_call,
            clock: config.clock,
            inner: RwLock::new(Inner::default()),
        }
    }

    /// [`GeoIndex::upsert`], synchronously.
    ///
    /// # Errors
    /// As [`GeoIndex::upsert`]: a bad update or a full index refuses the whole batch.
    pub fn upsert_now(&self, batch: &[Update<'_>]) -> Result<Upserted, GeoError> {
        validate_batch(batch)?;
        let now_ms = self.clock.now_ms();
        let mut inner = self.inner.write();
        inner.reclaim(now_ms, self.reclaim_per_call);
        if inner.names.len() + batch.len() > self.members_max {
            // Maybe full: count exactly, with every expired member gone.
            inner.reclaim(now_ms, usize::MAX);
            let mut new: Vec<&str> =
                batch.iter().map(|u| u.member).filter(|m| !inner.names.contains_key(*m)).collect();
            new.sort_unstable();
            new.dedup();
            if inner.names.len() + new.len() > self.members_max {
                return Err(GeoError::Full { max: self.members_max });
            }
        }
        let mut out = Upserted::default();
        for u in batch {
            inner.apply(u, now_ms, &mut out);
        }
        Ok(out)
    }

    /// [`GeoIndex::remove`], synchronously.
    ///
    /// # Errors
    /// [`GeoError::InvalidMember`] for a bad name (nothing is removed then).
    pub fn remove_now(&self, members: &[&str]) -> Result<usize, GeoError> {
        for m in members {
            validate_member(m)?;
        }
        let now_ms = self.clock.now_ms();
        let mut inner = self.inner.write();
        let mut live = 0;
        for m in members {
            if let Some(&slot) = inner.names.get(*m) {
                live += usize::from(inner.entries[slot as usize].deadline_ms > now_ms);
                inner.drop_slot(slot);
            }
        }
        inner.reclaim(now_ms, self.reclaim_per_call);
        Ok(live)
    }

    /// [`GeoIndex::position`], synchronously.
    ///
    /// # Errors
    /// [`GeoError::InvalidMember`].
    pub fn position_now(&self, member: &str) -> Result<Option<Point>, GeoError> {
        validate_member(member)?;
        let now_ms = self.clock.now_ms();
        let inner = self.inner.read();
        Ok(inner.live(member, now_ms).map(|slot| inner.entries[slot as usize].score.decode()))
    }

    /// [`GeoIndex::len`], synchronously.
    #[must_use]
    pub fn len_now(&self) -> usize {
        let now_ms = self.clock.now_ms();
        let inner = self.inner.read();
        inner.names.len() - inner.expired_count(now_ms)
    }

    /// Whether no member is live.
    #[must_use]
    pub fn is_empty_now(&self) -> bool {
        self.len_now() == 0
    }

    /// Reclaims up to `max` expired members' storage (they are already invisible);
    /// returns how many.
    pub fn purge_expired(&self, max: usize) -> usize {
        let now_ms = self.clock.now_ms();
        self.inner.write().reclaim(now_ms, max)
    }

    /// [`GeoIndex::search`], synchronously.
    ///
    /// # Errors
    /// As [`GeoIndex::search`].
    pub fn search_now(&self, query: &Search<'_>) -> Result<Vec<Hit>, GeoError> {
        let mut hits = Vec::new();
        self.search_into(query, &mut hits)?;
        Ok(hits)
    }

    /// [`MemoryGeoIndex::search_now`] into `hits` (cleared first), so a caller
    /// searching in a loop reuses one buffer.
    ///
    /// # Errors
    /// As [`GeoIndex::search`].
    pub fn search_into(&self, query: &Search<'_>, hits: &mut Vec<Hit>) -> Result<(), GeoError> {
        hits.clear();
        validate_search(query)?;
        let now_ms = self.clock.now_ms();
        let inner = self.inner.read();
        let (lat, lon) = match query.center {
            Center::At(p) => (p.lat(), p.lon()),
            Center::Member(m) => {
                let slot = inner
                    .live(m, now_ms)
                    .ok_or_else(|| GeoError::UnknownMember { member: m.to_owned() })?;
                inner.entries[slot as usize].score.decode_raw()
            }
        };
        let shape = match query.area {
            Area::Radius { radius_m } => Shape::Circle { lat, lon, radius_m },
            Area::Box { width_m, height_m } => Shape::Box { lat, lon, width_m, height_m },
        };
        let test = Test::new(lat, lon, query.area);
        let stop_at =
            if query.any { query.count.map_or(usize::MAX, |c| c.get()) } else { usize::MAX };
        let mut ranges = Vec::with_capacity(32);
        score_ranges(shape, COVER_CELLS_MAX, &mut ranges);
        let entries = &inner.entries;
        for &(lo, hi) in &ranges {
            let flow = inner.keys.scan(lo, hi, |key, tag| {
                let slot = (tag & !EDGE) as usize;
                let (lat, lon) = if tag & EDGE == 0 {
                    decode_key(key)
                } else {
                    entries[slot].score.decode_raw()
                };
                if let Some(dist_m) = test.distance_if_inside(lat, lon) {
                    let e = &entries[slot];
                    if e.deadline_ms > now_ms
                        && let Some(member) = &e.member
                    {
                        hits.push(Hit {
                            member: Arc::clone(member),
                            dist_m,
                            point: Point::trusted(lat, lon),
                        });
                        if hits.len() >= stop_at {
                            return ControlFlow::Break(());
                        }
                    }
                }
                ControlFlow::Continue(())
            });
            if flow.is_break() {
                break;
            }
        }
        finish_hits(hits, query);
        Ok(())
    }

    /// Members held, expired ones not yet reclaimed included (for tests of
    /// reclamation).
    #[must_use]
    pub fn stored_now(&self) -> usize {
        let inner = self.inner.read();
        debug_assert_eq!(inner.names.len(), inner.keys.len());
        inner.names.len()
    }
}

impl Default for MemoryGeoIndex {
    fn default() -> Self {
        Self::new(MemoryIndexConfig::default())
    }
}

impl GeoIndex for MemoryGeoIndex {
    async fn upsert(&self, batch: &[Update<'_>]) -> Result<Upserted, GeoError> {
        self.upsert_now(batch)
    }

    async fn remove(&self, members: &[&str]) -> Result<usize, GeoError> {
        self.remove_now(members)
    }

    async fn position(&self, member: &str) -> Result<Option<Point>, GeoError> {
        self.position_now(member)
    }

    async fn search(&self, query: &Search<'_>) -> Result<Vec<Hit>, GeoError> {
        self.search_now(query)
    }

    async fn len(&self) -> Result<usize, GeoError> {
        Ok(self.len_now())
    }
}
