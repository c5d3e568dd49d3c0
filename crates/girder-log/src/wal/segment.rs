//! The bytes on disk: segment headers, record frames, and the scan that finds where
//! the valid part of a segment ends.
//!
//! A segment is a file named `<first lsn, 20 digits>.wal`:
//!
//! ```text
//! header (32 bytes): magic "GIRDWAL\0" | version u32 | reserved u32 | first_lsn u64
//!                    | crc32c of the 24 bytes before u32 | reserved u32
//! record:            len u32 | crc u32 | payload (len bytes)
//! ```
//!
//! Integers are little-endian. A record's CRC-32C covers its LSN, its length and its
//! payload, so a record is only valid at the position it was written for: a zeroed
//! page, a frame copied from elsewhere, or a stale frame from an older file never
//! passes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The first eight bytes of every segment.
pub(crate) const MAGIC: [u8; 8] = *b"GIRDWAL\0";
/// The format version this crate writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Bytes of a segment header.
pub(crate) const HEADER_LEN: u64 = 32;
/// Bytes of a record frame before its payload.
pub(crate) const FRAME_LEN: u64 = 8;
/// The file name suffix of a segment.
const SUFFIX: &str = ".wal";

/// What is wrong at the point where a segment stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// The file is shorter than a segment header.
    TornHeader,
    /// The header's magic, version, checksum or first LSN is wrong.
    BadHeader,
    /// The file ends inside a record frame or payload.
    TornRecord,
    /// A frame announces more bytes than the largest record allowed.
    BadLength,
    /// A record's checksum does not match its bytes.
    Checksum,
}

impl std::fmt::Display for DamageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TornHeader => "torn segment header",
            Self::BadHeader => "invalid segment header",
            Self::TornRecord => "torn record",
            Self::BadLength => "record length out of range",
            Self::Checksum => "record checksum mismatch",
        })
    }
}

/// The header bytes of a segment whose first record is `first_lsn`.
pub(crate) fn header(first_lsn: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a header read from a segment named for `first_lsn`.
pub(crate) fn check_header(h: &[u8], first_lsn: u64) -> bool {
    h.len() == HEADER_LEN as usize
        && h[0..8] == MAGIC
        && h[8..12] == VERSION.to_le_bytes()
        && h[16..24] == first_lsn.to_le_bytes()
        && h[24..28] == crc32c::crc32c(&h[0..24]).to_le_bytes()
}

/// The checksum of record `lsn` with `payload`.
pub(crate) fn record_crc(lsn: u64, payload: &[u8]) -> u32 {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut seed = [0u8; 12];
    seed[0..8].copy_from_slice(&lsn.to_le_bytes());
    seed[8..12].copy_from_slice(&len.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&seed), payload)
}

/// Appends the frame of record `lsn` to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, lsn: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(lsn, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The path of the segment starting at `first_lsn` in `dir`.
pub(crate) fn path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}{SUFFIX}"))
}

/// The first LSN a segment file name stands for, if it is one.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where a segment's valid records end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Valid records from the start of the segment.
    pub records: u64,
    /// The byte length of the valid part (header included).
    pub valid_len: u64,
    /// The file's length.
    pub file_len: u64,
    /// Why the valid part ends before the file does.
    pub damage: Option<DamageKind>,
}

/// Reads a segment through a read-ahead buffer: one `pread` per 256 KiB, not two per
/// record.
pub(crate) struct Chunked {
    start: u64,
    bytes: Vec<u8>,
}

/// Bytes read ahead at a time.
const READ_AHEAD: u64 = 256 << 10;

impl Chunked {
    pub(crate) const fn new() -> Self {
        Self { start: 0, bytes: Vec::new() }
    }

    /// `n` bytes at `offset` of `file` (whose length is `file_len`, and `offset + n`
    /// must not exceed it).
    fn get(&mut self, file: &File, file_len: u64, offset: u64, n: u64) -> std::io::Result<&[u8]> {
        let end = self.start + self.bytes.len() as u64;
        if offset < self.start || offset + n > end {
            let size = n.max(READ_AHEAD).min(file_len - offset);
            self.bytes.resize(usize::try_from(size).unwrap_or(usize::MAX), 0);
            file.read_exact_at(&mut self.bytes, offset)?;
            self.start = offset;
        }
        let from = usize::try_from(offset - self.start).unwrap_or(usize::MAX);
        let to = from + usize::try_from(n).unwrap_or(usize::MAX);
        Ok(&self.bytes[from..to])
    }

    /// Forgets what was read (the file may have changed at those offsets).
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
    }
}

/// Reads a record frame at `offset`, checking it is record `lsn`: `Ok(None)` at the
/// clean end of the file.
pub(crate) fn read_record(
    file: &File,
    chunk: &mut Chunked,
    file_len: u64,
    offset: u64,
    lsn: u64,
    record_bytes_max: u32,
) -> std::io::Result<Result<Option<Vec<u8>>, DamageKind>> {
    if offset == file_len {
        return Ok(Ok(None));
    }
    if offset + FRAME_LEN > file_len {
        return Ok(Err(DamageKind::TornRecord));
    }
    let frame = chunk.get(file, file_len, offset, FRAME_LEN)?;
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len > record_bytes_max {
        return Ok(Err(DamageKind::BadLength));
    }
    if offset + FRAME_LEN + u64::from(len) > file_len {
        return Ok(Err(DamageKind::TornRecord));
    }
    let payload = chunk.get(file, file_len, offset + FRAME_LEN, u64::from(len))?;
    if record_crc(lsn, payload) != crc {
        return Ok(Err(DamageKind::Checksum));
    }
    Ok(Ok(Some(payload.to_vec())))
}

/// Scans the segment at `path` (named for `first_lsn`) from its start.
pub(crate) fn scan(path: &Path, first_lsn: u64, record_bytes_max: u32) -> std::io::Result<Scan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut scan = Scan { records: 0, valid_len: 0, file_len, damage: None };
    if file_len < HEADER_LEN {
        scan.damage = Some(DamageKind::TornHeader);
        return Ok(scan);
    }
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut h, 0)?;
    if !check_header(&h, first_lsn) {
        scan.damage = Some(DamageKind::BadHeader);
        return Ok(scan);
    }
    let mut offset = HEADER_LEN;
    let mut chunk = Chunked::new();
    loop {
        match read_record(
            &file,
            &mut chunk,
            file_len,
            offset,
            first_lsn + scan.records,
            record_bytes_max,
        )? {
            Ok(None) => break,
            Ok(Some(payload)) => {
                offset += FRAME_LEN + payload.len() as u64;
                scan.records += 1;
            }
            Err(kind) => {
                scan.damage = Some(kind);
                break;
            }
        }
    }
    scan.valid_len = offset;
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let dir = Path::new("/x");
        let p = path(dir, 42);
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert_eq!(name, "00000000000000000042.wal");
        assert_eq!(parse_name(name), Some(42));
        for stranger in ["42.wal", "0000000000000000004x.wal", "00000000000000000042.tmp", ""] {
            assert_eq!(parse_name(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn a_header_is_tied_to_its_first_lsn() {
        let h = header(7);
        assert!(check_header(&h, 7));
        assert!(!check_header(&h, 8));
        let mut bad = h;
        bad[3] ^= 1;
        assert!(!check_header(&bad, 7));
    }

    #[test]
    fn a_record_checksum_binds_lsn_length_and_payload() {
        let c = record_crc(1, b"abc");
        assert_ne!(c, record_crc(2, b"abc"));
        assert_ne!(c, record_crc(1, b"abd"));
        assert_ne!(c, record_crc(1, b"ab"));
        // An all-zero frame is never a valid empty record.
        assert_ne!(record_crc(1, b""), 0);
    }
}
