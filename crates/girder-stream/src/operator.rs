//! The keyed window operator: events in, window results out, on event time.
//!
//! **Watermark.** The operator's watermark is the largest event time seen minus
//! [`OperatorConfig::out_of_orderness_ms`]: a claim that no event older than it is
//! still to come. It only moves forward. A window `[start, end)` *closes* when the
//! watermark reaches `end`: [`WindowOperator::fire`] then emits its
//! [`EmissionKind::Final`] value. A source that goes quiet can move the watermark
//! on with [`WindowOperator::advance_watermark`] (by wall clock, say).
//!
//! **Lateness.** A closed window keeps its state for
//! [`OperatorConfig::allowed_lateness_ms`] more: an event for it in that time is
//! added, and the next `fire` emits the window again as an
//! [`EmissionKind::LateUpdate`] with the corrected value. An event whose every window
//! is past `end + allowed_lateness` is refused as [`Rejected::Late`], and counted;
//! the caller routes it to a side output (nothing is dropped silently).
//!
//! **Emissions are upserts.** Every emission carries the window's whole value, not
//! a delta, so a sink that upserts by `(key, window)` ends with the right value
//! however often a value is emitted, and replaying events from a checkpoint leaves
//! it unchanged. A session that merges with one already emitted is answered with a
//! [`EmissionKind::Retract`] of the old window before the merged one.
//!
//! **State** is bounded by [`OperatorConfig::slots_max`] (one slot per key per open
//! window); an event that would need another slot is refused as [`Rejected::Full`].
//! [`WindowOperator::snapshot`] writes all of it, with a checksum, for a checkpoint;
//! [`WindowOperator::restore`] reads it back.

use std::collections::BTreeMap;
use std::hash::Hash;

use foldhash::fast::FixedState;
use hashbrown::HashMap;

use crate::aggregate::{Aggregate, StateCodec, take};
use crate::error::{ConfigError, StateError};
use crate::window::{EventTime, Window, WindowSpec};

/// When open windows are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitPolicy {
    /// Only when a window closes (and again when a late event corrects it).
    OnClose,
    /// Also at every [`WindowOperator::fire`], for each open window that changed since
    /// the last (early results for a live view).
    Early,
}

/// How an operator windows, waits and bounds itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorConfig {
    /// The windows.
    pub windows: WindowSpec,
    /// How far behind the newest event the watermark trails.
    pub out_of_orderness_ms: i64,
    /// How long a closed window still accepts events.
    pub allowed_lateness_ms: i64,
    /// When windows are emitted.
    pub emit: EmitPolicy,
    /// The most key-window slots held at once.
    pub slots_max: usize,
}

impl OperatorConfig {
    /// `windows` with 5 s out-of-orderness, no allowed lateness, emission on close and
    /// at most 10 million slots.
    #[must_use]
    pub fn new(windows: WindowSpec) -> Self {
        Self {
            windows,
            out_of_orderness_ms: 5_000,
            allowed_lateness_ms: 0,
            emit: EmitPolicy::OnClose,
            slots_max: 10_000_000,
        }
    }

    /// Checks every bound.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.windows.validate()?;
        let day = 24 * 3_600_000;
        for (name, v) in [
            ("out_of_orderness_ms", self.out_of_orderness_ms),
            ("allowed_lateness_ms", self.allowed_lateness_ms),
        ] {
            if !(0..=7 * day).contains(&v) {
                return Err(ConfigError::new(name, format!("{v} is not in 0..={} ms", 7 * day)));
            }
        }
        if self.slots_max == 0 {
            return Err(ConfigError::new("slots_max", "must be at least 1"));
        }
        Ok(())
    }
}

/// Why an event was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Every window of the event is past its allowed lateness.
    Late {
        /// The watermark when it arrived.
        watermark: EventTime,
    },
    /// The state holds [`OperatorConfig::slots_max`] slots.
    Full,
}

/// What an emission says about its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmissionKind {
    /// A value of a window still open; more events may follow.
    Early,
    /// The value when the window closed.
    Final,
    /// A closed window's value corrected by a late event.
    LateUpdate,
    /// The window no longer exists (a session merged into a larger one): remove it.
    Retract,
}

/// One window's value for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emission<K, A> {
    /// The key.
    pub key: K,
    /// The window.
    pub window: Window,
    /// The window's whole value (for a retraction, the last value emitted).
    pub value: A,
    /// What this emission is.
    pub kind: EmissionKind,
}

/// Counters since the operator was created (carried through snapshots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperatorStats {
    /// Events added.
    pub accepted: u64,
    /// Events refused as late.
    pub late: u64,
    /// Events refused because the state was full.
    pub full: u64,
    /// Late events that were still added to a closed window.
    pub late_added: u64,
    /// Emissions made.
    pub emitted: u64,
}

#[derive(Debug, Clone)]
struct Slot<A> {
    acc: A,
    dirty: bool,
    fired: bool,
}

#[derive(Debug)]
struct Pane<K, A> {
    slots: HashMap<K, Slot<A>, FixedState>,
    /// Some slot changed since the last emission.
    dirty: bool,
    /// The window closed and its final values were emitted.
    fired: bool,
}

/// One key's sessions, ordered by start.
type Sessions<A> = Vec<(Window, Slot<A>)>;

/// Keyed windowed aggregation on event time. See the [module docs](self).
pub struct WindowOperator<K, G: Aggregate> {
    agg: G,
    config: OperatorConfig,
    max_seen: Option<EventTime>,
    watermark: EventTime,
    /// Tumbling and sliding windows: each window's slots by key.
    panes: BTreeMap<Window, Pane<K, G::Acc>>,
    /// Session windows: each key's sessions, ordered by start.
    sessions: HashMap<K, Sessions<G::Acc>, FixedState>,
    sessions_dirty: bool,
    retractions: Vec<Emission<K, G::Acc>>,
    slots: usize,
    stats: OperatorStats,
}

impl<K, G> std::fmt::Debug for WindowOperator<K, G>
where
    G: Aggregate,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowOperator")
            .field("config", &self.config)
            .field("watermark", &self.watermark)
            .field("slots", &self.slots)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

const MAGIC: [u8; 4] = *b"GSTO";
const VERSION: u8 = 1;

impl<K, G> WindowOperator<K, G>
where
    K: Clone + Eq + Hash + StateCodec,
    G: Aggregate,
{
    /// An empty operator.
    ///
    /// # Errors
    /// [`ConfigError`] when a setting is out of range.
    pub fn new(agg: G, config: OperatorConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            agg,
            config,
            max_seen: None,
            watermark: EventTime::MIN,
            panes: BTreeMap::new(),
            sessions: HashMap::with_hasher(FixedState::default()),
            sessions_dirty: false,
            retractions: Vec::new(),
            slots: 0,
            stats: OperatorStats::default(),
        })
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &OperatorConfig {
        &self.config
    }

    /// The current watermark (`i64::MIN` before the first event).
    #[must_use]
    pub fn watermark(&self) -> EventTime {
        self.watermark
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> OperatorStats {
        self.stats
    }

    /// Key-window slots held.
    #[must_use]
    pub fn slots(&self) -> usize {
        self.slots
    }

    fn expired(&self, w: &Window) -> bool {
        w.end.saturating_add(self.config.allowed_lateness_ms) <= self.watermark
    }

    /// Adds one event for `key` at event time `t`.
    ///
    /// # Errors
    /// [`Rejected::Late`] when all its windows are past their allowed lateness (the
    /// caller's side output), [`Rejected::Full`] when the state is at its bound.
    pub fn process(&mut self, key: K, t: EventTime, input: &G::Input) -> Result<(), Rejected> {
        let result = match self.config.windows {
            WindowSpec::Session { gap_ms } => self.process_session(&key, t, gap_ms, input),
            spec => self.process_aligned(key, t, spec, input),
        };
        match result {
            Ok(()) => {
                self.stats.accepted += 1;
                if self.max_seen.is_none_or(|m| t > m) {
                    self.max_seen = Some(t);
                    let wm = t.saturating_sub(self.config.out_of_orderness_ms);
                    self.watermark = self.watermark.max(wm);
                }
            }
            Err(Rejected::Late { .. }) => self.stats.late += 1,
            Err(Rejected::Full) => self.stats.full += 1,
        }
        result
    }

    fn process_aligned(
        &mut self,
        key: K,
        t: EventTime,
        spec: WindowSpec,
        input: &G::Input,
    ) -> Result<(), Rejected> {
        let mut added = false;
        let mut full = false;
        let mut late_added = false;
        let watermark = self.watermark;
        let lateness = self.config.allowed_lateness_ms;
        // The key is moved into the last window's new slot and cloned for the others.
        let mut owned = Some(key);
        let mut windows = 0usize;
        spec.assign(t, |_| windows += 1);
        spec.assign(t, |w| {
            windows -= 1;
            let Some(key) = owned.as_ref() else { return };
            if w.end.saturating_add(lateness) <= watermark {
                return;
            }
            let pane = self.panes.entry(w).or_insert_with(|| Pane {
                slots: HashMap::with_hasher(FixedState::default()),
                dirty: false,
                fired: false,
            });
            let slot = match pane.slots.get_mut(key) {
                Some(slot) => slot,
                None => {
                    if self.slots >= self.config.slots_max {
                        full = true;
                        return;
                    }
                    self.slots += 1;
                    let key = if windows == 0 { owned.take() } else { owned.clone() };
                    let Some(key) = key else { return };
                    pane.slots.entry(key).or_insert(Slot {
                        acc: self.agg.init(),
                        dirty: false,
                        fired: false,
                    })
                }
            };
            self.agg.add(&mut slot.acc, input);
            slot.dirty = true;
            pane.dirty = true;
            added = true;
            late_added |= w.end <= watermark;
        });
        // An empty pane made for a slot that did not fit is dropped again.
        if full {
            self.panes.retain(|_, p| !p.slots.is_empty());
        }
        if late_added {
            self.stats.late_added += 1;
        }
        match (added, full) {
            (true, _) => Ok(()),
            (false, true) => Err(Rejected::Full),
            (false, false) => Err(Rejected::Late { watermark }),
        }
    }

    fn process_session(
        &mut self,
        key: &K,
        t: EventTime,
        gap_ms: i64,
        input: &G::Input,
    ) -> Result<(), Rejected> {
        let opened = Window { start: t, end: t.saturating_add(gap_ms) };
        if self.expired(&opened) {
            return Err(Rejected::Late { watermark: self.watermark });
        }
        let late = opened.end <= self.watermark;
        let sessions = match self.sessions.get_mut(key) {
            Some(s) => s,
            None => {
                if self.slots >= self.config.slots_max {
                    return Err(Rejected::Full);
                }
                self.sessions.entry(key.clone()).or_default()
            }
        };
        // The sessions the new window meets merge with it into one.
        let mut merged = Slot { acc: self.agg.init(), dirty: true, fired: false };
        self.agg.add(&mut merged.acc, input);
        let mut window = opened;
        let before = sessions.len();
        let mut kept = Vec::with_capacity(before + 1);
        for (w, slot) in sessions.drain(..) {
            if w.meets(&window) || w.meets(&opened) {
                window = Window { start: w.start.min(window.start), end: w.end.max(window.end) };
                self.agg.merge(&mut merged.acc, &slot.acc);
                if slot.fired {
                    self.retractions.push(Emission {
                        key: key.clone(),
                        window: w,
                        value: slot.acc,
                        kind: EmissionKind::Retract,
                    });
                }
            } else {
                kept.push((w, slot));
            }
        }
        let at = kept.partition_point(|(w, _)| w.start < window.start);
        kept.insert(at, (window, merged));
        let after = kept.len();
        *sessions = kept;
        self.slots = self.slots + after - before;
        self.sessions_dirty = true;
        if late {
            self.stats.late_added += 1;
        }
        Ok(())
    }

    /// Moves the watermark to `t` if that is later (a quiet source's time passing).
    pub fn advance_watermark(&mut self, t: EventTime) {
        self.watermark = self.watermark.max(t);
    }

    /// Emits what the watermark and the emit policy call for, then drops windows past
    /// their allowed lateness. Each window's emissions come in key order of nothing in
    /// particular; windows come earliest first.
    pub fn fire(&mut self) -> Vec<Emission<K, G::Acc>> {
        let mut out = std::mem::take(&mut self.retractions);
        let early = self.config.emit == EmitPolicy::Early;
        let watermark = self.watermark;
        let lateness = self.config.allowed_lateness_ms;
        for (w, pane) in &mut self.panes {
            let closed = w.end <= watermark;
            let closing = closed && !pane.fired;
            if !closing && !(pane.dirty && (closed || early)) {
                continue;
            }
            for (key, slot) in &mut pane.slots {
                if let Some(kind) = emission_kind(slot, closed, early) {
                    out.push(Emission {
                        key: key.clone(),
                        window: *w,
                        value: slot.acc.clone(),
                        kind,
                    });
                }
            }
            pane.dirty = false;
            pane.fired |= closed;
        }
        if self.sessions_dirty || !self.sessions.is_empty() {
            let mut any_open_dirty = false;
            for (key, sessions) in &mut self.sessions {
                for (w, slot) in sessions.iter_mut() {
                    let closed = w.end <= watermark;
                    if let Some(kind) = emission_kind(slot, closed, early) {
                        out.push(Emission {
                            key: key.clone(),
                            window: *w,
                            value: slot.acc.clone(),
                            kind,
                        });
                    }
                    any_open_dirty |= slot.dirty;
                }
            }
            self.sessions_dirty = any_open_dirty;
        }
        // Drop what no event may change any more.
        let expired = |w: &Window| w.end.saturating_add(lateness) <= watermark;
        while let Some(entry) = self.panes.first_entry() {
            if !expired(entry.key()) {
                break;
            }
            self.slots -= entry.remove().slots.len();
        }
        let mut dropped = 0;
        self.sessions.retain(|_, sessions| {
            let before = sessions.len();
            sessions.retain(|(w, _)| !expired(w));
            dropped += before - sessions.len();
            !sessions.is_empty()
        });
        self.slots -= dropped;
        self.stats.emitted += out.len() as u64;
        out
    }
}

/// What, if anything, a slot emits now; marks it emitted.
fn emission_kind<A>(slot: &mut Slot<A>, closed: bool, early: bool) -> Option<EmissionKind> {
    let kind = match (closed, slot.fired, slot.dirty) {
        (true, false, _) => EmissionKind::Final,
        (true, true, true) => EmissionKind::LateUpdate,
        (false, _, true) if early => EmissionKind::Early,
        _ => return None,
    };
    slot.dirty = false;
    slot.fired |= closed;
    Some(kind)
}

impl<K, G> WindowOperator<K, G>
where
    K: Clone + Eq + Hash + StateCodec,
    G: Aggregate,
{
    /// All state, with the settings it depends on and a CRC-32C, for a checkpoint.
    /// Emissions not yet made by [`fire`](Self::fire) are in it too.
    #[must_use]
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.slots * 24);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        encode_config(&self.config, &mut out);
        match self.max_seen {
            Some(t) => {
                1u8.encode(&mut out);
                t.encode(&mut out);
            }
            None => 0u8.encode(&mut out),
        }
        self.watermark.encode(&mut out);
        let s = self.stats;
        for v in [s.accepted, s.late, s.full, s.late_added, s.emitted] {
            v.encode(&mut out);
        }
        (self.panes.len() as u64).encode(&mut out);
        for (w, pane) in &self.panes {
            encode_window(w, &mut out);
            u8::from(pane.fired).encode(&mut out);
            (pane.slots.len() as u64).encode(&mut out);
            for (key, slot) in &pane.slots {
                key.encode(&mut out);
                encode_slot(slot, &mut out);
            }
        }
        (self.sessions.len() as u64).encode(&mut out);
        for (key, sessions) in &self.sessions {
            key.encode(&mut out);
            (sessions.len() as u64).encode(&mut out);
            for (w, slot) in sessions {
                encode_window(w, &mut out);
                encode_slot(slot, &mut out);
            }
        }
        (self.retractions.len() as u64).encode(&mut out);
        for r in &self.retractions {
            r.key.encode(&mut out);
            encode_window(&r.window, &mut out);
            r.value.encode(&mut out);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// An operator holding the state `bytes` was written with, under `config`.
    ///
    /// # Errors
    /// [`StateError`] when the bytes are damaged, not operator state, or written
    /// with other window or lateness settings.
    pub fn restore(agg: G, config: OperatorConfig, bytes: &[u8]) -> Result<Self, StateError> {
        let mut op = Self::new(agg, config).map_err(|_| StateError::Invalid("settings"))?;
        if bytes.len() < MAGIC.len() + 1 + 4 {
            return Err(StateError::Truncated);
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if body[..4] != MAGIC {
            return Err(StateError::Format(0));
        }
        if body[4] != VERSION {
            return Err(StateError::Format(body[4]));
        }
        let crc = u32::from_le_bytes(crc.try_into().map_err(|_| StateError::Truncated)?);
        if crc32c::crc32c(body) != crc {
            return Err(StateError::Checksum);
        }
        let mut input = &body[5..];
        let mut expected = Vec::new();
        encode_config(&config, &mut expected);
        if take(&mut input, expected.len())? != expected.as_slice() {
            return Err(StateError::Mismatch("windows, lateness or out-of-orderness"));
        }
        op.max_seen = match u8::decode(&mut input)? {
            0 => None,
            1 => Some(i64::decode(&mut input)?),
            _ => return Err(StateError::Invalid("max event time")),
        };
        op.watermark = i64::decode(&mut input)?;
        op.stats = OperatorStats {
            accepted: u64::decode(&mut input)?,
            late: u64::decode(&mut input)?,
            full: u64::decode(&mut input)?,
            late_added: u64::decode(&mut input)?,
            emitted: u64::decode(&mut input)?,
        };
        let mut slots = 0usize;
        for _ in 0..u64::decode(&mut input)? {
            let w = decode_window(&mut input)?;
            let fired = match u8::decode(&mut input)? {
                0 => false,
                1 => true,
                _ => return Err(StateError::Invalid("window flags")),
            };
            let mut pane =
                Pane { slots: HashMap::with_hasher(FixedState::default()), dirty: false, fired };
            for _ in 0..u64::decode(&mut input)? {
                let key = K::decode(&mut input)?;
                let slot = decode_slot::<G::Acc>(&mut input)?;
                pane.dirty |= slot.dirty;
                if pane.slots.insert(key, slot).is_some() {
                    return Err(StateError::Invalid("a key twice in one window"));
                }
                slots += 1;
            }
            if op.panes.insert(w, pane).is_some() {
                return Err(StateError::Invalid("a window twice"));
            }
        }
        for _ in 0..u64::decode(&mut input)? {
            let key = K::decode(&mut input)?;
            let mut sessions = Vec::new();
            for _ in 0..u64::decode(&mut input)? {
                let w = decode_window(&mut input)?;
                let slot = decode_slot::<G::Acc>(&mut input)?;
                op.sessions_dirty |= slot.dirty;
                sessions.push((w, slot));
                slots += 1;
            }
            if op.sessions.insert(key, sessions).is_some() {
                return Err(StateError::Invalid("a key's sessions twice"));
            }
        }
        for _ in 0..u64::decode(&mut input)? {
            op.retractions.push(Emission {
                key: K::decode(&mut input)?,
                window: decode_window(&mut input)?,
                value: G::Acc::decode(&mut input)?,
                kind: EmissionKind::Retract,
            });
        }
        if !input.is_empty() {
            return Err(StateError::Invalid("bytes after the state"));
        }
        op.slots = slots;
        Ok(op)
    }
}

fn encode_config(config: &OperatorConfig, out: &mut Vec<u8>) {
    let (kind, a, b) = match config.windows {
        WindowSpec::Tumbling { size_ms } => (1u8, size_ms, 0),
        WindowSpec::Sliding { size_ms, slide_ms } => (2, size_ms, slide_ms),
        WindowSpec::Session { gap_ms } => (3, gap_ms, 0),
    };
    kind.encode(out);
    a.encode(out);
    b.encode(out);
    config.out_of_orderness_ms.encode(out);
    config.allowed_lateness_ms.encode(out);
}

fn encode_window(w: &Window, out: &mut Vec<u8>) {
    w.start.encode(out);
    w.end.encode(out);
}

fn decode_window(input: &mut &[u8]) -> Result<Window, StateError> {
    let start = i64::decode(input)?;
    let end = i64::decode(input)?;
    if end <= start {
        return Err(StateError::Invalid("an empty window"));
    }
    Ok(Window { start, end })
}

fn encode_slot<A: StateCodec>(slot: &Slot<A>, out: &mut Vec<u8>) {
    (u8::from(slot.dirty) | (u8::from(slot.fired) << 1)).encode(out);
    slot.acc.encode(out);
}

fn decode_slot<A: StateCodec>(input: &mut &[u8]) -> Result<Slot<A>, StateError> {
    let flags = u8::decode(input)?;
    if flags > 3 {
        return Err(StateError::Invalid("slot flags"));
    }
    Ok(Slot { dirty: flags & 1 != 0, fired: flags & 2 != 0, acc: A::decode(input)? })
}
