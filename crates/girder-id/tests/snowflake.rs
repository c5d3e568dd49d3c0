//! Snowflake semantics under a manual clock: sequence cap, backward steps, layouts.

use std::sync::Arc;
use std::time::Duration;

use girder_core::{Clock, ManualClock};
use girder_id::snowflake::{Layout, Parts, Snowflake, SnowflakeConfig, SnowflakeError};

const EPOCH_MS: u64 = 1_700_000_000_000;
const START_MS: u64 = EPOCH_MS + 1_000;

fn generator(config: SnowflakeConfig) -> (Snowflake<ManualClock>, ManualClock) {
    let clock = ManualClock::new(START_MS);
    let config = SnowflakeConfig { epoch_ms: EPOCH_MS, ..config };
    (Snowflake::new(config, clock.clone()).unwrap(), clock)
}

fn default_generator() -> (Snowflake<ManualClock>, ManualClock) {
    generator(SnowflakeConfig { machine_id: 42, max_backward_wait_ms: 10, ..Default::default() })
}

#[test]
fn a_millisecond_holds_4096_ids_then_the_next_waits() {
    let (sf, clock) = default_generator();
    let ids: Vec<u64> = (0..4096).map(|_| sf.next_id().unwrap()).collect();
    assert_eq!(clock.waits(), 0, "no waiting within the sequence");
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(
            sf.decode(id),
            Parts { timestamp_ms: START_MS, machine_id: 42, sequence: i as u64 }
        );
    }
    let next = sf.next_id().unwrap();
    assert_eq!(clock.waits(), 1, "the 4097th id waited for the next millisecond");
    assert_eq!(clock.now_ms(), START_MS + 1);
    assert_eq!(sf.decode(next), Parts { timestamp_ms: START_MS + 1, machine_id: 42, sequence: 0 });
    assert!(next > ids[4095]);
}

#[test]
fn a_new_millisecond_restarts_the_sequence() {
    let (sf, clock) = default_generator();
    let a = sf.next_id().unwrap();
    let b = sf.next_id().unwrap();
    clock.advance(Duration::from_millis(3));
    let c = sf.next_id().unwrap();
    assert_eq!(sf.decode(b).sequence, 1);
    assert_eq!(sf.decode(c), Parts { timestamp_ms: START_MS + 3, machine_id: 42, sequence: 0 });
    assert!(a < b && b < c);
    assert_eq!(clock.waits(), 0);
}

#[test]
fn a_small_backward_step_is_waited_out() {
    let (sf, clock) = default_generator();
    let before = sf.next_id().unwrap();
    clock.set_ms(START_MS - 5);
    let after = sf.next_id().unwrap();
    assert_eq!(clock.waits(), 1);
    assert_eq!(clock.now_ms(), START_MS, "waited until the last id's millisecond");
    assert!(after > before);
    assert_eq!(sf.decode(after), Parts { timestamp_ms: START_MS, machine_id: 42, sequence: 1 });
}

#[test]
fn a_step_of_exactly_the_bound_is_waited_out() {
    let (sf, clock) = default_generator();
    let before = sf.next_id().unwrap();
    clock.set_ms(START_MS - 10);
    assert!(sf.next_id().unwrap() > before);
}

#[test]
fn a_large_backward_step_fails_without_waiting_and_recovers() {
    let (sf, clock) = default_generator();
    let before = sf.next_id().unwrap();
    clock.set_ms(START_MS - 11);
    assert_eq!(sf.next_id(), Err(SnowflakeError::ClockMovedBackwards { by_ms: 11 }));
    assert_eq!(clock.waits(), 0, "a wait longer than the bound cannot help");
    clock.set_ms(START_MS);
    let after = sf.next_id().unwrap();
    assert!(after > before);
}

#[test]
fn a_backward_step_after_a_full_sequence_waits_for_the_next_millisecond() {
    let (sf, clock) = default_generator();
    let last = (0..4096).map(|_| sf.next_id().unwrap()).last().unwrap();
    clock.set_ms(START_MS - 3);
    let next = sf.next_id().unwrap();
    assert_eq!(clock.now_ms(), START_MS + 1);
    assert!(next > last);
    assert_eq!(sf.decode(next).timestamp_ms, START_MS + 1);
}

/// A clock whose waits return without time moving: a broken or frozen clock.
struct FrozenClock(u64);

impl Clock for FrozenClock {
    fn now_ms(&self) -> u64 {
        self.0
    }
    fn wait_until_ms(&self, _deadline_ms: u64, _max: Duration) -> u64 {
        self.0
    }
}

#[test]
fn a_frozen_clock_is_reported_not_spun_on() {
    let config = SnowflakeConfig {
        layout: Layout { timestamp_bits: 41, machine_bits: 10, sequence_bits: 1 },
        epoch_ms: EPOCH_MS,
        ..Default::default()
    };
    let sf = Snowflake::new(config, FrozenClock(START_MS)).unwrap();
    assert!(sf.next_id().is_ok());
    assert!(sf.next_id().is_ok());
    assert_eq!(sf.next_id(), Err(SnowflakeError::ClockStalled { waited_ms: 11 }));
}

#[test]
fn decode_round_trips_the_catalogue_example() {
    // The catalogue's example: timestamp 1732704000000, machine 42, sequence 123, with
    // the Unix epoch. (Its printed result, 7156733645524123, is not that id.)
    let config = SnowflakeConfig { epoch_ms: 0, machine_id: 42, ..Default::default() };
    let sf = Snowflake::new(config, ManualClock::new(1_732_704_000_000)).unwrap();
    let id = 7_267_487_318_016_172_155;
    assert_eq!(id, (1_732_704_000_000 << 22) | (42 << 12) | 123);
    assert_eq!(
        sf.decode(id),
        Parts { timestamp_ms: 1_732_704_000_000, machine_id: 42, sequence: 123 }
    );
    assert_eq!(
        sf.decode(sf.next_id().unwrap()),
        Parts { timestamp_ms: 1_732_704_000_000, machine_id: 42, sequence: 0 }
    );
}

#[test]
fn custom_layouts_round_trip_and_cap_their_sequence() {
    let layouts = [
        (Layout { timestamp_bits: 41, machine_bits: 10, sequence_bits: 12 }, 1023),
        (Layout { timestamp_bits: 39, machine_bits: 0, sequence_bits: 24 }, 0),
        (Layout { timestamp_bits: 31, machine_bits: 16, sequence_bits: 16 }, 65_535),
        (Layout { timestamp_bits: 42, machine_bits: 5, sequence_bits: 3 }, 17),
        (Layout { timestamp_bits: 50, machine_bits: 13, sequence_bits: 0 }, 8_000),
    ];
    for (layout, machine_id) in layouts {
        let (sf, clock) = generator(SnowflakeConfig { layout, machine_id, ..Default::default() });
        let per_ms = layout.ids_per_ms().min(1 << 12);
        let mut prev = None;
        for i in 0..per_ms * 3 {
            let id = sf.next_id().unwrap();
            assert!(id < 1 << 63, "{layout:?}: sign bit set");
            let parts = sf.decode(id);
            assert_eq!(parts.machine_id, machine_id, "{layout:?}");
            assert!(parts.sequence < layout.ids_per_ms(), "{layout:?}");
            if layout.ids_per_ms() <= 1 << 12 {
                assert_eq!(parts.timestamp_ms, START_MS + i / per_ms, "{layout:?} id {i}");
                assert_eq!(parts.sequence, i % per_ms, "{layout:?} id {i}");
            }
            assert!(prev < Some(id), "{layout:?}: not increasing");
            prev = Some(id);
        }
        let expected_waits = if layout.ids_per_ms() <= 1 << 12 { 2 } else { 0 };
        assert_eq!(clock.waits(), expected_waits, "{layout:?}");
    }
}

#[test]
fn invalid_configurations_are_rejected() {
    let check = |config: SnowflakeConfig, want: SnowflakeError| {
        assert_eq!(Snowflake::new(config, ManualClock::new(START_MS)).err(), Some(want));
    };
    check(
        SnowflakeConfig {
            layout: Layout { timestamp_bits: 42, machine_bits: 10, sequence_bits: 12 },
            ..Default::default()
        },
        SnowflakeError::InvalidLayout { timestamp_bits: 42, machine_bits: 10, sequence_bits: 12 },
    );
    check(
        SnowflakeConfig {
            layout: Layout { timestamp_bits: 0, machine_bits: 10, sequence_bits: 12 },
            ..Default::default()
        },
        SnowflakeError::InvalidLayout { timestamp_bits: 0, machine_bits: 10, sequence_bits: 12 },
    );
    check(
        SnowflakeConfig {
            layout: Layout { timestamp_bits: 255, machine_bits: 255, sequence_bits: 255 },
            ..Default::default()
        },
        SnowflakeError::InvalidLayout {
            timestamp_bits: 255,
            machine_bits: 255,
            sequence_bits: 255,
        },
    );
    check(
        SnowflakeConfig { machine_id: 1024, ..Default::default() },
        SnowflakeError::MachineIdOutOfRange { machine_id: 1024, max: 1023 },
    );
    check(
        SnowflakeConfig {
            layout: Layout { timestamp_bits: 41, machine_bits: 0, sequence_bits: 12 },
            machine_id: 1,
            ..Default::default()
        },
        SnowflakeError::MachineIdOutOfRange { machine_id: 1, max: 0 },
    );
}

#[test]
fn time_outside_the_layout_is_an_error() {
    let config = SnowflakeConfig { epoch_ms: START_MS + 1, ..Default::default() };
    let sf = Snowflake::new(config, ManualClock::new(START_MS)).unwrap();
    assert_eq!(
        sf.next_id(),
        Err(SnowflakeError::BeforeEpoch { now_ms: START_MS, epoch_ms: START_MS + 1 })
    );

    let layout = Layout { timestamp_bits: 2, machine_bits: 0, sequence_bits: 1 };
    let clock = ManualClock::new(EPOCH_MS + 3);
    let config = SnowflakeConfig { layout, epoch_ms: EPOCH_MS, ..Default::default() };
    let sf = Snowflake::new(config, clock.clone()).unwrap();
    assert!(sf.next_id().is_ok());
    assert!(sf.next_id().is_ok());
    // Timestamp 3 is the last one 2 bits hold; its sequence is used up.
    assert_eq!(sf.next_id(), Err(SnowflakeError::TimestampOverflow));
    clock.advance(Duration::from_millis(1));
    assert_eq!(sf.next_id(), Err(SnowflakeError::TimestampOverflow));
}

#[test]
fn ids_strictly_increase_across_threads() {
    let clock = ManualClock::new(START_MS);
    let config = SnowflakeConfig { epoch_ms: EPOCH_MS, machine_id: 7, ..Default::default() };
    let sf = Arc::new(Snowflake::new(config, clock.clone()).unwrap());
    let per_thread = 20_000;
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let sf = Arc::clone(&sf);
            std::thread::spawn(move || {
                (0..per_thread).map(|_| sf.next_id().unwrap()).collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        let ids = handle.join().unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "a thread saw a non-increasing id");
        all.extend(ids);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 4 * per_thread);
    // 80,000 ids at 4096 per millisecond fill exactly 20 milliseconds: no id skipped
    // a sequence number, so the clock advanced only as far as needed.
    assert_eq!(clock.now_ms(), START_MS + 19);
    assert!(all.iter().all(|&id| sf.decode(id).machine_id == 7));
}
