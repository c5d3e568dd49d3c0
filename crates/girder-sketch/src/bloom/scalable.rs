//! Pattern: Bloom Filter for Membership Testing — the scalable variant (Almeida,
//! Baquero, Preguiça and Hutchison, "Scalable Bloom Filters", 2007), for sets whose
//! size is not known up front.
//!
//! **Guarantee.** No false negatives. However many keys are inserted (up to the
//! configured number of stages), the false-positive rate stays at or below the target
//! `p`. The filter is a list of stages, each a [`BloomFilter`]: stage `i` holds
//! `n₀·sⁱ` keys at rate `pᵢ = p·(1 − r)·rⁱ`. A key absent from all stages is wrongly
//! reported present with probability `1 − Π(1 − pᵢ) ≤ Σ pᵢ = p·(1 − rᵏ) < p`
//! ([`ScalableBloomFilter::false_positive_bound`]).
//!
//! **Trade-off.** A query probes every stage (a few, since capacities grow
//! geometrically: 7 stages hold 127·n₀ at `s = 2`), and each stage is sized for a
//! tighter rate than `p`, so a scalable filter takes more memory than a classic one
//! sized for the final count in advance. Keys cannot be removed, and there is no union:
//! two filters fill their stages at different keys, so their stages do not line up.
//!
//! **Defaults.** Growth `s = 2`: memory at most doubles past what is used. Tightening
//! `r = 0.85`, the paper's advice (0.8 to 0.9) for sets that grow by orders of
//! magnitude. Stage `i` costs `(−ln(p(1 − r)) − i·ln r)/ln²2` bits per key: `r = 0.5`
//! starts cheaper (1.44 extra bits per key at the first stage, against 3.95) but adds
//! 1.44 bits per key at every stage (against 0.34), so from the fourth stage on —
//! growth past 15·n₀ — `r = 0.85` is smaller. Measured at 100× growth (`n₀` = 1,000,
//! `p` = 1%, classic layout, 7 stages): 19.4 bits per key and a rate of 0.62% at
//! `r = 0.85`, against 23.3 bits per key and 0.96% at `r = 0.5` (a classic filter sized
//! for the final 100,000 keys: 9.6 bits per key).
//!
//! A key is hashed once (one XXH3-128) for all stages; stages share the seed. An
//! insert goes into the last stage only when no stage reports the key present, so each
//! stage's count is of keys it was given, and a stage is never filled past its
//! capacity. A stage is allocated when the first key that needs it arrives.

use super::{BITS_MAX, BloomConfig, BloomFilter, Layout, optimal_shape};
use crate::codec::{Kind, Reader, Writer};
use crate::error::{DecodeError, InsertError, ParamError};
use crate::hash::hash_pair;

/// The largest growth factor `s`.
pub const GROWTH_MAX: u32 = 16;
/// The most stages a filter may be configured for.
pub const STAGES_MAX: u32 = 64;

/// What a [`ScalableBloomFilter`] starts with and how it grows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalableBloomConfig {
    /// The first stage's capacity (`n₀`), at least 1.
    pub items_initial: u64,
    /// The rate the whole filter stays at or below (`p`), strictly between 0 and 1.
    pub false_positive_rate: f64,
    /// Each stage holds this many times the keys of the one before (`s`), in
    /// `1..=GROWTH_MAX`. Default 2.
    pub growth: u32,
    /// Each stage's rate is this fraction of the one before (`r`), strictly between 0
    /// and 1. Default 0.85 (see the module docs).
    pub tightening: f64,
    /// The most stages; an insert that needs one more fails with
    /// [`InsertError::Full`]. In `1..=STAGES_MAX`, default 32.
    pub stages_max: u32,
    /// The stages' bit layout; [`Layout::Classic`] by default.
    pub layout: Layout,
    /// The hash seed.
    pub seed: u64,
}

impl ScalableBloomConfig {
    /// A filter starting at `items_initial` keys that stays at or below
    /// `false_positive_rate`, with the default growth, tightening and stage limit.
    pub fn new(items_initial: u64, false_positive_rate: f64) -> Self {
        Self {
            items_initial,
            false_positive_rate,
            growth: 2,
            tightening: 0.85,
            stages_max: 32,
            layout: Layout::Classic,
            seed: 0,
        }
    }

    /// The same, with another growth factor.
    pub fn growth(self, growth: u32) -> Self {
        Self { growth, ..self }
    }

    /// The same, with another tightening ratio.
    pub fn tightening(self, tightening: f64) -> Self {
        Self { tightening, ..self }
    }

    /// The same, with another stage limit.
    pub fn stages_max(self, stages_max: u32) -> Self {
        Self { stages_max, ..self }
    }

    /// The same, with another layout.
    pub fn layout(self, layout: Layout) -> Self {
        Self { layout, ..self }
    }

    /// The same, with another seed.
    pub fn seed(self, seed: u64) -> Self {
        Self { seed, ..self }
    }

    /// Stage `i`'s capacity `n₀·sⁱ` and rate `p·(1 − r)·rⁱ`; `None` when the capacity
    /// overflows.
    fn stage(&self, i: u32) -> Option<(u64, f64)> {
        let capacity = u64::from(self.growth).checked_pow(i)?.checked_mul(self.items_initial)?;
        let rate =
            self.false_positive_rate * (1.0 - self.tightening) * self.tightening.powi(i as i32);
        Some((capacity, rate))
    }

    /// Stage `i`'s filter config; `None` when its capacity overflows.
    fn stage_config(&self, i: u32) -> Option<(u64, BloomConfig)> {
        let (capacity, rate) = self.stage(i)?;
        Some((capacity, BloomConfig::new(capacity, rate).layout(self.layout).seed(self.seed)))
    }

    /// Checks every field; on failure, the offending field and its value (floats as
    /// their bits).
    fn check(&self) -> Result<(), ParamError> {
        for (name, value) in
            [("false_positive_rate", self.false_positive_rate), ("tightening", self.tightening)]
        {
            if !(value > 0.0 && value < 1.0) {
                return Err(ParamError::Probability { name, value });
            }
        }
        let range = |name, value: u64, min, max| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ParamError::OutOfRange { name, value, min, max })
            }
        };
        range("items_initial", self.items_initial, 1, u64::MAX)?;
        range("growth", self.growth.into(), 1, GROWTH_MAX.into())?;
        range("stages_max", self.stages_max.into(), 1, STAGES_MAX.into())
    }
}

/// One stage: a filter and how many keys it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stage {
    filter: BloomFilter,
    items: u64,
    capacity: u64,
}

/// A Bloom filter that grows by adding stages, keeping its false-positive rate at or
/// below a target.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalableBloomFilter {
    config: ScalableBloomConfig,
    stages: Vec<Stage>,
}

impl ScalableBloomFilter {
    /// A filter with its first stage allocated.
    pub fn new(config: &ScalableBloomConfig) -> Result<Self, ParamError> {
        config.check()?;
        let (capacity, stage) = config.stage_config(0).ok_or(ParamError::OutOfRange {
            name: "items_initial",
            value: config.items_initial,
            min: 1,
            max: u64::MAX,
        })?;
        let filter = BloomFilter::new(&stage)?;
        Ok(Self { config: *config, stages: vec![Stage { filter, items: 0, capacity }] })
    }

    /// Adds `key`. `Ok(true)` when it was added to the last stage, `Ok(false)` when
    /// some stage already reports it present (then nothing changes). When the last
    /// stage is full and no further stage may be added, [`InsertError::Full`] and
    /// nothing changes.
    pub fn insert(&mut self, key: impl AsRef<[u8]>) -> Result<bool, InsertError> {
        let (h1, h2) = hash_pair(key.as_ref(), self.config.seed);
        if self.stages.iter().any(|s| s.filter.contains_hashed(h1, h2)) {
            return Ok(false);
        }
        if self.last().items >= self.last().capacity {
            self.add_stage()?;
        }
        let last = self.stages.last_mut().expect("a filter always has a stage");
        last.filter.insert_hashed(h1, h2);
        last.items += 1;
        debug_assert!(last.items <= last.capacity);
        Ok(true)
    }

    /// Whether `key` may be in the filter: `false` is certain, `true` is wrong with
    /// probability at most [`ScalableBloomFilter::false_positive_bound`].
    pub fn contains(&self, key: impl AsRef<[u8]>) -> bool {
        let (h1, h2) = hash_pair(key.as_ref(), self.config.seed);
        self.stages.iter().any(|s| s.filter.contains_hashed(h1, h2))
    }

    /// The number of keys added (inserts that returned `Ok(true)`).
    pub fn len(&self) -> u64 {
        self.stages.iter().map(|s| s.items).sum()
    }

    /// Whether no key was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys the stages allocated so far can hold.
    pub fn capacity(&self) -> u64 {
        self.stages.iter().map(|s| s.capacity).fold(0, u64::saturating_add)
    }

    /// The number of stages allocated.
    pub fn stages(&self) -> u32 {
        self.stages.len() as u32
    }

    /// The bits of all stages together.
    pub fn bits(&self) -> u64 {
        self.stages.iter().map(|s| s.filter.bits()).sum()
    }

    /// `1 − Π(1 − pᵢ)` over the stages allocated, with each stage's design rate `pᵢ`:
    /// the most the filter's false-positive rate reaches while each stage is within its
    /// capacity, which the filter ensures. Always below the target `p`.
    pub fn false_positive_bound(&self) -> f64 {
        let miss_all: f64 = (0..self.stages())
            .filter_map(|i| self.config.stage(i))
            .map(|(_, rate)| 1.0 - rate)
            .product();
        1.0 - miss_all
    }

    /// The config the filter was built with.
    pub fn config(&self) -> &ScalableBloomConfig {
        &self.config
    }

    fn last(&self) -> &Stage {
        self.stages.last().expect("a filter always has a stage")
    }

    fn add_stage(&mut self) -> Result<(), InsertError> {
        let full = InsertError::Full { stages: self.stages() };
        if self.stages() >= self.config.stages_max {
            return Err(full);
        }
        let (capacity, stage) = self.config.stage_config(self.stages()).ok_or(full.clone())?;
        let filter = BloomFilter::new(&stage).map_err(|_| full)?;
        self.stages.push(Stage { filter, items: 0, capacity });
        Ok(())
    }

    /// The serialized form: the shared frame (see the crate docs) around
    /// `items_initial (8) | false_positive_rate (8, f64) | growth (4) | tightening (8,
    /// f64) | stages_max (4) | layout (1) | seed (8) | stages (4)` and, per stage,
    /// `items (8) | length (4) | the stage's BloomFilter frame`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let frames: Vec<Vec<u8>> = self.stages.iter().map(|s| s.filter.to_bytes()).collect();
        let payload = 45 + frames.iter().map(|f| 12 + f.len()).sum::<usize>();
        let c = &self.config;
        let mut w = Writer::new(Kind::ScalableBloom, payload);
        w.u64(c.items_initial);
        w.u64(c.false_positive_rate.to_bits());
        w.u32(c.growth);
        w.u64(c.tightening.to_bits());
        w.u32(c.stages_max);
        w.u8(layout_byte(c.layout));
        w.u64(c.seed);
        w.u32(self.stages());
        for (stage, frame) in self.stages.iter().zip(&frames) {
            w.u64(stage.items);
            w.u32(frame.len() as u32);
            w.bytes(frame);
        }
        w.finish()
    }

    /// Reads a filter written by [`ScalableBloomFilter::to_bytes`]. Damaged, truncated
    /// or foreign bytes, and stages that do not match the config (another shape, more
    /// keys than their capacity, a stage that is not full followed by another), are a
    /// [`DecodeError`], never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::open(bytes, Kind::ScalableBloom)?;
        let items_initial = r.u64()?;
        let false_positive_rate = f64::from_bits(r.u64()?);
        let growth = r.u32()?;
        let tightening = f64::from_bits(r.u64()?);
        let stages_max = r.u32()?;
        let layout = match r.u8()? {
            0 => Layout::Classic,
            1 => Layout::Blocked,
            other => return Err(DecodeError::Invalid { field: "layout", value: other.into() }),
        };
        let seed = r.u64()?;
        let config = ScalableBloomConfig {
            items_initial,
            false_positive_rate,
            growth,
            tightening,
            stages_max,
            layout,
            seed,
        };
        config.check().map_err(|e| match e {
            ParamError::Probability { name, value } => {
                DecodeError::Invalid { field: name, value: value.to_bits() }
            }
            ParamError::OutOfRange { name, value, .. } => {
                DecodeError::Invalid { field: name, value }
            }
        })?;
        let count = r.u32()?;
        if !(1..=stages_max).contains(&count) {
            return Err(DecodeError::Invalid { field: "stages", value: count.into() });
        }
        let mut stages = Vec::new();
        for i in 0..count {
            let items = r.u64()?;
            let len = r.u32()?;
            let filter = BloomFilter::from_bytes(r.bytes(len as usize)?)?;
            let (capacity, stage) = config
                .stage_config(i)
                .ok_or(DecodeError::Invalid { field: "stage capacity", value: i.into() })?;
            // The shape is recomputed, not trusted: a stage of another shape would hold
            // its keys at another rate than the bound promises.
            let (bits, hashes) = optimal_shape(&stage)
                .map_err(|_| DecodeError::Invalid { field: "stage size", value: i.into() })?;
            debug_assert!(bits <= BITS_MAX);
            if (filter.bits, filter.hashes, filter.layout, filter.seed)
                != (bits, hashes, layout, seed)
            {
                return Err(DecodeError::Invalid { field: "stage shape", value: i.into() });
            }
            let full_before = i + 1 < count;
            if items > capacity || (full_before && items != capacity) {
                return Err(DecodeError::Invalid { field: "stage items", value: items });
            }
            stages.push(Stage { filter, items, capacity });
        }
        if r.remaining() != 0 {
            let expected = (bytes.len() - r.remaining()) as u64;
            return Err(DecodeError::Length { expected, got: bytes.len() as u64 });
        }
        Ok(Self { config, stages })
    }
}

fn layout_byte(layout: Layout) -> u8 {
    match layout {
        Layout::Classic => 0,
        Layout::Blocked => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_follow_the_paper() {
        let c = ScalableBloomConfig::new(1000, 0.01);
        let (n0, p0) = c.stage(0).expect("fits");
        let (n3, p3) = c.stage(3).expect("fits");
        assert_eq!((n0, n3), (1000, 8000));
        assert!((p0 - 0.0015).abs() < 1e-12 && (p3 - 0.0015 * 0.85f64.powi(3)).abs() < 1e-12);
        // Σ pᵢ over every stage converges to p (growth 1, so no capacity overflows).
        let sum: f64 = (0..200).filter_map(|i| c.growth(1).stage(i)).map(|(_, p)| p).sum();
        assert!((sum - 0.01).abs() < 1e-9, "{sum}");
        assert_eq!(c.growth(16).stage(16), None, "16^16 · 1000 overflows");
    }

    #[test]
    fn bad_configs_are_typed_errors() {
        let c = ScalableBloomConfig::new(100, 0.01);
        let check = |c: ScalableBloomConfig, field: &str| {
            let got = ScalableBloomFilter::new(&c);
            assert!(
                matches!(&got, Err(ParamError::Probability { name, .. } | ParamError::OutOfRange { name, .. }) if *name == field),
                "{field}: {got:?}"
            );
        };
        check(ScalableBloomConfig { items_initial: 0, ..c }, "items_initial");
        check(ScalableBloomConfig { false_positive_rate: 1.0, ..c }, "false_positive_rate");
        check(c.tightening(0.0), "tightening");
        check(c.tightening(f64::NAN), "tightening");
        check(c.growth(0), "growth");
        check(c.growth(GROWTH_MAX + 1), "growth");
        check(c.stages_max(0), "stages_max");
        check(c.stages_max(STAGES_MAX + 1), "stages_max");
    }

    #[test]
    fn full_when_out_of_stages_and_unchanged() {
        let mut f = ScalableBloomFilter::new(&ScalableBloomConfig::new(2, 0.01).stages_max(2))
            .expect("valid");
        let mut added = 0;
        let mut i = 0u32;
        while added < 6 {
            if f.insert(i.to_le_bytes()).expect("room for 2 + 4 keys") {
                added += 1;
            }
            i += 1;
        }
        assert_eq!((f.stages(), f.len(), f.capacity()), (2, 6, 6));
        let before = f.clone();
        let mut refused = 0;
        for j in i..i + 100 {
            match f.insert(j.to_le_bytes()) {
                Ok(false) => {}
                Ok(true) => panic!("no stage has room"),
                Err(InsertError::Full { stages }) => {
                    assert_eq!(stages, 2);
                    refused += 1;
                }
            }
        }
        assert!(refused > 90, "most fresh keys are refused, {refused}");
        assert_eq!(f, before);
    }
}
