//! `girder lab contention` — the chapter "Dealing with Contention", measured.
//!
//! One booking workload: N clients try to buy seats, picking them with a hot-spot
//! skew (Zipf, s = 1, so the front rows are wanted most), until a fixed number of
//! attempts is spent. Every attempt ends booked, taken (already sold) or aborted
//! (gave up after bounded retries). The same workload runs under each strategy:
//!
//! - **naive** read-then-write, the failure the patterns prevent: read the seat, see
//!   it free, write the buyer. Two clients that read before either writes both
//!   believe they bought it.
//! - **lease** (Pattern: Distributed Locks with TTL): hold a lease on the seat around
//!   the same read and write.
//! - **optimistic** (Pattern: Optimistic Locking with Version Fields): compare-and-set
//!   on the seat's version, retrying conflicts with jittered backoff.
//! - **row lock** (Pattern: ACID Transactions): `SELECT … FOR UPDATE` on PostgreSQL,
//!   `BEGIN IMMEDIATE` on SQLite.
//! - **reservation** (Pattern: Status-Based Workflow): hold, then confirm.
//!
//! on SQLite (always), PostgreSQL (`--postgres`) and Redis (`--redis`), at several
//! seat counts (fewer seats, more collisions). Reported: attempts per second,
//! p50/p99 per attempt, retries, aborts, seats sold and double-bookings — a seat
//! two clients were told they bought, counted from what the clients were told.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use girder_core::{Clock, SystemClock};
use girder_lock::lease::{LeaseStore, MemoryLeaseStore, PostgresLeaseStore, RedisLeaseStore};
use girder_lock::reservation::{
    HoldError, PostgresReservationStore, RedisReservationStore, ReservationConfig,
    ReservationStore, SqliteReservationStore,
};
use girder_lock::retry::{RetryError, RetryPolicy, retry_counted};
use girder_lock::txn::{Isolation, is_pg_retryable, is_sqlite_retryable, run_pg_transaction};
use girder_lock::version::{
    PostgresVersionStore, RedisVersionStore, SqliteVersionStore, VersionError, VersionStore,
};
use parking_lot::Mutex;
use rand::SeedableRng;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

use super::{LabContext, Plot, Report, Series, percentile_us};
use crate::loadtest::zipf::Zipf;

/// How one attempt ended.
enum Attempt {
    /// The client was told it bought the seat.
    Booked,
    /// The seat was already sold.
    Taken,
    /// Retries ran out.
    Aborted,
}

/// Where seats live.
#[derive(Clone)]
// A few long-lived values per run: their size does not matter, boxing buys nothing.
#[allow(clippy::large_enum_variant)]
enum Engine {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    Redis(ConnectionManager),
}

impl Engine {
    const fn name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
            Self::Redis(_) => "redis",
        }
    }
}

/// The strategies, in the order the table shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Naive,
    Lease,
    Optimistic,
    RowLock,
    Reservation,
}

impl Strategy {
    const ALL: [Self; 5] =
        [Self::Naive, Self::Lease, Self::Optimistic, Self::RowLock, Self::Reservation];

    const fn name(self) -> &'static str {
        match self {
            Self::Naive => "naive (unsafe)",
            Self::Lease => "lease",
            Self::Optimistic => "optimistic",
            Self::RowLock => "row lock",
            Self::Reservation => "reservation",
        }
    }
}

/// One strategy on one engine for one cell, ready to take attempts.
enum Booker {
    NaiveSql { engine: Engine, table: String },
    NaiveRedis { conn: ConnectionManager, prefix: String },
    Lease { locks: Locks, inner: Box<Booker> },
    Optimistic { store: Versions, prefix: String },
    RowLockSqlite { pool: SqlitePool, table: String },
    RowLockPostgres { pool: PgPool, table: String },
    Reservation { store: Reservations, pool: String },
}

// A few long-lived values per run: their size does not matter, boxing buys nothing.
#[allow(clippy::large_enum_variant)]
enum Locks {
    Memory(MemoryLeaseStore),
    Postgres(PostgresLeaseStore),
    Redis(RedisLeaseStore),
}

// A few long-lived values per run: their size does not matter, boxing buys nothing.
#[allow(clippy::large_enum_variant)]
enum Versions {
    Sqlite(SqliteVersionStore),
    Postgres(PostgresVersionStore),
    Redis(RedisVersionStore),
}

// A few long-lived values per run: their size does not matter, boxing buys nothing.
#[allow(clippy::large_enum_variant)]
enum Reservations {
    Sqlite(SqliteReservationStore),
    Postgres(PostgresReservationStore),
    Redis(RedisReservationStore),
}

/// Conflicts retry this many times in all before the attempt counts as aborted.
fn policy() -> RetryPolicy {
    RetryPolicy { max_attempts: 8, base_delay_ms: 1, max_delay_ms: 20 }
}

/// A sale lasts as long as the run; a lease as long as one read and write can take.
const HOLD_TTL_MS: u64 = 60_000;
const LEASE_TTL_MS: u64 = 5_000;

impl Booker {
    /// Prepares `seats` free seats for `strategy` on `engine`, under names unique
    /// to `cell`. `None` when the engine has no such strategy (row locks on Redis).
    async fn prepare(
        engine: &Engine,
        strategy: Strategy,
        cell: &str,
        seats: u32,
    ) -> anyhow::Result<Option<Self>> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Ok(Some(match (strategy, engine) {
            (Strategy::Naive, Engine::Redis(conn)) => {
                Self::NaiveRedis { conn: conn.clone(), prefix: format!("girder:lab:{cell}:") }
            }
            (Strategy::Naive, _) => Self::NaiveSql {
                engine: engine.clone(),
                table: seat_table(engine, cell, seats).await?,
            },
            (Strategy::Lease, _) => {
                let locks = match engine {
                    Engine::Sqlite(_) => Locks::Memory(MemoryLeaseStore::new(
                        girder_lock::lease::MemoryLeaseConfig::default(),
                        Arc::clone(&clock),
                    )),
                    Engine::Postgres(pool) => {
                        Locks::Postgres(PostgresLeaseStore::new(pool.clone()).await?)
                    }
                    Engine::Redis(conn) => Locks::Redis(RedisLeaseStore::with_clock(
                        conn.clone(),
                        girder_lock::lease::RedisLeaseConfig {
                            key_prefix: format!("girder:lab:{cell}:lease:"),
                            ..Default::default()
                        },
                        Arc::clone(&clock),
                    )),
                };
                let inner = Box::pin(Self::prepare(engine, Strategy::Naive, cell, seats)).await?;
                Self::Lease { locks, inner: Box::new(inner.context("naive booker")?) }
            }
            (Strategy::Optimistic, _) => {
                let store = match engine {
                    Engine::Sqlite(pool) => {
                        Versions::Sqlite(SqliteVersionStore::new(pool.clone()).await?)
                    }
                    Engine::Postgres(pool) => {
                        Versions::Postgres(PostgresVersionStore::new(pool.clone()).await?)
                    }
                    Engine::Redis(conn) => {
                        Versions::Redis(RedisVersionStore::new(conn.clone(), "girder:lab:v:"))
                    }
                };
                let prefix = format!("{cell}:");
                for seat in 0..seats {
                    store.insert(&format!("{prefix}{seat}")).await?;
                }
                Self::Optimistic { store, prefix }
            }
            (Strategy::RowLock, Engine::Sqlite(pool)) => Self::RowLockSqlite {
                pool: pool.clone(),
                table: seat_table(engine, cell, seats).await?,
            },
            (Strategy::RowLock, Engine::Postgres(pool)) => Self::RowLockPostgres {
                pool: pool.clone(),
                table: seat_table(engine, cell, seats).await?,
            },
            (Strategy::RowLock, Engine::Redis(_)) => return Ok(None),
            (Strategy::Reservation, _) => {
                let config = ReservationConfig::default();
                let store = match engine {
                    Engine::Sqlite(pool) => Reservations::Sqlite(
                        SqliteReservationStore::new(pool.clone(), config, Arc::clone(&clock))
                            .await?,
                    ),
                    Engine::Postgres(pool) => Reservations::Postgres(
                        PostgresReservationStore::new(pool.clone(), config, Arc::clone(&clock))
                            .await?,
                    ),
                    Engine::Redis(conn) => Reservations::Redis(RedisReservationStore::new(
                        conn.clone(),
                        "girder:lab:resv:",
                        config,
                        Arc::clone(&clock),
                    )),
                };
                let names: Vec<String> = (0..seats).map(|s| s.to_string()).collect();
                for chunk in names.chunks(ReservationConfig::default().max_items_per_add) {
                    let items: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    store.add_items(cell, &items).await?;
                }
                Self::Reservation { store, pool: cell.to_owned() }
            }
        }))
    }

    /// One attempt by `buyer` on `seat`; returns how it ended and the retries it took.
    async fn book(&self, seat: u32, buyer: i64) -> anyhow::Result<(Attempt, u32)> {
        match self {
            Self::NaiveSql { engine, table } => {
                let owner: Option<Option<i64>> = match engine {
                    Engine::Sqlite(pool) => {
                        sqlx::query_scalar(&format!("SELECT owner FROM {table} WHERE id = ?"))
                            .bind(i64::from(seat))
                            .fetch_optional(pool)
                            .await?
                    }
                    Engine::Postgres(pool) => {
                        sqlx::query_scalar(&format!("SELECT owner FROM {table} WHERE id = $1"))
                            .bind(i64::from(seat))
                            .fetch_optional(pool)
                            .await?
                    }
                    Engine::Redis(_) => unreachable!("naive Redis seats are NaiveRedis"),
                };
                if owner.flatten().is_some() {
                    return Ok((Attempt::Taken, 0));
                }
                // The gap every real read-then-write has (a payment call, a page render):
                // here just a yield, which is enough for other clients to read too.
                tokio::task::yield_now().await;
                match engine {
                    Engine::Sqlite(pool) => {
                        sqlx::query(&format!("UPDATE {table} SET owner = ? WHERE id = ?"))
                            .bind(buyer)
                            .bind(i64::from(seat))
                            .execute(pool)
                            .await?;
                    }
                    Engine::Postgres(pool) => {
                        sqlx::query(&format!("UPDATE {table} SET owner = $1 WHERE id = $2"))
                            .bind(buyer)
                            .bind(i64::from(seat))
                            .execute(pool)
                            .await?;
                    }
                    Engine::Redis(_) => unreachable!("naive Redis seats are NaiveRedis"),
                }
                Ok((Attempt::Booked, 0))
            }
            Self::NaiveRedis { conn, prefix } => {
                let mut conn = conn.clone();
                let key = format!("{prefix}{seat}");
                let owner: Option<i64> = conn.get(&key).await?;
                if owner.is_some() {
                    return Ok((Attempt::Taken, 0));
                }
                tokio::task::yield_now().await;
                let () = conn.set_ex(&key, buyer, 3_600).await?;
                Ok((Attempt::Booked, 0))
            }
            Self::Lease { locks, inner } => {
                let key = format!("seat:{seat}");
                let policy = policy();
                let mut retries = 0;
                let lease = loop {
                    let got = match locks {
                        Locks::Memory(s) => s.try_acquire(&key, LEASE_TTL_MS).await?,
                        Locks::Postgres(s) => s.try_acquire(&key, LEASE_TTL_MS).await?,
                        Locks::Redis(s) => s.try_acquire(&key, LEASE_TTL_MS).await?,
                    };
                    if let Some(lease) = got {
                        break lease;
                    }
                    retries += 1;
                    if retries >= policy.max_attempts {
                        return Ok((Attempt::Aborted, retries));
                    }
                    tokio::time::sleep(Duration::from_millis(policy.delay_ms(retries))).await;
                };
                let outcome = Box::pin(inner.book(seat, buyer)).await;
                // Released even when the booking failed; a lost release only delays the
                // next holder until the lease's TTL.
                let _ = match locks {
                    Locks::Memory(s) => s.release(&lease).await,
                    Locks::Postgres(s) => s.release(&lease).await,
                    Locks::Redis(s) => s.release(&lease).await,
                };
                outcome.map(|(attempt, _)| (attempt, retries))
            }
            Self::Optimistic { store, prefix } => {
                let key = format!("{prefix}{seat}");
                let buyer_bytes = buyer.to_be_bytes();
                let result = retry_counted(
                    &policy(),
                    |e: &VersionError| matches!(e, VersionError::Conflict { .. }),
                    || async {
                        let current = store.get(&key).await?.ok_or_else(|| {
                            VersionError::Corrupt { key: key.clone(), problem: "seat missing" }
                        })?;
                        if !current.value.is_empty() {
                            return Ok(Attempt::Taken);
                        }
                        store.compare_and_set(&key, current.version, &buyer_bytes).await?;
                        Ok(Attempt::Booked)
                    },
                )
                .await;
                match result {
                    Ok((attempt, attempts)) => Ok((attempt, attempts - 1)),
                    Err(RetryError::Exhausted { attempts, .. }) => {
                        Ok((Attempt::Aborted, attempts - 1))
                    }
                    Err(RetryError::Failed(e)) => Err(e.into()),
                    Err(e) => Err(anyhow::anyhow!("{e}")),
                }
            }
            Self::RowLockSqlite { pool, table } => {
                let select = format!("SELECT owner FROM {table} WHERE id = ?");
                let update = format!("UPDATE {table} SET owner = ? WHERE id = ?");
                let result = girder_lock::txn::run_sqlite_transaction(
                    pool,
                    &policy(),
                    is_sqlite_retryable,
                    |tx| {
                        let (select, update) = (select.clone(), update.clone());
                        Box::pin(async move {
                            let owner: Option<i64> = sqlx::query_scalar(&select)
                                .bind(i64::from(seat))
                                .fetch_one(&mut *tx)
                                .await?;
                            if owner.is_some() {
                                return Ok(false);
                            }
                            sqlx::query(&update)
                                .bind(buyer)
                                .bind(i64::from(seat))
                                .execute(&mut *tx)
                                .await?;
                            Ok(true)
                        })
                    },
                )
                .await;
                transaction_outcome(result)
            }
            Self::RowLockPostgres { pool, table } => {
                let select = format!("SELECT owner FROM {table} WHERE id = $1 FOR UPDATE");
                let update = format!("UPDATE {table} SET owner = $1 WHERE id = $2");
                let result = run_pg_transaction(
                    pool,
                    &policy(),
                    Isolation::ReadCommitted,
                    is_pg_retryable,
                    |tx| {
                        let (select, update) = (select.clone(), update.clone());
                        Box::pin(async move {
                            let owner: Option<i64> = sqlx::query_scalar(&select)
                                .bind(i64::from(seat))
                                .fetch_one(&mut *tx)
                                .await?;
                            if owner.is_some() {
                                return Ok(false);
                            }
                            sqlx::query(&update)
                                .bind(buyer)
                                .bind(i64::from(seat))
                                .execute(&mut *tx)
                                .await?;
                            Ok(true)
                        })
                    },
                )
                .await;
                transaction_outcome(result)
            }
            Self::Reservation { store, pool } => {
                let item = seat.to_string();
                let holder = buyer.to_string();
                let held = match store {
                    Reservations::Sqlite(s) => s.hold(pool, &[&item], &holder, HOLD_TTL_MS).await,
                    Reservations::Postgres(s) => s.hold(pool, &[&item], &holder, HOLD_TTL_MS).await,
                    Reservations::Redis(s) => s.hold(pool, &[&item], &holder, HOLD_TTL_MS).await,
                };
                let hold = match held {
                    Ok(hold) => hold,
                    Err(HoldError::Unavailable { .. }) => return Ok((Attempt::Taken, 0)),
                    Err(e) => return Err(e.into()),
                };
                match store {
                    Reservations::Sqlite(s) => s.confirm(&hold).await?,
                    Reservations::Postgres(s) => s.confirm(&hold).await?,
                    Reservations::Redis(s) => s.confirm(&hold).await?,
                }
                Ok((Attempt::Booked, 0))
            }
        }
    }
}

impl Versions {
    async fn insert(&self, key: &str) -> Result<(), VersionError> {
        let result = match self {
            Self::Sqlite(s) => s.insert(key, b"").await,
            Self::Postgres(s) => s.insert(key, b"").await,
            Self::Redis(s) => s.insert(key, b"").await,
        };
        result.map(drop)
    }

    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<girder_lock::version::Versioned>, VersionError> {
        match self {
            Self::Sqlite(s) => s.get(key).await,
            Self::Postgres(s) => s.get(key).await,
            Self::Redis(s) => s.get(key).await,
        }
    }

    async fn compare_and_set(
        &self,
        key: &str,
        version: u64,
        value: &[u8],
    ) -> Result<(), VersionError> {
        let result = match self {
            Self::Sqlite(s) => s.compare_and_set(key, version, value).await,
            Self::Postgres(s) => s.compare_and_set(key, version, value).await,
            Self::Redis(s) => s.compare_and_set(key, version, value).await,
        };
        result.map(drop)
    }
}

impl Reservations {
    async fn add_items(&self, pool: &str, items: &[&str]) -> anyhow::Result<()> {
        match self {
            Self::Sqlite(s) => s.add_items(pool, items).await?,
            Self::Postgres(s) => s.add_items(pool, items).await?,
            Self::Redis(s) => s.add_items(pool, items).await?,
        };
        Ok(())
    }
}

/// A row-lock transaction's result as an attempt: `true` booked, `false` taken.
fn transaction_outcome(
    result: Result<(bool, u32), RetryError<sqlx::Error>>,
) -> anyhow::Result<(Attempt, u32)> {
    match result {
        Ok((true, attempts)) => Ok((Attempt::Booked, attempts - 1)),
        Ok((false, attempts)) => Ok((Attempt::Taken, attempts - 1)),
        Err(RetryError::Exhausted { attempts, .. }) => Ok((Attempt::Aborted, attempts - 1)),
        Err(RetryError::Failed(e)) => Err(e.into()),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

/// Creates a table of `seats` free seats for `cell` and returns its name.
async fn seat_table(engine: &Engine, cell: &str, seats: u32) -> anyhow::Result<String> {
    let table = format!("lab_seats_{}", cell.replace(['-', ':'], "_"));
    let create = format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, owner BIGINT)");
    let fill = format!(
        "INSERT INTO {table} (id) SELECT * FROM generate_series(0, {})",
        i64::from(seats) - 1
    );
    match engine {
        Engine::Sqlite(pool) => {
            sqlx::query(&create).execute(pool).await?;
            let fill = format!(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {seats}) \
                 INSERT INTO {table} (id) SELECT i FROM n"
            );
            sqlx::query(&fill).execute(pool).await?;
        }
        Engine::Postgres(pool) => {
            sqlx::query(&create).execute(pool).await?;
            sqlx::query(&fill).execute(pool).await?;
        }
        Engine::Redis(_) => anyhow::bail!("Redis seats are keys, not a table"),
    }
    Ok(table)
}

/// What one cell measured.
struct Outcome {
    attempts: u64,
    booked: u64,
    aborted: u64,
    retries: u64,
    double_booked: u64,
    rate_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Runs `attempts` attempts from `clients` concurrent clients against `booker`.
async fn run_cell(
    booker: Arc<Booker>,
    seats: u32,
    clients: u32,
    attempts: u32,
) -> anyhow::Result<Outcome> {
    let zipf = Arc::new(Zipf::new(seats as usize, 1.0));
    let claims: Arc<Mutex<HashMap<u32, u64>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (booker, zipf, claims, next) =
            (Arc::clone(&booker), Arc::clone(&zipf), Arc::clone(&claims), Arc::clone(&next));
        tasks.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(client));
            let (mut latencies_ns, mut aborted, mut retries) = (Vec::new(), 0u64, 0u64);
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < attempts {
                let seat = u32::try_from(zipf.sample(&mut rng)).unwrap_or(0);
                let buyer = i64::from(client) * 1_000_000 + latencies_ns.len() as i64;
                let t = Instant::now();
                let (attempt, tried) = booker.book(seat, buyer).await?;
                latencies_ns.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                retries += u64::from(tried);
                match attempt {
                    Attempt::Booked => *claims.lock().entry(seat).or_default() += 1,
                    Attempt::Taken => {}
                    Attempt::Aborted => aborted += 1,
                }
            }
            Ok::<_, anyhow::Error>((latencies_ns, aborted, retries))
        });
    }
    let (mut latencies, mut aborted, mut retries) = (Vec::new(), 0, 0);
    while let Some(done) = tasks.join_next().await {
        let (l, a, r) = done??;
        latencies.extend(l);
        aborted += a;
        retries += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let claims = claims.lock();
    Ok(Outcome {
        attempts: latencies.len() as u64,
        booked: claims.len() as u64,
        aborted,
        retries,
        double_booked: claims.values().map(|n| n.saturating_sub(1)).sum(),
        rate_per_s: latencies.len() as f64 / elapsed.max(1e-9),
        p50_us: percentile_us(&mut latencies, 0.5),
        p99_us: percentile_us(&mut latencies, 0.99),
    })
}

async fn sqlite_engine(dir: &std::path::Path) -> anyhow::Result<Engine> {
    let options =
        SqliteConnectOptions::from_str(&format!("sqlite:{}", dir.join("seats.db").display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
    Ok(Engine::Sqlite(SqlitePoolOptions::new().max_connections(8).connect_with(options).await?))
}

pub(super) async fn run(ctx: &LabContext) -> anyhow::Result<Report> {
    let (clients, attempts, seat_counts): (u32, u32, &[u32]) = if ctx.options.quick {
        (16, 400, &[400, 40, 4])
    } else {
        (32, 3_000, &[3_200, 320, 32, 4])
    };
    let dir = tempfile::tempdir()?;
    let mut engines = vec![sqlite_engine(dir.path()).await?];
    if let Some(url) = &ctx.options.postgres_url {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(16).connect(url).await?;
        engines.push(Engine::Postgres(pool));
    }
    if let Some(url) = &ctx.options.redis_url {
        engines.push(Engine::Redis(
            redis::Client::open(url.as_str())?.get_connection_manager().await?,
        ));
    }
    let plot_engine = if ctx.options.postgres_url.is_some() { "postgres" } else { "sqlite" };
    let run_id = format!("{}_{}", std::process::id(), SystemClock.now_ms());
    let cells = engines.len() * Strategy::ALL.len() * seat_counts.len();
    ctx.phase("booking workloads", cells as u64);

    let mut rows = Vec::new();
    let mut series: Vec<Series> = Vec::new();
    let mut naive_double = 0;
    let mut safe_double = 0;
    let mut tables = Vec::new();
    for engine in &engines {
        for strategy in Strategy::ALL {
            let mut points = Vec::new();
            for (i, &seats) in seat_counts.iter().enumerate() {
                let cell = format!("{run_id}_{}_{}_{i}", engine.name(), strategy as u8);
                ctx.progress.inc(1);
                let Some(booker) = Booker::prepare(engine, strategy, &cell, seats).await? else {
                    continue;
                };
                if let Booker::NaiveSql { table, .. }
                | Booker::RowLockSqlite { table, .. }
                | Booker::RowLockPostgres { table, .. } = &booker
                {
                    tables.push((engine.clone(), table.clone()));
                }
                if let Booker::Lease { inner, .. } = &booker
                    && let Booker::NaiveSql { table, .. } = inner.as_ref()
                {
                    tables.push((engine.clone(), table.clone()));
                }
                let outcome = run_cell(Arc::new(booker), seats, clients, attempts).await?;
                if strategy == Strategy::Naive {
                    naive_double += outcome.double_booked;
                } else {
                    safe_double += outcome.double_booked;
                }
                let clients_per_seat = f64::from(clients) / f64::from(seats);
                points.push((clients_per_seat.log10(), outcome.rate_per_s));
                rows.push(vec![
                    engine.name().to_owned(),
                    strategy.name().to_owned(),
                    seats.to_string(),
                    format!("{:.0}", outcome.rate_per_s),
                    format!("{:.0}", outcome.p50_us),
                    format!("{:.0}", outcome.p99_us),
                    outcome.retries.to_string(),
                    outcome.aborted.to_string(),
                    format!("{}/{}", outcome.booked, outcome.attempts),
                    outcome.double_booked.to_string(),
                ]);
            }
            // One engine per plot keeps it readable: PostgreSQL when measured (the
            // engine several instances share), else SQLite. The table has them all.
            if !points.is_empty() && engine.name() == plot_engine {
                series.push(Series { name: strategy.name().to_owned(), points });
            }
        }
    }
    // SQLite lives in a temp dir that goes with this function; PostgreSQL keeps
    // what the run wrote unless told otherwise.
    for (engine, table) in tables {
        if let Engine::Postgres(pool) = engine {
            sqlx::query(&format!("DROP TABLE IF EXISTS {table}")).execute(&pool).await?;
        }
    }
    for engine in &engines {
        if let Engine::Postgres(pool) = engine {
            let cells = format!("{run_id}%");
            sqlx::query("DELETE FROM girder_versioned WHERE key LIKE $1")
                .bind(&cells)
                .execute(pool)
                .await?;
            sqlx::query("DELETE FROM girder_reservations WHERE pool LIKE $1")
                .bind(&cells)
                .execute(pool)
                .await?;
        }
    }

    Ok(Report {
        experiment: "contention".into(),
        ran_at: super::now_rfc3339(),
        parameters: json!({
            "quick": ctx.options.quick,
            "clients": clients,
            "attempts_per_cell": attempts,
            "seat_counts": seat_counts,
            "seat_choice": "zipf s=1.0 over seats (hot front rows)",
            "engines": engines.iter().map(Engine::name).collect::<Vec<_>>(),
            "retry_policy": { "max_attempts": policy().max_attempts, "base_delay_ms": policy().base_delay_ms, "max_delay_ms": policy().max_delay_ms },
        }),
        columns: [
            "engine", "strategy", "seats", "attempts/s", "p50 µs", "p99 µs", "retries", "aborts",
            "sold/attempts", "double-bookings",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        plot: Some(Plot {
            title: format!("Booking attempts per second as contention grows ({plot_engine})"),
            x_label: "log10(clients per seat)".into(),
            y_label: "attempts per second".into(),
            series,
            log_x: false,
            log_y: false,
        }),
        findings: vec![
            format!("naive read-then-write double-booked {naive_double} seat sale(s) in all; every other strategy: {safe_double}"),
            "sold/attempts: a seat sells once, so the rest of the attempts on a hot seat end as taken (or aborted, when retries run out first)".into(),
        ],
        more_plots: Vec::new(),
    })
}
