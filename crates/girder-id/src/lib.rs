//! Unique identifiers: the catalogue's "Unique ID Generation" chapter made real.
//!
//! **Problem.** Services need ids that are unique across processes and machines,
//! short enough for URLs, and cheap to mint.
//!
//! **Guarantee.** Counter ids ([`counter`]) are never handed out twice by allocators
//! sharing a backend counter, across processes, restarts and crashes (gaps are allowed).
//! Snowflake ids ([`snowflake`]) strictly increase per generator and are never
//! duplicated, even when the clock steps back (it waits or fails instead). UUIDv7s
//! ([`uuid7`]) strictly increase across the whole process.
//!
//! **Trade-off.** Leasing ranges (batching) trades one backend round trip per batch for
//! gaps when a process dies and for ids that are unique but not globally ordered.
//! Snowflake needs no coordination but needs unique machine ids and a sane clock.
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
//! ```
//! use girder_id::counter::{AllocatorConfig, IdAllocator, MemorySource};
//! use girder_id::{base62, permute::KeyedPermutation};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // One backend round trip per 1000 ids; swap MemorySource for SqliteSource,
//! // PostgresSource or RedisSource to share the counter between servers.
//! let ids = IdAllocator::new(MemorySource::new(0), AllocatorConfig::default());
//! let id = ids.next_id().await?;
//! // Short codes that do not reveal how many came before: 62^7 = 3.5 trillion codes.
//! let shuffle = KeyedPermutation::new(*b"a 16-byte secret", base62::capacity(7)).unwrap();
//! let code = base62::encode_fixed(shuffle.permute(id).unwrap(), 7).unwrap();
//! assert_eq!(base62::decode(&code).map(|n| shuffle.invert(n).unwrap()), Ok(id));
//! # Ok::<(), girder_id::counter::LeaseError>(())
//! # }).unwrap();
//! ```
//!
//! Measured (criterion, 2-core AMD EPYC VM; see BENCHMARKS.md): `IdAllocator::try_next`
//! ~91M ids/s, Snowflake at its 4.096M ids/s ceiling, `UuidV7Generator` ~7.5x
//! `uuid::Uuid::now_v7`.
//!
//! The core has no async runtime dependency; database and Redis backends live behind
//! the `sqlite`, `postgres` and `redis` features.

pub mod base62;
pub mod counter;
pub mod permute;
pub mod snowflake;
pub mod uuid7;
