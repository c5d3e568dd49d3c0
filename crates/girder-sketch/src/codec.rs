//! The frame every serialized sketch shares.
//!
//! ```text
//! magic "GSKT" (4) | kind (1) | version (1) | payload (…) | CRC-32C of all before (4, LE)
//! ```
//!
//! Integers in payloads are little-endian. The checksum is computed on write and
//! verified on read before any field is trusted; every field is then range-checked,
//! and lengths are compared with the bytes present before anything is allocated, so a
//! reader never allocates more than its input's size suggests.

use crate::error::DecodeError;

/// The first four bytes of every serialized sketch.
pub(crate) const MAGIC: [u8; 4] = *b"GSKT";
/// The format version of every sketch that has had one format so far.
pub(crate) const VERSION: u8 = 1;
const HEADER_LEN: usize = 6;
const CHECKSUM_LEN: usize = 4;

/// Which sketch a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Bloom = 1,
    CountMin = 2,
    HyperLogLog = 3,
    TopK = 4,
    CountingBloom = 5,
    ScalableBloom = 6,
}

/// Builds one frame.
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(kind: Kind, payload_len: usize) -> Self {
        Self::with_version(kind, VERSION, payload_len)
    }

    /// A frame in another format version than [`VERSION`], for a sketch whose payload
    /// changed.
    pub(crate) fn with_version(kind: Kind, version: u8, payload_len: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + payload_len + CHECKSUM_LEN);
        buf.extend_from_slice(&MAGIC);
        buf.push(kind as u8);
        buf.push(version);
        Self { buf }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        let crc = crc32c::crc32c(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// Reads the fields of one verified frame's payload, in order.
pub(crate) struct Reader<'a> {
    payload: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks magic, checksum, kind and version; the reader then yields the payload.
    pub(crate) fn open(bytes: &'a [u8], kind: Kind) -> Result<Self, DecodeError> {
        Self::open_versions(bytes, kind, &[VERSION]).map(|(reader, _)| reader)
    }

    /// [`Reader::open`] for a sketch with several formats: any of `versions` is
    /// accepted, and returned with the reader.
    pub(crate) fn open_versions(
        bytes: &'a [u8],
        kind: Kind,
        versions: &[u8],
    ) -> Result<(Self, u8), DecodeError> {
        let needed = HEADER_LEN + CHECKSUM_LEN;
        if bytes.len() < needed {
            return Err(DecodeError::TooShort { needed, got: bytes.len() });
        }
        if bytes[..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let (body, tail) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(DecodeError::Checksum { stored, computed });
        }
        if body[4] != kind as u8 {
            return Err(DecodeError::WrongKind { expected: kind as u8, found: body[4] });
        }
        if !versions.contains(&body[5]) {
            return Err(DecodeError::UnsupportedVersion(body[5]));
        }
        Ok((Self { payload: &body[HEADER_LEN..] }, body[5]))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.payload.len() < n {
            return Err(DecodeError::Length { expected: n as u64, got: self.payload.len() as u64 });
        }
        let (head, rest) = self.payload.split_at(n);
        self.payload = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// The next `n` bytes, borrowed from the input.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.take(n)
    }

    /// The bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.payload.len()
    }

    /// The rest of the payload, which must be exactly `len` bytes long. Checked
    /// before the caller allocates anything of that size.
    pub(crate) fn rest_exact(self, len: u64) -> Result<&'a [u8], DecodeError> {
        if self.payload.len() as u64 != len {
            return Err(DecodeError::Length { expected: len, got: self.payload.len() as u64 });
        }
        Ok(self.payload)
    }
}

/// Little-endian `u64` words from bytes whose length is a multiple of 8.
pub(crate) fn words_from_le(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect()
}
