//! The in-process index's ordered keys: a sorted multiset of `(key, value)` pairs
//! kept in chunks of at most [`CHUNK_MAX`] pairs, with a flat array of each chunk's
//! first key on top — a B+ tree of height two.
//!
//! Why not a `BTreeSet`: a search is a handful of range scans, and here a scan's
//! start is one binary search over the first keys (a few kilobytes per million pairs,
//! so it stays in cache) and one within a chunk, after which the keys are read
//! sequentially from one slice; an insert or a remove moves at most a chunk's worth
//! of memory. Values sit next to their keys, so what a scan needs per hit (the
//! index keeps a member's name and deadline there) is read from the same chunk
//! rather than from wherever the member was allocated.

use std::ops::ControlFlow;

/// Pairs per chunk at most. Big enough that scans run through long slices, small
/// enough that an insert's memmove stays within a couple of cache lines' worth.
pub(crate) const CHUNK_MAX: usize = 128;

/// A chunk that falls below this after a removal is merged with its successor when
/// both fit in half a chunk, so chunks stay at least a quarter full on average.
const CHUNK_LOW: usize = CHUNK_MAX / 4;

#[derive(Debug)]
struct Chunk<V> {
    keys: Vec<u64>,
    vals: Vec<V>,
}

impl<V> Chunk<V> {
    fn new() -> Self {
        Self { keys: Vec::with_capacity(CHUNK_MAX + 1), vals: Vec::with_capacity(CHUNK_MAX + 1) }
    }
}

/// A sorted multiset of `(key, value)`.
///
/// Invariants: there is always at least one chunk; every chunk but a lone one is
/// non-empty; every key of chunk `i` is `<= firsts[i + 1] <=` every key of chunk
/// `i + 1` (equal keys may straddle a boundary); `firsts[i]` is chunk `i`'s first key
/// for `i > 0` (`firsts[0]` is never read).
#[derive(Debug)]
pub(crate) struct SortedKeys<V> {
    chunks: Vec<Chunk<V>>,
    firsts: Vec<u64>,
    len: usize,
}

impl<V> Default for SortedKeys<V> {
    fn default() -> Self {
        Self { chunks: vec![Chunk::new()], firsts: vec![0], len: 0 }
    }
}

impl<V> SortedKeys<V> {
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

    /// Adds `(key, val)`.
    pub(crate) fn insert(&mut self, key: u64, val: V) {
        let c = self.chunk_for_insert(key);
        let chunk = &mut self.chunks[c];
        let pos = chunk.keys.partition_point(|&k| k <= key);
        chunk.keys.insert(pos, key);
        chunk.vals.insert(pos, val);
        self.len += 1;
        if chunk.keys.len() > CHUNK_MAX {
            let half = chunk.keys.len() / 2;
            let mut upper = Chunk::new();
            upper.keys.extend(chunk.keys.drain(half..));
            upper.vals.extend(chunk.vals.drain(half..));
            self.firsts.insert(c + 1, upper.keys[0]);
            self.chunks.insert(c + 1, upper);
        }
        self.debug_check(c);
    }

    /// Where the pair with `key` whose value passes `is` sits: `(chunk, position)`.
    fn find(&self, key: u64, is: impl Fn(&V) -> bool) -> Option<(usize, usize)> {
        let mut c = self.chunk_for_scan(key);
        loop {
            let chunk = &self.chunks[c];
            let start = chunk.keys.partition_point(|&k| k < key);
            let found = chunk.keys[start..]
                .iter()
                .zip(&chunk.vals[start..])
                .take_while(|&(&k, _)| k == key)
                .position(|(_, v)| is(v));
            if let Some(i) = found {
                return Some((c, start + i));
            }
            // Equal keys can continue in the next chunk.
            if c + 1 >= self.chunks.len() || self.firsts[c + 1] > key {
                return None;
            }
            c += 1;
        }
    }

    /// Gives the pair with `old` whose value passes `is` the key `new`, applying
    /// `update` to its value; `false` if there is no such pair. A key that stays
    /// within its chunk's range (a member moving a few metres, usually) is moved
    /// within the chunk by rotating the pairs between its old and new places.
    pub(crate) fn rekey(
        &mut self,
        old: u64,
        is: impl Fn(&V) -> bool,
        new: u64,
        update: impl FnOnce(&mut V),
    ) -> bool {
        let Some((c, i)) = self.find(old, is) else { return false };
        let fits = (c == 0 || new >= self.firsts[c])
            && (c + 1 == self.chunks.len() || new <= self.firsts[c + 1]);
        if !fits {
            let chunk = &mut self.chunks[c];
            chunk.keys.remove(i);
            let mut val = chunk.vals.remove(i);
            self.len -= 1;
            self.after_remove(c);
            update(&mut val);
            self.insert(new, val);
            return true;
        }
        let chunk = &mut self.chunks[c];
        let j = if new >= old {
            let j = i + chunk.keys[i + 1..].partition_point(|&k| k <= new);
            chunk.keys[i..=j].rotate_left(1);
            chunk.vals[i..=j].rotate_left(1);
            j
        } else {
            let j = chunk.keys[..i].partition_point(|&k| k <= new);
            chunk.keys[j..=i].rotate_right(1);
            chunk.vals[j..=i].rotate_right(1);
            j
        };
        chunk.keys[j] = new;
        update(&mut chunk.vals[j]);
        if c > 0 {
            self.firsts[c] = chunk.keys[0];
        }
        self.debug_check(c);
        true
    }

    /// Removes the pair with `key` whose value passes `is`, returning its value.
    pub(crate) fn remove(&mut self, key: u64, is: impl Fn(&V) -> bool) -> Option<V> {
        let (c, i) = self.find(key, is)?;
        let chunk = &mut self.chunks[c];
        chunk.keys.remove(i);
        let val = chunk.vals.remove(i);
        self.len -= 1;
        self.after_remove(c);
        Some(val)
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
            self.chunks[c].vals.extend(next.vals);
        }
        if c > 0 && c < self.chunks.len() {
            self.firsts[c] = self.chunks[c].keys[0];
        }
        self.debug_check(c.min(self.chunks.len() - 1));
    }

    /// Calls `f(key, value)` for every pair with `lo <= key < hi`, in key order,
    /// until `f` breaks.
    #[inline]
    pub(crate) fn scan<'a>(
        &'a self,
        lo: u64,
        hi: u64,
        mut f: impl FnMut(u64, &'a V) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let mut c = self.chunk_for_scan(lo);
        let mut start = self.chunks[c].keys.partition_point(|&k| k < lo);
        while c < self.chunks.len() {
            let chunk = &self.chunks[c];
            for (&k, v) in chunk.keys[start..].iter().zip(&chunk.vals[start..]) {
                if k >= hi {
                    return ControlFlow::Continue(());
                }
                f(k, v)?;
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
            debug_assert!(chunk.keys.len() == chunk.vals.len());
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
        Rekey(u64, u32, u64, u32),
        Scan(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct keys and tags, so duplicates straddle chunk boundaries.
        let key = prop_oneof![0u64..64, 0u64..1_000_000];
        prop_oneof![
            4 => (key.clone(), 0u32..8).prop_map(|(k, t)| Op::Insert(k, t)),
            2 => (key.clone(), 0u32..8).prop_map(|(k, t)| Op::Remove(k, t)),
            2 => (key.clone(), 0u32..8, 0u64..8, 0u32..8)
                .prop_map(|(k, t, d, t2)| Op::Rekey(k, t, k ^ d, t2)),
            1 => (key.clone(), 0u32..8, key.clone(), 0u32..8)
                .prop_map(|(k, t, n, t2)| Op::Rekey(k, t, n, t2)),
            1 => (key.clone(), key).prop_map(|(a, b)| Op::Scan(a.min(b), a.max(b))),
        ]
    }

    proptest! {
        /// Model test: the same operations on a counted `BTreeMap`.
        #[test]
        fn behaves_like_a_sorted_multiset(ops in proptest::collection::vec(op(), 1..3_000)) {
            let mut real = SortedKeys::<u32>::default();
            let mut model: BTreeMap<(u64, u32), usize> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, t) => {
                        real.insert(k, t);
                        *model.entry((k, t)).or_default() += 1;
                    }
                    Op::Remove(k, t) => {
                        let had = model.get(&(k, t)).is_some_and(|&n| n > 0);
                        prop_assert_eq!(real.remove(k, |&v| v == t), had.then_some(t));
                        if had {
                            let n = model.get_mut(&(k, t)).unwrap();
                            *n -= 1;
                            if *n == 0 {
                                model.remove(&(k, t));
                            }
                        }
                    }
                    Op::Rekey(k, t, new, t2) => {
                        let had = model.get(&(k, t)).is_some_and(|&n| n > 0);
                        prop_assert_eq!(real.rekey(k, |&v| v == t, new, |v| *v = t2), had);
                        if had {
                            let n = model.get_mut(&(k, t)).unwrap();
                            *n -= 1;
                            if *n == 0 {
                                model.remove(&(k, t));
                            }
                            *model.entry((new, t2)).or_default() += 1;
                        }
                    }
                    Op::Scan(lo, hi) => {
                        let mut got = Vec::new();
                        let _ = real.scan(lo, hi, |k, &t| {
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
            s.insert(k, 0u32);
        }
        let mut seen = 0;
        let flow = s.scan(10, 500, |_, _| {
            seen += 1;
            if seen == 7 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        assert_eq!((flow, seen), (ControlFlow::Break(()), 7));
    }
}
