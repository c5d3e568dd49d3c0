//! Pattern: Count-Min Sketch for Frequency Estimation — its heavy-hitters use: the
//! Top-K keys of a stream in fixed memory, with the Space-Saving algorithm (Metwally,
//! Agrawal and El Abbadi, 2005).
//!
//! **Guarantee.** A [`SpaceSaving`] summary of capacity `m` over a stream whose counts
//! total `N` keeps at most `m` keys. For every key, monitored or not,
//! [`SpaceSaving::estimate`] gives a count and a maximum error with
//! `count − error ≤ true ≤ count`. Every key whose true total exceeds
//! [`SpaceSaving::floor`] is monitored, and `floor ≤ N/m`; so every key with more than
//! `N/m` is among the monitored keys and is reported by `top(m)`. Both statements hold
//! after any sequence of adds and merges (and after a serialization round trip) as long
//! as no counter saturates at `u64::MAX`.
//!
//! **Trade-off.** Memory is `m` keys and their counters, fixed: `m = ⌈1/ε⌉` bounds the
//! error by `ε·N`. A key's error is the count it may have inherited from the key it
//! replaced, so heavy keys, which are counted exactly from early on, are estimated
//! well; keys near the floor may be reported in a different order than their true one.
//!
//! **How.** Each monitored key has a slot (key bytes, count, error). A min-heap of slot
//! numbers keyed by count finds the smallest counter, a hash map finds a key's slot: an
//! add is `O(log m)`. A new key takes a free slot, or evicts the smallest counter and
//! starts from it (`count = floor + c`, `error = floor`, where `floor` becomes the
//! evicted count). Once the summary is full an add allocates nothing, except when a new
//! key is longer than the buffers of the key it replaces.
//!
//! **Merge** follows Agarwal et al., "Mergeable Summaries" (2012), through the
//! Space-Saving/Misra–Gries isomorphism. Write each count as `floor + e(key)`; the
//! *excess* `e` is a Misra–Gries counter. The summaries' excesses are added key by key
//! (a key absent from one side gets that side's floor as its count and its error), the
//! `m` largest are kept and the `(m+1)`-th largest excess, `e₍ₘ₊₁₎`, is moved into the
//! floor: `floor' = floor_a + floor_b + e₍ₘ₊₁₎`. Every summary keeps the invariant
//! `Σ e ≤ N − m·floor` (an add keeps it; a merge keeps it because the `m` kept excesses
//! and the `(m+1)`-th sum to at most `Σ e_a + Σ e_b`), which gives `floor ≤ N/m` with
//! `N = N_a + N_b`: the merged summary has the same guarantee as one built from the
//! concatenated stream, though not the same contents. Both summaries need the same
//! capacity.

use std::collections::HashMap;

use crate::codec::{Kind, Reader, Writer};
use crate::error::{DecodeError, MergeError, ParamError};

/// The largest capacity `m` (2²⁴ keys).
pub const CAPACITY_MAX: u64 = 1 << 24;

/// A count with its maximum overestimate: the true total is in
/// `count − error ..= count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// An upper bound on the key's true total.
    pub count: u64,
    /// How far `count` may be above the true total.
    pub error: u64,
}

/// One of the keys reported by [`SpaceSaving::top`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeavyHitter<'a> {
    /// The key's bytes.
    pub key: &'a [u8],
    /// An upper bound on the key's true total.
    pub count: u64,
    /// How far `count` may be above the true total.
    pub error: u64,
}

#[derive(Debug, Clone)]
struct Slot {
    key: Vec<u8>,
    count: u64,
    error: u64,
    /// Where this slot's number sits in `heap`.
    heap_pos: u32,
}

/// A Space-Saving summary of the heaviest byte-string keys of a stream.
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    capacity: u32,
    /// The total of all counts added (`N`), saturating.
    total: u64,
    /// An upper bound on the true total of every key that is not monitored.
    floor: u64,
    slots: Vec<Slot>,
    /// Slot numbers, a binary min-heap ordered by the slots' counts.
    heap: Vec<u32>,
    index: HashMap<Vec<u8>, u32>,
}

impl SpaceSaving {
    /// A summary that monitors at most `capacity` keys (`m`), in `1..=CAPACITY_MAX`.
    pub fn new(capacity: u64) -> Result<Self, ParamError> {
        let capacity = check_capacity(capacity).map_err(|value| ParamError::OutOfRange {
            name: "capacity",
            value,
            min: 1,
            max: CAPACITY_MAX,
        })?;
        Ok(Self::empty(capacity, capacity as usize))
    }

    /// A summary whose error is at most `ε·N`: capacity `m = ⌈1/ε⌉`.
    pub fn with_error(epsilon: f64) -> Result<Self, ParamError> {
        if !(epsilon > 0.0 && epsilon < 1.0) {
            return Err(ParamError::Probability { name: "epsilon", value: epsilon });
        }
        // Saturating float-to-int cast: an out-of-range capacity is reported as is.
        Self::new((1.0 / epsilon).ceil() as u64)
    }

    fn empty(capacity: u32, reserve: usize) -> Self {
        Self {
            capacity,
            total: 0,
            floor: 0,
            slots: Vec::with_capacity(reserve),
            heap: Vec::with_capacity(reserve),
            index: HashMap::with_capacity(reserve),
        }
    }

    /// Adds `count` occurrences of `key`. Adding 0 changes nothing.
    pub fn add(&mut self, key: impl AsRef<[u8]>, count: u64) {
        let key = key.as_ref();
        if count == 0 {
            return;
        }
        self.total = self.total.saturating_add(count);
        if let Some(&i) = self.index.get(key) {
            let slot = &mut self.slots[i as usize];
            slot.count = slot.count.saturating_add(count);
            let pos = slot.heap_pos as usize;
            self.sift_down(pos);
        } else if self.slots.len() < self.capacity as usize {
            let i = self.slots.len() as u32;
            self.slots.push(Slot {
                key: key.to_vec(),
                count: self.floor.saturating_add(count),
                error: self.floor,
                heap_pos: i,
            });
            self.heap.push(i);
            self.index.insert(key.to_vec(), i);
            self.sift_up(i as usize);
        } else {
            self.evict_min_for(key, count);
        }
        debug_assert!(self.heap.len() == self.slots.len());
        debug_assert!(self.slots.len() <= self.capacity as usize);
    }

    /// Replaces the key with the smallest count by `key`, which starts from that count.
    fn evict_min_for(&mut self, key: &[u8], count: u64) {
        let Some(&i) = self.heap.first() else {
            return;
        };
        let slot = &mut self.slots[i as usize];
        debug_assert!(self.floor <= slot.count, "the floor is at most every count");
        // The evicted key's true total is at most its count: it becomes the bound
        // on every unmonitored key.
        self.floor = slot.count;
        let mut slot_key = std::mem::take(&mut slot.key);
        // Reuse both buffers of the evicted key for the new one.
        let mut index_key =
            self.index.remove_entry(slot_key.as_slice()).map(|(k, _)| k).unwrap_or_default();
        slot_key.clear();
        slot_key.extend_from_slice(key);
        index_key.clear();
        index_key.extend_from_slice(key);
        slot.key = slot_key;
        slot.count = self.floor.saturating_add(count);
        slot.error = self.floor;
        self.index.insert(index_key, i);
        self.sift_down(0);
    }

    /// The count and maximum error for `key`. An unmonitored key gets the floor as
    /// both: its true total is somewhere in `0..=floor`.
    pub fn estimate(&self, key: impl AsRef<[u8]>) -> Estimate {
        match self.index.get(key.as_ref()) {
            Some(&i) => {
                let slot = &self.slots[i as usize];
                Estimate { count: slot.count, error: slot.error }
            }
            None => Estimate { count: self.floor, error: self.floor },
        }
    }

    /// The `k` monitored keys with the largest counts, largest first (ties by key
    /// bytes). At most the number of monitored keys.
    pub fn top(&self, k: usize) -> Vec<HeavyHitter<'_>> {
        let mut all: Vec<HeavyHitter<'_>> = self
            .slots
            .iter()
            .map(|s| HeavyHitter { key: &s.key, count: s.count, error: s.error })
            .collect();
        all.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(b.key)));
        all.truncate(k);
        all
    }

    /// An upper bound on the true total of every unmonitored key; at most `N/m`.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The total of all counts added (`N`), saturating.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The most keys monitored (`m`).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The number of keys monitored now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no key is monitored.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The bytes this summary holds on the heap, approximately: slots, heap and hash
    /// table (with its control bytes) at their allocated sizes, plus the key buffers.
    pub fn memory_bytes(&self) -> usize {
        let keys: usize = self.slots.iter().map(|s| s.key.capacity()).sum::<usize>()
            + self.index.keys().map(Vec::capacity).sum::<usize>();
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.heap.capacity() * std::mem::size_of::<u32>()
            + self.index.capacity() * (std::mem::size_of::<(Vec<u8>, u32)>() + 1)
            + keys
    }

    /// Merges `other` into `self` (see the module docs): afterwards `self` summarizes
    /// both streams with the same guarantee, `floor ≤ (N_a + N_b)/m`. The capacities
    /// must be equal; on error `self` is unchanged.
    pub fn merge(&mut self, other: &Self) -> Result<(), MergeError> {
        if self.capacity != other.capacity {
            return Err(MergeError::ShapeMismatch("capacities differ"));
        }
        // Every combined count is at least `base`; its excess over `base` is the sum of
        // the two Misra–Gries counters.
        let base = self.floor.saturating_add(other.floor);
        let mut combined: Vec<(Vec<u8>, u64, u64)> =
            Vec::with_capacity(self.slots.len() + other.slots.len());
        for slot in &mut self.slots {
            let theirs = other.estimate(&slot.key);
            combined.push((
                std::mem::take(&mut slot.key),
                slot.count.saturating_add(theirs.count),
                slot.error.saturating_add(theirs.error),
            ));
        }
        for slot in &other.slots {
            if !self.index.contains_key(&slot.key) {
                combined.push((
                    slot.key.clone(),
                    slot.count.saturating_add(self.floor),
                    slot.error.saturating_add(self.floor),
                ));
            }
        }
        combined.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let capacity = self.capacity as usize;
        // The (m+1)-th largest count bounds every key dropped here.
        let floor = combined.get(capacity).map_or(base, |c| c.1.max(base));
        combined.truncate(capacity);
        let total = self.total.saturating_add(other.total);
        *self = Self::empty(self.capacity, capacity);
        self.total = total;
        self.floor = floor;
        for (key, count, error) in combined {
            self.push_slot(key, count, error);
        }
        Ok(())
    }

    /// Appends a slot for a key not monitored yet; `heap` stays a heap only when slots
    /// arrive in non-increasing count order or `rebuild_heap` runs afterwards.
    fn push_slot(&mut self, key: Vec<u8>, count: u64, error: u64) {
        let i = self.slots.len() as u32;
        self.index.insert(key.clone(), i);
        self.slots.push(Slot { key, count, error, heap_pos: i });
        self.heap.push(i);
        self.sift_up(i as usize);
    }

    /// The serialized form: the shared frame (see the crate docs) around
    /// `capacity (4) | total (8) | floor (8) | keys (4)` and, for each key, largest count
    /// first, `key length (4) | key | count (8) | error (8)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let top = self.top(self.slots.len());
        let payload: usize = 24 + top.iter().map(|h| 20 + h.key.len()).sum::<usize>();
        let mut w = Writer::new(Kind::TopK, payload);
        w.u32(self.capacity);
        w.u64(self.total);
        w.u64(self.floor);
        w.u32(top.len() as u32);
        for h in &top {
            w.u32(h.key.len() as u32);
            w.bytes(h.key);
            w.u64(h.count);
            w.u64(h.error);
        }
        w.finish()
    }

    /// Reads a summary written by [`SpaceSaving::to_bytes`]. Damaged, truncated or
    /// foreign bytes, and fields no summary can hold (more keys than the capacity, a
    /// key twice, an error above the floor or a count below it, counts that exceed
    /// what the total allows), are a [`DecodeError`], never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::open(bytes, Kind::TopK)?;
        let capacity = r.u32()?;
        let capacity = check_capacity(u64::from(capacity))
            .map_err(|value| DecodeError::Invalid { field: "capacity", value })?;
        let total = r.u64()?;
        let floor = r.u64()?;
        let len = r.u32()?;
        if len > capacity {
            return Err(DecodeError::Invalid { field: "keys above capacity", value: len.into() });
        }
        // Each key takes at least 20 bytes: compare before reserving anything.
        let least = u64::from(len) * 20;
        if (r.remaining() as u64) < least {
            return Err(DecodeError::Length { expected: least, got: r.remaining() as u64 });
        }
        let mut s = Self::empty(capacity, len as usize);
        s.total = total;
        s.floor = floor;
        let mut excess: u128 = 0;
        for _ in 0..len {
            let key_len = r.u32()?;
            let key = r.bytes(key_len as usize)?;
            let count = r.u64()?;
            let error = r.u64()?;
            if count < floor {
                return Err(DecodeError::Invalid { field: "count below floor", value: count });
            }
            if error > floor {
                return Err(DecodeError::Invalid { field: "error above floor", value: error });
            }
            if s.index.contains_key(key) {
                return Err(DecodeError::Invalid { field: "duplicate key", value: key_len.into() });
            }
            excess += u128::from(count - floor);
            s.push_slot(key.to_vec(), count, error);
        }
        if r.remaining() != 0 {
            let expected = bytes.len() - r.remaining();
            return Err(DecodeError::Length { expected: expected as u64, got: bytes.len() as u64 });
        }
        // The invariant behind `floor ≤ N/m` (module docs): Σ excess ≤ N − m·floor.
        // A saturated total no longer bounds anything, as in the Count-Min sketch.
        if total != u64::MAX
            && excess + u128::from(capacity) * u128::from(floor) > u128::from(total)
        {
            return Err(DecodeError::Invalid { field: "counts above total", value: total });
        }
        Ok(s)
    }

    fn less(&self, a: usize, b: usize) -> bool {
        self.slots[self.heap[a] as usize].count < self.slots[self.heap[b] as usize].count
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.slots[self.heap[a] as usize].heap_pos = a as u32;
        self.slots[self.heap[b] as usize].heap_pos = b as u32;
    }

    fn sift_up(&mut self, mut pos: usize) {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if !self.less(pos, parent) {
                break;
            }
            self.swap(pos, parent);
            pos = parent;
        }
    }

    fn sift_down(&mut self, mut pos: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * pos + 1, 2 * pos + 2);
            let mut smallest = pos;
            if l < n && self.less(l, smallest) {
                smallest = l;
            }
            if r < n && self.less(r, smallest) {
                smallest = r;
            }
            if smallest == pos {
                break;
            }
            self.swap(pos, smallest);
            pos = smallest;
        }
    }
}

/// Two summaries are equal when they hold the same keys with the same counts and
/// errors, the same floor, total and capacity, whatever their internal order.
impl PartialEq for SpaceSaving {
    fn eq(&self, other: &Self) -> bool {
        self.capacity == other.capacity
            && self.total == other.total
            && self.floor == other.floor
            && self.top(self.slots.len()) == other.top(other.slots.len())
    }
}

impl Eq for SpaceSaving {}

fn check_capacity(capacity: u64) -> Result<u32, u64> {
    if (1..=CAPACITY_MAX).contains(&capacity) { Ok(capacity as u32) } else { Err(capacity) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizing_and_bad_parameters() {
        assert_eq!(SpaceSaving::with_error(0.01).map(|s| s.capacity()), Ok(100));
        assert_eq!(SpaceSaving::with_error(0.3).map(|s| s.capacity()), Ok(4));
        for bad in [0.0, 1.0, -0.5, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                SpaceSaving::with_error(bad),
                Err(ParamError::Probability { name: "epsilon", .. })
            ));
        }
        assert!(matches!(
            SpaceSaving::with_error(1e-9),
            Err(ParamError::OutOfRange { name: "capacity", .. })
        ));
        assert!(SpaceSaving::new(0).is_err());
        assert!(SpaceSaving::new(CAPACITY_MAX + 1).is_err());
    }

    #[test]
    fn eviction_follows_the_paper() {
        let mut s = SpaceSaving::new(2).expect("capacity");
        s.add("a", 5);
        s.add("b", 2);
        s.add("c", 1);
        // "c" replaces "b" (the smallest counter, 2) and starts from it.
        assert_eq!(s.estimate("c"), Estimate { count: 3, error: 2 });
        assert_eq!(s.estimate("b"), Estimate { count: 2, error: 2 });
        assert_eq!(s.floor(), 2);
        let top: Vec<_> = s.top(5).iter().map(|h| (h.key.to_vec(), h.count)).collect();
        assert_eq!(top, vec![(b"a".to_vec(), 5), (b"c".to_vec(), 3)]);
        s.add("x", 0);
        assert_eq!((s.len(), s.total()), (2, 8));
    }

    #[test]
    fn merge_refuses_other_capacities_and_leaves_self_alone() {
        let mut a = SpaceSaving::new(3).expect("capacity");
        a.add("x", 3);
        let before = a.clone();
        let other = SpaceSaving::new(4).expect("capacity");
        assert!(matches!(a.merge(&other), Err(MergeError::ShapeMismatch(_))));
        assert_eq!(a, before);
    }
}
