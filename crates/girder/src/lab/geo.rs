//! `girder lab geo` — the geospatial chapter's trade-off, measured ("Pattern:
//! Geohashing for Proximity Search", "Pattern: Redis Geospatial Indexes", "Pattern:
//! S2 Geometry for Precise Coverage"): what a radius query costs — its latency and
//! the points it examines — against the radius and against the density, for six ways
//! of answering it over the same random points.
//!
//! **Points.** N points uniform in a 50 km × 50 km city (centred on Berlin, 52.52° N),
//! each moved to the centre of its 52-bit cell — the position Redis stores — so every
//! approach measures the same coordinates. Query centres are uniform in the same
//! square, the same ones for every approach.
//!
//! **Approaches.**
//! - *brute force*: `haversine_m` to every point.
//! - *geohash*: a hash map from geohash string to its points, at the finest precision
//!   whose cells are at least the radius tall and wide at the city's northern edge, so
//!   the centre's cell and its 8 neighbours hold the whole circle; each of their
//!   points is measured.
//! - *sorted scores*: girder-geo's `MemoryGeoIndex` (Redis's GEO semantics in
//!   process: 52-bit scores in a sorted array, scanned by the key ranges of a
//!   covering, a cheap bound before the exact distance).
//! - *H3*: `cells::cover_radius` at the finest resolution whose mean edge is at least
//!   half the radius, a hash map from cell to points, each point of the covering's
//!   cells measured.
//! - *R\*-tree*: `rstar` over the points as 3-D unit vectors, the radius as a chord
//!   (as `girder-bench --bench geo` does); the tree is asked for a chord a billionth
//!   longer and `haversine_m` decides, since the two formulas can disagree in the last
//!   bit at the rim.
//! - *Redis*: `GEOSEARCH key FROMLONLAT lon lat BYRADIUS r m`, one query per round
//!   trip over loopback (skipped, with a note, when Redis is unreachable).
//!
//! **Candidates examined** are the points whose distance to the centre was computed:
//! every point (brute force), every point in the nine cells or in the covering, the
//! tree's leaf distance tests, and the members the sorted-score index read from its
//! ranges (each first tested by a cheap bound). Redis does not expose it; its row
//! shows what it returned.
//!
//! **Agreement.** Each query's members are checked against brute force's before
//! anything is timed: an in-process approach that differs fails the run; Redis may
//! differ only for members within 1 m of the rim, which are counted.
//!
//! **Latency** is each query timed alone, p50 and p99, over passes through the query
//! set repeated until a minimum time (the untimed checking pass excluded).

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use girder_core::services::Service;
use girder_geo::cells;
use girder_geo::distance::{EARTH_RADIUS_M, haversine_m};
use girder_geo::geohash;
use girder_geo::index::{Center, Hit, MemoryGeoIndex, Search, Update};
use girder_geo::{Point, Score};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rstar::primitives::GeomWithData;
use rstar::{AABB, PointDistance, RTree, SelectionFunction};
use serde_json::json;

use super::{LabContext, Plot, Report, Series, percentile_us, thousands};

/// The city's centre (Berlin).
const CITY_LAT: f64 = 52.52;
const CITY_LON: f64 = 13.405;

/// The city's side, north–south and east–west.
const CITY_SIDE_M: f64 = 50_000.0;

/// The radii every density is queried at.
const RADII_M: [f64; 4] = [100.0, 500.0, 1_000.0, 5_000.0];

/// The radius of the latency-against-density plot.
const DENSITY_PLOT_RADIUS_M: f64 = 1_000.0;

/// How far from the rim Redis may disagree with brute force: its reply is the same
/// formula on the same stored positions, so anything farther is a bug.
const RIM_TOLERANCE_M: f64 = 1.0;

/// The most H3 cells one covering may take (the chosen resolutions need a few dozen).
const H3_CELLS_MAX: usize = 10_000;

/// Members per upsert while loading the sorted-score index.
const UPSERT_BATCH: usize = 10_000;

/// Members per `GEOADD`, and `GEOADD`s per pipelined round trip.
const GEOADD_MEMBERS: usize = 512;
const GEOADD_PIPELINE: usize = 8;

/// The size of a run.
#[derive(Debug, Clone)]
struct Shape {
    densities: Vec<usize>,
    /// Brute force's point tests per pass through the queries: sets how many queries
    /// a density gets, within `queries_min..=queries_max`.
    pass_tests: usize,
    queries_min: usize,
    queries_max: usize,
    /// Timed passes repeat until this much time has gone by…
    span: Duration,
    /// …or this many passes have run (at least one always does).
    passes_max: usize,
}

impl Shape {
    fn queries(&self, points: usize) -> usize {
        (self.pass_tests / points.max(1)).clamp(self.queries_min, self.queries_max)
    }
}

/// One way of answering a radius query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Approach {
    Brute,
    Geohash,
    SortedScores,
    H3,
    RTree,
    Redis,
}

const APPROACHES: [Approach; 6] = [
    Approach::Brute,
    Approach::Geohash,
    Approach::SortedScores,
    Approach::H3,
    Approach::RTree,
    Approach::Redis,
];

impl Approach {
    const fn name(self) -> &'static str {
        match self {
            Self::Brute => "brute force",
            Self::Geohash => "geohash + 8 neighbours",
            Self::SortedScores => "sorted scores (MemoryGeoIndex)",
            Self::H3 => "H3 covering",
            Self::RTree => "R*-tree (rstar)",
            Self::Redis => "Redis GEOSEARCH",
        }
    }

    /// Whether the candidates it examined can be counted.
    const fn candidates_observable(self) -> bool {
        !matches!(self, Self::Redis)
    }
}

/// What one search examined.
#[derive(Debug, Clone, Copy, Default)]
struct Examined {
    /// Points whose distance was computed (or bounded).
    candidates: u64,
    /// Cells looked up (geohash and H3).
    cells: u64,
}

/// One approach at one density and radius.
#[derive(Debug)]
struct Measured {
    points: usize,
    radius_m: f64,
    approach: Approach,
    /// The geohash precision or H3 resolution used.
    level: Option<u8>,
    queries: usize,
    /// Summed over the checking pass.
    candidates: u64,
    cells: u64,
    hits: u64,
    latencies_ns: Vec<u64>,
    /// Members that differ from brute force's (within [`RIM_TOLERANCE_M`] of the rim).
    rim_differences: usize,
}

impl Measured {
    fn p(&self, q: f64) -> f64 {
        percentile_us(&mut self.latencies_ns.clone(), q)
    }

    fn mean_candidates(&self) -> f64 {
        self.candidates as f64 / self.queries.max(1) as f64
    }

    fn mean_hits(&self) -> f64 {
        self.hits as f64 / self.queries.max(1) as f64
    }
}

/// The city's half extents in degrees of latitude and longitude.
fn half_extent_deg() -> (f64, f64) {
    let lat = (CITY_SIDE_M / 2.0 / EARTH_RADIUS_M).to_degrees();
    (lat, lat / CITY_LAT.to_radians().cos())
}

/// A uniform point of the city, at the centre of its 52-bit cell.
fn city_point(rng: &mut StdRng) -> anyhow::Result<Point> {
    let (dlat, dlon) = half_extent_deg();
    let lat = CITY_LAT + rng.random_range(-dlat..dlat);
    let lon = CITY_LON + rng.random_range(-dlon..dlon);
    Ok(Score::encode(Point::new(lat, lon)?)?.decode())
}

/// The finest geohash precision whose cells, anywhere in the city, are at least as
/// tall as the circle's latitude reach and as wide as its longitude reach: then the
/// 3 × 3 cells around the centre's hold the whole circle.
fn geohash_precision(radius_m: f64) -> anyhow::Result<u8> {
    let rho = radius_m / EARTH_RADIUS_M;
    let north = (CITY_LAT + half_extent_deg().0).to_radians();
    let need_lat = rho.to_degrees();
    let need_lon = (rho.sin() / north.cos()).min(1.0).asin().to_degrees();
    (1..=geohash::PRECISION_MAX)
        .rev()
        .find(|&p| {
            let bits = 5 * i32::from(p);
            let (lat_bits, lon_bits) = (bits / 2, bits - bits / 2);
            let height = 180.0 / 2f64.powi(lat_bits);
            let width = 360.0 / 2f64.powi(lon_bits);
            height >= need_lat && width >= need_lon
        })
        .with_context(|| format!("no geohash precision spans {radius_m} m"))
}

/// The finest H3 resolution whose mean edge is at least half the radius: a few dozen
/// cells cover the circle, and they reach about one edge beyond it.
fn h3_resolution(radius_m: f64) -> anyhow::Result<u8> {
    let mut chosen = 0;
    for res in 0..=cells::RESOLUTION_MAX {
        if cells::mean_edge_m(res)? >= radius_m / 2.0 {
            chosen = res;
        }
    }
    Ok(chosen)
}

/// A point as a unit vector, for the R*-tree.
fn unit(p: Point) -> [f64; 3] {
    let (lat, lon) = (p.lat().to_radians(), p.lon().to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

type TreeItem = GeomWithData<[f64; 3], u32>;

/// rstar's within-distance search, counting the leaves whose distance it computes.
struct CountedWithin<'a> {
    origin: [f64; 3],
    max_d2: f64,
    tested: &'a Cell<u64>,
}

impl SelectionFunction<TreeItem> for CountedWithin<'_> {
    fn should_unpack_parent(&self, envelope: &AABB<[f64; 3]>) -> bool {
        envelope.distance_2(&self.origin) <= self.max_d2
    }

    fn should_unpack_leaf(&self, leaf: &TreeItem) -> bool {
        self.tested.set(self.tested.get() + 1);
        leaf.distance_2(&self.origin) <= self.max_d2
    }
}

/// Hash maps from a cell to the points in it, built once per level.
struct CellMaps<K> {
    by_level: HashMap<u8, HashMap<K, Vec<u32>>>,
}

impl<K: std::hash::Hash + Eq> CellMaps<K> {
    fn build(
        levels: impl IntoIterator<Item = u8>,
        points: &[Point],
        key: impl Fn(Point, u8) -> anyhow::Result<K>,
    ) -> anyhow::Result<Self> {
        let mut by_level = HashMap::new();
        for level in levels {
            if by_level.contains_key(&level) {
                continue;
            }
            let mut map: HashMap<K, Vec<u32>> = HashMap::new();
            for (i, p) in points.iter().enumerate() {
                map.entry(key(*p, level)?).or_default().push(index_u32(i)?);
            }
            by_level.insert(level, map);
        }
        Ok(Self { by_level })
    }

    fn at(&self, level: u8) -> anyhow::Result<&HashMap<K, Vec<u32>>> {
        self.by_level.get(&level).with_context(|| format!("no cell map at level {level}"))
    }
}

fn index_u32(i: usize) -> anyhow::Result<u32> {
    u32::try_from(i).context("more points than u32 indexes")
}

/// Measures every point in `ids` from `c`, keeping those within `radius_m`.
#[inline]
fn refine(points: &[Point], ids: &[u32], c: Point, radius_m: f64, out: &mut Vec<u32>) {
    for &i in ids {
        if haversine_m(c, points[i as usize]) <= radius_m {
            out.push(i);
        }
    }
}

/// An approach's search: fills its members (when asked to collect them) and says what
/// it examined.
type SearchFn<'a> = dyn FnMut(Point, &mut Vec<u32>, bool) -> anyhow::Result<Examined> + 'a;

/// One checking pass (members sorted per query, examined counts), then timed passes.
fn measure(
    shape: &Shape,
    queries: &[Point],
    search: &mut SearchFn<'_>,
) -> anyhow::Result<(Vec<Vec<u32>>, Examined, Vec<u64>)> {
    let mut members = Vec::with_capacity(queries.len());
    let mut total = Examined::default();
    for &c in queries {
        let mut out = Vec::new();
        let e = search(c, &mut out, true)?;
        out.sort_unstable();
        members.push(out);
        total.candidates += e.candidates;
        total.cells += e.cells;
    }
    let mut latencies_ns = Vec::new();
    let mut out = Vec::new();
    let started = Instant::now();
    let mut passes = 0;
    while passes == 0 || (passes < shape.passes_max && started.elapsed() < shape.span) {
        for &c in queries {
            out.clear();
            let t = Instant::now();
            search(c, &mut out, false)?;
            latencies_ns.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        passes += 1;
    }
    Ok((members, total, latencies_ns))
}

/// Counts the members of `got` that differ from `truth`; fails on any farther than
/// `tolerance_m` from the rim (any at all when the tolerance is zero).
fn differences(
    approach: Approach,
    points: &[Point],
    queries: &[Point],
    radius_m: f64,
    truth: &[Vec<u32>],
    got: &[Vec<u32>],
    tolerance_m: f64,
) -> anyhow::Result<usize> {
    let mut differing = 0;
    for ((c, want), got) in queries.iter().zip(truth).zip(got) {
        if want == got {
            continue;
        }
        let (want_set, got_set): (std::collections::HashSet<_>, std::collections::HashSet<_>) =
            (want.iter().collect(), got.iter().collect());
        for &&i in want_set.symmetric_difference(&got_set) {
            let dist_m = haversine_m(*c, points[i as usize]);
            ensure!(
                tolerance_m > 0.0 && (dist_m - radius_m).abs() <= tolerance_m,
                "{} and brute force disagree on point {i} at {dist_m:.3} m from {c:?} \
                 (radius {radius_m} m)",
                approach.name()
            );
            differing += 1;
        }
    }
    Ok(differing)
}

/// A connection to the Redis the points are loaded into.
struct RedisSide {
    conn: redis::aio::MultiplexedConnection,
}

/// Connects to the lab's Redis (`--redis`) or the local default; `Err` is the note
/// the report gives when it is unreachable.
async fn connect_redis(url: &str) -> Result<RedisSide, String> {
    let client = redis::Client::open(url).map_err(|e| format!("{url}: {e}"))?;
    let connect = client.get_multiplexed_async_connection();
    // Generous: a Redis busy with someone else's long commands still counts as there.
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(conn)) => Ok(RedisSide { conn }),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Err(_) => Err(format!("{url}: no connection within 10 s")),
    }
}

impl RedisSide {
    /// Loads `points` under `key` (members named by their index); how long it took.
    async fn load(&mut self, key: &str, points: &[Point]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        redis::cmd("DEL").arg(key).query_async::<()>(&mut self.conn).await?;
        let chunk = GEOADD_MEMBERS * GEOADD_PIPELINE;
        for (n, batch) in points.chunks(chunk).enumerate() {
            let mut pipe = redis::pipe();
            for (m, members) in batch.chunks(GEOADD_MEMBERS).enumerate() {
                let cmd = pipe.cmd("GEOADD").arg(key);
                for (i, p) in members.iter().enumerate() {
                    cmd.arg(p.lon()).arg(p.lat()).arg(n * chunk + m * GEOADD_MEMBERS + i);
                }
                cmd.ignore();
            }
            pipe.query_async::<()>(&mut self.conn).await?;
        }
        let held: usize = redis::cmd("ZCARD").arg(key).query_async(&mut self.conn).await?;
        ensure!(held == points.len(), "Redis holds {held} of {} points", points.len());
        Ok(started.elapsed())
    }

    /// [`measure`] over `GEOSEARCH`.
    async fn measure(
        &mut self,
        shape: &Shape,
        key: &str,
        queries: &[Point],
        radius_m: f64,
    ) -> anyhow::Result<(Vec<Vec<u32>>, u64, Vec<u64>)> {
        let search = |c: Point| {
            let mut cmd = redis::cmd("GEOSEARCH");
            cmd.arg(key).arg("FROMLONLAT").arg(c.lon()).arg(c.lat());
            cmd.arg("BYRADIUS").arg(radius_m).arg("m");
            cmd
        };
        let mut members = Vec::with_capacity(queries.len());
        let mut returned = 0u64;
        for &c in queries {
            let names: Vec<String> = search(c).query_async(&mut self.conn).await?;
            returned += names.len() as u64;
            let mut ids = names
                .iter()
                .map(|m| m.parse::<u32>().with_context(|| format!("Redis member {m:?}")))
                .collect::<anyhow::Result<Vec<u32>>>()?;
            ids.sort_unstable();
            members.push(ids);
        }
        let mut latencies_ns = Vec::new();
        let started = Instant::now();
        let mut passes = 0;
        while passes == 0 || (passes < shape.passes_max && started.elapsed() < shape.span) {
            for &c in queries {
                let cmd = search(c);
                let t = Instant::now();
                let names: Vec<Vec<u8>> = cmd.query_async(&mut self.conn).await?;
                latencies_ns.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                std::hint::black_box(names);
            }
            passes += 1;
        }
        Ok((members, returned, latencies_ns))
    }
}

/// Everything measured at one density.
struct Density {
    points: usize,
    queries: usize,
    rows: Vec<Measured>,
    /// Build time per approach (brute force: none).
    build: Vec<(Approach, Duration)>,
}

/// Builds every structure over `points` and measures every approach at every radius.
#[expect(clippy::too_many_lines, reason = "one density's run, read top to bottom")]
async fn run_density(
    ctx: &LabContext,
    shape: &Shape,
    n: usize,
    redis: &mut Option<RedisSide>,
) -> anyhow::Result<Density> {
    let mut rng = StdRng::seed_from_u64(0x6e0 ^ n as u64);
    let points = (0..n).map(|_| city_point(&mut rng)).collect::<anyhow::Result<Vec<Point>>>()?;
    let queries = (0..shape.queries(n))
        .map(|_| city_point(&mut rng))
        .collect::<anyhow::Result<Vec<Point>>>()?;

    ctx.phase(&format!("{n} points: building indexes"), 5);
    let mut build = Vec::new();
    let precisions =
        RADII_M.map(geohash_precision).into_iter().collect::<anyhow::Result<Vec<u8>>>()?;
    let resolutions =
        RADII_M.map(h3_resolution).into_iter().collect::<anyhow::Result<Vec<u8>>>()?;
    let started = Instant::now();
    let geohash_maps = CellMaps::build(precisions.iter().copied(), &points, |p, level| {
        Ok(geohash::encode(p, level)?.to_string())
    })?;
    build.push((Approach::Geohash, started.elapsed()));
    ctx.progress.inc(1);
    let started = Instant::now();
    let names: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let index = MemoryGeoIndex::default();
    for (names, points) in names.chunks(UPSERT_BATCH).zip(points.chunks(UPSERT_BATCH)) {
        let batch: Vec<Update<'_>> = names
            .iter()
            .zip(points)
            .map(|(member, point)| Update { member, point: *point, ttl_ms: None })
            .collect();
        index.upsert_now(&batch)?;
    }
    drop(names);
    build.push((Approach::SortedScores, started.elapsed()));
    ctx.progress.inc(1);
    let started = Instant::now();
    let h3_maps = CellMaps::build(resolutions.iter().copied(), &points, |p, level| {
        Ok(cells::Cell::of(p, level)?.raw())
    })?;
    build.push((Approach::H3, started.elapsed()));
    ctx.progress.inc(1);
    let started = Instant::now();
    let items = points
        .iter()
        .enumerate()
        .map(|(i, p)| Ok(TreeItem::new(unit(*p), index_u32(i)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tree = RTree::bulk_load(items);
    build.push((Approach::RTree, started.elapsed()));
    ctx.progress.inc(1);
    let key = format!("girder:lab:geo:{}:{:08x}:{n}", std::process::id(), rng.random::<u32>());
    let measured = async {
        if let Some(r) = redis.as_mut() {
            build.push((Approach::Redis, r.load(&key, &points).await?));
        }
        ctx.progress.inc(1);
        ctx.phase(&format!("{n} points: querying"), (RADII_M.len() * APPROACHES.len()) as u64);
        let mut rows = Vec::new();
        for ((&radius_m, &precision), &resolution) in
            RADII_M.iter().zip(&precisions).zip(&resolutions)
        {
            let mut truth: Option<Vec<Vec<u32>>> = None;
            for approach in APPROACHES {
                let level = match approach {
                    Approach::Geohash => Some(precision),
                    Approach::H3 => Some(resolution),
                    _ => None,
                };
                let (members, examined, latencies_ns, returned) = match approach {
                    Approach::Redis => {
                        let Some(r) = redis.as_mut() else {
                            ctx.progress.inc(1);
                            continue;
                        };
                        let (members, returned, latencies_ns) =
                            r.measure(shape, &key, &queries, radius_m).await?;
                        (members, Examined::default(), latencies_ns, Some(returned))
                    }
                    _ => {
                        let mut search = in_process(
                            approach,
                            &points,
                            radius_m,
                            level,
                            &geohash_maps,
                            &index,
                            &h3_maps,
                            &tree,
                        )?;
                        let (members, examined, latencies_ns) =
                            measure(shape, &queries, &mut *search)?;
                        (members, examined, latencies_ns, None)
                    }
                };
                let rim_differences = match &truth {
                    None => {
                        truth = Some(members.clone());
                        0
                    }
                    Some(truth) => {
                        let tolerance_m =
                            if approach == Approach::Redis { RIM_TOLERANCE_M } else { 0.0 };
                        differences(
                            approach,
                            &points,
                            &queries,
                            radius_m,
                            truth,
                            &members,
                            tolerance_m,
                        )?
                    }
                };
                let hits = returned.unwrap_or_else(|| members.iter().map(|m| m.len() as u64).sum());
                rows.push(Measured {
                    points: n,
                    radius_m,
                    approach,
                    level,
                    queries: queries.len(),
                    candidates: examined.candidates,
                    cells: examined.cells,
                    hits,
                    latencies_ns,
                    rim_differences,
                });
                ctx.progress.inc(1);
            }
        }
        anyhow::Ok(rows)
    }
    .await;
    // The key goes whatever happened since it was named.
    if let Some(r) = redis.as_mut() {
        redis::cmd("DEL").arg(&key).query_async::<()>(&mut r.conn).await?;
    }
    Ok(Density { points: n, queries: queries.len(), rows: measured?, build })
}

/// The search of an in-process approach, borrowing its structure.
#[expect(clippy::too_many_arguments, reason = "every approach's structure, built once")]
fn in_process<'a>(
    approach: Approach,
    points: &'a [Point],
    radius_m: f64,
    level: Option<u8>,
    geohash_maps: &'a CellMaps<String>,
    index: &'a MemoryGeoIndex,
    h3_maps: &'a CellMaps<u64>,
    tree: &'a RTree<TreeItem>,
) -> anyhow::Result<Box<SearchFn<'a>>> {
    let level = || level.context("a cell approach has a level");
    Ok(match approach {
        Approach::Brute => Box::new(move |c, out, _| {
            for (i, p) in points.iter().enumerate() {
                if haversine_m(c, *p) <= radius_m {
                    out.push(i as u32);
                }
            }
            Ok(Examined { candidates: points.len() as u64, cells: 0 })
        }),
        Approach::Geohash => {
            let precision = level()?;
            let map = geohash_maps.at(precision)?;
            let mut name = String::with_capacity(12);
            Box::new(move |c, out, _| {
                let cell = geohash::encode(c, precision)?;
                let mut examined = Examined::default();
                for g in std::iter::once(Some(cell)).chain(cell.neighbors()).flatten() {
                    name.clear();
                    write!(name, "{g}")?;
                    examined.cells += 1;
                    if let Some(ids) = map.get(name.as_str()) {
                        examined.candidates += ids.len() as u64;
                        refine(points, ids, c, radius_m, out);
                    }
                }
                Ok(examined)
            })
        }
        Approach::SortedScores => {
            let mut hits: Vec<Hit> = Vec::new();
            Box::new(move |c, out, collect| {
                let query = Search { order: None, ..Search::radius(Center::At(c), radius_m) };
                let stats = index.search_counted(&query, &mut hits)?;
                if collect {
                    for h in &hits {
                        out.push(h.member.parse().context("members are named by index")?);
                    }
                }
                Ok(Examined { candidates: stats.scanned as u64, cells: 0 })
            })
        }
        Approach::H3 => {
            let resolution = level()?;
            let map = h3_maps.at(resolution)?;
            Box::new(move |c, out, _| {
                let covering = cells::cover_radius(c, radius_m, resolution, H3_CELLS_MAX)?;
                let mut examined = Examined { candidates: 0, cells: covering.len() as u64 };
                for cell in covering {
                    if let Some(ids) = map.get(&cell.raw()) {
                        examined.candidates += ids.len() as u64;
                        refine(points, ids, c, radius_m, out);
                    }
                }
                Ok(examined)
            })
        }
        Approach::RTree => {
            // A billionth more than the radius: the chord and the haversine may
            // disagree in the last bit at the rim, and the haversine decides.
            let chord = 2.0 * (radius_m * (1.0 + 1e-9) / EARTH_RADIUS_M / 2.0).sin();
            let tested = Cell::new(0u64);
            Box::new(move |c, out, _| {
                tested.set(0);
                let within =
                    CountedWithin { origin: unit(c), max_d2: chord * chord, tested: &tested };
                for item in tree.locate_with_selection_function(within) {
                    let i = item.data;
                    if haversine_m(c, points[i as usize]) <= radius_m {
                        out.push(i);
                    }
                }
                Ok(Examined { candidates: tested.get(), cells: 0 })
            })
        }
        Approach::Redis => bail!("Redis is measured over its connection"),
    })
}

pub(super) async fn run(ctx: &LabContext) -> anyhow::Result<Report> {
    let quick = ctx.options.quick;
    let shape = if quick {
        Shape {
            densities: vec![1_000, 10_000],
            pass_tests: 200_000,
            queries_min: 10,
            queries_max: 40,
            span: Duration::from_millis(5),
            passes_max: 3,
        }
    } else {
        Shape {
            densities: vec![10_000, 100_000, 1_000_000],
            pass_tests: 40_000_000,
            queries_min: 20,
            queries_max: 200,
            span: Duration::from_millis(200),
            passes_max: 25,
        }
    };
    // The lab's Redis when `--redis` names one (then it must answer), else the local
    // default, skipped with a note when it does not.
    let url = ctx.options.redis_url.clone().unwrap_or_else(|| Service::Redis.url());
    let (mut redis, skipped) = match connect_redis(&url).await {
        Ok(side) => (Some(side), None),
        Err(note) if ctx.options.redis_url.is_some() => bail!("Redis: {note}"),
        Err(note) => (None, Some(note)),
    };
    let mut densities = Vec::new();
    for &n in &shape.densities {
        densities.push(run_density(ctx, &shape, n, &mut redis).await?);
    }
    report(quick, &shape, &densities, &url, skipped.as_deref())
}

/// Points per square kilometre of the city.
fn per_km2(points: usize) -> f64 {
    points as f64 / (CITY_SIDE_M / 1_000.0).powi(2)
}

/// The row of `approach` at `points` and `radius_m`, if it ran.
fn row(
    densities: &[Density],
    points: usize,
    radius_m: f64,
    approach: Approach,
) -> Option<&Measured> {
    densities
        .iter()
        .find(|d| d.points == points)?
        .rows
        .iter()
        .find(|m| m.radius_m == radius_m && m.approach == approach)
}

/// The approaches that ran (Redis may have been skipped).
fn ran(densities: &[Density]) -> Vec<Approach> {
    APPROACHES
        .into_iter()
        .filter(|a| densities.iter().flat_map(|d| &d.rows).any(|m| m.approach == *a))
        .collect()
}

/// The width and height of the geohash cell holding the city's centre, in metres.
fn geohash_cell_m(precision: u8) -> anyhow::Result<(f64, f64)> {
    let b = geohash::encode(Point::new(CITY_LAT, CITY_LON)?, precision)?.bounds();
    let mid = (b.lat_min + b.lat_max) / 2.0;
    let width = haversine_m(Point::new(mid, b.lon_min)?, Point::new(mid, b.lon_max)?);
    Ok((width, girder_geo::distance::meridian_m(b.lat_min, b.lat_max)))
}

#[expect(clippy::too_many_lines, reason = "the table, three plots and the findings")]
fn report(
    quick: bool,
    shape: &Shape,
    densities: &[Density],
    url: &str,
    skipped: Option<&str>,
) -> anyhow::Result<Report> {
    let columns: Vec<String> = [
        "points",
        "radius (m)",
        "approach",
        "cells per query",
        "p50 (µs)",
        "p99 (µs)",
        "candidates",
        "candidates ÷ hits",
        "hits",
        "≠ brute force",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for m in densities.iter().flat_map(|d| &d.rows) {
        let cells = m.cells as f64 / m.queries.max(1) as f64;
        let hits = m.mean_hits();
        rows.push(vec![
            m.points.to_string(),
            format!("{:.0}", m.radius_m),
            m.approach.name().to_owned(),
            match (m.approach, m.level) {
                (Approach::Geohash, Some(p)) => format!("{cells:.0} × precision {p}"),
                (Approach::H3, Some(r)) => format!("{cells:.1} × res {r}"),
                _ => "–".to_owned(),
            },
            format!("{:.1}", m.p(0.5)),
            format!("{:.1}", m.p(0.99)),
            if m.approach.candidates_observable() {
                format!("{:.1}", m.mean_candidates())
            } else {
                "not observable".to_owned()
            },
            if m.approach.candidates_observable() && hits > 0.0 {
                format!("{:.1}", m.mean_candidates() / hits)
            } else {
                "–".to_owned()
            },
            format!("{hits:.1}"),
            m.rim_differences.to_string(),
        ]);
    }

    let largest = densities.last().context("no density measured")?;
    let smallest = densities.first().context("no density measured")?;
    let approaches = ran(densities);
    let at_largest = |a: Approach, f: &dyn Fn(&Measured) -> f64| Series {
        name: a.name().to_owned(),
        points: RADII_M
            .iter()
            .filter_map(|&r| row(densities, largest.points, r, a).map(|m| (r, f(m))))
            .collect(),
    };
    let latency_vs_radius = Plot {
        title: format!(
            "Radius query p50 latency vs radius, {} points",
            thousands(largest.points as f64)
        ),
        x_label: "radius (m)".into(),
        y_label: "p50 latency (µs)".into(),
        series: approaches.iter().map(|&a| at_largest(a, &|m| m.p(0.5))).collect(),
        log_x: true,
        log_y: true,
    };
    let mut candidate_series: Vec<Series> = approaches
        .iter()
        .filter(|a| a.candidates_observable())
        .map(|&a| at_largest(a, &Measured::mean_candidates))
        .collect();
    candidate_series.push(Series {
        name: "hits (Redis's reply)".into(),
        ..at_largest(Approach::Brute, &Measured::mean_hits)
    });
    let candidates_vs_radius = Plot {
        title: format!(
            "Candidates examined per query vs radius, {} points",
            thousands(largest.points as f64)
        ),
        x_label: "radius (m)".into(),
        y_label: "points whose distance was computed".into(),
        series: candidate_series,
        log_x: true,
        log_y: true,
    };
    let latency_vs_density = Plot {
        title: format!("Radius query p50 latency vs points, {DENSITY_PLOT_RADIUS_M:.0} m radius"),
        x_label: "points in the 50 km × 50 km city".into(),
        y_label: "p50 latency (µs)".into(),
        series: approaches
            .iter()
            .map(|&a| Series {
                name: a.name().to_owned(),
                points: densities
                    .iter()
                    .filter_map(|d| {
                        let m = row(densities, d.points, DENSITY_PLOT_RADIUS_M, a)?;
                        Some((d.points as f64, m.p(0.5)))
                    })
                    .collect(),
            })
            .collect(),
        log_x: true,
        log_y: true,
    };

    let findings = findings(densities, largest, smallest, &approaches, skipped)?;
    let precisions: Vec<_> = RADII_M
        .iter()
        .map(|&r| {
            let p = geohash_precision(r)?;
            let (w, h) = geohash_cell_m(p)?;
            anyhow::Ok(
                json!({ "radius_m": r, "precision": p, "cell_width_m": w, "cell_height_m": h }),
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let resolutions: Vec<_> = RADII_M
        .iter()
        .map(|&r| {
            let res = h3_resolution(r)?;
            anyhow::Ok(json!({ "radius_m": r, "resolution": res, "mean_edge_m": cells::mean_edge_m(res)? }))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Report {
        experiment: "geo".into(),
        ran_at: super::now_rfc3339(),
        parameters: json!({
            "quick": quick,
            "city": {
                "center": [CITY_LAT, CITY_LON],
                "side_m": CITY_SIDE_M,
                "points_are": "uniform, at the centres of their 52-bit cells (Redis's stored positions)",
            },
            "densities": densities.iter().map(|d| json!({
                "points": d.points,
                "per_km2": per_km2(d.points),
                "queries": d.queries,
                "build_ms": d.build.iter().map(|(a, t)| (a.name(), t.as_secs_f64() * 1e3)).collect::<HashMap<_, _>>(),
            })).collect::<Vec<_>>(),
            "radii_m": RADII_M,
            "timed_passes": { "min_ms": shape.span.as_secs_f64() * 1e3, "max": shape.passes_max },
            "geohash": precisions,
            "h3": resolutions,
            "h3_rule": "finest resolution whose mean edge is at least half the radius",
            "geohash_rule": "finest precision whose cells span the radius both ways at the city's northern edge",
            "rim_tolerance_m": RIM_TOLERANCE_M,
            "redis": match skipped {
                None => json!({ "url": url }),
                Some(note) => json!({ "skipped": note }),
            },
        }),
        columns,
        rows,
        plot: Some(latency_vs_radius),
        more_plots: vec![candidates_vs_radius, latency_vs_density],
        findings,
    })
}

/// A latency for a sentence: `0.9 µs`, `68 µs`, `24.6 ms`.
fn fmt_us(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.1} µs")
    } else if us < 1_000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.1} ms", us / 1e3)
    }
}

/// What the numbers say, computed from them.
#[expect(clippy::too_many_lines, reason = "one paragraph per finding")]
fn findings(
    densities: &[Density],
    largest: &Density,
    smallest: &Density,
    approaches: &[Approach],
    skipped: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let get = |n: usize, r: f64, a: Approach| {
        row(densities, n, r, a).with_context(|| format!("{} at {n} points, {r} m", a.name()))
    };
    let per_hit = |m: &Measured| m.mean_candidates() / m.mean_hits().max(1e-9);
    let list = |f: &dyn Fn(&Measured) -> String, n: usize, r: f64, only_observable: bool| {
        approaches
            .iter()
            .filter(|a| !only_observable || a.candidates_observable())
            .map(|&a| Ok(format!("{} {}", a.name(), f(get(n, r, a)?))))
            .collect::<anyhow::Result<Vec<_>>>()
            .map(|parts| parts.join(", "))
    };
    let (n, r) = (largest.points, DENSITY_PLOT_RADIUS_M);
    let (narrow, wide) = (RADII_M[0], RADII_M[RADII_M.len() - 1]);
    let mut findings = Vec::new();

    // Agreement.
    let queries: usize = densities.iter().map(|d| d.queries * RADII_M.len()).sum();
    let redis_rim: usize = densities
        .iter()
        .flat_map(|d| &d.rows)
        .filter(|m| m.approach == Approach::Redis)
        .map(|m| m.rim_differences)
        .sum();
    findings.push(match skipped {
        Some(note) => format!(
            "Every in-process approach returned brute force's members for all {queries} \
             queries. Redis was skipped: {note}."
        ),
        None if redis_rim == 0 => format!(
            "All six approaches returned exactly brute force's members for all {queries} \
             queries, Redis included: the points are stored positions already, so its 52-bit \
             scores round nothing away, and it measures with the same formula."
        ),
        None => format!(
            "Every in-process approach returned brute force's members for all {queries} \
             queries; Redis differed in {redis_rim} members, every one within \
             {RIM_TOLERANCE_M} m of the rim."
        ),
    });

    // The largest density at 1 km.
    let brute = get(n, r, Approach::Brute)?;
    let fastest = approaches
        .iter()
        .map(|&a| get(n, r, a))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .min_by(|a, b| a.p(0.5).total_cmp(&b.p(0.5)))
        .context("approaches ran")?;
    findings.push(format!(
        "{} points ({:.0}/km²), {r:.0} m radius ({:.0} members per query), p50: {}. The \
         fastest, {}, takes 1/{:.0} of brute force's time. Points examined per member \
         found: {}.",
        thousands(n as f64),
        per_km2(n),
        brute.mean_hits(),
        list(&|m| fmt_us(m.p(0.5)), n, r, false)?,
        fastest.approach.name(),
        brute.p(0.5) / fastest.p(0.5),
        list(&|m| format!("{:.1}", per_hit(m)), n, r, true)?,
    ));

    // Geohash's fixed precisions.
    let steps = RADII_M
        .iter()
        .map(|&r| {
            let p = geohash_precision(r)?;
            let (w, h) = geohash_cell_m(p)?;
            Ok(format!("{r:.0} m → precision {p} ({w:.0} m × {h:.0} m)"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (gh, h3) = (get(n, wide, Approach::Geohash)?, get(n, wide, Approach::H3)?);
    findings.push(format!(
        "Geohash cells come in fixed sizes, each precision 32× the area of the next, and the \
         nine around the centre must hold the circle: {}. At {wide:.0} m the nine cells take \
         in {:.0}% of the city's points ({:.1}× the members found), and geohash takes {:.0}% \
         of brute force's time; H3's covering at resolution {} follows the circle and \
         examines {:.1}× the members. At {narrow:.0} m: geohash {:.0}×, H3 {:.1}×.",
        steps.join(", "),
        100.0 * gh.mean_candidates() / n as f64,
        per_hit(gh),
        100.0 * gh.p(0.5) / get(n, wide, Approach::Brute)?.p(0.5),
        h3.level.unwrap_or_default(),
        per_hit(h3),
        per_hit(get(n, narrow, Approach::Geohash)?),
        per_hit(get(n, narrow, Approach::H3)?),
    ));

    // H3's covering, computed per query.
    let (h3_small, h3_large) =
        (get(smallest.points, narrow, Approach::H3)?, get(n, narrow, Approach::H3)?);
    let memory_large = get(n, narrow, Approach::SortedScores)?;
    findings.push(format!(
        "H3's covering is computed for each query (`cover_radius` walks the cells, measuring \
         each boundary exactly) and sets a floor: at {narrow:.0} m its p50 is {} at \
         {} points and {} at {} ({:.1} cells), while the sorted-score index answers in {}, \
         though H3 examines fewer points ({:.0} against {:.0}).",
        fmt_us(h3_small.p(0.5)),
        thousands(smallest.points as f64),
        fmt_us(h3_large.p(0.5)),
        thousands(n as f64),
        h3_large.cells as f64 / h3_large.queries.max(1) as f64,
        fmt_us(memory_large.p(0.5)),
        h3_large.mean_candidates(),
        memory_large.mean_candidates(),
    ));

    // Density.
    if n > smallest.points {
        let growth = |m: &Measured| -> String {
            let lo = get(smallest.points, r, m.approach).map(|lo| m.p(0.5) / lo.p(0.5));
            lo.map_or_else(|_| "–".to_owned(), |g| format!("×{g:.1}"))
        };
        findings.push(format!(
            "From {} to {} points ({:.0}× denser) at {r:.0} m, where the members found grow \
             ×{:.0}, p50 grows: {}.",
            thousands(smallest.points as f64),
            thousands(n as f64),
            n as f64 / smallest.points as f64,
            brute.mean_hits() / get(smallest.points, r, Approach::Brute)?.mean_hits().max(1e-9),
            list(&growth, n, r, false)?,
        ));
    }

    // Redis against the same design in process.
    if approaches.contains(&Approach::Redis) {
        let pair = |radius_m: f64| -> anyhow::Result<(f64, f64, f64)> {
            let redis = get(n, radius_m, Approach::Redis)?;
            let memory = get(n, radius_m, Approach::SortedScores)?;
            Ok((redis.p(0.5), memory.p(0.5), redis.mean_hits()))
        };
        let (narrow_redis, narrow_memory, narrow_hits) = pair(narrow)?;
        let (wide_redis, wide_memory, wide_hits) = pair(wide)?;
        findings.push(format!(
            "Redis's GEOSEARCH is the same sorted-score design behind a loopback round trip: \
             p50 {} at {narrow:.0} m ({narrow_hits:.0} members) against {} in process \
             ({:.0}×), and {} at {wide:.0} m ({wide_hits:.0} members encoded, sent and \
             parsed) against {} ({:.0}×). How many members it examined is not observable \
             from outside; its rows show what it returned.",
            fmt_us(narrow_redis),
            fmt_us(narrow_memory),
            narrow_redis / narrow_memory,
            fmt_us(wide_redis),
            fmt_us(wide_memory),
            wide_redis / wide_memory,
        ));
    }

    // Build cost.
    findings.push(format!(
        "Building for {} points: {}.",
        thousands(n as f64),
        largest
            .build
            .iter()
            .map(|(a, t)| format!("{} {:.0} ms", a.name(), t.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The level each radius gets: the cells the report's table names.
    #[test]
    fn levels_follow_the_radius() {
        for (radius_m, precision, resolution) in
            [(100.0, 6, 10), (500.0, 6, 8), (1_000.0, 5, 8), (5_000.0, 4, 6)]
        {
            assert_eq!(geohash_precision(radius_m).unwrap(), precision, "{radius_m} m");
            assert_eq!(h3_resolution(radius_m).unwrap(), resolution, "{radius_m} m");
            let (w, h) = geohash_cell_m(precision).unwrap();
            assert!(w >= radius_m && h >= radius_m, "{radius_m} m in {w} × {h}");
        }
    }

    #[test]
    fn latencies_read_well() {
        assert_eq!([fmt_us(0.94), fmt_us(67.6), fmt_us(24_618.0)], ["0.9 µs", "68 µs", "24.6 ms"]);
    }
}
