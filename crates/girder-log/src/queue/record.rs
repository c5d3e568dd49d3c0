//! The queue's log records: a tag byte, then little-endian fields.

/// One state change of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    /// A new message for every group; its id is this record's LSN.
    Enqueue { at_ms: u64, payload: Vec<u8> },
    /// Handed to a consumer of `group`, invisible until `until_ms`.
    Deliver { group: u16, id: u64, attempt: u32, until_ms: u64 },
    /// Done for `group`.
    Ack { group: u16, id: u64, attempt: u32 },
    /// Given back; visible again at `at_ms` (or dead when out of deliveries).
    Nack { group: u16, id: u64, attempt: u32, at_ms: u64 },
    /// Out of deliveries after a lapsed timeout.
    Dead { group: u16, id: u64 },
    /// A dead letter put back, attempts reset.
    Redrive { group: u16, id: u64, at_ms: u64 },
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    /// Succeeds only when every byte was read.
    fn end<T>(self, value: T) -> Option<T> {
        self.0.is_empty().then_some(value)
    }
}

impl Event {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        match self {
            Self::Enqueue { at_ms, payload } => {
                out.push(1);
                out.extend_from_slice(&at_ms.to_le_bytes());
                out.extend_from_slice(payload);
            }
            Self::Deliver { group, id, attempt, until_ms } => {
                out.push(2);
                out.extend_from_slice(&group.to_le_bytes());
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&attempt.to_le_bytes());
                out.extend_from_slice(&until_ms.to_le_bytes());
            }
            Self::Ack { group, id, attempt } => {
                out.push(3);
                out.extend_from_slice(&group.to_le_bytes());
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&attempt.to_le_bytes());
            }
            Self::Nack { group, id, attempt, at_ms } => {
                out.push(4);
                out.extend_from_slice(&group.to_le_bytes());
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&attempt.to_le_bytes());
                out.extend_from_slice(&at_ms.to_le_bytes());
            }
            Self::Dead { group, id } => {
                out.push(5);
                out.extend_from_slice(&group.to_le_bytes());
                out.extend_from_slice(&id.to_le_bytes());
            }
            Self::Redrive { group, id, at_ms } => {
                out.push(6);
                out.extend_from_slice(&group.to_le_bytes());
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&at_ms.to_le_bytes());
            }
        }
        out
    }

    /// `None` for bytes no version of [`Event::encode`] wrote.
    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        let (&tag, rest) = bytes.split_first()?;
        let mut c = Cursor(rest);
        match tag {
            1 => {
                let at_ms = c.u64()?;
                Some(Self::Enqueue { at_ms, payload: c.0.to_vec() })
            }
            2 => {
                let (group, id, attempt, until_ms) = (c.u16()?, c.u64()?, c.u32()?, c.u64()?);
                c.end(Self::Deliver { group, id, attempt, until_ms })
            }
            3 => {
                let (group, id, attempt) = (c.u16()?, c.u64()?, c.u32()?);
                c.end(Self::Ack { group, id, attempt })
            }
            4 => {
                let (group, id, attempt, at_ms) = (c.u16()?, c.u64()?, c.u32()?, c.u64()?);
                c.end(Self::Nack { group, id, attempt, at_ms })
            }
            5 => {
                let (group, id) = (c.u16()?, c.u64()?);
                c.end(Self::Dead { group, id })
            }
            6 => {
                let (group, id, at_ms) = (c.u16()?, c.u64()?, c.u64()?);
                c.end(Self::Redrive { group, id, at_ms })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips_and_truncations_are_refused() {
        let events = [
            Event::Enqueue { at_ms: 7, payload: b"hello".to_vec() },
            Event::Enqueue { at_ms: 0, payload: Vec::new() },
            Event::Deliver { group: 1, id: 2, attempt: 3, until_ms: 4 },
            Event::Ack { group: 1, id: u64::MAX, attempt: 9 },
            Event::Nack { group: 0, id: 5, attempt: 1, at_ms: 99 },
            Event::Dead { group: 3, id: 8 },
            Event::Redrive { group: 2, id: 8, at_ms: 1 },
        ];
        for event in events {
            let bytes = event.encode();
            assert_eq!(Event::decode(&bytes), Some(event.clone()));
            if !matches!(event, Event::Enqueue { .. }) {
                assert_eq!(Event::decode(&bytes[..bytes.len() - 1]), None, "{event:?}");
                let mut longer = bytes.clone();
                longer.push(0);
                assert_eq!(Event::decode(&longer), None, "{event:?}");
            }
        }
        assert_eq!(Event::decode(&[]), None);
        assert_eq!(Event::decode(&[9, 0, 0]), None);
    }
}
