//! `girder lab ids` — the Unique ID Generation chapter's trade-offs, measured:
//! how long each id is as text, how fast one thread generates it, and how fast
//! a B-tree primary key absorbs it as the table grows. The catalogue claims
//! random UUIDv4 keys hurt index performance while time-ordered keys do not;
//! this experiment shows by how much, on SQLite and (with `--postgres`) PostgreSQL.

use std::str::FromStr;
use std::time::Instant;

use girder_core::SystemClock;
use girder_id::base62;
use girder_id::counter::{AllocatorConfig, IdAllocator, MemorySource};
use girder_id::snowflake::{Snowflake, SnowflakeConfig};
use girder_id::uuid7::{UuidV7Generator, to_base62};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, QueryBuilder, SqlitePool};

use super::{LabContext, Plot, Report, Series};

/// The four schemes, each able to produce a binary key and a text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    CounterBase62,
    Snowflake,
    UuidV4,
    UuidV7,
}

const SCHEMES: [Scheme; 4] =
    [Scheme::CounterBase62, Scheme::Snowflake, Scheme::UuidV4, Scheme::UuidV7];

impl Scheme {
    const fn name(self) -> &'static str {
        match self {
            Self::CounterBase62 => "counter+base62",
            Self::Snowflake => "snowflake",
            Self::UuidV4 => "uuid v4",
            Self::UuidV7 => "uuid v7",
        }
    }

    const fn table(self) -> &'static str {
        match self {
            Self::CounterBase62 => "girder_lab_ids_counter",
            Self::Snowflake => "girder_lab_ids_snowflake",
            Self::UuidV4 => "girder_lab_ids_uuid4",
            Self::UuidV7 => "girder_lab_ids_uuid7",
        }
    }
}

/// Produces ids of one scheme, as binary keys (big-endian, so byte order is
/// numeric order, as a database index sees it).
struct Generator {
    scheme: Scheme,
    counter: IdAllocator<MemorySource>,
    snowflake: Snowflake<SystemClock>,
    uuid7: UuidV7Generator,
}

impl Generator {
    fn new(scheme: Scheme) -> anyhow::Result<Self> {
        Ok(Self {
            scheme,
            counter: IdAllocator::new(
                MemorySource::new(0),
                AllocatorConfig { batch_size: 1_000_000 },
            ),
            snowflake: Snowflake::new(SnowflakeConfig::default(), SystemClock)
                .map_err(|e| anyhow::anyhow!("snowflake: {e}"))?,
            uuid7: UuidV7Generator::new(),
        })
    }

    async fn key(&self) -> anyhow::Result<Vec<u8>> {
        Ok(match self.scheme {
            Scheme::CounterBase62 => self.counter.next_id().await?.to_be_bytes().to_vec(),
            Scheme::Snowflake => self.snowflake.next_id()?.to_be_bytes().to_vec(),
            Scheme::UuidV4 => uuid::Uuid::new_v4().as_bytes().to_vec(),
            Scheme::UuidV7 => self.uuid7.next().as_bytes().to_vec(),
        })
    }

    /// The id as users see it: the shortest text form the scheme offers.
    async fn text(&self) -> anyhow::Result<String> {
        Ok(match self.scheme {
            Scheme::CounterBase62 => base62::encode_fixed(self.counter.next_id().await?, 7)?,
            Scheme::Snowflake => base62::encode(self.snowflake.next_id()?),
            Scheme::UuidV4 => to_base62(uuid::Uuid::new_v4()),
            Scheme::UuidV7 => to_base62(self.uuid7.next()),
        })
    }
}

/// Where the B-tree lives.
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    const fn name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    async fn reset(&self, table: &str) -> anyhow::Result<()> {
        match self {
            Self::Sqlite(pool) => {
                sqlx::raw_sql(&format!(
                    "DROP TABLE IF EXISTS {table}; \
                     CREATE TABLE {table} (id BLOB PRIMARY KEY, payload BLOB NOT NULL) WITHOUT ROWID;"
                ))
                .execute(pool)
                .await?;
            }
            Self::Postgres(pool) => {
                sqlx::raw_sql(&format!(
                    "DROP TABLE IF EXISTS {table}; \
                     CREATE TABLE {table} (id BYTEA PRIMARY KEY, payload BYTEA NOT NULL);"
                ))
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    async fn insert(&self, table: &str, keys: &[Vec<u8>]) -> anyhow::Result<()> {
        // A realistic row: the key plus ~64 bytes of payload.
        let payload = [7u8; 64];
        // The same multi-row INSERT on either engine; only the pool's type differs.
        macro_rules! insert_in_one_transaction {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await?;
                for chunk in keys.chunks(500) {
                    let mut q = QueryBuilder::new(format!("INSERT INTO {table} (id, payload) "));
                    q.push_values(chunk, |mut b, k| {
                        b.push_bind(k.as_slice()).push_bind(&payload[..]);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }};
        }
        match self {
            Self::Sqlite(pool) => insert_in_one_transaction!(pool),
            Self::Postgres(pool) => insert_in_one_transaction!(pool),
        }
        Ok(())
    }

    async fn drop_table(&self, table: &str) -> anyhow::Result<()> {
        let sql = format!("DROP TABLE IF EXISTS {table}");
        match self {
            Self::Sqlite(pool) => sqlx::query(&sql).execute(pool).await.map(drop)?,
            Self::Postgres(pool) => sqlx::query(&sql).execute(pool).await.map(drop)?,
        }
        Ok(())
    }
}

pub(super) async fn run(ctx: &LabContext) -> anyhow::Result<Report> {
    let (generate_n, rows_total, checkpoints) =
        if ctx.options.quick { (200_000u64, 60_000u64, 6u64) } else { (2_000_000, 1_000_000, 20) };
    let step = rows_total / checkpoints;

    // 1. Length and generation rate.
    ctx.phase("generation rate", SCHEMES.len() as u64);
    let mut rows = Vec::new();
    let mut rates = Vec::new();
    for scheme in SCHEMES {
        let generator = Generator::new(scheme)?;
        let text_len = generator.text().await?.len();
        let started = Instant::now();
        let mut sink = 0u8;
        for _ in 0..generate_n {
            sink ^= generator.key().await?[0];
        }
        std::hint::black_box(sink);
        let rate = generate_n as f64 / started.elapsed().as_secs_f64();
        rates.push(rate);
        rows.push(vec![
            scheme.name().to_owned(),
            text_len.to_string(),
            format!("{:.2}", rate / 1e6),
        ]);
        ctx.progress.inc(1);
    }

    // 2. B-tree insert rate as the table grows.
    let dir = tempfile::tempdir()?;
    let sqlite = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::from_str(&format!(
                "sqlite:{}",
                dir.path().join("ids.db").display()
            ))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal),
        )
        .await?;
    let mut dbs = vec![Db::Sqlite(sqlite)];
    if let Some(url) = &ctx.options.postgres_url {
        dbs.push(Db::Postgres(PgPool::connect(url).await?));
    }
    let mut series = Vec::new();
    let mut columns =
        vec!["scheme".to_owned(), "text chars".to_owned(), "M ids/s (1 thread)".to_owned()];
    let mut final_rates: Vec<Vec<f64>> = vec![Vec::new(); SCHEMES.len()];
    for db in &dbs {
        columns.push(format!("{} inserts/s at {}k rows", db.name(), rows_total / 1000));
        ctx.phase(&format!("{} inserts", db.name()), SCHEMES.len() as u64 * checkpoints);
        for (i, scheme) in SCHEMES.into_iter().enumerate() {
            let generator = Generator::new(scheme)?;
            db.reset(scheme.table()).await?;
            let mut points = Vec::new();
            for checkpoint in 1..=checkpoints {
                let mut keys = Vec::with_capacity(step as usize);
                for _ in 0..step {
                    keys.push(generator.key().await?);
                }
                let started = Instant::now();
                db.insert(scheme.table(), &keys).await?;
                let rate = step as f64 / started.elapsed().as_secs_f64();
                points.push(((checkpoint * step) as f64, rate));
                ctx.progress.inc(1);
            }
            db.drop_table(scheme.table()).await?;
            let last = points.last().map_or(0.0, |p| p.1);
            final_rates[i].push(last);
            rows[i].push(format!("{last:.0}"));
            series.push(Series { name: format!("{} ({})", scheme.name(), db.name()), points });
        }
    }

    let mut findings = Vec::new();
    for (d, db) in dbs.iter().enumerate() {
        let v4 = final_rates[2].get(d).copied().unwrap_or(0.0);
        let v7 = final_rates[3].get(d).copied().unwrap_or(0.0);
        if v4 > 0.0 {
            findings.push(format!(
                "{}: at {} rows, time-ordered UUIDv7 keys insert {:.2}x as fast as random UUIDv4 keys",
                db.name(),
                rows_total,
                v7 / v4
            ));
        }
    }
    findings.push(format!(
        "generation: UUIDv7 {:.1}M/s vs UUIDv4 {:.1}M/s on one thread; Snowflake is capped at 4.096M/s per machine id",
        rates[3] / 1e6,
        rates[2] / 1e6
    ));

    Ok(Report {
        experiment: "ids".into(),
        ran_at: super::now_rfc3339(),
        parameters: json!({
            "quick": ctx.options.quick,
            "generated_per_scheme": generate_n,
            "rows_per_table": rows_total,
            "checkpoints": checkpoints,
            "row_payload_bytes": 64,
            "engines": dbs.iter().map(Db::name).collect::<Vec<_>>(),
        }),
        columns,
        rows,
        plot: Some(Plot {
            title: "B-tree primary-key insert rate as the table grows".into(),
            x_label: "rows in table".into(),
            y_label: "inserts per second".into(),
            series,
            log_x: false,
            log_y: false,
        }),
        findings,
        more_plots: Vec::new(),
    })
}
