//! Data structures for scale: "Bloom Filter for Membership Testing", "Count-Min
//! Sketch for Frequency Estimation" and "HyperLogLog for Cardinality Estimation" made
//! real.
//!
//! **Problem.** Some questions about a huge set or stream — has this URL been seen,
//! how often has this video been viewed, how many distinct users came today — cost
//! memory in proportion to the data when answered exactly.
//!
//! **Guarantee.** Each sketch answers in fixed memory with a stated error:
//! a [`bloom::BloomFilter`] never forgets a key it was given (no false negatives); a
//! [`count_min::CountMinSketch`] never underestimates a count, and overestimates by
//! at most `ε·N` with probability `1 − δ`; a [`hyperloglog::HyperLogLog`] estimates
//! the number of distinct keys with a relative standard error of about `1.04/√m`
//! (0.81% in 12 KiB at `p = 14`, a few bytes per key while few keys were added) at every cardinality, small or huge; a
//! [`topk::SpaceSaving`] summary of `m` keys reports every key with more than `N/m` of
//! the stream, each count within its stated error. Sketches of the same shape merge, so each
//! instance can keep its own and combine them on read.
//!
//! **Trade-off.** Answers are approximate (a Bloom filter's "present" is wrong with a
//! tunable probability, a Count-Min count is high by up to a fraction of the whole
//! stream, a HyperLogLog count is off by a relative error) and the memory is chosen
//! up front from the error wanted. No sketch allocates per insert or query, except that
//! a Space-Saving summary stores the bytes of the keys it monitors (reusing an evicted
//! key's buffers once full), a sparse HyperLogLog grows its list of registers until it
//! turns dense, and a scalable Bloom filter allocates each new stage.
//!
//! ```
//! use girder_sketch::bloom::{BloomConfig, BloomFilter};
//! use girder_sketch::count_min::{CountMinConfig, CountMinSketch};
//! use girder_sketch::hyperloglog::HyperLogLog;
//! use girder_sketch::topk::SpaceSaving;
//!
//! let mut seen = BloomFilter::new(&BloomConfig::new(10_000, 0.01))?;
//! seen.insert("https://example.com/a");
//! assert!(seen.contains("https://example.com/a"));
//! let copy = BloomFilter::from_bytes(&seen.to_bytes())?;
//! assert_eq!(copy, seen);
//!
//! let mut views = CountMinSketch::new(&CountMinConfig::new(0.001, 0.01))?;
//! views.add("video:42", 3);
//! assert!(views.estimate("video:42") >= 3);
//!
//! let mut visitors = HyperLogLog::new(14, 0)?;
//! for user in ["alice", "bob", "alice"] {
//!     visitors.add(user);
//! }
//! assert_eq!(visitors.count(), 2);
//!
//! let mut trending = SpaceSaving::with_error(0.01)?; // 100 keys, error ≤ 1% of N
//! trending.add("video:7", 5);
//! trending.add("video:9", 2);
//! assert_eq!(trending.top(1)[0].key, b"video:7");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Serialized form.** Every sketch's `to_bytes` writes one frame: the magic
//! `GSKT`, a kind byte, a format version byte, the sketch's fields (little-endian) and
//! a CRC-32C of everything before it. `from_bytes` verifies the checksum before it
//! trusts any field, range-checks every field and compares lengths before allocating:
//! any malformed input is a [`DecodeError`], never a panic.
//!
//! Keys are byte strings hashed with XXH3, whose output is frozen, so sketches built
//! in different processes (with the same seed) combine.
//!
//! **Variants.** [`bloom::CountingBloomFilter`] can remove keys (4-bit counters, 4×
//! the memory); [`bloom::ScalableBloomFilter`] grows by stages and keeps its rate at or
//! below its target without knowing `n` up front. A HyperLogLog starts sparse (a few
//! bytes per key) and turns dense (6-bit registers) by itself.
//!
//! **Sharing** (feature `redis`, async on the caller's tokio runtime):
//! `redis::RedisHyperLogLog` counts with Redis's own `PFADD`/`PFCOUNT`/`PFMERGE`, and
//! `redis::SharedSketch` shares any [`Mergeable`] sketch as per-instance sketches
//! merged on read.
//!
//! Not yet: HLL++'s finer sparse precision (the sparse form is exactly as accurate as
//! the dense one, no more); a union of scalable Bloom filters; Redis-module backends
//! (RedisBloom's `BF.*`, `CMS.*`, `TOPK.*`); measured speeds of the counting and
//! scalable filters and of sparse adds (BENCHMARKS.md measures the classic Bloom,
//! dense HyperLogLog and Count-Min against peers).

mod codec;
mod error;
mod hash;
mod mergeable;

pub mod bloom;
pub mod count_min;
pub mod hyperloglog;
#[cfg(feature = "redis")]
pub mod redis;
pub mod topk;

pub use error::{DecodeError, InsertError, MergeError, ParamError};
pub use mergeable::Mergeable;
