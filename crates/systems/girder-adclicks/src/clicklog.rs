//! Where counted clicks go: this instance's embedded log, or one NATS JetStream log
//! every instance shares.

use std::sync::Arc;
use std::time::Duration;

use girder_stream::jetstream::JetStreamLog;
use girder_stream::log::PartitionedLog;
use girder_stream::{Source, SourceError, SourceRecord};

/// The click log.
#[derive(Debug, Clone)]
pub enum ClickLog {
    /// This instance's own partitioned log (its pipeline is its own).
    Embedded(Arc<PartitionedLog>),
    /// A JetStream log shared by every instance (so is the pipeline: instances split
    /// its partitions and take over a departed one's).
    Shared(Arc<JetStreamLog>),
}

impl ClickLog {
    /// Appends a click to `key`'s partition.
    ///
    /// # Errors
    /// The log refused or failed.
    pub async fn append(&self, key: &[u8], payload: Vec<u8>) -> Result<(u32, u64), SourceError> {
        match self {
            Self::Embedded(log) => log.append(key, payload).await,
            Self::Shared(log) => log.append(key, payload).await,
        }
    }

    /// The offset the next click in `partition` gets, where the log knows it cheaply
    /// (the embedded log); `None` for JetStream.
    #[must_use]
    pub fn end_offset(&self, partition: u32) -> Option<u64> {
        match self {
            Self::Embedded(log) => log.end_offset(partition).ok(),
            Self::Shared(_) => None,
        }
    }
}

impl Source for ClickLog {
    fn partitions(&self) -> u32 {
        match self {
            Self::Embedded(log) => log.partitions(),
            Self::Shared(log) => log.partitions(),
        }
    }

    async fn first_offset(&self, partition: u32) -> Result<u64, SourceError> {
        match self {
            Self::Embedded(log) => log.first_offset(partition).await,
            Self::Shared(log) => log.first_offset(partition).await,
        }
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<SourceRecord>, SourceError> {
        match self {
            Self::Embedded(log) => log.read(partition, from, max, wait).await,
            Self::Shared(log) => log.read(partition, from, max, wait).await,
        }
    }
}
