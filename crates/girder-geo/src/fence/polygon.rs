//! Polygon fences: a simple polygon whose edges are straight in latitude and longitude
//! (GeoJSON's reading), each edge taking the shorter way round in longitude, so a
//! polygon may lie across the antimeridian. Validation refuses what would make
//! "inside" ambiguous: too few vertices, repeats, crossings, rings around a pole.

use thiserror::Error;

use crate::point::Point;

use super::PathPoint;
use super::path::{Path, lon_delta};

/// Most vertices a polygon may have. Validation is quadratic (every pair of edges is
/// tested for crossing: half a million tests at the bound) and containment linear.
pub const POLYGON_VERTICES_MAX: usize = 1_000;

/// Slack on the edge parameters of a path–edge intersection, so that a path through
/// a vertex is not lost to rounding between the two edges that meet there. Extra
/// candidates only cost a containment test each.
const EDGE_SLACK: f64 = 1e-9;

/// A simple polygon on the globe (boundary included).
///
/// Its edges are straight lines in latitude/longitude, each the shorter way round in
/// longitude. Stored unwrapped: longitudes continue past ±180 along the ring, so the
/// ring is an ordinary simple polygon in the plane, repeated every 360°.
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    vertices: Vec<Point>,
    /// `(lon, lat)` of each vertex, longitudes unwrapped along the ring, shifted so
    /// the westmost lies in `-180..180`.
    ring: Vec<(f64, f64)>,
    lon_min: f64,
    lon_max: f64,
    lat_min: f64,
    lat_max: f64,
}

/// Why a polygon was refused. Vertex and edge indices count the vertices as given
/// (edge `i` runs from vertex `i` to the next one, the last back to the first).
#[derive(Debug, Clone, Copy, PartialEq, Error)]
#[non_exhaustive]
pub enum PolygonError {
    /// Fewer than three distinct vertices.
    #[error("{count} vertices; a polygon needs at least 3")]
    TooFewVertices {
        /// Vertices given (not counting a closing repeat of the first).
        count: usize,
    },
    /// More than [`POLYGON_VERTICES_MAX`] vertices.
    #[error("{count} vertices; at most {max}")]
    TooManyVertices {
        /// Vertices given (not counting a closing repeat of the first).
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A vertex is the same place as the one before it (a zero-length edge).
    #[error("vertex {index} repeats the one before it")]
    RepeatedVertex {
        /// The repeating vertex.
        index: usize,
    },
    /// An edge spans exactly 180° of longitude, so which way round it runs is
    /// ambiguous; add a vertex on it.
    #[error("edge {index} spans exactly 180° of longitude; add a vertex on it")]
    HalfTurnEdge {
        /// The edge.
        index: usize,
    },
    /// Taking each edge the shorter way round, the ring goes once around the globe:
    /// it encloses a pole, which a polygon of straight latitude/longitude edges cannot
    /// describe. Use a box up to ±90° instead.
    #[error("the ring goes around the globe (it would enclose a pole)")]
    EnclosesPole,
    /// The polygon spans 360° of longitude or more (unwrapped), so it would overlap
    /// itself on the globe.
    #[error("the polygon spans {span_deg}° of longitude; less than 360° is needed")]
    TooWide {
        /// Its longitude span, unwrapped.
        span_deg: f64,
    },
    /// Two edges cross or touch (beyond the vertex adjacent edges share), or an edge
    /// doubles back along the one before it.
    #[error("edges {first} and {second} intersect")]
    SelfIntersecting {
        /// The lower-numbered edge.
        first: usize,
        /// The other edge.
        second: usize,
    },
    /// The polygon has no area.
    #[error("the polygon has no area")]
    ZeroArea,
}

impl Polygon {
    /// The polygon through `vertices`, in either winding order. A last vertex equal to
    /// the first (a closed GeoJSON ring) is dropped.
    ///
    /// # Errors
    /// [`PolygonError`] for anything but a simple polygon of 3 to
    /// [`POLYGON_VERTICES_MAX`] vertices that does not go around the globe.
    pub fn new(vertices: &[Point]) -> Result<Self, PolygonError> {
        let vs = match vertices {
            [first, .., last] if same_place(*first, *last) => &vertices[..vertices.len() - 1],
            _ => vertices,
        };
        let n = vs.len();
        if n < 3 {
            return Err(PolygonError::TooFewVertices { count: n });
        }
        if n > POLYGON_VERTICES_MAX {
            return Err(PolygonError::TooManyVertices { count: n, max: POLYGON_VERTICES_MAX });
        }
        let mut ring = unwrap_ring(vs)?;
        let lon_min = ring.iter().map(|v| v.0).fold(f64::INFINITY, f64::min);
        // Whole turns only, so the shape is unchanged; afterwards the polygon's
        // longitudes lie in -180..540 and a point's copies at lon and lon ± 360 are
        // all that can fall in it.
        let turns = ((lon_min + 180.0) / 360.0).floor();
        if turns != 0.0 {
            for v in &mut ring {
                v.0 -= 360.0 * turns;
            }
        }
        let (mut lon_max, mut lat_min, mut lat_max) =
            (f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        let mut lon_min = f64::INFINITY;
        for &(x, y) in &ring {
            (lon_min, lon_max) = (lon_min.min(x), lon_max.max(x));
            (lat_min, lat_max) = (lat_min.min(y), lat_max.max(y));
        }
        if lon_max - lon_min >= 360.0 {
            return Err(PolygonError::TooWide { span_deg: lon_max - lon_min });
        }
        check_simple(&ring)?;
        let twice_area: f64 = (0..n).map(|i| cross(ring[i], ring[(i + 1) % n])).sum();
        if twice_area == 0.0 {
            return Err(PolygonError::ZeroArea);
        }
        Ok(Self { vertices: vs.to_vec(), ring, lon_min, lon_max, lat_min, lat_max })
    }

    /// The vertices as given (without a closing repeat of the first).
    #[must_use]
    pub fn vertices(&self) -> &[Point] {
        &self.vertices
    }

    /// Whether `p` is inside or on the boundary (exactly on an edge, as computed in
    /// `f64`; a point within rounding of an edge may fall either way).
    #[must_use]
    pub fn contains(&self, p: Point) -> bool {
        let y = p.lat();
        if y < self.lat_min || y > self.lat_max {
            return false;
        }
        [p.lon(), p.lon() + 360.0, p.lon() - 360.0]
            .into_iter()
            .any(|x| (self.lon_min..=self.lon_max).contains(&x) && self.contains_plane(x, y))
    }

    /// Even–odd ray casting in the unwrapped plane, with points on an edge inside.
    fn contains_plane(&self, x: f64, y: f64) -> bool {
        let mut inside = false;
        for (a, b) in self.edges(0.0) {
            if orient(a, b, (x, y)) == 0.0 && within(a, b, (x, y)) {
                return true;
            }
            if (a.1 > y) != (b.1 > y) {
                let x_cross = a.0 + (y - a.1) * (b.0 - a.0) / (b.1 - a.1);
                if x < x_cross {
                    inside = !inside;
                }
            }
        }
        inside
    }

    /// The edges `(from, to)`, shifted east by `shift` degrees of longitude.
    fn edges(&self, shift: f64) -> impl Iterator<Item = ((f64, f64), (f64, f64))> + '_ {
        let n = self.ring.len();
        (0..n).map(move |i| {
            let (a, b) = (self.ring[i], self.ring[(i + 1) % n]);
            ((a.0 + shift, a.1), (b.0 + shift, b.1))
        })
    }

    /// A point of the path inside the polygon, the earliest of the candidates tried.
    ///
    /// In the unwrapped plane the path is a segment and the polygon's copies every 360°
    /// are ordinary polygons, so the fractions where the path meets an edge are exact
    /// up to rounding; between two consecutive ones the path is wholly in or wholly
    /// out, so each such fraction and each midpoint between two is a candidate, and
    /// only a candidate that passes [`Polygon::contains`] is returned.
    pub(crate) fn path_inside(&self, path: &Path) -> Option<PathPoint> {
        let ((x, y), (dx, dy)) = path.plane();
        let (y0, y1) = (y.min(y + dy), y.max(y + dy));
        if y1 < self.lat_min || y0 > self.lat_max {
            return None;
        }
        let (x0, x1) = (x.min(x + dx), x.max(x + dx));
        let mut ts = vec![0.0, 1.0];
        // The path's longitudes lie in -360..=360 and the polygon's in -180..540.
        for k in -2..=1 {
            let shift = 360.0 * f64::from(k);
            if x1 < self.lon_min + shift || x0 > self.lon_max + shift {
                continue;
            }
            for (a, b) in self.edges(shift) {
                meet((x, y), (dx, dy), a, b, &mut ts);
            }
        }
        ts.sort_by(f64::total_cmp);
        ts.dedup();
        let mids = ts.windows(2).map(|w| (w[0] + w[1]) / 2.0);
        let mut candidates: Vec<f64> = ts.iter().copied().chain(mids).collect();
        candidates.sort_by(f64::total_cmp);
        candidates.into_iter().find_map(|fraction| {
            let point = path.at(fraction);
            self.contains(point).then_some(PathPoint { fraction, point })
        })
    }
}

/// Two points that are the same place (longitudes 180 and -180 are one meridian).
fn same_place(a: Point, b: Point) -> bool {
    a.lat() == b.lat() && lon_delta(a.lon(), b.lon()) == 0.0
}

/// The ring with longitudes unwrapped: each vertex is its own longitude plus whole
/// turns, the ones that put it the shorter way round from the one before (so there
/// is no drift from summing steps). Refuses repeats, half-turn edges and rings that
/// come back a whole turn away from where they started.
fn unwrap_ring(vs: &[Point]) -> Result<Vec<(f64, f64)>, PolygonError> {
    let n = vs.len();
    let mut ring = Vec::with_capacity(n);
    ring.push((vs[0].lon(), vs[0].lat()));
    for i in 1..=n {
        let (prev, v) = (vs[i - 1], vs[i % n]);
        let d = lon_delta(prev.lon(), v.lon());
        if d == 180.0 {
            return Err(PolygonError::HalfTurnEdge { index: i - 1 });
        }
        if d == 0.0 && prev.lat() == v.lat() {
            return Err(PolygonError::RepeatedVertex { index: i % n });
        }
        let turns = ((ring[i - 1].0 + d - v.lon()) / 360.0).round();
        if i == n {
            if turns != 0.0 {
                return Err(PolygonError::EnclosesPole);
            }
        } else {
            ring.push((v.lon() + 360.0 * turns, v.lat()));
        }
    }
    Ok(ring)
}

/// `Ok` if no two edges meet except adjacent ones at their shared vertex.
fn check_simple(ring: &[(f64, f64)]) -> Result<(), PolygonError> {
    let n = ring.len();
    let edge = |i: usize| (ring[i], ring[(i + 1) % n]);
    for i in 0..n {
        let (a, b) = edge(i);
        for j in i + 1..n {
            let (c, d) = edge(j);
            let adjacent = j == i + 1 || (i == 0 && j == n - 1);
            let bad = if adjacent {
                // They share a vertex; they overlap only if one doubles back along the
                // other.
                let (u, v) =
                    if j == i + 1 { (sub(b, a), sub(d, c)) } else { (sub(d, c), sub(b, a)) };
                cross(u, v) == 0.0 && u.0 * v.0 + u.1 * v.1 < 0.0
            } else {
                segments_meet(a, b, c, d)
            };
            if bad {
                return Err(PolygonError::SelfIntersecting { first: i, second: j });
            }
        }
    }
    Ok(())
}

/// Pushes the fractions `t` where the segment `s + t·d` meets the edge `a–b` (both ends
/// of a collinear overlap).
fn meet(s: (f64, f64), d: (f64, f64), a: (f64, f64), b: (f64, f64), ts: &mut Vec<f64>) {
    let e = sub(b, a);
    let w = sub(a, s);
    let denom = cross(d, e);
    let in_unit = |t: f64| (-EDGE_SLACK..=1.0 + EDGE_SLACK).contains(&t);
    if denom != 0.0 {
        let (t, u) = (cross(w, e) / denom, cross(w, d) / denom);
        if in_unit(t) && in_unit(u) {
            ts.push(t.clamp(0.0, 1.0));
        }
    } else if cross(w, d) == 0.0 {
        let dd = d.0 * d.0 + d.1 * d.1;
        let along = |p: (f64, f64)| {
            let q = sub(p, s);
            (q.0 * d.0 + q.1 * d.1) / dd
        };
        let (ta, tb) = (along(a), along(b));
        let (lo, hi) = (ta.min(tb).max(0.0), ta.max(tb).min(1.0));
        if lo <= hi {
            ts.push(lo);
            ts.push(hi);
        }
    }
}

fn sub(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    (a.0 - b.0, a.1 - b.1)
}

fn cross(a: (f64, f64), b: (f64, f64)) -> f64 {
    a.0 * b.1 - a.1 * b.0
}

/// Which side of `a → b` the point `c` is on: positive left, negative right, zero on
/// the line (as computed).
fn orient(a: (f64, f64), b: (f64, f64), c: (f64, f64)) -> f64 {
    cross(sub(b, a), sub(c, a))
}

/// Whether `c`, known to be on the line through `a` and `b`, lies between them.
fn within(a: (f64, f64), b: (f64, f64), c: (f64, f64)) -> bool {
    (a.0.min(b.0)..=a.0.max(b.0)).contains(&c.0) && (a.1.min(b.1)..=a.1.max(b.1)).contains(&c.1)
}

/// Whether the closed segments `a–b` and `c–d` have a point in common.
fn segments_meet(a: (f64, f64), b: (f64, f64), c: (f64, f64), d: (f64, f64)) -> bool {
    if a.0.max(b.0) < c.0.min(d.0)
        || c.0.max(d.0) < a.0.min(b.0)
        || a.1.max(b.1) < c.1.min(d.1)
        || c.1.max(d.1) < a.1.min(b.1)
    {
        return false;
    }
    let (o1, o2) = (orient(a, b, c), orient(a, b, d));
    let (o3, o4) = (orient(c, d, a), orient(c, d, b));
    let opposite = |x: f64, y: f64| (x > 0.0 && y < 0.0) || (x < 0.0 && y > 0.0);
    if opposite(o1, o2) && opposite(o3, o4) {
        return true;
    }
    (o1 == 0.0 && within(a, b, c))
        || (o2 == 0.0 && within(a, b, d))
        || (o3 == 0.0 && within(c, d, a))
        || (o4 == 0.0 && within(c, d, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poly(coords: &[(f64, f64)]) -> Result<Polygon, PolygonError> {
        let vs: Vec<Point> =
            coords.iter().map(|&(lat, lon)| Point::new(lat, lon).unwrap()).collect();
        Polygon::new(&vs)
    }

    #[test]
    fn refusals() {
        use PolygonError as E;
        let check = |coords: &[(f64, f64)], want: PolygonError| {
            assert_eq!(poly(coords), Err(want), "{coords:?}");
        };
        check(&[(0.0, 0.0), (1.0, 0.0)], E::TooFewVertices { count: 2 });
        // A closing repeat is not a vertex.
        check(&[(0.0, 0.0), (1.0, 0.0), (0.0, 0.0)], E::TooFewVertices { count: 2 });
        check(&[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.0, 1.0)], E::RepeatedVertex { index: 3 });
        check(&[(0.0, 0.0), (0.0, 0.0), (1.0, 1.0)], E::RepeatedVertex { index: 1 });
        check(
            &[(0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0)],
            E::SelfIntersecting { first: 0, second: 2 },
        );
        // Collinear: the third edge doubles back along the first.
        check(&[(0.0, 0.0), (0.0, 1.0), (0.0, 2.0)], E::SelfIntersecting { first: 0, second: 2 });
        // A spike: the second edge doubles back along the first.
        check(
            &[(0.0, 0.0), (0.0, 2.0), (0.0, 1.0), (1.0, 1.0)],
            E::SelfIntersecting { first: 0, second: 1 },
        );
        // A vertex touching a non-adjacent edge.
        check(
            &[(0.0, 0.0), (0.0, 4.0), (2.0, 4.0), (0.0, 2.0), (2.0, 0.0)],
            E::SelfIntersecting { first: 0, second: 2 },
        );
        check(&[(0.0, 0.0), (1.0, 180.0), (2.0, 10.0)], E::HalfTurnEdge { index: 0 });
        check(&[(80.0, 0.0), (80.0, 120.0), (80.0, -120.0)], E::EnclosesPole);
        let too_many: Vec<(f64, f64)> = (0..=POLYGON_VERTICES_MAX)
            .map(|i| {
                let a = std::f64::consts::TAU * i as f64 / (POLYGON_VERTICES_MAX + 1) as f64;
                (a.sin(), a.cos())
            })
            .collect();
        check(
            &too_many,
            E::TooManyVertices { count: POLYGON_VERTICES_MAX + 1, max: POLYGON_VERTICES_MAX },
        );
        assert!(poly(&too_many[..POLYGON_VERTICES_MAX]).is_ok());
        // A band 400° long, every edge 100°: simple in the plane, overlapping on the globe.
        let lons = [0.0, 100.0, -160.0, -60.0, 40.0];
        let band: Vec<(f64, f64)> = lons
            .iter()
            .map(|&lon| (0.0, lon))
            .chain(lons.iter().rev().map(|&lon| (1.0, lon)))
            .collect();
        check(&band, E::TooWide { span_deg: 400.0 });
    }

    #[test]
    fn a_ring_across_the_antimeridian_is_unwrapped_and_shifted() {
        let p = poly(&[(0.0, 179.0), (0.0, -179.0), (1.0, -179.0), (1.0, 179.0), (0.0, 179.0)])
            .unwrap();
        assert_eq!(p.vertices().len(), 4);
        assert_eq!((p.lon_min, p.lon_max), (179.0, 181.0));
        let q = poly(&[(0.0, -179.0), (1.0, -179.0), (1.0, 179.0), (0.0, 179.0)]).unwrap();
        assert_eq!((q.lon_min, q.lon_max), (179.0, 181.0));
        for point in [(0.5, 180.0), (0.5, -180.0), (0.5, 179.5), (0.5, -179.5), (0.0, 180.0)] {
            let pt = Point::new(point.0, point.1).unwrap();
            assert!(p.contains(pt) && q.contains(pt), "{point:?}");
        }
        assert!(!p.contains(Point::new(0.5, 178.9).unwrap()));
        assert!(!p.contains(Point::new(0.5, 0.0).unwrap()));
    }
}
