//! The TTL'd members of the in-process index, grouped by their exact deadline.
//!
//! A moving member's deadline changes with every fix, so what keeps the deadlines
//! must take a removal and an insertion per update cheaply, find the members due at a
//! time, and count them exactly. Members are grouped per deadline millisecond: a
//! hash map from the deadline to the slots due then (each slot knows its place in
//! its group, so either change is a hash probe and a swap), and an ordered set of
//! the deadlines that have members, touched only when a group appears or empties.
//! Every member of a group is due at the same instant, so a group is either wholly
//! due or not at all.

use std::collections::{BTreeSet, HashMap};

/// Slots grouped by deadline (ms).
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    groups: HashMap<u64, Vec<u32>, foldhash::fast::RandomState>,
    /// The deadlines that have a group, in order.
    order: BTreeSet<u64>,
    /// Each slot's index within its group (meaningful only while it has a deadline).
    place: Vec<u32>,
}

impl Deadlines {
    /// `slot` is due at `deadline_ms`; it must not be held already.
    pub(super) fn insert(&mut self, deadline_ms: u64, slot: u32) {
        let group = self.groups.entry(deadline_ms).or_insert_with(|| {
            self.order.insert(deadline_ms);
            Vec::new()
        });
        let s = slot as usize;
        if self.place.len() <= s {
            self.place.resize(s + 1, 0);
        }
        // A group holds fewer members than there are slots, which fit in 31 bits.
        self.place[s] = group.len() as u32;
        group.push(slot);
    }

    /// `slot`, held at `deadline_ms`, is no longer; `false` if it was not held there.
    pub(super) fn remove(&mut self, deadline_ms: u64, slot: u32) -> bool {
        let Some(group) = self.groups.get_mut(&deadline_ms) else { return false };
        let Some(&at) = self.place.get(slot as usize) else { return false };
        if group.get(at as usize) != Some(&slot) {
            return false;
        }
        group.swap_remove(at as usize);
        if let Some(&moved) = group.get(at as usize) {
            self.place[moved as usize] = at;
        }
        if group.is_empty() {
            self.groups.remove(&deadline_ms);
            self.order.remove(&deadline_ms);
        }
        true
    }

    /// A slot due at or before `now_ms` (with its deadline), if any.
    pub(super) fn first_due(&self, now_ms: u64) -> Option<(u64, u32)> {
        let &deadline = self.order.first().filter(|&&d| d <= now_ms)?;
        let slot = *self.groups.get(&deadline)?.last()?;
        Some((deadline, slot))
    }

    /// How many slots are due at or before `now_ms`.
    pub(super) fn due_count(&self, now_ms: u64) -> usize {
        self.order.range(..=now_ms).map(|d| self.groups.get(d).map_or(0, Vec::len)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::Deadlines;
    use std::collections::BTreeSet;

    /// Against an ordered set of (deadline, slot) over a random sequence of moves.
    #[test]
    fn matches_an_ordered_set() {
        let mut d = Deadlines::default();
        let mut model: BTreeSet<(u64, u32)> = BTreeSet::new();
        let mut held: Vec<Option<u64>> = vec![None; 64];
        let mut z = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = || {
            z ^= z << 13;
            z ^= z >> 7;
            z ^= z << 17;
            z
        };
        for step in 0..20_000u64 {
            let slot = (next() % 64) as u32;
            let deadline = 1_000 + next() % 50;
            match held[slot as usize] {
                Some(old) if next() % 3 == 0 => {
                    assert!(d.remove(old, slot));
                    model.remove(&(old, slot));
                    held[slot as usize] = None;
                }
                Some(old) => {
                    assert!(d.remove(old, slot));
                    model.remove(&(old, slot));
                    d.insert(deadline, slot);
                    model.insert((deadline, slot));
                    held[slot as usize] = Some(deadline);
                }
                None => {
                    d.insert(deadline, slot);
                    model.insert((deadline, slot));
                    held[slot as usize] = Some(deadline);
                }
            }
            let now = 1_000 + step % 55;
            assert_eq!(d.due_count(now), model.range(..=(now, u32::MAX)).count());
            match d.first_due(now) {
                Some((deadline, slot)) => {
                    assert!(deadline <= now && model.contains(&(deadline, slot)));
                    assert_eq!(model.first().map(|e| e.0), Some(deadline), "the earliest group");
                }
                None => assert!(model.first().is_none_or(|e| e.0 > now)),
            }
        }
        // Removing what is not held changes nothing.
        assert!(!d.remove(7, 3) || held[3] == Some(7));
    }
}
