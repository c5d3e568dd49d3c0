//! News Feed through its router and its library, on SQLite and PostgreSQL: the
//! hybrid feed (push and pull merged, newest first, each post once, cursors), what
//! fan-out on write makes hard (deletes, unfollows, backfill, "new since"), jobs
//! delivered twice and fan-out left outstanding by a dead instance, feeds over three
//! shards, two instances whose workers are SIGKILLed mid-run, and a table of bad
//! input that must all be 4xx problems.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use girder_core::{Clock, ManualClock, SystemClock};
use girder_http::identity::{Role, test_bearer as bearer, test_tokens};
use girder_newsfeed::{NewsFeed, NewsFeedConfig};
use girder_sql::{Db, PoolConfig};
use girder_system::{Context, Shutdown, System};
use girder_testkit::backends::TestDb;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

// ---------------------------------------------------------------- plumbing

struct Instance {
    feed: Arc<NewsFeed>,
    router: Router,
    _data: tempfile::TempDir,
}

async fn open(
    db: &str,
    clock: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut NewsFeedConfig),
) -> Instance {
    let data = tempfile::tempdir().expect("data dir");
    let feed = open_in(db, data.path(), clock, tweak).await;
    let router = feed.api_router().layer(test_tokens().layer());
    Instance { feed, router, _data: data }
}

async fn open_in(
    db: &str,
    data: &std::path::Path,
    clock: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut NewsFeedConfig),
) -> Arc<NewsFeed> {
    let pool = Db::connect(db, PoolConfig::default()).await.expect("database");
    girder_sql::migrate::run(&pool, girder_sql::migrate::server()).await.expect("migrations");
    girder_sql::migrate::run(&pool, girder_newsfeed::migrations()).await.expect("migrations");
    let context = Context::new(pool, clock).with_data_dir(data);
    let mut config = NewsFeedConfig::new();
    tweak(&mut config);
    NewsFeed::open_with(&context, config).await.expect("open newsfeed")
}

/// Sends one request as `user` (an operator when `user` is "operator", nobody when
/// empty); returns the status and the JSON body (or `Null`).
async fn call(
    router: &Router,
    user: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    if !user.is_empty() {
        let role = if user == "operator" { Role::Operator } else { Role::User };
        request = request.header(header::AUTHORIZATION, bearer(user, role));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body)).expect("request"))
        .await
        .expect("router");
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

async fn post(i: &Instance, user: &str, body: &str) -> i64 {
    let (status, v) = call(&i.router, user, "POST", "/posts", Some(json!({ "body": body }))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["id"].as_i64().expect("id")
}

async fn follow(i: &Instance, user: &str, whom: &str) {
    let (status, v) = call(&i.router, user, "PUT", &format!("/follows/{whom}"), None).await;
    assert_eq!(status, StatusCode::OK, "{user} follows {whom}: {v}");
}

/// The whole feed of `user`, page by page (`limit` each), as (post id, source).
async fn whole_feed(i: &Instance, user: &str, limit: u32) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let uri = match &cursor {
            None => format!("/feed?limit={limit}"),
            Some(c) => format!("/feed?limit={limit}&cursor={c}"),
        };
        let (status, v) = call(&i.router, user, "GET", &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        for item in v["items"].as_array().expect("items") {
            out.push((
                item["post"]["id"].as_i64().expect("id"),
                item["source"].as_str().expect("source").to_owned(),
            ));
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("the feed of {user} did not end");
}

/// Runs `feed`'s workers until its queue is drained and no fan-out is outstanding.
async fn drain(feed: &Arc<NewsFeed>) {
    let (trigger, shutdown) = Shutdown::new();
    let running = tokio::spawn(Arc::clone(feed).run(shutdown));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = feed.jobs().stats().await.expect("stats");
        let outstanding = feed.graph().outstanding().await.expect("outstanding");
        if stats.ready == 0 && stats.in_flight == 0 && outstanding == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fan-out did not drain: {stats:?}, {outstanding} outstanding"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    trigger.fire();
    running.await.expect("workers stop");
}

fn ids(feed: &[(i64, String)]) -> Vec<i64> {
    feed.iter().map(|(id, _)| *id).collect()
}

fn assert_newest_first_once(feed: &[(i64, String)], who: &str) {
    let ids = ids(feed);
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(ids, sorted, "{who}'s feed is not newest first with each post once");
}

// ---------------------------------------------------------------- the feed

/// Below the threshold posts are pushed, at or above it pulled; a reader's feed
/// merges both newest first, each post once, the same through any page size, and
/// the reader's own posts are in it.
#[tokio::test]
async fn hybrid_feed_merges_push_and_pull_newest_first() {
    for db in TestDb::all("hybrid_feed_merges_push_and_pull_newest_first").await {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let i = open(db.url(), clock, |c| c.push_threshold = 3).await;
        for user in ["ann", "bob", "cat", "dan", "star"] {
            call(&i.router, user, "GET", "/feed", None).await;
        }
        // star has three followers: a pull author. bob has two: push.
        for fan in ["ann", "cat", "dan"] {
            follow(&i, fan, "star").await;
        }
        follow(&i, "ann", "bob").await;
        follow(&i, "cat", "bob").await;
        let (_, star) = call(&i.router, "ann", "GET", "/users/star", None).await;
        assert_eq!(star["fanout"], "pull", "{star}");
        let mut expected_ann = Vec::new();
        for n in 0..25 {
            let (author, kind) = if n % 3 == 0 { ("star", "pull") } else { ("bob", "push") };
            let id = post(&i, author, &format!("post {n} by {author}")).await;
            expected_ann.push((id, kind.to_owned()));
        }
        let own = post(&i, "ann", "my own").await;
        expected_ann.push((own, "push".to_owned()));
        drain(&i.feed).await;
        expected_ann.sort_by_key(|e| std::cmp::Reverse(e.0));
        for limit in [1, 7, 20, 100] {
            let feed = whole_feed(&i, "ann", limit).await;
            assert_eq!(feed, expected_ann, "{} ann's feed in pages of {limit}", db.engine());
        }
        // dan follows only star: pull posts only. bob's own feed: his push posts.
        let dan = whole_feed(&i, "dan", 20).await;
        assert!(dan.iter().all(|(_, s)| s == "pull") && dan.len() == 9, "{dan:?}");
        let bob = whole_feed(&i, "bob", 20).await;
        assert_eq!(bob.len(), 16, "{bob:?}");
        assert_newest_first_once(&bob, "bob");
        // A cursor from ann's feed is refused on dan's.
        let (_, page) = call(&i.router, "ann", "GET", "/feed?limit=2", None).await;
        let cursor = page["next_cursor"].as_str().expect("a cursor");
        let (status, v) =
            call(&i.router, "dan", "GET", &format!("/feed?cursor={cursor}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["type"].as_str().map(|t| t.ends_with("invalid-cursor")), Some(true), "{v}");
        db.drop_db().await;
    }
}

/// A deleted post leaves every feed at once, cached first page included, and its
/// entries are then removed; an unfollow hides the author at once and removes the
/// entries; following again brings recent posts back; "new since" counts what arrived.
#[tokio::test]
async fn deletes_unfollows_backfill_and_new_since() {
    for db in TestDb::all("deletes_unfollows_backfill_and_new_since").await {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let i = open(db.url(), clock, |c| c.push_threshold = 100).await;
        for user in ["ann", "bob"] {
            call(&i.router, user, "GET", "/feed", None).await;
        }
        follow(&i, "ann", "bob").await;
        let first = post(&i, "bob", "one").await;
        let second = post(&i, "bob", "two").await;
        drain(&i.feed).await;
        // The first page is cached now.
        assert_eq!(ids(&whole_feed(&i, "ann", 20).await), vec![second, first]);
        let (status, _) = call(&i.router, "ann", "DELETE", &format!("/posts/{second}"), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "only the author deletes");
        let (status, _) = call(&i.router, "bob", "DELETE", &format!("/posts/{second}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(ids(&whole_feed(&i, "ann", 20).await), vec![first], "deleted post still shown");
        let (status, _) = call(&i.router, "ann", "GET", &format!("/posts/{second}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        drain(&i.feed).await;
        let entries: i64 =
            i.feed.feeds().counts().await.expect("counts").iter().map(|(_, n)| n).sum();
        assert_eq!(entries, 2, "the retracted entries are removed (ann's and bob's copies of one)");

        // "new since" the top of ann's feed.
        let third = post(&i, "bob", "three").await;
        let _fourth = post(&i, "bob", "four").await;
        drain(&i.feed).await;
        let (_, n) = call(&i.router, "ann", "GET", &format!("/feed/new?since={first}"), None).await;
        assert_eq!(n, json!({ "count": 2, "more": false }));
        let (_, n) = call(&i.router, "ann", "GET", &format!("/feed/new?since={third}"), None).await;
        assert_eq!(n["count"], 1);

        // Unfollow: hidden at once, then removed; follow again: backfilled.
        let (status, _) = call(&i.router, "ann", "DELETE", "/follows/bob", None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(whole_feed(&i, "ann", 20).await.is_empty(), "unfollowed author still shown");
        drain(&i.feed).await;
        let (_, ann_shard) = i.feed.feeds().shard_of("ann").expect("shard");
        let left: i64 = match ann_shard {
            Db::Sqlite(p) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM nf_feed WHERE owner = 'ann'")
                    .fetch_one(p)
                    .await
            }
            Db::Postgres(p) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM nf_feed WHERE owner = 'ann'")
                    .fetch_one(p)
                    .await
            }
        }
        .expect("count");
        assert_eq!(left, 0, "unfollowed author's entries are removed");
        follow(&i, "ann", "bob").await;
        drain(&i.feed).await;
        assert_eq!(whole_feed(&i, "ann", 20).await.len(), 3, "follow backfills recent posts");
        db.drop_db().await;
    }
}

/// A job delivered twice (its worker died after writing) and a post whose job was
/// never enqueued (its instance died between commit and enqueue) both end with each
/// entry exactly once.
#[tokio::test]
async fn redelivered_and_swept_fanout_writes_each_entry_once() {
    for db in TestDb::all("redelivered_and_swept_fanout_writes_each_entry_once").await {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let i =
            open(db.url(), Arc::clone(&clock) as Arc<dyn Clock>, |c| c.visibility_ms = 1_000).await;
        for user in ["ann", "bob", "cat"] {
            call(&i.router, user, "GET", "/feed", None).await;
        }
        follow(&i, "ann", "bob").await;
        follow(&i, "cat", "bob").await;
        drain(&i.feed).await;
        let id = post(&i, "bob", "twice").await;
        // A worker takes the job and dies without acknowledging.
        let taken = i.feed.jobs().take(1, Duration::from_millis(1_000)).await.expect("take");
        assert_eq!(taken.len(), 1);
        clock.advance(Duration::from_millis(2_000));
        drain(&i.feed).await;
        // A post committed whose job never reached the queue.
        let orphan = i
            .feed
            .graph()
            .insert_post("bob", "orphan", girder_newsfeed::graph::Fanout::Push, 1_700_000_002_000)
            .await
            .expect("insert");
        assert_eq!(i.feed.graph().outstanding().await.expect("outstanding"), 1);
        clock.advance(Duration::from_millis(60_000));
        let swept = girder_newsfeed::sweep_once(&i.feed, 30_000).await.expect("sweep");
        assert_eq!(swept, 1);
        assert_eq!(
            girder_newsfeed::sweep_once(&i.feed, 30_000).await.expect("sweep"),
            0,
            "claimed once"
        );
        drain(&i.feed).await;
        for user in ["ann", "bob", "cat"] {
            assert_eq!(ids(&whole_feed(&i, user, 20).await), vec![orphan.id, id], "{user}");
        }
        let entries: i64 =
            i.feed.feeds().counts().await.expect("counts").iter().map(|(_, n)| n).sum();
        assert_eq!(entries, 6);
        db.drop_db().await;
    }
}

/// Feeds over three SQLite shard files: each owner's entries on their jump-hash
/// shard, every shard used, every feed complete.
#[tokio::test]
async fn feeds_spread_over_three_shards() {
    let shards = tempfile::tempdir().expect("shards");
    let urls: Vec<String> = (0..3)
        .map(|n| format!("sqlite:{}", shards.path().join(format!("feed-{n}.db")).display()))
        .collect();
    let db = TestDb::sqlite();
    let i = open(db.url(), Arc::new(SystemClock), |c| c.feed_shards = urls.clone()).await;
    assert_eq!(i.feed.feeds().shard_count(), 3);
    call(&i.router, "author", "GET", "/feed", None).await;
    let readers: Vec<String> = (0..60).map(|n| format!("reader-{n}")).collect();
    for r in &readers {
        follow(&i, r, "author").await;
    }
    let mut posted = Vec::new();
    for n in 0..5 {
        posted.push(post(&i, "author", &format!("p{n}")).await);
    }
    drain(&i.feed).await;
    posted.reverse();
    for r in &readers {
        assert_eq!(ids(&whole_feed(&i, r, 3).await), posted, "{r}");
    }
    let counts = i.feed.feeds().counts().await.expect("counts");
    assert!(counts.iter().all(|(_, n)| *n > 0), "an unused shard: {counts:?}");
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<i64>(), 61 * 5);
}

/// Bad input: every answer a 4xx problem, nothing stored changed.
#[tokio::test]
async fn bad_input_gets_problems() {
    let db = TestDb::sqlite();
    let i = open(db.url(), Arc::new(ManualClock::new(1_700_000_000_000)), |_| {}).await;
    call(&i.router, "bob", "GET", "/feed", None).await;
    let id = post(&i, "bob", "keep me").await;
    let long = "x".repeat(2_001);
    let cases: Vec<(&str, &str, String, Option<Value>, StatusCode)> = vec![
        ("ann", "PUT", "/follows/ann".into(), None, StatusCode::UNPROCESSABLE_ENTITY),
        ("ann", "PUT", "/follows/nobody-here".into(), None, StatusCode::NOT_FOUND),
        ("ann", "PUT", "/follows/bad%20id".into(), None, StatusCode::UNPROCESSABLE_ENTITY),
        ("", "PUT", "/follows/bob".into(), None, StatusCode::UNAUTHORIZED),
        (
            "ann",
            "POST",
            "/posts".into(),
            Some(json!({ "body": "" })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "ann",
            "POST",
            "/posts".into(),
            Some(json!({ "body": "   " })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "ann",
            "POST",
            "/posts".into(),
            Some(json!({ "body": long })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "ann",
            "POST",
            "/posts".into(),
            Some(json!({ "body": "a\u{7}b" })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "ann",
            "POST",
            "/posts".into(),
            Some(json!({ "text": "x" })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("ann", "GET", "/feed?limit=0".into(), None, StatusCode::UNPROCESSABLE_ENTITY),
        ("ann", "GET", "/feed?limit=101".into(), None, StatusCode::UNPROCESSABLE_ENTITY),
        ("ann", "GET", "/feed?cursor=garbage".into(), None, StatusCode::BAD_REQUEST),
        ("ann", "GET", "/feed/new?since=-1".into(), None, StatusCode::UNPROCESSABLE_ENTITY),
        ("ann", "DELETE", format!("/posts/{id}"), None, StatusCode::FORBIDDEN),
        ("ann", "DELETE", "/posts/999999".into(), None, StatusCode::NOT_FOUND),
        ("ann", "GET", "/posts/abc".into(), None, StatusCode::BAD_REQUEST),
        ("ann", "GET", "/users/nobody-here".into(), None, StatusCode::NOT_FOUND),
        ("ann", "GET", "/queue".into(), None, StatusCode::FORBIDDEN),
        ("operator", "POST", "/queue/dead/12345/redrive".into(), None, StatusCode::NOT_FOUND),
    ];
    for (user, method, uri, body, want) in cases {
        let (status, v) = call(&i.router, user, method, &uri, body).await;
        assert_eq!(status, want, "{user} {method} {uri}: {v}");
    }
    let (status, v) = call(&i.router, "bob", "GET", &format!("/posts/{id}"), None).await;
    assert_eq!((status, v["body"].as_str()), (StatusCode::OK, Some("keep me")));
    let (status, q) = call(&i.router, "operator", "GET", "/queue", None).await;
    assert_eq!(status, StatusCode::OK, "{q}");
}

/// With NATS, the fan-out queue is one JetStream queue shared by every instance:
/// posts taken by one instance are fanned out by another's workers.
#[tokio::test]
async fn with_nats_one_instance_posts_and_another_fans_out() {
    let Some(nats) = girder_core::services::require(
        girder_core::services::Service::Nats,
        "with_nats_one_instance_posts_and_another_fans_out",
    ) else {
        return;
    };
    let db = TestDb::sqlite();
    let queue = format!("nf-test-{}", std::process::id() ^ rand_suffix());
    let open_shared = |dir: &std::path::Path| {
        let (url, dir, queue, nats) =
            (db.url().to_owned(), dir.to_owned(), queue.clone(), nats.clone());
        async move {
            let pool = Db::connect(&url, PoolConfig::default()).await.expect("database");
            girder_sql::migrate::run(&pool, girder_sql::migrate::server())
                .await
                .expect("migrations");
            girder_sql::migrate::run(&pool, girder_newsfeed::migrations())
                .await
                .expect("migrations");
            let context =
                Context::new(pool, Arc::new(SystemClock)).with_data_dir(dir).with_nats(nats);
            let config =
                NewsFeedConfig { queue_name: queue, visibility_ms: 2_000, ..NewsFeedConfig::new() };
            NewsFeed::open_with(&context, config).await.expect("open newsfeed on NATS")
        }
    };
    let (dir_a, dir_b) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
    let a = open_shared(dir_a.path()).await;
    let b = open_shared(dir_b.path()).await;
    assert_eq!(a.jobs().backend_name(), "jetstream");
    for reader in ["r1", "r2", "r3"] {
        a.touch(reader).await.expect("touch");
    }
    a.touch("writer").await.expect("touch");
    for reader in ["r1", "r2", "r3"] {
        a.follow(reader, "writer").await.expect("follow");
    }
    let mut posted = Vec::new();
    for n in 0..10 {
        posted.push(a.post("writer", &format!("p{n}")).await.expect("post").id);
    }
    // Only b's workers run.
    drain(&b).await;
    posted.reverse();
    for reader in ["r1", "r2", "r3"] {
        let page = a.feed(reader, Some(i64::MAX), 50).await.expect("feed");
        let got: Vec<i64> = page.items.iter().map(|i| i.post.id).collect();
        assert_eq!(got, posted, "{reader}");
    }
    assert_eq!(a.jobs().stats().await.expect("stats").ready, 0, "one queue: b drained a's jobs");
    let mut config = girder_log::queue::jetstream::JetStreamConfig::new(queue);
    config.groups = vec![girder_newsfeed::fanout::GROUP.to_owned()];
    let leftover =
        girder_log::queue::jetstream::JetStreamQueue::connect(&nats, config, Arc::new(SystemClock))
            .await
            .expect("the test's queue");
    leftover.delete().await.expect("delete the test's streams");
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

// ---------------------------------------------------------------- two instances, SIGKILL

const CHILD: &str = "GIRDER_NEWSFEED_CHILD";
const AUTHORS: usize = 6;
const READERS: usize = 30;

/// A child instance: posts `posts` times (round-robin over its authors) while its
/// workers fan out, printing `POSTED <id>` for each acknowledged post, then keeps
/// working until killed.
fn child(spec: &str) {
    let mut parts = spec.split('|');
    let (Some(db), Some(data), Some(side), Some(posts)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("bad child spec {spec:?}");
    };
    let side: usize = side.parse().expect("side");
    let posts: usize = posts.parse().expect("posts");
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let feed = open_in(db, std::path::Path::new(data), Arc::new(SystemClock), |c| {
            c.workers = 2;
            c.visibility_ms = 1_000;
            c.sweep_interval_ms = 200;
            c.sweep_grace_ms = 1_000;
        })
        .await;
        let (_trigger, shutdown) = Shutdown::new();
        tokio::spawn(Arc::clone(&feed).run(shutdown));
        for n in 0..posts {
            let author = format!("author-{}", side * AUTHORS / 2 + n % (AUTHORS / 2));
            let post = feed.post(&author, &format!("{side}:{n}")).await.expect("post");
            println!("POSTED {}", post.id);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        println!("DONE");
        std::future::pending::<()>().await;
    });
}

fn spawn_child(
    db: &str,
    data: &std::path::Path,
    side: usize,
    posts: usize,
) -> (std::process::Child, std::thread::JoinHandle<Vec<String>>) {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "two_instances_with_sigkilled_workers_deliver_each_post_once",
            "--nocapture",
        ])
        .env(CHILD, format!("{db}|{}|{side}|{posts}", data.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>()
    });
    (child, lines)
}

/// Two instances on one database, each posting and fanning out; one is SIGKILLed
/// three times mid-run and restarted, the other once and not. In the end every
/// reader's feed holds each post of the authors they follow exactly once, newest
/// first — including posts the killed instance stored but never fanned out.
#[test]
fn two_instances_with_sigkilled_workers_deliver_each_post_once() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dbs = runtime
        .block_on(TestDb::all("two_instances_with_sigkilled_workers_deliver_each_post_once"));
    for db in dbs {
        let data_a = tempfile::tempdir().expect("a");
        let data_b = tempfile::tempdir().expect("b");
        let data_parent = tempfile::tempdir().expect("parent");
        // The graph: reader r follows authors r % AUTHORS and (r + 1) % AUTHORS.
        let parent = runtime.block_on(async {
            let feed = open_in(db.url(), data_parent.path(), Arc::new(SystemClock), |_| {}).await;
            for a in 0..AUTHORS {
                feed.touch(&format!("author-{a}")).await.expect("touch");
            }
            for r in 0..READERS {
                for a in [r % AUTHORS, (r + 1) % AUTHORS] {
                    feed.follow(&format!("reader-{r}"), &format!("author-{a}"))
                        .await
                        .expect("follow");
                }
            }
            feed
        });
        let mut posted = BTreeSet::new();
        let collect = |lines: Vec<String>, posted: &mut BTreeSet<i64>| {
            for line in lines {
                if let Some(id) = line.strip_prefix("POSTED ").and_then(|s| s.parse().ok()) {
                    posted.insert(id);
                }
            }
        };
        let (mut b, b_lines) = spawn_child(db.url(), data_b.path(), 1, 150);
        for round in 0..3u64 {
            let (mut a, a_lines) = spawn_child(db.url(), data_a.path(), 0, 60);
            std::thread::sleep(Duration::from_millis(400 + round * 150));
            a.kill().expect("SIGKILL a");
            a.wait().expect("reaped");
            collect(a_lines.join().expect("a lines"), &mut posted);
        }
        std::thread::sleep(Duration::from_millis(300));
        b.kill().expect("SIGKILL b");
        b.wait().expect("reaped");
        collect(b_lines.join().expect("b lines"), &mut posted);
        // A restarted instance finishes what its queue holds; the sweeper what no
        // queue holds.
        let (mut a, a_lines) = spawn_child(db.url(), data_a.path(), 0, 0);
        let (mut b, b_lines) = spawn_child(db.url(), data_b.path(), 1, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let outstanding = runtime.block_on(parent.graph().outstanding()).expect("outstanding");
            if outstanding == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{outstanding} posts never fanned out");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Jobs already done may still be in a queue (a backfill, a repeat): let them run.
        std::thread::sleep(Duration::from_millis(1_500));
        for child in [&mut a, &mut b] {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
        drop((a_lines.join(), b_lines.join()));
        assert!(posted.len() > 100, "too few posts acknowledged: {}", posted.len());
        runtime.block_on(async {
            // Every stored post, acknowledged or not, by author.
            let mut by_author: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for a in 0..AUTHORS {
                let author = format!("author-{a}");
                let mut before = None;
                loop {
                    let page = parent.graph().posts_by(&author, before, 100).await.expect("posts");
                    let done = page.len() < 100;
                    before = page.last().map(|p| p.id);
                    by_author.entry(author.clone()).or_default().extend(page.iter().map(|p| p.id));
                    if done {
                        break;
                    }
                }
            }
            let stored: BTreeSet<i64> = by_author.values().flatten().copied().collect();
            assert!(posted.is_subset(&stored), "an acknowledged post was lost");
            for r in 0..READERS {
                let reader = format!("reader-{r}");
                let mut want: Vec<i64> = [r % AUTHORS, (r + 1) % AUTHORS]
                    .iter()
                    .flat_map(|a| by_author[&format!("author-{a}")].clone())
                    .collect();
                want.sort_unstable_by(|x, y| y.cmp(x));
                let mut got = Vec::new();
                let mut before = i64::MAX;
                loop {
                    let page = parent.feed(&reader, Some(before), 100).await.expect("feed");
                    got.extend(page.items.iter().map(|i| i.post.id));
                    match page.next_before {
                        Some(b) => before = b,
                        None => break,
                    }
                }
                assert_eq!(got, want, "{} {reader}: each post once, newest first", db.engine());
            }
        });
        runtime.block_on(db.drop_db());
    }
}
