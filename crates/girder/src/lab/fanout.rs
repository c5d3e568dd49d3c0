//! `girder lab fanout` — Pre-computation's trade-off in a news feed, measured: fan-out
//! on write (push) makes reads one indexed range scan and pays a write per follower;
//! fan-out on read (pull) writes nothing and pays a join over everyone followed at
//! each read; the hybrid pushes authors below a follower threshold `T` and pulls the
//! rest. Which `T` is best depends on the graph, so the lab measures it.
//!
//! **Workload.** A power-law follower graph: each of `users` users follows 5–35
//! others drawn Zipf (s = 1) over popularity ranks, so a few accounts have most
//! users as followers. Authors are drawn by popularity (Zipf, s =
//! 0.5: popular accounts post more, as they do), at a fixed open-loop rate, while
//! readers drawn uniformly read their feed's first page (uncached: the cost measured
//! is the feed's assembly, not the cache) at a fixed rate.
//!
//! **Per mode** (pure push, pure pull, hybrid at several `T`), on a fresh copy of the
//! same SQLite graph, through News Feed itself (its workers, its durable queue, its
//! read path): write amplification (feed entries written per post), fan-out lag
//! (post to fan-out complete, p50/p99), and feed-read latency (p50/p99).
//!
//! **Best `T`.** The threshold minimising `write_amp / write_amp(push) + read_p99 /
//! read_p99(push)`: each cost relative to pure push, weighted equally. A deployment
//! that values reads more would weight them more; the table has what it needs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use girder_core::SystemClock;
use girder_newsfeed::{NewsFeed, NewsFeedConfig};
use girder_sql::{Db, PoolConfig};
use girder_system::{Context, Shutdown, System};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{LabContext, Plot, Report, Series, percentile_us};
use crate::loadtest::zipf::Zipf;

/// The shape of one run.
#[derive(Debug, Clone, Copy)]
struct Shape {
    users: usize,
    posts_per_s: u64,
    seconds: u64,
    reads_per_s: u64,
}

/// One mode's results.
struct Outcome {
    label: String,
    threshold: i64,
    posts: i64,
    pulled: i64,
    entries: i64,
    lag_ms: Vec<u64>,
    read_ns: Vec<u64>,
    read_errors: u64,
}

impl Outcome {
    fn write_amp(&self) -> f64 {
        self.entries as f64 / self.posts.max(1) as f64
    }
}

/// How much more popular accounts post: Zipf exponent over popularity ranks.
const AUTHOR_SKEW: f64 = 0.5;

/// History before the measured window, as a multiple of the window's posts.
const HISTORY_FACTOR: u64 = 20;

/// Feed shards (SQLite files beside the graph's).
const FEED_SHARDS: usize = 4;

/// Rows per bulk insert while loading the graph.
const LOAD_ROWS: usize = 400;

/// Builds the graph once into `path` (a SQLite file); every mode starts from a copy.
async fn build_graph(
    path: &std::path::Path,
    users: usize,
    rng: &mut StdRng,
) -> anyhow::Result<(usize, Vec<i64>)> {
    let url = format!("sqlite:{}", path.display());
    let db = Db::connect(&url, PoolConfig::default()).await.context("graph database")?;
    girder_sql::migrate::run(&db, girder_sql::migrate::server()).await?;
    girder_sql::migrate::run(&db, girder_newsfeed::migrations()).await?;
    let Db::Sqlite(pool) = &db else { anyhow::bail!("the lab's graph is SQLite") };
    let popularity = Zipf::new(users, 1.0);
    let mut followers = vec![0i64; users];
    let mut following = vec![0i64; users];
    let mut edges: Vec<(usize, usize)> = Vec::new();
    for (u, follows) in following.iter_mut().enumerate() {
        let k = rng.random_range(5..=35usize).min(users - 1);
        let mut chosen = BTreeSet::new();
        let mut tries = 0;
        while chosen.len() < k && tries < k * 20 {
            tries += 1;
            let v = popularity.sample(rng);
            if v != u {
                chosen.insert(v);
            }
        }
        for v in chosen {
            edges.push((u, v));
            followers[v] += 1;
            *follows += 1;
        }
    }
    let mut tx = pool.begin().await?;
    for chunk in (0..users).collect::<Vec<_>>().chunks(LOAD_ROWS) {
        let values: Vec<String> = chunk
            .iter()
            .map(|u| format!("('u{u}', {}, {}, 0)", followers[*u], following[*u]))
            .collect();
        sqlx::query(&format!(
            "INSERT INTO nf_users (id, followers, following, created_ms) VALUES {}",
            values.join(",")
        ))
        .execute(&mut *tx)
        .await?;
    }
    for chunk in edges.chunks(LOAD_ROWS) {
        let values: Vec<String> =
            chunk.iter().map(|(u, v)| format!("('u{u}', 'u{v}', 0)")).collect();
        sqlx::query(&format!(
            "INSERT INTO nf_follows (follower, followee, since_ms) VALUES {}",
            values.join(",")
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    sqlx::query("VACUUM").execute(pool).await?;
    db.close().await;
    Ok((edges.len(), followers))
}

/// Runs one mode on a copy of the graph.
async fn run_mode(
    graph: &std::path::Path,
    scratch: &std::path::Path,
    label: &str,
    threshold: i64,
    shape: Shape,
    followers: &[i64],
    seed: u64,
) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir_in(scratch)?;
    let file = dir.path().join("feed.db");
    std::fs::copy(graph, &file)?;
    let db = Db::connect(&format!("sqlite:{}", file.display()), PoolConfig::default()).await?;
    let window_start_ms = load_history(&db, threshold, shape, followers, seed).await?;
    let context = Context::new(db.clone(), Arc::new(SystemClock)).with_data_dir(dir.path());
    // The feeds on shards of their own (as a deployment would put them), so fan-out
    // writes do not hold the graph's write lock.
    let feed_shards = (0..FEED_SHARDS)
        .map(|n| format!("sqlite:{}", dir.path().join(format!("feed-{n}.db")).display()))
        .collect();
    let config = NewsFeedConfig {
        push_threshold: threshold,
        workers: 2,
        worker_batch: 8,
        feed_shards,
        ..NewsFeedConfig::new()
    };
    let feed = NewsFeed::open_with(&context, config).await.map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let (trigger, shutdown) = Shutdown::new();
    let background = tokio::spawn(Arc::clone(&feed).run(shutdown));

    let authors = Zipf::new(shape.users, AUTHOR_SKEW);
    let mut rng = StdRng::seed_from_u64(seed);
    let total = shape.posts_per_s * shape.seconds;
    let post_gap = Duration::from_secs_f64(1.0 / shape.posts_per_s as f64);
    let reads = {
        let feed = Arc::clone(&feed);
        let users = shape.users;
        let gap = Duration::from_secs_f64(1.0 / shape.reads_per_s as f64);
        let span = Duration::from_secs(shape.seconds);
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
            let mut tasks = tokio::task::JoinSet::new();
            let started = Instant::now();
            let mut next = started;
            while started.elapsed() < span {
                let reader = format!("u{}", rng.random_range(0..users));
                let feed = Arc::clone(&feed);
                tasks.spawn(async move {
                    let t = Instant::now();
                    let ok = feed.feed(&reader, Some(i64::MAX), 20).await.is_ok();
                    (t.elapsed().as_nanos() as u64, ok)
                });
                next += gap;
                tokio::time::sleep_until(next.into()).await;
            }
            let (mut samples, mut errors) = (Vec::new(), 0u64);
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok((ns, true)) => samples.push(ns),
                    _ => errors += 1,
                }
            }
            (samples, errors)
        })
    };
    let mut posting = tokio::task::JoinSet::new();
    let started = Instant::now();
    let mut next = started;
    for n in 0..total {
        let author = format!("u{}", authors.sample(&mut rng));
        let feed = Arc::clone(&feed);
        posting.spawn(async move { feed.post(&author, &format!("post {n}")).await.map(|_| ()) });
        next += post_gap;
        tokio::time::sleep_until(next.into()).await;
    }
    while let Some(joined) = posting.join_next().await {
        joined?.map_err(|e| anyhow::anyhow!("posting: {e}"))?;
    }
    let (read_ns, read_errors) = reads.await?;
    // Wait for the fan-out to finish.
    let deadline = Instant::now() + Duration::from_secs(600);
    while feed.graph().outstanding().await? > 0 {
        anyhow::ensure!(Instant::now() < deadline, "{label}: fan-out did not finish in 10 minutes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    trigger.fire();
    background.await?;
    let Db::Sqlite(pool) = &db else { anyhow::bail!("the lab's graph is SQLite") };
    let (posts, pulled): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN fanout = 'pull' THEN 1 ELSE 0 END), 0) \
         FROM nf_posts WHERE created_ms >= $1",
    )
    .bind(window_start_ms)
    .fetch_one(pool)
    .await?;
    let entries: i64 = feed.feeds().counts().await?.iter().map(|(_, n)| n).sum();
    let lags: Vec<i64> = sqlx::query_scalar(
        "SELECT fanout_done_ms - created_ms FROM nf_posts WHERE fanout = 'push' AND created_ms >= $1",
    )
    .bind(window_start_ms)
    .fetch_all(pool)
    .await?;
    drop(feed);
    db.close().await;
    Ok(Outcome {
        label: label.to_owned(),
        threshold,
        posts,
        pulled,
        entries,
        lag_ms: lags.into_iter().map(|l| l.max(0) as u64).collect(),
        read_ns,
        read_errors,
    })
}

/// Posts made before the measured window: `HISTORY_FACTOR` times the window's, by
/// the same authors, pushed or pulled by the mode's threshold. A pull read's cost grows
/// with how much its followees posted, so without a history pure pull would look as
/// cheap as an empty database. Pushed history is not materialized into feeds: a push
/// read is one index range scan whatever the feed's length, so its cost does not
/// depend on it (and the window's entries per post are what is counted). Returns when
/// the window starts (Unix ms).
async fn load_history(
    db: &Db,
    threshold: i64,
    shape: Shape,
    followers: &[i64],
    seed: u64,
) -> anyhow::Result<i64> {
    let Db::Sqlite(pool) = db else { anyhow::bail!("the lab's graph is SQLite") };
    let now_ms = i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis(),
    )?;
    let history = shape.posts_per_s * shape.seconds * HISTORY_FACTOR;
    let authors = Zipf::new(shape.users, AUTHOR_SKEW);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x4157);
    let mut tx = pool.begin().await?;
    let mut values = Vec::with_capacity(LOAD_ROWS);
    for n in 0..history {
        let author = authors.sample(&mut rng);
        let mode = if followers[author] >= threshold { "pull" } else { "push" };
        // Spread over the day before the window.
        let at = now_ms - 86_400_000 + (n as i64 * 86_400_000 / history as i64);
        values.push(format!("('u{author}', 'history {n}', {at}, '{mode}', {at})"));
        if values.len() == LOAD_ROWS || n + 1 == history {
            sqlx::query(&format!(
                "INSERT INTO nf_posts (author, body, created_ms, fanout, fanout_done_ms) VALUES {}",
                values.join(",")
            ))
            .execute(&mut *tx)
            .await?;
            values.clear();
        }
    }
    sqlx::query(
        "UPDATE nf_users SET pull_posts = (SELECT COUNT(*) FROM nf_posts p \
         WHERE p.author = nf_users.id AND p.fanout = 'pull') \
         WHERE id IN (SELECT DISTINCT author FROM nf_posts WHERE fanout = 'pull')",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(now_ms)
}

fn quantile_ms(samples: &[u64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    s[((s.len() - 1) as f64 * p).round() as usize] as f64
}

pub(super) async fn run(ctx: &LabContext) -> anyhow::Result<Report> {
    let shape = if ctx.options.quick {
        Shape { users: 3_000, posts_per_s: 300, seconds: 2, reads_per_s: 100 }
    } else {
        Shape { users: 100_000, posts_per_s: 1_000, seconds: 5, reads_per_s: 200 }
    };
    let thresholds: &[i64] = if ctx.options.quick { &[30, 300] } else { &[100, 1_000, 10_000] };
    std::fs::create_dir_all(&ctx.options.out_dir)?;
    let scratch = tempfile::tempdir_in(&ctx.options.out_dir)?;
    let graph = scratch.path().join("graph.db");
    ctx.phase("building the follower graph", 1);
    let mut rng = StdRng::seed_from_u64(12);
    let (edges, followers) = build_graph(&graph, shape.users, &mut rng).await?;
    ctx.progress.inc(1);
    let max_followers = followers.iter().copied().max().unwrap_or(0);
    let mut modes: Vec<(String, i64)> = vec![("push".into(), 100_000_000), ("pull".into(), 0)];
    modes.extend(thresholds.iter().map(|t| (format!("hybrid T={t}"), *t)));
    ctx.phase("modes", modes.len() as u64);
    let mut outcomes = Vec::new();
    for (label, threshold) in &modes {
        outcomes
            .push(run_mode(&graph, scratch.path(), label, *threshold, shape, &followers, 7).await?);
        ctx.progress.inc(1);
    }

    let push = &outcomes[0];
    let push_read_p99 = percentile_us(&mut push.read_ns.clone(), 0.99);
    let score = |o: &Outcome| {
        o.write_amp() / push.write_amp().max(f64::MIN_POSITIVE)
            + percentile_us(&mut o.read_ns.clone(), 0.99) / push_read_p99
    };
    let best = outcomes[2..]
        .iter()
        .min_by(|a, b| score(a).total_cmp(&score(b)))
        .context("no hybrid threshold ran")?;
    let columns = [
        "mode",
        "posts",
        "pulled",
        "entries/post",
        "fan-out lag p50 ms",
        "lag p99 ms",
        "read p50 ms",
        "read p99 ms",
        "reads",
        "score",
    ];
    let rows = outcomes
        .iter()
        .map(|o| {
            vec![
                o.label.clone(),
                o.posts.to_string(),
                o.pulled.to_string(),
                format!("{:.1}", o.write_amp()),
                format!("{:.0}", quantile_ms(&o.lag_ms, 0.5)),
                format!("{:.0}", quantile_ms(&o.lag_ms, 0.99)),
                format!("{:.2}", percentile_us(&mut o.read_ns.clone(), 0.5) / 1e3),
                format!("{:.2}", percentile_us(&mut o.read_ns.clone(), 0.99) / 1e3),
                format!(
                    "{}{}",
                    o.read_ns.len(),
                    if o.read_errors > 0 {
                        format!(" ({} failed)", o.read_errors)
                    } else {
                        String::new()
                    }
                ),
                format!("{:.2}", score(o)),
            ]
        })
        .collect();
    let point = |o: &Outcome| (o.write_amp(), percentile_us(&mut o.read_ns.clone(), 0.99) / 1e3);
    let mut series: Vec<Series> = outcomes[..2]
        .iter()
        .map(|o| Series { name: o.label.clone(), points: vec![point(o)] })
        .collect();
    series.push(Series {
        name: "hybrid (T rising to the left)".into(),
        points: outcomes[2..].iter().map(point).collect(),
    });
    let pull = &outcomes[1];
    let best_read_p99 = percentile_us(&mut best.read_ns.clone(), 0.99);
    let pull_read_p99 = percentile_us(&mut pull.read_ns.clone(), 0.99);
    let findings = vec![
        format!(
            "graph: {} users, {edges} follows, the most-followed account has {max_followers} followers",
            shape.users
        ),
        format!(
            "best threshold T={}: {:.1} entries/post vs pure push's {:.1} ({:.1}x fewer writes), read p99 {:.2} ms vs pure pull's {:.2} ms ({:.1}x faster)",
            best.threshold,
            best.write_amp(),
            push.write_amp(),
            push.write_amp() / best.write_amp().max(f64::MIN_POSITIVE),
            best_read_p99 / 1e3,
            pull_read_p99 / 1e3,
            pull_read_p99 / best_read_p99,
        ),
    ];
    Ok(Report {
        experiment: "fanout".into(),
        ran_at: super::now_rfc3339(),
        parameters: json!({
            "users": shape.users,
            "follows_per_user": "5..=35, targets Zipf(s=1) over popularity",
            "authors": format!("Zipf(s={AUTHOR_SKEW}) over popularity"),
            "posts_per_s": shape.posts_per_s,
            "seconds": shape.seconds,
            "reads_per_s": shape.reads_per_s,
            "history_posts": shape.posts_per_s * shape.seconds * HISTORY_FACTOR,
            "feed_shards": FEED_SHARDS,
            "page": 20,
            "thresholds": thresholds,
            "engine": "sqlite",
        }),
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        rows,
        plot: Some(Plot {
            title: "Fan-out: writes per post against feed-read p99".into(),
            x_label: "feed entries written per post".into(),
            y_label: "first-page read p99 (ms)".into(),
            series,
            log_x: false,
            log_y: false,
        }),
        findings,
        more_plots: Vec::new(),
    })
}
