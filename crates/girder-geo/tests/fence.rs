//! Geofences against tables of known answers, and the engine against brute-force
//! models: random fences and random tracks (small steps, jumps across fences and
//! across the antimeridian), every path sampled densely, containment recomputed by
//! independent code (winding numbers, modular longitudes, haversine), and every event
//! checked against what the model says happened — except within a band around the
//! boundary narrow enough to be rounding (or, for circles, the documented grazing
//! tolerance), so the tests can fail on real bugs and not on tangents.

use std::collections::BTreeMap;

use girder_geo::Point;
use girder_geo::distance::haversine_m;
use girder_geo::fence::{
    AddFenceError, Area, BoxError, Cause, Circle, EventKind, Fence, FenceConfig, FenceEvent,
    FenceSet, Fix, GeoBox, Polygon, PolygonError, RADIUS_MAX_M, RadiusError, RemoveFenceError,
    RemoveMemberError, Roaming, UpdateError, grazing_m,
};
use proptest::prelude::*;

fn pt(lat: f64, lon: f64) -> Point {
    Point::new(lat, lon).unwrap()
}

fn polygon(coords: &[(f64, f64)]) -> Polygon {
    Polygon::new(&coords.iter().map(|&(lat, lon)| pt(lat, lon)).collect::<Vec<_>>()).unwrap()
}

/// Checks `area.contains` for each `(lat, lon)` against the expected answer.
fn check(area: impl Into<Area>, cases: &[((f64, f64), bool)]) {
    let area = area.into();
    for &((lat, lon), want) in cases {
        assert_eq!(area.contains(pt(lat, lon)), want, "({lat}, {lon}) in {area:?}");
    }
}

// ---------------------------------------------------------------------------------
// Containment tables.

#[test]
fn circle_containment() {
    let centre = pt(52.52, 13.405);
    let edge = pt(52.52, 13.42);
    // A radius equal to the distance of a point puts that point on the boundary.
    let r = haversine_m(centre, edge);
    check(
        Circle::new(centre, r).unwrap(),
        &[
            ((52.52, 13.405), true),
            ((52.52, 13.42), true),
            ((52.52, 13.420_000_001), false),
            ((52.52, 13.389), false),
            ((52.52, 13.390_000_001), true),
        ],
    );
    // Across the antimeridian: 0.006° of longitude at the equator is 668 m.
    check(
        Circle::new(pt(0.0, 179.997), 700.0).unwrap(),
        &[
            ((0.0, -179.997), true),
            ((0.0, 180.0), true),
            ((0.0, -179.99), false),
            ((0.0, 179.99), false),
        ],
    );
    // Over the pole: the two points are 0.002° of latitude apart, across the pole.
    check(
        Circle::new(pt(89.999, 0.0), 300.0).unwrap(),
        &[((89.999, 180.0), true), ((90.0, 0.0), true), ((89.99, 90.0), false)],
    );
}

#[test]
fn box_containment() {
    let plain = GeoBox::new(pt(10.0, 20.0), pt(11.0, 22.0)).unwrap();
    assert!(!plain.crosses_antimeridian());
    check(
        plain,
        &[
            ((10.5, 21.0), true),
            ((10.0, 20.0), true),
            ((11.0, 22.0), true),
            ((10.0, 21.0), true),
            ((10.5, 22.0), true),
            ((9.999_999, 21.0), false),
            ((10.5, 22.000_001), false),
            ((10.5, 19.999_999), false),
            ((10.5, -160.0), false),
        ],
    );
    let across = GeoBox::new(pt(-1.0, 179.0), pt(1.0, -179.0)).unwrap();
    assert!(across.crosses_antimeridian());
    check(
        across,
        &[
            ((0.0, 180.0), true),
            ((0.0, -180.0), true),
            ((0.0, 179.5), true),
            ((0.0, -179.5), true),
            ((1.0, 179.0), true),
            ((-1.0, -179.0), true),
            ((0.0, 178.999), false),
            ((0.0, -178.999), false),
            ((0.0, 0.0), false),
            ((1.001, 180.0), false),
        ],
    );
    // A whole band, and a box from 170°E to 10°E the long way round (200° wide).
    check(
        GeoBox::new(pt(-5.0, -180.0), pt(5.0, 180.0)).unwrap(),
        &[((0.0, 0.0), true), ((0.0, 180.0), true), ((0.0, -180.0), true), ((6.0, 0.0), false)],
    );
    check(
        GeoBox::new(pt(0.0, 170.0), pt(1.0, 10.0)).unwrap(),
        &[((0.5, 5.0), true), ((0.5, -90.0), true), ((0.5, 175.0), true), ((0.5, 90.0), false)],
    );
}

/// A "C" opening east, concave, with a notch between two arms.
fn c_shape() -> Polygon {
    polygon(&[
        (0.0, 0.0),
        (0.0, 3.0),
        (1.0, 3.0),
        (1.0, 1.0),
        (2.0, 1.0),
        (2.0, 3.0),
        (3.0, 3.0),
        (3.0, 0.0),
    ])
}

#[test]
fn polygon_containment() {
    check(
        c_shape(),
        &[
            ((0.5, 2.0), true),
            ((2.5, 2.0), true),
            ((1.5, 0.5), true),
            // The notch.
            ((1.5, 2.0), false),
            ((1.5, 1.000_001), false),
            // Vertices and edges, including the notch's.
            ((0.0, 0.0), true),
            ((1.0, 1.0), true),
            ((1.5, 1.0), true),
            ((1.0, 2.0), true),
            ((3.0, 1.5), true),
            ((0.0, 3.0), true),
            ((-0.000_001, 1.0), false),
            ((1.5, 3.0), false),
            ((0.5, 3.000_001), false),
        ],
    );
    // A triangle across the antimeridian, given in both windings.
    for ring in
        [[(0.0, 179.0), (0.0, -179.0), (2.0, 180.0)], [(2.0, 180.0), (0.0, -179.0), (0.0, 179.0)]]
    {
        check(
            polygon(&ring),
            &[
                ((0.5, 180.0), true),
                ((0.5, -180.0), true),
                ((0.1, 179.5), true),
                ((0.1, -179.5), true),
                ((0.0, 179.0), true),
                ((1.0, 179.5), true),
                ((1.5, 179.5), false),
                ((0.5, 0.0), false),
                ((-0.1, 180.0), false),
            ],
        );
    }
}

#[test]
fn paths_through_and_past_fences() {
    let hits = |area: Area, from: (f64, f64), to: (f64, f64)| {
        let hit = area.path_inside(pt(from.0, from.1), pt(to.0, to.1));
        if let Some(h) = hit {
            assert!(area.contains(h.point), "{h:?} outside {area:?}");
            assert!((0.0..=1.0).contains(&h.fraction));
        }
        hit.is_some()
    };
    let c = || Area::from(c_shape());
    // Straight through the C's spine, and along the notch without touching the arms.
    assert!(hits(c(), (1.5, -1.0), (1.5, 4.0)));
    assert!(!hits(c(), (1.5, 4.0), (1.5, 1.5)));
    // Clipping a corner; passing a hair outside it.
    assert!(hits(c(), (-0.2, 2.9), (0.3, 3.1)));
    assert!(!hits(c(), (-0.2, 2.921), (0.3, 3.121)));
    let across = || Area::from(GeoBox::new(pt(-1.0, 179.0), pt(1.0, -179.0)).unwrap());
    assert!(hits(across(), (0.0, -170.0), (0.0, 170.0)));
    assert!(hits(across(), (-5.0, 179.9), (5.0, -179.9)));
    assert!(hits(across(), (0.0, -170.0), (2.0, 170.0)));
    assert!(!hits(across(), (1.2, -170.0), (3.0, 170.0)));
    // The long way round is not the path: 0° to 10° does not cross a box at 180°.
    assert!(!hits(across(), (0.0, 0.0), (0.0, 10.0)));
    let circle = || Area::from(Circle::new(pt(0.0, 180.0), 1_000.0).unwrap());
    assert!(hits(circle(), (0.0, 179.0), (0.0, -179.0)));
    assert!(hits(circle(), (-1.0, 179.5), (1.0, -179.5)));
    assert!(!hits(circle(), (0.1, 179.0), (0.1, -179.0)));
}

// ---------------------------------------------------------------------------------
// Engine behaviour.

fn kinds(events: &[FenceEvent]) -> Vec<(&str, &str, EventKind, bool, Cause)> {
    events.iter().map(|e| (&*e.fence, &*e.member, e.kind, e.crossed, e.cause)).collect()
}

#[test]
fn enter_inside_exit_and_a_crossing() {
    use EventKind::{Enter, Exit, Inside};
    let mut set = FenceSet::new(FenceConfig::default());
    let square = GeoBox::new(pt(0.0, 0.0), pt(1.0, 1.0)).unwrap();
    assert_eq!(set.add_fence("sq", Area::from(square).into(), 0).unwrap(), []);
    assert_eq!(set.update("a", pt(2.0, 0.5), 1_000).unwrap(), []);
    assert_eq!(
        kinds(&set.update("a", pt(0.5, 0.5), 2_000).unwrap()),
        [("sq", "a", Enter, false, Cause::Moved)]
    );
    assert_eq!(set.is_inside("sq", "a"), Some(true));
    assert_eq!(
        kinds(&set.update("a", pt(0.6, 0.6), 3_000).unwrap()),
        [("sq", "a", Inside, false, Cause::Moved)]
    );
    let exit = set.update("a", pt(-1.0, 0.6), 4_000).unwrap();
    assert_eq!(kinds(&exit), [("sq", "a", Exit, false, Cause::Moved)]);
    assert_eq!(
        (exit[0].point, exit[0].at_ms, exit[0].nearby.clone()),
        (pt(-1.0, 0.6), 4_000, None)
    );
    // A jump over the square between two fixes: Enter at a point inside, at the time
    // it was there; then Exit at the new fix.
    let jump = set.update("a", pt(2.0, 0.6), 8_000).unwrap();
    assert_eq!(
        kinds(&jump),
        [("sq", "a", Enter, true, Cause::Moved), ("sq", "a", Exit, true, Cause::Moved)]
    );
    assert!(square.contains(jump[0].point));
    assert!((4_000..=8_000).contains(&jump[0].at_ms) && jump[0].at_ms > 4_000, "{}", jump[0].at_ms);
    assert_eq!((jump[1].point, jump[1].at_ms), (pt(2.0, 0.6), 8_000));
    assert_eq!(set.is_inside("sq", "a"), Some(false));
    // A first fix inside enters at once.
    assert_eq!(
        kinds(&set.update("b", pt(0.5, 0.5), 0).unwrap()),
        [("sq", "b", Enter, false, Cause::Moved)]
    );
    // The same time again is accepted; an older fix is refused and changes nothing.
    assert_eq!(
        kinds(&set.update("b", pt(0.5, 0.5), 0).unwrap()),
        [("sq", "b", Inside, false, Cause::Moved)]
    );
    assert_eq!(
        set.update("a", pt(0.5, 0.5), 7_999),
        Err(UpdateError::Stale { last_ms: 8_000, at_ms: 7_999 })
    );
    assert_eq!(set.position("a"), Some(Fix { point: pt(2.0, 0.6), at_ms: 8_000 }));
}

#[test]
fn removals_and_additions_keep_pairs_balanced() {
    use EventKind::{Enter, Exit};
    let mut set = FenceSet::new(FenceConfig::default());
    let square = || Fence::from(Area::from(GeoBox::new(pt(0.0, 0.0), pt(1.0, 1.0)).unwrap()));
    set.update("in", pt(0.5, 0.5), 0).unwrap();
    set.update("out", pt(5.0, 5.0), 0).unwrap();
    // Adding a fence enters the members already inside.
    let added = set.add_fence("sq", square(), 10).unwrap();
    assert_eq!(kinds(&added), [("sq", "in", Enter, false, Cause::FenceAdded)]);
    assert_eq!((added[0].point, added[0].at_ms), (pt(0.5, 0.5), 10));
    // Removing a member inside exits it.
    let removed = set.remove_member("in", 20).unwrap();
    assert_eq!(kinds(&removed), [("sq", "in", Exit, false, Cause::MemberRemoved)]);
    assert_eq!(set.is_inside("sq", "in"), None);
    assert_eq!(set.remove_member("in", 21), Err(RemoveMemberError::Unknown { id: "in".into() }));
    // Back, it enters again as a first fix; removing the fence exits it.
    set.update("in", pt(0.5, 0.5), 30).unwrap();
    let gone = set.remove_fence("sq", 40).unwrap();
    assert_eq!(kinds(&gone), [("sq", "in", Exit, false, Cause::FenceRemoved)]);
    assert_eq!(set.remove_fence("sq", 41), Err(RemoveFenceError::Unknown { id: "sq".into() }));
    assert_eq!(set.is_inside("sq", "in"), None);
    assert_eq!(set.fence_count(), 0);
    assert_eq!(set.member_count(), 2);
}

#[test]
fn roaming_fences_follow_their_target() {
    use EventKind::{Enter, Exit, Inside};
    let mut set = FenceSet::new(FenceConfig::default());
    set.add_fence("near-p", Roaming::new("pickup", 500.0).unwrap().into(), 0).unwrap();
    // No target yet: the fence holds no one.
    assert_eq!(set.update("d1", pt(0.0, 0.0), 0).unwrap(), []);
    assert_eq!(set.is_inside("near-p", "d1"), Some(false));
    // The target appears next to d1: its disc moves over d1.
    let appeared = set.update("pickup", pt(0.0, 0.003), 0).unwrap();
    assert_eq!(kinds(&appeared), [("near-p", "d1", Enter, false, Cause::TargetMoved)]);
    let nearby = appeared[0].nearby.clone().unwrap();
    assert_eq!(&*nearby.other, "pickup");
    assert!((nearby.distance_m - haversine_m(pt(0.0, 0.0), pt(0.0, 0.003))).abs() < 1e-9);
    assert_eq!(appeared[0].point, pt(0.0, 0.0));
    // d1 moves and stays near; the target moves away.
    assert_eq!(
        kinds(&set.update("d1", pt(0.0, 0.001), 1_000).unwrap()),
        [("near-p", "d1", Inside, false, Cause::Moved)]
    );
    assert_eq!(
        kinds(&set.update("pickup", pt(0.0, 0.1), 1_000).unwrap()),
        [("near-p", "d1", Exit, false, Cause::TargetMoved)]
    );
    // Two members pass each other between fixes: the target jumps over d1.
    let passed = set.update("pickup", pt(0.0, -0.1), 2_000).unwrap();
    assert_eq!(
        kinds(&passed),
        [
            ("near-p", "d1", Enter, true, Cause::TargetMoved),
            ("near-p", "d1", Exit, true, Cause::TargetMoved)
        ]
    );
    assert!(passed[0].nearby.as_ref().unwrap().distance_m <= 500.0);
    assert_eq!(passed[0].point, pt(0.0, 0.001));
    // d1 jumps over the target.
    let over = set.update("d1", pt(0.0, -0.2), 3_000).unwrap();
    assert_eq!(
        kinds(&over),
        [("near-p", "d1", Enter, true, Cause::Moved), ("near-p", "d1", Exit, true, Cause::Moved)]
    );
    assert!(haversine_m(over[0].point, pt(0.0, -0.1)) <= 500.0);
    // Removing the target exits everyone near it; the fence waits for it.
    set.update("d1", pt(0.0, -0.1), 4_000).unwrap();
    set.update("d2", pt(0.001, -0.1), 4_000).unwrap();
    let removed = set.remove_member("pickup", 5_000).unwrap();
    assert_eq!(
        kinds(&removed),
        [
            ("near-p", "d1", Exit, false, Cause::TargetRemoved),
            ("near-p", "d2", Exit, false, Cause::TargetRemoved)
        ]
    );
    assert!(set.fence("near-p").is_some());
    assert_eq!(set.is_inside("near-p", "pickup"), None);
    // The target is never inside its own fence.
    set.update("pickup", pt(0.0, -0.1), 6_000).unwrap();
    assert_eq!(set.is_inside("near-p", "pickup"), Some(false));
    assert_eq!(set.is_inside("near-p", "d2"), Some(true));
}

#[test]
fn bad_input_is_a_typed_error() {
    let c = pt(0.0, 0.0);
    assert_eq!(Circle::new(c, f64::NAN), Err(RadiusError::NotANumber));
    assert_eq!(Circle::new(c, -0.0), Err(RadiusError::NotPositive { radius_m: -0.0 }));
    assert_eq!(
        Circle::new(c, 2.0 * RADIUS_MAX_M),
        Err(RadiusError::TooLarge { radius_m: 2.0 * RADIUS_MAX_M, max_m: RADIUS_MAX_M })
    );
    assert_eq!(Roaming::new("x", 0.0), Err(RadiusError::NotPositive { radius_m: 0.0 }));
    assert_eq!(Roaming::new("x", f64::NAN), Err(RadiusError::NotANumber));
    assert_eq!(
        GeoBox::new(pt(1.0, 0.0), pt(0.0, 1.0)),
        Err(BoxError::SouthAboveNorth { south: 1.0, north: 0.0 })
    );
    assert_eq!(Polygon::new(&[]), Err(PolygonError::TooFewVertices { count: 0 }));
    // The closing repeat goes; the rest repeat each other.
    assert_eq!(Polygon::new(&[c, c, c, c]), Err(PolygonError::RepeatedVertex { index: 1 }));
    let bowtie = [pt(0.0, 0.0), pt(1.0, 1.0), pt(0.0, 1.0), pt(1.0, 0.0)];
    assert_eq!(Polygon::new(&bowtie), Err(PolygonError::SelfIntersecting { first: 0, second: 2 }));

    let config = FenceConfig { max_fences: 1, max_members: 2, max_id_bytes: 4 };
    let mut set = FenceSet::new(config);
    let circle = || Fence::from(Area::from(Circle::new(c, 10.0).unwrap()));
    assert_eq!(
        set.add_fence("", circle(), 0),
        Err(AddFenceError::InvalidId { len_bytes: 0, max_bytes: 4 })
    );
    assert_eq!(
        set.add_fence("12345", circle(), 0),
        Err(AddFenceError::InvalidId { len_bytes: 5, max_bytes: 4 })
    );
    let long_target = Roaming::new("12345", 10.0).unwrap().into();
    assert_eq!(
        set.add_fence("r", long_target, 0),
        Err(AddFenceError::InvalidId { len_bytes: 5, max_bytes: 4 })
    );
    set.add_fence("f", circle(), 0).unwrap();
    assert_eq!(set.add_fence("f", circle(), 0), Err(AddFenceError::Exists { id: "f".into() }));
    assert_eq!(set.add_fence("g", circle(), 0), Err(AddFenceError::Full { max: 1 }));
    assert_eq!(set.fence_count(), 1);

    assert_eq!(set.update("", c, 0), Err(UpdateError::InvalidId { len_bytes: 0, max_bytes: 4 }));
    set.update("a", c, 0).unwrap();
    set.update("b", c, 0).unwrap();
    assert_eq!(set.update("c", c, 0), Err(UpdateError::Full { max: 2 }));
    // A full set still takes fixes from members it holds, and room comes back.
    assert_eq!(set.update("a", c, 1).unwrap().len(), 1);
    set.remove_member("b", 2).unwrap();
    set.update("c", c, 3).unwrap();
    assert_eq!(set.member_count(), 2);
    assert_eq!(set.remove_fence("nope", 0), Err(RemoveFenceError::Unknown { id: "nope".into() }));
    assert_eq!(set.remove_member("nope", 0), Err(RemoveMemberError::Unknown { id: "nope".into() }));
    assert_eq!(set.is_inside("nope", "a"), None);
    assert_eq!(set.is_inside("f", "nope"), None);
}

// ---------------------------------------------------------------------------------
// The model: independent containment, the path sampled densely.

/// The longitude step the shorter way round, eastward at exactly 180° (the model's
/// own statement of the path rule).
fn shortest(from: f64, to: f64) -> f64 {
    let d = (to - from).rem_euclid(360.0);
    if d > 180.0 { d - 360.0 } else { d }
}

fn wrap(lon: f64) -> f64 {
    let l = (lon + 180.0).rem_euclid(360.0) - 180.0;
    // rem_euclid may round up to the divisor; -180 and 180 are one meridian anyway.
    l.clamp(-180.0, 180.0)
}

fn path_point(a: Point, b: Point, f: f64) -> Point {
    let lat = (a.lat() + f * (b.lat() - a.lat())).clamp(-90.0, 90.0);
    pt(lat, wrap(a.lon() + f * shortest(a.lon(), b.lon())))
}

/// Whether `w` lies on the path from `a` to `b` (within rounding), and at what fraction.
fn fraction_on_path(a: Point, b: Point, w: Point) -> Option<f64> {
    let (dx, dy) = (shortest(a.lon(), b.lon()), b.lat() - a.lat());
    let wx = a.lon() + shortest(a.lon(), w.lon());
    let (px, py) = (wx - a.lon(), w.lat() - a.lat());
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 { 0.0 } else { ((px * dx + py * dy) / len2).clamp(0.0, 1.0) };
    let off = ((px - t * dx).powi(2) + (py - t * dy).powi(2)).sqrt();
    (off < 1e-9).then_some(t)
}

/// A static fence as the model sees it.
#[derive(Debug, Clone)]
enum Shape {
    Circle {
        lat: f64,
        lon: f64,
        r: f64,
    },
    /// `width` degrees east of `w`.
    Box {
        s: f64,
        n: f64,
        w: f64,
        width: f64,
    },
    /// `(lon, lat)`, longitudes unwrapped around `centre`.
    Poly {
        ring: Vec<(f64, f64)>,
        centre: (f64, f64),
    },
}

impl Shape {
    fn fence(&self) -> Fence {
        let area = match self {
            Self::Circle { lat, lon, r } => Area::from(Circle::new(pt(*lat, *lon), *r).unwrap()),
            Self::Box { s, n, w, width } => {
                Area::from(GeoBox::new(pt(*s, *w), pt(*n, wrap(w + width))).unwrap())
            }
            Self::Poly { ring, .. } => {
                let vs: Vec<Point> = ring.iter().map(|&(x, y)| pt(y, wrap(x))).collect();
                Area::from(Polygon::new(&vs).unwrap_or_else(|e| panic!("{e}: {ring:?}")))
            }
        };
        area.into()
    }

    /// `(lat, lon)` of a point well inside, to aim jumps through.
    fn centre(&self) -> (f64, f64) {
        match self {
            Self::Circle { lat, lon, .. } => (*lat, *lon),
            Self::Box { s, n, w, width } => ((s + n) / 2.0, wrap(w + width / 2.0)),
            Self::Poly { centre, .. } => (centre.1, wrap(centre.0)),
        }
    }

    /// Signed distance to the boundary, positive inside: metres for a circle, degrees
    /// in the latitude/longitude plane for a box or polygon.
    fn margin(&self, p: Point) -> f64 {
        match self {
            Self::Circle { lat, lon, r } => r - haversine_m(pt(*lat, *lon), p),
            Self::Box { s, n, w, width } => {
                let x = (p.lon() - w).rem_euclid(360.0);
                let x = if x >= 360.0 { 0.0 } else { x };
                let (h_in, h_out) = if x <= *width {
                    (x.min(width - x), 0.0)
                } else {
                    (0.0, (x - width).min(360.0 - x))
                };
                let y = p.lat();
                let (v_in, v_out) = if (*s..=*n).contains(&y) {
                    ((y - s).min(n - y), 0.0)
                } else {
                    (0.0, (s - y).max(y - n))
                };
                if h_out == 0.0 && v_out == 0.0 { h_in.min(v_in) } else { -h_out.hypot(v_out) }
            }
            Self::Poly { ring, .. } => {
                let (mut inside, mut nearest) = (false, f64::INFINITY);
                for k in -2..=2 {
                    let q = (p.lon() + 360.0 * f64::from(k), p.lat());
                    inside |= winding(ring, q) != 0;
                    for i in 0..ring.len() {
                        nearest =
                            nearest.min(segment_distance(q, ring[i], ring[(i + 1) % ring.len()]));
                    }
                }
                if inside { nearest } else { -nearest }
            }
        }
    }

    /// The band around the boundary where rounding may decide a point.
    fn point_band(&self) -> f64 {
        if matches!(self, Self::Circle { .. }) { 1e-6 } else { 1e-9 }
    }

    /// How deep a path must go in for the engine to be bound to see it: the grazing
    /// tolerance for circles, rounding for the exact box and polygon tests.
    fn path_band(&self) -> f64 {
        match self {
            Self::Circle { r, .. } => 2.0 * documented_grazing_m(*r) + 1e-6,
            _ => 1e-7,
        }
    }
}

/// Winding number of the ring around `q` (Sunday's algorithm).
fn winding(ring: &[(f64, f64)], q: (f64, f64)) -> i32 {
    let mut wn = 0;
    for i in 0..ring.len() {
        let (a, b) = (ring[i], ring[(i + 1) % ring.len()]);
        let left = (b.0 - a.0) * (q.1 - a.1) - (q.0 - a.0) * (b.1 - a.1);
        if a.1 <= q.1 {
            if b.1 > q.1 && left > 0.0 {
                wn += 1;
            }
        } else if b.1 <= q.1 && left < 0.0 {
            wn -= 1;
        }
    }
    wn
}

fn segment_distance(q: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let t = (((q.0 - a.0) * dx + (q.1 - a.1) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
    (a.0 + t * dx - q.0).hypot(a.1 + t * dy - q.1)
}

/// The grazing tolerance as documented (1 cm, or 10⁻⁷ of the radius above 100 km),
/// stated here rather than taken from the engine, so that a looser engine fails.
fn documented_grazing_m(radius_m: f64) -> f64 {
    (radius_m * 1e-7).max(0.01)
}

#[test]
fn the_grazing_tolerance_is_as_documented() {
    for r in [1.0, 150.0, 100_000.0, 250_000.0, RADIUS_MAX_M] {
        assert_eq!(grazing_m(r), documented_grazing_m(r));
    }
}

/// Samples per path: a 3° jump is sampled every 0.0015° (170 m), a GPS step of
/// 0.003° every 0.15 m.
const SAMPLES: usize = 2_000;

/// One pair's judgement of one move, to be checked against the model.
struct Judged<'a> {
    /// The model's signed distance of a position of the mover to the boundary.
    margin: &'a dyn Fn(Point) -> f64,
    point_band: f64,
    path_band: f64,
    /// The mover's fixes: before (none if it just appeared) and now.
    prev: Option<Fix>,
    new: Fix,
    /// The event's member's own fix, when the mover is a roaming fence's target.
    fixed: Option<Point>,
    /// A roaming fence's target and radius; the distance is to `centre`.
    roaming: Option<(&'a str, Point, f64)>,
    cause: Cause,
}

/// Checks one pair's events for one move: the state against the model wherever the
/// model is clear, the events against the state change, a crossing's point against
/// the model and the path, and that no sample of a path that stayed "outside" is
/// clearly inside.
fn check_move(j: &Judged<'_>, before: bool, after: bool, events: &[&FenceEvent]) {
    let margin_new = (j.margin)(j.new.point);
    if margin_new.abs() > j.point_band {
        assert_eq!(after, margin_new > 0.0, "state at {:?} (margin {margin_new})", j.new.point);
    }
    let shape: Vec<(EventKind, bool)> = events.iter().map(|e| (e.kind, e.crossed)).collect();
    let crossed = shape == [(EventKind::Enter, true), (EventKind::Exit, true)];
    let want: &[(EventKind, bool)] = match (j.prev.is_some(), before, after) {
        (false, _, true) | (true, false, true) => &[(EventKind::Enter, false)],
        (true, true, true) => &[(EventKind::Inside, false)],
        (true, true, false) => &[(EventKind::Exit, false)],
        (_, _, false) => &[],
    };
    assert!(
        shape == want || (crossed && j.prev.is_some() && !before && !after),
        "events {shape:?}, state {before} → {after}"
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.cause, j.cause);
        let witness = crossed && i == 0;
        let mover_at = if witness { e.point } else { j.new.point };
        if !witness {
            assert_eq!((e.point, e.at_ms), (j.fixed.unwrap_or(j.new.point), j.new.at_ms));
        } else if let Some(fixed) = j.fixed {
            assert_eq!(e.point, fixed);
        }
        match (j.roaming, &e.nearby) {
            (None, None) => {}
            (Some((target, centre, r)), Some(near)) => {
                assert_eq!(&*near.other, target);
                if witness {
                    assert!(
                        near.distance_m <= r,
                        "crossed at {} m of a {r} m fence",
                        near.distance_m
                    );
                }
                if j.fixed.is_none() || !witness {
                    assert!(
                        (near.distance_m - haversine_m(centre, mover_at)).abs() < 1e-6,
                        "{near:?}"
                    );
                }
            }
            other => panic!("nearby {other:?}"),
        }
    }
    let Some(prev) = j.prev else { return };
    if crossed {
        let enter = events[0];
        assert!((prev.at_ms..=j.new.at_ms).contains(&enter.at_ms), "crossed at {} ms", enter.at_ms);
        if j.fixed.is_none() {
            let m = (j.margin)(enter.point);
            assert!(m >= -j.point_band, "crossed at {:?}, margin {m}", enter.point);
            let t = fraction_on_path(prev.point, j.new.point, enter.point).unwrap_or_else(|| {
                panic!("{:?} is off the path {prev:?} → {:?}", enter.point, j.new)
            });
            let want_ms = prev.at_ms as f64 + t * (j.new.at_ms - prev.at_ms) as f64;
            assert!(
                (enter.at_ms as f64 - want_ms).abs() <= 1.0 + 1e-6 * want_ms,
                "{} ms, not {want_ms}",
                enter.at_ms
            );
        }
    } else if !before && !after {
        for i in 1..SAMPLES {
            let p = path_point(prev.point, j.new.point, i as f64 / SAMPLES as f64);
            let m = (j.margin)(p);
            assert!(
                m <= j.path_band,
                "missed a crossing: {p:?} is {m} inside, on {prev:?} → {:?}",
                j.new
            );
        }
    }
}

/// Where a move takes a member.
#[derive(Debug, Clone)]
enum Move {
    /// By this many degrees (latitude, longitude).
    By(f64, f64),
    /// To the hub plus these offsets.
    To(f64, f64),
    /// Through the centre of fence (or member) `.0 % count`, to as far beyond it, give
    /// or take the offsets.
    Through(usize, f64, f64),
    /// To the centre of fence (or member) `.0 % count`, give or take the offsets.
    Near(usize, f64, f64),
}

fn moves() -> impl Strategy<Value = Move> {
    let small = -0.003..0.003_f64;
    let medium = -0.2..0.2_f64;
    let jump = -3.0..3.0_f64;
    prop_oneof![
        4 => (small.clone(), small.clone()).prop_map(|(a, b)| Move::By(a, b)),
        3 => (medium.clone(), medium).prop_map(|(a, b)| Move::By(a, b)),
        3 => (jump.clone(), jump).prop_map(|(a, b)| Move::By(a, b)),
        2 => (-2.0..2.0_f64, -2.0..2.0_f64).prop_map(|(a, b)| Move::To(a, b)),
        4 => (any::<usize>(), small.clone(), small.clone()).prop_map(|(i, a, b)| Move::Through(i, a, b)),
        3 => (any::<usize>(), small.clone(), small).prop_map(|(i, a, b)| Move::Near(i, a, b)),
    ]
}

fn hubs() -> impl Strategy<Value = (f64, f64)> {
    prop_oneof![
        Just((0.0, 179.9)),
        Just((12.0, -179.95)),
        Just((-45.0, 179.5)),
        Just((60.0, 20.0)),
        Just((78.0, -60.0)),
        Just((0.0, 0.0)),
    ]
}

fn dt_ms() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0_u64), 4 => 1..60_000_u64]
}

/// The member's next point.
fn apply(mv: &Move, from: Option<Point>, hub: (f64, f64), centres: &[(f64, f64)]) -> Point {
    let from = from.unwrap_or_else(|| pt(hub.0, hub.1));
    let (lat, lon) = match *mv {
        Move::By(a, b) => (from.lat() + a, from.lon() + b),
        Move::To(a, b) => (hub.0 + a, hub.1 + b),
        Move::Through(i, a, b) => {
            let c = centres[i % centres.len()];
            (2.0 * c.0 - from.lat() + a, from.lon() + 2.0 * shortest(from.lon(), c.1) + b)
        }
        Move::Near(i, a, b) => {
            let c = centres[i % centres.len()];
            (c.0 + a, c.1 + b)
        }
    };
    pt(lat.clamp(-89.0, 89.0), wrap(lon))
}

fn shapes(hub: (f64, f64)) -> impl Strategy<Value = Shape> {
    let off = (-1.0..1.0_f64, -1.0..1.0_f64);
    prop_oneof![
        // 200 m to 80 km.
        (off.clone(), 2.3..4.9_f64).prop_map(move |((a, b), lg)| Shape::Circle {
            lat: hub.0 + a,
            lon: wrap(hub.1 + b),
            r: 10_f64.powf(lg),
        }),
        (off.clone(), 0.05..1.5_f64, 0.05..1.5_f64).prop_map(move |((a, b), h, width)| {
            Shape::Box { s: hub.0 + a, n: hub.0 + a + h, w: wrap(hub.1 + b), width }
        }),
        // Star-shaped around the centre, one vertex per sector: simple, often concave.
        (off, 0.05..1.0_f64, proptest::collection::vec((0.1..0.9_f64, 0.3..1.0_f64), 3..=10))
            .prop_map(move |((a, b), size, vs)| {
                let centre = (hub.1 + b, hub.0 + a);
                let n = vs.len() as f64;
                let ring = vs
                    .iter()
                    .enumerate()
                    .map(|(i, &(jitter, r))| {
                        let th = (i as f64 + jitter) * std::f64::consts::TAU / n;
                        (centre.0 + size * r * th.cos(), centre.1 + size * r * th.sin())
                    })
                    .collect();
                Shape::Poly { ring, centre }
            }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Step {
        member: usize,
        to: Move,
        dt_ms: u64,
    },
    Remove {
        member: usize,
    },
    /// Remove the fence if held, add it back if not.
    Toggle {
        fence: usize,
    },
}

fn ops(members: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        12 => (0..members, moves(), dt_ms()).prop_map(|(member, to, dt_ms)| Op::Step { member, to, dt_ms }),
        1 => (0..members).prop_map(|member| Op::Remove { member }),
        1 => any::<usize>().prop_map(|fence| Op::Toggle { fence }),
    ];
    proptest::collection::vec(op, 1..40)
}

/// Replays events on a ledger of pair states: `Enter` only from outside, `Inside` and
/// `Exit` only from inside, a crossed `Enter` immediately followed by its `Exit`.
fn replay(ledger: &mut BTreeMap<(String, String), bool>, events: &[FenceEvent]) {
    let mut i = 0;
    while i < events.len() {
        let e = &events[i];
        let state = ledger.entry((e.fence.to_string(), e.member.to_string())).or_default();
        match e.kind {
            EventKind::Enter => assert!(!*state, "Enter while inside: {e:?}"),
            EventKind::Inside | EventKind::Exit => {
                assert!(*state, "{:?} while outside: {e:?}", e.kind)
            }
        }
        *state = e.kind != EventKind::Exit;
        if e.crossed && e.kind == EventKind::Enter {
            let exit = events.get(i + 1).expect("a crossed Enter is followed by its Exit");
            assert!(
                exit.crossed
                    && exit.kind == EventKind::Exit
                    && exit.fence == e.fence
                    && exit.member == e.member
            );
        }
        i += 1;
    }
}

/// Every pair the engine holds inside is inside in the ledger, and the other way round.
fn assert_ledger(
    set: &FenceSet,
    ledger: &BTreeMap<(String, String), bool>,
    fences: &[String],
    members: &[String],
) {
    for f in fences {
        for m in members {
            let engine = set.is_inside(f, m).unwrap_or(false);
            let replayed = ledger.get(&(f.clone(), m.clone())).copied().unwrap_or(false);
            assert_eq!(engine, replayed, "pair ({f}, {m})");
        }
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn for_pair<'a>(events: &'a [FenceEvent], fence: &str, member: &str) -> Vec<&'a FenceEvent> {
    events.iter().filter(|e| &*e.fence == fence && &*e.member == member).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn static_fences_match_the_model(
        (hub, shapes, ops) in hubs().prop_flat_map(|hub| {
            (Just(hub), proptest::collection::vec(shapes(hub), 1..=4), ops(2))
        })
    ) {
        let fence_ids = names("f", shapes.len());
        let member_ids = names("m", 2);
        let centres: Vec<(f64, f64)> = shapes.iter().map(Shape::centre).collect();
        let mut set = FenceSet::new(FenceConfig::default());
        for (id, shape) in fence_ids.iter().zip(&shapes) {
            assert_eq!(set.add_fence(id, shape.fence(), 0).unwrap(), []);
        }
        let mut held = vec![true; shapes.len()];
        let mut fixes: Vec<Option<Fix>> = vec![None; 2];
        let mut ledger = BTreeMap::new();
        for op in &ops {
            match *op {
                Op::Step { member, ref to, dt_ms } => {
                    let prev = fixes[member];
                    let new = Fix {
                        point: apply(to, prev.map(|f| f.point), hub, &centres),
                        at_ms: prev.map_or(0, |f| f.at_ms) + dt_ms,
                    };
                    let name = &member_ids[member];
                    let before: Vec<bool> = fence_ids.iter().map(|f| set.is_inside(f, name).unwrap_or(false)).collect();
                    let events = set.update(name, new.point, new.at_ms).unwrap();
                    assert!(events.iter().all(|e| &*e.member == name && e.nearby.is_none()));
                    replay(&mut ledger, &events);
                    for (i, shape) in shapes.iter().enumerate() {
                        let pair = for_pair(&events, &fence_ids[i], name);
                        if !held[i] {
                            assert!(pair.is_empty());
                            continue;
                        }
                        let margin = |p: Point| shape.margin(p);
                        let judged = Judged {
                            margin: &margin,
                            point_band: shape.point_band(),
                            path_band: shape.path_band(),
                            prev,
                            new,
                            fixed: None,
                            roaming: None,
                            cause: Cause::Moved,
                        };
                        check_move(&judged, before[i], set.is_inside(&fence_ids[i], name).unwrap(), &pair);
                    }
                    fixes[member] = Some(new);
                }
                Op::Remove { member } => {
                    let name = &member_ids[member];
                    let Some(gone) = fixes[member].take() else {
                        assert!(set.remove_member(name, 0).is_err());
                        continue;
                    };
                    let inside: Vec<&str> = fence_ids
                        .iter()
                        .filter(|f| set.is_inside(f, name) == Some(true))
                        .map(String::as_str)
                        .collect();
                    let events = set.remove_member(name, gone.at_ms).unwrap();
                    replay(&mut ledger, &events);
                    let exited: Vec<&str> = events.iter().map(|e| &*e.fence).collect();
                    assert_eq!(exited, inside);
                    assert!(events.iter().all(|e| e.kind == EventKind::Exit && e.cause == Cause::MemberRemoved && e.point == gone.point));
                }
                Op::Toggle { fence } => {
                    let i = fence % shapes.len();
                    let id = &fence_ids[i];
                    if held[i] {
                        let events = set.remove_fence(id, 0).unwrap();
                        replay(&mut ledger, &events);
                        assert!(events.iter().all(|e| e.kind == EventKind::Exit && e.cause == Cause::FenceRemoved));
                    } else {
                        let events = set.add_fence(id, shapes[i].fence(), 0).unwrap();
                        replay(&mut ledger, &events);
                        assert!(events.iter().all(|e| e.kind == EventKind::Enter && e.cause == Cause::FenceAdded));
                        for (m, fix) in member_ids.iter().zip(&fixes) {
                            let Some(fix) = fix else { continue };
                            let margin = shapes[i].margin(fix.point);
                            let entered = for_pair(&events, id, m).len() == 1;
                            assert_eq!(entered, set.is_inside(id, m).unwrap());
                            if margin.abs() > shapes[i].point_band() {
                                assert_eq!(entered, margin > 0.0);
                            }
                        }
                    }
                    held[i] = !held[i];
                }
            }
            assert_ledger(&set, &ledger, &fence_ids, &member_ids);
        }
        // Removing everything closes every pair still open.
        for (m, fix) in member_ids.iter().zip(&fixes) {
            if fix.is_some() {
                let events = set.remove_member(m, 0).unwrap();
                replay(&mut ledger, &events);
            }
        }
        prop_assert!(ledger.values().all(|inside| !inside));
    }

    #[test]
    fn roaming_fences_match_the_model(
        (hub, radii, ops) in hubs().prop_flat_map(|hub| {
            // 100 m to 50 km around members 0 and 1.
            (Just(hub), (2.0..4.7_f64, 2.0..4.7_f64), ops(3))
        })
    ) {
        let radii = [10_f64.powf(radii.0), 10_f64.powf(radii.1)];
        let fence_ids = names("near-m", 2);
        let member_ids = names("m", 3);
        let mut set = FenceSet::new(FenceConfig::default());
        for (id, (target, r)) in fence_ids.iter().zip(member_ids.iter().zip(radii)) {
            set.add_fence(id, Roaming::new(target, r).unwrap().into(), 0).unwrap();
        }
        let mut fixes: Vec<Option<Fix>> = vec![None; 3];
        let mut ledger = BTreeMap::new();
        for op in &ops {
            match *op {
                Op::Step { member, ref to, dt_ms } => {
                    let prev = fixes[member];
                    // Aim jumps through the other members.
                    let centres: Vec<(f64, f64)> = fixes
                        .iter()
                        .map(|f| f.map_or(hub, |f| (f.point.lat(), f.point.lon())))
                        .collect();
                    let new = Fix {
                        point: apply(to, prev.map(|f| f.point), hub, &centres),
                        at_ms: prev.map_or(0, |f| f.at_ms) + dt_ms,
                    };
                    let name = &member_ids[member];
                    let before = |set: &FenceSet, f: &str, m: &str| set.is_inside(f, m).unwrap_or(false);
                    let states: BTreeMap<(usize, usize), bool> = (0..2)
                        .flat_map(|f| (0..3).map(move |m| (f, m)))
                        .map(|(f, m)| ((f, m), before(&set, &fence_ids[f], &member_ids[m])))
                        .collect();
                    let events = set.update(name, new.point, new.at_ms).unwrap();
                    replay(&mut ledger, &events);
                    let mut judged_events = 0;
                    for (f, r) in radii.iter().enumerate() {
                        let fence = &fence_ids[f];
                        let target = &member_ids[f];
                        // Pairs (fence f, member m) this move may change, and the fixed
                        // end of each: the target's fix, or the member's if the target
                        // is the mover.
                        let pairs: Vec<(usize, Point, Option<Point>, Cause)> = if f == member {
                            (0..3)
                                .filter(|&m| m != member)
                                .filter_map(|m| fixes[m].map(|fx| (m, fx.point, Some(fx.point), Cause::TargetMoved)))
                                .collect()
                        } else {
                            fixes[f].map(|t| (member, t.point, None, Cause::Moved)).into_iter().collect()
                        };
                        for (m, centre, fixed, cause) in pairs {
                            let pair = for_pair(&events, fence, &member_ids[m]);
                            judged_events += pair.len();
                            let margin = |p: Point| r - haversine_m(centre, p);
                            let judged = Judged {
                                margin: &margin,
                                point_band: 1e-6,
                                path_band: 2.0 * documented_grazing_m(*r) + 1e-6,
                                prev,
                                new,
                                fixed,
                                roaming: Some((target, centre, *r)),
                                cause,
                            };
                            let after = set.is_inside(fence, &member_ids[m]).unwrap();
                            check_move(&judged, states[&(f, m)], after, &pair);
                        }
                    }
                    assert_eq!(judged_events, events.len(), "events for pairs this move cannot change: {events:?}");
                    fixes[member] = Some(new);
                }
                Op::Remove { member } => {
                    let name = &member_ids[member];
                    let Some(gone) = fixes[member].take() else {
                        assert!(set.remove_member(name, 0).is_err());
                        continue;
                    };
                    let mut open: Vec<(String, String)> = ledger
                        .iter()
                        .filter(|&((f, m), inside)| *inside && (m == name || *f == format!("near-{name}")))
                        .map(|(k, _)| k.clone())
                        .collect();
                    let events = set.remove_member(name, gone.at_ms).unwrap();
                    replay(&mut ledger, &events);
                    let mut closed: Vec<(String, String)> = events.iter().map(|e| (e.fence.to_string(), e.member.to_string())).collect();
                    open.sort();
                    closed.sort();
                    assert_eq!(closed, open);
                    assert!(events.iter().all(|e| e.kind == EventKind::Exit && !e.crossed));
                }
                Op::Toggle { .. } => {}
            }
            assert_ledger(&set, &ledger, &fence_ids, &member_ids);
        }
    }
}
