//! Coverings: the grid cells that together contain every point of a search area,
//! row by row. Each row of cells gets the longitudes the area reaches within that
//! row's latitudes, so a circle is covered by a stack of strips that follow its
//! outline rather than by its bounding box.
//!
//! **Why a covering never misses.** The area is grown by a relative 10⁻⁹ (and a
//! picometre-scale absolute term) before it is measured, far more than the rounding
//! of the formulas involved (about 10⁻¹⁵ relative), so a point whose computed
//! distance passes the exact test lies in a covering cell even when its true
//! distance is a hair beyond. Near the antipode the haversine loses precision
//! (`asin` close to 1), so an area reaching within 10⁻⁶ rad of it covers the globe.
//! Property tests check the claim against random points, poles and the antimeridian
//! included.

use std::f64::consts::PI;

use thiserror::Error;

use super::grid::Grid;
use super::score::{SCORE_GRID, interleave};
use super::{Geohash, GeohashError, grid_of, score_grid};
use crate::distance::EARTH_RADIUS_M;
use crate::point::Point;

/// Why a covering was refused.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
#[non_exhaustive]
pub enum CoverError {
    /// The precision is outside `1..=12`.
    #[error(transparent)]
    Precision(#[from] GeohashError),
    /// A radius, width or height is negative or not finite.
    #[error("extent {0} m must be a finite number >= 0")]
    InvalidExtent(f64),
    /// The covering needs more cells than allowed.
    #[error("covering needs more than the {max} cells allowed")]
    TooManyCells {
        /// The limit given.
        max: usize,
    },
}

/// An area with the index's (and Redis's) membership test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Shape {
    /// Points whose haversine distance from the centre is at most `radius_m`.
    Circle {
        /// Centre latitude.
        lat: f64,
        /// Centre longitude.
        lon: f64,
        /// Radius in metres.
        radius_m: f64,
    },
    /// Points whose meridian distance from the centre's latitude is at most
    /// `height_m / 2` and whose distance along their own parallel from the centre's
    /// meridian is at most `width_m / 2`.
    Box {
        /// Centre latitude.
        lat: f64,
        /// Centre longitude.
        lon: f64,
        /// Full width in metres.
        width_m: f64,
        /// Full height in metres.
        height_m: f64,
    },
}

/// Grows an angle in radians by the covering's margin.
fn grow(rad: f64) -> f64 {
    rad * (1.0 + 1e-9) + 1e-12
}

/// Within this of π, a circle is taken to cover the globe (the haversine's rounding
/// near the antipode is about `1e-16 / cos(ρ/2)` rad).
const ANTIPODE_MARGIN_RAD: f64 = 1e-6;

/// `sin²(x / 2)`.
fn hav(x: f64) -> f64 {
    let s = (x / 2.0).sin();
    s * s
}

/// How far east and west of the centre a row band reaches.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reach {
    /// Every longitude.
    All,
    /// Up to this many degrees each way.
    Deg(f64),
}

/// The measured area: its latitude band and, per row band, its longitude reach.
#[derive(Debug, Clone, Copy)]
struct Region {
    lat_lo: f64,
    lat_hi: f64,
    lon: f64,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// The whole globe.
    Everything,
    /// A spherical cap: centre latitude in radians, its cosine, `hav(ρ)`, and the
    /// latitude (degrees) where the cap is widest, if it has one.
    Cap { phi: f64, cos_phi: f64, hav_rho: f64, widest_deg: Option<f64> },
    /// Redis's box: `sin(w / 4R)` (grown), or `None` when every longitude passes.
    Box { sin_quarter_w: Option<f64> },
}

impl Region {
    fn new(shape: Shape) -> Self {
        match shape {
            Shape::Circle { lat, lon, radius_m } => {
                let rho = grow(radius_m / EARTH_RADIUS_M);
                if rho >= PI - ANTIPODE_MARGIN_RAD {
                    return Self { lat_lo: -90.0, lat_hi: 90.0, lon, kind: Kind::Everything };
                }
                let phi = lat.to_radians();
                let sin_ratio = phi.sin() / rho.cos();
                let widest_deg = (rho.cos() > 0.0 && sin_ratio.abs() < 1.0)
                    .then(|| sin_ratio.asin().to_degrees());
                Self {
                    lat_lo: (lat - rho.to_degrees()).max(-90.0),
                    lat_hi: (lat + rho.to_degrees()).min(90.0),
                    lon,
                    kind: Kind::Cap { phi, cos_phi: phi.cos(), hav_rho: hav(rho), widest_deg },
                }
            }
            Shape::Box { lat, lon, width_m, height_m } => {
                let half_h = grow(height_m / 2.0 / EARTH_RADIUS_M).to_degrees();
                let half_w = grow(width_m / 2.0 / EARTH_RADIUS_M);
                Self {
                    lat_lo: (lat - half_h).max(-90.0),
                    lat_hi: (lat + half_h).min(90.0),
                    lon,
                    kind: Kind::Box { sin_quarter_w: (half_w < PI).then(|| (half_w / 2.0).sin()) },
                }
            }
        }
    }

    /// How far the area reaches east and west within latitudes `a..=b` (inside the
    /// area's band).
    fn reach(&self, a: f64, b: f64) -> Reach {
        let half = match self.kind {
            Kind::Everything => return Reach::All,
            Kind::Cap { phi, cos_phi, hav_rho, widest_deg } => {
                // hav(Δλ) = (hav ρ − hav(y − φ)) / (cos φ cos y): widest at an end of
                // the band or where the cap is widest overall.
                let at = |y_deg: f64| {
                    let y = y_deg.to_radians();
                    let den = cos_phi * y.cos();
                    let num = hav_rho - hav(y - phi);
                    if num <= 0.0 {
                        Some(0.0)
                    } else if den <= 0.0 || num >= den {
                        None
                    } else {
                        Some((num / den).sqrt())
                    }
                };
                let mut best = 0.0f64;
                let widest = widest_deg.filter(|y| (a..=b).contains(y));
                for y in [Some(a), Some(b), widest].into_iter().flatten() {
                    match at(y) {
                        None => return Reach::All,
                        Some(s) => best = best.max(s),
                    }
                }
                2.0 * best.asin()
            }
            Kind::Box { sin_quarter_w } => {
                let Some(s) = sin_quarter_w else { return Reach::All };
                // Narrowest parallel of the band: its highest |latitude|.
                let c = a.abs().max(b.abs()).to_radians().cos();
                if c <= 0.0 || s >= c {
                    return Reach::All;
                }
                2.0 * (s / c).asin()
            }
        };
        let deg = grow(half).to_degrees() + 1e-9;
        if deg >= 180.0 { Reach::All } else { Reach::Deg(deg) }
    }

    /// The rows of `grid` the area touches.
    fn rows(&self, grid: Grid) -> std::ops::RangeInclusive<u64> {
        grid.row_of(self.lat_lo)..=grid.row_of(self.lat_hi)
    }

    /// The column spans (inclusive, at most two) of `row`; the second is empty
    /// (`start > end`) when unused.
    fn spans(&self, grid: Grid, row: u64) -> [(u64, u64); 2] {
        const NONE: (u64, u64) = (1, 0);
        let last = grid.cols() - 1;
        let (south, north) = grid.row_bounds(row);
        let (a, b) = (south.max(self.lat_lo), north.min(self.lat_hi));
        let d = match self.reach(a.min(b), b.max(a)) {
            Reach::All => return [(0, last), NONE],
            Reach::Deg(d) => d,
        };
        let (lo, hi) = (self.lon - d, self.lon + d);
        let (lo, hi) = if lo < -180.0 {
            (lo + 360.0, hi)
        } else if hi > 180.0 {
            (lo, hi - 360.0)
        } else {
            return [(grid.col_of(lo), grid.col_of(hi)), NONE];
        };
        // Wrapped: [lo, 180] and [-180, hi].
        let (east_from, west_to) = (grid.col_of(lo), grid.col_of(hi));
        if west_to + 1 >= east_from {
            return [(0, last), NONE];
        }
        [(0, west_to), (east_from, last)]
    }

    /// Cells of `grid` the covering takes, counted up to just past `limit` (every
    /// row takes a cell, so this looks at `limit + 1` rows at most).
    fn count(&self, grid: Grid, limit: u64) -> u64 {
        if matches!(self.kind, Kind::Everything) {
            return grid.rows() * grid.cols();
        }
        let mut cells = 0;
        for row in self.rows(grid) {
            cells += self
                .spans(grid, row)
                .iter()
                .filter(|(s, e)| s <= e)
                .map(|(s, e)| e - s + 1)
                .sum::<u64>();
            if cells > limit {
                break;
            }
        }
        cells
    }

    /// Calls `f(row, col)` for every cell of the covering, row by row.
    fn for_each(&self, grid: Grid, mut f: impl FnMut(u64, u64)) {
        let rows = if matches!(self.kind, Kind::Everything) {
            0..=grid.rows() - 1
        } else {
            self.rows(grid)
        };
        for row in rows {
            let spans = if matches!(self.kind, Kind::Everything) {
                [(0, grid.cols() - 1), (1, 0)]
            } else {
                self.spans(grid, row)
            };
            for (s, e) in spans {
                for col in s..=e {
                    f(row, col);
                }
            }
        }
    }
}

fn check_extent(m: f64) -> Result<(), CoverError> {
    if m.is_finite() && m >= 0.0 { Ok(()) } else { Err(CoverError::InvalidExtent(m)) }
}

/// The geohashes at `precision` whose cells together contain every point within
/// `radius_m` of `center` (haversine on [`EARTH_RADIUS_M`]), sorted; no more than
/// `cells_max`. Cells that only touch the circle through the margin may be included.
///
/// # Errors
/// [`CoverError`] for a bad precision or radius, or when more than `cells_max` cells
/// would be needed (nothing is allocated then).
pub fn cover_circle(
    center: Point,
    radius_m: f64,
    precision: u8,
    cells_max: usize,
) -> Result<Vec<Geohash>, CoverError> {
    check_extent(radius_m)?;
    let shape = Shape::Circle { lat: center.lat(), lon: center.lon(), radius_m };
    cover(shape, precision, cells_max)
}

/// The geohashes at `precision` whose cells together contain every point of the box
/// of `width_m` by `height_m` centred on `center`, sorted; no more than `cells_max`.
///
/// The box is Redis's `BYBOX`: a point is inside when its meridian distance from the
/// centre's latitude is at most `height_m / 2` and its great-circle distance from the
/// centre's meridian, measured along the point's own parallel, is at most
/// `width_m / 2` — so it widens in degrees towards the poles.
///
/// # Errors
/// As [`cover_circle`].
pub fn cover_box(
    center: Point,
    width_m: f64,
    height_m: f64,
    precision: u8,
    cells_max: usize,
) -> Result<Vec<Geohash>, CoverError> {
    check_extent(width_m)?;
    check_extent(height_m)?;
    let shape = Shape::Box { lat: center.lat(), lon: center.lon(), width_m, height_m };
    cover(shape, precision, cells_max)
}

fn cover(shape: Shape, precision: u8, cells_max: usize) -> Result<Vec<Geohash>, CoverError> {
    let grid = grid_of(precision)?;
    let region = Region::new(shape);
    let cells = region.count(grid, cells_max as u64);
    if cells > cells_max as u64 {
        return Err(CoverError::TooManyCells { max: cells_max });
    }
    let mut out = Vec::with_capacity(cells as usize);
    region.for_each(grid, |row, col| out.push(Geohash::from_cell(grid, precision, row, col)));
    out.sort_unstable();
    Ok(out)
}

/// Sorted, disjoint half-open ranges of index keys (in-grid scores, `0..2^52`) that
/// hold every member `shape` can contain, from at most four cells: the finest level
/// whose cells are at least as tall as the area and twice as wide as its widest
/// reach, so the area spans at most two rows and two columns. The cheapest covering
/// to compute and to scan (a handful of trigonometric calls, at most four ranges):
/// right for areas that hold few members. An area around a pole, which reaches every
/// longitude, gets [`score_ranges`] with eight cells instead.
pub(crate) fn score_ranges_coarse(shape: Shape, out: &mut Vec<(u64, u64)>) {
    out.clear();
    let region = Region::new(shape);
    if matches!(region.kind, Kind::Everything) {
        out.push((0, 1 << 52));
        return;
    }
    let Reach::Deg(reach) = region.reach(region.lat_lo, region.lat_hi) else {
        score_ranges(shape, 8, out);
        return;
    };
    let scale = SCORE_GRID.lat_max - SCORE_GRID.lat_min;
    let band = (region.lat_hi - region.lat_lo).max(1e-12);
    let fit = |span: f64, whole: f64| (whole / span).log2().floor().clamp(0.0, 26.0) as u32;
    let level = fit(band, scale).min(fit(2.0 * reach, 360.0));
    let grid = score_grid(level);
    let (lo, hi) = (region.lon - reach, region.lon + reach);
    let (lo, hi) =
        (if lo < -180.0 { lo + 360.0 } else { lo }, if hi > 180.0 { hi - 360.0 } else { hi });
    let (first, last) = (grid.col_of(lo), grid.col_of(hi));
    let cols =
        if first <= last { [(first, last), (1, 0)] } else { [(0, last), (first, grid.cols() - 1)] };
    let shift = 2 * (26 - level);
    for row in region.rows(grid) {
        for (s, e) in cols {
            for col in s..=e {
                let z = interleave(row, col);
                out.push((z << shift, (z + 1) << shift));
            }
        }
    }
    merge(out);
}

/// Sorts ranges and merges those that touch.
fn merge(out: &mut Vec<(u64, u64)>) {
    out.sort_unstable();
    let mut merged = 0;
    for i in 1..out.len() {
        if out[i].0 <= out[merged].1 {
            out[merged].1 = out[merged].1.max(out[i].1);
        } else {
            merged += 1;
            out[merged] = out[i];
        }
    }
    out.truncate(merged + 1);
}

/// Sorted, disjoint half-open ranges of index keys (in-grid scores, `0..2^52`) that
/// hold every member `shape` can contain, from at most about `cells_max` cells of
/// one level: the finest level whose covering fits, its cells merged where they are
/// adjacent along the Z curve. Each row of cells gets the longitudes the area reaches
/// within it, so the covering follows a circle's outline: right for areas that hold
/// many members, where every member scanned outside the area costs.
pub(crate) fn score_ranges(shape: Shape, cells_max: u64, out: &mut Vec<(u64, u64)>) {
    out.clear();
    let region = Region::new(shape);
    if matches!(region.kind, Kind::Everything) {
        out.push((0, 1 << 52));
        return;
    }
    // Start where about √cells_max rows span the band (a square area's covering is
    // then about cells_max cells), then coarsen until it fits.
    let band = (region.lat_hi - region.lat_lo).max(1e-12);
    let scale = SCORE_GRID.lat_max - SCORE_GRID.lat_min;
    let rows = (cells_max as f64).sqrt().max(2.0);
    let mut level = (rows * scale / band).log2().floor().clamp(0.0, 26.0) as u32;
    while level > 0 && region.count(score_grid(level), cells_max) > cells_max {
        level -= 1;
    }
    let grid = score_grid(level);
    let shift = 2 * (26 - level);
    region.for_each(grid, |row, col| {
        let z = interleave(row, col);
        out.push((z << shift, (z + 1) << shift));
    });
    merge(out);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::distance::{haversine_raw, meridian_m};
    use crate::geohash::Score;
    use crate::point::INDEX_LAT_MAX;

    /// Whether the exact test (the index's) puts `(lat, lon)` inside `shape`.
    fn inside(shape: Shape, lat: f64, lon: f64) -> bool {
        match shape {
            Shape::Circle { lat: clat, lon: clon, radius_m } => {
                haversine_raw(clat, clon, lat, lon) <= radius_m
            }
            Shape::Box { lat: clat, lon: clon, width_m, height_m } => {
                meridian_m(lat, clat) <= height_m / 2.0
                    && haversine_raw(lat, lon, lat, clon) <= width_m / 2.0
            }
        }
    }

    /// A centre, mostly in the hard places: near the poles and the antimeridian.
    fn center() -> impl Strategy<Value = (f64, f64)> {
        let lat = prop_oneof![
            -90.0f64..=90.0,
            80.0f64..=90.0,
            -90.0f64..=-80.0,
            Just(INDEX_LAT_MAX),
            Just(-INDEX_LAT_MAX)
        ];
        let lon = prop_oneof![-180.0f64..=180.0, 179.0f64..=180.0, -180.0f64..=-179.0];
        (lat, lon)
    }

    /// An extent in metres from a few centimetres to around the world.
    fn extent() -> impl Strategy<Value = f64> {
        prop_oneof![
            0.0f64..1.0,
            1.0f64..10_000.0,
            10_000.0f64..2_000_000.0,
            2e6f64..2.1e7,
            Just(0.0)
        ]
    }

    /// A point near the centre (within a few extents, wrapping), or anywhere.
    fn near((lat, lon): (f64, f64), extent_m: f64) -> impl Strategy<Value = (f64, f64)> {
        let d = (extent_m / EARTH_RADIUS_M).to_degrees() * 1.5 + 1e-9;
        let near = (-1.0f64..=1.0, -1.0f64..=1.0).prop_map(move |(a, b)| {
            let la = (lat + a * d).clamp(-90.0, 90.0);
            let spread = d / la.to_radians().cos().max(1e-3);
            let mut lo = lon + b * spread.min(360.0);
            while lo > 180.0 {
                lo -= 360.0;
            }
            while lo < -180.0 {
                lo += 360.0;
            }
            (la, lo)
        });
        prop_oneof![4 => near, 1 => (-90.0f64..=90.0, -180.0f64..=180.0)]
    }

    fn circle_case() -> impl Strategy<Value = (Shape, Vec<(f64, f64)>)> {
        (center(), extent()).prop_flat_map(|(c, r)| {
            let shape = Shape::Circle { lat: c.0, lon: c.1, radius_m: r };
            (Just(shape), proptest::collection::vec(near(c, r), 64))
        })
    }

    fn box_case() -> impl Strategy<Value = (Shape, Vec<(f64, f64)>)> {
        (center(), extent(), extent()).prop_flat_map(|(c, w, h)| {
            let shape = Shape::Box { lat: c.0, lon: c.1, width_m: w, height_m: h };
            (Just(shape), proptest::collection::vec(near(c, w.max(h)), 64))
        })
    }

    fn check_geohash_cover(shape: Shape, points: &[(f64, f64)], precision: u8) {
        let center = |lat: f64, lon: f64| Point::new(lat, lon).unwrap();
        let cells = match shape {
            Shape::Circle { lat, lon, radius_m } => {
                cover_circle(center(lat, lon), radius_m, precision, 4_096)
            }
            Shape::Box { lat, lon, width_m, height_m } => {
                cover_box(center(lat, lon), width_m, height_m, precision, 4_096)
            }
        };
        let cells = match cells {
            Err(CoverError::TooManyCells { .. }) if precision > 1 => {
                // Too fine for this area: check the next coarser covering instead.
                return check_geohash_cover(shape, points, precision - 1);
            }
            other => other.unwrap(),
        };
        for &(lat, lon) in points {
            if inside(shape, lat, lon) {
                let g = Geohash::encode(center(lat, lon), precision).unwrap();
                assert!(
                    cells.binary_search(&g).is_ok(),
                    "{shape:?}: ({lat}, {lon}) in {g}, not covered"
                );
            }
        }
    }

    fn check_score_cover(shape: Shape, points: &[(f64, f64)]) {
        let mut fine = Vec::new();
        score_ranges(shape, 32, &mut fine);
        let mut coarse = Vec::new();
        score_ranges_coarse(shape, &mut coarse);
        assert!(coarse.len() <= 4 || coarse.len() <= fine.len().max(8), "{coarse:?}");
        check_ranges(shape, points, &fine);
        check_ranges(shape, points, &coarse);
    }

    fn check_ranges(shape: Shape, points: &[(f64, f64)], ranges: &[(u64, u64)]) {
        assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0), "sorted, disjoint, merged");
        for &(lat, lon) in points {
            if lat.abs() > INDEX_LAT_MAX {
                continue;
            }
            // The index measures from the stored position, the cell's centre.
            let score = Score::encode_raw(lat, lon);
            let (slat, slon) = score.decode_raw();
            if inside(shape, slat, slon) {
                let key = score.key();
                let hit = ranges.iter().any(|&(lo, hi)| (lo..hi).contains(&key));
                assert!(hit, "{shape:?}: ({slat}, {slon}) key {key} outside {ranges:?}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn a_circle_covering_holds_every_point_within_the_radius(
            (shape, points) in circle_case(),
            precision in 1u8..=7,
        ) {
            check_geohash_cover(shape, &points, precision);
            check_score_cover(shape, &points);
        }

        /// The hardest points: exactly on the circle (the radius is their distance)
        /// or on the box's edges.
        #[test]
        fn points_on_the_edge_are_covered(
            (c, points) in (center(), extent()).prop_flat_map(|(c, r)| {
                (Just(c), proptest::collection::vec(near(c, r), 8))
            }),
            precision in 1u8..=8,
        ) {
            for &(lat, lon) in &points {
                let radius_m = haversine_raw(c.0, c.1, lat, lon);
                let circle = Shape::Circle { lat: c.0, lon: c.1, radius_m };
                check_geohash_cover(circle, &[(lat, lon)], precision);
                let height_m = 2.0 * meridian_m(lat, c.0);
                let width_m = 2.0 * haversine_raw(lat, lon, lat, c.1);
                let edges = Shape::Box { lat: c.0, lon: c.1, width_m, height_m };
                check_geohash_cover(edges, &[(lat, lon)], precision);
                if lat.abs() <= INDEX_LAT_MAX {
                    let (slat, slon) = Score::encode_raw(lat, lon).decode_raw();
                    let radius_m = haversine_raw(c.0, c.1, slat, slon);
                    check_score_cover(Shape::Circle { lat: c.0, lon: c.1, radius_m }, &[(lat, lon)]);
                    let height_m = 2.0 * meridian_m(slat, c.0);
                    let width_m = 2.0 * haversine_raw(slat, slon, slat, c.1);
                    let edges = Shape::Box { lat: c.0, lon: c.1, width_m, height_m };
                    check_score_cover(edges, &[(lat, lon)]);
                }
            }
        }

        #[test]
        fn a_box_covering_holds_every_point_within_the_box(
            (shape, points) in box_case(),
            precision in 1u8..=7,
        ) {
            check_geohash_cover(shape, &points, precision);
            check_score_cover(shape, &points);
        }
    }

    #[test]
    fn coverings_table() {
        let sf = Point::new(37.7749, -122.4194).unwrap();
        // A 1 km circle at precision 5 (4.9 km cells) is the centre cell and some
        // neighbours; at precision 7 it follows the circle.
        let five = cover_circle(sf, 1_000.0, 5, 100).unwrap();
        assert!(five.contains(&"9q8yy".parse().unwrap()));
        assert!(five.len() <= 4, "{five:?}");
        let seven = cover_circle(sf, 1_000.0, 7, 1_000).unwrap();
        assert!(seven.len() > 100 && seven.len() < 250, "{}", seven.len());
        assert!(seven.iter().all(|g| g.to_string().starts_with("9q8")));
        // Across the antimeridian: cells on both sides.
        let fiji = Point::new(-17.0, 179.999).unwrap();
        let cells = cover_circle(fiji, 5_000.0, 5, 100).unwrap();
        let lons: Vec<f64> = cells.iter().map(|g| g.center().lon()).collect();
        assert!(lons.iter().any(|&l| l > 179.0) && lons.iter().any(|&l| l < -179.0), "{lons:?}");
        // Over a pole: every column of the top rows.
        let pole = cover_circle(Point::new(89.9, 0.0).unwrap(), 50_000.0, 2, 1_000).unwrap();
        assert_eq!(pole.iter().filter(|g| g.bounds().lat_max == 90.0).count(), 32);
        // The whole globe.
        assert_eq!(cover_circle(sf, 2.1e7, 1, 32).unwrap().len(), 32);
        // Refusals.
        assert_eq!(cover_circle(sf, 10_000.0, 9, 100), Err(CoverError::TooManyCells { max: 100 }));
        assert_eq!(
            cover_circle(sf, 2.1e7, 12, 1_000),
            Err(CoverError::TooManyCells { max: 1_000 })
        );
        assert_eq!(cover_circle(sf, -1.0, 5, 100), Err(CoverError::InvalidExtent(-1.0)));
        assert!(matches!(cover_box(sf, f64::NAN, 1.0, 5, 100), Err(CoverError::InvalidExtent(_))));
        assert!(matches!(cover_circle(sf, 1.0, 13, 100), Err(CoverError::Precision(_))));
    }
}
