//! The writer thread (group commit) and recovery at open.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::segment::{self, DamageKind, FRAME_LEN, HEADER_LEN};
use super::{Damage, Lsn, Segments, Shared, SyncPolicy, WalConfig, WalError, sync_dir};

/// An append waiting for the writer.
pub(crate) struct Pending {
    pub payload: Vec<u8>,
    pub done: oneshot::Sender<Result<Lsn, WalError>>,
    /// Released when the append is answered: bounds the bytes waiting.
    pub _permit: OwnedSemaphorePermit,
}

/// Appends waiting for the writer, and its state.
pub(crate) struct Queue {
    pub items: VecDeque<Pending>,
    pub bytes: usize,
    pub closed: bool,
    pub poisoned: Option<Arc<std::io::Error>>,
    /// An appender wakes the writer only once this many appends are queued: 1 while
    /// it idles, the group it gathers for under a commit delay, never while it is
    /// busy writing (it looks at the queue again when done). Saves a futex wake per
    /// append.
    pub wake_at: usize,
}

impl Default for Queue {
    fn default() -> Self {
        Self { items: VecDeque::new(), bytes: 0, closed: false, poisoned: None, wake_at: 1 }
    }
}

/// Where the next record goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tail {
    pub next_lsn: u64,
    first_lsn: u64,
    len: u64,
}

/// Finds the segments, cuts damage, and returns where appending resumes.
pub(crate) fn recover(config: &WalConfig) -> Result<(Segments, Option<Damage>, Tail), WalError> {
    let dir = &config.dir;
    let mut segments = Segments::new();
    for entry in std::fs::read_dir(dir).map_err(WalError::io("listing segments"))? {
        let entry = entry.map_err(WalError::io("listing segments"))?;
        if let Some(first) = entry.file_name().to_str().and_then(segment::parse_name) {
            segments.insert(first, entry.path());
        }
    }
    let mut damage = None;
    // Headers first: a segment whose header is bad ends the log there.
    let bad_header = segments.iter().find_map(|(&first, path)| {
        let ok = File::open(path).and_then(|f| {
            let mut h = [0u8; HEADER_LEN as usize];
            f.read_exact_at(&mut h, 0).map(|()| segment::check_header(&h, first))
        });
        match ok {
            Ok(true) => None,
            Ok(false) => Some((first, DamageKind::BadHeader)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Some((first, DamageKind::TornHeader))
            }
            Err(_) => Some((first, DamageKind::BadHeader)),
        }
    });
    let mut resume_at = None;
    if let Some((first, kind)) = bad_header {
        let path = segment::path(dir, first);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let moved = move_aside(&mut segments, first, dir)?;
        resume_at = Some(first);
        damage =
            Some(Damage { segment: path, offset: 0, kind, bytes_cut: len, moved_aside: moved });
    }
    let Some((&first, path)) = segments.iter().next_back() else {
        // No valid segment: start one where the log should resume.
        let next = resume_at.unwrap_or(1);
        create_segment(dir, next, true)?;
        segments.insert(next, segment::path(dir, next));
        return Ok((segments, damage, Tail { next_lsn: next, first_lsn: next, len: HEADER_LEN }));
    };
    let path = path.clone();
    let scan = segment::scan(&path, first, config.record_bytes_max)
        .map_err(WalError::io("scanning the last segment"))?;
    if let Some(kind) = scan.damage {
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(WalError::io("opening a damaged segment"))?;
        file.set_len(scan.valid_len).map_err(WalError::io("cutting a damaged tail"))?;
        file.sync_all().map_err(WalError::io("cutting a damaged tail"))?;
        tracing::warn!(
            segment = %path.display(),
            offset = scan.valid_len,
            bytes_cut = scan.file_len - scan.valid_len,
            %kind,
            "WAL recovery cut a damaged tail"
        );
        // Damage in the last segment is reported even if a bad header came after it.
        let moved_aside = damage.take().map(|d| d.moved_aside).unwrap_or_default();
        damage = Some(Damage {
            segment: path,
            offset: scan.valid_len,
            kind,
            bytes_cut: scan.file_len - scan.valid_len,
            moved_aside,
        });
    }
    let tail = Tail { next_lsn: first + scan.records, first_lsn: first, len: scan.valid_len };
    Ok((segments, damage, tail))
}

/// Renames the segment `from` and every later one to `*.wal.damaged`.
fn move_aside(segments: &mut Segments, from: u64, dir: &Path) -> Result<Vec<PathBuf>, WalError> {
    let doomed: Vec<u64> = segments.range(from..).map(|(&k, _)| k).collect();
    let mut moved = Vec::new();
    for first in doomed {
        let Some(path) = segments.remove(&first) else { continue };
        let mut target = path.with_extension("wal.damaged");
        let mut n = 1;
        while target.exists() {
            target = path.with_extension(format!("wal.damaged.{n}"));
            n += 1;
        }
        std::fs::rename(&path, &target).map_err(WalError::io("moving a damaged segment aside"))?;
        tracing::warn!(from = %path.display(), to = %target.display(), "WAL segment moved aside");
        moved.push(target);
    }
    sync_dir(dir)?;
    Ok(moved)
}

/// Creates the segment starting at `first_lsn` with its header; `durable` syncs the
/// file and the directory entry.
fn create_segment(dir: &Path, first_lsn: u64, durable: bool) -> Result<File, WalError> {
    let path = segment::path(dir, first_lsn);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .or_else(|e| {
            // A header-only leftover of a crash while rolling is rewritten.
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                OpenOptions::new().write(true).truncate(true).open(&path)
            } else {
                Err(e)
            }
        })
        .map_err(WalError::io("creating a segment"))?;
    file.write_all(&segment::header(first_lsn))
        .map_err(WalError::io("writing a segment header"))?;
    if durable {
        file.sync_all().map_err(WalError::io("syncing a new segment"))?;
        sync_dir(dir)?;
    }
    Ok(file)
}

/// The writer thread's handle: closing joins it.
pub(crate) struct Handle {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<Result<(), WalError>>>>,
}

impl Handle {
    pub(crate) fn start(shared: Arc<Shared>, tail: Tail) -> Result<Self, WalError> {
        let path = segment::path(&shared.config.dir, tail.first_lsn);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(WalError::io("opening the last segment"))?;
        let mut writer = Writer {
            shared: Arc::clone(&shared),
            file,
            first_lsn: tail.first_lsn,
            len: tail.len,
            records_in_segment: tail.next_lsn - tail.first_lsn,
            next_lsn: tail.next_lsn,
            unsynced: false,
            last_sync: Instant::now(),
            buf: Vec::new(),
            last_batch: 0,
        };
        let thread = std::thread::Builder::new()
            .name("girder-wal".to_owned())
            .spawn(move || writer.run())
            .map_err(WalError::io("starting the writer thread"))?;
        Ok(Self { shared, thread: Mutex::new(Some(thread)) })
    }

    /// Stops appends, lets the writer drain and sync, and joins it.
    pub(crate) fn close(&self) -> Result<(), WalError> {
        self.shared.queue.lock().closed = true;
        self.shared.wake.notify_all();
        match self.thread.lock().take() {
            Some(thread) => thread.join().unwrap_or(Err(WalError::Closed)),
            None => Ok(()),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The writer drains what is queued, syncs and exits on its own.
        self.shared.queue.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    first_lsn: u64,
    len: u64,
    records_in_segment: u64,
    next_lsn: u64,
    unsynced: bool,
    last_sync: Instant,
    buf: Vec<u8>,
    /// Records in the last batch: the group size a commit delay waits for.
    last_batch: usize,
}

/// What the writer does next.
enum Step {
    Batch(Vec<Pending>),
    SyncDue,
    Stop,
}

impl Writer {
    fn run(&mut self) -> Result<(), WalError> {
        loop {
            let result = match self.next_step() {
                Step::Batch(batch) => self.write_batch(batch),
                Step::SyncDue => self.sync().map_err(|e| self.poison(e, Vec::new())),
                Step::Stop => {
                    // Closing makes everything written durable, whatever the policy.
                    let synced = if self.unsynced { self.sync() } else { Ok(()) };
                    return synced.map_err(|e| self.poison(e, Vec::new()));
                }
            };
            result?;
        }
    }

    fn next_step(&mut self) -> Step {
        let policy = self.shared.config.sync;
        let delay = self.shared.config.commit_delay;
        let mut queue = self.shared.queue.lock();
        let mut gather_until = None;
        loop {
            if !queue.items.is_empty() && !queue.closed && queue.items.len() < self.last_batch {
                // Fewer than last time: give the rest a moment to arrive.
                let until = *gather_until.get_or_insert_with(|| Instant::now() + delay);
                if !delay.is_zero() && Instant::now() < until {
                    queue.wake_at = self.last_batch;
                    self.shared.wake.wait_until(&mut queue, until);
                    continue;
                }
            }
            if !queue.items.is_empty() {
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some(item) = queue.items.front() {
                    if !batch.is_empty()
                        && bytes + item.payload.len() > self.shared.config.batch_bytes_max
                    {
                        break;
                    }
                    bytes += item.payload.len();
                    if let Some(item) = queue.items.pop_front() {
                        batch.push(item);
                    }
                }
                queue.bytes -= bytes;
                queue.wake_at = usize::MAX;
                self.last_batch = batch.len();
                return Step::Batch(batch);
            }
            if queue.closed {
                return Step::Stop;
            }
            queue.wake_at = 1;
            match policy {
                SyncPolicy::Interval(every) if self.unsynced => {
                    let due = self.last_sync + every;
                    if Instant::now() >= due {
                        return Step::SyncDue;
                    }
                    self.shared.wake.wait_until(&mut queue, due);
                }
                _ => self.shared.wake.wait(&mut queue),
            }
        }
    }

    fn write_batch(&mut self, batch: Vec<Pending>) -> Result<(), WalError> {
        let mut acks = Vec::with_capacity(batch.len());
        self.buf.clear();
        let mut written = Ok(());
        for item in batch {
            let frame = FRAME_LEN + item.payload.len() as u64;
            let full = self.len + self.buf.len() as u64 + frame > self.shared.config.segment_bytes;
            if full && (self.records_in_segment > 0 || !self.buf.is_empty()) {
                written = self.flush_buf().and_then(|()| self.roll());
                if written.is_err() {
                    acks.push((self.next_lsn, item));
                    break;
                }
            }
            segment::encode(&mut self.buf, self.next_lsn, &item.payload);
            self.records_in_segment += 1;
            acks.push((self.next_lsn, item));
            self.next_lsn += 1;
        }
        let durable =
            written.and_then(|()| self.flush_buf()).and_then(|()| match self.shared.config.sync {
                SyncPolicy::EveryBatch => self.sync(),
                SyncPolicy::Interval(every) => {
                    self.unsynced = true;
                    if self.last_sync.elapsed() >= every { self.sync() } else { Ok(()) }
                }
                SyncPolicy::Never => {
                    self.unsynced = true;
                    Ok(())
                }
            });
        if let Err(e) = durable {
            let pending = acks.into_iter().map(|(_, item)| item).collect();
            return Err(self.poison(e, pending));
        }
        let last = self.next_lsn - 1;
        let counters = &self.shared.counters;
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.records.fetch_add(acks.len() as u64, Ordering::Relaxed);
        let bytes: usize = acks.iter().map(|(_, item)| item.payload.len()).sum();
        counters.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.shared.acked.store(last, Ordering::Release);
        self.shared.acked_tx.send_replace(last);
        for (lsn, item) in acks {
            let _ = item.done.send(Ok(Lsn(lsn)));
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<(), std::io::Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all_at(&self.buf, self.len)?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn sync(&mut self) -> Result<(), std::io::Error> {
        self.file.sync_data()?;
        self.shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
        // Every frame written so far is in this file or an earlier, sealed segment.
        self.shared.synced.store(self.next_lsn.saturating_sub(1), Ordering::Release);
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Seals the current segment and starts the next at `next_lsn`.
    fn roll(&mut self) -> Result<(), std::io::Error> {
        let durable = self.shared.config.sync != SyncPolicy::Never;
        if durable {
            self.sync()?;
        }
        let dir = self.shared.config.dir.clone();
        let file = create_segment(&dir, self.next_lsn, durable).map_err(into_io)?;
        self.shared.segments.write().insert(self.next_lsn, segment::path(&dir, self.next_lsn));
        self.file = file;
        self.first_lsn = self.next_lsn;
        self.len = HEADER_LEN;
        self.records_in_segment = 0;
        tracing::debug!(first_lsn = self.first_lsn, "WAL segment started");
        Ok(())
    }

    /// Stops the log after an I/O failure: fails `pending` and everything queued.
    fn poison(&self, e: std::io::Error, pending: Vec<Pending>) -> WalError {
        tracing::error!(error = &e as &dyn std::error::Error, "WAL write failed; log stopped");
        let e = Arc::new(e);
        let queued: Vec<Pending> = {
            let mut queue = self.shared.queue.lock();
            queue.poisoned = Some(Arc::clone(&e));
            queue.bytes = 0;
            queue.items.drain(..).collect()
        };
        for item in pending.into_iter().chain(queued) {
            let _ = item.done.send(Err(WalError::Poisoned(Arc::clone(&e))));
        }
        WalError::Poisoned(e)
    }
}

fn into_io(e: WalError) -> std::io::Error {
    match e {
        WalError::Io { source, .. } | WalError::Poisoned(source) => {
            std::io::Error::new(source.kind(), source.to_string())
        }
        other => std::io::Error::other(other.to_string()),
    }
}
