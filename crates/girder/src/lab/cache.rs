//! `girder lab cache` — Pattern: Multi-Layer Caching, measured. Zipf-distributed
//! reads of a SQLite table through girder-cache's L1: hit ratio and latency per
//! layer as the L1 grows, for skews s = 0.8, 1.0, 1.2. Then two instances with
//! small L1s reading the same keys, without and with a shared L2 (Redis with
//! `--redis`, an in-process stand-in otherwise): what the second layer saves the
//! store, and what each layer costs per read. Then a stampede: 1,000 concurrent
//! reads of one cold key, counting store reads with single-flight (girder-cache)
//! and without it (a plain check-then-load cache).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use girder_cache::{Cache, CacheConfig, L2Store, Loader, MemoryL2, NoL2, RedisL2};
use rand::SeedableRng;
use serde_json::json;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use super::{LabContext, Plot, Report, Series, percentile_us};
use crate::loadtest::zipf::Zipf;

/// Reads one row per load and counts the reads.
#[derive(Clone)]
struct RowLoader {
    pool: SqlitePool,
    calls: Arc<AtomicU64>,
}

impl Loader<u64, String> for RowLoader {
    type Error = sqlx::Error;

    fn load(&self, key: &u64) -> impl Future<Output = Result<Option<String>, sqlx::Error>> + Send {
        let (pool, calls, key) = (self.pool.clone(), Arc::clone(&self.calls), *key);
        async move {
            calls.fetch_add(1, Ordering::Relaxed);
            sqlx::query_scalar("SELECT value FROM kv WHERE id = ?")
                .bind(i64::try_from(key).unwrap_or(i64::MAX))
                .fetch_optional(&pool)
                .await
        }
    }
}

/// Per-read latencies of a two-instance run, split by the layer that answered.
#[derive(Debug, Default)]
struct Layers {
    l1_ns: Vec<u64>,
    l2_ns: Vec<u64>,
    store_ns: Vec<u64>,
    store_reads: u64,
}

/// `reads` Zipf reads, each sent to one of the two instances at random; the layer
/// that answered is read off the instance's counters around the call.
async fn two_instances<S: L2Store>(
    pair: &[Cache<u64, String, RowLoader, S>; 2],
    zipf: &Zipf,
    reads: u64,
    calls: &AtomicU64,
) -> anyhow::Result<Layers> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut layers = Layers::default();
    for _ in 0..reads {
        let key = zipf.sample(&mut rng) as u64;
        let cache = &pair[usize::from(rand::Rng::random::<bool>(&mut rng))];
        let before = cache.stats();
        let started = Instant::now();
        std::hint::black_box(cache.get(&key).await?);
        let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let after = cache.stats();
        if after.l1_hits > before.l1_hits {
            layers.l1_ns.push(elapsed);
        } else if after.l2_hits > before.l2_hits {
            layers.l2_ns.push(elapsed);
        } else {
            layers.store_ns.push(elapsed);
        }
    }
    for cache in pair {
        cache.shutdown().await;
    }
    layers.store_reads = calls.load(Ordering::Relaxed);
    Ok(layers)
}

pub(super) async fn run(ctx: &LabContext) -> anyhow::Result<Report> {
    let (keys, reads, sizes): (u64, u64, &[u64]) = if ctx.options.quick {
        (20_000, 20_000, &[200, 1_000, 5_000])
    } else {
        (100_000, 200_000, &[500, 2_000, 10_000, 50_000])
    };
    let skews = [0.8, 1.0, 1.2];

    let dir = tempfile::tempdir()?;
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(
            SqliteConnectOptions::from_str(&format!(
                "sqlite:{}",
                dir.path().join("kv.db").display()
            ))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal),
        )
        .await?;
    sqlx::raw_sql("CREATE TABLE kv (id INTEGER PRIMARY KEY, value TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    ctx.phase("filling the store", keys / 1_000);
    for chunk in 0..keys / 1_000 {
        let mut tx = pool.begin().await?;
        for id in chunk * 1_000..(chunk + 1) * 1_000 {
            sqlx::query("INSERT INTO kv (id, value) VALUES (?, ?)")
                .bind(i64::try_from(id)?)
                .bind(format!("https://example.com/{id}"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        ctx.progress.inc(1);
    }

    let mut rows = Vec::new();
    let mut series = Vec::new();
    ctx.phase("zipf reads", (skews.len() * sizes.len()) as u64);
    for s in skews {
        let zipf = Zipf::new(usize::try_from(keys)?, s);
        let mut points = Vec::new();
        for &size in sizes {
            let calls = Arc::new(AtomicU64::new(0));
            let loader = RowLoader { pool: pool.clone(), calls: Arc::clone(&calls) };
            let config = CacheConfig {
                name: format!("lab_{size}"),
                l1_capacity_entries: size,
                ttl_ms: 3_600_000,
                ..CacheConfig::default()
            };
            let cache = Cache::new(config, loader)?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(42);
            let (mut hit_ns, mut miss_ns) = (Vec::new(), Vec::new());
            for _ in 0..reads {
                let key = zipf.sample(&mut rng) as u64;
                let before = calls.load(Ordering::Relaxed);
                let started = Instant::now();
                let value = cache.get(&key).await?;
                let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                std::hint::black_box(value);
                if calls.load(Ordering::Relaxed) == before {
                    hit_ns.push(elapsed)
                } else {
                    miss_ns.push(elapsed)
                }
            }
            cache.shutdown().await;
            let hit_ratio = hit_ns.len() as f64 / reads as f64;
            points.push((size as f64, 100.0 * hit_ratio));
            rows.push(vec![
                format!("zipf s={s}"),
                size.to_string(),
                format!("L1 {:.1}% · store {:.1}%", 100.0 * hit_ratio, 100.0 * (1.0 - hit_ratio)),
                format!("{:.2}", percentile_us(&mut hit_ns, 0.5)),
                format!("{:.1}", percentile_us(&mut miss_ns, 0.5)),
                calls.load(Ordering::Relaxed).to_string(),
            ]);
            ctx.progress.inc(1);
        }
        series.push(Series { name: format!("zipf s={s}"), points });
    }

    // Two instances, each with a small L1, reading the same Zipf keys: without a
    // shared layer every instance loads every key it misses; with one, a key loaded
    // by either instance is an L2 hit for the other.
    ctx.phase("two instances, with and without L2", 3);
    let l1_size = sizes[0];
    let zipf = Zipf::new(usize::try_from(keys)?, 1.0);
    let run_name = format!("lab_l2_{}_{}", std::process::id(), super::now_rfc3339());
    let calls = Arc::new(AtomicU64::new(0));
    let loader = RowLoader { pool: pool.clone(), calls: Arc::clone(&calls) };
    let make = |suffix: &str| CacheConfig {
        name: format!("{run_name}_{suffix}"),
        l1_capacity_entries: l1_size,
        ttl_ms: 600_000,
        ..CacheConfig::default()
    };
    let pair = [
        Cache::builder(make("l1"), loader.clone()).build()?,
        Cache::builder(make("l1"), loader.clone()).build()?,
    ];
    let without = two_instances::<NoL2>(&pair, &zipf, reads, &calls).await?;
    ctx.progress.inc(1);
    let (l2_kind, with) = if let Some(url) = &ctx.options.redis_url {
        calls.store(0, Ordering::Relaxed);
        // Two connections, as two processes would have.
        let pair = [
            Cache::builder(make("redis"), loader.clone())
                .l2(RedisL2::connect(url).await?)
                .build()?,
            Cache::builder(make("redis"), loader.clone())
                .l2(RedisL2::connect(url).await?)
                .build()?,
        ];
        ("redis", two_instances(&pair, &zipf, reads, &calls).await?)
    } else {
        calls.store(0, Ordering::Relaxed);
        let shared = MemoryL2::new(Arc::new(girder_core::SystemClock));
        let pair = [
            Cache::builder(make("memory"), loader.clone()).l2(shared.clone()).build()?,
            Cache::builder(make("memory"), loader.clone()).l2(shared).build()?,
        ];
        ("in-process", two_instances(&pair, &zipf, reads, &calls).await?)
    };
    ctx.progress.inc(2);
    let layer_row = |label: String, n: &Layers| {
        let total = n.l1_ns.len() + n.l2_ns.len() + n.store_ns.len();
        let share = |v: &[u64]| format!("{:.1}%", 100.0 * v.len() as f64 / total.max(1) as f64);
        vec![
            label,
            format!("{l1_size} ×2"),
            format!(
                "L1 {} · L2 {} · store {}",
                share(&n.l1_ns),
                share(&n.l2_ns),
                share(&n.store_ns)
            ),
            format!(
                "L1 {:.2} · L2 {:.1}",
                percentile_us(&mut n.l1_ns.clone(), 0.5),
                percentile_us(&mut n.l2_ns.clone(), 0.5)
            ),
            format!("{:.1}", percentile_us(&mut n.store_ns.clone(), 0.5)),
            n.store_reads.to_string(),
        ]
    };
    rows.push(layer_row("2 instances, zipf s=1.0, L1 only".into(), &without));
    rows.push(layer_row(format!("2 instances, zipf s=1.0, L1 + {l2_kind} L2"), &with));
    let l2_finding = format!(
        "two instances with {l1_size}-entry L1s: {} store reads without a shared layer, {} with a {l2_kind} L2 (p50 per read: L2 {:.1} µs, store {:.1} µs)",
        without.store_reads,
        with.store_reads,
        percentile_us(&mut with.l2_ns.clone(), 0.5),
        percentile_us(&mut with.store_ns.clone(), 0.5),
    );

    // The stampede: 1,000 concurrent reads of one cold key.
    ctx.phase("stampede", 2);
    const CALLERS: u64 = 1_000;
    let calls = Arc::new(AtomicU64::new(0));
    let loader = RowLoader { pool: pool.clone(), calls: Arc::clone(&calls) };
    let cache = Arc::new(Cache::new(
        CacheConfig { name: "lab_stampede".into(), ..CacheConfig::default() },
        loader,
    )?);
    // A barrier releases every caller at once; without it the first load can finish
    // before the last caller is even spawned, and there is no stampede to measure.
    let start = Arc::new(tokio::sync::Barrier::new(CALLERS as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let (cache, start) = (Arc::clone(&cache), Arc::clone(&start));
        tasks.spawn(async move {
            start.wait().await;
            cache.get(&7).await.map(drop)
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    cache.shutdown().await;
    let coalesced = calls.load(Ordering::Relaxed);
    ctx.progress.inc(1);

    // Without single-flight: every caller that misses loads, then fills.
    let naive_calls = Arc::new(AtomicU64::new(0));
    let naive_loader = RowLoader { pool: pool.clone(), calls: Arc::clone(&naive_calls) };
    let naive: Arc<quick_cache::sync::Cache<u64, Option<String>>> =
        Arc::new(quick_cache::sync::Cache::new(1_000));
    let start = Arc::new(tokio::sync::Barrier::new(CALLERS as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let (naive, loader, start) = (Arc::clone(&naive), naive_loader.clone(), Arc::clone(&start));
        tasks.spawn(async move {
            start.wait().await;
            if naive.get(&7).is_none() {
                let value = loader.load(&7).await?;
                naive.insert(7, value);
            }
            Ok::<(), sqlx::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let uncoalesced = naive_calls.load(Ordering::Relaxed);
    ctx.progress.inc(1);
    rows.push(vec![
        "stampede, single-flight".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        coalesced.to_string(),
    ]);
    rows.push(vec![
        "stampede, no single-flight".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        uncoalesced.to_string(),
    ]);

    Ok(Report {
        experiment: "cache".into(),
        ran_at: super::now_rfc3339(),
        parameters: json!({
            "quick": ctx.options.quick,
            "keys": keys,
            "reads_per_cell": reads,
            "l1_sizes": sizes,
            "zipf_s": skews,
            "store": "sqlite",
            "l2": l2_kind,
            "stampede_callers": CALLERS,
        }),
        columns: ["workload", "L1 entries", "answered by", "p50 hit µs", "p50 store µs", "store reads"]
            .map(String::from)
            .to_vec(),
        rows,
        plot: Some(Plot {
            title: "L1 hit ratio vs L1 size under Zipf traffic".into(),
            x_label: "L1 capacity (entries)".into(),
            y_label: "hit ratio (%)".into(),
            series,
            log_x: false,
            log_y: false,
        }),
        findings: vec![
            l2_finding,
            format!("stampede of {CALLERS} concurrent misses on one key: {coalesced} store read(s) with single-flight, {uncoalesced} without"),
            "hit ratio grows with L1 size and with skew: the hotter the head of the distribution, the smaller the cache that absorbs it".into(),
        ],
        more_plots: Vec::new(),
    })
}
