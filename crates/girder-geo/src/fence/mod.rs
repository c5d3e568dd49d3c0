//! Geofences, the part of Tile38's geofencing its users rely on beyond Redis GEO
//! (pattern: "Geospatial & Location-based Services"): static areas — circle, box,
//! polygon — and roaming fences that follow a moving member, with `Enter`, `Inside`
//! and `Exit` events per (fence, member) pair, correct when a member jumps across a
//! fence between two fixes. Pure: no async runtime, no I/O; [`FenceSet`] is the engine.
//!
//! # Inside, and the boundary
//!
//! The boundary is inside, for every shape: a circle holds the points at most its
//! radius away by [`haversine_m`](crate::distance::haversine_m) (Redis's formula, so a
//! fence and a `GEOSEARCH BYRADIUS` agree on the edge); a box its edges; a polygon the
//! points exactly on an edge as computed in `f64` (a point within rounding of a
//! polygon edge may fall either way). Polygon and box edges are straight in latitude
//! and longitude, as in GeoJSON.
//!
//! # The path between fixes, and jumps
//!
//! Between two fixes a member is taken to move straight in latitude and longitude,
//! the shorter way round in longitude ([`path_at`]); across the antimeridian when that
//! is shorter. A straight line on any equirectangular map, it differs from the great
//! circle by at most `s²·tan φ / 8R` for a segment of length `s` at latitude `φ`:
//! 3 cm for 1 km and 3.4 m for 10 km at 60°, 340 m for a 100 km jump. For a fence
//! the path is the question, not an approximation of one: every test below answers
//! it for paths of any length, up to half the globe.
//!
//! When both fixes are outside a fence but the path between them passes through it,
//! the pair gets `Enter` then `Exit`, both marked `crossed` (Tile38's `cross`). For a
//! box or polygon the test is exact in the unwrapped latitude/longitude plane. For a
//! circle it is a branch-and-bound search on the exact haversine along the path,
//! complete except for paths that enter by less than [`grazing_m`] (1 cm, or 10⁻⁷ of
//! the radius above 100 km), which count as staying out. The `Enter` carries a point
//! of the path that [`Area::contains`] accepts, and the time interpolated along the
//! update's interval; the `Exit` the new fix. A move from inside to inside is
//! `Inside` even if the path leaves a concave fence in between.
//!
//! # Roaming fences
//!
//! A [`Roaming`] fence is the disc of a radius around a target member, applied to
//! every other member. An update moves one member; the other member of each pair is
//! where it last reported, which is what the engine knew when it last judged the pair.
//! Over the update the two members' separation therefore changes along the mover's
//! path, judged against the other's last fix by the same circle search on the sphere
//! (no planar approximation; error: the grazing tolerance above). Successive judgements
//! start where the last ended, so `Enter`/`Exit` pair up whatever order the members'
//! fixes arrive in. What this cannot see is the other member's motion since its last
//! fix: against a model in which both move at once, the separation differs by at most
//! the distance the other member covers between its fixes (15 m/s for 5 s: 75 m);
//! its next fix is judged, and any crossing it makes reported, then.
//!
//! # Events and pairing
//!
//! Every `Enter` is followed, in the sequence of events the engine returns, by an
//! `Exit` for the same pair, or the pair is still inside: removing a member, a fence or
//! a roaming fence's target emits `Exit` for each pair that was inside, and adding a
//! fence emits `Enter` for each member already inside.

mod circle;
mod event;
mod geobox;
mod path;
mod polygon;
mod set;

use thiserror::Error;

use crate::point::Point;

pub use circle::{Circle, grazing_m};
pub use event::{Cause, EventKind, FenceEvent, Nearby};
pub use geobox::{BoxError, GeoBox};
pub use path::path_at;
pub use polygon::{POLYGON_VERTICES_MAX, Polygon, PolygonError};
pub use set::{
    AddFenceError, Fence, FenceConfig, FenceSet, Fix, RemoveFenceError, RemoveMemberError, Roaming,
    UpdateError,
};

/// The largest radius of a circle or roaming fence: 1,000 km. Fences are local; a
/// larger area is better drawn as a box or polygon.
pub const RADIUS_MAX_M: f64 = 1_000_000.0;

/// Why a radius was refused.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
#[non_exhaustive]
pub enum RadiusError {
    /// The radius is NaN.
    #[error("radius is NaN")]
    NotANumber,
    /// The radius is zero or negative.
    #[error("radius {radius_m} m is not positive")]
    NotPositive {
        /// The radius given.
        radius_m: f64,
    },
    /// The radius is above [`RADIUS_MAX_M`] (or infinite).
    #[error("radius {radius_m} m is above {max_m} m")]
    TooLarge {
        /// The radius given.
        radius_m: f64,
        /// The bound.
        max_m: f64,
    },
}

/// A point on a member's path, and how far along the path it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathPoint {
    /// `0` at the first fix, `1` at the second.
    pub fraction: f64,
    /// The point ([`path_at`] of the fraction).
    pub point: Point,
}

/// A static fence's area.
#[derive(Debug, Clone, PartialEq)]
pub enum Area {
    /// Within a radius of a centre.
    Circle(Circle),
    /// A latitude/longitude box, possibly across the antimeridian.
    Box(GeoBox),
    /// A simple polygon, possibly across the antimeridian.
    Polygon(Polygon),
}

impl Area {
    /// Whether `p` is inside (boundary included; see the module docs).
    #[must_use]
    pub fn contains(&self, p: Point) -> bool {
        match self {
            Self::Circle(c) => c.contains(p),
            Self::Box(b) => b.contains(p),
            Self::Polygon(poly) => poly.contains(p),
        }
    }

    /// A point of the path from `from` to `to` ([`path_at`]) that is inside, if the
    /// path enters the area; an early one, not necessarily where it first enters.
    /// The point always passes [`Area::contains`]. For a circle, a path that enters by
    /// less than [`grazing_m`] may be reported as staying out.
    #[must_use]
    pub fn path_inside(&self, from: Point, to: Point) -> Option<PathPoint> {
        let path = path::Path::new(from, to);
        match self {
            Self::Circle(c) => c.path_inside(&path),
            Self::Box(b) => b.path_inside(&path),
            Self::Polygon(poly) => poly.path_inside(&path),
        }
    }
}

impl From<Circle> for Area {
    fn from(c: Circle) -> Self {
        Self::Circle(c)
    }
}

impl From<GeoBox> for Area {
    fn from(b: GeoBox) -> Self {
        Self::Box(b)
    }
}

impl From<Polygon> for Area {
    fn from(p: Polygon) -> Self {
        Self::Polygon(p)
    }
}
