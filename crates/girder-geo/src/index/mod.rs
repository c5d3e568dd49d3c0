//! A radius and box index over moving members ("Pattern: Redis Geospatial Indexes").
//!
//! **Contract.** [`GeoIndex`] is one named set of members, each at one [`Point`]:
//! upserted in batches, removed, looked up, and searched by radius or box around a
//! point or a member, with Redis's `GEOSEARCH` semantics so the in-process backend
//! and the Redis backend give the same answers on the same data:
//!
//! - A member's position is stored as Redis stores it, a 52-bit geohash score
//!   ([`crate::geohash::Score`]), and reported as that cell's centre: up to about
//!   0.3 m from the point given at the equator, less elsewhere.
//! - A search measures from the centre given (or from the centre member's stored
//!   position) to each member's stored position with [`crate::distance::haversine_m`];
//!   a member is in a radius when its distance is `<= radius_m`, and in a box when its
//!   north–south distance is `<= height_m / 2` and its east–west distance, measured
//!   along its own latitude, is `<= width_m / 2` (both as Redis does).
//! - Without an order the hits come in no particular order. A `count` without `any`
//!   and without an order implies [`Order::Asc`] (the nearest `count`), as in Redis;
//!   with `any` the search stops at the first `count` hits found, then sorts those if
//!   an order was asked for. Equal distances are broken by member name, ascending, in
//!   both orders (Redis leaves ties in no defined order).
//! - Members may carry a time to live: past it they are not found, not counted and
//!   not searched, and their storage is reclaimed later. An upsert without a TTL
//!   clears the member's previous TTL. This is for moving objects that stop
//!   reporting: a driver whose phone dies drops out of the index on its own.
//!
//! - A member is live until its TTL's deadline: at `upsert time + ttl_ms` it is
//!   expired. Expired members are invisible at once; their storage is reclaimed
//!   later, a bounded amount per call.
//! - A search's centre must be indexable too ([`GeoError::InvalidCenter`]).
//!
//! A batch is validated whole before any of it is applied: one bad update refuses
//! the batch and changes nothing. Every bad input is a typed [`GeoError`].
//!
//! ```
//! use std::num::NonZeroUsize;
//!
//! use girder_geo::Point;
//! use girder_geo::index::{Center, MemoryGeoIndex, Search, Update};
//!
//! let drivers = MemoryGeoIndex::default();
//! let rider = Point::new(37.7749, -122.4194)?;
//! drivers.upsert_now(&[
//!     Update { member: "driver:1", point: rider, ttl_ms: Some(30_000) },
//!     Update { member: "driver:2", point: Point::new(37.7849, -122.4084)?, ttl_ms: Some(30_000) },
//! ])?;
//! let nearest = Search::radius(Center::At(rider), 5_000.0).limit(NonZeroUsize::new(10).unwrap());
//! let hits = drivers.search_now(&nearest)?;
//! assert_eq!(hits.iter().map(|h| &*h.member).collect::<Vec<_>>(), ["driver:1", "driver:2"]);
//! assert!((1_400.0..1_550.0).contains(&hits[1].dist_m));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Where Redis misses members** (and so [`RedisGeoIndex`], which searches with
//! `GEOSEARCH`; the in-process index finds them). Redis scans only nine cells around
//! the centre (`geohashCalculateAreasByShapeWGS84` in `geohash_helper.c`), and they
//! fall short in four ways, each shown against Redis 7.0 by
//! `tests/redis_equality.rs`, which also checks that these are the only differences:
//!
//! - *Edge members.* A member exactly on latitude 85.05112878 or longitude 180 gets
//!   step 2^26 on that axis, one past the grid (`geohashEncode` truncates an offset
//!   of exactly 1.0), so its score is 2^52 or more and no cell's range holds it. It
//!   is found only from a centre on the same edge.
//! - *Edge centres.* A search centred exactly on one of those edges starts from a
//!   cell outside the grid; moving it east or west wraps, but the other axis keeps its
//!   overflow bit, so most of the nine cells lie outside the grid too. From longitude
//!   180, nothing east of the antimeridian is found.
//! - *Past a pole.* When the area's bounding box reaches beyond ±90°,
//!   `geohashBoundingBox` divides by a negative cosine, the longitude bounds flip, and
//!   the cells it then drops as useless can be the ones holding members: from
//!   (85°, 0°) with a 600 km radius, Redis misses a member 97 km away. This happens
//!   for centres above about 84.4° and radii up to about 626 km (beyond that Redis
//!   scans the four cells of step 1, which is everything).
//! - *Wide boxes far north or south.* `geohashBoundingBox` sizes a box's longitudes
//!   as `w / 2 / (R cos φ)`, but the box test measures `w / 2` along a great circle,
//!   which reaches further in longitude; a member between the two can lie outside
//!   every cell scanned. Rare: it needs boxes thousands of kilometres wide.

mod deadlines;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
mod sorted;

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;

use thiserror::Error;

use crate::point::{CoordError, Point};

pub use memory::{MemoryGeoIndex, MemoryIndexConfig};
#[cfg(feature = "redis")]
pub use redis::{RedisGeoIndex, RedisIndexConfig};

/// The longest member name, in bytes.
pub const MEMBER_BYTES_MAX: usize = 256;

/// The largest radius, width or height a search accepts, in metres: the Earth's
/// circumference on [`crate::distance::EARTH_RADIUS_M`], beyond which every point is
/// already included.
pub const EXTENT_M_MAX: f64 = 40_041_472.0;

/// The longest time to live, in milliseconds (30 days).
pub const TTL_MS_MAX: u64 = 30 * 86_400_000;

/// One member's new position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Update<'a> {
    /// The member's name: 1..=[`MEMBER_BYTES_MAX`] bytes.
    pub member: &'a str,
    /// Where it is; its latitude must be within [`crate::point::INDEX_LAT_MAX`].
    pub point: Point,
    /// How long the position stays valid without another update, in milliseconds
    /// (1..=[`TTL_MS_MAX`]); `None`: until removed.
    pub ttl_ms: Option<u64>,
}

/// What an upsert did. The batch is applied in order, so `added + updated` is the
/// batch's length: a member named twice in one batch is added, then updated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upserted {
    /// Updates of members that were not in the index (or had expired).
    pub added: usize,
    /// Updates of members that were live (moved or not; their TTL is replaced).
    pub updated: usize,
}

/// Where a search is centred.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Center<'a> {
    /// A point (`FROMLONLAT`).
    At(Point),
    /// A live member's stored position (`FROMMEMBER`); the member is among the hits.
    Member(&'a str),
}

/// The area searched around the centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Area {
    /// A circle (`BYRADIUS`), radius in metres, `0..=`[`EXTENT_M_MAX`].
    Radius {
        /// Radius in metres.
        radius_m: f64,
    },
    /// A box aligned with the meridians (`BYBOX`), full width and height in metres,
    /// each `0..=`[`EXTENT_M_MAX`].
    Box {
        /// East–west extent in metres.
        width_m: f64,
        /// North–south extent in metres.
        height_m: f64,
    },
}

/// The order of hits by distance from the centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Nearest first.
    Asc,
    /// Farthest first.
    Desc,
}

/// A search (`GEOSEARCH`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Search<'a> {
    /// Where it is centred.
    pub center: Center<'a>,
    /// The area around the centre.
    pub area: Area,
    /// The order of the hits; `None`: unordered, unless `count` is set without `any`.
    pub order: Option<Order>,
    /// At most this many hits.
    pub count: Option<NonZeroUsize>,
    /// With `count`: stop at the first `count` hits found instead of the nearest ones.
    pub any: bool,
}

impl<'a> Search<'a> {
    /// Members within `radius_m` of `center`, nearest first.
    #[must_use]
    pub fn radius(center: Center<'a>, radius_m: f64) -> Self {
        Self {
            center,
            area: Area::Radius { radius_m },
            order: Some(Order::Asc),
            count: None,
            any: false,
        }
    }

    /// At most `count` hits (the nearest, unless [`Search::any`] is set).
    #[must_use]
    pub fn limit(mut self, count: NonZeroUsize) -> Self {
        self.count = Some(count);
        self
    }
}

/// One member found by a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The member's name.
    pub member: Arc<str>,
    /// Its distance from the search's centre in metres.
    pub dist_m: f64,
    /// Its stored position (the centre of its 52-bit cell).
    pub point: Point,
}

/// Why an index operation was refused or failed. Nothing was changed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum GeoError {
    /// The update at `index` in the batch has a latitude beyond
    /// [`crate::point::INDEX_LAT_MAX`].
    #[error("update {index}: {source}")]
    NotIndexable {
        /// The update's position in the batch.
        index: usize,
        /// What is wrong with its point.
        #[source]
        source: CoordError,
    },
    /// A member name is empty or longer than [`MEMBER_BYTES_MAX`] bytes.
    #[error("member name of {len} bytes: must be 1..={max} bytes", max = MEMBER_BYTES_MAX)]
    InvalidMember {
        /// Its length in bytes.
        len: usize,
    },
    /// A TTL is 0 or above [`TTL_MS_MAX`].
    #[error("ttl {ttl_ms} ms outside 1..={max} ms", max = TTL_MS_MAX)]
    InvalidTtl {
        /// The TTL given.
        ttl_ms: u64,
    },
    /// The search's centre has a latitude beyond [`crate::point::INDEX_LAT_MAX`]
    /// (Redis refuses such centres too).
    #[error("search centre: {source}")]
    InvalidCenter {
        /// What is wrong with the point.
        #[source]
        source: CoordError,
    },
    /// A radius, width or height is negative, not finite or above [`EXTENT_M_MAX`].
    #[error("search extent {extent_m} m outside 0..={max} m", max = EXTENT_M_MAX)]
    InvalidExtent {
        /// The extent given.
        extent_m: f64,
    },
    /// The search is centred on a member that is not in the index (or has expired).
    #[error("no member {member:?} to search from")]
    UnknownMember {
        /// The name given.
        member: String,
    },
    /// The index holds its configured maximum of live members.
    #[error("index full ({max} members)")]
    Full {
        /// The configured maximum.
        max: usize,
    },
    /// The backend failed (Redis unreachable, a script error).
    #[error("geo index backend")]
    Backend(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

/// A set of members with positions, searched by radius or box (see the module doc
/// for the semantics every backend keeps).
// No `is_empty`: on Redis it would be the same round trip as `len`.
#[allow(clippy::len_without_is_empty)]
pub trait GeoIndex: Send + Sync {
    /// Adds or moves every member of `batch`, all or nothing.
    fn upsert(
        &self,
        batch: &[Update<'_>],
    ) -> impl Future<Output = Result<Upserted, GeoError>> + Send;

    /// Removes the named members; returns how many were live.
    fn remove(&self, members: &[&str]) -> impl Future<Output = Result<usize, GeoError>> + Send;

    /// A live member's stored position.
    fn position(
        &self,
        member: &str,
    ) -> impl Future<Output = Result<Option<Point>, GeoError>> + Send;

    /// The members in the search's area.
    fn search(&self, query: &Search<'_>)
    -> impl Future<Output = Result<Vec<Hit>, GeoError>> + Send;

    /// How many live members the index holds.
    fn len(&self) -> impl Future<Output = Result<usize, GeoError>> + Send;
}

/// Checks the parts of a batch every backend checks the same way.
///
/// # Errors
/// The first bad update's [`GeoError`].
pub fn validate_batch(batch: &[Update<'_>]) -> Result<(), GeoError> {
    for (index, u) in batch.iter().enumerate() {
        validate_member(u.member)?;
        u.point.check_indexable().map_err(|source| GeoError::NotIndexable { index, source })?;
        if let Some(ttl_ms) = u.ttl_ms
            && !(1..=TTL_MS_MAX).contains(&ttl_ms)
        {
            return Err(GeoError::InvalidTtl { ttl_ms });
        }
    }
    Ok(())
}

/// Checks a member name.
///
/// # Errors
/// [`GeoError::InvalidMember`].
pub fn validate_member(member: &str) -> Result<(), GeoError> {
    if member.is_empty() || member.len() > MEMBER_BYTES_MAX {
        return Err(GeoError::InvalidMember { len: member.len() });
    }
    Ok(())
}

/// Checks a search's extents and centre.
///
/// # Errors
/// [`GeoError::InvalidExtent`], [`GeoError::InvalidCenter`] or
/// [`GeoError::InvalidMember`].
pub fn validate_search(query: &Search<'_>) -> Result<(), GeoError> {
    let check = |extent_m: f64| {
        if extent_m.is_finite() && (0.0..=EXTENT_M_MAX).contains(&extent_m) {
            Ok(())
        } else {
            Err(GeoError::InvalidExtent { extent_m })
        }
    };
    match query.area {
        Area::Radius { radius_m } => check(radius_m)?,
        Area::Box { width_m, height_m } => {
            check(width_m)?;
            check(height_m)?;
        }
    }
    match query.center {
        Center::Member(m) => validate_member(m)?,
        Center::At(p) => {
            p.check_indexable().map_err(|source| GeoError::InvalidCenter { source })?
        }
    }
    Ok(())
}

/// The order a search's hits are reported in: `None` for no order, else by distance
/// and then by member name, ascending in both orders.
#[must_use]
pub fn effective_order(query: &Search<'_>) -> Option<Order> {
    // COUNT without ANY means "the nearest", as in Redis.
    query.order.or((query.count.is_some() && !query.any).then_some(Order::Asc))
}

/// The contract's order of hits given as `(distance, name)`: by distance in
/// `order`, then by name ascending.
pub(crate) fn hit_order(order: Order, a: (f64, &str), b: (f64, &str)) -> std::cmp::Ordering {
    let by_dist = match order {
        Order::Asc => a.0.total_cmp(&b.0),
        Order::Desc => b.0.total_cmp(&a.0),
    };
    by_dist.then_with(|| a.1.cmp(b.1))
}

/// Orders `hits` and keeps the first `count` as the contract says, given every hit
/// in the area (or, with `any`, the first `count` found).
pub(crate) fn finish_hits(hits: &mut Vec<Hit>, query: &Search<'_>) {
    let Some(order) = effective_order(query) else {
        if let Some(count) = query.count {
            hits.truncate(count.get());
        }
        return;
    };
    let cmp = |a: &Hit, b: &Hit| hit_order(order, (a.dist_m, &a.member), (b.dist_m, &b.member));
    if let Some(count) = query.count
        && hits.len() > count.get()
    {
        hits.select_nth_unstable_by(count.get() - 1, cmp);
        hits.truncate(count.get());
    }
    hits.sort_unstable_by(cmp);
}

/// Either backend, chosen at start-up.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyGeoIndex {
    /// In this process.
    Memory(MemoryGeoIndex),
    /// On a Redis sorted set.
    #[cfg(feature = "redis")]
    Redis(RedisGeoIndex),
}

impl GeoIndex for AnyGeoIndex {
    async fn upsert(&self, batch: &[Update<'_>]) -> Result<Upserted, GeoError> {
        match self {
            Self::Memory(i) => i.upsert(batch).await,
            #[cfg(feature = "redis")]
            Self::Redis(i) => i.upsert(batch).await,
        }
    }

    async fn remove(&self, members: &[&str]) -> Result<usize, GeoError> {
        match self {
            Self::Memory(i) => i.remove(members).await,
            #[cfg(feature = "redis")]
            Self::Redis(i) => i.remove(members).await,
        }
    }

    async fn position(&self, member: &str) -> Result<Option<Point>, GeoError> {
        match self {
            Self::Memory(i) => i.position(member).await,
            #[cfg(feature = "redis")]
            Self::Redis(i) => i.position(member).await,
        }
    }

    async fn search(&self, query: &Search<'_>) -> Result<Vec<Hit>, GeoError> {
        match self {
            Self::Memory(i) => i.search(query).await,
            #[cfg(feature = "redis")]
            Self::Redis(i) => i.search(query).await,
        }
    }

    async fn len(&self) -> Result<usize, GeoError> {
        match self {
            Self::Memory(i) => i.len().await,
            #[cfg(feature = "redis")]
            Self::Redis(i) => i.len().await,
        }
    }
}
