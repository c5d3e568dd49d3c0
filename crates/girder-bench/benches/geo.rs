//! Radius queries over 1,000,000 points and batch ingest: girder-geo's
//! `MemoryGeoIndex` against an `rstar` R*-tree and Redis's `GEOSEARCH`/`GEOADD`.
//!
//! Datasets of 1,000,000 members: `dense`, a 55 km × 54 km metro area (Berlin,
//! about 330 members per km²), and `uniform`, the whole globe between ±85.05°.
//! Queries are centred on 4,096 random points of the same area, with radii of 1 km
//! and 5 km, unordered; `nearest10` asks for the 10 nearest within 5 km. Every
//! contender answers with the same thing — each member in the circle with its
//! distance in metres and its position — and throughput is queries per second:
//!
//! - `memory`: `MemoryGeoIndex::search_into`, one reused result buffer.
//! - `rstar`: an R*-tree (rstar 0.12, bulk-loaded) of the same stored positions as
//!   3D unit vectors; a radius of `r` metres is a chord of `2 sin(r / 2R)`, so
//!   `locate_within_distance` with the chord squared returns exactly the points of
//!   the spherical cap; each hit then gets its haversine distance (Redis's formula,
//!   as the index computes it) and a clone of its name, into a reused buffer.
//!   `rstar_bare` only counts the tree's hits: the tree walk alone.
//! - `redis_one`: `GEOSEARCH key FROMLONLAT lon lat BYRADIUS r m WITHDIST WITHCOORD`
//!   awaited one at a time over one connection (a round trip each).
//! - `redis_pipelined`: the same, 32 queries per pipeline (one round trip per 32).
//!
//! Ingest is updates per second: `memory` upserts batches of 1,024 moves of
//! existing members (with and without a 30 s TTL); `redis_geoadd_pipelined` sends 8
//! `GEOADD`s of 512 members per round trip; `redis_index` is girder-geo's
//! `RedisGeoIndex::upsert` (one script call per batch of 512, with and without TTLs),
//! to set beside `redis-benchmark -P 32 GEOADD` run by hand (BENCHMARKS.md).
//! `ranges_floor` is four binary searches over the sorted scores per query: the
//! least any sorted-score index does to find a four-cell covering's ranges.
//!
//! Run: `cargo bench -p girder-bench --bench geo -- --warm-up-time 1 --measurement-time 3`
//! (Redis from `GIRDER_REDIS_URL` or 127.0.0.1:6379; its contenders are skipped when
//! it is unreachable).

use std::collections::HashSet;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Arc;

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_main, measurement::WallTime};
use girder_core::services::Service;
use girder_geo::distance::{EARTH_RADIUS_M, haversine_raw};
use girder_geo::index::{
    Center, GeoIndex, Hit, MemoryGeoIndex, RedisGeoIndex, RedisIndexConfig, Search, Update,
};
use girder_geo::{INDEX_LAT_MAX, Point, Score};
use redis::Value;
use rstar::RTree;
use rstar::primitives::GeomWithData;

const MEMBERS: usize = 1_000_000;
const QUERIES: usize = 4_096;
const PIPELINE: usize = 32;

/// A dataset: names, the points given, where searches centre.
struct Data {
    name: &'static str,
    names: Vec<Arc<str>>,
    points: Vec<Point>,
    centers: Vec<Point>,
    /// The points' scores, sorted (for the floor of a sorted-score index).
    scores: Vec<u64>,
}

fn uniform(z: &mut dyn Iterator<Item = u64>) -> Point {
    let u =
        |z: &mut dyn Iterator<Item = u64>| (z.next().unwrap() >> 11) as f64 / (1u64 << 53) as f64;
    let lat = -INDEX_LAT_MAX + u(z) * 2.0 * INDEX_LAT_MAX;
    Point::new(lat, -180.0 + u(z) * 360.0).unwrap()
}

fn metro(z: &mut dyn Iterator<Item = u64>) -> Point {
    let u =
        |z: &mut dyn Iterator<Item = u64>| (z.next().unwrap() >> 11) as f64 / (1u64 << 53) as f64;
    Point::new(52.25 + u(z) * 0.5, 13.0 + u(z) * 0.8).unwrap()
}

fn data(
    name: &'static str,
    point_of: fn(&mut dyn Iterator<Item = u64>) -> Point,
    seed: u64,
) -> Data {
    let mut z = girder_bench::splitmix64(seed);
    let points: Vec<Point> = (0..MEMBERS).map(|_| point_of(&mut z)).collect();
    let centers = (0..QUERIES).map(|_| point_of(&mut z)).collect();
    let names = (0..MEMBERS).map(|i| Arc::from(format!("d{i}"))).collect();
    let mut scores: Vec<u64> = points.iter().map(|p| Score::encode(*p).unwrap().raw()).collect();
    scores.sort_unstable();
    Data { name, names, points, centers, scores }
}

fn unit(p: Point) -> [f64; 3] {
    let (lat, lon) = (p.lat().to_radians(), p.lon().to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

/// The R*-tree contender: stored positions as unit vectors, the index into the
/// dataset as the payload.
struct Tree {
    tree: RTree<GeomWithData<[f64; 3], u32>>,
    stored: Vec<Point>,
}

impl Tree {
    fn new(d: &Data) -> Self {
        let stored: Vec<Point> =
            d.points.iter().map(|p| Score::encode(*p).unwrap().decode()).collect();
        let items =
            stored.iter().enumerate().map(|(i, p)| GeomWithData::new(unit(*p), i as u32)).collect();
        Self { tree: RTree::bulk_load(items), stored }
    }

    fn search(&self, names: &[Arc<str>], c: Point, radius_m: f64, out: &mut Vec<Hit>) {
        out.clear();
        let chord = 2.0 * (radius_m / EARTH_RADIUS_M / 2.0).sin();
        for item in self.tree.locate_within_distance(unit(c), chord * chord) {
            let i = item.data as usize;
            let p = self.stored[i];
            out.push(Hit {
                member: Arc::clone(&names[i]),
                dist_m: haversine_raw(c.lat(), c.lon(), p.lat(), p.lon()),
                point: p,
            });
        }
    }
}

fn load_memory(d: &Data) -> MemoryGeoIndex {
    let index = MemoryGeoIndex::default();
    for (names, points) in d.names.chunks(10_000).zip(d.points.chunks(10_000)) {
        let batch: Vec<Update<'_>> = names
            .iter()
            .zip(points)
            .map(|(m, p)| Update { member: m, point: *p, ttl_ms: None })
            .collect();
        index.upsert_now(&batch).unwrap();
    }
    index
}

/// A Redis connection and the key holding the dataset, or `None` when unreachable.
struct RedisSide {
    rt: tokio::runtime::Runtime,
    conn: redis::aio::MultiplexedConnection,
    key: String,
}

impl RedisSide {
    fn open(d: &Data) -> Option<Self> {
        if !Service::Redis.reachable() {
            eprintln!(
                "SKIPPED geo Redis contenders: Redis unreachable at {}",
                Service::Redis.url()
            );
            return None;
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = redis::Client::open(Service::Redis.url()).unwrap();
        let mut conn = rt.block_on(client.get_multiplexed_async_connection()).unwrap();
        let key = format!("girder:bench:geo:{}:{}", d.name, std::process::id());
        rt.block_on(async {
            let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
            for (names, points) in d.names.chunks(8 * 512).zip(d.points.chunks(8 * 512)) {
                geoadd_pipeline(&key, names, points).query_async::<()>(&mut conn).await.unwrap();
            }
        });
        Some(Self { rt, conn, key })
    }

    fn geosearch(&self, c: Point, radius_m: f64, count: Option<usize>) -> redis::Cmd {
        let mut cmd = redis::cmd("GEOSEARCH");
        cmd.arg(&self.key).arg("FROMLONLAT").arg(c.lon()).arg(c.lat());
        cmd.arg("BYRADIUS").arg(radius_m).arg("m");
        if let Some(n) = count {
            cmd.arg("ASC").arg("COUNT").arg(n);
        }
        cmd.arg("WITHDIST").arg("WITHCOORD");
        cmd
    }
}

impl Drop for RedisSide {
    fn drop(&mut self) {
        let (key, mut conn) = (self.key.clone(), self.conn.clone());
        self.rt.block_on(async move {
            let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
        });
    }
}

/// 8 `GEOADD`s of 512 members each (fewer for a short tail) as one pipeline.
fn geoadd_pipeline(key: &str, names: &[Arc<str>], points: &[Point]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for (names, points) in names.chunks(512).zip(points.chunks(512)) {
        let cmd = pipe.cmd("GEOADD").arg(key);
        for (m, p) in names.iter().zip(points) {
            cmd.arg(p.lon()).arg(p.lat()).arg(&**m);
        }
        cmd.ignore();
    }
    pipe
}

fn hits_of(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.len(),
        _ => 0,
    }
}

fn bench_radius(
    group: &mut BenchmarkGroup<'_, WallTime>,
    d: &Data,
    index: &MemoryGeoIndex,
    tree: &Tree,
    redis: Option<&RedisSide>,
    label: &str,
    radius_m: f64,
) {
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::new();
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % QUERIES;
        d.centers[i]
    };
    group.bench_function(format!("{}/{label}/memory", d.name), |b| {
        b.iter(|| {
            let q = Search { order: None, ..Search::radius(Center::At(next()), radius_m) };
            index.search_into(&q, &mut out).unwrap();
            out.len()
        });
    });
    group.bench_function(format!("{}/{label}/rstar", d.name), |b| {
        b.iter(|| {
            tree.search(&d.names, next(), radius_m, &mut out);
            out.len()
        });
    });
    group.bench_function(format!("{}/{label}/rstar_bare", d.name), |b| {
        b.iter(|| {
            let c = next();
            let chord = 2.0 * (radius_m / EARTH_RADIUS_M / 2.0).sin();
            tree.tree.locate_within_distance(unit(c), chord * chord).count()
        });
    });
    // The floor of any sorted-score index: locating a four-cell covering's ranges is
    // at least four binary searches over the 1,000,000 sorted scores (here with
    // nothing else: no covering computed, no member read, no distance).
    group.bench_function(format!("{}/{label}/ranges_floor", d.name), |b| {
        b.iter(|| {
            let s = Score::encode(next()).unwrap().raw();
            (0..4u64)
                .map(|k| d.scores.partition_point(|&x| x < s.wrapping_add(k << 30)))
                .sum::<usize>()
        });
    });
    let Some(r) = redis else { return };
    let mut conn = r.conn.clone();
    group.bench_function(format!("{}/{label}/redis_one", d.name), |b| {
        b.iter(|| {
            let cmd = r.geosearch(next(), radius_m, None);
            let v: Value = r.rt.block_on(cmd.query_async(&mut conn)).unwrap();
            hits_of(&v)
        });
    });
    group.throughput(Throughput::Elements(PIPELINE as u64));
    group.bench_function(format!("{}/{label}/redis_pipelined", d.name), |b| {
        b.iter(|| {
            let mut pipe = redis::pipe();
            for _ in 0..PIPELINE {
                pipe.add_command(r.geosearch(next(), radius_m, None));
            }
            let v: Vec<Value> = r.rt.block_on(pipe.query_async(&mut conn)).unwrap();
            v.iter().map(hits_of).sum::<usize>()
        });
    });
}

fn bench_nearest(
    group: &mut BenchmarkGroup<'_, WallTime>,
    d: &Data,
    index: &MemoryGeoIndex,
    redis: Option<&RedisSide>,
) {
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::new();
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % QUERIES;
        d.centers[i]
    };
    let ten = NonZeroUsize::new(10).unwrap();
    group.bench_function(format!("{}/nearest10/memory", d.name), |b| {
        b.iter(|| {
            let q = Search::radius(Center::At(next()), 5_000.0).limit(ten);
            index.search_into(&q, &mut out).unwrap();
            out.len()
        });
    });
    let Some(r) = redis else { return };
    let mut conn = r.conn.clone();
    group.bench_function(format!("{}/nearest10/redis_one", d.name), |b| {
        b.iter(|| {
            let cmd = r.geosearch(next(), 5_000.0, Some(10));
            let v: Value = r.rt.block_on(cmd.query_async(&mut conn)).unwrap();
            hits_of(&v)
        });
    });
    group.throughput(Throughput::Elements(PIPELINE as u64));
    group.bench_function(format!("{}/nearest10/redis_pipelined", d.name), |b| {
        b.iter(|| {
            let mut pipe = redis::pipe();
            for _ in 0..PIPELINE {
                pipe.add_command(r.geosearch(next(), 5_000.0, Some(10)));
            }
            let v: Vec<Value> = r.rt.block_on(pipe.query_async(&mut conn)).unwrap();
            v.iter().map(hits_of).sum::<usize>()
        });
    });
}

fn radius(c: &mut Criterion) {
    for d in [data("dense", metro, 0x6E0_0001), data("uniform", uniform, 0x6E0_0002)] {
        let index = load_memory(&d);
        let tree = Tree::new(&d);
        let redis = RedisSide::open(&d);
        let mut group = c.benchmark_group("geo_radius");
        // Sanity: the contenders agree on a few queries.
        let mut a = Vec::new();
        let mut b = Vec::new();
        for &center in d.centers.iter().take(16) {
            let q = Search { order: None, ..Search::radius(Center::At(center), 5_000.0) };
            index.search_into(&q, &mut a).unwrap();
            tree.search(&d.names, center, 5_000.0, &mut b);
            let key = |h: &Hit| (h.member.clone(), h.dist_m.to_bits());
            let x: HashSet<_> = a.iter().map(key).collect();
            let y: HashSet<_> = b.iter().map(key).collect();
            // The tree's chord test and the haversine can disagree on the last bit at
            // the rim; a member in one and not the other must be on the edge.
            let on_rim = |e: &&(Arc<str>, u64)| (f64::from_bits(e.1) - 5_000.0).abs() < 1e-6;
            assert!(
                x.symmetric_difference(&y).all(|e| on_rim(&e)),
                "memory and rstar disagree at {center:?}"
            );
        }
        for (label, r) in [("1km", 1_000.0), ("5km", 5_000.0)] {
            bench_radius(&mut group, &d, &index, &tree, redis.as_ref(), label, r);
        }
        bench_nearest(&mut group, &d, &index, redis.as_ref());
        group.finish();
        black_box((index, tree));
    }
}

fn ingest(c: &mut Criterion) {
    let d = data("dense", metro, 0x6E0_0003);
    let index = load_memory(&d);
    // Each member's next position: a few metres away (a driver's next fix).
    let moved: Vec<Point> = d
        .points
        .iter()
        .map(|p| Point::new(p.lat() + 0.000_03, p.lon() + 0.000_04).unwrap())
        .collect();
    let mut group = c.benchmark_group("geo_ingest");
    const BATCH: usize = 1_024;
    for (label, ttl_ms) in [("memory", None), ("memory_ttl30s", Some(30_000))] {
        group.throughput(Throughput::Elements(BATCH as u64));
        let mut at = 0;
        let mut flip = false;
        group.bench_function(format!("dense/{label}"), |b| {
            b.iter(|| {
                if at + BATCH > MEMBERS {
                    at = 0;
                    flip = !flip;
                }
                let points = if flip { &d.points } else { &moved };
                let batch: Vec<Update<'_>> = (at..at + BATCH)
                    .map(|i| Update { member: &d.names[i], point: points[i], ttl_ms })
                    .collect();
                at += BATCH;
                index.upsert_now(&batch).unwrap()
            });
        });
    }
    if let Some(r) = RedisSide::open(&d) {
        let mut conn = r.conn.clone();
        group.throughput(Throughput::Elements(8 * 512));
        let mut at = 0;
        let mut flip = false;
        group.bench_function("dense/redis_geoadd_pipelined", |b| {
            b.iter(|| {
                if at + 8 * 512 > MEMBERS {
                    at = 0;
                    flip = !flip;
                }
                let points = if flip { &d.points } else { &moved };
                let pipe =
                    geoadd_pipeline(&r.key, &d.names[at..at + 8 * 512], &points[at..at + 8 * 512]);
                at += 8 * 512;
                r.rt.block_on(pipe.query_async::<()>(&mut conn)).unwrap();
            });
        });
        // The Redis backend itself: one upsert script call per batch of 512 moves,
        // awaited one after another (without and with a 30 s TTL).
        let manager =
            r.rt.block_on(redis::aio::ConnectionManager::new(
                redis::Client::open(Service::Redis.url()).unwrap(),
            ))
            .unwrap();
        let key = format!("{}:index", r.key);
        let backend = RedisGeoIndex::new(
            manager,
            RedisIndexConfig { key: key.clone(), ..RedisIndexConfig::default() },
        );
        group.throughput(Throughput::Elements(512));
        for (label, ttl_ms) in [("redis_index", None), ("redis_index_ttl30s", Some(30_000))] {
            let mut at = 0;
            let mut flip = false;
            group.bench_function(format!("dense/{label}"), |b| {
                b.iter(|| {
                    if at + 512 > MEMBERS {
                        at = 0;
                        flip = !flip;
                    }
                    let points = if flip { &d.points } else { &moved };
                    let batch: Vec<Update<'_>> = (at..at + 512)
                        .map(|i| Update { member: &d.names[i], point: points[i], ttl_ms })
                        .collect();
                    at += 512;
                    r.rt.block_on(backend.upsert(&batch)).unwrap()
                });
            });
        }
        r.rt.block_on(async {
            let mut conn = r.conn.clone();
            let _: Result<(), _> =
                redis::cmd("DEL").arg(&key).arg(format!("{key}:ttl")).query_async(&mut conn).await;
        });
    }
    group.finish();
}

mod group {
    // criterion_group! defines an undocumented `pub fn`.
    #![allow(missing_docs)]
    use super::{ingest, radius};
    criterion::criterion_group!(benches, radius, ingest);
}
criterion_main!(group::benches);
