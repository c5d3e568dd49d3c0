//! Circle fences: everything within a radius of a centre, by the same haversine the
//! index uses, so a fence and a radius search agree on every point. Also the disc a
//! roaming fence draws around its moving target.

use crate::distance::haversine_m;
use crate::point::Point;

use super::path::Path;
use super::{PathPoint, RADIUS_MAX_M, RadiusError};

/// Most distance evaluations one path search may spend. The search needs at most
/// about `7·√(radius / grazing)` ≈ 22,000 even for a path that grazes the circle
/// (a unit test measures the worst cases); this is a second wall, not the bound.
const SEARCH_EVALS_MAX: usize = 1 << 17;

/// A circle on the globe: every point within `radius_m` metres of `centre`
/// (great-circle distance, boundary included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circle {
    centre: Point,
    radius_m: f64,
}

impl Circle {
    /// The circle of `radius_m` metres around `centre`.
    ///
    /// # Errors
    /// [`RadiusError`] unless `0 < radius_m <= RADIUS_MAX_M`.
    pub fn new(centre: Point, radius_m: f64) -> Result<Self, RadiusError> {
        check_radius(radius_m)?;
        Ok(Self { centre, radius_m })
    }

    /// A circle with a radius already checked (a roaming fence's).
    pub(crate) fn trusted(centre: Point, radius_m: f64) -> Self {
        debug_assert!(check_radius(radius_m).is_ok(), "radius {radius_m}");
        Self { centre, radius_m }
    }

    /// The centre.
    #[must_use]
    pub fn centre(&self) -> Point {
        self.centre
    }

    /// The radius in metres.
    #[must_use]
    pub fn radius_m(&self) -> f64 {
        self.radius_m
    }

    /// Whether `p` is at most `radius_m` from the centre ([`haversine_m`], so a point
    /// on the boundary as Redis would compute it is inside).
    #[must_use]
    pub fn contains(&self, p: Point) -> bool {
        haversine_m(self.centre, p) <= self.radius_m
    }

    /// The closest approach of a path that comes within the grazing tolerance of the
    /// boundary, as `(fraction, point)` of a point inside; see [`Circle::search`].
    pub(crate) fn path_inside(&self, path: &Path) -> Option<PathPoint> {
        self.search(path).0
    }

    /// Branch and bound over the path's fraction, on the exact haversine: along the path
    /// the distance to the centre changes by at most `L` metres per unit of fraction
    /// ([`Path::speed_bound_m`]), so on `[a, b]` it is at least
    /// `(d(a) + d(b) − L·(b − a)) / 2`. An interval whose bound exceeds the radius holds
    /// no inside point and is dropped; one shorter than the grazing tolerance is
    /// dropped as a graze; otherwise its midpoint is tried and it is split, left half
    /// first. A returned point passed [`Circle::contains`]; `None` means the path
    /// stays outside or comes closer than the radius by less than [`grazing_m`].
    ///
    /// Returns the number of distance evaluations too, for the test of the cost bound.
    fn search(&self, path: &Path) -> (Option<PathPoint>, usize) {
        let eval = |f: f64| {
            let p = path.at(f);
            (haversine_m(self.centre, p), p)
        };
        let (d0, p0) = eval(0.0);
        if d0 <= self.radius_m {
            return (Some(PathPoint { fraction: 0.0, point: p0 }), 1);
        }
        let (d1, p1) = eval(1.0);
        if d1 <= self.radius_m {
            return (Some(PathPoint { fraction: 1.0, point: p1 }), 2);
        }
        if path.is_still() {
            return (None, 2);
        }
        let speed = path.speed_bound_m();
        let grazing = grazing_m(self.radius_m);
        let mut evals = 2;
        // Depth-first, so the stack holds at most one interval per level (≤ ~64).
        let mut stack = vec![(0.0, d0, 1.0, d1)];
        while let Some((a, da, b, db)) = stack.pop() {
            let span_m = speed * (b - a);
            if (da + db - span_m) / 2.0 > self.radius_m || span_m <= grazing {
                continue;
            }
            if evals >= SEARCH_EVALS_MAX {
                debug_assert!(false, "circle search budget exhausted: {self:?} {path:?}");
                break;
            }
            let m = (a + b) / 2.0;
            let (dm, pm) = eval(m);
            evals += 1;
            if dm <= self.radius_m {
                return (Some(PathPoint { fraction: m, point: pm }), evals);
            }
            stack.push((m, dm, b, db));
            stack.push((a, da, m, dm));
        }
        (None, evals)
    }
}

/// How close to the boundary a path may come, from outside, and still count as
/// having stayed out: 1 cm, or 10⁻⁷ of the radius for radii above 100 km. Below GPS
/// noise by orders of magnitude; it is what keeps a tangent path's search finite.
#[must_use]
pub fn grazing_m(radius_m: f64) -> f64 {
    (radius_m * 1e-7).max(0.01)
}

/// `Ok` for a radius in `(0, RADIUS_MAX_M]`.
pub(crate) fn check_radius(radius_m: f64) -> Result<(), RadiusError> {
    if radius_m.is_nan() {
        return Err(RadiusError::NotANumber);
    }
    if radius_m <= 0.0 {
        return Err(RadiusError::NotPositive { radius_m });
    }
    if radius_m > RADIUS_MAX_M {
        return Err(RadiusError::TooLarge { radius_m, max_m: RADIUS_MAX_M });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::EARTH_RADIUS_M;

    fn p(lat: f64, lon: f64) -> Point {
        Point::new(lat, lon).unwrap()
    }

    #[test]
    fn radius_bounds() {
        let c = p(0.0, 0.0);
        assert_eq!(Circle::new(c, f64::NAN), Err(RadiusError::NotANumber));
        assert_eq!(Circle::new(c, 0.0), Err(RadiusError::NotPositive { radius_m: 0.0 }));
        assert_eq!(Circle::new(c, -1.0), Err(RadiusError::NotPositive { radius_m: -1.0 }));
        assert_eq!(
            Circle::new(c, f64::INFINITY),
            Err(RadiusError::TooLarge { radius_m: f64::INFINITY, max_m: RADIUS_MAX_M })
        );
        assert!(Circle::new(c, RADIUS_MAX_M).is_ok());
        assert!(Circle::new(c, f64::MIN_POSITIVE).is_ok());
    }

    /// A path along a meridian (a great circle) passes a centre off it at a chosen
    /// cross-track distance `sin(d/R) = cos φ · sin Δλ`; at `d` equal to the radius the
    /// path is a tangent, the search's worst case. The search must find every path that
    /// goes in by more than the grazing tolerance, miss every one that stays out, and
    /// stay far inside its budget.
    #[test]
    fn search_is_exact_to_the_grazing_tolerance_and_bounded() {
        let (mut worst, mut judged) = (0, 0);
        for radius_m in [1.0, 150.0, 5_000.0, 100_000.0, RADIUS_MAX_M] {
            for lat in [0.0_f64, 45.0, 80.0] {
                for lat_span in [0.001, 0.3, 10.0, 170.0] {
                    for depth in [-3.0, -1.5, 0.0, 1.0, 3.0] {
                        let miss_m = radius_m + depth * grazing_m(radius_m);
                        let s = (miss_m / EARTH_RADIUS_M).sin() / lat.to_radians().cos();
                        if s >= 1.0 {
                            continue;
                        }
                        let dlon = s.asin().to_degrees();
                        let circle = Circle::new(p(lat, dlon), radius_m).unwrap();
                        let (south, north) =
                            ((lat - lat_span / 2.0).max(-90.0), (lat + lat_span / 2.0).min(90.0));
                        let path = Path::new(p(south, 0.0), p(north, 0.0));
                        let (hit, evals) = circle.search(&path);
                        worst = worst.max(evals);
                        if let Some(h) = hit {
                            assert!(circle.contains(h.point), "{h:?}");
                            assert_eq!(h.point, path.at(h.fraction));
                        }
                        // The meridian's closest point to the centre lies a little
                        // poleward of it; judge only paths that contain it.
                        let closest =
                            (lat.to_radians().tan() / dlon.to_radians().cos()).atan().to_degrees();
                        let ends_out = !circle.contains(path.from()) && !circle.contains(path.to());
                        if (south..=north).contains(&closest) && ends_out {
                            judged += 1;
                            let case =
                                format!("r {radius_m} lat {lat} span {lat_span} depth {depth}");
                            if depth <= -1.5 {
                                assert!(hit.is_some(), "missed: {case}");
                            }
                            if depth > 0.0 {
                                assert!(hit.is_none(), "false hit: {case}");
                            }
                        }
                    }
                }
            }
        }
        assert!(judged >= 150, "only {judged} cases judged");
        assert!(worst < SEARCH_EVALS_MAX / 4, "worst search: {worst} evaluations");
    }

    #[test]
    fn search_answers_paths_that_start_or_end_inside_or_stand_still() {
        let circle = Circle::new(p(0.0, 0.0), 1_000.0).unwrap();
        let (inside, outside) = (p(0.0, 0.001), p(0.0, 1.0));
        assert_eq!(circle.path_inside(&Path::new(inside, outside)).map(|h| h.fraction), Some(0.0));
        assert_eq!(circle.path_inside(&Path::new(outside, inside)).map(|h| h.fraction), Some(1.0));
        assert_eq!(circle.path_inside(&Path::new(outside, outside)), None);
        // Straight through the centre, from far outside to far outside.
        let hit = circle.path_inside(&Path::new(p(0.0, -1.0), p(0.0, 1.0))).unwrap();
        assert!(circle.contains(hit.point), "{hit:?}");
    }
}
