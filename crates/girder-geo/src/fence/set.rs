//! The engine: a bounded set of fences and of members' last fixes. Each update judges
//! the moving member against every fence (and, for roaming fences it is the target of,
//! every other member against it) and returns the events, in fence-id then member-id
//! order. No state beyond the last fixes: whether a pair is inside is always a
//! function of them, which is what makes every `Enter` meet its `Exit`.

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;

use crate::distance::haversine_m;
use crate::point::Point;

use super::circle::check_radius;
use super::{Area, Cause, Circle, EventKind, FenceEvent, Nearby, PathPoint, RadiusError};

/// Bounds of a [`FenceSet`]. An update costs time linear in the fences, plus linear
/// in the members for each roaming fence that follows the moving member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceConfig {
    /// Most fences held at once.
    pub max_fences: usize,
    /// Most members with a known position at once.
    pub max_members: usize,
    /// Longest fence or member id, in bytes.
    pub max_id_bytes: usize,
}

impl Default for FenceConfig {
    /// 1,000 fences, 100,000 members, ids up to 256 bytes.
    fn default() -> Self {
        Self { max_fences: 1_000, max_members: 100_000, max_id_bytes: 256 }
    }
}

/// A fence: a fixed area, or a disc that follows a member.
#[derive(Debug, Clone, PartialEq)]
pub enum Fence {
    /// A fixed area.
    Static(Area),
    /// Within a radius of a moving target member.
    Roaming(Roaming),
}

impl From<Area> for Fence {
    fn from(area: Area) -> Self {
        Self::Static(area)
    }
}

impl From<Roaming> for Fence {
    fn from(r: Roaming) -> Self {
        Self::Roaming(r)
    }
}

/// "Within `radius_m` metres of member `target`", for every other member; the target
/// moves too (a driver nearing a pickup point that is itself a member, two drivers).
/// The target need not have a position yet: the fence holds no one until it has.
#[derive(Debug, Clone, PartialEq)]
pub struct Roaming {
    target: Arc<str>,
    radius_m: f64,
}

impl Roaming {
    /// The roaming fence of `radius_m` metres around `target`.
    ///
    /// # Errors
    /// [`RadiusError`] unless `0 < radius_m <= RADIUS_MAX_M`.
    pub fn new(target: &str, radius_m: f64) -> Result<Self, RadiusError> {
        check_radius(radius_m)?;
        Ok(Self { target: Arc::from(target), radius_m })
    }

    /// The member the fence follows.
    #[must_use]
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The radius in metres.
    #[must_use]
    pub fn radius_m(&self) -> f64 {
        self.radius_m
    }

    /// The fence's disc with the target at `centre`.
    fn disc(&self, centre: Point) -> Area {
        Area::Circle(Circle::trusted(centre, self.radius_m))
    }
}

/// A member's position at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    /// Where.
    pub point: Point,
    /// When, in milliseconds (the caller's clock; only their order per member matters).
    pub at_ms: u64,
}

/// Why a fence was not added. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AddFenceError {
    /// The fence id, or a roaming fence's target id, is empty or longer than
    /// [`FenceConfig::max_id_bytes`].
    #[error("id of {len_bytes} bytes; ids need 1..={max_bytes}")]
    InvalidId {
        /// The id's length.
        len_bytes: usize,
        /// The bound.
        max_bytes: usize,
    },
    /// A fence with this id exists; remove it first.
    #[error("fence {id:?} exists")]
    Exists {
        /// The id.
        id: String,
    },
    /// [`FenceConfig::max_fences`] fences are held.
    #[error("fence set full: {max} fences")]
    Full {
        /// The bound.
        max: usize,
    },
}

/// Why a fence was not removed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RemoveFenceError {
    /// No fence has this id.
    #[error("no fence {id:?}")]
    Unknown {
        /// The id.
        id: String,
    },
}

/// Why an update was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The member id is empty or longer than [`FenceConfig::max_id_bytes`].
    #[error("id of {len_bytes} bytes; ids need 1..={max_bytes}")]
    InvalidId {
        /// The id's length.
        len_bytes: usize,
        /// The bound.
        max_bytes: usize,
    },
    /// A new member, and [`FenceConfig::max_members`] members are held.
    #[error("fence set full: {max} members")]
    Full {
        /// The bound.
        max: usize,
    },
    /// The fix is older than the member's last one. (Equal times are accepted.)
    #[error("fix at {at_ms} ms is older than the member's last, at {last_ms} ms")]
    Stale {
        /// The member's last fix time.
        last_ms: u64,
        /// The refused fix's time.
        at_ms: u64,
    },
}

/// Why a member was not removed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RemoveMemberError {
    /// No member has this id.
    #[error("no member {id:?}")]
    Unknown {
        /// The id.
        id: String,
    },
}

/// Fences and members' last fixes, judging every update against every fence.
///
/// ```
/// use girder_geo::Point;
/// use girder_geo::fence::{Area, Circle, EventKind, FenceConfig, FenceSet, Roaming};
///
/// let mut set = FenceSet::new(FenceConfig::default());
/// let depot = Circle::new(Point::new(52.52, 13.405)?, 200.0)?;
/// set.add_fence("depot", Area::from(depot).into(), 0)?;
/// set.add_fence("near-pickup", Roaming::new("pickup-7", 500.0)?.into(), 0)?;
/// set.update("pickup-7", Point::new(52.53, 13.40)?, 0)?;
///
/// // A driver jumps across the depot between two fixes, then nears the pickup.
/// set.update("driver-1", Point::new(52.52, 13.39)?, 1_000)?;
/// let events = set.update("driver-1", Point::new(52.52, 13.42)?, 61_000)?;
/// let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.crossed)).collect();
/// assert_eq!(kinds, [(EventKind::Enter, true), (EventKind::Exit, true)]);
/// let events = set.update("driver-1", Point::new(52.528, 13.40)?, 121_000)?;
/// assert_eq!(events[0].kind, EventKind::Enter);
/// assert!(events[0].nearby.as_ref().is_some_and(|n| n.distance_m < 500.0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct FenceSet {
    config: FenceConfig,
    fences: BTreeMap<Arc<str>, Fence>,
    members: BTreeMap<Arc<str>, Fix>,
}

/// What one move did to one pair.
#[derive(Clone, Copy)]
enum Step {
    /// Outside before and after, and the path stayed out: no event.
    Out,
    Enter,
    Inside,
    Exit,
    /// Outside before and after, through the fence in between.
    Crossed(PathPoint),
}

/// The pair's state change for a member moving from `prev` (none: it just appeared)
/// to `new`, against `area`.
fn step(area: &Area, prev: Option<Point>, new: Point) -> Step {
    let now_in = area.contains(new);
    let Some(prev) = prev else {
        return if now_in { Step::Enter } else { Step::Out };
    };
    match (area.contains(prev), now_in) {
        (false, true) => Step::Enter,
        (true, true) => Step::Inside,
        (true, false) => Step::Exit,
        (false, false) => area.path_inside(prev, new).map_or(Step::Out, Step::Crossed),
    }
}

/// The time `fraction` of the way from `from_ms` to `to_ms`.
fn interpolate_ms(from_ms: u64, to_ms: u64, fraction: f64) -> u64 {
    debug_assert!(from_ms <= to_ms && (0.0..=1.0).contains(&fraction));
    let span = to_ms - from_ms;
    // `as` saturates; the product is within 0..=span anyway.
    from_ms + ((span as f64 * fraction).round() as u64).min(span)
}

/// The event-building half of a pair's judgement: who, which fence, why, and how a
/// position of the mover turns into the event's point and roaming context.
struct Pair<'a, V: Fn(Point) -> (Point, Option<Nearby>)> {
    fence: &'a Arc<str>,
    member: &'a Arc<str>,
    cause: Cause,
    view: V,
}

impl<V: Fn(Point) -> (Point, Option<Nearby>)> Pair<'_, V> {
    fn event(&self, kind: EventKind, crossed: bool, mover_at: Point, at_ms: u64) -> FenceEvent {
        let (point, nearby) = (self.view)(mover_at);
        FenceEvent {
            fence: Arc::clone(self.fence),
            member: Arc::clone(self.member),
            kind,
            cause: self.cause,
            crossed,
            point,
            at_ms,
            nearby,
        }
    }

    fn emit(&self, step: Step, prev: Option<Fix>, new: Fix, events: &mut Vec<FenceEvent>) {
        let kind = match step {
            Step::Out => return,
            Step::Enter => EventKind::Enter,
            Step::Inside => EventKind::Inside,
            Step::Exit => EventKind::Exit,
            Step::Crossed(hit) => {
                // Only a move judges a path, so there is a previous fix.
                let from_ms = prev.map_or(new.at_ms, |p| p.at_ms);
                let at_ms = interpolate_ms(from_ms, new.at_ms, hit.fraction);
                events.push(self.event(EventKind::Enter, true, hit.point, at_ms));
                events.push(self.event(EventKind::Exit, true, new.point, new.at_ms));
                return;
            }
        };
        events.push(self.event(kind, false, new.point, new.at_ms));
    }
}

impl FenceSet {
    /// An empty set with these bounds.
    #[must_use]
    pub fn new(config: FenceConfig) -> Self {
        Self { config, fences: BTreeMap::new(), members: BTreeMap::new() }
    }

    /// The bounds.
    #[must_use]
    pub fn config(&self) -> &FenceConfig {
        &self.config
    }

    /// Fences held.
    #[must_use]
    pub fn fence_count(&self) -> usize {
        self.fences.len()
    }

    /// Members with a position.
    #[must_use]
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The fence with this id.
    #[must_use]
    pub fn fence(&self, id: &str) -> Option<&Fence> {
        self.fences.get(id)
    }

    /// The member's last fix.
    #[must_use]
    pub fn position(&self, member: &str) -> Option<Fix> {
        self.members.get(member).copied()
    }

    /// Whether the member is inside the fence now; `None` if either is unknown. A
    /// roaming fence holds no one while its target has no position, and never its
    /// own target.
    #[must_use]
    pub fn is_inside(&self, fence: &str, member: &str) -> Option<bool> {
        let fence = self.fences.get(fence)?;
        let fix = self.members.get(member)?;
        Some(match fence {
            Fence::Static(area) => area.contains(fix.point),
            Fence::Roaming(r) if *r.target == *member => false,
            Fence::Roaming(r) => {
                self.members.get(&*r.target).is_some_and(|t| r.disc(t.point).contains(fix.point))
            }
        })
    }

    fn check_id(&self, id: &str) -> Result<(), (usize, usize)> {
        let max = self.config.max_id_bytes;
        if id.is_empty() || id.len() > max { Err((id.len(), max)) } else { Ok(()) }
    }

    /// Adds a fence at `at_ms`; returns `Enter` ([`Cause::FenceAdded`]) for each member
    /// already inside, so pairing holds from the start.
    ///
    /// # Errors
    /// [`AddFenceError`]; nothing was added.
    pub fn add_fence(
        &mut self,
        id: &str,
        fence: Fence,
        at_ms: u64,
    ) -> Result<Vec<FenceEvent>, AddFenceError> {
        let invalid = |(len_bytes, max_bytes)| AddFenceError::InvalidId { len_bytes, max_bytes };
        self.check_id(id).map_err(invalid)?;
        if let Fence::Roaming(r) = &fence {
            self.check_id(&r.target).map_err(invalid)?;
        }
        if self.fences.contains_key(id) {
            return Err(AddFenceError::Exists { id: id.to_owned() });
        }
        if self.fences.len() >= self.config.max_fences {
            return Err(AddFenceError::Full { max: self.config.max_fences });
        }
        let id: Arc<str> = Arc::from(id);
        let events = self.held_by(&id, &fence, EventKind::Enter, Cause::FenceAdded, at_ms);
        self.fences.insert(id, fence);
        Ok(events)
    }

    /// Removes a fence at `at_ms`; returns `Exit` ([`Cause::FenceRemoved`]) for each
    /// member inside.
    ///
    /// # Errors
    /// [`RemoveFenceError::Unknown`]; nothing changed.
    pub fn remove_fence(
        &mut self,
        id: &str,
        at_ms: u64,
    ) -> Result<Vec<FenceEvent>, RemoveFenceError> {
        let (id, fence) = self
            .fences
            .remove_entry(id)
            .ok_or_else(|| RemoveFenceError::Unknown { id: id.to_owned() })?;
        Ok(self.held_by(&id, &fence, EventKind::Exit, Cause::FenceRemoved, at_ms))
    }

    /// One `kind` event for each member inside `fence`, at the member's last fix.
    fn held_by(
        &self,
        id: &Arc<str>,
        fence: &Fence,
        kind: EventKind,
        cause: Cause,
        at_ms: u64,
    ) -> Vec<FenceEvent> {
        let mut events = Vec::new();
        match fence {
            Fence::Static(area) => {
                for (member, fix) in &self.members {
                    if area.contains(fix.point) {
                        let pair = Pair { fence: id, member, cause, view: |p| (p, None) };
                        events.push(pair.event(kind, false, fix.point, at_ms));
                    }
                }
            }
            Fence::Roaming(r) => {
                let Some(target) = self.members.get(&*r.target) else { return events };
                let disc = r.disc(target.point);
                for (member, fix) in &self.members {
                    if *member != r.target && disc.contains(fix.point) {
                        let view = |p| (p, Some(nearby(r, target.point, p)));
                        let pair = Pair { fence: id, member, cause, view };
                        events.push(pair.event(kind, false, fix.point, at_ms));
                    }
                }
            }
        }
        events
    }

    /// Records the member's fix and returns the events it causes: for every fence, the
    /// member's `Enter`, `Inside`, `Exit` or crossing (`Enter` then `Exit`, both
    /// `crossed`); and for every roaming fence that follows this member, the same for
    /// each other member as the disc moves over it ([`Cause::TargetMoved`]). A member's
    /// first fix can only `Enter`.
    ///
    /// # Errors
    /// [`UpdateError`]; nothing changed.
    pub fn update(
        &mut self,
        member: &str,
        point: Point,
        at_ms: u64,
    ) -> Result<Vec<FenceEvent>, UpdateError> {
        self.check_id(member)
            .map_err(|(len_bytes, max_bytes)| UpdateError::InvalidId { len_bytes, max_bytes })?;
        let (key, prev) = match self.members.get_key_value(member) {
            Some((_, last)) if at_ms < last.at_ms => {
                return Err(UpdateError::Stale { last_ms: last.at_ms, at_ms });
            }
            Some((key, last)) => (Arc::clone(key), Some(*last)),
            None if self.members.len() >= self.config.max_members => {
                return Err(UpdateError::Full { max: self.config.max_members });
            }
            None => (Arc::from(member), None),
        };
        let new = Fix { point, at_ms };
        let from = prev.map(|f| f.point);
        let mut events = Vec::new();
        for (id, fence) in &self.fences {
            match fence {
                Fence::Static(area) => {
                    let pair =
                        Pair { fence: id, member: &key, cause: Cause::Moved, view: |p| (p, None) };
                    pair.emit(step(area, from, point), prev, new, &mut events);
                }
                // This member is the target: its disc moves over every other member,
                // each standing at its last fix. The distance is symmetric to the bit
                // (a test below holds haversine to that), so judging the target's path
                // against a disc around the member gives the same answers as the
                // member's own moves against a disc around the target.
                Fence::Roaming(r) if *r.target == *member => {
                    for (other, fix) in &self.members {
                        if *other == key {
                            continue;
                        }
                        let view = |p| (fix.point, Some(nearby(r, p, fix.point)));
                        let pair =
                            Pair { fence: id, member: other, cause: Cause::TargetMoved, view };
                        pair.emit(step(&r.disc(fix.point), from, point), prev, new, &mut events);
                    }
                }
                Fence::Roaming(r) => {
                    let Some(target) = self.members.get(&*r.target) else { continue };
                    let view = |p| (p, Some(nearby(r, target.point, p)));
                    let pair = Pair { fence: id, member: &key, cause: Cause::Moved, view };
                    pair.emit(step(&r.disc(target.point), from, point), prev, new, &mut events);
                }
            }
        }
        self.members.insert(key, new);
        Ok(events)
    }

    /// Forgets a member at `at_ms`; returns `Exit` for each fence it was inside
    /// ([`Cause::MemberRemoved`]) and, for each roaming fence that follows it, for each
    /// member that was inside ([`Cause::TargetRemoved`]). Such a fence stays and holds
    /// no one until its target reports again.
    ///
    /// # Errors
    /// [`RemoveMemberError::Unknown`]; nothing changed.
    pub fn remove_member(
        &mut self,
        member: &str,
        at_ms: u64,
    ) -> Result<Vec<FenceEvent>, RemoveMemberError> {
        let (key, gone) = self
            .members
            .remove_entry(member)
            .ok_or_else(|| RemoveMemberError::Unknown { id: member.to_owned() })?;
        let mut events = Vec::new();
        for (id, fence) in &self.fences {
            match fence {
                Fence::Static(area) => {
                    if area.contains(gone.point) {
                        let pair = Pair {
                            fence: id,
                            member: &key,
                            cause: Cause::MemberRemoved,
                            view: |p| (p, None),
                        };
                        events.push(pair.event(EventKind::Exit, false, gone.point, at_ms));
                    }
                }
                Fence::Roaming(r) if r.target == key => {
                    let disc = r.disc(gone.point);
                    for (other, fix) in &self.members {
                        if disc.contains(fix.point) {
                            let view = |p| (p, Some(nearby(r, gone.point, p)));
                            let pair = Pair {
                                fence: id,
                                member: other,
                                cause: Cause::TargetRemoved,
                                view,
                            };
                            events.push(pair.event(EventKind::Exit, false, fix.point, at_ms));
                        }
                    }
                }
                Fence::Roaming(r) => {
                    let Some(target) = self.members.get(&*r.target) else { continue };
                    if r.disc(target.point).contains(gone.point) {
                        let view = |p| (p, Some(nearby(r, target.point, p)));
                        let pair =
                            Pair { fence: id, member: &key, cause: Cause::MemberRemoved, view };
                        events.push(pair.event(EventKind::Exit, false, gone.point, at_ms));
                    }
                }
            }
        }
        Ok(events)
    }
}

/// The roaming context of a member at `member` with the fence's target at `target`.
fn nearby(r: &Roaming, target: Point, member: Point) -> Nearby {
    Nearby { other: Arc::clone(&r.target), distance_m: haversine_m(target, member) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Roaming pairs are judged from either end (a disc around the target when the
    /// member moves, around the member when the target moves), and `is_inside` from
    /// the target; the answers agree only if the distance is the same both ways, to
    /// the bit.
    #[test]
    fn haversine_is_symmetric_to_the_bit() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |scale: f64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (((seed >> 11) as f64 / (1_u64 << 53) as f64) * 2.0 - 1.0) * scale
        };
        for _ in 0..20_000 {
            let a = Point::new(next(90.0), next(180.0)).unwrap();
            // Mostly near each other, as roaming pairs are.
            let b = Point::new(
                (a.lat() + next(0.5)).clamp(-90.0, 90.0),
                super::super::path::wrap_lon(a.lon() + next(0.5)),
            )
            .unwrap();
            assert_eq!(haversine_m(a, b).to_bits(), haversine_m(b, a).to_bits(), "{a:?} {b:?}");
        }
    }
}
