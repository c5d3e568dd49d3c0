//! Reading acknowledged records in order, from any position.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::segment::{self, FRAME_LEN, HEADER_LEN};
use super::{Lsn, Shared, WalError};

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its position.
    pub lsn: Lsn,
    /// Its bytes, exactly as appended.
    pub payload: Vec<u8>,
}

/// The segment a reader has open.
struct Open {
    first: u64,
    path: PathBuf,
    file: File,
    /// The byte offset of the record the reader returns next.
    offset: u64,
    /// The file length last seen.
    len: u64,
    chunk: segment::Chunked,
}

/// Reads acknowledged records in LSN order. Its position is an LSN
/// ([`Reader::position`]): store it, and a new reader resumes there after a restart.
pub struct Reader {
    shared: Arc<Shared>,
    next: u64,
    open: Option<Open>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("next", &self.next).finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, from: Lsn) -> Result<Self, WalError> {
        let mut reader = Self { shared, next: from.0.max(1), open: None };
        reader.check_kept()?;
        Ok(reader)
    }

    /// The LSN [`Reader::next_record`] returns next.
    #[must_use]
    pub fn position(&self) -> Lsn {
        Lsn(self.next)
    }

    fn check_kept(&mut self) -> Result<(), WalError> {
        let segments = self.shared.segments.read();
        match segments.keys().next() {
            Some(&oldest) if self.next < oldest => {
                Err(WalError::Truncated { requested: Lsn(self.next), oldest: Lsn(oldest) })
            }
            _ => Ok(()),
        }
    }

    /// The next acknowledged record, or `None` when the reader has caught up.
    ///
    /// # Errors
    /// [`WalError::Truncated`] when a checkpoint deleted the records at the reader's
    /// position; [`WalError::Corrupt`] when a segment is damaged there (the record is
    /// never returned); [`WalError::Io`].
    pub fn next_record(&mut self) -> Result<Option<Record>, WalError> {
        if self.next > self.shared.acked.load(Ordering::Acquire) {
            return Ok(None);
        }
        // A few rounds: a stale file length is refreshed once, and the record may be
        // the first of the next segment.
        let mut reread = false;
        for _ in 0..4 {
            self.open_segment()?;
            let Some(open) = self.open.as_mut() else { break };
            let max = self.shared.config.record_bytes_max;
            let read = segment::read_record(
                &open.file,
                &mut open.chunk,
                open.len,
                open.offset,
                self.next,
                max,
            )
            .map_err(WalError::io("reading a segment"))?;
            match read {
                Ok(Some(payload)) => {
                    open.offset += FRAME_LEN + payload.len() as u64;
                    let lsn = Lsn(self.next);
                    self.next += 1;
                    return Ok(Some(Record { lsn, payload }));
                }
                Ok(None) | Err(segment::DamageKind::TornRecord) => {
                    let len =
                        open.file.metadata().map_err(WalError::io("reading a segment"))?.len();
                    if len == open.len {
                        // The segment really ends here: the record opens the next one.
                        self.open = None;
                    } else {
                        open.len = len;
                        open.chunk.clear();
                    }
                }
                // Read-ahead may hold bytes of a batch that was still being written:
                // read once more from the file before calling it damage.
                Err(_) if !reread => {
                    reread = true;
                    open.chunk.clear();
                }
                Err(kind) => {
                    return Err(WalError::Corrupt {
                        segment: open.path.clone(),
                        offset: open.offset,
                        kind,
                    });
                }
            }
        }
        // Acknowledged but not found where it must be: the log's files changed under it.
        Err(WalError::Corrupt {
            segment: segment::path(&self.shared.config.dir, self.next),
            offset: 0,
            kind: segment::DamageKind::TornRecord,
        })
    }

    /// Opens the segment holding `next` unless it is open, positioned at `next`.
    fn open_segment(&mut self) -> Result<(), WalError> {
        let (first, path) = {
            let segments = self.shared.segments.read();
            match segments.range(..=self.next).next_back() {
                Some((&first, path)) => (first, path.clone()),
                None => {
                    let oldest = segments.keys().next().copied().unwrap_or(self.next);
                    return Err(WalError::Truncated {
                        requested: Lsn(self.next),
                        oldest: Lsn(oldest),
                    });
                }
            }
        };
        if self.open.as_ref().is_some_and(|o| o.first == first) {
            return Ok(());
        }
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Deleted by a checkpoint since the lookup.
                drop(e);
                self.check_kept()?;
                return Err(WalError::Truncated { requested: Lsn(self.next), oldest: Lsn(first) });
            }
            Err(e) => return Err(WalError::io("opening a segment")(e)),
        };
        let len = file.metadata().map_err(WalError::io("reading a segment"))?.len();
        let mut open =
            Open { first, path, file, offset: HEADER_LEN, len, chunk: segment::Chunked::new() };
        let mut header = [0u8; HEADER_LEN as usize];
        let header_ok = std::os::unix::fs::FileExt::read_exact_at(&open.file, &mut header, 0)
            .map(|()| segment::check_header(&header, first))
            .unwrap_or(false);
        if !header_ok {
            return Err(WalError::Corrupt {
                segment: open.path,
                offset: 0,
                kind: segment::DamageKind::BadHeader,
            });
        }
        // Skip, verifying, to the record wanted.
        let max = self.shared.config.record_bytes_max;
        for lsn in first..self.next {
            match segment::read_record(&open.file, &mut open.chunk, open.len, open.offset, lsn, max)
                .map_err(WalError::io("reading a segment"))?
            {
                Ok(Some(payload)) => open.offset += FRAME_LEN + payload.len() as u64,
                Ok(None) | Err(_) => {
                    return Err(WalError::Corrupt {
                        segment: open.path,
                        offset: open.offset,
                        kind: segment::DamageKind::TornRecord,
                    });
                }
            }
        }
        self.open = Some(open);
        Ok(())
    }
}
