//! A multi-layer read-through cache: "Pattern: Multi-Layer Caching" and "Pattern: Query
//! Result Caching" made real.
//!
//! **Problem.** Under read-heavy load the system of record becomes the bottleneck, and
//! a naive cache in front of it adds its own failures: a stampede of identical loads
//! when a hot key expires, entries that outlive the data they copy, and instances
//! that disagree after a write.
//!
//! **Guarantee.**
//! - Concurrent misses on one key in one instance cause exactly one load; its value or
//!   its error goes to every waiter, and errors are never cached.
//! - A value is never served fresh past its TTL (`ttl_ms` ± jitter, per entry) on the
//!   cache's [`Clock`](girder_core::Clock) (the default, the process's one
//!   [`CoarseClock`](girder_core::CoarseClock), lags real time by about a
//!   millisecond). With `stale_ms`, it may be served stale for that
//!   much longer while one background refresh runs.
//! - After [`Cache::put`] or [`Cache::invalidate`] returns `Ok`, no read that starts on
//!   this instance gets the old value, no load that began before the write fills any
//!   layer, and every other instance sharing the L2 drops its L1 copy when the
//!   broadcast reaches it. (Reads already waiting on such a load get its result: they
//!   were concurrent with the write.)
//! - Memory is bounded: L1 by `l1_capacity_entries` values plus
//!   `l1_negative_capacity_entries` absences, in-flight loads by the number of
//!   callers inside a miss, background refreshes by `refreshes_max`.
//!
//! **Trade-off.** Cross-instance invalidation is eventually consistent. Normally another
//! instance stops serving an old value within the pub/sub latency (sub-millisecond on
//! a LAN). If its subscription is down, the bound is its L1 TTL
//! (`ttl_ms * (1 + ttl_jitter_fraction) + stale_ms`); when it re-subscribes it clears
//! its L1, since it may have missed invalidations. L2 itself is eventually consistent
//! with the store up to `l2_ttl_ms` for writes made without `put`/`invalidate`. L2
//! failures degrade reads to L1 + loader rather than failing them.
//!
//! ```
//! use girder_cache::{Cache, CacheConfig, loader_fn};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // The loader reads the system of record; here, a made-up table of short links.
//! let links = loader_fn(|code: String| async move {
//!     Ok::<_, std::io::Error>((code == "abc").then(|| "https://example.com".to_owned()))
//! });
//! let config = CacheConfig { name: "links".into(), ttl_ms: 30_000, ..CacheConfig::default() };
//! let cache = Cache::new(config, links)?;
//! assert_eq!(cache.get(&"abc".to_owned()).await?.as_deref(), Some("https://example.com"));
//! assert_eq!(cache.get(&"zzz".to_owned()).await?, None); // cached as absent for 5 s
//! assert_eq!(cache.get(&"abc".to_owned()).await?.as_deref(), Some("https://example.com"));
//! assert_eq!((cache.stats().loader_calls, cache.stats().l1_hits), (2, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! Add a shared layer with `Cache::builder(config, loader).l2(RedisL2::connect(url).await?)`
//! (feature `redis`), or [`MemoryL2`] in process. Key query results by [`QueryKey`].
//!
//! Measured (2-core VM, 100k keys, random order, single thread; `cargo bench -p
//! girder-bench --bench cache_interleaved`, medians of five processes): an L1 hit
//! through [`Cache::get_cached`] costs 1.15–1.17x a bare `quick_cache` `get` for `u64`
//! values, 1.18–1.22x for `Arc<String>` and 1.30–1.43x for `Arc<str>` values. For
//! `Arc<String>` all of it is the exact per-thread hit counter (without it, 1.02–1.03x).
//! Most of the `Arc<str>` gap is the expiry stored beside each value: quick_cache's slab
//! slot grows from 40 to 48 bytes (it stays at 40 for a `u64`), and quick_cache alone
//! holding `(expiry, Arc<str>)` measures 1.25–1.31x. Values of at most 8 bytes keep the
//! slot at 40. `moka::sync::Cache::get` is ~1 µs in the same setup.
//!
//! Time on the hit path comes from [`girder_core::CoarseClock`], the one coarse clock
//! of the process (the rate limiters read it too): a thread that refreshes a cached
//! wall time every millisecond and is joined when its last handle (every cache holds
//! one) is dropped. The same thread publishes each cache's counters to `metrics` about
//! once a second; the cache has no thread of its own. Tests pass a manual clock
//! instead.
//!
//! Modules: [`config`] (the knobs), `cache` ([`Cache`]), [`l2`] (the shared layer
//! trait and its backends), [`query_key`] (canonical query keys); the L1 map, the
//! single-flight table and the L2 entry codec are private.

mod cache;
mod clock;
mod codec;
pub mod config;
mod error;
mod flight;
mod key;
mod l1;
pub mod l2;
mod loader;
pub mod query_key;
mod stats;

pub use cache::{Cache, CacheBuilder, CacheValue, ListenerProgress};
pub use config::{CacheConfig, ConfigError};
pub use error::{BuildError, GetError, WriteError};
pub use key::CacheKey;
#[cfg(feature = "redis")]
pub use l2::RedisL2;
pub use l2::{L2BackendError, L2Error, L2Store, MemoryL2, NoL2};
pub use loader::{FnLoader, Loader, loader_fn};
pub use query_key::QueryKey;
pub use stats::CacheStats;
