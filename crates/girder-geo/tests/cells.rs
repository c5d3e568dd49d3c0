//! Coverings miss no point and hold no far cell: for random circles anywhere, at the
//! poles, across the antimeridian and around pentagons, at every resolution, every
//! point within the radius lies in a covering cell, every neighbouring cell left out
//! lies wholly outside the radius, and every cell kept comes within it.
//!
//! The checks use only haversine distances to points on the cells' boundaries, not the
//! covering's own point-to-edge geometry.

use std::collections::HashSet;
use std::f64::consts::TAU;

use girder_geo::Point;
use girder_geo::cells::{self, Cell};
use girder_geo::distance::{EARTH_RADIUS_M, haversine_m};
use proptest::prelude::*;

type Vec3 = [f64; 3];

fn unit(p: Point) -> Vec3 {
    let (lat, lon) = (p.lat().to_radians(), p.lon().to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

fn point(v: Vec3) -> Point {
    let lat = v[2].atan2(v[0].hypot(v[1])).to_degrees();
    let lon = v[1].atan2(v[0]).to_degrees();
    Point::new(lat, lon).unwrap()
}

/// The point `distance_m` from `from` along `bearing_rad` (clockwise from north).
/// The east and north directions are defined at the poles too (east along `from`'s
/// meridian's normal), so circles centred on a pole work.
fn destination(from: Point, bearing_rad: f64, distance_m: f64) -> Point {
    let (lat, lon) = (from.lat().to_radians(), from.lon().to_radians());
    let east = [-lon.sin(), lon.cos(), 0.0];
    let north = [-lat.sin() * lon.cos(), -lat.sin() * lon.sin(), lat.cos()];
    let c = unit(from);
    let (sin_b, cos_b) = bearing_rad.sin_cos();
    let (sin_d, cos_d) = (distance_m / EARTH_RADIUS_M).sin_cos();
    let v: Vec3 =
        std::array::from_fn(|i| c[i] * cos_d + (north[i] * cos_b + east[i] * sin_b) * sin_d);
    point(v)
}

/// Points along `cell`'s boundary: every vertex and `per_edge - 1` points between
/// each pair, on the great-circle arc that joins them.
fn boundary_samples(cell: Cell, per_edge: usize) -> Vec<Point> {
    let vertices: Vec<Vec3> = cell.boundary().into_iter().map(unit).collect();
    let n = vertices.len();
    let mut out = Vec::with_capacity(n * per_edge);
    for i in 0..n {
        let (a, b) = (vertices[i], vertices[(i + 1) % n]);
        for step in 0..per_edge {
            let t = step as f64 / per_edge as f64;
            let v: Vec3 = std::array::from_fn(|k| a[k] * (1.0 - t) + b[k] * t);
            let len = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            out.push(point([v[0] / len, v[1] / len, v[2] / len]));
        }
    }
    out
}

fn nearest_m(center: Point, samples: &[Point]) -> f64 {
    samples.iter().map(|&s| haversine_m(center, s)).fold(f64::INFINITY, f64::min)
}

/// Where the circle is centred.
#[derive(Debug, Clone)]
enum Place {
    Anywhere {
        lat: f64,
        lon: f64,
    },
    /// Within `offset` mean edges of a pole.
    Pole {
        north: bool,
        offset: f64,
        lon: f64,
    },
    /// Within `offset` mean edges of the antimeridian, on either side.
    Antimeridian {
        lat: f64,
        offset: f64,
    },
    /// Within `offset` mean edges of one of the resolution's twelve pentagons.
    Pentagon {
        which: usize,
        offset: f64,
        bearing: f64,
    },
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        // Uniform on the sphere: latitude from the arcsine of a uniform sine.
        (-1.0..=1.0f64, -180.0..=180.0f64)
            .prop_map(|(s, lon)| Place::Anywhere { lat: s.asin().to_degrees(), lon }),
        (any::<bool>(), 0.0..3.0f64, -180.0..=180.0f64)
            .prop_map(|(north, offset, lon)| Place::Pole { north, offset, lon }),
        (-85.0..85.0f64, -3.0..3.0f64)
            .prop_map(|(lat, offset)| Place::Antimeridian { lat, offset }),
        (0..12usize, 0.0..2.0f64, 0.0..TAU).prop_map(|(which, offset, bearing)| Place::Pentagon {
            which,
            offset,
            bearing
        }),
    ]
}

fn center_of(place: &Place, resolution: u8) -> Point {
    let edge_m = cells::mean_edge_m(resolution).unwrap();
    let edge_deg = (edge_m / EARTH_RADIUS_M).to_degrees();
    match *place {
        Place::Anywhere { lat, lon } => Point::new(lat, lon).unwrap(),
        Place::Pole { north, offset, lon } => {
            let lat = (90.0 - offset * edge_deg).max(0.0);
            Point::new(if north { lat } else { -lat }, lon).unwrap()
        }
        Place::Antimeridian { lat, offset } => {
            // Metres east of the antimeridian become degrees of longitude there.
            let dlon = (offset * edge_deg / lat.to_radians().cos()).clamp(-180.0, 180.0);
            let lon = if dlon >= 0.0 { -180.0 + dlon } else { 180.0 + dlon };
            Point::new(lat, lon).unwrap()
        }
        Place::Pentagon { which, offset, bearing } => {
            let pentagon = cells::pentagons(resolution).unwrap()[which];
            destination(pentagon.center(), bearing, offset * edge_m)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn covering_holds_every_point_and_no_far_cell(
        place in place(),
        resolution in 0..=15u8,
        // The radius in mean edge lengths; a quarter of the cases at exactly 0.
        edges in prop_oneof![1 => Just(0.0), 3 => 0.0..4.0f64],
        samples in prop::collection::vec((0.0..=1.0f64, 0.0..TAU), 48),
    ) {
        let center = center_of(&place, resolution);
        let radius_m = edges * cells::mean_edge_m(resolution).unwrap();
        let covering = cells::cover_radius(center, radius_m, resolution, 20_000).unwrap();
        let kept: HashSet<Cell> = covering.iter().copied().collect();
        prop_assert_eq!(kept.len(), covering.len(), "duplicates");
        prop_assert!(covering.iter().all(|c| c.resolution() == resolution));
        let own = Cell::of(center, resolution).unwrap();
        prop_assert!(kept.contains(&own));

        // Every point within the radius: random ones inside, and on the rim, where a
        // cell that barely enters the circle is easiest to miss.
        for &(u, bearing) in &samples {
            for d in [radius_m * u.sqrt(), radius_m] {
                let q = destination(center, bearing, d);
                if haversine_m(center, q) > radius_m {
                    continue; // Rounded to just outside: not a point the promise covers.
                }
                let cell = Cell::of(q, resolution).unwrap();
                prop_assert!(kept.contains(&cell), "{q:?} at {d} m is in {cell}, not covered");
            }
        }

        // Every neighbour left out lies wholly outside; every cell kept comes within
        // the radius, up to the boundary sampling's step (and the 6 mm margin).
        let edge_m = cells::mean_edge_m(resolution).unwrap();
        let per_edge = 32;
        for cell in &covering {
            let samples = boundary_samples(*cell, per_edge);
            if *cell != own {
                let near = nearest_m(center, &samples);
                let slack = 2.0 * edge_m / per_edge as f64 + 0.01;
                prop_assert!(near <= radius_m + slack, "{cell} kept but {near} m away");
            }
            for next in cells::k_ring(*cell, 1).unwrap() {
                if kept.contains(&next) {
                    continue;
                }
                let near = nearest_m(center, &boundary_samples(next, per_edge));
                prop_assert!(near > radius_m, "{next} left out but {near} m away");
            }
        }
    }
}

#[test]
fn pentagon_and_polar_coverings() {
    // A circle centred on every resolution-2 pentagon, reaching two rings out.
    for pentagon in cells::pentagons(2).unwrap() {
        let radius_m = 2.0 * cells::mean_edge_m(2).unwrap();
        let covering = cells::cover_radius(pentagon.center(), radius_m, 2, 1_000).unwrap();
        assert!(covering.contains(&pentagon));
        for neighbour in cells::k_ring(pentagon, 1).unwrap() {
            assert!(covering.contains(&neighbour), "{neighbour} around {pentagon}");
        }
    }
    // A circle on the north pole reaches the same distance down every meridian.
    let pole = Point::new(90.0, 0.0).unwrap();
    let covering = cells::cover_radius(pole, 50_000.0, 5, 1_000).unwrap();
    for lon in (-180..180).step_by(5) {
        let rim =
            Point::new(90.0 - (50_000.0 / EARTH_RADIUS_M).to_degrees() * 0.999_999, f64::from(lon))
                .unwrap();
        let cell = Cell::of(rim, 5).unwrap();
        assert!(covering.contains(&cell), "{rim:?} in {cell}");
    }
}
