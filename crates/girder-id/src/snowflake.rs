//! Coordination-free, time-ordered 64-bit ids ("Pattern: Snowflake ID"):
//! `[timestamp][machine id][sequence]`, with the bit split configurable.
//!
//! The catalogue's version waits for the next millisecond when the sequence runs out
//! but silently issues duplicates if the clock steps back. This one never issues a
//! duplicate or a non-increasing id: it waits out small backward steps and refuses
//! (with [`SnowflakeError::ClockMovedBackwards`]) beyond a configured bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use girder_core::{Clock, SystemClock};
use thiserror::Error;

/// 2024-01-01T00:00:00Z in Unix milliseconds, Girder's default epoch: 41 timestamp
/// bits from here last until 2093.
pub const GIRDER_EPOCH_MS: u64 = 1_704_067_200_000;

/// Why a generator could not be built or could not issue an id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnowflakeError {
    /// The bit layout is unusable: no timestamp bits, or more than 63 bits in total
    /// (the sign bit stays clear so ids are positive as `i64`).
    #[error(
        "invalid layout {timestamp_bits}/{machine_bits}/{sequence_bits}: need timestamp_bits >= 1 and a sum <= 63"
    )]
    InvalidLayout {
        /// Timestamp bits requested.
        timestamp_bits: u8,
        /// Machine id bits requested.
        machine_bits: u8,
        /// Sequence bits requested.
        sequence_bits: u8,
    },
    /// The machine id does not fit in the layout's machine bits.
    #[error("machine id {machine_id} exceeds the layout's maximum {max}")]
    MachineIdOutOfRange {
        /// The configured machine id.
        machine_id: u64,
        /// The largest machine id the layout holds.
        max: u64,
    },
    /// The clock reads earlier than the newest issued id by more than
    /// `max_backward_wait_ms` allows; `by_ms` is how far behind it is.
    #[error("clock moved backwards by {by_ms} ms")]
    ClockMovedBackwards {
        /// Milliseconds the clock is behind the newest issued id's timestamp.
        by_ms: u64,
    },
    /// The clock did not advance to the next millisecond within the wait allowed
    /// for a used-up sequence (a frozen or broken clock).
    #[error("clock did not advance within {waited_ms} ms")]
    ClockStalled {
        /// The longest wait that was allowed.
        waited_ms: u64,
    },
    /// The clock reads before the configured epoch.
    #[error("clock {now_ms} is before the epoch {epoch_ms}")]
    BeforeEpoch {
        /// The clock reading.
        now_ms: u64,
        /// The configured epoch.
        epoch_ms: u64,
    },
    /// The time since the epoch no longer fits in the timestamp bits.
    #[error("timestamp does not fit in the layout's timestamp bits")]
    TimestampOverflow,
}

/// How the 63 usable bits are split, from most to least significant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Milliseconds since the epoch. Default 41 (about 69 years).
    pub timestamp_bits: u8,
    /// Machine (worker) id. Default 10 (1024 machines).
    pub machine_bits: u8,
    /// Per-millisecond sequence. Default 12 (4096 ids per ms per machine).
    pub sequence_bits: u8,
}

impl Default for Layout {
    fn default() -> Self {
        Self { timestamp_bits: 41, machine_bits: 10, sequence_bits: 12 }
    }
}

impl Layout {
    /// Checks `timestamp_bits >= 1` and a total of at most 63 bits.
    ///
    /// # Errors
    /// [`SnowflakeError::InvalidLayout`] otherwise.
    pub fn validate(&self) -> Result<(), SnowflakeError> {
        let total = u32::from(self.timestamp_bits)
            + u32::from(self.machine_bits)
            + u32::from(self.sequence_bits);
        if self.timestamp_bits == 0 || total > 63 {
            return Err(SnowflakeError::InvalidLayout {
                timestamp_bits: self.timestamp_bits,
                machine_bits: self.machine_bits,
                sequence_bits: self.sequence_bits,
            });
        }
        Ok(())
    }

    /// The largest machine id: `2^machine_bits - 1`.
    #[must_use]
    pub const fn max_machine_id(&self) -> u64 {
        mask(self.machine_bits)
    }

    /// Ids per millisecond per machine: `2^sequence_bits`.
    #[must_use]
    pub const fn ids_per_ms(&self) -> u64 {
        1 << self.sequence_bits
    }
}

/// `2^bits - 1` for `bits <= 63`.
const fn mask(bits: u8) -> u64 {
    (1u64 << bits) - 1
}

/// A generator's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnowflakeConfig {
    /// The bit split.
    pub layout: Layout,
    /// Unix milliseconds of timestamp 0. Default [`GIRDER_EPOCH_MS`].
    pub epoch_ms: u64,
    /// This generator's machine id, unique among generators sharing an id space.
    pub machine_id: u64,
    /// How far back the clock may step before `next_id` fails instead of waiting it
    /// out. Default 10 ms (typical NTP corrections are smaller).
    pub max_backward_wait_ms: u64,
}

impl Default for SnowflakeConfig {
    fn default() -> Self {
        Self {
            layout: Layout::default(),
            epoch_ms: GIRDER_EPOCH_MS,
            machine_id: 0,
            max_backward_wait_ms: 10,
        }
    }
}

/// The fields of a Snowflake id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// When the id was issued, in Unix milliseconds (epoch already added).
    pub timestamp_ms: u64,
    /// The issuing machine.
    pub machine_id: u64,
    /// The sequence number within that millisecond.
    pub sequence: u64,
}

/// "No id issued yet": ids use at most 63 bits, so this value is never an id.
const NONE: u64 = u64::MAX;

/// A Snowflake id generator for one machine id.
///
/// Ids from one generator strictly increase, across threads. The state is one atomic
/// word (the last id issued), updated with compare-and-swap.
#[derive(Debug)]
pub struct Snowflake<C: Clock = SystemClock> {
    clock: C,
    epoch_ms: u64,
    max_backward_wait_ms: u64,
    machine_id: u64,
    machine_bits: u8,
    sequence_bits: u8,
    timestamp_shift: u8,
    max_timestamp: u64,
    last: AtomicU64,
}

impl<C: Clock> Snowflake<C> {
    /// A generator for `config`, reading time from `clock`.
    ///
    /// # Errors
    /// [`SnowflakeError::InvalidLayout`] or [`SnowflakeError::MachineIdOutOfRange`].
    pub fn new(config: SnowflakeConfig, clock: C) -> Result<Self, SnowflakeError> {
        let layout = config.layout;
        layout.validate()?;
        if config.machine_id > layout.max_machine_id() {
            return Err(SnowflakeError::MachineIdOutOfRange {
                machine_id: config.machine_id,
                max: layout.max_machine_id(),
            });
        }
        Ok(Self {
            clock,
            epoch_ms: config.epoch_ms,
            max_backward_wait_ms: config.max_backward_wait_ms,
            machine_id: config.machine_id,
            machine_bits: layout.machine_bits,
            sequence_bits: layout.sequence_bits,
            timestamp_shift: layout.machine_bits + layout.sequence_bits,
            max_timestamp: mask(layout.timestamp_bits),
            last: AtomicU64::new(NONE),
        })
    }

    /// The next id: greater than every id this generator issued before.
    ///
    /// When the millisecond's sequence is used up it waits for the next millisecond
    /// (through [`Clock::wait_until_ms`]). When the clock reads earlier than the last
    /// id, it waits if the gap is at most `max_backward_wait_ms`, and fails at once
    /// otherwise: waiting longer than the bound could not succeed sooner.
    ///
    /// # Errors
    /// [`SnowflakeError::ClockMovedBackwards`], [`SnowflakeError::ClockStalled`],
    /// [`SnowflakeError::BeforeEpoch`], [`SnowflakeError::TimestampOverflow`].
    pub fn next_id(&self) -> Result<u64, SnowflakeError> {
        let sequence_mask = mask(self.sequence_bits);
        loop {
            let prev = self.last.load(Ordering::Acquire);
            let now_ms = self.clock.now_ms();
            let ts = now_ms
                .checked_sub(self.epoch_ms)
                .ok_or(SnowflakeError::BeforeEpoch { now_ms, epoch_ms: self.epoch_ms })?;
            let prev_ts = prev >> self.timestamp_shift;
            let candidate = if prev == NONE || ts > prev_ts {
                if ts > self.max_timestamp {
                    return Err(SnowflakeError::TimestampOverflow);
                }
                self.compose(ts, 0)
            } else {
                let sequence_full = prev & sequence_mask == sequence_mask;
                if ts == prev_ts && !sequence_full {
                    // The sequence is the low field, so the next id is simply prev + 1.
                    prev + 1
                } else {
                    self.wait_for(prev_ts, ts, sequence_full)?;
                    continue;
                }
            };
            // Strictly greater than prev in both branches; the CAS makes it unique.
            debug_assert!(prev == NONE || candidate > prev);
            if self
                .last
                .compare_exchange_weak(prev, candidate, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(candidate);
            }
        }
    }

    /// Waits until the clock allows an id after one at `prev_ts`, or fails if the
    /// required wait is beyond the configured bound.
    fn wait_for(&self, prev_ts: u64, ts: u64, sequence_full: bool) -> Result<(), SnowflakeError> {
        let needed_ts = prev_ts + u64::from(sequence_full);
        if needed_ts > self.max_timestamp {
            return Err(SnowflakeError::TimestampOverflow);
        }
        let behind_ms = prev_ts.saturating_sub(ts);
        if behind_ms > self.max_backward_wait_ms {
            return Err(SnowflakeError::ClockMovedBackwards { by_ms: behind_ms });
        }
        // A used-up sequence adds one ordinary millisecond on top of any backward gap.
        let allowance_ms = self.max_backward_wait_ms + u64::from(sequence_full);
        let deadline_ms = self.epoch_ms + needed_ts;
        let reached_ms =
            self.clock.wait_until_ms(deadline_ms, Duration::from_millis(allowance_ms.max(1)));
        if reached_ms < self.epoch_ms + prev_ts {
            return Err(SnowflakeError::ClockMovedBackwards {
                by_ms: self.epoch_ms + prev_ts - reached_ms,
            });
        }
        if reached_ms < deadline_ms {
            return Err(SnowflakeError::ClockStalled { waited_ms: allowance_ms.max(1) });
        }
        Ok(())
    }

    fn compose(&self, ts: u64, sequence: u64) -> u64 {
        (ts << self.timestamp_shift) | (self.machine_id << self.sequence_bits) | sequence
    }

    /// Splits an id into its fields (for ids made with this generator's layout and epoch).
    #[must_use]
    pub fn decode(&self, id: u64) -> Parts {
        Parts {
            timestamp_ms: self.epoch_ms.saturating_add(id >> self.timestamp_shift),
            machine_id: (id >> self.sequence_bits) & mask(self.machine_bits),
            sequence: id & mask(self.sequence_bits),
        }
    }

    /// The clock this generator reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }
}
