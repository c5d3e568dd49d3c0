//! The conformance suite for `girder-geo` indexes: [`geo_conformance`] checks the
//! [`GeoIndex`] contract step by step on a manual clock — upserts, moves, removals,
//! TTLs, radius and box searches against a brute-force model, `FROMMEMBER`, `COUNT`,
//! `ANY` and orders with ties, all-or-nothing batches, the member limit, and a typed
//! error for every bad input.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use girder_core::{Clock, ManualClock};
use girder_geo::distance::{haversine_raw, meridian_m};
use girder_geo::index::{
    Area, Center, EXTENT_M_MAX, GeoError, GeoIndex, Hit, MEMBER_BYTES_MAX, Order, Search,
    TTL_MS_MAX, Update, Upserted,
};
use girder_geo::{CoordError, INDEX_LAT_MAX, Point, Score};

/// The `members_max` the suite's second index must be configured with.
pub const SMALL_MAX: usize = 3;

fn pt(lat: f64, lon: f64) -> Point {
    Point::new(lat, lon).expect("a valid test point")
}

fn upd(member: &str, lat: f64, lon: f64) -> Update<'_> {
    Update { member, point: pt(lat, lon), ttl_ms: None }
}

fn ttl(member: &str, lat: f64, lon: f64, ttl_ms: u64) -> Update<'_> {
    Update { member, point: pt(lat, lon), ttl_ms: Some(ttl_ms) }
}

fn n(count: usize) -> NonZeroUsize {
    NonZeroUsize::new(count).expect("count > 0")
}

/// What the index should hold: each live member's stored position.
#[derive(Debug, Default)]
struct Model {
    members: BTreeMap<String, Point>,
}

impl Model {
    fn put(&mut self, u: &Update<'_>) {
        let stored = Score::encode(u.point).expect("indexable").decode();
        self.members.insert(u.member.to_owned(), stored);
    }

    /// Every hit of `query` by brute force, in the contract's order and cut.
    fn search(&self, query: &Search<'_>) -> Vec<(String, f64)> {
        let center = match query.center {
            Center::At(p) => p,
            Center::Member(m) => self.members[m],
        };
        let (clat, clon) = (center.lat(), center.lon());
        let mut hits: Vec<(String, f64)> = self
            .members
            .iter()
            .filter_map(|(m, p)| {
                let (lat, lon) = (p.lat(), p.lon());
                let inside = match query.area {
                    Area::Radius { radius_m } => haversine_raw(clat, clon, lat, lon) <= radius_m,
                    Area::Box { width_m, height_m } => {
                        meridian_m(lat, clat) <= height_m / 2.0
                            && haversine_raw(lat, lon, lat, clon) <= width_m / 2.0
                    }
                };
                inside.then(|| (m.clone(), haversine_raw(clat, clon, lat, lon)))
            })
            .collect();
        let order = query.order.or((query.count.is_some() && !query.any).then_some(Order::Asc));
        match order {
            Some(Order::Asc) => hits.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0))),
            Some(Order::Desc) => hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))),
            None => hits.sort_by(|a, b| a.0.cmp(&b.0)),
        }
        hits
    }
}

/// Runs `query` on `index` and checks it against the model: the same members, the
/// same distances to the bit, positions as stored, and the contract's order and cut.
async fn expect<I: GeoIndex>(index: &I, model: &Model, query: &Search<'_>, what: &str) -> Vec<Hit> {
    let got = index.search(query).await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let all = model.search(query);
    for h in &got {
        assert_eq!(Some(&h.point), model.members.get(&*h.member), "{what}: {} position", h.member);
    }
    let got_pairs: Vec<(String, f64)> =
        got.iter().map(|h| (h.member.to_string(), h.dist_m)).collect();
    if query.any {
        let count = query.count.map_or(usize::MAX, NonZeroUsize::get);
        assert_eq!(got.len(), all.len().min(count), "{what}: ANY returns min(count, found)");
        for pair in &got_pairs {
            assert!(all.contains(pair), "{what}: ANY returned {pair:?}, not in the area");
        }
        if let Some(order) = query.order {
            let sorted = got_pairs.windows(2).all(|w| match order {
                Order::Asc => (w[0].1, &w[0].0) <= (w[1].1, &w[1].0),
                Order::Desc => w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 <= w[1].0),
            });
            assert!(sorted, "{what}: ANY hits not in {order:?} order: {got_pairs:?}");
        }
    } else {
        let mut want = all;
        if let Some(count) = query.count {
            want.truncate(count.get());
        }
        let mut got_pairs = got_pairs;
        if query.order.is_none() && query.count.is_none() {
            got_pairs.sort_by(|a, b| a.0.cmp(&b.0));
        }
        assert_eq!(got_pairs, want, "{what}");
    }
    got
}

async fn upsert_ok<I: GeoIndex>(
    index: &I,
    model: &mut Model,
    batch: &[Update<'_>],
    want: Upserted,
    what: &str,
) {
    assert_eq!(index.upsert(batch).await.unwrap_or_else(|e| panic!("{what}: {e}")), want, "{what}");
    for u in batch {
        model.put(u);
    }
}

/// Runs the [`GeoIndex`] suite. `index` and `small` must be empty, independent
/// indexes judging TTLs by `clock`; `small` must hold at most [`SMALL_MAX`] members.
/// The suite moves `clock` forward only.
///
/// # Panics
/// On the first violated guarantee, with a message naming it.
#[allow(clippy::too_many_lines)] // one linear story is easier to follow than fragments
pub async fn geo_conformance<I: GeoIndex>(index: &I, small: &I, clock: &ManualClock) {
    let mut model = Model::default();
    let ms = Duration::from_millis;

    // Empty.
    assert_eq!(index.len().await.unwrap(), 0, "a new index is empty");
    assert_eq!(index.position("nobody").await.unwrap(), None);
    let berlin = pt(52.52, 13.405);
    let q = Search::radius(Center::At(berlin), 10_000.0);
    assert!(index.search(&q).await.unwrap().is_empty(), "nothing to find");
    let from_nobody = Search::radius(Center::Member("nobody"), 10.0);
    assert!(
        matches!(index.search(&from_nobody).await, Err(GeoError::UnknownMember { member }) if member == "nobody"),
        "FROMMEMBER of an unknown member"
    );

    // Add, then positions are the stored cell centres (Redis's GEOPOS).
    let first = [upd("a", 52.52, 13.405), upd("b", 52.53, 13.41), upd("c", 52.50, 13.39)];
    upsert_ok(index, &mut model, &first, Upserted { added: 3, updated: 0 }, "first batch").await;
    assert_eq!(index.len().await.unwrap(), 3);
    for (m, p) in &model.members {
        assert_eq!(index.position(m).await.unwrap(), Some(*p), "position of {m}");
    }
    let p = index.position("a").await.unwrap().unwrap();
    assert!(haversine_raw(p.lat(), p.lon(), 52.52, 13.405) < 0.5, "stored within a cell");

    // Move, and a member named twice in one batch: added, then updated.
    let moves = [upd("a", 52.521, 13.406), upd("d", 52.51, 13.40), upd("d", 52.511, 13.401)];
    upsert_ok(index, &mut model, &moves, Upserted { added: 1, updated: 2 }, "moves").await;
    assert_eq!(index.position("d").await.unwrap(), Some(model.members["d"]), "last write wins");
    assert_eq!(index.len().await.unwrap(), 4);
    // Upserting the same place again is an update.
    upsert_ok(index, &mut model, &moves[..1], Upserted { added: 0, updated: 1 }, "same place")
        .await;

    // Remove: counts live members once; unknown names are fine.
    assert_eq!(
        index.remove(&["c", "c", "zz"]).await.unwrap(),
        1,
        "remove counts live members once"
    );
    model.members.remove("c");
    assert_eq!(index.position("c").await.unwrap(), None);
    assert_eq!(index.remove(&["c"]).await.unwrap(), 0, "removing twice");
    assert_eq!(index.len().await.unwrap(), 3);
    assert_eq!(index.remove(&[]).await.unwrap(), 0);
    assert_eq!(index.upsert(&[]).await.unwrap(), Upserted::default(), "an empty batch");

    // A city's worth of members on a grid around Berlin, three on one spot (ties),
    // and a few far away.
    let names: Vec<String> = (0..60).map(|i| format!("m{i:02}")).collect();
    let mut city = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (r, c) = ((i / 8) as f64, (i % 8) as f64);
        city.push(upd(name, 52.45 + r * 0.015, 13.30 + c * 0.03));
    }
    let ties =
        [upd("tie-b", 52.4825, 13.46), upd("tie-a", 52.4825, 13.46), upd("tie-c", 52.4825, 13.46)];
    let far = [upd("paris", 48.8566, 2.3522), upd("sydney", -33.8688, 151.2093)];
    let added = city.len() + ties.len() + far.len();
    let all: Vec<Update<'_>> = city.iter().chain(&ties).chain(&far).copied().collect();
    upsert_ok(index, &mut model, &all, Upserted { added, updated: 0 }, "city").await;
    assert_eq!(index.len().await.unwrap(), model.members.len());

    // Radius searches against the model, from points and members, in every order.
    let center = Center::At(pt(52.48, 13.42));
    for radius_m in [0.0, 1.0, 500.0, 2_500.0, 5_000.0, 12_000.0, 1_000_000.0, EXTENT_M_MAX] {
        for order in [None, Some(Order::Asc), Some(Order::Desc)] {
            let q =
                Search { center, area: Area::Radius { radius_m }, order, count: None, any: false };
            expect(index, &model, &q, &format!("radius {radius_m} {order:?}")).await;
        }
    }
    let hits =
        expect(index, &model, &Search::radius(Center::Member("tie-a"), 3_000.0), "FROMMEMBER")
            .await;
    let names_at_zero: Vec<&str> =
        hits.iter().take_while(|h| h.dist_m == 0.0).map(|h| &*h.member).collect();
    assert_eq!(
        names_at_zero,
        ["tie-a", "tie-b", "tie-c"],
        "centre member and its ties first, by name"
    );

    // The radius is inclusive: a member exactly at the radius is in, a hair less is out.
    let (ta, tb) = (model.members["tie-a"], model.members["m10"]);
    let exact = haversine_raw(ta.lat(), ta.lon(), tb.lat(), tb.lon());
    let q = Search::radius(Center::Member("tie-a"), exact);
    let hits = expect(index, &model, &q, "radius equal to a distance").await;
    assert_eq!(hits.last().map(|h| &*h.member), Some("m10"), "the member on the circle is in");
    let q = Search::radius(Center::Member("tie-a"), exact.next_down());
    let hits = expect(index, &model, &q, "radius just below a distance").await;
    assert!(hits.iter().all(|h| &*h.member != "m10"), "the member beyond the circle is out");

    // Boxes.
    for (w, h) in
        [(0.0, 0.0), (4_000.0, 1_000.0), (1_000.0, 4_000.0), (20_000.0, 9_000.0), (2e6, 2e6)]
    {
        for order in [None, Some(Order::Desc)] {
            let q = Search {
                center,
                area: Area::Box { width_m: w, height_m: h },
                order,
                count: None,
                any: false,
            };
            expect(index, &model, &q, &format!("box {w}x{h} {order:?}")).await;
        }
    }
    let q = Search {
        center: Center::Member("m20"),
        area: Area::Box { width_m: 5_000.0, height_m: 3_000.0 },
        order: Some(Order::Asc),
        count: None,
        any: false,
    };
    expect(index, &model, &q, "box from a member").await;

    // COUNT: the nearest (or farthest) n, a cut through the tie group kept by name.
    for count in [1, 2, 3, 4, 7, 200, usize::MAX] {
        for order in [None, Some(Order::Asc), Some(Order::Desc)] {
            let q = Search {
                center: Center::At(pt(52.4825, 13.46)),
                area: Area::Radius { radius_m: 6_000.0 },
                order,
                count: Some(n(count)),
                any: false,
            };
            expect(index, &model, &q, &format!("count {count} {order:?}")).await;
        }
    }
    let q = Search::radius(Center::At(pt(52.4825, 13.46)), 6_000.0).limit(n(2));
    let hits = expect(index, &model, &q, "count 2 through ties").await;
    let kept: Vec<&str> = hits.iter().map(|h| &*h.member).collect();
    assert_eq!(kept, ["tie-a", "tie-b"], "ties at the cut are kept by name");
    // ANY: some `count` hits of the area, ordered if asked.
    for order in [None, Some(Order::Asc), Some(Order::Desc)] {
        for count in [1, 5, 500, usize::MAX] {
            let q = Search {
                center,
                area: Area::Radius { radius_m: 8_000.0 },
                order,
                count: Some(n(count)),
                any: true,
            };
            expect(index, &model, &q, &format!("any {count} {order:?}")).await;
        }
    }

    // Across the antimeridian, from either side, and in the far north.
    let edge = [
        upd("fiji-e", -17.0, 179.999),
        upd("fiji-w", -17.0, -179.999),
        upd("north-1", 80.0, 10.0),
        upd("north-2", 80.05, 10.4),
        upd("north-3", 79.98, 9.7),
    ];
    upsert_ok(index, &mut model, &edge, Upserted { added: 5, updated: 0 }, "edges").await;
    for (lat, lon) in
        [(-17.0, 179.9995), (-17.0, -179.9995), (-17.001, 179.999_999_9), (-16.999, -180.0)]
    {
        let q = Search::radius(Center::At(pt(lat, lon)), 1_000.0);
        let hits = expect(index, &model, &q, &format!("antimeridian from {lon}")).await;
        assert_eq!(hits.len(), 2, "both sides of the antimeridian from ({lat}, {lon})");
        let q = Search {
            center: Center::At(pt(lat, lon)),
            area: Area::Box { width_m: 2_000.0, height_m: 3_000.0 },
            order: Some(Order::Asc),
            count: None,
            any: false,
        };
        expect(index, &model, &q, &format!("antimeridian box from {lon}")).await;
    }
    let q = Search::radius(Center::Member("north-1"), 30_000.0);
    let hits = expect(index, &model, &q, "far north").await;
    assert_eq!(hits.len(), 3, "the three northern members");

    // TTLs: live until the deadline, gone at it — from len, position, searches and
    // FROMMEMBER — and an upsert without a TTL clears the old one.
    let t0 = clock.now_ms();
    let batch = [ttl("eph-1", 52.49, 13.43, 1_000), ttl("eph-2", 52.491, 13.431, 5_000)];
    upsert_ok(index, &mut model, &batch, Upserted { added: 2, updated: 0 }, "ttl").await;
    let live_before = model.members.len();
    clock.set_ms(t0 + 999);
    assert_eq!(index.len().await.unwrap(), live_before, "live 1 ms before the deadline");
    assert!(index.position("eph-1").await.unwrap().is_some());
    let near_eph = Search::radius(Center::At(pt(52.49, 13.43)), 200.0);
    expect(index, &model, &near_eph, "before expiry").await;
    clock.set_ms(t0 + 1_000);
    model.members.remove("eph-1");
    assert_eq!(index.len().await.unwrap(), live_before - 1, "expired at the deadline");
    assert_eq!(index.position("eph-1").await.unwrap(), None, "no position once expired");
    expect(index, &model, &near_eph, "after expiry").await;
    let from_expired = Search::radius(Center::Member("eph-1"), 100.0);
    assert!(
        matches!(index.search(&from_expired).await, Err(GeoError::UnknownMember { .. })),
        "FROMMEMBER of an expired member"
    );
    assert_eq!(index.remove(&["eph-1"]).await.unwrap(), 0, "an expired member is not live");
    // An expired member upserted again is added; a TTL'd one upserted without a
    // TTL keeps living.
    let again = [ttl("eph-1", 52.49, 13.43, 1_000), upd("eph-2", 52.492, 13.432)];
    upsert_ok(index, &mut model, &again, Upserted { added: 1, updated: 1 }, "revive").await;
    clock.advance(ms(10_000));
    model.members.remove("eph-1");
    assert_eq!(index.position("eph-2").await.unwrap(), Some(model.members["eph-2"]), "TTL cleared");
    expect(index, &model, &near_eph, "TTL cleared by a plain upsert").await;
    // Counting: the nearest live ones, expired ones never take a place.
    let batch: Vec<Update<'_>> =
        ["x1", "x2", "x3"].iter().map(|m| ttl(m, 52.49, 13.4301, 50)).collect();
    upsert_ok(index, &mut model, &batch, Upserted { added: 3, updated: 0 }, "short ttl").await;
    clock.advance(ms(50));
    for m in ["x1", "x2", "x3"] {
        model.members.remove(m);
    }
    let q = Search::radius(Center::At(pt(52.49, 13.43)), 5_000.0).limit(n(2));
    expect(index, &model, &q, "count skips expired members").await;
    let q = Search { any: true, ..q };
    expect(index, &model, &q, "any skips expired members").await;
    assert_eq!(index.len().await.unwrap(), model.members.len());

    // Bad input: a typed error, and a refused batch changes nothing.
    let before = index.len().await.unwrap();
    let long = "m".repeat(MEMBER_BYTES_MAX + 1);
    let longest = "m".repeat(MEMBER_BYTES_MAX);
    let beyond = Point::new(INDEX_LAT_MAX + 0.001, 0.0).unwrap();
    let refused: [(Vec<Update<'_>>, &str); 5] = [
        (
            vec![upd("new-1", 1.0, 1.0), Update { member: "new-2", point: beyond, ttl_ms: None }],
            "lat",
        ),
        (vec![upd("new-1", 1.0, 1.0), upd("", 1.0, 1.0)], "empty name"),
        (vec![upd("new-1", 1.0, 1.0), upd(&long, 1.0, 1.0)], "long name"),
        (vec![upd("new-1", 1.0, 1.0), ttl("new-2", 1.0, 1.0, 0)], "ttl 0"),
        (vec![upd("new-1", 1.0, 1.0), ttl("new-2", 1.0, 1.0, TTL_MS_MAX + 1)], "ttl too long"),
    ];
    for (batch, what) in &refused {
        let err = index.upsert(batch).await.expect_err(what);
        let typed = match (*what, &err) {
            ("lat", GeoError::NotIndexable { index: 1, source }) => {
                matches!(source, CoordError::LatOutOfRange { .. })
            }
            ("empty name", GeoError::InvalidMember { len: 0 }) => true,
            ("long name", GeoError::InvalidMember { len }) => *len == MEMBER_BYTES_MAX + 1,
            ("ttl 0", GeoError::InvalidTtl { ttl_ms: 0 }) => true,
            ("ttl too long", GeoError::InvalidTtl { ttl_ms }) => *ttl_ms == TTL_MS_MAX + 1,
            _ => false,
        };
        assert!(typed, "{what}: {err:?}");
        assert_eq!(index.position("new-1").await.unwrap(), None, "{what}: batch partly applied");
        assert_eq!(index.len().await.unwrap(), before, "{what}: batch partly applied");
    }
    // The limits themselves are accepted.
    let limits = [
        ttl(&longest, INDEX_LAT_MAX - 1e-9, 180.0, TTL_MS_MAX),
        ttl("s", -INDEX_LAT_MAX, -180.0, 1),
    ];
    upsert_ok(index, &mut model, &limits, Upserted { added: 2, updated: 0 }, "limits").await;
    assert_eq!(index.remove(&[longest.as_str(), "s"]).await.unwrap(), 2);
    for m in [longest.as_str(), "s"] {
        model.members.remove(m);
    }
    for bad in ["", long.as_str()] {
        assert!(matches!(index.remove(&["a", bad]).await, Err(GeoError::InvalidMember { .. })));
        assert!(matches!(index.position(bad).await, Err(GeoError::InvalidMember { .. })));
        let q = Search::radius(Center::Member(bad), 1.0);
        assert!(matches!(index.search(&q).await, Err(GeoError::InvalidMember { .. })));
    }
    assert!(index.position("a").await.unwrap().is_some(), "a refused remove removed nothing");
    let at = Center::At(berlin);
    for extent_m in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, EXTENT_M_MAX * 1.001] {
        let radius = Search::radius(at, extent_m);
        let width = Search { area: Area::Box { width_m: extent_m, height_m: 1.0 }, ..radius };
        let height = Search { area: Area::Box { width_m: 1.0, height_m: extent_m }, ..radius };
        for q in [radius, width, height] {
            assert!(
                matches!(index.search(&q).await, Err(GeoError::InvalidExtent { .. })),
                "extent {extent_m}: {:?}",
                q.area
            );
        }
    }
    let polar = Search::radius(Center::At(pt(89.0, 0.0)), 10.0);
    assert!(
        matches!(index.search(&polar).await, Err(GeoError::InvalidCenter { .. })),
        "a centre beyond the index's latitudes"
    );

    // The member limit: adding beyond it is refused whole; moves and expired places
    // are fine.
    let trio = [upd("s1", 1.0, 1.0), upd("s2", 1.0, 1.001), ttl("s3", 1.0, 1.002, 1_000)];
    assert_eq!(small.upsert(&trio).await.unwrap(), Upserted { added: 3, updated: 0 });
    let over = [upd("s1", 2.0, 2.0), upd("s4", 1.0, 1.0)];
    assert!(
        matches!(small.upsert(&over).await, Err(GeoError::Full { max: SMALL_MAX })),
        "a fourth member"
    );
    assert_eq!(
        small.position("s1").await.unwrap(),
        Some(Score::encode(pt(1.0, 1.0)).unwrap().decode()),
        "refused batch moved s1"
    );
    assert_eq!(
        small.upsert(&over[..1]).await.unwrap(),
        Upserted { added: 0, updated: 1 },
        "moves fit"
    );
    let twice = [upd("s4", 1.0, 1.0), upd("s4", 1.0, 1.0)];
    assert!(matches!(small.upsert(&twice).await, Err(GeoError::Full { .. })));
    clock.advance(ms(1_000));
    assert_eq!(
        small.upsert(&twice).await.unwrap(),
        Upserted { added: 1, updated: 1 },
        "s3 expired: room"
    );
    assert_eq!(small.len().await.unwrap(), SMALL_MAX);
    assert_eq!(small.remove(&["s1"]).await.unwrap(), 1);
    assert_eq!(
        small.upsert(&[upd("s5", 0.0, 0.0)]).await.unwrap(),
        Upserted { added: 1, updated: 0 }
    );
    assert_eq!(small.len().await.unwrap(), SMALL_MAX);

    // Finally, everything the model holds is where it should be.
    for (m, p) in &model.members {
        assert_eq!(index.position(m).await.unwrap(), Some(*p), "final position of {m}");
    }
    assert_eq!(index.len().await.unwrap(), model.members.len());
}
