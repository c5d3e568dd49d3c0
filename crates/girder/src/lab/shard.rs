//! `girder lab shard` — Pattern: Database Sharding's placement trade-off, measured:
//! how many keys change shard when one shard joins or leaves, under each of
//! girder-shard's schemes and under the catalogue's `hash % N`, against the ideal
//! `K/N`; how evenly each spreads keys (the busiest shard's keys over the mean); and
//! what a lookup costs.
//!
//! For each shard count N (shards `0..N`): N → N+1 (the new shard is `shard-N`), N →
//! N−1 by removing a middle shard (`shard-N/2`; jump hash can only lose its last,
//! `shard-N−1`), and the load at N. Every count goes through
//! `girder_shard::hash::measure` over its fixed sample of keys, as in the crate's
//! tests, so the movement and load columns are the same in every run. Lookups per
//! second are a timed loop over 4,096 pre-hashed keys (they stay in L1, as in the
//! criterion bench `girder-bench --bench shard`), the best of three.
//!
//! Then the same join done for real: a fifth SQLite shard added online to four
//! holding the sample's keys, through girder-shard's `ShardedDb`, while a writer and a
//! reader run — rows moved against `K/5`, and how long the copy, the switch and the
//! cleanup took.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use girder_shard::hash::measure::{
    Load, Movement, ideal_moved_fraction, load, movement, sample_key_hashes,
};
use girder_shard::hash::{
    DEFAULT_VNODES_PER_SHARD, JumpHash, Rendezvous, Ring, RingConfig, ShardId, ShardMap,
};
use girder_shard::sql::{AddReport, KvTable, ReshardConfig, ShardedDb};
use girder_sql::{Db, PoolConfig, on_db};
use rand::Rng as _;
use serde_json::json;

use super::{LabContext, Plot, Report, Series};

/// The shard count the table's movement and spread columns are read at (the
/// catalogue's 8 → 9 example).
const REFERENCE_SHARDS: u32 = 8;

/// Shard counts of the lookup-rate columns: a small fleet, and one where rendezvous
/// hashing's `O(N)` lookup shows.
const LOOKUP_SHARDS: [u32; 2] = [8, 64];

/// Pre-hashed keys per timed lookup batch: 32 KiB, so the scheme's own work is
/// measured, not cache misses.
const LOOKUP_BATCH: u64 = 4096;

/// Timed runs per lookup measurement; the fastest is kept, since on a shared machine
/// interference only ever slows a run down.
const LOOKUP_RUNS: u32 = 3;

/// SQLite shards holding the keys before the online addition adds one more.
const ONLINE_SHARDS: u32 = 4;

/// Keys loaded per transaction before the online addition.
const LOAD_CHUNK: usize = 500;

/// Virtual nodes of the second ring: few points per shard, to show what the default
/// 256 buys in evenness.
const FEW_VNODES: u32 = 16;

/// A placement scheme under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Ring { vnodes_per_shard: u32 },
    Rendezvous,
    Jump,
    Modulo,
}

const SCHEMES: [Scheme; 5] = [
    Scheme::Ring { vnodes_per_shard: DEFAULT_VNODES_PER_SHARD },
    Scheme::Ring { vnodes_per_shard: FEW_VNODES },
    Scheme::Rendezvous,
    Scheme::Jump,
    Scheme::Modulo,
];

impl Scheme {
    fn name(self) -> String {
        match self {
            Self::Ring { vnodes_per_shard } => format!("ring ({vnodes_per_shard} vnodes)"),
            Self::Rendezvous => "rendezvous".into(),
            Self::Jump => "jump".into(),
            Self::Modulo => "hash % N".into(),
        }
    }

    /// Whether the scheme promises to move only the keys that must move.
    const fn is_consistent(self) -> bool {
        !matches!(self, Self::Modulo)
    }

    /// The shard a removal takes out of `0..shards`.
    const fn removed(self, shards: u32) -> ShardId {
        match self {
            Self::Jump => ShardId(shards - 1),
            _ => ShardId(shards / 2),
        }
    }

    /// Movement on adding and removing one shard from `0..shards`, and the load on
    /// `0..shards`, over `keys`.
    fn step(self, shards: u32, keys: &[u64]) -> anyhow::Result<Step> {
        let removed = self.removed(shards);
        Ok(match self {
            Self::Ring { vnodes_per_shard } => {
                let ring = Ring::new(ids(shards), RingConfig { vnodes_per_shard })?;
                let (mut grown, mut shrunk) = (ring.clone(), ring.clone());
                grown.add(ShardId(shards))?;
                shrunk.remove(removed)?;
                Step::measure(shards, &ring, &grown, &shrunk, keys)
            }
            Self::Rendezvous => {
                let map = Rendezvous::new(ids(shards))?;
                let (mut grown, mut shrunk) = (map.clone(), map.clone());
                grown.add(ShardId(shards))?;
                shrunk.remove(removed)?;
                Step::measure(shards, &map, &grown, &shrunk, keys)
            }
            Self::Jump => {
                let jump = JumpHash::new(shards)?;
                let (mut grown, mut shrunk) = (jump, jump);
                grown.push()?;
                anyhow::ensure!(shrunk.pop()? == removed, "jump hash removes its last shard");
                Step::measure(shards, &jump, &grown, &shrunk, keys)
            }
            Self::Modulo => {
                let map = Modulo { shards: ids(shards).collect() };
                let mut grown = map.clone();
                grown.shards.push(ShardId(shards));
                let mut shrunk = map.clone();
                shrunk.shards.retain(|&s| s != removed);
                Step::measure(shards, &map, &grown, &shrunk, keys)
            }
        })
    }

    /// Lookups per second over `0..shards`, the best of [`LOOKUP_RUNS`] runs of `span`.
    fn lookups_per_s(self, shards: u32, keys: &[u64], span: Duration) -> anyhow::Result<f64> {
        Ok(match self {
            Self::Ring { vnodes_per_shard } => {
                timed_lookups(&Ring::new(ids(shards), RingConfig { vnodes_per_shard })?, keys, span)
            }
            Self::Rendezvous => timed_lookups(&Rendezvous::new(ids(shards))?, keys, span),
            Self::Jump => timed_lookups(&JumpHash::new(shards)?, keys, span),
            Self::Modulo => timed_lookups(&Modulo { shards: ids(shards).collect() }, keys, span),
        })
    }
}

fn ids(shards: u32) -> impl Iterator<Item = ShardId> {
    (0..shards).map(ShardId)
}

/// The catalogue's `hash(user_id) % num_shards`: the shard at position `hash % N` of
/// the list owns the key. As even as the hash, but not consistent: changing N re-deals
/// almost every key, including between shards that were there all along.
#[derive(Debug, Clone)]
struct Modulo {
    /// Never empty.
    shards: Vec<ShardId>,
}

impl ShardMap for Modulo {
    #[inline]
    fn shard_of_hash(&self, key_hash: u64) -> ShardId {
        let at = key_hash % self.shards.len().max(1) as u64;
        self.shards.get(at as usize).copied().unwrap_or(ShardId(0))
    }

    fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn contains(&self, shard: ShardId) -> bool {
        self.shards.contains(&shard)
    }

    fn shards(&self) -> Vec<ShardId> {
        let mut shards = self.shards.clone();
        shards.sort_unstable();
        shards
    }
}

/// Looks the batch up repeatedly for `span`, [`LOOKUP_RUNS`] times; the best rate.
fn timed_lookups<M: ShardMap>(map: &M, keys: &[u64], span: Duration) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..LOOKUP_RUNS {
        let (mut looked_up, mut sink) = (0u64, 0u32);
        let started = Instant::now();
        while started.elapsed() < span {
            for &h in keys {
                sink ^= map.shard_of_hash(black_box(h)).0;
            }
            looked_up += keys.len() as u64;
        }
        black_box(sink);
        best = best.max(looked_up as f64 / started.elapsed().as_secs_f64());
    }
    best
}

/// One scheme at one shard count.
#[derive(Debug)]
struct Step {
    shards: u32,
    /// `0..shards` → plus `shard-N`.
    added: Movement,
    /// `0..shards` → minus [`Scheme::removed`].
    removed: Movement,
    /// Over `0..shards`.
    load: Load,
}

impl Step {
    fn measure<M: ShardMap>(shards: u32, map: &M, grown: &M, shrunk: &M, keys: &[u64]) -> Self {
        Self {
            shards,
            added: movement(map, grown, keys.iter().copied()),
            removed: movement(map, shrunk, keys.iter().copied()),
            load: load(map, keys.iter().copied()),
        }
    }

    /// Keys moved on adding a shard, over the ideal `1/(N+1)`.
    fn add_ratio(&self) -> f64 {
        let n = self.shards as usize;
        self.added.moved_fraction() / ideal_moved_fraction(n, n + 1)
    }

    /// Keys moved on removing a shard, over the ideal `1/N`.
    fn remove_ratio(&self) -> f64 {
        let n = self.shards as usize;
        self.removed.moved_fraction() / ideal_moved_fraction(n, n - 1)
    }
}

/// One scheme's measurements: a [`Step`] per shard count and its lookup rates.
struct Measured {
    scheme: Scheme,
    steps: Vec<Step>,
    /// Lookups per second at each of [`LOOKUP_SHARDS`].
    lookups_per_s: Vec<f64>,
}

impl Measured {
    fn at(&self, shards: u32) -> anyhow::Result<&Step> {
        self.steps
            .iter()
            .find(|s| s.shards == shards)
            .with_context(|| format!("{} was not measured at {shards} shards", self.scheme.name()))
    }

    fn last(&self) -> anyhow::Result<&Step> {
        self.steps.last().context("no shard counts measured")
    }

    /// The smallest and largest of `f` over every shard count.
    fn range(&self, f: impl Fn(&Step) -> f64) -> (f64, f64) {
        self.steps
            .iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
    }

    fn needless(&self) -> u64 {
        self.steps.iter().map(|s| s.added.needless + s.removed.needless).sum()
    }
}

pub(super) async fn run(ctx: &LabContext) -> anyhow::Result<Report> {
    let quick = ctx.options.quick;
    let (key_count, shard_counts, span): (u64, Vec<u32>, _) = if quick {
        (20_000, vec![2, 4, 8, 16, 32], Duration::from_millis(20))
    } else {
        (200_000, (2..=32).collect(), Duration::from_millis(200))
    };
    anyhow::ensure!(shard_counts.contains(&REFERENCE_SHARDS), "the reference count is measured");
    let keys: Vec<u64> = sample_key_hashes(key_count).collect();
    let batch: Vec<u64> = sample_key_hashes(LOOKUP_BATCH).collect();

    // Placement is pure computation over a fixed sample: no I/O to wait for, and the
    // lab's runtime runs nothing else meanwhile.
    ctx.phase("keys moved and load", (SCHEMES.len() * shard_counts.len()) as u64);
    let mut measured = Vec::new();
    for scheme in SCHEMES {
        let mut steps = Vec::new();
        for &n in &shard_counts {
            steps.push(scheme.step(n, &keys)?);
            ctx.progress.inc(1);
        }
        measured.push(Measured { scheme, steps, lookups_per_s: Vec::new() });
    }
    ctx.phase("lookups per second", (SCHEMES.len() * LOOKUP_SHARDS.len()) as u64);
    for m in &mut measured {
        for n in LOOKUP_SHARDS {
            m.lookups_per_s.push(m.scheme.lookups_per_s(n, &batch, span)?);
            ctx.progress.inc(1);
        }
    }

    ctx.phase("adding a SQLite shard online", 1);
    let online = online_addition(key_count).await?;
    ctx.progress.inc(1);

    let (first_n, last_n) = (shard_counts[0], shard_counts[shard_counts.len() - 1]);
    let reference = REFERENCE_SHARDS;
    let columns: Vec<String> = vec![
        "scheme".into(),
        format!("add {reference}→{}: moved %", reference + 1),
        "÷ ideal".into(),
        format!("remove 1 of {reference}: moved %"),
        "÷ ideal".into(),
        format!("add ÷ ideal, N={first_n}..{last_n}"),
        format!("remove ÷ ideal, N={first_n}..{last_n}"),
        format!("needless moves, N={first_n}..{last_n}"),
        format!("max/mean at {reference}"),
        format!("max/mean at {last_n}"),
        format!("M lookups/s at {}", LOOKUP_SHARDS[0]),
        format!("M lookups/s at {}", LOOKUP_SHARDS[1]),
    ];
    let mut rows = Vec::new();
    for m in &measured {
        let at = m.at(reference)?;
        let (add_lo, add_hi) = m.range(Step::add_ratio);
        let (remove_lo, remove_hi) = m.range(Step::remove_ratio);
        let mut row = vec![
            m.scheme.name(),
            format!("{:.2}", 100.0 * at.added.moved_fraction()),
            format!("{:.2}", at.add_ratio()),
            format!("{:.2}", 100.0 * at.removed.moved_fraction()),
            format!("{:.2}", at.remove_ratio()),
            format!("{add_lo:.2}–{add_hi:.2}"),
            format!("{remove_lo:.2}–{remove_hi:.2}"),
            m.needless().to_string(),
            format!("{:.3}", at.load.spread()),
            format!("{:.3}", m.last()?.load.spread()),
        ];
        row.extend(m.lookups_per_s.iter().map(|r| format!("{:.1}", r / 1e6)));
        rows.push(row);
    }

    let mut findings = findings(&measured, reference, (first_n, last_n), key_count)?;
    findings.push(online.finding());

    let mut series: Vec<Series> = measured
        .iter()
        .map(|m| Series {
            name: m.scheme.name(),
            points: m
                .steps
                .iter()
                .map(|s| (f64::from(s.shards), 100.0 * s.added.moved_fraction()))
                .collect(),
        })
        .collect();
    series.push(Series {
        name: "ideal, 1/(N+1)".into(),
        points: shard_counts.iter().map(|&n| (f64::from(n), 100.0 / f64::from(n + 1))).collect(),
    });

    Ok(Report {
        experiment: "shard".into(),
        ran_at: super::now_rfc3339(),
        parameters: json!({
            "quick": quick,
            "keys": key_count,
            "keys_are": "girder_shard::hash::measure::sample_key_hashes (XXH3-64 of 0..keys, little-endian)",
            "shard_counts": shard_counts,
            "reference_shards": reference,
            "added_shard": "shard-N",
            "removed_shard": "shard-N/2; jump hash: shard-(N-1), the only one it can remove",
            "ring_vnodes_per_shard": [DEFAULT_VNODES_PER_SHARD, FEW_VNODES],
            "lookup_shards": LOOKUP_SHARDS,
            "lookup_batch_keys": LOOKUP_BATCH,
            "lookup_run_ms": span.as_millis(),
            "lookup_runs_best_of": LOOKUP_RUNS,
            "online_addition": {
                "engine": "sqlite",
                "shards_before": ONLINE_SHARDS,
                "keys": key_count,
                "batch_keys": ReshardConfig::default().batch_keys,
                "traffic": "one writer and one reader, random keys, throughout",
                "keys_moved": online.report.keys_moved,
                "copy_ms": online.report.copy_time.as_secs_f64() * 1e3,
                "switch_wait_ms": online.report.switch_wait.as_secs_f64() * 1e3,
                "cleanup_ms": online.report.cleanup_time.as_secs_f64() * 1e3,
                "reads_during": online.reads,
                "writes_during": online.writes,
            },
        }),
        columns,
        rows,
        plot: Some(Plot {
            title: "Keys moved when a shard joins N shards".into(),
            x_label: "shards before the join (N)".into(),
            y_label: "keys moved (%)".into(),
            series,
            log_x: false,
            log_y: false,
        }),
        findings,
        more_plots: Vec::new(),
    })
}

/// What the numbers say, computed from them.
fn findings(
    measured: &[Measured],
    reference: u32,
    (first_n, last_n): (u32, u32),
    key_count: u64,
) -> anyhow::Result<Vec<String>> {
    let (consistent, naive): (Vec<&Measured>, Vec<&Measured>) =
        measured.iter().partition(|m| m.scheme.is_consistent());
    let modulo = naive.first().context("hash % N is measured")?;
    let by = |scheme: Scheme| {
        measured.iter().find(|m| m.scheme == scheme).context("every scheme is measured")
    };
    let list = |f: &dyn Fn(&Measured) -> anyhow::Result<String>| -> anyhow::Result<String> {
        let parts: anyhow::Result<Vec<String>> =
            measured.iter().map(|m| Ok(format!("{} {}", m.scheme.name(), f(m)?))).collect();
        Ok(parts?.join(", "))
    };

    // Adding a shard at the reference count.
    let modulo_at = modulo.at(reference)?;
    let mut moved_lo = f64::INFINITY;
    let mut moved_hi = 0.0f64;
    for m in &consistent {
        let fraction = m.at(reference)?.added.moved_fraction();
        moved_lo = moved_lo.min(fraction);
        moved_hi = moved_hi.max(fraction);
    }
    let consistent_needless: u64 = consistent.iter().map(|m| m.needless()).sum();
    let needless_clause = if consistent_needless == 0 {
        "and none of their moves is needless: a key moves only to the joining shard or \
         from the leaving one"
            .to_owned()
    } else {
        format!("but {consistent_needless} of their moves were needless")
    };
    let ideal = ideal_moved_fraction(reference as usize, reference as usize + 1);
    let mut findings = vec![format!(
        "Adding shard {} to {reference}: hash % N moves {:.1}% of the keys, {:.1}× the ideal \
         1/{} = {:.1}%, and {:.0}% of those moves are between two shards that were there \
         before. The consistent schemes move {:.1}–{:.1}% ({:.2}–{:.2}× the ideal), {needless_clause}.",
        reference + 1,
        100.0 * modulo_at.added.moved_fraction(),
        modulo_at.add_ratio(),
        reference + 1,
        100.0 * ideal,
        100.0 * modulo_at.added.needless as f64 / modulo_at.added.moved.max(1) as f64,
        100.0 * moved_lo,
        100.0 * moved_hi,
        moved_lo / ideal,
        moved_hi / ideal,
    )];

    // Across every shard count.
    let ratio_range = |f: fn(&Step) -> f64| {
        list(&|m| {
            let (lo, hi) = m.range(f);
            Ok(format!("{lo:.2}–{hi:.2}×"))
        })
    };
    findings.push(format!(
        "Keys moved over the ideal for N = {first_n}..{last_n}: on adding a shard, {}; on \
         removing one, {}. hash % N moves almost every key (about N/(N+1) on a join), so its \
         excess grows with N; the ring's error comes from how much of the circle the added or removed shard's \
         points happen to cover, which fewer virtual nodes make larger.",
        ratio_range(Step::add_ratio)?,
        ratio_range(Step::remove_ratio)?,
    ));

    // Spread at the largest count.
    let rate = |m: &Measured, i: usize| m.lookups_per_s.get(i).copied().unwrap_or(f64::NAN);
    let ring_default = by(Scheme::Ring { vnodes_per_shard: DEFAULT_VNODES_PER_SHARD })?;
    let ring_few = by(Scheme::Ring { vnodes_per_shard: FEW_VNODES })?;
    findings.push(format!(
        "Busiest shard over the mean at {last_n} shards ({key_count} keys): {}. Jump, \
         rendezvous and hash % N place each key independently and evenly, so their excess \
         over 1 is sampling noise that shrinks as keys grow; the ring's comes from the \
         lengths of its arcs and stays: its busiest shard holds {:.0}% more than the mean \
         with {FEW_VNODES} virtual nodes per shard and {:.0}% more with \
         {DEFAULT_VNODES_PER_SHARD}. The fewer points cost less to search: {:.1} against \
         {:.1}M lookups/s at {} shards.",
        list(&|m| Ok(format!("{:.3}", m.last()?.load.spread())))?,
        100.0 * (ring_few.last()?.load.spread() - 1.0),
        100.0 * (ring_default.last()?.load.spread() - 1.0),
        rate(ring_few, 1) / 1e6,
        rate(ring_default, 1) / 1e6,
        LOOKUP_SHARDS[1],
    ));

    // Lookup cost.
    let rendezvous = by(Scheme::Rendezvous)?;
    findings.push(format!(
        "Million lookups per second of a pre-hashed key, at {} → {} shards: {}. Rendezvous \
         scores every shard, so it is {:.1}× slower at {}× the shards; jump's loop runs \
         about ln N + 0.6 rounds, the ring's binary search log2(N × vnodes) steps.",
        LOOKUP_SHARDS[0],
        LOOKUP_SHARDS[1],
        list(&|m| Ok(format!("{:.1} → {:.1}", rate(m, 0) / 1e6, rate(m, 1) / 1e6)))?,
        rate(rendezvous, 0) / rate(rendezvous, 1),
        LOOKUP_SHARDS[1] / LOOKUP_SHARDS[0],
    ));
    Ok(findings)
}

/// What adding a SQLite shard online took.
struct Online {
    keys: u64,
    report: AddReport,
    reads: u64,
    writes: u64,
}

impl Online {
    fn finding(&self) -> String {
        let ideal = self.keys as f64 / f64::from(ONLINE_SHARDS + 1);
        let copy_s = self.report.copy_time.as_secs_f64();
        format!(
            "Adding shard {} online to {ONLINE_SHARDS} SQLite shards holding {} keys (jump \
             hash, girder-shard's ShardedDb, batches of {}), with a writer and a reader \
             running throughout: {} keys moved, {:.3}× the ideal K/{}; the copy took {:.0} \
             ms ({:.0} rows/s), the switch waited {:.2} ms for calls in flight, the cleanup \
             {:.0} ms; {} reads and {} writes ran meanwhile and no read missed a key.",
            ONLINE_SHARDS + 1,
            self.keys,
            ReshardConfig::default().batch_keys,
            self.report.keys_moved,
            self.report.keys_moved as f64 / ideal,
            ONLINE_SHARDS + 1,
            copy_s * 1e3,
            self.report.rows_copied as f64 / copy_s.max(1e-9),
            self.report.switch_wait.as_secs_f64() * 1e3,
            self.report.cleanup_time.as_secs_f64() * 1e3,
            self.reads,
            self.writes,
        )
    }
}

/// Loads `keys` keys onto [`ONLINE_SHARDS`] SQLite shards, then adds one more online
/// while a writer updates random keys and a reader reads them (every key stays
/// present, so a read that finds none is an error).
async fn online_addition(keys: u64) -> anyhow::Result<Online> {
    let dir = tempfile::tempdir()?;
    let url = |i: u32| format!("sqlite:{}", dir.path().join(format!("shard-{i}.db")).display());
    let kv = KvTable::new("lab_kv")?;
    let map = JumpHash::new(ONLINE_SHARDS)?;
    let urls = (0..ONLINE_SHARDS).map(|i| (ShardId(i), url(i)));
    let sharded = Arc::new(ShardedDb::open(map, urls, PoolConfig::default(), kv.schema()).await?);

    let name = |i: u64| format!("key{i:08}");
    let router = sharded.router().await;
    let mut by_shard: BTreeMap<ShardId, Vec<String>> = BTreeMap::new();
    for i in 0..keys {
        by_shard.entry(router.map().shard_of(name(i).as_bytes())).or_default().push(name(i));
    }
    for (shard, names) in by_shard {
        let db = router.backend(shard).context("every shard has a database")?;
        for chunk in names.chunks(LOAD_CHUNK) {
            let values: Vec<String> =
                (0..chunk.len()).map(|i| format!("(${}, '0')", i + 1)).collect();
            let sql = format!("INSERT INTO lab_kv (k, v) VALUES {}", values.join(", "));
            on_db!(db, |pool| {
                let mut query = sqlx::query(&sql);
                for k in chunk {
                    query = query.bind(k);
                }
                query.execute(pool).await.map(drop)
            })?;
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (reads, writes, missing) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (sharded, kv, stop, writes) =
            (sharded.clone(), kv.clone(), stop.clone(), writes.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = name(rand::rng().random_range(0..keys));
                n += 1;
                let value = n.to_string();
                let (key, value) = (key.as_str(), value.as_str());
                sharded
                    .write(key.as_bytes(), |db| {
                        let kv = kv.clone();
                        async move { kv.put(&db, key, value).await }
                    })
                    .await?;
                writes.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        })
    };
    let reader = {
        let (sharded, kv, stop) = (sharded.clone(), kv.clone(), stop.clone());
        let (reads, missing) = (reads.clone(), missing.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let key = name(rand::rng().random_range(0..keys));
                let kv = kv.clone();
                let key = key.as_str();
                let got = sharded.read(key.as_bytes(), |db| async move { kv.get(&db, key).await });
                if got.await?.is_none() {
                    missing.fetch_add(1, Ordering::Relaxed);
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        })
    };

    let added = async {
        let new_db = Db::connect(&url(ONLINE_SHARDS), PoolConfig::default()).await?;
        let next = JumpHash::new(ONLINE_SHARDS + 1)?;
        let config = ReshardConfig::default();
        anyhow::Ok(sharded.add_shard(ShardId(ONLINE_SHARDS), new_db, next, &kv, config).await?)
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await??;
    reader.await??;
    let report = added?;
    sharded.close().await;
    let missing = missing.load(Ordering::Relaxed);
    anyhow::ensure!(missing == 0, "{missing} reads missed a key during the online addition");
    Ok(Online {
        keys,
        report,
        reads: reads.load(Ordering::Relaxed),
        writes: writes.load(Ordering::Relaxed),
    })
}
