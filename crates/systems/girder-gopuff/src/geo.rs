//! Great-circle distance and the nearby search over distribution centres
//! ("Pattern: Geospatial & Location-based Services", the simplest form).
//!
//! For now every search is a plain haversine scan over all centres: exact, and
//! linear in their number. A geo index (geohash or an R-tree / PostGIS) comes
//! later; the seam is [`within`] and [`nearest`], which take the candidate list.

/// Mean Earth radius in kilometres (IUGG), the radius the haversine formula assumes.
pub const EARTH_RADIUS_KM: f64 = 6_371.008_8;

/// A point on the globe in degrees, already validated (see [`Point::new`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Latitude in degrees, `-90..=90`.
    pub lat: f64,
    /// Longitude in degrees, `-180..=180`.
    pub lon: f64,
}

/// Why a coordinate was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    /// Latitude is not a finite number in `-90..=90`.
    #[error("lat must be a finite number in -90..=90, got {0}")]
    Lat(f64),
    /// Longitude is not a finite number in `-180..=180`.
    #[error("lon must be a finite number in -180..=180, got {0}")]
    Lon(f64),
}

impl Point {
    /// A point, if `lat` and `lon` are finite and in range.
    ///
    /// # Errors
    /// [`CoordError`] naming the offending coordinate.
    pub fn new(lat: f64, lon: f64) -> Result<Self, CoordError> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(CoordError::Lat(lat));
        }
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(CoordError::Lon(lon));
        }
        Ok(Self { lat, lon })
    }
}

/// The great-circle distance between `a` and `b` in kilometres (haversine on a
/// sphere of [`EARTH_RADIUS_KM`]; within about 0.5% of the ellipsoidal distance).
/// Total: any two points, including poles and antipodes, give a finite answer.
#[must_use]
pub fn haversine_km(a: Point, b: Point) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.lon - a.lon).to_radians();
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
