//! Cursor paging of the Bit.ly link listing: paging through while links are
//! created (with clock steps forwards, backwards and ties) never skips or
//! repeats a link that existed when paging began; forged cursors get a 400.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use axum::http::StatusCode;
use common::{TestDb, app_with, get, post_json};
use girder_core::ManualClock;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// What happens between two page fetches: this many inserts, each after moving
/// the clock by the given step (which may be negative or zero).
#[derive(Debug, Clone)]
struct Plan {
    initial: usize,
    page: u32,
    inserts_between_pages: Vec<Vec<i64>>,
}

fn plan_strategy() -> impl Strategy<Value = Plan> {
    (0usize..40, 1u32..8, prop::collection::vec(prop::collection::vec(-3i64..4, 0..4), 0..12))
        .prop_map(|(initial, page, inserts_between_pages)| Plan {
            initial,
            page,
            inserts_between_pages,
        })
}

async fn check_plan(db: &TestDb, plan: &Plan) {
    let clock = ManualClock::new(1_800_000_000_000);
    let (app, _) = app_with(db, Arc::new(clock.clone()), &[]).await;
    let mut shorten = {
        let app = app.clone();
        let clock = clock.clone();
        let mut n = 0;
        move |step_ms: i64| {
            let (app, clock) = (app.clone(), clock.clone());
            n += 1;
            let url = format!("https://e.com/{n}");
            async move {
                clock.set_ms(clock_step(&clock, step_ms));
                let r = post_json(&app, "/api/bitly/urls", &json!({"url": url})).await;
                assert_eq!(r.status, StatusCode::CREATED);
                r.json()["code"].as_str().expect("code").to_owned()
            }
        }
    };
    let mut existing = HashSet::new();
    for i in 0..plan.initial {
        // Ties and out-of-order timestamps among the initial rows too.
        existing.insert(shorten(if i % 3 == 0 { 0 } else { 1 }).await);
    }

    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut round = 0;
    loop {
        let path = match &cursor {
            None => format!("/api/bitly/urls?limit={}", plan.page),
            Some(c) => format!("/api/bitly/urls?limit={}&cursor={c}", plan.page),
        };
        let reply = get(&app, &path).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
        let body = reply.json();
        let items = body["items"].as_array().expect("items");
        assert!(items.len() <= plan.page as usize);
        for item in items {
            let code = item["code"].as_str().expect("code").to_owned();
            assert!(seen.insert(code.clone()), "{}: {code} repeated across pages", db.engine());
        }
        for step in plan.inserts_between_pages.get(round).into_iter().flatten() {
            shorten(*step).await;
        }
        round += 1;
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let missing: Vec<_> = existing.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{}: skipped links that existed at the start: {missing:?}",
        db.engine()
    );
}

fn clock_step(clock: &ManualClock, step_ms: i64) -> u64 {
    use girder_core::Clock;
    clock.now_ms().saturating_add_signed(step_ms)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn paging_under_inserts_never_skips_or_repeats_on_sqlite(plan in plan_strategy()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(check_plan(&TestDb::sqlite(), &plan));
    }
}

#[tokio::test]
async fn paging_under_inserts_never_skips_or_repeats_on_postgres() {
    let Some(db) =
        TestDb::postgres("paging_under_inserts_never_skips_or_repeats_on_postgres").await
    else {
        return;
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0061_7264_6572);
    for _ in 0..6 {
        let plan = Plan {
            initial: rng.random_range(0..40),
            page: rng.random_range(1..8),
            inserts_between_pages: (0..rng.random_range(0..12))
                .map(|_| (0..rng.random_range(0..4)).map(|_| rng.random_range(-3..4)).collect())
                .collect(),
        };
        // Each plan pages the whole table, so earlier plans' rows count as existing too.
        check_plan(&db, &plan).await;
    }
    db.drop_db().await;
}

#[tokio::test]
async fn bad_cursors_and_limits_get_a_400() {
    let db = TestDb::sqlite();
    let (app, _) = app_with(&db, Arc::new(ManualClock::new(1_800_000_000_000)), &[]).await;
    for i in 0..3 {
        post_json(&app, "/api/bitly/urls", &json!({"url": format!("https://e.com/{i}")})).await;
    }
    let page = get(&app, "/api/bitly/urls?limit=2").await.json();
    let cursor = page["next_cursor"].as_str().expect("a next page").to_owned();
    let mut forged = cursor.clone().into_bytes();
    let last = forged.len() - 3;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let cases = [
        // Unreadable (a forged cursor, a limit that is not a number): 400.
        (format!("/api/bitly/urls?cursor={forged}"), StatusCode::BAD_REQUEST, "invalid-cursor"),
        (
            "/api/bitly/urls?cursor=not-a-cursor".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid-cursor",
        ),
        (
            format!("/api/bitly/urls?cursor={}", "A".repeat(600)),
            StatusCode::BAD_REQUEST,
            "invalid-cursor",
        ),
        ("/api/bitly/urls?limit=-1".to_owned(), StatusCode::BAD_REQUEST, "bad-query"),
        ("/api/bitly/urls?limit=ten".to_owned(), StatusCode::BAD_REQUEST, "bad-query"),
        ("/api/bitly/urls?bogus=1".to_owned(), StatusCode::BAD_REQUEST, "bad-query"),
        // Readable but out of range: 422.
        ("/api/bitly/urls?limit=0".to_owned(), StatusCode::UNPROCESSABLE_ENTITY, "invalid-limit"),
        ("/api/bitly/urls?limit=101".to_owned(), StatusCode::UNPROCESSABLE_ENTITY, "invalid-limit"),
    ];
    for (path, status, problem) in cases {
        let reply = get(&app, &path).await;
        assert_eq!(reply.status, status, "{path}");
        assert_eq!(reply.json()["type"], format!("/problems/{problem}"), "{path}");
    }
    let next = get(&app, &format!("/api/bitly/urls?limit=2&cursor={cursor}")).await.json();
    assert_eq!(next["items"].as_array().map(Vec::len), Some(1));
    assert!(next["next_cursor"].is_null());
}
