//! Hexagonal cells on the globe ("Pattern: S2 Geometry for Precise Coverage", done with
//! Uber's H3 through `h3o` rather than S2's squares): a point's cell at a resolution,
//! a cell's centre, boundary, parent and children, grid disks, coverings of a circle
//! that provably miss no point inside it, and per-cell counts for supply and demand.
//!
//! Why hexagons: every cell's neighbours share an edge and sit at the same distance,
//! so "this cell and the ring around it" approximates a circle, and counts per cell
//! (drivers, ride requests) compare fairly from one cell to the next. Twelve cells per
//! resolution are pentagons; everything here handles them.
//!
//! **Sphere.** Metres here are on [`EARTH_RADIUS_M`], the sphere of
//! [`crate::distance`], so a covering's radius means what a radius search's does.
//! H3's own tables use its authalic radius (6,371,007.2 m), 0.03% smaller: an edge
//! length here is 0.03% longer, an area 0.06% larger than in H3's tables.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::str::FromStr;

use h3o::{CellIndex, LatLng, Resolution};
use thiserror::Error;

use crate::distance::EARTH_RADIUS_M;
use crate::point::Point;

/// The finest resolution; resolutions are `0..=RESOLUTION_MAX`.
pub const RESOLUTION_MAX: u8 = 15;

/// The largest `k` [`k_ring`] accepts: 30,301 cells.
pub const K_RING_MAX: u32 = 100;

/// The most cells [`Cell::children`] returns: five levels down (7⁵).
pub const CHILDREN_MAX: u64 = 16_807;

/// The largest radius [`cover_radius`] accepts, in metres: half the circumference,
/// the distance to the antipode, beyond which the circle is the whole sphere.
pub const COVER_RADIUS_M_MAX: f64 = std::f64::consts::PI * EARTH_RADIUS_M;

/// How much farther than the radius a cell's boundary may be and still be kept by
/// [`cover_radius`], in radians (about 6 mm on the ground).
///
/// H3 assigns a point to a cell by rounding in its face's plane; measured over all
/// resolutions, a point lies at most about 1e-12 rad outside the boundary of the cell
/// it is assigned to, and `f64` error in a point-to-edge distance stays below that for
/// cells of every resolution. A margin a thousand times larger keeps every such point
/// and adds only cells within millimetres of the circle.
pub const COVER_MARGIN_RAD: f64 = 1e-9;

/// An H3 cell: a hexagon (or one of the twelve pentagons per resolution) at one of
/// the resolutions `0..=15`, each cell having seven children (a pentagon six) at the
/// next.
///
/// Displayed, and parsed, as H3's hexadecimal string (`"87283472bffffff"`); ordered
/// along H3's hierarchy, so a parent's descendants are contiguous once sorted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell(CellIndex);

/// A resolution outside `0..=15`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("resolution {resolution} outside 0..={max}", max = RESOLUTION_MAX)]
pub struct ResolutionError {
    /// The resolution given.
    pub resolution: u8,
}

/// Why a string or integer is not a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseCellError {
    /// The string is not 1..=16 hexadecimal digits (no sign, prefix or spaces).
    #[error("{len}-byte string is not 1..=16 hexadecimal digits")]
    NotHex {
        /// Its length in bytes.
        len: usize,
    },
    /// The number is not an H3 cell index (wrong mode or reserved bits, no such base
    /// cell, digits past the resolution, a pentagon's deleted subsequence).
    #[error("{raw:#x} is not an H3 cell index")]
    NotACell {
        /// The number.
        raw: u64,
    },
}

/// Why a parent, children or expansion was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HierarchyError {
    /// The resolution asked for is outside `0..=15`.
    #[error(transparent)]
    Resolution(#[from] ResolutionError),
    /// A parent was asked at a finer resolution than the cell's own.
    #[error("a resolution {cell} cell has no parent at resolution {asked}")]
    NotCoarser {
        /// The cell's resolution.
        cell: u8,
        /// The resolution asked for.
        asked: u8,
    },
    /// Children were asked at a coarser resolution than the cell's own.
    #[error("a resolution {cell} cell has no children at resolution {asked}")]
    NotFiner {
        /// The cell's resolution.
        cell: u8,
        /// The resolution asked for.
        asked: u8,
    },
    /// The answer would hold more cells than allowed.
    #[error("{count} cells, more than the {max} allowed")]
    TooMany {
        /// How many cells the answer would hold.
        count: u64,
        /// The limit.
        max: u64,
    },
}

/// Why a grid disk was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RingError {
    /// `k` is above [`K_RING_MAX`].
    #[error("k {k} above {max}", max = K_RING_MAX)]
    TooLarge {
        /// The `k` given.
        k: u32,
    },
}

/// Why a covering was refused.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
#[non_exhaustive]
pub enum CoverError {
    /// The resolution is outside `0..=15`.
    #[error(transparent)]
    Resolution(#[from] ResolutionError),
    /// The radius is negative, not finite or above [`COVER_RADIUS_M_MAX`].
    #[error("radius {radius_m} m outside 0..={max} m", max = COVER_RADIUS_M_MAX)]
    Radius {
        /// The radius given.
        radius_m: f64,
    },
    /// The covering needs more than `max` cells (a coarser resolution needs fewer).
    #[error("covering needs more than {max} cells")]
    TooManyCells {
        /// The limit given.
        max: usize,
    },
}

/// Why a compaction was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CompactError {
    /// The cells are not all at one resolution.
    #[error("cells at resolutions {first} and {other}: compaction needs one resolution")]
    MixedResolutions {
        /// The first cell's resolution.
        first: u8,
        /// Another resolution among the cells.
        other: u8,
    },
    /// A cell appears twice.
    #[error("cell {cell} appears twice")]
    Duplicate {
        /// The repeated cell.
        cell: Cell,
    },
}

/// Why counts were refused. Nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CountsError {
    /// A cell (or another set of counts) is not at these counts' resolution.
    #[error("resolution {got}, expected {expected}")]
    WrongResolution {
        /// The resolution given.
        got: u8,
        /// The counts' resolution.
        expected: u8,
    },
    /// Counting would hold more distinct cells than the configured maximum.
    #[error("counts full ({max} cells)")]
    Full {
        /// The configured maximum.
        max: usize,
    },
}

impl Cell {
    /// The cell containing `point` at `resolution`.
    ///
    /// A point exactly on an edge belongs to one of the two cells, as H3 decides.
    ///
    /// # Errors
    /// [`ResolutionError`] for a resolution above 15.
    pub fn of(point: Point, resolution: u8) -> Result<Self, ResolutionError> {
        Ok(Self::at(point, resolution_of(resolution)?))
    }

    fn at(point: Point, resolution: Resolution) -> Self {
        // A `Point` is always finite, the only thing `LatLng::new` checks.
        let ll = LatLng::new(point.lat(), point.lon()).expect("a Point is finite");
        Self(ll.to_cell(resolution))
    }

    /// The cell with this 64-bit H3 index.
    ///
    /// # Errors
    /// [`ParseCellError::NotACell`].
    pub fn from_raw(raw: u64) -> Result<Self, ParseCellError> {
        CellIndex::try_from(raw).map(Self).map_err(|_| ParseCellError::NotACell { raw })
    }

    /// The 64-bit H3 index.
    #[must_use]
    pub fn raw(self) -> u64 {
        u64::from(self.0)
    }

    /// The resolution, `0..=15`.
    #[must_use]
    pub fn resolution(self) -> u8 {
        u8::from(self.0.resolution())
    }

    /// Whether this is one of the twelve pentagons of its resolution (five
    /// neighbours, six children).
    #[must_use]
    pub fn is_pentagon(self) -> bool {
        self.0.is_pentagon()
    }

    /// The cell's centre.
    #[must_use]
    pub fn center(self) -> Point {
        point_of(LatLng::from(self.0))
    }

    /// The boundary's vertices, counter-clockwise: six for a hexagon, five for a
    /// pentagon, and at odd resolutions one more wherever an edge crosses an edge of
    /// H3's icosahedron (up to ten). Consecutive vertices are joined by great-circle
    /// arcs.
    #[must_use]
    pub fn boundary(self) -> Vec<Point> {
        self.0.boundary().iter().map(|&ll| point_of(ll)).collect()
    }

    /// This cell's area in square metres.
    #[must_use]
    pub fn area_m2(self) -> f64 {
        self.0.area_rads2() * EARTH_RADIUS_M * EARTH_RADIUS_M
    }

    /// The ancestor at `resolution` (the cell itself at its own resolution).
    ///
    /// # Errors
    /// [`HierarchyError::Resolution`] or [`HierarchyError::NotCoarser`].
    pub fn parent(self, resolution: u8) -> Result<Self, HierarchyError> {
        let res = resolution_of(resolution)?;
        self.0
            .parent(res)
            .map(Self)
            .ok_or(HierarchyError::NotCoarser { cell: self.resolution(), asked: resolution })
    }

    /// The descendants at `resolution`, sorted: 7ⁿ for a hexagon `n` levels down
    /// (fewer for a pentagon), at most [`CHILDREN_MAX`].
    ///
    /// # Errors
    /// [`HierarchyError::Resolution`], [`HierarchyError::NotFiner`] or
    /// [`HierarchyError::TooMany`].
    pub fn children(self, resolution: u8) -> Result<Vec<Self>, HierarchyError> {
        let res = resolution_of(resolution)?;
        if resolution < self.resolution() {
            return Err(HierarchyError::NotFiner { cell: self.resolution(), asked: resolution });
        }
        let count = self.0.children_count(res);
        if count > CHILDREN_MAX {
            return Err(HierarchyError::TooMany { count, max: CHILDREN_MAX });
        }
        let mut children: Vec<Self> = self.0.children(res).map(Self).collect();
        children.sort_unstable();
        Ok(children)
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.raw())
    }
}

impl fmt::Debug for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cell({self})")
    }
}

impl FromStr for Cell {
    type Err = ParseCellError;

    /// Parses H3's hexadecimal string, in either case. Stricter than
    /// `u64::from_str_radix`: a sign, a `0x` prefix or spaces are refused, so one cell
    /// has one spelling up to case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = (1..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex {
            return Err(ParseCellError::NotHex { len: s.len() });
        }
        let raw =
            u64::from_str_radix(s, 16).map_err(|_| ParseCellError::NotHex { len: s.len() })?;
        Self::from_raw(raw)
    }
}

/// The mean edge length of a hexagon at `resolution`, in metres (pentagons
/// excluded): about 1,281 km at 0, 201 m at 9, 0.58 m at 15.
///
/// # Errors
/// [`ResolutionError`].
pub fn mean_edge_m(resolution: u8) -> Result<f64, ResolutionError> {
    Ok(resolution_of(resolution)?.edge_length_rads() * EARTH_RADIUS_M)
}

/// The mean area of a hexagon at `resolution`, in square metres (pentagons
/// excluded): about 4.36 million km² at 0, 0.105 km² at 9, 0.9 m² at 15.
///
/// # Errors
/// [`ResolutionError`].
pub fn mean_area_m2(resolution: u8) -> Result<f64, ResolutionError> {
    Ok(resolution_of(resolution)?.area_rads2() * EARTH_RADIUS_M * EARTH_RADIUS_M)
}

/// The twelve pentagons at `resolution`, sorted.
///
/// # Errors
/// [`ResolutionError`].
pub fn pentagons(resolution: u8) -> Result<Vec<Cell>, ResolutionError> {
    let mut cells: Vec<Cell> = resolution_of(resolution)?.pentagons().map(Cell).collect();
    cells.sort_unstable();
    Ok(cells)
}

/// The cells within `k` steps of `cell` (its grid disk): the cell, then ring 1, ring 2,
/// …, each ring sorted. `3k(k+1)+1` cells away from pentagons, fewer near one (and
/// at coarse resolutions, where the disk wraps around the globe).
///
/// # Errors
/// [`RingError::TooLarge`] for `k` above [`K_RING_MAX`].
pub fn k_ring(cell: Cell, k: u32) -> Result<Vec<Cell>, RingError> {
    if k > K_RING_MAX {
        return Err(RingError::TooLarge { k });
    }
    let mut disk: Vec<(CellIndex, u32)> = cell.0.grid_disk_distances(k);
    disk.sort_unstable_by_key(|&(c, d)| (d, c));
    Ok(disk.into_iter().map(|(c, _)| Cell(c)).collect())
}

/// Every cell at `resolution` that intersects the circle of `radius_m` around
/// `center` (distances as [`crate::distance::haversine_m`] measures them), sorted;
/// so every point within the radius lies in one of them.
///
/// **Rule.** Start from the centre's cell; look at its neighbours; keep a neighbour
/// when the nearest point of its boundary is within `radius_m` (plus
/// [`COVER_MARGIN_RAD`]); look at the neighbours of every kept cell in turn, until
/// none is new.
///
/// **Why no intersecting cell is missed.** Take a point `q` within the radius, in
/// cell `X`. Along the shortest arc from the centre to `q` the distance from the
/// centre only grows, so the whole arc is within the radius. If `X` is the centre's
/// cell it is kept. Otherwise the arc enters `X` at a boundary point no farther than
/// `q`, so `X` passes the test; every cell the arc crosses before it contains a point
/// of the arc and passes likewise; and consecutive cells on the arc share an edge or
/// a vertex, which in H3 makes them neighbours (each vertex joins three cells, all
/// adjacent). So the walk reaches `X`. The boundary test is exact geometry: H3's edges
/// are straight in the gnomonic projection of an icosahedron face, which maps great
/// circles to straight lines, so each edge is a great-circle arc, split where it
/// crosses a face (the extra vertices of [`Cell::boundary`]).
///
/// **Extra cells.** Only cells whose boundary comes within the margin (about 6 mm)
/// of the circle without entering it.
///
/// `max_cells` bounds the work: the walk looks at most at seven cells per kept cell
/// and stops as soon as it would keep more than `max_cells`.
///
/// # Errors
/// [`CoverError::Resolution`], [`CoverError::Radius`] (negative, NaN, infinite or
/// above [`COVER_RADIUS_M_MAX`]), or [`CoverError::TooManyCells`].
pub fn cover_radius(
    center: Point,
    radius_m: f64,
    resolution: u8,
    max_cells: usize,
) -> Result<Vec<Cell>, CoverError> {
    let res = resolution_of(resolution)?;
    if !(radius_m.is_finite() && (0.0..=COVER_RADIUS_M_MAX).contains(&radius_m)) {
        return Err(CoverError::Radius { radius_m });
    }
    let too_many = CoverError::TooManyCells { max: max_cells };
    let reach_rad = radius_m / EARTH_RADIUS_M + COVER_MARGIN_RAD;
    let c = unit(center.lat(), center.lon());

    let start = Cell::at(center, res);
    let mut kept = vec![start];
    if kept.len() > max_cells {
        return Err(too_many);
    }
    let mut seen: HashSet<CellIndex> = HashSet::from([start.0]);
    let mut frontier = VecDeque::from([start.0]);
    while let Some(cell) = frontier.pop_front() {
        for next in cell.grid_disk::<Vec<_>>(1) {
            if !seen.insert(next) || boundary_distance_rad(c, next) > reach_rad {
                continue;
            }
            kept.push(Cell(next));
            if kept.len() > max_cells {
                return Err(too_many);
            }
            frontier.push_back(next);
        }
    }
    kept.sort_unstable();
    Ok(kept)
}

/// The fewest cells covering exactly the same area as `cells` (all at one
/// resolution): every complete set of siblings is replaced by its parent,
/// recursively. Sorted.
///
/// # Errors
/// [`CompactError::MixedResolutions`] or [`CompactError::Duplicate`].
pub fn compact(cells: &[Cell]) -> Result<Vec<Cell>, CompactError> {
    let Some(first) = cells.first() else {
        return Ok(Vec::new());
    };
    if let Some(other) = cells.iter().find(|c| c.resolution() != first.resolution()) {
        return Err(CompactError::MixedResolutions {
            first: first.resolution(),
            other: other.resolution(),
        });
    }
    let mut indexes: Vec<CellIndex> = cells.iter().map(|c| c.0).collect();
    indexes.sort_unstable();
    if let Some(pair) = indexes.windows(2).find(|w| w[0] == w[1]) {
        return Err(CompactError::Duplicate { cell: Cell(pair[0]) });
    }
    // Checked above: one resolution and no duplicates, the only two refusals.
    CellIndex::compact(&mut indexes).expect("one resolution, no duplicates");
    let mut out: Vec<Cell> = indexes.into_iter().map(Cell).collect();
    out.sort_unstable();
    Ok(out)
}

/// The cells at `resolution` covering `cells` (which may mix coarser resolutions),
/// sorted; at most `max_cells`.
///
/// # Errors
/// [`HierarchyError::Resolution`], [`HierarchyError::NotFiner`] for a cell finer
/// than `resolution`, or [`HierarchyError::TooMany`].
pub fn uncompact(
    cells: &[Cell],
    resolution: u8,
    max_cells: usize,
) -> Result<Vec<Cell>, HierarchyError> {
    let res = resolution_of(resolution)?;
    let mut count: u64 = 0;
    for cell in cells {
        if cell.resolution() > resolution {
            return Err(HierarchyError::NotFiner { cell: cell.resolution(), asked: resolution });
        }
        count = count.saturating_add(cell.0.children_count(res));
    }
    let max = u64::try_from(max_cells).unwrap_or(u64::MAX);
    if count > max {
        return Err(HierarchyError::TooMany { count, max });
    }
    let mut out: Vec<Cell> = cells.iter().flat_map(|c| c.0.children(res)).map(Cell).collect();
    out.sort_unstable();
    Ok(out)
}

/// How many points fall in each cell at one resolution: drivers for supply, ride
/// requests for demand. Holds at most a configured number of distinct cells.
///
/// Counts saturate at `u64::MAX` rather than wrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellCounts {
    resolution: u8,
    cells_max: usize,
    counts: BTreeMap<Cell, u64>,
}

/// Demand and supply in one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellRatio {
    /// The cell.
    pub cell: Cell,
    /// Its demand count.
    pub demand: u64,
    /// Its supply count.
    pub supply: u64,
}

impl CellRatio {
    /// Demand over supply: `0.0` without demand, `None` for demand without any
    /// supply (unbounded: the caller caps its surge there).
    #[must_use]
    pub fn ratio(&self) -> Option<f64> {
        match (self.demand, self.supply) {
            (0, _) => Some(0.0),
            (_, 0) => None,
            // u64 to f64 rounds only above 2^53 points, far past any real count.
            (d, s) => Some(d as f64 / s as f64),
        }
    }
}

impl CellCounts {
    /// Empty counts at `resolution`, holding at most `cells_max` distinct cells.
    ///
    /// # Errors
    /// [`ResolutionError`].
    pub fn new(resolution: u8, cells_max: usize) -> Result<Self, ResolutionError> {
        resolution_of(resolution)?;
        Ok(Self { resolution, cells_max, counts: BTreeMap::new() })
    }

    /// The resolution counted at.
    #[must_use]
    pub fn resolution(&self) -> u8 {
        self.resolution
    }

    /// How many distinct cells hold a count.
    #[must_use]
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether nothing was counted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The count in `cell` (0 if none, or if `cell` is at another resolution).
    #[must_use]
    pub fn get(&self, cell: Cell) -> u64 {
        self.counts.get(&cell).copied().unwrap_or(0)
    }

    /// The sum over all cells.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.counts.values().fold(0, |sum, &n| sum.saturating_add(n))
    }

    /// Every cell with its count, in cell order.
    pub fn iter(&self) -> impl Iterator<Item = (Cell, u64)> + '_ {
        self.counts.iter().map(|(&c, &n)| (c, n))
    }

    /// Counts one point; returns its cell.
    ///
    /// # Errors
    /// [`CountsError::Full`] if its cell is new and the counts hold their maximum.
    pub fn add(&mut self, point: Point) -> Result<Cell, CountsError> {
        let res = resolution_of(self.resolution).expect("validated in new");
        let cell = Cell::at(point, res);
        self.add_cell(cell, 1)?;
        Ok(cell)
    }

    /// Adds `n` to `cell`'s count.
    ///
    /// # Errors
    /// [`CountsError::WrongResolution`], or [`CountsError::Full`] if `cell` is new
    /// and the counts hold their maximum.
    pub fn add_cell(&mut self, cell: Cell, n: u64) -> Result<(), CountsError> {
        self.check_resolution(cell.resolution())?;
        if let Some(count) = self.counts.get_mut(&cell) {
            *count = count.saturating_add(n);
            return Ok(());
        }
        if self.counts.len() >= self.cells_max {
            return Err(CountsError::Full { max: self.cells_max });
        }
        self.counts.insert(cell, n);
        Ok(())
    }

    /// Adds every count of `other` (counts from another instance or another
    /// minute), all or nothing.
    ///
    /// # Errors
    /// [`CountsError::WrongResolution`] or [`CountsError::Full`]; nothing was added.
    pub fn merge(&mut self, other: &Self) -> Result<(), CountsError> {
        self.check_resolution(other.resolution)?;
        let new_cells = other.counts.keys().filter(|c| !self.counts.contains_key(c)).count();
        if self.counts.len() + new_cells > self.cells_max {
            return Err(CountsError::Full { max: self.cells_max });
        }
        for (&cell, &n) in &other.counts {
            let count = self.counts.entry(cell).or_insert(0);
            *count = count.saturating_add(n);
        }
        Ok(())
    }

    fn check_resolution(&self, got: u8) -> Result<(), CountsError> {
        if got != self.resolution {
            return Err(CountsError::WrongResolution { got, expected: self.resolution });
        }
        Ok(())
    }
}

/// Demand and supply in every cell of `zone` (a surge area, e.g. a
/// [`cover_radius`] covering), one row per distinct zone cell, in cell order.
///
/// # Errors
/// [`CountsError::WrongResolution`] if `supply` or a zone cell is not at `demand`'s
/// resolution.
pub fn demand_over_supply(
    demand: &CellCounts,
    supply: &CellCounts,
    zone: &[Cell],
) -> Result<Vec<CellRatio>, CountsError> {
    demand.check_resolution(supply.resolution)?;
    for cell in zone {
        demand.check_resolution(cell.resolution())?;
    }
    let mut cells = zone.to_vec();
    cells.sort_unstable();
    cells.dedup();
    Ok(cells
        .into_iter()
        .map(|cell| CellRatio { cell, demand: demand.get(cell), supply: supply.get(cell) })
        .collect())
}

fn resolution_of(resolution: u8) -> Result<Resolution, ResolutionError> {
    Resolution::try_from(resolution).map_err(|_| ResolutionError { resolution })
}

/// A point from h3o's coordinates, which are in range up to rounding.
fn point_of(ll: LatLng) -> Point {
    let lat = ll.lat().clamp(-90.0, 90.0);
    let lon = ll.lng();
    debug_assert!(lon.abs() <= 180.0 + 1e-9, "lng {lon}");
    Point::trusted(lat, lon.clamp(-180.0, 180.0))
}

type Vec3 = [f64; 3];

fn unit(lat_deg: f64, lon_deg: f64) -> Vec3 {
    unit_rad(lat_deg.to_radians(), lon_deg.to_radians())
}

fn unit_rad(lat: f64, lon: f64) -> Vec3 {
    let (sin_lat, cos_lat) = lat.sin_cos();
    let (sin_lon, cos_lon) = lon.sin_cos();
    [cos_lat * cos_lon, cos_lat * sin_lon, sin_lat]
}

fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

/// The angle between two unit vectors; `atan2` keeps it accurate near 0 and π,
/// where `acos` of the dot product loses half its digits.
fn angle(a: Vec3, b: Vec3) -> f64 {
    norm(cross(a, b)).atan2(dot(a, b))
}

/// The angle from `c` to the nearest point of the shorter great-circle arc `a`–`b`.
fn arc_distance_rad(c: Vec3, a: Vec3, b: Vec3) -> f64 {
    let n = cross(a, b);
    let n_len = norm(n);
    if n_len < 1e-15 {
        // A degenerate arc: its ends coincide (to f64).
        return angle(c, a).min(angle(c, b));
    }
    let n = [n[0] / n_len, n[1] / n_len, n[2] / n_len];
    let off_plane = dot(c, n);
    // `c`'s foot on the arc's great circle (unnormalised). Along the circle the
    // distance from `c` grows away from the foot, so the arc's nearest point is the
    // foot if the arc holds it, else the nearer end.
    let foot = [c[0] - off_plane * n[0], c[1] - off_plane * n[1], c[2] - off_plane * n[2]];
    if dot(cross(a, foot), n) >= 0.0 && dot(cross(foot, b), n) >= 0.0 {
        off_plane.abs().atan2(norm(foot))
    } else {
        angle(c, a).min(angle(c, b))
    }
}

/// The angle from `c` to the nearest point of `cell`'s boundary.
fn boundary_distance_rad(c: Vec3, cell: CellIndex) -> f64 {
    let boundary = cell.boundary();
    let vertices: Vec<Vec3> =
        boundary.iter().map(|ll| unit_rad(ll.lat_radians(), ll.lng_radians())).collect();
    let n = vertices.len();
    (0..n)
        .map(|i| arc_distance_rad(c, vertices[i], vertices[(i + 1) % n]))
        .fold(f64::INFINITY, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::haversine_m;

    fn p(lat: f64, lon: f64) -> Point {
        Point::new(lat, lon).unwrap()
    }

    /// `Cell::of` against an expected hex string.
    fn check_of(lat: f64, lon: f64, resolution: u8, want: &str) {
        let got = Cell::of(p(lat, lon), resolution).unwrap();
        assert_eq!(got.to_string(), want, "({lat}, {lon}) at {resolution}");
        assert_eq!(got.resolution(), resolution);
        assert_eq!(want.parse::<Cell>(), Ok(got));
    }

    #[test]
    fn known_cells() {
        // Published examples. H3's JavaScript README:
        // latLngToCell(37.3615593, -122.0553238, 7) = "87283472bffffff".
        check_of(37.361_559_3, -122.055_323_8, 7, "87283472bffffff");
        // Snowflake's H3_LATLNG_TO_CELL_STRING: the Brandenburg Gate at 8 is
        // 881F1D4887FFFFF, as an integer 613036919424548863.
        check_of(52.516_262, 13.377_704, 8, "881f1d4887fffff");
        assert_eq!(Cell::of(p(52.516_262, 13.377_704), 8).unwrap().raw(), 613_036_919_424_548_863);
        // Databricks' h3_longlatash3: (lon 100, lat 45) at 6 is 604116085645508607; the
        // Golden Gate Bridge (lon -122.4783, lat 37.8199) at 13 is 635714569676958015.
        assert_eq!(Cell::of(p(45.0, 100.0), 6).unwrap().raw(), 604_116_085_645_508_607);
        assert_eq!(Cell::of(p(37.8199, -122.4783), 13).unwrap().raw(), 635_714_569_676_958_015);
        // Databricks' h3_h3tostring and Snowflake's H3_INT_TO_STRING.
        assert_eq!(Cell::from_raw(599_686_042_433_355_775).unwrap().to_string(), "85283473fffffff");
        assert_eq!("89283087033FFFF".parse::<Cell>().unwrap().raw(), 617_700_171_168_612_351);

        // Regression values computed with h3o: poles, the antimeridian, null island.
        check_of(90.0, 0.0, 0, "8001fffffffffff");
        check_of(-90.0, 0.0, 5, "85f29383fffffff");
        check_of(0.0, 180.0, 9, "897eb57221bffff");
        check_of(0.0, -180.0, 9, "897eb57221bffff");
        check_of(0.0, 0.0, 15, "8f754e64992d6d8");
    }

    #[test]
    fn center_and_boundary() {
        // H3's JavaScript README: the centre of 87283472bffffff.
        let cell: Cell = "87283472bffffff".parse().unwrap();
        let c = cell.center();
        assert!((c.lat() - 37.351_718_201_832_72).abs() < 1e-9, "{c:?}");
        assert!((c.lon() - -122.050_325_652_639_46).abs() < 1e-9, "{c:?}");
        assert_eq!(Cell::of(c, 7), Ok(cell));
        let boundary = cell.boundary();
        assert_eq!(boundary.len(), 6);
        // A hexagon's vertices sit about one edge length from its centre.
        let edge = mean_edge_m(7).unwrap();
        for v in &boundary {
            let d = haversine_m(c, *v);
            assert!((0.8 * edge..1.2 * edge).contains(&d), "{d} m vs edge {edge} m");
        }
    }

    #[test]
    fn means_per_resolution() {
        // H3's table (on its 6,371,007.2 m sphere): 1281.256 km, 200.786 m, 0.584 m;
        // here on Redis's sphere, 0.03% longer.
        let scale = EARTH_RADIUS_M / 6_371_007.180_918_475;
        for (res, h3_edge_m) in [(0, 1_281_256.011), (9, 200.786_148), (15, 0.584_169)] {
            let got = mean_edge_m(res).unwrap();
            assert!((got / (h3_edge_m * scale) - 1.0).abs() < 1e-6, "{res}: {got}");
        }
        let area9 = mean_area_m2(9).unwrap();
        assert!((area9 / (105_332.513_4 * scale * scale) - 1.0).abs() < 1e-6, "{area9}");
        assert_eq!(mean_edge_m(16), Err(ResolutionError { resolution: 16 }));
        assert_eq!(mean_area_m2(255), Err(ResolutionError { resolution: 255 }));
    }

    #[test]
    fn hierarchy() {
        let cell = Cell::of(p(37.775, -122.418), 9).unwrap();
        let parent = cell.parent(7).unwrap();
        assert_eq!(parent.resolution(), 7);
        assert_eq!(cell.parent(9), Ok(cell));
        assert_eq!(cell.parent(10), Err(HierarchyError::NotCoarser { cell: 9, asked: 10 }));
        assert_eq!(cell.parent(16), Err(ResolutionError { resolution: 16 }.into()));

        let children = parent.children(9).unwrap();
        assert_eq!(children.len(), 49);
        assert!(children.contains(&cell));
        assert!(children.iter().all(|c| c.parent(7) == Ok(parent)));
        assert_eq!(parent.children(6), Err(HierarchyError::NotFiner { cell: 7, asked: 6 }));
        assert_eq!(
            parent.children(13),
            Err(HierarchyError::TooMany { count: 117_649, max: CHILDREN_MAX })
        );
        assert_eq!(parent.children(12).unwrap().len(), 16_807);

        // A pentagon has six children, five of them pentagons' neighbours.
        let pentagon = pentagons(0).unwrap()[0];
        assert!(pentagon.is_pentagon(), "{pentagon}");
        assert_eq!(pentagons(5).unwrap().len(), 12);
        assert!(pentagons(5).unwrap().iter().all(|c| c.is_pentagon() && c.resolution() == 5));
        assert_eq!(pentagons(16), Err(ResolutionError { resolution: 16 }));
        assert_eq!(pentagon.children(1).unwrap().len(), 6);
        assert!(pentagon.area_m2() < mean_area_m2(0).unwrap());
    }

    #[test]
    fn parse_refusals() {
        let not_hex = |s: &str| {
            assert_eq!(s.parse::<Cell>(), Err(ParseCellError::NotHex { len: s.len() }), "{s:?}")
        };
        for s in [
            "",
            "0x8928308280fffff",
            "+8928308280fffff",
            " 8928308280fffff",
            "8928308280fffff ",
            "89283082g0fffff",
            "8928308280fffff00",
            "é",
        ] {
            not_hex(s);
        }
        let not_cell = |s: &str, raw: u64| {
            assert_eq!(s.parse::<Cell>(), Err(ParseCellError::NotACell { raw }), "{s:?}")
        };
        not_cell("0", 0);
        not_cell("ffffffffffffffff", u64::MAX);
        // A directed edge (mode 2), not a cell.
        not_cell("1128308280fffff", 0x0112_8308_280f_ffff);
        // Resolution 9 with a digit 7 (unused) inside the first nine.
        not_cell("8928308287fffff", 0x0892_8308_287f_ffff);
        assert_eq!(Cell::from_raw(7), Err(ParseCellError::NotACell { raw: 7 }));
        // Display and parse round-trip; parsing ignores case.
        let cell = Cell::of(p(-33.86, 151.21), 11).unwrap();
        assert_eq!(cell.to_string().parse::<Cell>(), Ok(cell));
        assert_eq!(cell.to_string().to_uppercase().parse::<Cell>(), Ok(cell));
        assert_eq!(format!("{cell:?}"), format!("Cell({cell})"));
    }

    #[test]
    fn rings() {
        let cell = Cell::of(p(40.7128, -74.006), 8).unwrap();
        for (k, want) in [(0, 1), (1, 7), (2, 19), (10, 331)] {
            let disk = k_ring(cell, k).unwrap();
            assert_eq!(disk.len(), want, "k {k}");
            assert_eq!(disk[0], cell);
            let distinct: HashSet<_> = disk.iter().collect();
            assert_eq!(distinct.len(), disk.len());
        }
        assert_eq!(k_ring(cell, K_RING_MAX).unwrap().len(), 30_301);
        assert_eq!(k_ring(cell, K_RING_MAX + 1), Err(RingError::TooLarge { k: 101 }));
        assert_eq!(k_ring(cell, u32::MAX), Err(RingError::TooLarge { k: u32::MAX }));
        // A pentagon has five neighbours; at resolution 0 the disk wraps the globe.
        let pentagon = pentagons(0).unwrap()[0];
        assert_eq!(k_ring(pentagon, 1).unwrap().len(), 6);
        assert_eq!(k_ring(pentagon, K_RING_MAX).unwrap().len(), 122);
    }

    #[test]
    fn cover_refusals() {
        let c = p(51.5, -0.12);
        assert_eq!(cover_radius(c, 100.0, 16, 100), Err(ResolutionError { resolution: 16 }.into()));
        for radius_m in [
            -1.0,
            -0.0 - f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            COVER_RADIUS_M_MAX * 1.000_001,
            1e300,
        ] {
            match cover_radius(c, radius_m, 9, 100) {
                Err(CoverError::Radius { radius_m: got }) => {
                    assert!(got.to_bits() == radius_m.to_bits())
                }
                other => panic!("{radius_m}: {other:?}"),
            }
        }
        assert_eq!(cover_radius(c, 5_000.0, 9, 100), Err(CoverError::TooManyCells { max: 100 }));
        assert_eq!(cover_radius(c, 0.0, 9, 0), Err(CoverError::TooManyCells { max: 0 }));
        // The whole sphere at resolution 0: all 122 cells.
        assert_eq!(cover_radius(c, COVER_RADIUS_M_MAX, 0, 122).unwrap().len(), 122);
        assert_eq!(
            cover_radius(c, COVER_RADIUS_M_MAX, 0, 121),
            Err(CoverError::TooManyCells { max: 121 })
        );
    }

    #[test]
    fn cover_sizes() {
        // A radius of zero is the centre's cell alone (away from its edges).
        let cell = Cell::of(p(48.8566, 2.3522), 9).unwrap();
        assert_eq!(cover_radius(cell.center(), 0.0, 9, 10), Ok(vec![cell]));
        // A circle of one edge length around a centre reaches the six neighbours and
        // no farther; 5 km at resolution 9 is about the circle's area in cells, plus
        // the rim.
        let edge = mean_edge_m(9).unwrap();
        let mut ring1 = k_ring(cell, 1).unwrap();
        ring1.sort_unstable();
        assert_eq!(cover_radius(cell.center(), edge, 9, 100), Ok(ring1));
        let cells = cover_radius(cell.center(), 5_000.0, 9, 10_000).unwrap();
        let circle_m2 = std::f64::consts::PI * 5_000.0 * 5_000.0;
        let in_circle = circle_m2 / mean_area_m2(9).unwrap();
        let n = cells.len() as f64;
        assert!((in_circle..in_circle * 1.25).contains(&n), "{n} cells for {in_circle} in area");
    }

    #[test]
    fn compaction() {
        let parent = Cell::of(p(35.68, 139.69), 6).unwrap();
        let mut cells = parent.children(8).unwrap();
        let outsider = k_ring(parent, 1).unwrap()[1].children(8).unwrap()[0];
        cells.push(outsider);
        let mut want = vec![parent, outsider];
        want.sort_unstable();
        assert_eq!(compact(&cells), Ok(want.clone()));
        let mut round = uncompact(&want, 8, 50).unwrap();
        round.retain(|c| *c != outsider);
        assert_eq!(round, parent.children(8).unwrap());
        assert_eq!(compact(&[]), Ok(Vec::new()));
        assert_eq!(
            compact(&[parent, outsider]),
            Err(CompactError::MixedResolutions { first: 6, other: 8 })
        );
        assert_eq!(compact(&[outsider, outsider]), Err(CompactError::Duplicate { cell: outsider }));
        assert_eq!(uncompact(&want, 8, 49), Err(HierarchyError::TooMany { count: 50, max: 49 }));
        assert_eq!(uncompact(&want, 7, 100), Err(HierarchyError::NotFiner { cell: 8, asked: 7 }));
        assert_eq!(uncompact(&want, 16, 100), Err(ResolutionError { resolution: 16 }.into()));
    }

    #[test]
    fn counts() {
        let a = p(37.7749, -122.4194);
        let b = p(37.8044, -122.2712);
        let mut demand = CellCounts::new(8, 2).unwrap();
        let cell_a = demand.add(a).unwrap();
        demand.add(a).unwrap();
        let cell_b = demand.add(b).unwrap();
        assert_ne!(cell_a, cell_b);
        assert_eq!(
            (demand.get(cell_a), demand.get(cell_b), demand.total(), demand.len()),
            (2, 1, 3, 2)
        );
        // Full: a third distinct cell is refused, existing cells still count.
        let far = p(40.7, -74.0);
        assert_eq!(demand.add(far), Err(CountsError::Full { max: 2 }));
        demand.add_cell(cell_a, u64::MAX).unwrap();
        assert_eq!(demand.get(cell_a), u64::MAX);
        let coarse = Cell::of(a, 7).unwrap();
        assert_eq!(
            demand.add_cell(coarse, 1),
            Err(CountsError::WrongResolution { got: 7, expected: 8 })
        );

        let mut supply = CellCounts::new(8, 10).unwrap();
        supply.add_cell(cell_a, 4).unwrap();
        supply.add(far).unwrap();
        let mut other = CellCounts::new(8, 10).unwrap();
        other.add(a).unwrap();
        supply.merge(&other).unwrap();
        assert_eq!(supply.get(cell_a), 5);
        assert_eq!(supply.iter().count(), 2);

        // Merge is all or nothing.
        let mut small = CellCounts::new(8, 1).unwrap();
        small.add(b).unwrap();
        let before = small.clone();
        assert_eq!(small.merge(&supply), Err(CountsError::Full { max: 1 }));
        assert_eq!(small, before);
        assert_eq!(
            small.merge(&CellCounts::new(9, 1).unwrap()),
            Err(CountsError::WrongResolution { got: 9, expected: 8 })
        );
        assert_eq!(CellCounts::new(16, 1), Err(ResolutionError { resolution: 16 }));

        let mut demand = CellCounts::new(8, 10).unwrap();
        for _ in 0..10 {
            demand.add(a).unwrap();
        }
        demand.add(b).unwrap();
        let quiet = k_ring(cell_a, 1).unwrap()[3];
        let rows = demand_over_supply(&demand, &supply, &[cell_b, cell_a, quiet, cell_a]).unwrap();
        let mut want = vec![
            CellRatio { cell: cell_a, demand: 10, supply: 5 },
            CellRatio { cell: cell_b, demand: 1, supply: 0 },
            CellRatio { cell: quiet, demand: 0, supply: 0 },
        ];
        want.sort_unstable_by_key(|r| r.cell);
        assert_eq!(rows, want);
        let ratios: Vec<_> = rows.iter().map(|r| (r.cell, r.ratio())).collect();
        assert!(ratios.contains(&(cell_a, Some(2.0))));
        assert!(ratios.contains(&(cell_b, None)));
        assert!(ratios.contains(&(quiet, Some(0.0))));
        assert_eq!(
            demand_over_supply(&demand, &supply, &[coarse]),
            Err(CountsError::WrongResolution { got: 7, expected: 8 })
        );
        let supply9 = CellCounts::new(9, 1).unwrap();
        assert_eq!(
            demand_over_supply(&demand, &supply9, &[]),
            Err(CountsError::WrongResolution { got: 9, expected: 8 })
        );
    }

    #[test]
    fn arc_distance() {
        let a = unit(0.0, 0.0);
        let b = unit(0.0, 10.0);
        let deg = 1f64.to_radians();
        // Above the arc's middle: straight down to it. Beyond an end: to that end.
        assert!((arc_distance_rad(unit(5.0, 5.0), a, b) - 5.0 * deg).abs() < 1e-12);
        assert!((arc_distance_rad(unit(0.0, 15.0), a, b) - 5.0 * deg).abs() < 1e-12);
        assert!((arc_distance_rad(unit(0.0, -3.0), a, b) - 3.0 * deg).abs() < 1e-12);
        // The far side of the sphere: the ends, not the antipode of the foot.
        assert!((arc_distance_rad(unit(0.0, -175.0), a, b) - 175.0 * deg).abs() < 1e-12);
        assert!(arc_distance_rad(unit(0.0, 5.0), a, b) < 1e-15);
        assert!((arc_distance_rad(unit(1.0, 1.0), a, a) - angle(unit(1.0, 1.0), a)).abs() < 1e-15);
    }
}
