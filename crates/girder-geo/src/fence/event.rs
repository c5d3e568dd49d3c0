//! What the engine reports: one event per change (or stay) of a (fence, member) pair,
//! with enough context — where, when, why, and for roaming fences whom and how far —
//! for a caller to render it without asking the engine again.

use std::sync::Arc;

use crate::point::Point;

/// What happened to a (fence, member) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The member is now inside (and was not).
    Enter,
    /// The member moved and stayed inside.
    Inside,
    /// The member is no longer inside (and was).
    Exit,
}

/// Why an event was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// The member sent a fix.
    Moved,
    /// The target of a roaming fence sent a fix (it moved, or appeared), so its disc
    /// moved over the member.
    TargetMoved,
    /// The member was removed (`Exit` only).
    MemberRemoved,
    /// The target of a roaming fence was removed (`Exit` only).
    TargetRemoved,
    /// The fence was added with the member inside (`Enter` only).
    FenceAdded,
    /// The fence was removed with the member inside (`Exit` only).
    FenceRemoved,
}

/// For a roaming fence: the target the fence follows, and how far the member is from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Nearby {
    /// The target member.
    pub other: Arc<str>,
    /// Great-circle distance in metres between the member and the target at the event.
    pub distance_m: f64,
}

/// One event of a (fence, member) pair.
#[derive(Debug, Clone, PartialEq)]
pub struct FenceEvent {
    /// The fence's id.
    pub fence: Arc<str>,
    /// The member's id.
    pub member: Arc<str>,
    /// Enter, inside or exit.
    pub kind: EventKind,
    /// Why it happened.
    pub cause: Cause,
    /// `true` on the `Enter` and `Exit` of a jump across the fence within one update
    /// (both fixes outside, the path between them inside): the two come together,
    /// `Enter` first.
    pub crossed: bool,
    /// Where the member was: its fix, or on a crossed `Enter` a point of its path
    /// inside the fence (for a roaming fence whose target moved, the member's fix).
    pub point: Point,
    /// When, in milliseconds: the time of the update (or removal, or addition); on a
    /// crossed `Enter`, interpolated along the update's interval.
    pub at_ms: u64,
    /// The target and the distance to it, for a roaming fence.
    pub nearby: Option<Nearby>,
}
