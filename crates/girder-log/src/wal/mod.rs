//! A write-ahead log ("Pattern: Write-Ahead Log (WAL) for Durability").
//!
//! Records are appended to numbered segment files in one directory and identified
//! by their [`Lsn`] (log sequence number), 1, 2, 3, … with no gaps. The format is in
//! `segment.rs`: a checksummed header per segment, and per record its length and a
//! CRC-32C that covers the record's LSN, length and payload.
//!
//! **Group commit.** [`Wal::append`] queues the record and waits. One writer thread
//! takes everything queued, writes it with one `write` and covers it with one
//! `fdatasync`; only then are those appends acknowledged. While it syncs, the next
//! batch gathers, so N concurrent appenders pay about one sync per batch instead of N.
//!
//! **What each [`SyncPolicy`] loses.**
//!
//! | policy | acknowledged after | process crash (`kill -9`) | power failure / kernel crash |
//! |---|---|---|---|
//! | `EveryBatch` (default) | `fdatasync` covering the record | nothing | nothing |
//! | `Interval(d)` | `write` to the OS | nothing | up to `d` of acknowledged records |
//! | `Never` | `write` to the OS | nothing | whatever the OS had not written back |
//!
//! A record that was written but not yet acknowledged when the process died may or
//! may not be present after recovery; consumers that must not apply it twice dedupe by
//! their own ids.
//!
//! **Recovery.** [`Wal::open`] checks every segment header and scans the last
//! segment record by record. At the first damage — a torn header or record, a length
//! out of range, a checksum mismatch — it stops: the file is cut back to its last
//! valid record and the damage is reported in [`Recovery`]. Segments after a damaged
//! one are not deleted but renamed to `*.wal.damaged`, because a log with a hole cannot
//! be replayed in order. Earlier, sealed segments are verified as they are read: a
//! reader meeting damage there returns [`WalError::Corrupt`], never the record.
//! Opening is therefore proportional to the size of the last segment, not the log.
//!
//! **Reading.** [`Wal::reader`] starts at any LSN and returns acknowledged records in
//! order; its position is just an LSN, so a consumer that stores it resumes there
//! after a restart. [`Wal::wait_for`] lets a follower wait for new records.
//!
//! **Checkpoints.** [`Wal::checkpoint`] records (durably) that everything up to an
//! LSN has been applied elsewhere and deletes the segments wholly below it; the
//! segment being written is never deleted. [`Recovery::checkpoint`] tells the next
//! start where to replay from.
//!
//! **Bounded memory.** Appends waiting for the writer hold at most
//! [`WalConfig::pending_bytes_max`] bytes; beyond that, [`Wal::append`] waits.
//!
//! **One writer per directory.** Opening takes an exclusive `flock` on `LOCK` in the
//! directory; a second open, from this process or another, is [`WalError::Locked`].
//! The kernel drops the lock when the process dies, so a crash never leaves it held.
//!
//! **A failed write or sync poisons the log.** After an I/O error the writer stops
//! and every later append fails with [`WalError::Poisoned`]: after a failed
//! `fdatasync` Linux may have dropped the dirty pages, so retrying could acknowledge
//! data that is not on disk. Reopening recovers from what the files hold.

mod reader;
pub(crate) mod segment;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::{Semaphore, oneshot, watch};

pub use reader::{Reader, Record};
pub use segment::DamageKind;

use writer::{Pending, Queue};

/// A record's position in the log: 1 for the first record ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The first record's LSN.
    pub const FIRST: Self = Self(1);

    /// The LSN after this one.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` every batch before acknowledging it (the default).
    EveryBatch,
    /// Acknowledge after `write`; `fdatasync` at most this long after a write.
    Interval(Duration),
    /// Acknowledge after `write`; never sync except when sealing a segment with
    /// `EveryBatch`/`Interval` or on [`Wal::close`].
    Never,
}

/// Where and how a log is kept.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// The directory holding the segments (created if missing).
    pub dir: PathBuf,
    /// A segment is sealed and a new one started once it reaches this size.
    /// Default 64 MiB; at least 4 KiB.
    pub segment_bytes: u64,
    /// The largest record accepted. Default 16 MiB.
    pub record_bytes_max: u32,
    /// The most bytes of records waiting for the writer. Default 64 MiB; at least
    /// `record_bytes_max`.
    pub pending_bytes_max: usize,
    /// The most bytes the writer takes into one batch. Default 4 MiB.
    pub batch_bytes_max: usize,
    /// When records become durable. Default [`SyncPolicy::EveryBatch`].
    pub sync: SyncPolicy,
    /// How long the writer may wait for more appends when fewer are queued than it
    /// wrote last time (PostgreSQL's `commit_delay`): appenders whose previous record
    /// was just acknowledged get to join the next sync instead of forming a second,
    /// half-sized group. Zero (the default) never waits.
    pub commit_delay: Duration,
}

impl WalConfig {
    /// The defaults, in `dir`.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            record_bytes_max: 16 << 20,
            pending_bytes_max: 64 << 20,
            batch_bytes_max: 4 << 20,
            sync: SyncPolicy::EveryBatch,
            commit_delay: Duration::ZERO,
        }
    }

    fn validate(&self) -> Result<(), WalError> {
        let bad = |what: String| Err(WalError::Config(what));
        if self.segment_bytes < 4096 {
            return bad(format!("segment_bytes must be at least 4096, got {}", self.segment_bytes));
        }
        if self.record_bytes_max == 0 || self.record_bytes_max > u32::MAX - 64 {
            return bad(format!("record_bytes_max out of range: {}", self.record_bytes_max));
        }
        if self.pending_bytes_max < self.record_bytes_max as usize
            || self.pending_bytes_max > Semaphore::MAX_PERMITS
        {
            return bad(format!(
                "pending_bytes_max ({}) must be at least record_bytes_max ({})",
                self.pending_bytes_max, self.record_bytes_max
            ));
        }
        if self.batch_bytes_max == 0 {
            return bad("batch_bytes_max must be positive".to_owned());
        }
        if let SyncPolicy::Interval(d) = self.sync
            && d.is_zero()
        {
            return bad("a sync interval must be positive".to_owned());
        }
        Ok(())
    }
}

/// Why a log operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A setting is out of range.
    #[error("invalid WAL configuration: {0}")]
    Config(String),
    /// A record is larger than `record_bytes_max`.
    #[error("record of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The record's size.
        len: usize,
        /// The configured maximum.
        max: u32,
    },
    /// The file system failed.
    #[error("WAL I/O failed while {context}")]
    Io {
        /// What the log was doing.
        context: &'static str,
        /// The error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// An earlier write or sync failed; nothing more is appended until reopened.
    #[error("the WAL stopped after an I/O failure; reopen it to recover")]
    Poisoned(#[source] Arc<std::io::Error>),
    /// The log is closed.
    #[error("the WAL is closed")]
    Closed,
    /// Another open log (in this or another process) holds the directory.
    #[error("the WAL directory {0} is in use by another process or handle")]
    Locked(PathBuf),
    /// A sealed segment is damaged where a reader needed it.
    #[error("WAL segment {segment} is damaged at byte {offset} ({kind})")]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        kind: DamageKind,
    },
    /// The records asked for were deleted by a checkpoint.
    #[error("record {requested} was truncated; the oldest kept is {oldest}")]
    Truncated {
        /// The LSN asked for.
        requested: Lsn,
        /// The oldest LSN still kept.
        oldest: Lsn,
    },
    /// The record asked for has not been acknowledged yet.
    #[error("record {requested} is beyond the last acknowledged record {last}")]
    Beyond {
        /// The LSN asked for.
        requested: Lsn,
        /// The last acknowledged LSN (0 when the log is empty).
        last: u64,
    },
}

impl WalError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |e| Self::Io { context, source: Arc::new(e) }
    }
}

/// Damage found, and cut, when opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment where the valid log ends.
    pub segment: PathBuf,
    /// The byte offset in it where the damage starts (the file now ends there).
    pub offset: u64,
    /// What is wrong there.
    pub kind: DamageKind,
    /// Bytes cut from that segment.
    pub bytes_cut: u64,
    /// Later segments renamed to `*.wal.damaged`.
    pub moved_aside: Vec<PathBuf>,
}

/// What [`Wal::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The last record kept, `None` for an empty log.
    pub last_lsn: Option<Lsn>,
    /// The oldest record kept (after checkpoints deleted older segments).
    pub oldest_lsn: Lsn,
    /// The last checkpoint recorded: replay from the record after it.
    pub checkpoint: Option<Lsn>,
    /// Damage cut from the tail, if any.
    pub damage: Option<Damage>,
}

/// Counters since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records acknowledged.
    pub records: u64,
    /// Batches written (one `write` each, outside segment rolls).
    pub batches: u64,
    /// `fdatasync` calls.
    pub syncs: u64,
    /// Record bytes acknowledged (payloads, without frames).
    pub bytes: u64,
    /// The last acknowledged LSN.
    pub acked_lsn: u64,
    /// The last LSN an `fdatasync` has covered (what survives a power failure). Under
    /// `EveryBatch` it never trails `acked_lsn` once an append has returned; under
    /// `Interval` and `Never` the records between the two are what a power failure
    /// now would take (a process crash takes none: they are in the OS's cache).
    pub synced_lsn: u64,
}

/// The counters behind [`WalStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub records: AtomicU64,
    pub batches: AtomicU64,
    pub syncs: AtomicU64,
    pub bytes: AtomicU64,
}

/// The segments on disk: first LSN → path, in order.
pub(crate) type Segments = std::collections::BTreeMap<u64, PathBuf>;

/// What the log's handles, readers and writer thread share.
pub(crate) struct Shared {
    pub config: WalConfig,
    pub segments: RwLock<Segments>,
    /// The last acknowledged LSN (0: none yet).
    pub acked: AtomicU64,
    /// The last LSN covered by an `fdatasync` (recovered records count as synced).
    pub synced: AtomicU64,
    pub acked_tx: watch::Sender<u64>,
    pub queue: Mutex<Queue>,
    pub wake: Condvar,
    pub budget: Arc<Semaphore>,
    /// Serialises checkpoints and segment deletion against readers opening files.
    pub checkpoint: Mutex<Option<Lsn>>,
    /// The directory lock, held while the log is open (released when dropped, or by
    /// the kernel when the process dies).
    _lock: std::fs::File,
    pub counters: Counters,
}

/// A write-ahead log. Cheap to clone; the writer thread stops when the last handle
/// is closed or dropped, after writing and syncing what was queued.
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
    _handle: Arc<writer::Handle>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.config.dir)
            .field("acked", &self.shared.acked.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

const CHECKPOINT_FILE: &str = "checkpoint";

impl Wal {
    /// Opens (or creates) the log in `config.dir`, recovering its tail.
    ///
    /// # Errors
    /// A setting is out of range, or the directory cannot be read or written.
    pub fn open(config: WalConfig) -> Result<(Self, Recovery), WalError> {
        config.validate()?;
        std::fs::create_dir_all(&config.dir).map_err(WalError::io("creating the directory"))?;
        let lock = lock_dir(&config.dir)?;
        let checkpoint = read_checkpoint(&config.dir)?;
        let (segments, damage, tail) = writer::recover(&config)?;
        let oldest = segments.keys().next().copied().unwrap_or(tail.next_lsn);
        let last = tail.next_lsn - 1;
        let recovery = Recovery {
            last_lsn: (last > 0).then_some(Lsn(last)),
            oldest_lsn: Lsn(oldest),
            checkpoint,
            damage,
        };
        let (acked_tx, _) = watch::channel(last);
        let shared = Arc::new(Shared {
            budget: Arc::new(Semaphore::new(config.pending_bytes_max)),
            config,
            segments: RwLock::new(segments),
            acked: AtomicU64::new(last),
            synced: AtomicU64::new(last),
            acked_tx,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            checkpoint: Mutex::new(checkpoint),
            counters: Counters::default(),
            _lock: lock,
        });
        let handle = writer::Handle::start(Arc::clone(&shared), tail)?;
        Ok((Self { shared, _handle: Arc::new(handle) }, recovery))
    }

    /// Appends `record` and waits until it is acknowledged under the sync policy.
    ///
    /// # Errors
    /// [`WalError::TooLarge`], [`WalError::Closed`], or [`WalError::Poisoned`] after
    /// an I/O failure.
    pub async fn append(&self, record: impl Into<Vec<u8>>) -> Result<Lsn, WalError> {
        let acked = self.submit(record.into()).await?;
        acked.await.unwrap_or(Err(WalError::Closed))
    }

    /// Appends `records`, in order, and waits until all are acknowledged: they are
    /// queued together, so they share the writer's syncs instead of paying one each.
    ///
    /// # Errors
    /// As [`Wal::append`]; records before a failing one may have been appended.
    pub async fn append_many(&self, records: Vec<Vec<u8>>) -> Result<Vec<Lsn>, WalError> {
        let max = self.shared.config.record_bytes_max;
        if let Some(big) = records.iter().find(|r| r.len() > max as usize) {
            return Err(WalError::TooLarge { len: big.len(), max });
        }
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            pending.push(self.submit(record).await?);
        }
        let mut lsns = Vec::with_capacity(pending.len());
        for acked in pending {
            lsns.push(acked.await.unwrap_or(Err(WalError::Closed))?);
        }
        Ok(lsns)
    }

    /// Queues `payload` for the writer (waiting for room in the pending budget) and
    /// returns where its acknowledgement arrives.
    async fn submit(
        &self,
        payload: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<Lsn, WalError>>, WalError> {
        let max = self.shared.config.record_bytes_max;
        if payload.len() > max as usize {
            return Err(WalError::TooLarge { len: payload.len(), max });
        }
        // Fits: record_bytes_max < u32::MAX, and every record costs at least one permit.
        let cost = u32::try_from(payload.len().max(1)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.shared.budget)
            .acquire_many_owned(cost)
            .await
            .map_err(|_| WalError::Closed)?;
        let (done, acked) = oneshot::channel();
        let wake = {
            let mut queue = self.shared.queue.lock();
            if let Some(e) = &queue.poisoned {
                return Err(WalError::Poisoned(Arc::clone(e)));
            }
            if queue.closed {
                return Err(WalError::Closed);
            }
            queue.bytes += payload.len();
            queue.items.push_back(Pending { payload, done, _permit: permit });
            queue.items.len() >= queue.wake_at
        };
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(acked)
    }

    /// Whether [`Wal::checkpoint`] at `lsn` would delete a segment: some segment other
    /// than the last holds only records up to `lsn`.
    #[must_use]
    pub fn would_free(&self, lsn: Lsn) -> bool {
        let segments = self.shared.segments.read();
        segments.keys().nth(1).is_some_and(|&second| second <= lsn.0 + 1)
    }

    /// The last acknowledged record, `None` while the log is empty.
    #[must_use]
    pub fn last_lsn(&self) -> Option<Lsn> {
        let last = self.shared.acked.load(Ordering::Acquire);
        (last > 0).then_some(Lsn(last))
    }

    /// Records, batches, syncs and bytes since the log was opened: records per
    /// sync is how much group commit is sharing.
    #[must_use]
    pub fn stats(&self) -> WalStats {
        let c = &self.shared.counters;
        WalStats {
            records: c.records.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            acked_lsn: self.shared.acked.load(Ordering::Acquire),
            synced_lsn: self.shared.synced.load(Ordering::Acquire),
        }
    }

    /// The oldest record still kept.
    #[must_use]
    pub fn oldest_lsn(&self) -> Lsn {
        let segments = self.shared.segments.read();
        Lsn(segments
            .keys()
            .next()
            .copied()
            .unwrap_or_else(|| self.shared.acked.load(Ordering::Acquire) + 1))
    }

    /// Waits until record `lsn` is acknowledged (returns at once if it is).
    ///
    /// # Errors
    /// [`WalError::Closed`] if the log closes first.
    pub async fn wait_for(&self, lsn: Lsn) -> Result<(), WalError> {
        let mut rx = self.shared.acked_tx.subscribe();
        rx.wait_for(|acked| *acked >= lsn.0).await.map(drop).map_err(|_| WalError::Closed)
    }

    /// A reader positioned at `from`.
    ///
    /// # Errors
    /// [`WalError::Truncated`] when `from` was deleted by a checkpoint.
    pub fn reader(&self, from: Lsn) -> Result<Reader, WalError> {
        Reader::new(Arc::clone(&self.shared), from)
    }

    /// Records that every record up to `lsn` is applied elsewhere, durably, and
    /// deletes the segments holding only such records.
    ///
    /// # Errors
    /// `lsn` is beyond the last acknowledged record, or the file system failed.
    pub fn checkpoint(&self, lsn: Lsn) -> Result<(), WalError> {
        let last = self.shared.acked.load(Ordering::Acquire);
        if lsn.0 > last {
            return Err(WalError::Beyond { requested: lsn, last });
        }
        let mut current = self.shared.checkpoint.lock();
        if current.is_some_and(|c| c >= lsn) {
            return Ok(());
        }
        write_checkpoint(&self.shared.config.dir, lsn)?;
        *current = Some(lsn);
        // A segment may go when the next one starts at or before lsn + 1.
        let doomed: Vec<(u64, PathBuf)> = {
            let segments = self.shared.segments.read();
            let firsts: Vec<u64> = segments.keys().copied().collect();
            firsts
                .windows(2)
                .filter(|w| w[1] <= lsn.0 + 1)
                .filter_map(|w| segments.get(&w[0]).map(|p| (w[0], p.clone())))
                .collect()
        };
        for (first, path) in doomed {
            self.shared.segments.write().remove(&first);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(WalError::io("deleting a checkpointed segment")(e)),
            }
        }
        sync_dir(&self.shared.config.dir)
    }

    /// The last checkpoint recorded.
    #[must_use]
    pub fn checkpointed(&self) -> Option<Lsn> {
        *self.shared.checkpoint.lock()
    }

    /// Stops accepting appends, writes and syncs everything queued, and waits for the
    /// writer to finish.
    ///
    /// # Errors
    /// The final write or sync failed.
    pub async fn close(self) -> Result<(), WalError> {
        let handle = Arc::clone(&self._handle);
        drop(self);
        tokio::task::spawn_blocking(move || handle.close()).await.unwrap_or(Err(WalError::Closed))
    }

    /// The directory of this log.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.shared.config.dir
    }
}

/// Takes the directory's `LOCK` file exclusively: two writers on one log would
/// interleave their records.
fn lock_dir(dir: &Path) -> Result<std::fs::File, WalError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(WalError::io("opening the lock file"))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(WalError::Locked(dir.to_path_buf())),
        Err(e) => Err(WalError::io("locking the directory")(e.into())),
    }
}

fn read_checkpoint(dir: &Path) -> Result<Option<Lsn>, WalError> {
    let bytes = match std::fs::read(dir.join(CHECKPOINT_FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(WalError::io("reading the checkpoint")(e)),
    };
    // lsn u64 | crc32c u32: written whole by rename, so a bad one is outside damage.
    if bytes.len() != 12 || bytes[8..12] != crc32c::crc32c(&bytes[0..8]).to_le_bytes() {
        return Err(WalError::Corrupt {
            segment: dir.join(CHECKPOINT_FILE),
            offset: 0,
            kind: DamageKind::Checksum,
        });
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&bytes[0..8]);
    Ok(Some(Lsn(u64::from_le_bytes(lsn))))
}

fn write_checkpoint(dir: &Path, lsn: Lsn) -> Result<(), WalError> {
    use std::io::Write;
    let mut bytes = lsn.0.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    let tmp = dir.join("checkpoint.tmp");
    let io = WalError::io;
    let mut file = std::fs::File::create(&tmp).map_err(io("writing the checkpoint"))?;
    file.write_all(&bytes).map_err(io("writing the checkpoint"))?;
    file.sync_all().map_err(io("syncing the checkpoint"))?;
    std::fs::rename(&tmp, dir.join(CHECKPOINT_FILE)).map_err(io("renaming the checkpoint"))?;
    sync_dir(dir)
}

/// Makes a directory's entries (created, renamed, deleted files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(WalError::io("syncing the directory"))
}
