//! Validated WGS84 points. Every coordinate that enters girder-geo passes through
//! [`Point::new`], so NaN, infinities and out-of-range degrees are typed errors at the
//! edge and never reach an index, a fence or a distance.

use thiserror::Error;

/// The largest latitude a Redis-compatible index accepts, in degrees.
///
/// Redis encodes latitudes over `-85.05112878..=85.05112878` (the Web Mercator square)
/// rather than `-90..=90`, and `GEOADD` refuses anything beyond. The in-process index
/// keeps the same limit so both backends accept exactly the same points.
pub const INDEX_LAT_MAX: f64 = 85.051_128_78;

/// A point on the globe in degrees (WGS84 latitude and longitude).
///
/// Always finite, latitude in `-90..=90`, longitude in `-180..=180`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    lat: f64,
    lon: f64,
}

/// Why a coordinate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
#[non_exhaustive]
pub enum CoordError {
    /// Latitude is NaN or infinite.
    #[error("latitude must be a finite number, got {0}")]
    LatNotFinite(f64),
    /// Longitude is NaN or infinite.
    #[error("longitude must be a finite number, got {0}")]
    LonNotFinite(f64),
    /// Latitude is outside `-max..=max` (90, or [`INDEX_LAT_MAX`] for an index).
    #[error("latitude {lat} outside -{max}..={max}")]
    LatOutOfRange {
        /// The latitude given.
        lat: f64,
        /// The limit it broke.
        max: f64,
    },
    /// Longitude is outside `-180..=180`.
    #[error("longitude {0} outside -180..=180")]
    LonOutOfRange(f64),
}

impl Point {
    /// A point, if both coordinates are finite and in range.
    ///
    /// # Errors
    /// [`CoordError`] naming the offending coordinate.
    pub fn new(lat: f64, lon: f64) -> Result<Self, CoordError> {
        if !lat.is_finite() {
            return Err(CoordError::LatNotFinite(lat));
        }
        if !lon.is_finite() {
            return Err(CoordError::LonNotFinite(lon));
        }
        if !(-90.0..=90.0).contains(&lat) {
            return Err(CoordError::LatOutOfRange { lat, max: 90.0 });
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(CoordError::LonOutOfRange(lon));
        }
        Ok(Self { lat, lon })
    }

    /// A point an index can hold: as [`Point::new`], and the latitude within
    /// [`INDEX_LAT_MAX`].
    ///
    /// # Errors
    /// [`CoordError`] naming the offending coordinate.
    pub fn indexable(lat: f64, lon: f64) -> Result<Self, CoordError> {
        let p = Self::new(lat, lon)?;
        p.check_indexable()?;
        Ok(p)
    }

    /// `Ok` if an index can hold this point (latitude within [`INDEX_LAT_MAX`]).
    ///
    /// # Errors
    /// [`CoordError::LatOutOfRange`] with `max` = [`INDEX_LAT_MAX`].
    pub fn check_indexable(self) -> Result<(), CoordError> {
        if self.lat.abs() > INDEX_LAT_MAX {
            return Err(CoordError::LatOutOfRange { lat: self.lat, max: INDEX_LAT_MAX });
        }
        Ok(())
    }

    /// Latitude in degrees.
    #[must_use]
    pub fn lat(self) -> f64 {
        self.lat
    }

    /// Longitude in degrees.
    #[must_use]
    pub fn lon(self) -> f64 {
        self.lon
    }

    /// A point from coordinates already known to be valid (decoded cells, clamped
    /// interpolations). Checked in debug builds.
    pub(crate) fn trusted(lat: f64, lon: f64) -> Self {
        debug_assert!(lat.is_finite() && (-90.0..=90.0).contains(&lat), "lat {lat}");
        debug_assert!(lon.is_finite() && (-180.0..=180.0).contains(&lon), "lon {lon}");
        Self { lat, lon }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok = |lat, lon| Point::new(lat, lon).map(|p| (p.lat(), p.lon()));
        assert_eq!(ok(0.0, 0.0), Ok((0.0, 0.0)));
        assert_eq!(ok(90.0, -180.0), Ok((90.0, -180.0)));
        assert!(matches!(Point::new(f64::NAN, 0.0), Err(CoordError::LatNotFinite(_))));
        assert!(matches!(Point::new(0.0, f64::INFINITY), Err(CoordError::LonNotFinite(_))));
        assert_eq!(Point::new(90.5, 0.0), Err(CoordError::LatOutOfRange { lat: 90.5, max: 90.0 }));
        assert_eq!(Point::new(0.0, -180.01), Err(CoordError::LonOutOfRange(-180.01)));
        assert_eq!(
            Point::indexable(85.06, 0.0),
            Err(CoordError::LatOutOfRange { lat: 85.06, max: INDEX_LAT_MAX })
        );
        assert!(Point::indexable(-INDEX_LAT_MAX, 180.0).is_ok());
    }
}
