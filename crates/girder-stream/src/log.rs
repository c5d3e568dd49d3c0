//! The embedded partitioned log: one girder-log write-ahead log per partition in one
//! directory. Records are appended durably (group commit) and kept until
//! [`PartitionedLog::truncate_before`] removes them, so the log is also the raw
//! record a reconciliation recomputes from.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use girder_log::wal::{Lsn, Reader, Wal, WalConfig, WalError};
use parking_lot::Mutex;

use crate::source::{Source, SourceError, SourceRecord, partition_of};

/// The most partitions a log may have.
pub const PARTITIONS_MAX: u32 = 1_024;

/// How a partitioned log is kept.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The directory holding a `meta` file and one log per partition.
    pub dir: PathBuf,
    /// How many partitions; fixed when the log is created, and checked on every open.
    pub partitions: u32,
    /// Each partition's write-ahead log settings (its `dir` is set per partition).
    pub wal: WalConfig,
}

impl LogConfig {
    /// `partitions` partitions in `dir` with girder-log's defaults, but 16 MiB
    /// segments (so retention frees space in smaller steps) and 1 MiB records.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>, partitions: u32) -> Self {
        let dir = dir.into();
        let mut wal = WalConfig::new(&dir);
        wal.segment_bytes = 16 << 20;
        wal.record_bytes_max = 1 << 20;
        Self { dir, partitions, wal }
    }
}

/// A log split into partitions by key. See the [module docs](self).
pub struct PartitionedLog {
    dir: PathBuf,
    wals: Vec<Wal>,
    /// A reader per partition kept between reads (sequential reads reuse it).
    readers: Vec<Mutex<Option<Reader>>>,
}

impl std::fmt::Debug for PartitionedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionedLog")
            .field("dir", &self.dir)
            .field("partitions", &self.wals.len())
            .finish_non_exhaustive()
    }
}

fn wal_error(context: &'static str) -> impl FnOnce(WalError) -> SourceError {
    SourceError::engine(context)
}

impl PartitionedLog {
    /// Opens the log in `config.dir`, creating it with `config.partitions` partitions
    /// the first time.
    ///
    /// # Errors
    /// [`SourceError::Config`] when the partition count is out of range or differs
    /// from the one the log was created with; [`SourceError::Engine`] when a
    /// partition's log cannot be opened (another process holds it, say).
    pub fn open(config: &LogConfig) -> Result<Self, SourceError> {
        if !(1..=PARTITIONS_MAX).contains(&config.partitions) {
            return Err(SourceError::Config(format!(
                "partitions: {} is not in 1..={PARTITIONS_MAX}",
                config.partitions
            )));
        }
        std::fs::create_dir_all(&config.dir)
            .map_err(SourceError::engine("creating the log's directory"))?;
        check_meta(&config.dir, config.partitions)?;
        let mut wals = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let wal_config =
                WalConfig { dir: config.dir.join(format!("p{p:04}")), ..config.wal.clone() };
            let (wal, recovery) =
                Wal::open(wal_config).map_err(wal_error("opening a partition"))?;
            if let Some(damage) = recovery.damage {
                tracing::warn!(partition = p, ?damage, "a partition's torn tail was cut on open");
            }
            wals.push(wal);
        }
        let readers = (0..config.partitions).map(|_| Mutex::new(None)).collect();
        Ok(Self { dir: config.dir.clone(), wals, readers })
    }

    /// The partition `key` goes to.
    #[must_use]
    pub fn partition_of(&self, key: &[u8]) -> u32 {
        partition_of(key, self.wals.len() as u32)
    }

    fn wal(&self, partition: u32) -> Result<&Wal, SourceError> {
        self.wals
            .get(partition as usize)
            .ok_or(SourceError::NoPartition { partition, count: self.wals.len() as u32 })
    }

    /// Appends `payload` to `key`'s partition; returns when it is durable (per the
    /// logs' sync policy), with its partition and offset.
    ///
    /// # Errors
    /// [`SourceError::TooLarge`], or the log failed or is closed.
    pub async fn append(&self, key: &[u8], payload: Vec<u8>) -> Result<(u32, u64), SourceError> {
        let partition = self.partition_of(key);
        let lsn = self.append_to(partition, payload).await?;
        Ok((partition, lsn))
    }

    /// Appends `payload` to `partition`.
    ///
    /// # Errors
    /// As [`append`](Self::append), or [`SourceError::NoPartition`].
    pub async fn append_to(&self, partition: u32, payload: Vec<u8>) -> Result<u64, SourceError> {
        let len = payload.len();
        match self.wal(partition)?.append(payload).await {
            Ok(lsn) => Ok(lsn.0),
            Err(WalError::TooLarge { max, .. }) => {
                Err(SourceError::TooLarge { len, max: max as usize })
            }
            Err(e) => Err(wal_error("appending")(e)),
        }
    }

    /// Appends several records to one partition in one group commit.
    ///
    /// # Errors
    /// As [`append_to`](Self::append_to); nothing of a refused batch is appended.
    pub async fn append_many(
        &self,
        partition: u32,
        payloads: Vec<Vec<u8>>,
    ) -> Result<Vec<u64>, SourceError> {
        let wal = self.wal(partition)?;
        match wal.append_many(payloads).await {
            Ok(lsns) => Ok(lsns.into_iter().map(|l| l.0).collect()),
            Err(WalError::TooLarge { len, max }) => {
                Err(SourceError::TooLarge { len, max: max as usize })
            }
            Err(e) => Err(wal_error("appending")(e)),
        }
    }

    /// The offset after the last record of `partition` (where the next one goes).
    ///
    /// # Errors
    /// [`SourceError::NoPartition`].
    pub fn end_offset(&self, partition: u32) -> Result<u64, SourceError> {
        Ok(self.wal(partition)?.last_lsn().map_or(1, |l| l.0 + 1))
    }

    /// Deletes whole segments holding only records before `offset` (retention: call it
    /// with an offset every consumer has checkpointed past, or with the first offset
    /// older than what the log must keep).
    ///
    /// # Errors
    /// The file system failed.
    pub fn truncate_before(&self, partition: u32, offset: u64) -> Result<(), SourceError> {
        let wal = self.wal(partition)?;
        let upto = offset.saturating_sub(1).min(wal.last_lsn().map_or(0, |l| l.0));
        if upto == 0 {
            return Ok(());
        }
        wal.checkpoint(Lsn(upto)).map_err(wal_error("truncating"))
    }

    /// Closes every partition's log, syncing what was appended.
    ///
    /// # Errors
    /// A final sync failed.
    pub async fn close(self) -> Result<(), SourceError> {
        drop(self.readers);
        for wal in self.wals {
            wal.close().await.map_err(wal_error("closing"))?;
        }
        Ok(())
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_now(
        &self,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<SourceRecord>, SourceError> {
        let wal = self.wal(partition)?;
        let mut slot = self.readers[partition as usize].lock();
        if slot.as_ref().is_none_or(|r| r.position().0 != from) {
            *slot = Some(wal.reader(Lsn(from.max(1))).map_err(|e| match e {
                WalError::Truncated { oldest, .. } => {
                    SourceError::Truncated { partition, offset: from, oldest: oldest.0 }
                }
                e => wal_error("opening a reader")(e),
            })?);
        }
        let Some(reader) = slot.as_mut() else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        while out.len() < max {
            match reader.next_record() {
                Ok(Some(record)) => {
                    out.push(SourceRecord { offset: record.lsn.0, payload: record.payload });
                }
                Ok(None) => break,
                Err(e) => {
                    *slot = None;
                    return Err(match e {
                        WalError::Truncated { oldest, .. } => {
                            SourceError::Truncated { partition, offset: from, oldest: oldest.0 }
                        }
                        e => wal_error("reading")(e),
                    });
                }
            }
        }
        Ok(out)
    }
}

impl Source for Arc<PartitionedLog> {
    fn partitions(&self) -> u32 {
        self.wals.len() as u32
    }

    async fn first_offset(&self, partition: u32) -> Result<u64, SourceError> {
        Ok(self.wal(partition)?.oldest_lsn().0)
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<SourceRecord>, SourceError> {
        let records = self.read_now(partition, from, max)?;
        if !records.is_empty() || wait.is_zero() {
            return Ok(records);
        }
        let wal = self.wal(partition)?;
        match tokio::time::timeout(wait, wal.wait_for(Lsn(from.max(1)))).await {
            Ok(Ok(())) => self.read_now(partition, from, max),
            Ok(Err(e)) => Err(wal_error("waiting for records")(e)),
            Err(_) => Ok(Vec::new()),
        }
    }
}

/// Writes the partition count on creation and checks it on every later open.
fn check_meta(dir: &Path, partitions: u32) -> Result<(), SourceError> {
    let path = dir.join("meta");
    let want = format!("girder-stream partitioned log\npartitions {partitions}\n");
    match std::fs::read_to_string(&path) {
        Ok(found) if found == want => Ok(()),
        Ok(found) => Err(SourceError::Config(format!(
            "the log in {} was created with other settings ({:?}); opened with {partitions} partitions",
            dir.display(),
            found.lines().nth(1).unwrap_or("unreadable")
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join("meta.tmp");
            std::fs::write(&tmp, &want).map_err(SourceError::engine("writing the log's meta"))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(SourceError::engine("syncing the log's meta"))?;
            std::fs::rename(&tmp, &path).map_err(SourceError::engine("writing the log's meta"))?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(SourceError::engine("syncing the log's directory"))
        }
        Err(e) => Err(SourceError::engine("reading the log's meta")(e)),
    }
}
