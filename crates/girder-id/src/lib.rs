//! Unique identifiers, the catalogue's "Unique ID Generation" chapter made real.
//!
//! - [`base62`]: short, URL-safe, order-preserving text for integers ("Pattern: Counter
//!   with Base62 Encoding").
//! - [`counter`]: a shared counter leased in ranges ("counter batching"), with memory,
//!   SQLite, PostgreSQL and Redis backends behind one [`counter::RangeSource`] trait.
//! - [`permute`]: a keyed bijection that hides the sequence of counter ids (the
//!   catalogue's "sequential nature may reveal business metrics").
//! - [`snowflake`]: coordination-free 64-bit time-ordered ids ("Pattern: Snowflake ID").
//! - [`uuid7`]: process-wide monotonic UUIDv7 and its compact encodings ("Pattern: UUID").
//!
//! The core has no async runtime dependency; database and Redis backends live behind
//! the `sqlite`, `postgres` and `redis` features.

pub mod base62;
pub mod counter;
pub mod permute;
pub mod snowflake;
pub mod uuid7;
