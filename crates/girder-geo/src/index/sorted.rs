//! The in-process index's ordered keys: a sorted multiset of `(key, tag)` pairs kept
//! in chunks of at most [`CHUNK_MAX`] pairs, with a flat array of each chunk's first
//! key on top — a B+ tree of height two.
//!
//! Why not a `BTreeSet`: a search is a handful of range scans, and here a scan's
//! start is one binary search over the first keys (a few kilobytes per million pairs,
//! so it stays in cache) and one within a chunk, after which the keys are read
//! sequentially from one slice; an insert or a remove moves at most a chunk's worth
//! of memory.

use std::ops::ControlFlow;

/// Pairs per chunk at most. Big enough that scans run through long slices, small
/// enough that an insert's memmove stays within a couple of cache lines' worth.
pub(crate) const CHUNK_MAX: usize = 128;

/// A chunk that falls below this after a removal is merged with its successor when
/// both fit in half a chunk, so chunks stay at least a quarter full on average.
const CHUNK_LOW: usize = CHUNK_MAX / 4;

#[derive(Debug, Default)]
struct Chunk {
    keys: Vec<u64>,
    tags: Vec<u32>,
}

impl Chunk {
    fn new() -> Self {
        Self { keys: Vec::with_capacity(CHUNK_MAX + 1), tags: Vec::with_capacity(CHUNK_MAX + 1) }
    }
}

/// A sorted multiset of `(key, tag)`.
///
/// Invariants: there is always at least one chunk; every chunk but a lone one is
/// non-empty; every key of chunk `i` is `<= firsts[i + 1] <=` every key of chunk
/// `i + 1` (equal keys may straddle a boundary); `firsts[i]` is chunk `i`'s first key
/// for `i > 0` (`firsts[0]` is never read).
#[derive(Debug)]
pub(crate) struct SortedKeys {
    chunks: Vec<Chunk>,
    firsts: Vec<u64>,
    len: usize,
}

impl Default for SortedKeys {
    fn default() -> Self {
        Self { chunks: vec![Chunk::new()], firsts: vec![0], len: 0 }
    }
}

impl SortedKeys {
    /// How many pairs.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The last chunk whose first key is `<= key` (keys equal to `key` that straddle
    /// a boundary may also sit in earlier chunks).
    fn chunk_for_insert(&self, key: u64) -> usize {
        self.firsts[1..].partition_point(|&f| f <= key)
    }

    /// The first chunk that can hold a key `>= key`.
    fn chunk_for_scan(&self, key: u64) -> usize {
        self.firsts[1..].partition_point(|&f| f < key)
    }

    /// Adds `(key, tag)`.
    pub(crate) fn insert(&mut self, key: u64, tag: u32) {
        let c = self.chunk_for_insert(key);
        let chunk = &mut self.chunks[c];
        let pos = chunk.keys.partition_point(|&k| k <= key);
        chunk.keys.insert(pos, key);
        chunk.tags.insert(pos, tag);
        self.len += 1;
        if chunk.keys.len() > CHUNK_MAX {
            let half = chunk.keys.len() / 2;
            let mut upper = Chunk::new();
            upper.keys.extend(chunk.keys.drain(half..));
            upper.tags.extend(chunk.tags.drain(half..));
            self.firsts.insert(c + 1, upper.keys[0]);
            self.chunks.insert(c + 1, upper);
        }
        self.debug_check(c);
    }

    /// Removes one `(key, tag)`; `false` if there is none.
    pub(crate) fn remove(&mut self, key: u64, tag: u32) -> bool {
        let mut c = self.chunk_for_scan(key);
        loop {
            let chunk = &mut self.chunks[c];
            let start = chunk.keys.partition_point(|&k| k < key);
            let found = chunk.keys[start..]
                .iter()
                .zip(&chunk.tags[start..])
                .take_while(|&(&k, _)| k == key)
                .position(|(_, &t)| t == tag);
            if let Some(i) = found {
                chunk.keys.remove(start + i);
                chunk.tags.remove(start + i);
                self.len -= 1;
                self.after_remove(c);
                return true;
            }
            // Equal keys can continue in the next chunk.
            if c + 1 >= self.chunks.len() || self.firsts[c + 1] > key {
                return false;
            }
            c += 1;
        }
    }

    /// Restores the invariants after chunk `c` lost a pair.
    fn after_remove(&mut self, c: usize) {
        if self.chunks[c].keys.is_empty() {
            if self.chunks.len() > 1 {
                self.chunks.remove(c);
                self.firsts.remove(c);
            }
        } else if c + 1 < self.chunks.len()
            && self.chunks[c].keys.len() < CHUNK_LOW
            && self.chunks[c].keys.len() + self.chunks[c + 1].keys.len() <= CHUNK_MAX / 2
        {
            let next = self.chunks.remove(c + 1);
            self.firsts.remove(c + 1);
            self.chunks[c].keys.extend(next.keys);
            self.chunks[c].tags.extend(next.tags);
        }
        if c > 0 && c < self.chunks.len() {
            self.firsts[c] = self.chunks[c].keys[0];
        }
        self.debug_check(c.min(self.chunks.len() - 1));
    }

    /// Calls `f(key, tag)` for every pair with `lo <= key < hi`, in key order, until
    /// `f` breaks.
    #[inline]
    pub(crate) fn scan(
        &self,
        lo: u64,
        hi: u64,
        mut f: impl FnMut(u64, u32) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let mut c = self.chunk_for_scan(lo);
        let mut start = self.chunks[c].keys.partition_point(|&k| k < lo);
        while c < self.chunks.len() {
            let chunk = &self.chunks[c];
            for (&k, &t) in chunk.keys[start..].iter().zip(&chunk.tags[start..]) {
                if k >= hi {
                    return ControlFlow::Continue(());
                }
                f(k, t)?;
            }
            c += 1;
            start = 0;
        }
        ControlFlow::Continue(())
    }

    /// Checks chunk `c` against its neighbours (debug builds).
    fn debug_check(&self, c: usize) {
        if cfg!(debug_assertions) {
            let chunk = &self.chunks[c];
            debug_assert!(chunk.keys.len() == chunk.tags.len());
            debug_assert!(chunk.keys.is_sorted());
            debug_assert!(chunk.keys.len() <= CHUNK_MAX);
            debug_assert!(self.chunks.len() == 1 || !chunk.keys.is_empty());
            if let (Some(&first), true) = (chunk.keys.first(), c > 0) {
                debug_assert_eq!(first, self.firsts[c]);
            }
            if let (Some(&last), Some(&next)) = (chunk.keys.last(), self.firsts.get(c + 1)) {
                debug_assert!(last <= next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u32),
        Remove(u64, u32),
        Scan(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct keys and tags, so duplicates straddle chunk boundaries.
        let key = prop_oneof![0u64..64, 0u64..1_000_000];
        prop_oneof![
            4 => (key.clone(), 0u32..8).prop_map(|(k, t)| Op::Insert(k, t)),
            2 => (key.clone(), 0u32..8).prop_map(|(k, t)| Op::Remove(k, t)),
            1 => (key.clone(), key).prop_map(|(a, b)| Op::Scan(a.min(b), a.max(b))),
        ]
    }

    proptest! {
        /// Model test: the same operations on a counted `BTreeMap`.
        #[test]
        fn behaves_like_a_sorted_multiset(ops in proptest::collection::vec(op(), 1..3_000)) {
            let mut real = SortedKeys::default();
            let mut model: BTreeMap<(u64, u32), usize> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, t) => {
                        real.insert(k, t);
                        *model.entry((k, t)).or_default() += 1;
                    }
                    Op::Remove(k, t) => {
                        let had = model.get(&(k, t)).is_some_and(|&n| n > 0);
                        prop_assert_eq!(real.remove(k, t), had);
                        if had {
                            let n = model.get_mut(&(k, t)).unwrap();
                            *n -= 1;
                            if *n == 0 {
                                model.remove(&(k, t));
                            }
                        }
                    }
                    Op::Scan(lo, hi) => {
                        let mut got = Vec::new();
                        let _ = real.scan(lo, hi, |k, t| {
                            got.push((k, t));
                            ControlFlow::Continue(())
                        });
                        // Order among equal keys is free: compare as sorted lists.
                        got.sort_unstable();
                        let want: Vec<(u64, u32)> = model
                            .range((lo, 0)..(hi, 0))
                            .flat_map(|(&p, &n)| std::iter::repeat_n(p, n))
                            .collect();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(real.len(), model.values().sum::<usize>());
            }
        }
    }

    #[test]
    fn a_scan_stops_when_told() {
        let mut s = SortedKeys::default();
        for k in 0..1_000 {
            s.insert(k, 0);
        }
        let mut seen = 0;
        let flow = s.scan(10, 500, |_, _| {
            seen += 1;
            if seen == 7 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        assert_eq!((flow, seen), (ControlFlow::Break(()), 7));
    }
}
