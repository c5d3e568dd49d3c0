//! What a window computes, and how its state is written into a checkpoint.

use crate::error::StateError;

/// A value that can be written into a checkpoint and read back.
///
/// `decode` must reject (never panic on) any bytes: checkpoints come from storage.
pub trait StateCodec: Sized {
    /// Appends the value.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value from the front of `input`, advancing it.
    ///
    /// # Errors
    /// [`StateError`] when the bytes do not hold a value.
    fn decode(input: &mut &[u8]) -> Result<Self, StateError>;
}

pub(crate) fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], StateError> {
    if input.len() < n {
        return Err(StateError::Truncated);
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

macro_rules! fixed_codec {
    ($($t:ty),*) => {$(
        impl StateCodec for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn decode(input: &mut &[u8]) -> Result<Self, StateError> {
                let bytes = take(input, std::mem::size_of::<$t>())?;
                Ok(<$t>::from_le_bytes(bytes.try_into().map_err(|_| StateError::Truncated)?))
            }
        }
    )*};
}
fixed_codec!(u8, u32, u64, i64, f64);

impl StateCodec for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u64).encode(out);
        out.extend_from_slice(self);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, StateError> {
        let len = u64::decode(input)?;
        let len = usize::try_from(len).map_err(|_| StateError::Truncated)?;
        Ok(take(input, len)?.to_vec())
    }
}

impl StateCodec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u64).encode(out);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(input: &mut &[u8]) -> Result<Self, StateError> {
        String::from_utf8(Vec::<u8>::decode(input)?).map_err(|_| StateError::Invalid("utf-8"))
    }
}

impl<A: StateCodec, B: StateCodec> StateCodec for (A, B) {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
        self.1.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, StateError> {
        Ok((A::decode(input)?, B::decode(input)?))
    }
}

/// What a window computes from the events in it.
///
/// `add` folds one event's input into an accumulator; `merge` combines two
/// accumulators (session windows merge when they meet). Both must be deterministic:
/// replaying the same events from a checkpoint gives the same accumulator, which is
/// what makes an upserting sink's effect exactly-once.
pub trait Aggregate: Clone + Send + Sync + 'static {
    /// One event's contribution.
    type Input;
    /// The running value of one key's window.
    type Acc: Clone + StateCodec + Send;

    /// The accumulator of an empty window.
    fn init(&self) -> Self::Acc;
    /// Folds `input` into `acc`.
    fn add(&self, acc: &mut Self::Acc, input: &Self::Input);
    /// Folds `from` into `into`.
    fn merge(&self, into: &mut Self::Acc, from: &Self::Acc);
}

/// Counts events, each weighing its input (1 for a plain count); saturates at
/// `u64::MAX`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Count;

impl Aggregate for Count {
    type Input = u64;
    type Acc = u64;

    fn init(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, input: &u64) {
        *acc = acc.saturating_add(*input);
    }
    fn merge(&self, into: &mut u64, from: &u64) {
        *into = into.saturating_add(*from);
    }
}

/// Sums signed inputs, saturating.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sum;

impl Aggregate for Sum {
    type Input = i64;
    type Acc = i64;

    fn init(&self) -> i64 {
        0
    }
    fn add(&self, acc: &mut i64, input: &i64) {
        *acc = acc.saturating_add(*input);
    }
    fn merge(&self, into: &mut i64, from: &i64) {
        *into = into.saturating_add(*from);
    }
}
