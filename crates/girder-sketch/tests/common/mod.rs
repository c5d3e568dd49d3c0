//! What every sketch's serialized-form tests share: a frame built the way `to_bytes`
//! builds one, with a checksum computed independently of the crate's.

/// Frames `payload` as a sketch of `kind` (format version 1) with a valid checksum,
/// so the field checks behind the checksum are reached.
#[allow(dead_code, reason = "not every test file frames version 1")]
pub(crate) fn framed(kind: u8, payload: &[u8]) -> Vec<u8> {
    framed_version(kind, 1, payload)
}

/// Frames `payload` as a sketch of `kind` in format `version` with a valid checksum.
#[allow(dead_code, reason = "only the sketches with a second format use it")]
pub(crate) fn framed_version(kind: u8, version: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = b"GSKT".to_vec();
    b.extend_from_slice(&[kind, version]);
    b.extend_from_slice(payload);
    let crc = crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// CRC-32C (Castagnoli, reflected), bit by bit: an independent check of the frame.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}
