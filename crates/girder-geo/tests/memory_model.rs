//! Model test of the in-process index: random upserts (with and without TTLs),
//! removals, clock moves, purges and searches against a `BTreeMap` searched by brute
//! force. Points crowd the hard places — the ±85.05° limit and its exact edge, both
//! sides of the antimeridian and exactly ±180°, one city block, duplicates — and so
//! do search centres, with radii from zero to around the world.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use girder_core::{Clock, ManualClock};
use girder_geo::distance::{haversine_raw, meridian_m};
use girder_geo::index::{
    Area, Center, GeoError, Hit, MemoryGeoIndex, MemoryIndexConfig, Order, Search, Update, Upserted,
};
use girder_geo::{INDEX_LAT_MAX, Point, Score};
use proptest::prelude::*;

const NAMES: usize = 48;
const MEMBERS_MAX: usize = 40;

#[derive(Debug, Clone)]
enum Op {
    Upsert(Vec<(usize, (f64, f64), Option<u64>)>),
    Remove(Vec<usize>),
    Advance(u64),
    Purge(usize),
    Search(Query),
}

#[derive(Debug, Clone)]
struct Query {
    center: Result<(f64, f64), usize>,
    area: Area,
    order: Option<Order>,
    count: Option<usize>,
    any: bool,
}

fn name(i: usize) -> String {
    format!("m{i:02}")
}

fn coord() -> impl Strategy<Value = (f64, f64)> {
    let lat = prop_oneof![
        -INDEX_LAT_MAX..=INDEX_LAT_MAX,
        84.9..=INDEX_LAT_MAX,
        -INDEX_LAT_MAX..=-84.9,
        Just(INDEX_LAT_MAX),
        Just(-INDEX_LAT_MAX),
        40.0..40.01,
    ];
    let lon = prop_oneof![
        -180.0f64..=180.0,
        179.99..=180.0,
        -180.0..=-179.99,
        Just(180.0),
        Just(-180.0),
        -3.71..-3.70,
    ];
    prop_oneof![
        (lat, lon),
        // A block in Madrid: many members within metres, some on one spot.
        (40.0..40.0001f64, -3.7001..-3.70f64),
        Just((40.00005, -3.70005)),
    ]
}

fn extent() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 0.0..50.0, 0.0..5_000.0, 0.0..500_000.0, 0.0..2.5e7, Just(4.0e7)]
}

fn query() -> impl Strategy<Value = Query> {
    let center = prop_oneof![3 => coord().prop_map(Ok), 1 => (0..NAMES).prop_map(Err)];
    let area = prop_oneof![
        extent().prop_map(|radius_m| Area::Radius { radius_m }),
        (extent(), extent()).prop_map(|(width_m, height_m)| Area::Box { width_m, height_m }),
    ];
    let order = prop_oneof![Just(None), Just(Some(Order::Asc)), Just(Some(Order::Desc))];
    let count = prop_oneof![Just(None), (1usize..6).prop_map(Some), (1usize..60).prop_map(Some)];
    (center, area, order, count, any::<bool>())
        .prop_map(|(center, area, order, count, any)| Query { center, area, order, count, any })
}

fn op() -> impl Strategy<Value = Op> {
    let update = (0..NAMES, coord(), prop_oneof![Just(None), (1u64..5_000).prop_map(Some)]);
    prop_oneof![
        4 => proptest::collection::vec(update, 0..12).prop_map(Op::Upsert),
        1 => proptest::collection::vec(0..NAMES, 0..4).prop_map(Op::Remove),
        1 => (0u64..3_000).prop_map(Op::Advance),
        1 => (0usize..5).prop_map(Op::Purge),
        5 => query().prop_map(Op::Search),
    ]
}

/// Live members: stored position and deadline.
#[derive(Default)]
struct Model {
    members: BTreeMap<String, (Point, u64)>,
}

impl Model {
    fn live(&self, now: u64) -> impl Iterator<Item = (&String, Point)> {
        self.members.iter().filter(move |(_, (_, d))| *d > now).map(|(m, (p, _))| (m, *p))
    }

    fn is_live(&self, m: &str, now: u64) -> bool {
        self.members.get(m).is_some_and(|(_, d)| *d > now)
    }

    /// Every hit, in the contract's order (by name when unordered).
    fn search(&self, q: &Search<'_>, now: u64) -> Result<Vec<(String, f64, Point)>, ()> {
        let c = match q.center {
            Center::At(p) => p,
            Center::Member(m) if self.is_live(m, now) => self.members[m].0,
            Center::Member(_) => return Err(()),
        };
        let mut hits: Vec<(String, f64, Point)> = self
            .live(now)
            .filter(|(_, p)| match q.area {
                Area::Radius { radius_m } => {
                    haversine_raw(c.lat(), c.lon(), p.lat(), p.lon()) <= radius_m
                }
                Area::Box { width_m, height_m } => {
                    meridian_m(p.lat(), c.lat()) <= height_m / 2.0
                        && haversine_raw(p.lat(), p.lon(), p.lat(), c.lon()) <= width_m / 2.0
                }
            })
            .map(|(m, p)| (m.clone(), haversine_raw(c.lat(), c.lon(), p.lat(), p.lon()), p))
            .collect();
        match q.order.or((q.count.is_some() && !q.any).then_some(Order::Asc)) {
            Some(Order::Asc) => hits.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0))),
            Some(Order::Desc) => hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))),
            None => hits.sort_by(|a, b| a.0.cmp(&b.0)),
        }
        Ok(hits)
    }
}

fn check_search(got: &[Hit], mut want: Vec<(String, f64, Point)>, q: &Search<'_>) {
    let mut got: Vec<(String, f64, Point)> =
        got.iter().map(|h| (h.member.to_string(), h.dist_m, h.point)).collect();
    if q.any {
        let count = q.count.map_or(usize::MAX, NonZeroUsize::get);
        assert_eq!(got.len(), want.len().min(count), "ANY size");
        for hit in &got {
            assert!(want.contains(hit), "ANY hit {hit:?} not in the area");
        }
        if q.order.is_some() {
            let mut sorted = got.clone();
            sorted.sort_by(|a, b| {
                let d = a.1.total_cmp(&b.1);
                let d = if q.order == Some(Order::Desc) { d.reverse() } else { d };
                d.then(a.0.cmp(&b.0))
            });
            assert_eq!(got, sorted, "ANY order");
        }
        return;
    }
    if let Some(c) = q.count {
        want.truncate(c.get());
    }
    if q.order.is_none() && q.count.is_none() {
        got.sort_by(|a, b| a.0.cmp(&b.0));
    }
    assert_eq!(got, want);
}

fn run(ops: Vec<Op>) {
    let clock = ManualClock::new(1_000_000);
    let index = MemoryGeoIndex::new(MemoryIndexConfig {
        members_max: MEMBERS_MAX,
        reclaim_per_call: 2,
        clock: Arc::new(clock.clone()),
    });
    let mut model = Model::default();
    for op in ops {
        let now = clock.now_ms();
        match op {
            Op::Upsert(batch) => {
                let names: Vec<String> = batch.iter().map(|(i, ..)| name(*i)).collect();
                let updates: Vec<Update<'_>> = batch
                    .iter()
                    .zip(&names)
                    .map(|((_, (lat, lon), ttl_ms), member)| Update {
                        member,
                        point: Point::new(*lat, *lon).unwrap(),
                        ttl_ms: *ttl_ms,
                    })
                    .collect();
                let mut new: Vec<&String> =
                    names.iter().filter(|m| !model.is_live(m, now)).collect();
                new.sort();
                new.dedup();
                let live = model.live(now).count();
                let got = index.upsert_now(&updates);
                if live + new.len() > MEMBERS_MAX {
                    assert!(matches!(got, Err(GeoError::Full { max: MEMBERS_MAX })), "{got:?}");
                    continue;
                }
                let mut want = Upserted::default();
                for u in &updates {
                    if model.is_live(u.member, now) {
                        want.updated += 1;
                    } else {
                        want.added += 1;
                    }
                    let stored = Score::encode(u.point).unwrap().decode();
                    let deadline = u.ttl_ms.map_or(u64::MAX, |t| now + t);
                    model.members.insert(u.member.to_owned(), (stored, deadline));
                }
                assert_eq!(got.unwrap(), want);
            }
            Op::Remove(ids) => {
                let names: Vec<String> = ids.iter().map(|&i| name(i)).collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let mut want = 0;
                for m in &refs {
                    if model.is_live(m, now) {
                        want += 1;
                    }
                    model.members.remove(*m);
                }
                assert_eq!(index.remove_now(&refs).unwrap(), want);
            }
            Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
            Op::Purge(max) => {
                let stored = index.stored_now();
                let purged = index.purge_expired(max);
                assert!(purged <= max);
                assert_eq!(index.stored_now(), stored - purged);
            }
            Op::Search(q) => {
                let member;
                let center = match q.center {
                    Ok((lat, lon)) => Center::At(Point::new(lat, lon).unwrap()),
                    Err(i) => {
                        member = name(i);
                        Center::Member(&member)
                    }
                };
                let search = Search {
                    center,
                    area: q.area,
                    order: q.order,
                    count: q.count.and_then(NonZeroUsize::new),
                    any: q.any && q.count.is_some(),
                };
                match (index.search_now(&search), model.search(&search, now)) {
                    (Ok(got), Ok(want)) => check_search(&got, want, &search),
                    (Err(GeoError::UnknownMember { .. }), Err(())) => {}
                    (got, want) => panic!("{search:?}: {got:?} vs {want:?}"),
                }
            }
        }
        // After every step: the count and every position.
        let now = clock.now_ms();
        assert_eq!(index.len_now(), model.live(now).count());
        for i in 0..NAMES {
            let m = name(i);
            let want = model.is_live(&m, now).then(|| model.members[&m].0);
            assert_eq!(index.position_now(&m).unwrap(), want, "{m}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_memory_index_behaves_like_a_brute_force_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops);
    }
}

/// Bulk: 20,000 members spread over the globe and one city, 2,000 searches of every
/// kind, each against brute force.
#[test]
fn many_members_many_searches() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let clock = ManualClock::new(0);
    let index = MemoryGeoIndex::new(MemoryIndexConfig {
        clock: Arc::new(clock.clone()),
        ..MemoryIndexConfig::default()
    });
    let mut model = Model::default();
    let names: Vec<String> = (0..20_000).map(|i| format!("p{i}")).collect();
    let rand_point = |rng: &mut rand::rngs::StdRng| {
        if rng.random_bool(0.5) {
            let lat = rng.random_range(-INDEX_LAT_MAX..=INDEX_LAT_MAX);
            Point::new(lat, rng.random_range(-180.0..=180.0)).unwrap()
        } else {
            Point::new(rng.random_range(51.4..51.6), rng.random_range(-0.3..0.1)).unwrap()
        }
    };
    let updates: Vec<Update<'_>> = names
        .iter()
        .map(|m| Update { member: m, point: rand_point(&mut rng), ttl_ms: None })
        .collect();
    index.upsert_now(&updates).unwrap();
    for u in &updates {
        model
            .members
            .insert(u.member.to_owned(), (Score::encode(u.point).unwrap().decode(), u64::MAX));
    }
    for i in 0..2_000 {
        let center = if i % 3 == 0 {
            Center::Member(&names[rng.random_range(0..names.len())])
        } else {
            Center::At(rand_point(&mut rng))
        };
        let scale: f64 = [100.0, 2_000.0, 20_000.0, 3e6][i % 4];
        let area = if i % 2 == 0 {
            Area::Radius { radius_m: rng.random_range(0.0..scale) }
        } else {
            Area::Box {
                width_m: rng.random_range(0.0..scale),
                height_m: rng.random_range(0.0..scale),
            }
        };
        let count = [None, Some(1), Some(10), Some(300)][i % 4].and_then(NonZeroUsize::new);
        let order = [None, Some(Order::Asc), Some(Order::Desc)][(i / 4) % 3];
        let any = count.is_some() && i % 7 == 0;
        let q = Search { center, area, order, count, any };
        check_search(&index.search_now(&q).unwrap(), model.search(&q, 0).unwrap(), &q);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The hardest members to find: exactly on the circle (the radius is their own
    /// distance, to the bit) or on a box's edge, near the poles, across the
    /// antimeridian, at every scale — neither the covering nor the quick rejection
    /// before the exact formula may drop them.
    #[test]
    fn members_on_the_rim_are_found(
        center in coord(),
        offsets in proptest::collection::vec((-1.0f64..1.0, -1.0f64..1.0), 1..24),
        scale_deg in prop_oneof![1e-6f64..1e-4, 1e-4f64..1e-2, 1e-2f64..1.0, 1.0f64..30.0],
    ) {
        let index = MemoryGeoIndex::default();
        let names: Vec<String> = (0..offsets.len()).map(name).collect();
        let updates: Vec<Update<'_>> = names
            .iter()
            .zip(&offsets)
            .map(|(m, (a, b))| {
                let lat = (center.0 + a * scale_deg).clamp(-INDEX_LAT_MAX, INDEX_LAT_MAX);
                let mut lon = center.1 + b * scale_deg;
                if lon > 180.0 { lon -= 360.0 }
                if lon < -180.0 { lon += 360.0 }
                Update { member: m, point: Point::new(lat, lon).unwrap(), ttl_ms: None }
            })
            .collect();
        index.upsert_now(&updates).unwrap();
        let c = Point::new(center.0, center.1).unwrap();
        for m in &names {
            let p = index.position_now(m).unwrap().unwrap();
            let radius_m = haversine_raw(c.lat(), c.lon(), p.lat(), p.lon());
            let hits = index.search_now(&Search::radius(Center::At(c), radius_m)).unwrap();
            prop_assert!(hits.iter().any(|h| &*h.member == m.as_str()), "{} on the rim at {} m", m, radius_m);
            let width_m = 2.0 * haversine_raw(p.lat(), p.lon(), p.lat(), c.lon());
            let height_m = 2.0 * meridian_m(p.lat(), c.lat());
            let q = Search { area: Area::Box { width_m, height_m }, ..Search::radius(Center::At(c), 0.0) };
            let hits = index.search_now(&q).unwrap();
            prop_assert!(hits.iter().any(|h| &*h.member == m.as_str()), "{} on the box's corner", m);
        }
    }
}
