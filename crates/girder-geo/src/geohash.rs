//! Geohashes ("Pattern: Geohashing for Proximity Search"): a cell of a grid over the
//! globe named by a base32 string whose prefixes are the enclosing cells, so nearby
//! points share prefixes and a proximity search is a few prefix (or integer range)
//! scans refined by exact distance.
//!
//! - [`Geohash`]: the standard strings (precision 1–12, latitude ±90°), exact
//!   encode and decode (a point on a cell edge belongs to the cell north and east of
//!   it, as bisection decides), [`Bounds`] and centre, the eight neighbours.
//! - [`Score`]: the 52-bit integer Redis stores as a geo member's sorted-set score
//!   (26 bits per axis, latitude ±[`INDEX_LAT_MAX`]), encoded and decoded with
//!   Redis's arithmetic so positions equal `GEOPOS` bit for bit, and its `GEOHASH`
//!   string.
//! - [`cover_circle`] and [`cover_box`]: the cells at a chosen precision that contain
//!   every point of a circle or a box.
//!
//! **Edges of the world.** Across ±180° the grid wraps: the east neighbour of a cell
//! on the antimeridian is in the first column. Past a pole there is no cell: the
//! north neighbours of a cell in the top row are `None` (not the wrapped bottom row,
//! which is where naive bit arithmetic — and Redis's `geohashNeighbors` — lands).
//!
//! **Cell sizes** (at the equator; east–west sizes shrink with the cosine of the
//! latitude): precision 5 is 4.9 km × 4.9 km, 6 is 1.2 km × 0.6 km, 7 is 153 m ×
//! 153 m, 9 is 4.8 m × 4.8 m, 12 is 3.7 cm × 1.9 cm.
//!
//! ```
//! use girder_geo::Point;
//! use girder_geo::geohash::{self, Direction};
//!
//! let sf = Point::new(37.7749, -122.4194)?;
//! let cell = geohash::encode(sf, 5)?;
//! assert_eq!(cell.to_string(), "9q8yy");
//! assert_eq!(cell.neighbor(Direction::N).map(|n| n.to_string()).as_deref(), Some("9q8zn"));
//! // Every point within 1 km lies in one of these precision-6 cells.
//! let cells = geohash::cover_circle(sf, 1_000.0, 6, 100)?;
//! assert!(cells.iter().all(|c| c.to_string().starts_with("9q8")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cover;
pub(crate) mod grid;
pub(crate) mod score;

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

pub use cover::{CoverError, cover_box, cover_circle};
pub(crate) use cover::{Shape, score_ranges, score_ranges_coarse};
pub use score::{SCORE_BITS, Score};

use crate::point::{INDEX_LAT_MAX, Point};
use grid::{Grid, compact, spread};

/// The longest geohash string: 12 characters, 60 bits, cells of a few centimetres.
pub const PRECISION_MAX: u8 = 12;

/// The geohash alphabet: base32 without `a`, `i`, `l` and `o`.
const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";

/// Why a geohash was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GeohashError {
    /// A precision outside `1..=`[`PRECISION_MAX`].
    #[error("geohash precision {0} outside 1..={max}", max = PRECISION_MAX)]
    InvalidPrecision(u8),
    /// A string that is empty or longer than [`PRECISION_MAX`] characters.
    #[error("geohash of {0} characters: must be 1..={max}", max = PRECISION_MAX)]
    InvalidLength(usize),
    /// A character outside the geohash alphabet (it is case-insensitive).
    #[error("geohash character {ch:?} at {index} is not in the geohash alphabet")]
    InvalidChar {
        /// Its position in the string.
        index: usize,
        /// The character.
        ch: char,
    },
}

/// A cell's extent in degrees. Each cell holds its south and west edges; the last
/// row and column also hold the grid's north and east edges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// South edge.
    pub lat_min: f64,
    /// North edge.
    pub lat_max: f64,
    /// West edge.
    pub lon_min: f64,
    /// East edge.
    pub lon_max: f64,
}

impl Bounds {
    /// Whether `p` lies within the bounds, edges included.
    #[must_use]
    pub fn contains(&self, p: Point) -> bool {
        (self.lat_min..=self.lat_max).contains(&p.lat())
            && (self.lon_min..=self.lon_max).contains(&p.lon())
    }
}

/// A direction from a cell to one of its eight neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// North.
    N,
    /// North-east.
    NE,
    /// East.
    E,
    /// South-east.
    SE,
    /// South.
    S,
    /// South-west.
    SW,
    /// West.
    W,
    /// North-west.
    NW,
}

impl Direction {
    /// All eight, clockwise from north: the order of [`Geohash::neighbors`].
    pub const ALL: [Self; 8] =
        [Self::N, Self::NE, Self::E, Self::SE, Self::S, Self::SW, Self::W, Self::NW];

    /// Rows north (+) or south (-) and columns east (+) or west (-).
    #[must_use]
    pub const fn offsets(self) -> (i8, i8) {
        match self {
            Self::N => (1, 0),
            Self::NE => (1, 1),
            Self::E => (0, 1),
            Self::SE => (-1, 1),
            Self::S => (-1, 0),
            Self::SW => (-1, -1),
            Self::W => (0, -1),
            Self::NW => (1, -1),
        }
    }
}

/// A geohash: a cell of the standard grid (latitude ±90°, longitude ±180°), named
/// by 1 to 12 base32 characters.
///
/// Each character holds 5 bits, alternating longitude and latitude bits starting
/// with longitude, so a precision-`p` cell is one of `2^ceil(5p/2)` columns by
/// `2^floor(5p/2)` rows. Ordered as its string is (prefixes first).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geohash {
    /// The `5 * precision` bits, right-aligned.
    bits: u64,
    precision: u8,
}

/// A decoded geohash: its cell and the cell's centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decoded {
    /// The cell.
    pub bounds: Bounds,
    /// The centre of the cell.
    pub center: Point,
}

/// The geohash of `point` at `precision` characters.
///
/// # Errors
/// [`GeohashError::InvalidPrecision`].
pub fn encode(point: Point, precision: u8) -> Result<Geohash, GeohashError> {
    Geohash::encode(point, precision)
}

/// The cell a geohash string names, and its centre.
///
/// # Errors
/// [`GeohashError::InvalidLength`] or [`GeohashError::InvalidChar`].
pub fn decode(geohash: &str) -> Result<Decoded, GeohashError> {
    let g = Geohash::parse(geohash)?;
    Ok(Decoded { bounds: g.bounds(), center: g.center() })
}

impl Geohash {
    /// The cell of `point` at `precision` characters.
    ///
    /// # Errors
    /// [`GeohashError::InvalidPrecision`].
    pub fn encode(point: Point, precision: u8) -> Result<Self, GeohashError> {
        let grid = grid_of(precision)?;
        Ok(Self::from_cell(grid, precision, grid.row_of(point.lat()), grid.col_of(point.lon())))
    }

    /// A geohash from its string (case-insensitive).
    ///
    /// # Errors
    /// [`GeohashError::InvalidLength`] or [`GeohashError::InvalidChar`].
    pub fn parse(s: &str) -> Result<Self, GeohashError> {
        let len = s.chars().count();
        if len == 0 || len > usize::from(PRECISION_MAX) {
            return Err(GeohashError::InvalidLength(len));
        }
        let mut bits = 0u64;
        for (index, ch) in s.chars().enumerate() {
            let lower = ch.to_ascii_lowercase();
            let value = ALPHABET
                .iter()
                .position(|&a| char::from(a) == lower)
                .ok_or(GeohashError::InvalidChar { index, ch })?;
            bits = (bits << 5) | value as u64;
        }
        // `len <= 12` was checked above.
        Ok(Self { bits, precision: len as u8 })
    }

    /// The number of characters.
    #[must_use]
    pub const fn precision(self) -> u8 {
        self.precision
    }

    /// The `5 * precision` bits, right-aligned (the string's characters in base 32).
    #[must_use]
    pub const fn bits(self) -> u64 {
        self.bits
    }

    /// The cell's extent.
    #[must_use]
    pub fn bounds(self) -> Bounds {
        let grid = self.grid();
        let (row, col) = self.cell();
        let (lat_min, lat_max) = grid.row_bounds(row);
        let (lon_min, lon_max) = grid.col_bounds(col);
        Bounds { lat_min, lat_max, lon_min, lon_max }
    }

    /// The cell's centre (exact: every bound of the standard grid is a short dyadic).
    #[must_use]
    pub fn center(self) -> Point {
        let b = self.bounds();
        Point::trusted((b.lat_min + b.lat_max) / 2.0, (b.lon_min + b.lon_max) / 2.0)
    }

    /// Whether `p` falls in this cell (as [`Geohash::encode`] decides edges).
    #[must_use]
    pub fn contains(self, p: Point) -> bool {
        Self::encode(p, self.precision) == Ok(self)
    }

    /// The enclosing cell one character shorter; `None` at precision 1.
    #[must_use]
    pub const fn parent(self) -> Option<Self> {
        if self.precision == 1 {
            return None;
        }
        Some(Self { bits: self.bits >> 5, precision: self.precision - 1 })
    }

    /// The neighbour in `direction`. East and west wrap across ±180°; there is no
    /// cell north of the top row or south of the bottom row (`None`).
    #[must_use]
    pub fn neighbor(self, direction: Direction) -> Option<Self> {
        let grid = self.grid();
        let (row, col) = self.cell();
        let (dlat, dlon) = direction.offsets();
        let row = row.checked_add_signed(i64::from(dlat)).filter(|&r| r < grid.rows())?;
        let col = col.wrapping_add_signed(i64::from(dlon)) & (grid.cols() - 1);
        Some(Self::from_cell(grid, self.precision, row, col))
    }

    /// The eight neighbours in [`Direction::ALL`] order (clockwise from north);
    /// `None` past a pole.
    #[must_use]
    pub fn neighbors(self) -> [Option<Self>; 8] {
        Direction::ALL.map(|d| self.neighbor(d))
    }

    /// The grid of this precision.
    fn grid(self) -> Grid {
        standard_grid(self.precision)
    }

    /// Row (from the south) and column (from -180°).
    pub(crate) fn cell(self) -> (u64, u64) {
        let grid = self.grid();
        let n = 5 * u32::from(self.precision);
        // Left-align: the top bit is the first longitude bit, then latitude, ...
        let v = self.bits << (64 - n);
        let lon = u64::from(compact(v >> 1)) >> (32 - grid.lon_bits);
        let lat = u64::from(compact(v)) >> (32 - grid.lat_bits);
        (lat, lon)
    }

    /// The geohash of a grid cell.
    pub(crate) fn from_cell(grid: Grid, precision: u8, row: u64, col: u64) -> Self {
        debug_assert!(row < grid.rows() && col < grid.cols());
        let n = 5 * u32::from(precision);
        // Indices fit in 32 bits: at most 30 bits per axis at precision 12.
        let lon = spread((col << (32 - grid.lon_bits)) as u32) << 1;
        let lat = spread((row << (32 - grid.lat_bits)) as u32);
        Self { bits: (lon | lat) >> (64 - n), precision }
    }
}

/// The standard grid of a valid precision.
pub(crate) fn grid_of(precision: u8) -> Result<Grid, GeohashError> {
    if !(1..=PRECISION_MAX).contains(&precision) {
        return Err(GeohashError::InvalidPrecision(precision));
    }
    Ok(standard_grid(precision))
}

/// The standard grid of `precision` characters: longitude gets the odd bit.
const fn standard_grid(precision: u8) -> Grid {
    let bits = 5 * precision as u32;
    Grid { lat_min: -90.0, lat_max: 90.0, lat_bits: bits / 2, lon_bits: bits - bits / 2 }
}

/// Redis's grid at `level` bits per axis (26 for a stored score).
pub(crate) const fn score_grid(level: u32) -> Grid {
    Grid { lat_min: -INDEX_LAT_MAX, lat_max: INDEX_LAT_MAX, lat_bits: level, lon_bits: level }
}

impl fmt::Display for Geohash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; PRECISION_MAX as usize];
        let p = usize::from(self.precision);
        for (i, slot) in buf[..p].iter_mut().enumerate() {
            let shift = 5 * (p - 1 - i);
            *slot = ALPHABET[((self.bits >> shift) & 0x1f) as usize];
        }
        // Every byte comes from the ASCII alphabet.
        f.write_str(std::str::from_utf8(&buf[..p]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Geohash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Geohash({self})")
    }
}

impl FromStr for Geohash {
    type Err = GeohashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Ord for Geohash {
    /// As the strings compare: by the left-aligned bits, then shorter first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let left = |g: &Self| g.bits << (64 - 5 * u32::from(g.precision));
        left(self).cmp(&left(other)).then(self.precision.cmp(&other.precision))
    }
}

impl PartialOrd for Geohash {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn p(lat: f64, lon: f64) -> Point {
        Point::new(lat, lon).unwrap()
    }

    /// Encodes, and checks the string round-trips and the cell holds the point.
    fn check(lat: f64, lon: f64, precision: u8, want: &str) {
        let g = encode(p(lat, lon), precision).unwrap();
        assert_eq!(g.to_string(), want, "({lat}, {lon}) at {precision}");
        assert_eq!(Geohash::parse(want), Ok(g));
        assert!(g.bounds().contains(p(lat, lon)));
    }

    #[test]
    fn encode_table() {
        // The catalogue's San Francisco and the usual reference points.
        check(37.7749, -122.4194, 5, "9q8yy");
        check(37.7749, -122.4194, 7, "9q8yyk8");
        check(57.64911, 10.40744, 11, "u4pruydqqvj");
        check(42.6, -5.6, 5, "ezs42");
        check(-25.382708, -49.265506, 12, "6gkzwgjzn820");
        // Edges: a point on an edge belongs to the cell north and east of it.
        check(0.0, 0.0, 1, "s");
        check(-1e-12, -1e-12, 1, "7");
        check(90.0, 180.0, 3, "zzz");
        check(-90.0, -180.0, 3, "000");
        check(90.0, -180.0, 2, "bp");
    }

    #[test]
    fn decode_gives_exact_bounds_and_centre() {
        let d = decode("ezs42").unwrap();
        assert_eq!(
            d.bounds,
            Bounds {
                lat_min: 42.583_007_812_5,
                lat_max: 42.626_953_125,
                lon_min: -5.625,
                lon_max: -5.581_054_687_5,
            }
        );
        assert_eq!((d.center.lat(), d.center.lon()), (42.604_980_468_75, -5.603_027_343_75));
        assert_eq!(decode("EZS42"), Ok(d), "case-insensitive");
        let whole = decode("s").unwrap().bounds;
        assert_eq!(
            (whole.lat_min, whole.lat_max, whole.lon_min, whole.lon_max),
            (0., 45., 0., 45.)
        );
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert_eq!(Geohash::parse(""), Err(GeohashError::InvalidLength(0)));
        assert_eq!(Geohash::parse("0123456789bcd"), Err(GeohashError::InvalidLength(13)));
        assert_eq!(Geohash::parse("9qa"), Err(GeohashError::InvalidChar { index: 2, ch: 'a' }));
        assert_eq!(Geohash::parse("é"), Err(GeohashError::InvalidChar { index: 0, ch: 'é' }));
        assert_eq!(encode(p(0.0, 0.0), 0), Err(GeohashError::InvalidPrecision(0)));
        assert_eq!(encode(p(0.0, 0.0), 13), Err(GeohashError::InvalidPrecision(13)));
    }

    #[test]
    fn neighbours_wrap_east_west_and_stop_at_the_poles() {
        let names =
            |g: &str| Geohash::parse(g).unwrap().neighbors().map(|n| n.map(|n| n.to_string()));
        let some = |s: &str| Some(s.to_owned());
        // N, NE, E, SE, S, SW, W, NW.
        assert_eq!(
            names("9q8yy"),
            [
                some("9q8zn"),
                some("9q8zp"),
                some("9q8yz"),
                some("9q8yx"),
                some("9q8yw"),
                some("9q8yt"),
                some("9q8yv"),
                some("9q8zj")
            ]
        );
        // "b" is the top-left cell at precision 1: nothing north, west wraps to "z".
        assert_eq!(
            names("b"),
            [None, None, some("c"), some("9"), some("8"), some("x"), some("z"), None]
        );
        // "0" is the bottom-left: nothing south.
        assert_eq!(
            names("0"),
            [some("2"), some("3"), some("1"), None, None, None, some("p"), some("r")]
        );
        // Across the antimeridian at precision 5, both ways.
        let east = Geohash::parse("rzzzz").unwrap().neighbor(Direction::E).unwrap();
        assert_eq!(east.to_string(), "2pbpb");
        assert_eq!(east.neighbor(Direction::W).unwrap().to_string(), "rzzzz");
    }

    #[test]
    fn order_is_string_order() {
        let mut v: Vec<Geohash> = ["u4", "9q8", "9q", "u", "9q8y", "0", "zz"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        let s: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["0", "9q", "9q8", "9q8y", "u", "u4", "zz"]);
    }

    proptest! {
        /// Encoding agrees with plain bisection, the cell holds the point, the parent
        /// is the prefix, and each neighbour shares an edge or corner with the cell.
        #[test]
        fn encode_is_bisection(lat in -90.0f64..=90.0, lon in -180.0f64..=180.0, precision in 1u8..=12) {
            let g = encode(p(lat, lon), precision).unwrap();
            let s = g.to_string();
            prop_assert_eq!(s.clone(), bisect(lat, lon, precision));
            let b = g.bounds();
            prop_assert!(b.contains(p(lat, lon)));
            prop_assert!(b.contains(g.center()));
            if let Some(parent) = g.parent() {
                prop_assert_eq!(parent.to_string(), s[..s.len() - 1].to_owned());
            }
            for d in Direction::ALL {
                let Some(n) = g.neighbor(d) else {
                    let at_pole = if d.offsets().0 > 0 { b.lat_max == 90.0 } else { b.lat_min == -90.0 };
                    prop_assert!(at_pole, "no neighbour {:?} away from a pole", d);
                    continue;
                };
                let nb = n.bounds();
                let (dlat, dlon) = d.offsets();
                match dlat {
                    1 => prop_assert_eq!(nb.lat_min, b.lat_max),
                    -1 => prop_assert_eq!(nb.lat_max, b.lat_min),
                    _ => prop_assert_eq!(nb.lat_min, b.lat_min),
                }
                let wrap = |x: f64| if x == 180.0 { -180.0 } else { x };
                match dlon {
                    1 => prop_assert_eq!(nb.lon_min, wrap(b.lon_max)),
                    -1 => prop_assert_eq!(wrap(nb.lon_max), b.lon_min),
                    _ => prop_assert_eq!(nb.lon_min, b.lon_min),
                }
            }
        }
    }

    /// The textbook algorithm: halve the ranges, longitude first.
    fn bisect(lat: f64, lon: f64, precision: u8) -> String {
        let (mut lat_r, mut lon_r) = ((-90.0, 90.0), (-180.0, 180.0));
        let mut out = String::new();
        let (mut value, mut n, mut even) = (0usize, 0, true);
        while out.len() < usize::from(precision) {
            let (r, x) = if even { (&mut lon_r, lon) } else { (&mut lat_r, lat) };
            let mid = (r.0 + r.1) / 2.0;
            value <<= 1;
            if x >= mid {
                value |= 1;
                r.0 = mid;
            } else {
                r.1 = mid;
            }
            even = !even;
            n += 1;
            if n == 5 {
                out.push(char::from(ALPHABET[value]));
                (value, n) = (0, 0);
            }
        }
        out
    }
}
