//! Sparse HyperLogLog registers: only the non-zero ones, as a sorted list of
//! `(index, rank)` pairs, each one `u32` (`index << 6 | rank`). A sketch of a few keys
//! then takes a few bytes per key instead of the full register array.
//!
//! The index is the register's own index at the sketch's precision (not HLL++'s finer
//! `p' = 25`), so sparse and dense forms hold the very same registers and give the very
//! same estimate: converting is exact, and nothing about the estimator changes.

use super::dense::Dense;

/// Non-zero registers, sorted by index, one entry per index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Sparse {
    entries: Vec<u32>,
}

/// The entry of register `index` holding `rank`.
#[inline]
pub(super) fn encode(index: usize, rank: u8) -> u32 {
    debug_assert!(rank > 0 && rank <= 63);
    (index as u32) << 6 | u32::from(rank)
}

/// An entry's register index and rank.
#[inline]
pub(super) fn decode(entry: u32) -> (usize, u8) {
    ((entry >> 6) as usize, (entry & 63) as u8)
}

impl Sparse {
    /// Entries already checked to be sorted by index, unique per index and non-zero.
    pub(super) fn from_entries(entries: Vec<u32>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0] >> 6 < w[1] >> 6));
        Self { entries }
    }

    /// The entries, sorted by index.
    pub(super) fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// The number of non-zero registers.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Raises register `index` to `rank` if it is below it; whether it changed. A new
    /// index shifts the entries after it: linear in the list, which the owner keeps
    /// short by converting to dense.
    #[inline]
    pub(super) fn raise(&mut self, index: usize, rank: u8) -> bool {
        match self.entries.binary_search_by_key(&index, |&e| decode(e).0) {
            Ok(at) => {
                if rank > decode(self.entries[at]).1 {
                    self.entries[at] = encode(index, rank);
                    true
                } else {
                    false
                }
            }
            Err(at) => {
                self.entries.insert(at, encode(index, rank));
                true
            }
        }
    }

    /// Register-wise maximum with `other`: a merge of the two sorted lists.
    pub(super) fn merge(&mut self, other: &Self) {
        let (a, b) = (&self.entries, &other.entries);
        let mut merged = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let (x, y) = (a[i] >> 6, b[j] >> 6);
            if x < y {
                merged.push(a[i]);
                i += 1;
            } else if y < x {
                merged.push(b[j]);
                j += 1;
            } else {
                // Same index: the larger entry has the larger rank.
                merged.push(a[i].max(b[j]));
                i += 1;
                j += 1;
            }
        }
        merged.extend_from_slice(&a[i..]);
        merged.extend_from_slice(&b[j..]);
        self.entries = merged;
    }

    /// Raises `dense`'s registers to these entries.
    pub(super) fn raise_into(&self, dense: &mut Dense) {
        for &e in &self.entries {
            let (index, rank) = decode(e);
            dense.raise(index, rank);
        }
    }

    /// The heap bytes held.
    pub(super) fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_keeps_one_sorted_entry_per_index() {
        let mut s = Sparse::default();
        assert!(s.raise(9, 3));
        assert!(s.raise(2, 5));
        assert!(!s.raise(9, 2));
        assert!(s.raise(9, 4));
        assert!(s.raise(100, 1));
        assert_eq!(s.entries(), [encode(2, 5), encode(9, 4), encode(100, 1)]);
        let mut t = Sparse::from_entries(vec![encode(2, 1), encode(50, 7), encode(100, 9)]);
        t.merge(&s);
        assert_eq!(t.entries(), [encode(2, 5), encode(9, 4), encode(50, 7), encode(100, 9)]);
    }
}
