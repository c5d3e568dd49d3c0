//! The path a member is taken to have followed between two fixes: straight in latitude
//! and longitude, the shorter way round in longitude. Every jump test (static fences
//! and roaming ones) is a question about this one path, so they all agree on it.

use crate::distance::EARTH_RADIUS_M;
use crate::point::Point;

/// The point `fraction` of the way along the path from `from` to `to`.
///
/// The path is linear in latitude and in longitude, taking the shorter way round
/// (across the antimeridian when that is shorter; eastward when the two are exactly
/// 180° apart). It is a straight line on any equirectangular map. `fraction` is
/// clamped to `0..=1`; `0` gives `from` and `1` gives `to` exactly.
#[must_use]
pub fn path_at(from: Point, to: Point, fraction: f64) -> Point {
    Path::new(from, to).at(fraction)
}

/// The longitude step from `from` to `to` the shorter way round, in `(-180, 180]`.
pub(crate) fn lon_delta(from: f64, to: f64) -> f64 {
    let d = to - from;
    if d > 180.0 {
        d - 360.0
    } else if d <= -180.0 {
        d + 360.0
    } else {
        d
    }
}

/// A longitude in `-540..=540` brought into `-180..=180`.
pub(crate) fn wrap_lon(lon: f64) -> f64 {
    let l = if lon > 180.0 {
        lon - 360.0
    } else if lon < -180.0 {
        lon + 360.0
    } else {
        lon
    };
    l.clamp(-180.0, 180.0)
}

/// A member's path between two fixes, with its longitudes unwrapped: the path runs
/// from `from.lon()` to `from.lon() + dlon`, which may leave `-180..=180`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Path {
    from: Point,
    to: Point,
    dlat: f64,
    dlon: f64,
}

impl Path {
    pub(crate) fn new(from: Point, to: Point) -> Self {
        Self { from, to, dlat: to.lat() - from.lat(), dlon: lon_delta(from.lon(), to.lon()) }
    }

    #[cfg(test)]
    pub(crate) fn from(&self) -> Point {
        self.from
    }

    #[cfg(test)]
    pub(crate) fn to(&self) -> Point {
        self.to
    }

    /// No movement: both fixes name the same place.
    pub(crate) fn is_still(&self) -> bool {
        self.dlat == 0.0 && self.dlon == 0.0
    }

    /// Unwrapped `(lon, lat)` of the start and of the step, the plane the box and
    /// polygon tests work in.
    pub(crate) fn plane(&self) -> ((f64, f64), (f64, f64)) {
        ((self.from.lon(), self.from.lat()), (self.dlon, self.dlat))
    }

    /// The point at `fraction` (clamped to `0..=1`), its longitude wrapped back.
    pub(crate) fn at(&self, fraction: f64) -> Point {
        let f = fraction.clamp(0.0, 1.0);
        if f == 0.0 {
            return self.from;
        }
        if f == 1.0 {
            return self.to;
        }
        // Clamped: a rounding step past the pole or the antimeridian is no new place.
        let lat = (self.from.lat() + f * self.dlat).clamp(-90.0, 90.0);
        let lon = wrap_lon(self.from.lon() + f * self.dlon);
        Point::trusted(lat, lon)
    }

    /// An upper bound on how fast the path moves, in metres per unit of fraction: the
    /// distance from any fixed point changes no faster along it (the Lipschitz constant
    /// the circle search relies on). It is the path's length on the sphere at the
    /// parallel nearest the equator, so it never undershoots.
    pub(crate) fn speed_bound_m(&self) -> f64 {
        let (a, b) = (self.from.lat(), self.to.lat());
        let widest = if a * b <= 0.0 { 1.0 } else { a.abs().min(b.abs()).to_radians().cos() };
        let (dphi, dlam) = (self.dlat.to_radians(), self.dlon.to_radians() * widest);
        // A hair above the exact bound so that rounding in the distances it is compared
        // with cannot make it undershoot.
        EARTH_RADIUS_M * (dphi * dphi + dlam * dlam).sqrt() * (1.0 + 1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lon: f64) -> Point {
        Point::new(lat, lon).unwrap()
    }

    #[test]
    fn longitude_steps_take_the_shorter_way() {
        for (from, to, want) in [
            (0.0, 10.0, 10.0),
            (170.0, -170.0, 20.0),
            (-170.0, 170.0, -20.0),
            (180.0, -180.0, 0.0),
            (-90.0, 90.0, 180.0),
            (90.0, -90.0, 180.0),
            (0.0, -180.0, 180.0),
        ] {
            assert_eq!(lon_delta(from, to), want, "{from} → {to}");
        }
    }

    #[test]
    fn the_path_is_linear_and_wraps() {
        let mid = path_at(p(0.0, 179.0), p(2.0, -179.0), 0.5);
        assert!((mid.lat() - 1.0).abs() < 1e-12 && mid.lon().abs() == 180.0, "{mid:?}");
        let q = path_at(p(10.0, 170.0), p(20.0, -170.0), 0.75);
        assert!((q.lat() - 17.5).abs() < 1e-12 && (q.lon() + 175.0).abs() < 1e-12, "{q:?}");
        assert_eq!(path_at(p(1.0, 2.0), p(3.0, 4.0), 1.0), p(3.0, 4.0));
        assert_eq!(path_at(p(1.0, 2.0), p(3.0, 4.0), -5.0), p(1.0, 2.0));
    }
}
