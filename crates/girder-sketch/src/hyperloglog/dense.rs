//! Dense HyperLogLog registers packed 6 bits each, four registers in three bytes:
//! 12 KiB at `p = 14` instead of 16 KiB at a byte each. A rank is at most
//! `65 − p ≤ 61`, so 6 bits always hold it.
//!
//! Register `i` is bits `6·(i mod 4) .. 6·(i mod 4) + 6` of the little-endian 24-bit
//! group at bytes `3·(i/4) .. 3·(i/4) + 3`. Every precision has at least 16 registers,
//! so the groups tile the array exactly, without the padding byte a layout that lets
//! a register straddle any two bytes would need at the end.

/// The packed registers of one sketch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dense {
    bytes: Vec<u8>,
}

impl Dense {
    /// `registers` registers, all zero. `registers` is a multiple of 4.
    pub(super) fn new(registers: usize) -> Self {
        debug_assert!(registers.is_multiple_of(4));
        Self { bytes: vec![0; bytes_for(registers)] }
    }

    /// Packs one register per byte; `None` when a value does not fit in 6 bits.
    pub(super) fn from_unpacked(registers: &[u8]) -> Option<Self> {
        if registers.iter().any(|&r| r > 63) {
            return None;
        }
        let mut bytes = Vec::with_capacity(bytes_for(registers.len()));
        for four in registers.chunks_exact(4) {
            let group = u32::from(four[0])
                | u32::from(four[1]) << 6
                | u32::from(four[2]) << 12
                | u32::from(four[3]) << 18;
            bytes.extend_from_slice(&group.to_le_bytes()[..3]);
        }
        Some(Self { bytes })
    }

    /// Wraps stored packed bytes, whose length must be [`bytes_for`] the register count.
    pub(super) fn from_packed(bytes: Vec<u8>) -> Self {
        debug_assert!(bytes.len().is_multiple_of(3));
        Self { bytes }
    }

    /// The packed bytes.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Register `i`.
    #[cfg(test)]
    fn get(&self, i: usize) -> u8 {
        let (at, shift) = locate(i);
        ((self.group(at) >> shift) & 63) as u8
    }

    /// Raises register `i` to `rank` if it is below it; whether it changed.
    #[inline]
    pub(super) fn raise(&mut self, i: usize, rank: u8) -> bool {
        debug_assert!(rank <= 63);
        let (at, shift) = locate(i);
        let group = self.group(at);
        if u32::from(rank) <= (group >> shift) & 63 {
            return false;
        }
        let group = (group & !(63 << shift)) | u32::from(rank) << shift;
        self.bytes[at..at + 3].copy_from_slice(&group.to_le_bytes()[..3]);
        true
    }

    /// Every register, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        self.bytes.chunks_exact(3).flat_map(|b| {
            let group = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
            [0, 6, 12, 18].map(|shift| ((group >> shift) & 63) as u8)
        })
    }

    /// Register-wise maximum with `other`, of the same size.
    pub(super) fn merge(&mut self, other: &Self) {
        debug_assert_eq!(self.bytes.len(), other.bytes.len());
        for (a, b) in self.bytes.chunks_exact_mut(3).zip(other.bytes.chunks_exact(3)) {
            let (x, y) = (unpack(a), unpack(b));
            let mut merged = 0;
            for shift in [0, 6, 12, 18] {
                merged |= ((x >> shift) & 63).max((y >> shift) & 63) << shift;
            }
            a.copy_from_slice(&merged.to_le_bytes()[..3]);
        }
    }

    /// The heap bytes held.
    pub(super) fn memory_bytes(&self) -> usize {
        self.bytes.capacity()
    }

    #[inline]
    fn group(&self, at: usize) -> u32 {
        unpack(&self.bytes[at..at + 3])
    }
}

/// The bytes `registers` registers take: 3 per 4.
pub(super) fn bytes_for(registers: usize) -> usize {
    registers / 4 * 3
}

/// Register `i`'s group offset in bytes and its shift within the group.
#[inline]
fn locate(i: usize) -> (usize, u32) {
    ((i >> 2) * 3, (i as u32 & 3) * 6)
}

#[inline]
fn unpack(b: &[u8]) -> u32 {
    u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_four_registers_in_three_bytes() {
        assert_eq!(bytes_for(1 << 14), 12_288);
        let values: Vec<u8> = (0..64u8).collect();
        let mut d = Dense::new(64);
        for (i, &v) in values.iter().enumerate() {
            assert_eq!(d.raise(i, v), v > 0);
        }
        assert_eq!(d.iter().collect::<Vec<_>>(), values);
        assert!((0..64).all(|i| d.get(i) == values[i]));
        assert_eq!(Dense::from_unpacked(&values), Some(d.clone()));
        assert_eq!(Dense::from_unpacked(&[64, 0, 0, 0]), None);
        // Raising never lowers, and neighbours are untouched.
        assert!(!d.raise(5, 1));
        assert!(d.raise(5, 63));
        assert_eq!((d.get(4), d.get(5), d.get(6)), (4, 63, 6));
    }

    #[test]
    fn merge_is_the_register_wise_maximum() {
        let a: Vec<u8> = (0..32u32).map(|i| (i * 7 % 62) as u8).collect();
        let b: Vec<u8> = (0..32u32).map(|i| ((i * 11 + 5) % 62) as u8).collect();
        let mut da = Dense::from_unpacked(&a).expect("fits");
        da.merge(&Dense::from_unpacked(&b).expect("fits"));
        let want: Vec<u8> = a.iter().zip(&b).map(|(x, y)| *x.max(y)).collect();
        assert_eq!(da.iter().collect::<Vec<_>>(), want);
    }
}
