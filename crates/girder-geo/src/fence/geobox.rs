//! Box fences: a latitude band cut by a longitude range, the range running east from
//! the west edge to the east edge, so a box whose west edge is east of its east edge
//! crosses the antimeridian.

use thiserror::Error;

use crate::point::Point;

use super::PathPoint;
use super::path::Path;

/// A latitude/longitude box: `south..=north` by the longitudes from `west` eastward
/// to `east` (boundary included). `west > east` is a box across the antimeridian;
/// `west = -180, east = 180` is a whole latitude band.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoBox {
    south: f64,
    west: f64,
    north: f64,
    east: f64,
    /// Degrees of longitude from `west` eastward to `east`, in `(0, 360]`.
    width: f64,
}

/// Why a box was refused.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
#[non_exhaustive]
pub enum BoxError {
    /// The south-west corner is north of the north-east corner.
    #[error("south edge {south} is north of north edge {north}")]
    SouthAboveNorth {
        /// The south edge given.
        south: f64,
        /// The north edge given.
        north: f64,
    },
    /// South and north edges are equal: the box has no area.
    #[error("south and north edges are both {lat}: the box has no height")]
    ZeroHeight {
        /// The latitude of both edges.
        lat: f64,
    },
    /// West and east edges name the same meridian (including -180 and 180 the other
    /// way round): no width, or a whole band meant ambiguously. A whole band is
    /// `west = -180, east = 180`.
    #[error("west edge {west} and east edge {east} are the same meridian")]
    ZeroWidth {
        /// The west edge given.
        west: f64,
        /// The east edge given.
        east: f64,
    },
}

impl GeoBox {
    /// The box with corners `south_west` and `north_east`.
    ///
    /// # Errors
    /// [`BoxError`] for a box with no area or with its corners upside down.
    pub fn new(south_west: Point, north_east: Point) -> Result<Self, BoxError> {
        let (south, west) = (south_west.lat(), south_west.lon());
        let (north, east) = (north_east.lat(), north_east.lon());
        if south > north {
            return Err(BoxError::SouthAboveNorth { south, north });
        }
        if south == north {
            return Err(BoxError::ZeroHeight { lat: south });
        }
        let width = if east >= west { east - west } else { east - west + 360.0 };
        if width == 0.0 {
            return Err(BoxError::ZeroWidth { west, east });
        }
        Ok(Self { south, west, north, east, width })
    }

    /// The south-west corner.
    #[must_use]
    pub fn south_west(&self) -> Point {
        Point::trusted(self.south, self.west)
    }

    /// The north-east corner.
    #[must_use]
    pub fn north_east(&self) -> Point {
        Point::trusted(self.north, self.east)
    }

    /// Whether the box runs across the antimeridian (its west edge is east of its
    /// east edge).
    #[must_use]
    pub fn crosses_antimeridian(&self) -> bool {
        self.west > self.east
    }

    /// Whether `p` is in the box, edges included.
    #[must_use]
    pub fn contains(&self, p: Point) -> bool {
        (self.south..=self.north).contains(&p.lat()) && self.east_of_west(p.lon()) <= self.width
    }

    /// Degrees from the west edge eastward to `lon`, in `0..360`.
    fn east_of_west(&self, lon: f64) -> f64 {
        let d = lon - self.west;
        if d < 0.0 {
            d + 360.0
        } else if d >= 360.0 {
            // Only lon = 180 against west = -180: the same meridian.
            d - 360.0
        } else {
            d
        }
    }

    /// A point of the path inside the box, the earliest of the candidates tried.
    ///
    /// In the unwrapped plane the box is a rectangle repeated every 360° of longitude
    /// and the path a segment, so Liang–Barsky clipping against each copy the segment
    /// can reach is exact; the middle of each clipped stretch (then its ends) is the
    /// candidate, and only a candidate that passes [`GeoBox::contains`] is returned, so
    /// rounding cannot report a point outside.
    pub(crate) fn path_inside(&self, path: &Path) -> Option<PathPoint> {
        let ((x, y), (dx, dy)) = path.plane();
        let mut stretches: Vec<(f64, f64)> = Vec::new();
        // The path's longitudes lie in -360..=360 and the box's in -180..=540.
        for k in -2..=1 {
            let x0 = self.west + 360.0 * f64::from(k);
            if let Some(s) = clip(x, y, dx, dy, (x0, x0 + self.width), (self.south, self.north)) {
                stretches.push(s);
            }
        }
        stretches.sort_by(|a, b| a.0.total_cmp(&b.0));
        stretches.into_iter().find_map(|(t0, t1)| {
            [(t0 + t1) / 2.0, t0, t1].into_iter().find_map(|fraction| {
                let point = path.at(fraction);
                self.contains(point).then_some(PathPoint { fraction, point })
            })
        })
    }
}

/// The fractions `t0..=t1` of the segment `(x, y) + t·(dx, dy)`, `t` in `0..=1`, inside
/// the rectangle `xs × ys` (Liang–Barsky), or `None`.
fn clip(x: f64, y: f64, dx: f64, dy: f64, xs: (f64, f64), ys: (f64, f64)) -> Option<(f64, f64)> {
    let (mut t0, mut t1) = (0.0_f64, 1.0_f64);
    for (p, q) in [(-dx, x - xs.0), (dx, xs.1 - x), (-dy, y - ys.0), (dy, ys.1 - y)] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else if p < 0.0 {
            t0 = t0.max(q / p);
        } else {
            t1 = t1.min(q / p);
        }
    }
    (t0 <= t1).then_some((t0, t1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lon: f64) -> Point {
        Point::new(lat, lon).unwrap()
    }

    fn b(s: f64, w: f64, n: f64, e: f64) -> Result<GeoBox, BoxError> {
        GeoBox::new(p(s, w), p(n, e))
    }

    #[test]
    fn refusals() {
        assert_eq!(
            b(1.0, 0.0, 0.0, 1.0),
            Err(BoxError::SouthAboveNorth { south: 1.0, north: 0.0 })
        );
        assert_eq!(b(1.0, 0.0, 1.0, 1.0), Err(BoxError::ZeroHeight { lat: 1.0 }));
        assert_eq!(b(0.0, 5.0, 1.0, 5.0), Err(BoxError::ZeroWidth { west: 5.0, east: 5.0 }));
        assert_eq!(
            b(0.0, 180.0, 1.0, -180.0),
            Err(BoxError::ZeroWidth { west: 180.0, east: -180.0 })
        );
        assert!(b(0.0, -180.0, 1.0, 180.0).is_ok());
        assert!(b(-90.0, 179.0, 90.0, -179.0).unwrap().crosses_antimeridian());
    }

    #[test]
    fn clipping_across_the_antimeridian() {
        let boxed = b(-1.0, 179.0, 1.0, -179.0).unwrap();
        // From east of the box to west of it, the short way: across the antimeridian.
        let hit = boxed.path_inside(&Path::new(p(0.0, -170.0), p(0.0, 170.0))).unwrap();
        assert!(boxed.contains(hit.point) && hit.point.lon().abs() >= 179.0, "{hit:?}");
        // Passing north of it.
        assert_eq!(boxed.path_inside(&Path::new(p(2.0, -170.0), p(2.0, 170.0))), None);
        // A whole band catches any path that reaches its latitudes.
        let band = b(10.0, -180.0, 11.0, 180.0).unwrap();
        assert!(band.path_inside(&Path::new(p(0.0, 179.5), p(20.0, -179.5))).is_some());
    }
}
