//! Where a pipeline's events come from: a log split into partitions, each read in
//! order from an offset.

use std::future::Future;
use std::time::Duration;

/// One record of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Its offset in its partition; offsets grow, not necessarily by one.
    pub offset: u64,
    /// Its bytes, as appended.
    pub payload: Vec<u8>,
}

/// A source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No such partition.
    #[error("partition {partition} does not exist (the source has {count})")]
    NoPartition {
        /// The partition asked for.
        partition: u32,
        /// How many there are.
        count: u32,
    },
    /// The records at the offset were deleted by retention.
    #[error("partition {partition} no longer holds offset {offset} (oldest {oldest})")]
    Truncated {
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// The oldest offset kept.
        oldest: u64,
    },
    /// A record is larger than the source accepts.
    #[error("a record of {len} bytes is larger than {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The source's settings or files do not agree.
    #[error("{0}")]
    Config(String),
    /// The engine underneath failed.
    #[error("{context}: {source}")]
    Engine {
        /// What was being done.
        context: &'static str,
        /// The engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SourceError {
    pub(crate) fn engine<E: std::error::Error + Send + Sync + 'static>(
        context: &'static str,
    ) -> impl FnOnce(E) -> Self {
        move |e| Self::Engine { context, source: Box::new(e) }
    }
}

/// A partitioned log that pipelines read.
pub trait Source: Send + Sync + 'static {
    /// How many partitions there are (fixed for the source's life).
    fn partitions(&self) -> u32;

    /// The offset a partition's first reader starts at (its oldest record kept).
    fn first_offset(&self, partition: u32)
    -> impl Future<Output = Result<u64, SourceError>> + Send;

    /// Up to `max` records of `partition` from offset `from` on, in order. Waits up to
    /// `wait` for the first one when there are none yet; an empty answer means none
    /// arrived in that time.
    fn read(
        &self,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<SourceRecord>, SourceError>> + Send;
}

/// The partition of `key` among `count`: XXH3-64 of the key, scaled (frozen, so every
/// process and release agrees).
#[must_use]
pub fn partition_of(key: &[u8], count: u32) -> u32 {
    let h = xxhash_rust::xxh3::xxh3_64(key);
    // Multiply-shift maps the hash onto 0..count without a division's bias.
    ((u128::from(h) * u128::from(count)) >> 64) as u32
}
