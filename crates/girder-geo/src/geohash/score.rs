//! Redis's geohash: the 52-bit integer a geo member's sorted-set score holds, with
//! Redis's own arithmetic (`geohash.c`), so a position decoded here equals `GEOPOS`
//! bit for bit and an encoded point equals the score `GEOADD` stores.

use std::fmt;

use super::grid::{compact, spread};
use super::{Bounds, Geohash, score_grid};
use crate::point::{CoordError, INDEX_LAT_MAX, Point};

/// Bits in a score: 26 per axis.
pub const SCORE_BITS: u32 = 52;

/// Bits per axis.
const STEP: u32 = SCORE_BITS / 2;

/// A position as Redis stores a geo member: latitude (over ±[`INDEX_LAT_MAX`]) and
/// longitude (over ±180°) each cut into 2^26 steps, interleaved with latitude in the
/// even bits, ordered along a Z curve.
///
/// Redis computes the steps in floating point and truncates, so the score of a point
/// on the north edge (latitude exactly `INDEX_LAT_MAX`) or the east edge (longitude
/// exactly 180) has a 27th bit set (2^52 or more), and the sorted set keeps the score
/// as a `double`, rounding away its lowest bit when it exceeds 2^53. [`Score::encode`]
/// reproduces both, so such a member decodes exactly where `GEOPOS` puts it. (Redis's
/// `GEOSEARCH` scans ranges below 2^52 and never finds those members; the index in
/// this crate does.)
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Score(u64);

/// The latitude range as Redis computes it (`GEO_LAT_MAX - GEO_LAT_MIN`).
const LAT_SCALE: f64 = INDEX_LAT_MAX - (-INDEX_LAT_MAX);
/// `1 << 26` as a double.
const STEPS: f64 = (1u64 << STEP) as f64;

impl Score {
    /// The score `GEOADD` stores for `point`.
    ///
    /// # Errors
    /// [`CoordError::LatOutOfRange`] beyond ±[`INDEX_LAT_MAX`].
    pub fn encode(point: Point) -> Result<Self, CoordError> {
        point.check_indexable()?;
        Ok(Self::encode_raw(point.lat(), point.lon()))
    }

    /// [`Score::encode`] of coordinates already checked to be indexable.
    pub(crate) fn encode_raw(lat: f64, lon: f64) -> Self {
        debug_assert!(lat.abs() <= INDEX_LAT_MAX && lon.abs() <= 180.0);
        // Term for term as geohashEncode: offset in the range, scaled, truncated.
        let lat_offset = (lat - (-INDEX_LAT_MAX)) / LAT_SCALE * STEPS;
        let lon_offset = (lon - (-180.0)) / 360.0 * STEPS;
        let raw = spread(lat_offset as u32) | (spread(lon_offset as u32) << 1);
        // The sorted set holds a double: above 2^53 the lowest bit rounds to even.
        Self((raw as f64) as u64)
    }

    /// A score as Redis holds it (a `WITHHASH` reply, or a `ZSCORE` of a geo member).
    #[must_use]
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The integer.
    #[must_use]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Latitude and longitude steps (each below 2^26 inside the grid; 2^26 on its
    /// north or east edge).
    #[inline]
    pub(crate) const fn steps(self) -> (u32, u32) {
        (compact(self.0), compact(self.0 >> 1))
    }

    /// The position `GEOPOS` reports: the centre of the score's cell, clamped to the
    /// grid (so an edge member reports the edge).
    #[must_use]
    #[inline]
    pub fn decode(self) -> Point {
        let (lat, lon) = self.decode_raw();
        Point::trusted(lat, lon)
    }

    /// [`Score::decode`] as `(lat, lon)`, for hot loops.
    #[inline]
    pub(crate) fn decode_raw(self) -> (f64, f64) {
        let b = self.bounds();
        let lon = ((b.lon_min + b.lon_max) / 2.0).clamp(-180.0, 180.0);
        let lat = ((b.lat_min + b.lat_max) / 2.0).clamp(-INDEX_LAT_MAX, INDEX_LAT_MAX);
        (lat, lon)
    }

    /// The score's cell as Redis's `geohashDecode` computes it (a north- or east-edge
    /// score's cell lies just beyond the grid).
    #[must_use]
    #[inline]
    pub fn bounds(self) -> Bounds {
        let (ilat, ilon) = self.steps();
        // Term for term as geohashDecode, including its 32-bit `+ 1`.
        let edge = |i: u32, min: f64, scale: f64| min + (f64::from(i) / STEPS) * scale;
        Bounds {
            lat_min: edge(ilat, -INDEX_LAT_MAX, LAT_SCALE),
            lat_max: edge(ilat.wrapping_add(1), -INDEX_LAT_MAX, LAT_SCALE),
            lon_min: edge(ilon, -180.0, 360.0),
            lon_max: edge(ilon.wrapping_add(1), -180.0, 360.0),
        }
    }

    /// The 11-character string Redis's `GEOHASH` returns: the decoded position
    /// re-encoded on the standard ±90° grid at 26 bits per axis, its top 50 bits as 10
    /// characters and a final `0` (Redis keeps 52 bits, not 55). A member at exactly
    /// 180° gets Redis's string too, whose first character carries a latitude bit.
    #[must_use]
    pub fn redis_geohash(self) -> Geohash {
        let (lat, lon) = self.decode_raw();
        let lat_offset = (lat - (-90.0)) / 180.0 * STEPS;
        let lon_offset = (lon - (-180.0)) / 360.0 * STEPS;
        let hash = spread(lat_offset as u32) | (spread(lon_offset as u32) << 1);
        let top50 = (hash >> 2) & ((1 << 50) - 1);
        Geohash { bits: top50 << 5, precision: 11 }
    }

    /// The cell of this score at `level` bits per axis, as `(row, col)` clamped to the
    /// grid (an edge score falls in the last row or column).
    #[inline]
    pub(crate) fn cell_at(self, level: u32) -> (u64, u64) {
        let (ilat, ilon) = self.steps();
        let last = (1u64 << STEP) - 1;
        let shift = STEP - level;
        (u64::from(ilat).min(last) >> shift, u64::from(ilon).min(last) >> shift)
    }

    /// The index key: this score with an edge step pulled back into the grid, so every
    /// member sorts inside `0..2^52` next to its neighbours.
    #[inline]
    pub(crate) fn key(self) -> u64 {
        let (row, col) = self.cell_at(STEP);
        interleave(row, col)
    }
}

/// The Z-order integer of a row and column (latitude in the even bits).
#[inline]
pub(crate) fn interleave(row: u64, col: u64) -> u64 {
    debug_assert!(row <= u64::from(u32::MAX) && col <= u64::from(u32::MAX));
    spread(row as u32) | (spread(col as u32) << 1)
}

/// The row and column of a Z-order integer.
#[cfg(test)]
pub(crate) fn deinterleave(z: u64) -> (u64, u64) {
    (u64::from(compact(z)), u64::from(compact(z >> 1)))
}

/// The position of an in-grid index key, decoded as Redis decodes a score.
#[inline]
pub(crate) fn decode_key(key: u64) -> (f64, f64) {
    debug_assert!(key < 1 << SCORE_BITS);
    Score(key).decode_raw()
}

/// The grid of stored scores.
pub(crate) const SCORE_GRID: super::grid::Grid = score_grid(STEP);

impl fmt::Debug for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Score({})", self.0)
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Redis 7.0 stores and reports for a `GEOADD lon lat`: `ZSCORE`, then
    /// `GEOPOS` as Redis prints it (`%.17Lf`, trailing zeros cut), then `GEOHASH`.
    fn check(lat: f64, lon: f64, score: u64, pos: (&str, &str), geohash: &str) {
        let s = Score::encode(Point::new(lat, lon).unwrap()).unwrap();
        assert_eq!(s.raw(), score, "score of ({lat}, {lon})");
        let p = s.decode();
        assert_eq!((human(p.lon()).as_str(), human(p.lat()).as_str()), pos, "GEOPOS");
        assert_eq!(s.redis_geohash().to_string(), geohash, "GEOHASH");
    }

    /// Redis's `%.17Lf` with trailing zeros cut.
    fn human(x: f64) -> String {
        let s = format!("{x:.17}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" { "0".to_owned() } else { s.to_owned() }
    }

    #[test]
    fn matches_redis() {
        // Values printed by Redis 7.0.15.
        check(
            38.115556,
            13.361389,
            3_479_099_956_230_698,
            ("13.36138933897018433", "38.11555639549629859"),
            "sqc8b49rny0",
        );
        // Edges: east (bit 53, lowest bit rounded by the double) and north (bit 52).
        check(0.0, 180.0, 10_133_099_161_583_616, ("180", "0.00000126736058093"), "80000000000");
        check(
            INDEX_LAT_MAX,
            -180.0,
            4_503_599_627_370_496,
            ("-179.99999731779098511", "85.0511287799999991"),
            "bp05b5048p0",
        );
        check(
            INDEX_LAT_MAX,
            179.99999,
            7_505_999_378_950_824,
            ("179.99999195337295532", "85.0511287799999991"),
            "zzpgzgpfxz0",
        );
    }

    #[test]
    fn out_of_range_is_refused() {
        let p = Point::new(85.06, 0.0).unwrap();
        assert!(matches!(Score::encode(p), Err(CoordError::LatOutOfRange { .. })));
    }

    #[test]
    fn keys_stay_in_the_grid() {
        let east = Score::encode(Point::new(0.0, 180.0).unwrap()).unwrap();
        assert!(east.raw() >= 1 << 53);
        assert!(east.key() < 1 << SCORE_BITS);
        let (row, col) = deinterleave(east.key());
        assert_eq!(col, (1 << STEP) - 1);
        assert_eq!(row, u64::from(east.steps().0));
        let inside = Score::encode(Point::new(10.0, 20.0).unwrap()).unwrap();
        assert_eq!(inside.key(), inside.raw());
        assert_eq!(decode_key(inside.key()), inside.decode_raw());
    }
}
