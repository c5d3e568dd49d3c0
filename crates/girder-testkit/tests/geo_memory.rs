//! The in-process geo index passes the geo conformance suite, directly and behind
//! `AnyGeoIndex`.

use std::sync::Arc;

use girder_core::{Clock, ManualClock, SystemClock};
use girder_geo::index::{AnyGeoIndex, MemoryGeoIndex, MemoryIndexConfig};
use girder_testkit::geo::{SMALL_MAX, geo_conformance};

fn index(clock: &ManualClock, members_max: usize) -> MemoryGeoIndex {
    let config =
        MemoryIndexConfig { members_max, reclaim_per_call: 4, clock: Arc::new(clock.clone()) };
    MemoryGeoIndex::new(config)
}

#[tokio::test]
async fn memory_geo_index_conforms() {
    let clock = ManualClock::new(SystemClock.now_ms());
    geo_conformance(&index(&clock, 1_000), &index(&clock, SMALL_MAX), &clock).await;
}

#[tokio::test]
async fn any_geo_index_conforms() {
    let clock = ManualClock::new(SystemClock.now_ms());
    let big = AnyGeoIndex::Memory(index(&clock, 1_000));
    let small = AnyGeoIndex::Memory(index(&clock, SMALL_MAX));
    geo_conformance(&big, &small, &clock).await;
}
