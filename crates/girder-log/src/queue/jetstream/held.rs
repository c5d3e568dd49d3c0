//! The deliveries a handle has given out and not yet settled: for each, the
//! JetStream reply subject that acknowledges it, and until when it may.
//!
//! A receipt is the latest delivery only while it is the entry kept here for its
//! message and its visibility has not lapsed by the local clock. The deadline is
//! counted from when the dequeue was *sent*, so it always ends before the server's
//! `AckWait` (which starts at delivery, later): a receipt accepted here is one the
//! server has not yet handed to another consumer.

use std::collections::HashMap;

use async_nats::Subject;

use crate::queue::{QueueError, Receipt};

/// Which stream a delivery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// The queue's stream; the message's sequence there is its id.
    Main,
    /// The group's redrive subject, at this sequence of the redrive stream.
    Redrive {
        /// Where.
        seq: u64,
    },
}

/// One unsettled delivery.
#[derive(Debug, Clone)]
pub(super) struct Holding {
    /// The delivery number the receipt carries.
    pub(super) attempt: u32,
    /// Local deadline, Unix ms: the receipt is stale from then on.
    pub(super) until_ms: u64,
    /// Publishing `+ACK` or `-NAK` here settles it.
    pub(super) reply: Subject,
    /// Where the message lives (to read it back for a dead letter).
    pub(super) origin: Origin,
}

/// At most `max` unsettled deliveries, counting those a dequeue is fetching.
#[derive(Debug)]
pub(super) struct Held {
    /// By (group index, message id): only the latest delivery of each.
    map: HashMap<(usize, u64), Holding>,
    /// Slots promised to dequeues in progress.
    reserved: usize,
    max: usize,
}

impl Held {
    pub(super) fn new(max: usize) -> Self {
        Self { map: HashMap::new(), reserved: 0, max }
    }

    /// Promises up to `want` slots to a dequeue; lapsed deliveries are dropped first
    /// when that makes room.
    ///
    /// # Errors
    /// [`QueueError::InFlightFull`] when not one slot is free.
    pub(super) fn reserve(&mut self, want: usize, now_ms: u64) -> Result<usize, QueueError> {
        if self.map.len() + self.reserved + want > self.max {
            self.map.retain(|_, h| h.until_ms > now_ms);
        }
        let free = self.max.saturating_sub(self.map.len() + self.reserved);
        if free == 0 {
            return Err(QueueError::InFlightFull { max: self.max });
        }
        let granted = want.min(free);
        self.reserved += granted;
        Ok(granted)
    }

    /// Returns the slots of a finished dequeue (its deliveries are in the map now).
    pub(super) fn release(&mut self, granted: usize) {
        debug_assert!(self.reserved >= granted);
        self.reserved = self.reserved.saturating_sub(granted);
    }

    /// Records a delivery; an older delivery of the same message turns stale.
    pub(super) fn insert(&mut self, group: usize, id: u64, holding: Holding) {
        self.map.insert((group, id), holding);
    }

    /// Takes the delivery `receipt` names, to settle it.
    ///
    /// # Errors
    /// [`QueueError::StaleReceipt`] unless it is the latest delivery of its message
    /// through this handle and has not lapsed.
    pub(super) fn take(
        &mut self,
        group: usize,
        receipt: Receipt,
        now_ms: u64,
    ) -> Result<Holding, QueueError> {
        let key = (group, receipt.id.0);
        match self.map.get(&key) {
            Some(h) if h.attempt == receipt.attempt && h.until_ms > now_ms => {
                self.map.remove(&key).ok_or(QueueError::StaleReceipt(receipt))
            }
            Some(h) if h.until_ms <= now_ms => {
                self.map.remove(&key);
                Err(QueueError::StaleReceipt(receipt))
            }
            _ => Err(QueueError::StaleReceipt(receipt)),
        }
    }

    /// Puts back a delivery whose settling failed, unless a newer one came meanwhile.
    pub(super) fn put_back(&mut self, group: usize, id: u64, holding: Holding) {
        self.map.entry((group, id)).or_insert(holding);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::MessageId;

    fn holding(attempt: u32, until_ms: u64) -> Holding {
        Holding {
            attempt,
            until_ms,
            reply: Subject::from_static("$JS.ACK.s.c.1.1.1.0.0"),
            origin: Origin::Main,
        }
    }

    fn receipt(id: u64, attempt: u32) -> Receipt {
        Receipt { id: MessageId(id), attempt }
    }

    #[test]
    fn only_the_latest_unlapsed_delivery_settles() {
        let mut held = Held::new(8);
        held.insert(0, 7, holding(1, 100));
        held.insert(0, 7, holding(2, 200));
        assert!(matches!(held.take(0, receipt(7, 1), 50), Err(QueueError::StaleReceipt(_))));
        assert!(matches!(held.take(1, receipt(7, 2), 50), Err(QueueError::StaleReceipt(_))));
        assert_eq!(held.take(0, receipt(7, 2), 199).map(|h| h.attempt).ok(), Some(2));
        assert!(held.take(0, receipt(7, 2), 50).is_err(), "settled once");
        held.insert(0, 8, holding(1, 100));
        assert!(held.take(0, receipt(8, 1), 100).is_err(), "lapsed at its deadline");
        assert_eq!(held.len(), 0, "a lapsed entry is dropped when found");
    }

    #[test]
    fn reservations_are_bounded_and_lapsed_entries_make_room() {
        let mut held = Held::new(4);
        assert_eq!(held.reserve(3, 0).ok(), Some(3));
        assert_eq!(held.reserve(3, 0).ok(), Some(1), "only what is free");
        assert!(matches!(held.reserve(1, 0), Err(QueueError::InFlightFull { max: 4 })));
        held.release(4);
        for id in 0..4 {
            held.insert(0, id, holding(1, 10 + id));
        }
        assert!(held.reserve(1, 10).is_ok(), "the entry that lapsed at 10 went");
        assert_eq!(held.len(), 3);
        held.put_back(0, 3, holding(9, 99));
        assert_eq!(held.take(0, receipt(3, 1), 11).map(|h| h.attempt).ok(), Some(1), "kept newer");
    }
}
