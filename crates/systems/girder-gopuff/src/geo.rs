//! The distance GoPuff reports, and the plain scans over a list of centres that
//! define its nearby answers: [`crate::nearby`] answers through a geo index and
//! must agree with [`within`] and [`nearest`] over every centre (its tests check
//! that), and uses them itself for the few centres the index cannot hold.

use girder_geo::Point;

/// Mean Earth radius in kilometres (IUGG), the radius the haversine formula assumes.
pub const EARTH_RADIUS_KM: f64 = 6_371.008_8;

/// The great-circle distance between `a` and `b` in kilometres (haversine on a
/// sphere of [`EARTH_RADIUS_KM`]; within about 0.5% of the ellipsoidal distance).
/// Total: any two points, including poles and antipodes, give a finite answer.
#[must_use]
pub fn haversine_km(a: Point, b: Point) -> f64 {
    let (lat1, lat2) = (a.lat().to_radians(), b.lat().to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.lon() - a.lon()).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    // Rounding can push h a hair outside [0, 1] near antipodes; asin would give NaN.
    2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}

/// The items of `candidates` within `radius_km` of `from`, nearest first, with
/// their distances. Ties keep the candidates' order.
pub fn within<'a, T>(
    from: Point,
    radius_km: f64,
    candidates: impl IntoIterator<Item = (&'a T, Point)>,
) -> Vec<(&'a T, f64)>
where
    T: 'a,
{
    let mut found: Vec<(&T, f64)> = candidates
        .into_iter()
        .map(|(item, at)| (item, haversine_km(from, at)))
        .filter(|(_, d)| *d <= radius_km)
        .collect();
    found.sort_by(|a, b| a.1.total_cmp(&b.1));
    found
}

/// The nearest of `candidates` to `from` and its distance, `None` if there are none.
/// Ties go to the first candidate.
pub fn nearest<'a, T>(
    from: Point,
    candidates: impl IntoIterator<Item = (&'a T, Point)>,
) -> Option<(&'a T, f64)>
where
    T: 'a,
{
    candidates.into_iter().map(|(item, at)| (item, haversine_km(from, at))).fold(
        None,
        |best, (item, d)| match best {
            Some((_, best_d)) if best_d <= d => best,
            _ => Some((item, d)),
        },
    )
}
