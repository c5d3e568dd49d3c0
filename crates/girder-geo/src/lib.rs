//! Geospatial patterns: "Geohashing for Proximity Search", "Redis Geospatial
//! Indexes" and "S2 Geometry for Precise Coverage" (here with H3 cells) made real.
//!
//! - [`point`]: validated WGS84 points; NaN, infinities and out-of-range degrees are
//!   typed errors.
//! - [`distance`]: haversine on Redis's sphere, with its error stated.
//! - [`cells`]: H3 cells, grid disks, circle coverings that miss no point, per-cell counts.
//! - [`fence`]: geofences (circle, box, polygon, roaming) with enter/inside/exit, crossings
//!   between fixes included.
//!
//! The core is pure: no async runtime, no I/O. The Redis backend of the index sits
//! behind the `redis` feature.

pub mod cells;
pub mod distance;
pub mod fence;
pub mod point;

pub use point::{CoordError, INDEX_LAT_MAX, Point};
