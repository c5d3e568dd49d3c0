//! Geospatial patterns: "Geohashing for Proximity Search", "Redis Geospatial
//! Indexes" and "S2 Geometry for Precise Coverage" (here with H3 cells) made real.
//!
//! - [`point`]: validated WGS84 points; NaN, infinities and out-of-range degrees are
//!   typed errors.
//! - [`distance`]: haversine on Redis's sphere, with its error stated.
//! - [`geohash`]: geohash strings (encode, decode, neighbours across the antimeridian
//!   and up to the poles), Redis's 52-bit scores bit for bit, and circle and box
//!   coverings that miss no point.
//! - [`index`]: the radius and box index with `GEOSEARCH` semantics — in process
//!   ([`MemoryGeoIndex`]) or on a Redis sorted set ([`RedisGeoIndex`], feature
//!   `redis`) — for members that move and expire.
//! - [`cells`]: H3 cells, grid disks, circle coverings that miss no point, per-cell counts.
//! - [`fence`]: geofences (circle, box, polygon, roaming) with enter/inside/exit, crossings
//!   between fixes included.
//!
//! The core is pure: no async runtime, no I/O. The Redis backend of the index sits
//! behind the `redis` feature.

pub mod cells;
pub mod distance;
pub mod fence;
pub mod geohash;
pub mod index;
pub mod point;

pub use geohash::{Geohash, Score};
pub use index::{GeoError, GeoIndex, MemoryGeoIndex, MemoryIndexConfig, Search};
#[cfg(feature = "redis")]
pub use index::{RedisGeoIndex, RedisIndexConfig};
pub use point::{CoordError, INDEX_LAT_MAX, Point};
