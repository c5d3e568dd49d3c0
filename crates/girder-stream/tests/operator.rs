//! The window operator against exact models.

use std::collections::{BTreeMap, HashMap};

use girder_stream::{
    Count, EmissionKind, EmitPolicy, OperatorConfig, Rejected, StateError, Window, WindowOperator,
    WindowSpec,
};
use proptest::prelude::*;

type Op = WindowOperator<u64, Count>;

/// Applies emissions as an upserting sink would: the last value per (key, window),
/// retractions remove.
fn apply(sink: &mut BTreeMap<(u64, Window), u64>, op: &mut Op) {
    for e in op.fire() {
        match e.kind {
            EmissionKind::Retract => {
                sink.remove(&(e.key, e.window));
            }
            _ => {
                sink.insert((e.key, e.window), e.value);
            }
        }
    }
}

fn exact(spec: WindowSpec, events: &[(u64, i64)]) -> BTreeMap<(u64, Window), u64> {
    let mut out = BTreeMap::new();
    for &(key, t) in events {
        spec.assign(t, |w| *out.entry((key, w)).or_insert(0) += 1);
    }
    out
}

/// Events with times that go back at most `disorder` ms behind the newest.
fn disordered(max_len: usize, disorder: i64) -> impl Strategy<Value = Vec<(u64, i64)>> {
    prop::collection::vec((0u64..6, 0i64..400, 0i64..=disorder), 0..max_len).prop_map(
        move |steps| {
            let mut newest = 0;
            steps
                .into_iter()
                .map(|(key, forward, back)| {
                    newest += forward;
                    (key, (newest - back).max(newest - disorder))
                })
                .collect()
        },
    )
}

fn config(windows: WindowSpec, ooo: i64, lateness: i64) -> OperatorConfig {
    OperatorConfig {
        out_of_orderness_ms: ooo,
        allowed_lateness_ms: lateness,
        ..OperatorConfig::new(windows)
    }
}

proptest! {
    /// Within the out-of-orderness bound nothing is late, and after a final watermark
    /// the sink holds exactly the exact counts, each emitted once as final.
    #[test]
    fn bounded_disorder_gives_exact_windows(
        events in disordered(300, 1_000),
        spec in prop_oneof![
            (1i64..2_000).prop_map(|size_ms| WindowSpec::Tumbling { size_ms }),
            (1i64..400, 1i64..5).prop_map(|(slide_ms, n)| WindowSpec::Sliding { size_ms: slide_ms * n, slide_ms }),
            (1i64..800).prop_map(|gap_ms| WindowSpec::Session { gap_ms }),
        ],
        fire_every in 1usize..50,
    ) {
        let mut op = Op::new(Count, config(spec, 1_000, 0)).unwrap();
        let mut sink = BTreeMap::new();
        for (i, &(key, t)) in events.iter().enumerate() {
            prop_assert_eq!(op.process(key, t, &1), Ok(()));
            if i % fire_every == 0 {
                apply(&mut sink, &mut op);
            }
        }
        op.advance_watermark(i64::MAX);
        apply(&mut sink, &mut op);
        prop_assert_eq!(op.slots(), 0, "everything closed is dropped");
        if let WindowSpec::Session { gap_ms } = spec {
            // Sessions: per key, merge the exact per-event windows.
            let mut by_key: HashMap<u64, Vec<i64>> = HashMap::new();
            for &(k, t) in &events { by_key.entry(k).or_default().push(t); }
            let mut want = BTreeMap::new();
            for (k, mut ts) in by_key {
                ts.sort_unstable();
                let mut cur: Option<(Window, u64)> = None;
                for t in ts {
                    cur = match cur {
                        Some((w, n)) if t <= w.end => Some((Window { start: w.start, end: w.end.max(t + gap_ms) }, n + 1)),
                        Some((w, n)) => { want.insert((k, w), n); Some((Window { start: t, end: t + gap_ms }, 1)) }
                        None => Some((Window { start: t, end: t + gap_ms }, 1)),
                    };
                }
                if let Some((w, n)) = cur { want.insert((k, w), n); }
            }
            prop_assert_eq!(sink, want);
        } else {
            prop_assert_eq!(sink, exact(spec, &events));
        }
        prop_assert_eq!(op.stats().accepted, events.len() as u64);
        prop_assert_eq!(op.stats().late, 0);
    }

    /// Beyond the bound some events are late: each is either counted in the sink
    /// (within the allowed lateness) or refused and counted as late, never both and
    /// never neither.
    #[test]
    fn every_event_is_counted_or_refused_as_late(
        events in disordered(300, 3_000),
        lateness in 0i64..1_500,
        size_ms in 100i64..1_000,
    ) {
        let spec = WindowSpec::Tumbling { size_ms };
        let mut op = Op::new(Count, config(spec, 200, lateness)).unwrap();
        let mut sink = BTreeMap::new();
        let mut refused = Vec::new();
        for (i, &(key, t)) in events.iter().enumerate() {
            match op.process(key, t, &1) {
                Ok(()) => {}
                Err(Rejected::Late { watermark }) => {
                    prop_assert!(t - t.rem_euclid(size_ms) + size_ms + lateness <= watermark);
                    refused.push((key, t));
                }
                Err(Rejected::Full) => prop_assert!(false, "not bounded here"),
            }
            if i % 7 == 0 { apply(&mut sink, &mut op); }
        }
        op.advance_watermark(i64::MAX);
        apply(&mut sink, &mut op);
        let counted: u64 = sink.values().sum();
        prop_assert_eq!(counted + refused.len() as u64, events.len() as u64);
        prop_assert_eq!(op.stats().late, refused.len() as u64);
    }

    /// A snapshot taken anywhere and restored gives the same emissions as carrying on.
    #[test]
    fn snapshots_restore_the_same_operator(
        events in disordered(200, 2_000),
        cut in 0usize..200,
        spec in prop_oneof![
            (50i64..1_000).prop_map(|size_ms| WindowSpec::Tumbling { size_ms }),
            (1i64..500).prop_map(|gap_ms| WindowSpec::Session { gap_ms }),
        ],
    ) {
        let cfg = OperatorConfig { emit: EmitPolicy::Early, ..config(spec, 300, 500) };
        let run = |restore_at: Option<usize>| {
            let mut op = Op::new(Count, cfg).unwrap();
            let mut log = Vec::new();
            for (i, &(key, t)) in events.iter().enumerate() {
                if Some(i) == restore_at {
                    op = Op::restore(Count, cfg, &op.snapshot()).unwrap();
                }
                let _ = op.process(key, t, &1);
                if i % 5 == 0 { log.extend(op.fire().into_iter().map(|e| (e.key, e.window, e.value, e.kind))); }
            }
            op.advance_watermark(i64::MAX);
            log.extend(op.fire().into_iter().map(|e| (e.key, e.window, e.value, e.kind)));
            // Within one fire, order is unspecified.
            log.sort_by_key(|e| (e.1, e.0, e.2, format!("{:?}", e.3)));
            (log, op.stats())
        };
        prop_assert_eq!(run(None), run(Some(cut)));
    }

    /// Arbitrary bytes never restore into an operator, and never panic.
    #[test]
    fn arbitrary_state_is_a_typed_error(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let cfg = config(WindowSpec::Tumbling { size_ms: 100 }, 0, 0);
        prop_assert!(Op::restore(Count, cfg, &bytes).is_err());
    }

    /// Damage anywhere in a real snapshot is caught.
    #[test]
    fn damaged_snapshots_are_refused(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let cfg = config(WindowSpec::Tumbling { size_ms: 100 }, 0, 0);
        let mut op = Op::new(Count, cfg).unwrap();
        for t in 0..50 { op.process(t as u64 % 7, t * 13, &1).unwrap(); }
        let mut bytes = op.snapshot();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        prop_assert!(Op::restore(Count, cfg, &bytes).is_err());
    }
}

#[test]
fn a_late_event_within_lateness_corrects_a_closed_window() {
    let spec = WindowSpec::Tumbling { size_ms: 60_000 };
    let mut op = Op::new(Count, config(spec, 0, 30_000)).unwrap();
    op.process(1, 10_000, &1).unwrap();
    op.process(1, 61_000, &1).unwrap(); // closes [0, 60s)
    let first = op.fire();
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].value, first[0].kind), (1, EmissionKind::Final));
    op.process(1, 20_000, &1).unwrap(); // late, within 30 s
    let second = op.fire();
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].value, second[0].kind), (2, EmissionKind::LateUpdate));
    assert_eq!(op.stats().late_added, 1);
    op.process(1, 95_000, &1).unwrap(); // watermark 95 s: [0, 60 s) + 30 s has passed
    assert_eq!(op.process(1, 30_000, &1), Err(Rejected::Late { watermark: 95_000 }));
    assert_eq!(op.stats().late, 1);
}

#[test]
fn early_emissions_show_open_windows_as_they_fill() {
    let spec = WindowSpec::Tumbling { size_ms: 1_000 };
    let cfg = OperatorConfig { emit: EmitPolicy::Early, ..config(spec, 0, 0) };
    let mut op = Op::new(Count, cfg).unwrap();
    op.process(7, 100, &1).unwrap();
    op.process(7, 200, &1).unwrap();
    let e = op.fire();
    assert_eq!((e[0].value, e[0].kind), (2, EmissionKind::Early));
    assert!(op.fire().is_empty(), "nothing changed");
    op.process(7, 300, &5).unwrap();
    assert_eq!(op.fire()[0].value, 7);
    op.process(7, 1_000, &1).unwrap();
    let e = op.fire();
    let closed: Vec<_> = e.iter().filter(|e| e.window.start == 0).collect();
    assert_eq!((closed[0].value, closed[0].kind), (7, EmissionKind::Final));
}

#[test]
fn a_session_that_merges_with_an_emitted_one_retracts_it() {
    let spec = WindowSpec::Session { gap_ms: 100 };
    let mut op = Op::new(Count, config(spec, 0, 1_000)).unwrap();
    op.process(1, 0, &1).unwrap();
    op.process(1, 250, &1).unwrap(); // closes [0, 100)
    let e = op.fire();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].window, Window { start: 0, end: 100 });
    op.process(1, 90, &1).unwrap(); // late; bridges? [90, 190) meets [0, 100) only
    let e = op.fire();
    let kinds: Vec<_> = e.iter().map(|e| (e.window, e.value, e.kind)).collect();
    assert!(
        kinds.contains(&(Window { start: 0, end: 100 }, 1, EmissionKind::Retract)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(Window { start: 0, end: 190 }, 2, EmissionKind::LateUpdate))
            || kinds.contains(&(Window { start: 0, end: 190 }, 2, EmissionKind::Final)),
        "{kinds:?}"
    );
}

#[test]
fn the_slot_bound_refuses_new_keys_and_keeps_old_ones() {
    let spec = WindowSpec::Tumbling { size_ms: 1_000 };
    let cfg = OperatorConfig { slots_max: 3, ..config(spec, 0, 0) };
    let mut op = Op::new(Count, cfg).unwrap();
    for k in 0..3 {
        op.process(k, 10, &1).unwrap();
    }
    assert_eq!(op.process(9, 10, &1), Err(Rejected::Full));
    op.process(2, 20, &1).unwrap();
    assert_eq!(op.stats().full, 1);
    op.advance_watermark(1_000);
    let mut got: Vec<_> = op.fire().into_iter().map(|e| (e.key, e.value)).collect();
    got.sort_unstable();
    assert_eq!(got, [(0, 1), (1, 1), (2, 2)]);
    op.process(9, 1_500, &1).unwrap();
}

#[test]
fn a_snapshot_under_other_settings_is_a_mismatch() {
    let a = config(WindowSpec::Tumbling { size_ms: 100 }, 0, 0);
    let b = config(WindowSpec::Tumbling { size_ms: 200 }, 0, 0);
    let op = Op::new(Count, a).unwrap();
    assert!(matches!(Op::restore(Count, b, &op.snapshot()), Err(StateError::Mismatch(_))));
    assert!(Op::new(Count, config(WindowSpec::Tumbling { size_ms: 0 }, 0, 0)).is_err());
    assert!(Op::new(Count, config(WindowSpec::Tumbling { size_ms: 10 }, -1, 0)).is_err());
}
