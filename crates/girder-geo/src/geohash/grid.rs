//! The arithmetic every geohash shares: a grid of `2^lat_bits` rows by `2^lon_bits`
//! columns over a latitude range and the full longitude circle, and the bit
//! interleaving (Morton order) that turns a cell's row and column into one integer.

/// Puts bit `i` of `x` at bit `2i` of the result.
#[inline]
pub(crate) const fn spread(x: u32) -> u64 {
    let mut x = x as u64;
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

/// The even bits of `x` (bit `2i` to bit `i`): the inverse of [`spread`].
#[inline]
pub(crate) const fn compact(x: u64) -> u32 {
    let mut x = x & 0x5555_5555_5555_5555;
    x = (x | (x >> 1)) & 0x3333_3333_3333_3333;
    x = (x | (x >> 2)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x >> 4)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x >> 8)) & 0x0000_FFFF_0000_FFFF;
    ((x | (x >> 16)) & 0x0000_0000_FFFF_FFFF) as u32
}

/// A grid of `2^lat_bits` rows (south to north) by `2^lon_bits` columns (west to east,
/// from -180°) over `lat_min..=lat_max`.
///
/// A cell's bounds are `min + (index / 2^bits) * (max - min)`, the formula Redis's
/// `geohashDecode` uses: on the standard ±90° grid every bound is exact (a dyadic
/// fraction of 180 or 360 with fewer than 53 significant bits); on Redis's ±85.05°
/// grid the bounds are Redis's own, rounding included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Grid {
    pub(crate) lat_min: f64,
    pub(crate) lat_max: f64,
    pub(crate) lat_bits: u32,
    pub(crate) lon_bits: u32,
}

impl Grid {
    /// The number of rows.
    #[inline]
    pub(crate) const fn rows(self) -> u64 {
        1 << self.lat_bits
    }

    /// The number of columns.
    #[inline]
    pub(crate) const fn cols(self) -> u64 {
        1 << self.lon_bits
    }

    /// South and north edges of `row` (which may be one past the last row, for the
    /// north edge of the grid).
    #[inline]
    pub(crate) fn row_bounds(self, row: u64) -> (f64, f64) {
        let scale = self.lat_max - self.lat_min;
        let n = self.rows() as f64;
        (self.lat_min + (row as f64 / n) * scale, self.lat_min + ((row + 1) as f64 / n) * scale)
    }

    /// West and east edges of `col`.
    #[inline]
    pub(crate) fn col_bounds(self, col: u64) -> (f64, f64) {
        let n = self.cols() as f64;
        (-180.0 + (col as f64 / n) * 360.0, -180.0 + ((col + 1) as f64 / n) * 360.0)
    }

    /// The row whose `[south, north)` holds `lat`; latitudes beyond the grid fall in
    /// its first or last row (so the last row also holds its north edge).
    pub(crate) fn row_of(self, lat: f64) -> u64 {
        let last = self.rows() - 1;
        let guess = ((lat - self.lat_min) / (self.lat_max - self.lat_min) * self.rows() as f64)
            .floor()
            .clamp(0.0, last as f64) as u64;
        // The guess is off by at most one near an edge (rounding in the division);
        // the exact edges decide.
        let mut row = guess;
        while row > 0 && lat < self.row_bounds(row).0 {
            row -= 1;
        }
        while row < last && lat >= self.row_bounds(row + 1).0 {
            row += 1;
        }
        row
    }

    /// The column whose `[west, east)` holds `lon`; 180° falls in the last column.
    pub(crate) fn col_of(self, lon: f64) -> u64 {
        let last = self.cols() - 1;
        let guess =
            ((lon + 180.0) / 360.0 * self.cols() as f64).floor().clamp(0.0, last as f64) as u64;
        let mut col = guess;
        while col > 0 && lon < self.col_bounds(col).0 {
            col -= 1;
        }
        while col < last && lon >= self.col_bounds(col + 1).0 {
            col += 1;
        }
        col
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_round_trips() {
        for x in [0u32, 1, 2, 0x3FF_FFFF, 0xFFFF_FFFF, 0x1234_5678] {
            assert_eq!(compact(spread(x)), x);
            assert_eq!(compact(spread(x) << 1 >> 1), x);
        }
        assert_eq!(spread(0b111), 0b10101);
        assert_eq!(compact(0b1010), 0b00);
        assert_eq!(compact(0b1010 >> 1), 0b11);
    }

    #[test]
    fn rows_and_columns_hold_their_edges() {
        let g = Grid { lat_min: -90.0, lat_max: 90.0, lat_bits: 3, lon_bits: 3 };
        let check = |lat: f64, lon: f64, want: (u64, u64)| {
            assert_eq!((g.row_of(lat), g.col_of(lon)), want, "({lat}, {lon})");
        };
        check(-90.0, -180.0, (0, 0));
        check(90.0, 180.0, (7, 7));
        check(0.0, 0.0, (4, 4));
        check(-1e-300, -1e-300, (3, 3));
        check(22.5, 45.0, (5, 5));
        check(22.499_999_999_999_996, 44.999_999_999_999_99, (4, 4));
        assert_eq!(g.row_bounds(5), (22.5, 45.0));
        assert_eq!(g.col_bounds(0), (-180.0, -135.0));
    }
}
