//! GoPuff through its router, on SQLite and PostgreSQL: the no-oversell
//! promise under concurrent orders from two instances, the availability
//! cache's invalidation and TTL bound, haversine and nearest (the index's answers
//! equal the plain scan's; other instances see new centres within the refresh
//! bound), and a table of bad input that must all be 4xx problems.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use girder_core::services::{Service, require};
use girder_core::{Clock, ManualClock};
use girder_geo::Point;
use girder_gopuff::geo;
use girder_gopuff::store::Store;
use girder_gopuff::{GoPuff, GoPuffConfig, Strategy};
use girder_http::identity::{Role, test_bearer as bearer, test_tokens};
use girder_lock::retry::RetryPolicy;
use girder_sql::{Db, PoolConfig};
use girder_system::Context;
use girder_testkit::backends::TestDb;
use http_body_util::BodyExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tower::ServiceExt;

// ---------------------------------------------------------------- plumbing

/// One instance, with its own pool on `db`, Redis when `redis_url` is given, and its
/// configuration changed by `tweak`.
async fn open_instance(
    db: &TestDb,
    clock: Arc<dyn Clock>,
    redis_url: Option<&str>,
    tweak: impl FnOnce(&mut GoPuffConfig),
) -> Arc<GoPuff> {
    let pool = Db::connect(db.url(), PoolConfig::default()).await.expect("database");
    girder_sql::migrate::run(&pool, girder_sql::migrate::server()).await.expect("migrations");
    girder_sql::migrate::run(&pool, girder_gopuff::migrations()).await.expect("migrations");
    let mut context = Context::new(pool, clock);
    if let Some(url) = redis_url {
        context = context.with_redis(url);
    }
    let mut config = GoPuffConfig::new();
    tweak(&mut config);
    GoPuff::open_with(&context, config).await.expect("open gopuff")
}

async fn open_with(
    db: &TestDb,
    clock: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut GoPuffConfig),
) -> Arc<GoPuff> {
    open_instance(db, clock, None, tweak).await
}

async fn open(db: &TestDb) -> (Arc<GoPuff>, Router) {
    let gopuff = open_with(db, Arc::new(ManualClock::new(1_700_000_000_000)), |_| {}).await;
    let router = routed(&gopuff);
    (gopuff, router)
}

/// The API as the server mounts it: behind the layer that verifies bearer tokens.
fn routed(gopuff: &Arc<GoPuff>) -> Router {
    gopuff.api_router().layer(test_tokens().layer())
}

/// Sends one request; returns the status and the JSON body (or `Null`). Who calls is
/// written where the tests read best: a `"user"` field in a JSON body or a `?user=`
/// query names the caller (both are removed: the API takes the caller only from its
/// token); `?as=nobody` sends no token; otherwise an operator calls.
async fn call(router: &Router, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
    let mut body = body.map(str::to_owned);
    let mut caller = Some(("operator".to_owned(), Role::Operator));
    if let Some(Ok(Value::Object(mut fields))) = body.as_deref().map(serde_json::from_str::<Value>)
        && let Some(Value::String(user)) = fields.remove("user")
    {
        caller = Some((user, Role::User));
        body = Some(Value::Object(fields).to_string());
    }
    let mut path = uri.to_owned();
    if let Some((bare, who)) = uri.split_once("?user=") {
        caller = Some((who.to_owned(), Role::User));
        path = bare.to_owned();
    } else if let Some((bare, _)) = uri.split_once("?as=nobody") {
        caller = None;
        path = bare.to_owned();
    }
    let mut request = Request::builder().method(method).uri(&path);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some((user, role)) = &caller {
        request = request.header(header::AUTHORIZATION, bearer(user, *role));
    }
    let request = request.body(Body::from(body.unwrap_or_default())).expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible router");
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_client_error() || status.is_server_error() {
        assert!(is_problem, "{method} {uri}: error {status} is not a problem document: {value}");
    }
    (status, value)
}

async fn post(router: &Router, uri: &str, body: &Value) -> (StatusCode, Value) {
    call(router, "POST", uri, Some(&body.to_string())).await
}

async fn put(router: &Router, uri: &str, body: &Value) -> (StatusCode, Value) {
    call(router, "PUT", uri, Some(&body.to_string())).await
}

async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    call(router, "GET", uri, None).await
}

async fn center(router: &Router, name: &str, lat: f64, lon: f64) -> i64 {
    let (status, body) =
        post(router, "/centers", &json!({"name": name, "lat": lat, "lon": lon})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_i64().expect("id")
}

async fn item(router: &Router, sku: &str, price_cents: i64) {
    let (status, body) =
        post(router, "/items", &json!({"sku": sku, "name": sku, "price_cents": price_cents})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn stock(router: &Router, center: i64, sku: &str, quantity: i64) {
    let uri = format!("/centers/{center}/inventory/{sku}");
    let (status, body) = put(router, &uri, &json!({ "quantity": quantity })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn db_stock(gopuff: &GoPuff, center: i64, sku: &str) -> i64 {
    gopuff.store().stock(center, sku).await.expect("read stock").unwrap_or(0)
}

/// Sets stock with SQL, behind the API's (and the cache's) back.
async fn sql_set_stock(store: &Store, center: i64, sku: &str, quantity: i64) {
    let sql = "UPDATE gopuff_inventory SET quantity = $1 WHERE center_id = $2 AND sku = $3";
    match store.db() {
        Db::Sqlite(pool) => {
            sqlx::query(sql).bind(quantity).bind(center).bind(sku).execute(pool).await.unwrap();
        }
        Db::Postgres(pool) => {
            sqlx::query(sql).bind(quantity).bind(center).bind(sku).execute(pool).await.unwrap();
        }
    }
}

fn availability_uri(lat: f64, lon: f64, radius_km: f64, skus: &str) -> String {
    format!("/availability?lat={lat}&lon={lon}&radius_km={radius_km}&skus={skus}")
}

/// The stock of `sku` at `center` as availability reports it.
async fn available(router: &Router, center: i64, sku: &str) -> i64 {
    let (status, body) = get(router, &availability_uri(51.5, -0.12, 10.0, sku)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entry = body["centers"]
        .as_array()
        .expect("centers")
        .iter()
        .find(|c| c["center_id"] == center)
        .unwrap_or_else(|| panic!("centre {center} missing from {body}"));
    entry["stock"][sku].as_i64().expect("quantity")
}

// ---------------------------------------------------------------- the promise

/// Which strategy each order of a run uses.
#[derive(Debug, Clone, Copy)]
enum Mix {
    All(Strategy),
    Mixed,
}

const SKUS: [&str; 5] = ["apple", "bread", "chips", "dates", "eggs"];
const ORDERS: usize = 600;
const IN_FLIGHT: usize = 64;

/// One order's fate, as the client saw it.
#[derive(Debug)]
enum Fate {
    Accepted { lines: Vec<(String, i64)> },
    Short { lines: Vec<(String, i64)>, detail: String },
    Contention,
}

/// `ORDERS` random baskets against a centre with a little stock of each sku,
/// `IN_FLIGHT` at a time, alternating between two instances on one database.
/// Checks: stock never negative; for every sku, initial − final equals the
/// units in accepted orders (and in the stored order lines); every refusal for
/// insufficient stock was true (a named line really was short, and stock
/// never rose afterwards); the orders listing holds exactly the accepted ones.
async fn oversell_run(db: &TestDb, mix: Mix, seed: u64) {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_700_000_000_000));
    let config = |c: &mut GoPuffConfig| {
        c.retry = RetryPolicy { max_attempts: 12, base_delay_ms: 1, max_delay_ms: 50 };
    };
    let a = open_with(db, Arc::clone(&clock), config).await;
    let b = open_with(db, Arc::clone(&clock), config).await;
    let routers = [routed(&a), routed(&b)];
    let center = center(&routers[0], "Hot DC", 51.5, -0.12).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut initial = BTreeMap::new();
    for (i, sku) in SKUS.iter().enumerate() {
        let (status, _) =
            post(&routers[0], "/items", &json!({"sku": sku, "name": sku, "price_cents": 100 + i}))
                .await;
        assert!(status == StatusCode::CREATED || status == StatusCode::CONFLICT);
        // About 1,050 units of each sku are asked for in all: the early orders
        // fit, the later ones find the shelves dry, and every order contends.
        let quantity = rng.random_range(300..=600);
        stock(&routers[i % 2], center, sku, quantity).await;
        initial.insert((*sku).to_owned(), quantity);
    }

    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for n in 0..ORDERS {
        let lines_n = rng.random_range(1..=4);
        let mut skus: Vec<&str> = SKUS.to_vec();
        let mut lines = Vec::new();
        for _ in 0..lines_n {
            let sku = skus.swap_remove(rng.random_range(0..skus.len()));
            lines.push((sku.to_owned(), rng.random_range(1..=6_i64)));
        }
        let strategy = match mix {
            Mix::All(s) => s,
            Mix::Mixed if rng.random_bool(0.5) => Strategy::Optimistic,
            Mix::Mixed => Strategy::RowLock,
        };
        let router = routers[n % 2].clone();
        let permits = Arc::clone(&permits);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            let items: Vec<Value> =
                lines.iter().map(|(s, q)| json!({"sku": s, "quantity": q})).collect();
            let body = json!({"center_id": center, "user": format!("u{n}"), "items": items,
                              "strategy": strategy.as_str()});
            let (status, reply) = post(&router, "/orders", &body).await;
            match (status, reply["type"].as_str()) {
                (StatusCode::CREATED, _) => {
                    let mut stored: Vec<(String, i64)> = reply["lines"]
                        .as_array()
                        .expect("lines")
                        .iter()
                        .map(|l| {
                            (l["sku"].as_str().unwrap().to_owned(), l["quantity"].as_i64().unwrap())
                        })
                        .collect();
                    stored.sort();
                    let mut asked = lines.clone();
                    asked.sort();
                    assert_eq!(stored, asked, "the order stored what was asked");
                    Fate::Accepted { lines }
                }
                (StatusCode::CONFLICT, Some("/problems/insufficient-stock")) => Fate::Short {
                    lines,
                    detail: reply["detail"].as_str().unwrap_or_default().to_owned(),
                },
                (StatusCode::CONFLICT, Some("/problems/contention")) => Fate::Contention,
                other => panic!("order {n}: unexpected answer {other:?}: {reply}"),
            }
        });
    }
    let mut fates = Vec::with_capacity(ORDERS);
    while let Some(done) = tasks.join_next().await {
        fates.push(done.expect("order task"));
        // Look at the shelves mid-run too, not only at the end.
        if fates.len() % 50 == 0 {
            for sku in SKUS {
                let left = db_stock(&a, center, sku).await;
                assert!((0..=initial[sku]).contains(&left), "{sku}: {left} mid-run");
            }
        }
    }
    let elapsed = started.elapsed();

    let mut finals = BTreeMap::new();
    for sku in SKUS {
        let left = db_stock(&a, center, sku).await;
        assert!(left >= 0, "{sku}: stock went negative ({left})");
        finals.insert(sku.to_owned(), left);
    }
    let mut ordered: BTreeMap<String, i64> = SKUS.iter().map(|s| ((*s).to_owned(), 0)).collect();
    let (mut accepted, mut short, mut contention) = (0, 0, 0);
    for fate in &fates {
        match fate {
            Fate::Accepted { lines } => {
                accepted += 1;
                for (sku, q) in lines {
                    *ordered.get_mut(sku).unwrap() += q;
                }
            }
            Fate::Short { lines, detail } => {
                short += 1;
                // A true refusal: some line it names was short then, and since
                // stock only falls in this run, it is still short now.
                let named: Vec<_> = lines
                    .iter()
                    .filter(|(sku, q)| {
                        detail.contains(&format!("{sku} (requested {q}, available "))
                    })
                    .collect();
                assert!(!named.is_empty(), "refusal names none of its lines: {detail}");
                for (sku, q) in named {
                    let marker = format!("{sku} (requested {q}, available ");
                    let at = detail.find(&marker).unwrap() + marker.len();
                    let available: i64 =
                        detail[at..].split(')').next().unwrap().parse().expect("available");
                    assert!(available < *q, "refused {sku} x{q} with {available} available");
                    assert!(finals[sku] <= available, "{sku} rose after a refusal");
                }
            }
            Fate::Contention => contention += 1,
        }
    }
    for sku in SKUS {
        assert_eq!(
            initial[sku] - finals[sku],
            ordered[sku],
            "{sku}: stock removed must equal units in accepted orders"
        );
    }
    // The stored orders are exactly the accepted ones (paged through the API).
    let mut stored_units: BTreeMap<String, i64> = BTreeMap::new();
    let (mut stored_orders, mut cursor) = (0, None::<String>);
    loop {
        let uri = match &cursor {
            None => format!("/centers/{center}/orders?limit=100"),
            Some(c) => format!("/centers/{center}/orders?limit=100&cursor={c}"),
        };
        let (status, page) = get(&routers[1], &uri).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for order in page["items"].as_array().unwrap() {
            stored_orders += 1;
            for line in order["lines"].as_array().unwrap() {
                *stored_units.entry(line["sku"].as_str().unwrap().to_owned()).or_default() +=
                    line["quantity"].as_i64().unwrap();
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(stored_orders, accepted, "stored orders = accepted orders");
    for sku in SKUS {
        assert_eq!(stored_units.get(sku).copied().unwrap_or(0), ordered[sku], "{sku} order lines");
    }
    assert!(accepted > 0 && short > 0, "the run must both accept and refuse ({accepted}/{short})");
    let (sa, sb) = (a.order_stats(), b.order_stats());
    assert_eq!(sa.accepted + sb.accepted, accepted as u64);
    assert_eq!(sa.rejected + sb.rejected, (short + contention) as u64);
    println!(
        "gopuff oversell {engine} {mix:?}: {ORDERS} orders ({IN_FLIGHT} in flight, 2 instances) in \
         {ms} ms = {rate:.0} orders/s; accepted {accepted}, insufficient {short}, contention \
         {contention}, retries {retries}",
        engine = db.engine(),
        ms = elapsed.as_millis(),
        rate = ORDERS as f64 / elapsed.as_secs_f64(),
        retries = sa.retries + sb.retries,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_orders_never_oversell() {
    for db in TestDb::all("concurrent_orders_never_oversell").await {
        for (i, mix) in [Mix::All(Strategy::RowLock), Mix::All(Strategy::Optimistic), Mix::Mixed]
            .into_iter()
            .enumerate()
        {
            oversell_run(&db, mix, 42 + i as u64).await;
        }
        db.drop_db().await;
    }
}

// ---------------------------------------------------------------- orders

#[tokio::test]
async fn an_order_is_all_or_nothing_and_readable() {
    for db in TestDb::all("an_order_is_all_or_nothing_and_readable").await {
        let (gopuff, router) = open(&db).await;
        let dc = center(&router, "DC", 51.5, -0.12).await;
        item(&router, "milk", 250).await;
        item(&router, "tea", 400).await;
        stock(&router, dc, "milk", 5).await;
        stock(&router, dc, "tea", 1).await;
        for strategy in ["row_lock", "optimistic"] {
            // One short line refuses the whole order: milk is untouched.
            let body = json!({"center_id": dc, "user": "ann", "strategy": strategy,
                              "items": [{"sku": "milk", "quantity": 2}, {"sku": "tea", "quantity": 3}]});
            let (status, problem) = post(&router, "/orders", &body).await;
            assert_eq!(status, StatusCode::CONFLICT, "{problem}");
            assert_eq!(problem["type"], "/problems/insufficient-stock");
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains("tea (requested 3, available 1)"), "{detail}");
            assert!(!detail.contains("milk"), "{detail}");
            assert_eq!(db_stock(&gopuff, dc, "milk").await, 5);
            assert_eq!(db_stock(&gopuff, dc, "tea").await, 1);
        }
        let body = json!({"center_id": dc, "user": "ann", "strategy": "optimistic",
                          "items": [{"sku": "tea", "quantity": 1}, {"sku": "milk", "quantity": 2}]});
        let (status, order) = post(&router, "/orders", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        assert_eq!(order["total_cents"], 2 * 250 + 400);
        assert_eq!(order["strategy"], "optimistic");
        assert_eq!(order["attempts"], 1);
        assert_eq!(order["lines"][0]["sku"], "milk", "lines are sku-sorted");
        assert_eq!(db_stock(&gopuff, dc, "milk").await, 3);
        assert_eq!(db_stock(&gopuff, dc, "tea").await, 0);
        let (status, fetched) = get(&router, &format!("/orders/{}", order["id"])).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(fetched, order);
        // The default strategy (row_lock) applies when none is named.
        let body =
            json!({"center_id": dc, "user": "bob", "items": [{"sku": "milk", "quantity": 3}]});
        let (status, second) = post(&router, "/orders", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{second}");
        assert_eq!(second["strategy"], "row_lock");
        // A sku the centre never stocked is short (0 left), not unknown.
        item(&router, "jam", 300).await;
        let body =
            json!({"center_id": dc, "user": "bob", "items": [{"sku": "jam", "quantity": 1}]});
        let (status, problem) = post(&router, "/orders", &body).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(problem["detail"].as_str().unwrap().contains("jam (requested 1, available 0)"));
        // Paging the centre's orders: newest first, one per page.
        let (status, page) = get(&router, &format!("/centers/{dc}/orders?limit=1")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["items"][0]["id"], second["id"]);
        let cursor = page["next_cursor"].as_str().expect("a second page");
        let (_, page) =
            get(&router, &format!("/centers/{dc}/orders?limit=1&cursor={cursor}")).await;
        assert_eq!(page["items"][0]["id"], order["id"]);
        let cursor = page["next_cursor"].as_str().expect("a possibly empty third page");
        let (_, page) =
            get(&router, &format!("/centers/{dc}/orders?limit=1&cursor={cursor}")).await;
        assert_eq!(page["items"], json!([]));
        assert_eq!(page["next_cursor"], Value::Null);
        // A cursor from one centre's list does not work on another's.
        let other = center(&router, "Other", 0.0, 0.0).await;
        let (status, _) = get(&router, &format!("/centers/{other}/orders?cursor={cursor}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        db.drop_db().await;
    }
}

/// Places an order as `user` under `key`; returns the status, whether it was a replay,
/// and the body.
async fn order_with_key(
    router: &Router,
    user: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, bool, Value) {
    let request = Request::post("/orders")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, bearer(user, Role::User))
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible router");
    let (status, replayed) =
        (response.status(), response.headers().contains_key("idempotent-replayed"));
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, replayed, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_order_with_its_key_is_placed_once() {
    for db in TestDb::all("a_retried_order_with_its_key_is_placed_once").await {
        let (gopuff, router) = open(&db).await;
        let dc = center(&router, "DC", 51.5, -0.12).await;
        item(&router, "milk", 250).await;
        stock(&router, dc, "milk", 10).await;
        let body = json!({"center_id": dc, "items": [{"sku": "milk", "quantity": 2}]});
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (router, body) = (router.clone(), body.clone());
            tasks.spawn(async move { order_with_key(&router, "ann", "order-1", &body).await });
        }
        let mut placed = std::collections::HashSet::new();
        while let Some(reply) = tasks.join_next().await {
            let (status, _, order) = reply.expect("task");
            match status {
                StatusCode::CREATED => {
                    placed.insert(order["id"].to_string());
                }
                StatusCode::CONFLICT => {
                    assert_eq!(order["type"], "/problems/request-in-progress");
                }
                other => panic!("{}: unexpected {other}: {order}", db.engine()),
            }
        }
        assert_eq!(placed.len(), 1, "{}: every 201 is the one order", db.engine());
        let (status, replayed, order) = order_with_key(&router, "ann", "order-1", &body).await;
        assert_eq!((status, replayed), (StatusCode::CREATED, true));
        assert!(placed.contains(&order["id"].to_string()));
        assert_eq!(db_stock(&gopuff, dc, "milk").await, 8, "{}: one decrement", db.engine());
        // Another caller's key of the same name is another order; a changed body is refused.
        let (status, replayed, _) = order_with_key(&router, "bob", "order-1", &body).await;
        assert_eq!((status, replayed), (StatusCode::CREATED, false));
        let more = json!({"center_id": dc, "items": [{"sku": "milk", "quantity": 3}]});
        let (status, _, problem) = order_with_key(&router, "ann", "order-1", &more).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem["type"], "/problems/idempotency-key-reused");
        assert_eq!(db_stock(&gopuff, dc, "milk").await, 6);
        db.drop_db().await;
    }
}

#[tokio::test]
async fn restock_adds_atomically_within_the_limit() {
    for db in TestDb::all("restock_adds_atomically_within_the_limit").await {
        let (gopuff, router) = open(&db).await;
        let dc = center(&router, "DC", 10.0, 10.0).await;
        item(&router, "oats", 100).await;
        let uri = format!("/centers/{dc}/inventory/oats/restock");
        let (status, body) = post(&router, &uri, &json!({"add": 7})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["quantity"], 7, "restocking an unstocked sku starts from 0");
        let (_, body) = post(&router, &uri, &json!({"add": 3})).await;
        assert_eq!(body["quantity"], 10);
        let (status, body) = post(&router, &uri, &json!({"add": 999_991})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["type"], "/problems/stock-limit");
        assert_eq!(db_stock(&gopuff, dc, "oats").await, 10, "a refused restock changes nothing");
        let (_, body) = post(&router, &uri, &json!({"add": 999_990})).await;
        assert_eq!(body["quantity"], 1_000_000);
        db.drop_db().await;
    }
}

// ---------------------------------------------------------------- availability cache

#[tokio::test]
async fn availability_is_cached_invalidated_and_bounded_by_ttl() {
    for db in TestDb::all("availability_is_cached_invalidated_and_bounded_by_ttl").await {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let gopuff = open_with(&db, Arc::clone(&clock) as Arc<dyn Clock>, |c| {
            c.availability_ttl_ms = 2_000;
            c.availability_ttl_jitter_fraction = 0.1;
        })
        .await;
        let router = routed(&gopuff);
        let dc = center(&router, "London", 51.5074, -0.1278).await;
        item(&router, "soap", 150).await;
        stock(&router, dc, "soap", 10).await;

        assert_eq!(available(&router, dc, "soap").await, 10);
        let loads = gopuff.cache_stats().loader_calls;
        assert_eq!(available(&router, dc, "soap").await, 10);
        assert_eq!(gopuff.cache_stats().loader_calls, loads, "the second read is a cache hit");
        // The stock entry (the centres come from the nearby index, not this cache).
        assert!(gopuff.cache_stats().l1_hits >= 1);

        // Changes through the API are visible at once on this instance.
        stock(&router, dc, "soap", 7).await;
        assert_eq!(available(&router, dc, "soap").await, 7);
        let body = json!({"center_id": dc, "user": "u", "items": [{"sku": "soap", "quantity": 2}]});
        assert_eq!(post(&router, "/orders", &body).await.0, StatusCode::CREATED);
        assert_eq!(available(&router, dc, "soap").await, 5);
        let (status, _) =
            post(&router, &format!("/centers/{dc}/inventory/soap/restock"), &json!({"add": 1}))
                .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(available(&router, dc, "soap").await, 6, "the entry was loaded now");

        // A change behind the cache's back is served stale until the TTL
        // (2,000 ms, jittered by up to 10% either way), and fresh after.
        sql_set_stock(gopuff.store(), dc, "soap", 3).await;
        assert_eq!(available(&router, dc, "soap").await, 6, "stale right after");
        clock.advance(Duration::from_millis(1_799));
        assert_eq!(available(&router, dc, "soap").await, 6, "stale within ttl * (1 - jitter)");
        clock.advance(Duration::from_millis(2_201 - 1_799));
        assert_eq!(available(&router, dc, "soap").await, 3, "fresh after ttl * (1 + jitter)");
        let (_, body) = get(&router, &availability_uri(51.5, -0.12, 10.0, "soap")).await;
        assert_eq!(body["staleness_bound_ms"], 2_200);

        // Orders never trust the cache: the cache says 3, the database says 0.
        assert_eq!(available(&router, dc, "soap").await, 3);
        sql_set_stock(gopuff.store(), dc, "soap", 0).await;
        let body = json!({"center_id": dc, "user": "u", "items": [{"sku": "soap", "quantity": 1}]});
        let (status, problem) = post(&router, "/orders", &body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert_eq!(db_stock(&gopuff, dc, "soap").await, 0);
        db.drop_db().await;
    }
}

#[tokio::test]
async fn availability_reports_centres_in_radius_nearest_first() {
    let db = TestDb::sqlite();
    let (_gopuff, router) = open(&db).await;
    let london = center(&router, "London", 51.5074, -0.1278).await;
    let croydon = center(&router, "Croydon", 51.3762, -0.0982).await;
    let _paris = center(&router, "Paris", 48.8566, 2.3522).await;
    item(&router, "a", 1).await;
    item(&router, "b", 1).await;
    stock(&router, london, "a", 4).await;
    stock(&router, croydon, "b", 9).await;
    // From Westminster: London (~1 km), Croydon (~15 km); Paris is ~340 km away.
    let (status, body) = get(&router, &availability_uri(51.4995, -0.1248, 50.0, "b,a,a")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let centers = body["centers"].as_array().unwrap();
    assert_eq!(centers.len(), 2, "{body}");
    assert_eq!(centers[0]["center_id"], london);
    assert_eq!(centers[0]["stock"], json!({"a": 4, "b": 0}));
    assert_eq!(centers[1]["center_id"], croydon);
    assert_eq!(centers[1]["stock"], json!({"a": 0, "b": 9}));
    assert!(centers[0]["distance_km"].as_f64() < centers[1]["distance_km"].as_f64());
    // A centre added later shows up at once on this instance (centre list invalidated).
    let soho = center(&router, "Soho", 51.5136, -0.1365).await;
    let (_, body) = get(&router, &availability_uri(51.5136, -0.1365, 1.0, "a")).await;
    assert_eq!(body["centers"][0]["center_id"], soho);
}

/// With Redis, a stock change on one instance evicts the other's cached copy.
#[tokio::test]
async fn stock_changes_invalidate_other_instances_through_redis() {
    let Some(redis_url) =
        require(Service::Redis, "stock_changes_invalidate_other_instances_through_redis")
    else {
        return;
    };
    let Some(db) = TestDb::postgres("stock_changes_invalidate_other_instances_through_redis").await
    else {
        return;
    };
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_700_000_000_000));
    let a = open_instance(&db, Arc::clone(&clock), Some(&redis_url), |_| {}).await;
    let b = open_instance(&db, Arc::clone(&clock), Some(&redis_url), |_| {}).await;
    let (ra, rb) = (routed(&a), routed(&b));
    let mut listening = b.availability().listener_progress();
    listening.wait_for(|p| p.subscribed).await.expect("b subscribes");
    let dc = center(&ra, "London", 51.5074, -0.1278).await;
    item(&ra, "salt", 50).await;
    stock(&ra, dc, "salt", 8).await;
    // b finds centres created on a when its centre index reloads (every
    // `centers_refresh_ms`, or now); stock is what travels over Redis here.
    b.refresh_centers().await.expect("b reloads its centres");
    assert_eq!(available(&rb, dc, "salt").await, 8);
    let before = listening.borrow().invalidations_applied;
    let body = json!({"center_id": dc, "user": "u", "items": [{"sku": "salt", "quantity": 3}]});
    assert_eq!(post(&ra, "/orders", &body).await.0, StatusCode::CREATED);
    tokio::time::timeout(
        Duration::from_secs(10),
        listening.wait_for(|p| p.invalidations_applied > before),
    )
    .await
    .expect("the invalidation reaches b")
    .expect("listener alive");
    assert_eq!(
        available(&rb, dc, "salt").await,
        5,
        "b reads fresh stock without any clock movement"
    );
    a.availability().shutdown().await;
    b.availability().shutdown().await;
    db.drop_db().await;
}

// ---------------------------------------------------------------- geo

fn pt(lat: f64, lon: f64) -> Point {
    Point::new(lat, lon).expect("valid point")
}

#[test]
fn haversine_known_distances() {
    let check = |a: Point, b: Point, want_km: f64, tolerance: f64| {
        let got = geo::haversine_km(a, b);
        assert!(got.is_finite());
        assert!(
            (got - want_km).abs() <= want_km * tolerance + 1e-9,
            "{a:?}-{b:?}: {got} vs {want_km}"
        );
        assert!((geo::haversine_km(b, a) - got).abs() < 1e-9, "symmetric");
    };
    let london = pt(51.5074, -0.1278);
    let paris = pt(48.8566, 2.3522);
    check(london, paris, 343.5, 0.005);
    check(pt(40.7128, -74.0060), pt(34.0522, -118.2437), 3_936.0, 0.005); // New York–Los Angeles
    check(london, london, 0.0, 0.0);
    // Across the antimeridian: 0.2° of longitude on the equator, not 359.8°.
    check(pt(0.0, 179.9), pt(0.0, -179.9), 22.239, 0.001);
    // The poles: every longitude is the same point; pole to pole is half a circumference.
    check(pt(90.0, 0.0), pt(90.0, 180.0), 0.0, 0.0);
    let half = std::f64::consts::PI * geo::EARTH_RADIUS_KM;
    check(pt(90.0, 0.0), pt(-90.0, 0.0), half, 1e-9);
    check(pt(0.0, 0.0), pt(0.0, 180.0), half, 1e-9); // antipodes
    check(pt(0.0, -180.0), pt(0.0, 180.0), 0.0, 0.0);
    for bad in [
        (90.01, 0.0),
        (-91.0, 0.0),
        (0.0, 180.5),
        (0.0, -181.0),
        (f64::NAN, 0.0),
        (0.0, f64::INFINITY),
    ] {
        assert!(Point::new(bad.0, bad.1).is_err(), "{bad:?}");
    }
}

#[test]
fn nearest_and_within_pick_the_right_centres() {
    let places = [
        ("london", pt(51.5074, -0.1278)),
        ("paris", pt(48.8566, 2.3522)),
        ("nyc", pt(40.7128, -74.0060)),
    ];
    let candidates = || places.iter().map(|(name, p)| (name, *p));
    let nearest = |from| geo::nearest(from, candidates()).map(|(n, _)| *n);
    assert_eq!(nearest(pt(50.8225, -0.1372)), Some("london")); // Brighton
    assert_eq!(nearest(pt(48.8049, 2.1204)), Some("paris")); // Versailles
    assert_eq!(nearest(pt(42.3601, -71.0589)), Some("nyc")); // Boston
    assert_eq!(geo::nearest::<&str>(pt(0.0, 0.0), std::iter::empty()), None);
    let near_london: Vec<_> =
        geo::within(pt(51.0, 0.0), 400.0, candidates()).into_iter().map(|(n, _)| *n).collect();
    assert_eq!(near_london, ["london", "paris"]);
    // Across the antimeridian, and at the pole.
    let fiji = [("taveuni", pt(-16.8, 179.95))];
    let found = geo::within(pt(-16.8, -179.95), 20.0, fiji.iter().map(|(n, p)| (n, *p)));
    assert_eq!(found.len(), 1);
    let pole = [("north", pt(89.99, 45.0))];
    assert_eq!(geo::within(pt(90.0, -135.0), 5.0, pole.iter().map(|(n, p)| (n, *p))).len(), 1);
}

#[tokio::test]
async fn nearest_centre_through_the_api() {
    let db = TestDb::sqlite();
    let (_gopuff, router) = open(&db).await;
    let (status, body) = get(&router, "/centers/nearest?lat=0&lon=0").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let london = center(&router, "London", 51.5074, -0.1278).await;
    let paris = center(&router, "Paris", 48.8566, 2.3522).await;
    let date_line = center(&router, "Date line", 0.0, 179.99).await;
    let pole = center(&router, "Pole", 90.0, 0.0).await;
    for (lat, lon, want) in [
        (50.8225, -0.1372, london),
        (48.8049, 2.1204, paris),
        (0.0, -179.99, date_line),
        (89.5, -170.0, pole),
        (-90.0, 0.0, date_line),
    ] {
        let (status, body) = get(&router, &format!("/centers/nearest?lat={lat}&lon={lon}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["center"]["id"], want, "from ({lat}, {lon}): {body}");
        assert!(body["distance_km"].as_f64().unwrap().is_finite());
    }
    // Centres page by cursor.
    let (_, page) = get(&router, "/centers?limit=3").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = get(&router, &format!("/centers?limit=3&cursor={cursor}")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], pole);
    assert_eq!(page["next_cursor"], Value::Null);
}

/// `x` as a client reads it back from the JSON the server wrote: serde_json's
/// default float parser can land an ulp away from the number written, the same way
/// for the same text, so equal server values compare equal after this.
fn via_json(x: f64) -> f64 {
    serde_json::from_str(&serde_json::to_string(&x).expect("finite")).expect("a number")
}

/// Random centres through the API; `/centers/nearest` and `/availability` answer as
/// the plain haversine scan over every stored centre answered before the index.
#[tokio::test]
async fn the_index_answers_as_the_scan_over_every_centre() {
    let db = TestDb::sqlite();
    let (gopuff, router) = open(&db).await;
    item(&router, "tea", 100).await;
    let mut rng = StdRng::seed_from_u64(7);
    // A city, its surroundings, the polar caps and the antimeridian.
    let place = |rng: &mut StdRng| match rng.random_range(0..4) {
        0 => (rng.random_range(40.6..40.9), rng.random_range(-74.1..-73.8)),
        1 => (rng.random_range(-60.0..60.0), rng.random_range(-180.0..=180.0)),
        2 => (
            rng.random_range(84.0..=90.0) * if rng.random() { 1.0 } else { -1.0 },
            rng.random_range(-180.0..=180.0),
        ),
        _ => (
            rng.random_range(-50.0..50.0),
            180.0 - rng.random_range(0.0..2.0) * if rng.random() { 1.0 } else { -1.0 },
        ),
    };
    for i in 0..150 {
        let (lat, lon): (f64, f64) = place(&mut rng);
        center(&router, &format!("dc{i}"), lat, lon.clamp(-180.0, 180.0)).await;
    }
    let centers = gopuff.store().all_centers().await.expect("centres");
    let points: Vec<_> = centers.iter().map(|c| (c, pt(c.lat, c.lon))).collect();
    for _ in 0..100 {
        let (lat, lon) = place(&mut rng);
        let from = pt(lat, lon.clamp(-180.0, 180.0));
        let (want, want_km) =
            geo::nearest(from, points.iter().map(|(c, p)| (*c, *p))).expect("some centre");
        let uri = format!("/centers/nearest?lat={}&lon={}", from.lat(), from.lon());
        let (status, body) = get(&router, &uri).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["center"]["id"], want.id, "from {from:?}: {body}");
        assert_eq!(body["distance_km"].as_f64(), Some(via_json(want_km)), "from {from:?}");

        let radius_km = rng.random_range(0.5..100.0);
        let want: Vec<(i64, f64)> =
            geo::within(from, radius_km, points.iter().map(|(c, p)| (*c, *p)))
                .into_iter()
                .map(|(c, d)| (c.id, via_json(d)))
                .collect();
        let (status, body) =
            get(&router, &availability_uri(from.lat(), from.lon(), radius_km, "tea")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let got: Vec<(i64, f64)> = body["centers"]
            .as_array()
            .expect("centers")
            .iter()
            .map(|c| (c["center_id"].as_i64().unwrap(), c["distance_km"].as_f64().unwrap()))
            .collect();
        assert_eq!(got, want, "within {radius_km} km of {from:?}");
    }
}

/// Every instance keeps its own index: a centre created on one is found on another
/// once that one's index is `centers_refresh_ms` old; a centre deleted in the
/// database directly disappears from both the same way.
#[tokio::test]
async fn other_instances_see_centres_within_the_refresh_bound() {
    for db in TestDb::all("other_instances_see_centres_within_the_refresh_bound").await {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let tweak = |c: &mut GoPuffConfig| c.centers_refresh_ms = 2_000;
        let a = open_with(&db, Arc::clone(&clock) as Arc<dyn Clock>, tweak).await;
        let b = open_with(&db, Arc::clone(&clock) as Arc<dyn Clock>, tweak).await;
        let (ra, rb) = (routed(&a), routed(&b));
        let dc = center(&ra, "London", 51.5074, -0.1278).await;
        let nearest = "/centers/nearest?lat=51.5&lon=-0.12";
        assert_eq!(get(&ra, nearest).await.1["center"]["id"], dc, "at once where it was created");
        let (status, body) = get(&rb, nearest).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "b has not reloaded yet: {body}");
        clock.advance(Duration::from_millis(1_999));
        assert_eq!(get(&rb, nearest).await.0, StatusCode::NOT_FOUND, "still within the bound");
        clock.advance(Duration::from_millis(1));
        assert_eq!(get(&rb, nearest).await.1["center"]["id"], dc, "reloaded at the bound");
        assert_eq!(b.nearby().len(), 1);

        let sql = "DELETE FROM gopuff_centers WHERE id = $1";
        match a.store().db() {
            Db::Sqlite(pool) => sqlx::query(sql).bind(dc).execute(pool).await.map(drop),
            Db::Postgres(pool) => sqlx::query(sql).bind(dc).execute(pool).await.map(drop),
        }
        .expect("delete");
        clock.advance(Duration::from_millis(2_000));
        for router in [&ra, &rb] {
            assert_eq!(get(router, nearest).await.0, StatusCode::NOT_FOUND, "gone after the bound");
        }
        // An operator can also reload at once.
        let paris = center(&ra, "Paris", 48.8566, 2.3522).await;
        b.refresh_centers().await.expect("reload");
        assert_eq!(get(&rb, nearest).await.1["center"]["id"], paris);
        db.drop_db().await;
    }
}

// ---------------------------------------------------------------- bad input

#[tokio::test]
async fn bad_input_is_a_4xx_problem_never_a_500() {
    for db in TestDb::all("bad_input_is_a_4xx_problem_never_a_500").await {
        let (gopuff, router) = open(&db).await;
        let dc = center(&router, "DC", 51.5, -0.12).await;
        item(&router, "pear", 90).await;
        stock(&router, dc, "pear", 50).await;
        let (status, placed) = post(
            &router,
            "/orders",
            &json!({"center_id": dc, "user": "ann", "items": [{"sku": "pear", "quantity": 1}]}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{placed}");
        let ann_order = placed["id"].as_i64().expect("order id");
        // Only its owner (and operators) can read an order.
        assert_eq!(get(&router, &format!("/orders/{ann_order}?user=ann")).await.0, StatusCode::OK);
        let (status, body) = get(&router, &format!("/orders/{ann_order}?user=bob")).await;
        assert_eq!(
            (status, body["type"].as_str()),
            (StatusCode::FORBIDDEN, Some("/problems/not-your-order"))
        );
        let order =
            |items: Value| json!({"center_id": dc, "user": "u", "items": items}).to_string();
        let line = |sku: &str, q: i64| json!({"sku": sku, "quantity": q});
        let many: Vec<Value> = (0..21).map(|i| line(&format!("s{i}"), 1)).collect();
        let fifty_one: Vec<String> = (0..51).map(|i| format!("s{i}")).collect();
        let table: Vec<(&str, String, Option<String>, u16, &str)> = vec![
            // Orders.
            ("POST", "/orders".into(), Some(json!({"center_id": 999_999, "user": "u", "items": [line("pear", 1)]}).to_string()), 404, "unknown-center"),
            ("POST", "/orders".into(), Some(order(json!([line("pear", 1), line("nope", 1)]))), 404, "unknown-sku"),
            ("POST", "/orders".into(), Some(json!({"center_id": 999_999, "user": "u", "items": [line("pear", 1)], "strategy": "optimistic"}).to_string()), 404, "unknown-center"),
            ("POST", "/orders".into(), Some(json!({"center_id": dc, "user": "u", "items": [line("nope", 1)], "strategy": "optimistic"}).to_string()), 404, "unknown-sku"),
            ("POST", "/orders".into(), Some(order(json!([line("pear", 0)]))), 422, "invalid-request"),
            ("POST", "/orders".into(), Some(order(json!([line("pear", -3)]))), 422, "invalid-request"),
            ("POST", "/orders".into(), Some(order(json!([line("pear", 101)]))), 422, "invalid-request"),
            ("POST", "/orders".into(), Some(order(json!([line("pear", i64::MAX)]))), 422, "invalid-request"),
            ("POST", "/orders".into(), Some(order(json!([line("pear", i64::MIN)]))), 422, "invalid-request"),
            ("POST", "/orders".into(), Some(order(json!([{"sku": "pear", "quantity": 1e30}]))), 422, "invalid-body"),
            ("POST", "/orders".into(), Some(order(json!([{"sku": "pear", "quantity": 1.5}]))), 422, "invalid-body"),
            ("POST", "/orders".into(), Some(order(json!([line("pear", 1), line("pear", 2)]))), 422, "invalid-request"),
            ("POST", "/orders".into(), Some(order(json!(many))), 422, "invalid-request"),
            ("POST", "/orders".into(), Some(order(json!([]))), 422, "invalid-request"),
            ("POST", "/orders".into(), Some(order(json!([line("", 1)]))), 422, "invalid-request"),
            ("POST", "/orders".into(), Some(order(json!([line("a b", 1)]))), 422, "invalid-request"),
            ("POST", "/orders".into(), Some(order(json!([line(&"x".repeat(65), 1)]))), 422, "invalid-request"),
            ("POST", "/orders".into(), Some(json!({"center_id": dc, "user": "u", "items": [line("pear", 1)], "strategy": "pessimistic"}).to_string()), 422, "invalid-body"),
            ("POST", "/orders?as=nobody".into(), Some(json!({"center_id": dc, "items": [line("pear", 1)]}).to_string()), 401, "unauthenticated"),
            ("POST", "/centers?user=u".into(), Some(json!({"name": "x", "lat": 1.0, "lon": 1.0}).to_string()), 403, "forbidden"),
            ("PUT", format!("/centers/{dc}/inventory/pear?user=u"), Some(json!({"quantity": 1}).to_string()), 403, "forbidden"),
            ("POST", "/items?as=nobody".into(), Some(json!({"sku": "kiwi", "name": "kiwi", "price_cents": 1}).to_string()), 401, "unauthenticated"),
            ("POST", "/orders".into(), Some(json!({"center_id": dc, "user": "u", "items": [line("pear", 1)], "extra": 1}).to_string()), 422, "invalid-body"),
            ("POST", "/orders".into(), Some(json!({"center_id": "x", "user": "u", "items": []}).to_string()), 422, "invalid-body"),
            ("POST", "/orders".into(), Some("{\"center_id\": 1,".into()), 400, "malformed-json"),
            ("POST", "/orders".into(), Some("not json".into()), 400, "malformed-json"),
            // Centres.
            ("POST", "/centers".into(), Some(json!({"name": "x", "lat": 90.5, "lon": 0}).to_string()), 422, "invalid-coordinates"),
            ("POST", "/centers".into(), Some(json!({"name": "x", "lat": -90.5, "lon": 0}).to_string()), 422, "invalid-coordinates"),
            ("POST", "/centers".into(), Some(json!({"name": "x", "lat": 0, "lon": 180.1}).to_string()), 422, "invalid-coordinates"),
            ("POST", "/centers".into(), Some(json!({"name": "x", "lat": 0, "lon": -1e300}).to_string()), 422, "invalid-coordinates"),
            ("POST", "/centers".into(), Some("{\"name\": \"x\", \"lat\": NaN, \"lon\": 0}".into()), 400, "malformed-json"),
            ("POST", "/centers".into(), Some(json!({"name": "x", "lat": "north", "lon": 0}).to_string()), 422, "invalid-body"),
            ("POST", "/centers".into(), Some(json!({"name": "", "lat": 0, "lon": 0}).to_string()), 422, "invalid-request"),
            ("POST", "/centers".into(), Some(json!({"name": "x".repeat(101), "lat": 0, "lon": 0}).to_string()), 422, "invalid-request"),
            ("GET", "/centers?limit=0".into(), None, 422, "invalid-limit"),
            ("GET", "/centers?limit=101".into(), None, 422, "invalid-limit"),
            ("GET", "/centers?cursor=garbage".into(), None, 400, "invalid-cursor"),
            ("GET", "/centers?limit=-1".into(), None, 400, "bad-query"),
            ("GET", "/centers/nearest?lat=91&lon=0".into(), None, 422, "invalid-coordinates"),
            ("GET", "/centers/nearest?lat=NaN&lon=0".into(), None, 422, "invalid-coordinates"),
            ("GET", "/centers/nearest?lat=0&lon=inf".into(), None, 422, "invalid-coordinates"),
            ("GET", "/centers/nearest?lat=abc&lon=0".into(), None, 400, "bad-query"),
            ("GET", "/centers/nearest?lat=0".into(), None, 400, "bad-query"),
            ("GET", "/centers/999999/orders".into(), None, 404, "unknown-center"),
            ("GET", "/centers/abc/orders".into(), None, 400, "bad-path"),
            // Items and inventory.
            ("POST", "/items".into(), Some(json!({"sku": "pear", "name": "p", "price_cents": 1}).to_string()), 409, "sku-taken"),
            ("POST", "/items".into(), Some(json!({"sku": "p q", "name": "p", "price_cents": 1}).to_string()), 422, "invalid-request"),
            ("POST", "/items".into(), Some(json!({"sku": "plum", "name": "p", "price_cents": -1}).to_string()), 422, "invalid-request"),
            ("POST", "/items".into(), Some(json!({"sku": "plum", "name": "p", "price_cents": 100_000_001}).to_string()), 422, "invalid-request"),
            ("PUT", format!("/centers/{dc}/inventory/pear"), Some(json!({"quantity": -1}).to_string()), 422, "invalid-request"),
            ("PUT", format!("/centers/{dc}/inventory/pear"), Some(json!({"quantity": 1_000_001}).to_string()), 422, "invalid-request"),
            ("PUT", format!("/centers/{dc}/inventory/nope"), Some(json!({"quantity": 1}).to_string()), 404, "unknown-sku"),
            ("PUT", format!("/centers/{dc}/inventory/a%20b"), Some(json!({"quantity": 1}).to_string()), 422, "invalid-request"),
            ("PUT", "/centers/999999/inventory/pear".into(), Some(json!({"quantity": 1}).to_string()), 404, "unknown-center"),
            ("PUT", format!("/centers/{dc}/inventory/pear"), Some(json!({"qty": 1}).to_string()), 422, "invalid-body"),
            ("POST", format!("/centers/{dc}/inventory/pear/restock"), Some(json!({"add": 0}).to_string()), 422, "invalid-request"),
            ("POST", format!("/centers/{dc}/inventory/pear/restock"), Some(json!({"add": 1_000_001}).to_string()), 422, "invalid-request"),
            ("POST", format!("/centers/{dc}/inventory/pear/restock"), Some(json!({"add": 999_999}).to_string()), 409, "stock-limit"),
            // Availability.
            ("GET", availability_uri(91.0, 0.0, 5.0, "pear"), None, 422, "invalid-coordinates"),
            ("GET", "/availability?lat=NaN&lon=0&radius_km=5&skus=pear".into(), None, 422, "invalid-coordinates"),
            ("GET", availability_uri(0.0, 0.0, 0.0, "pear"), None, 422, "invalid-request"),
            ("GET", availability_uri(0.0, 0.0, -1.0, "pear"), None, 422, "invalid-request"),
            ("GET", availability_uri(0.0, 0.0, 100.5, "pear"), None, 422, "invalid-request"),
            ("GET", "/availability?lat=0&lon=0&radius_km=inf&skus=pear".into(), None, 422, "invalid-request"),
            ("GET", availability_uri(0.0, 0.0, 5.0, ""), None, 422, "invalid-request"),
            ("GET", availability_uri(0.0, 0.0, 5.0, "pear,,plum"), None, 422, "invalid-request"),
            ("GET", availability_uri(0.0, 0.0, 5.0, &fifty_one.join(",")), None, 422, "invalid-request"),
            ("GET", "/availability?lat=0&lon=0&radius_km=5".into(), None, 400, "bad-query"),
            // Orders by id.
            ("GET", "/orders/abc".into(), None, 400, "bad-path"),
            ("GET", "/orders/999999".into(), None, 404, "unknown-order"),
            ("GET", "/orders/-1".into(), None, 404, "unknown-order"),
        ];
        for (method, uri, body, want, slug) in &table {
            let (status, problem) = call(&router, method, uri, body.as_deref()).await;
            assert_eq!(status.as_u16(), *want, "{method} {uri} {body:?}: {problem}");
            assert_eq!(
                problem["type"],
                format!("/problems/{slug}"),
                "{method} {uri} {body:?}: {problem}"
            );
            assert_eq!(problem["status"], *want);
        }
        // None of it touched the stock: only ann's one pear is gone.
        assert_eq!(db_stock(&gopuff, dc, "pear").await, 49);
        let (_, page) = get(&router, &format!("/centers/{dc}/orders")).await;
        assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
        db.drop_db().await;
    }
}

#[test]
fn openapi_describes_every_route() {
    use utoipa::OpenApi as _;
    let doc = girder_gopuff::GoPuffApi::openapi();
    let paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
    for want in [
        "/api/gopuff/centers",
        "/api/gopuff/centers/nearest",
        "/api/gopuff/centers/{id}/inventory/{sku}",
        "/api/gopuff/centers/{id}/inventory/{sku}/restock",
        "/api/gopuff/centers/{id}/orders",
        "/api/gopuff/items",
        "/api/gopuff/availability",
        "/api/gopuff/orders",
        "/api/gopuff/orders/{id}",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
}
