//! Change data capture (Pattern: Change Data Capture (CDC) for Data Sync, feature
//! `sql`): the committed inserts, updates and deletes of chosen tables, with before
//! and after images, streamed to consumers that each keep their own position — a
//! search index, a cache, a hub of live subscribers kept in step with the database.
//!
//! **Guarantee.** A [`Consumer`] receives every change committed to a captured table
//! after it was first opened, in commit order, at least once: [`Consumer::poll`]
//! returns the changes after the last one it delivered in whole transactions, and
//! [`Consumer::ack`] stores a position durably, so a consumer opened again under the
//! same name resumes after its last acknowledgement — never before it, and a change
//! after it may come again (deduplicate by [`Change::position`]). Rolled-back writes
//! are never delivered.
//!
//! **Engines.** SQLite: triggers write each change into `girder_cdc_changes` inside
//! the writing transaction (module `sqlite`). PostgreSQL: logical decoding of the WAL
//! through a `pgoutput` replication slot per consumer (module `postgres`; needs
//! `wal_level = logical`).
//!
//! **Trade-off.** Capture costs every write: SQLite writes a change row with two JSON
//! images per row written; PostgreSQL logs whole before images (`REPLICA IDENTITY
//! FULL`). A consumer that stops reading holds history back — change rows that cannot
//! be pruned, or WAL its slot keeps from being recycled, without limit — so
//! [`Capture::stale_consumers`] reports them and [`Capture::drop_consumer`] lets
//! them go. On SQLite a commit group ([`Change::txn`]) may join several transactions
//! committed between two reads (SQL cannot see where a transaction ends); on
//! PostgreSQL it is exactly one. The schema is read when capture is installed: after
//! adding a column to a SQLite table, install again.
//!
//! ```no_run
//! # async fn f(db: girder_sql::Db) -> Result<(), Box<dyn std::error::Error>> {
//! use girder_realtime::cdc::{Capture, ConsumerConfig};
//! let capture = Capture::open(db, std::sync::Arc::new(girder_core::SystemClock)).await?;
//! capture.install("comments").await?;
//! let mut consumer = capture.consumer("live_comments", ConsumerConfig::default()).await?;
//! loop {
//!     let changes = consumer.next(100, None).await?;
//!     for change in &changes {
//!         println!("{} {} {:?}", change.table, change.op.as_str(), change.after);
//!     }
//!     consumer.ack(changes.last().expect("next waits for one").position).await?;
//! }
//! # }
//! ```

mod change;
mod error;
mod name;
mod pgoutput;
mod postgres;
mod sqlite;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use girder_core::Clock;
use girder_sql::{Db, on_db};
use tokio::sync::Notify;

pub use change::{CdcPosition, Change, Op, PositionParseError};
pub use error::{AckError, DropError, InstallError, OpenError, PollError};
pub use pgoutput::DecodeError;

/// The PostgreSQL publication holding the captured tables.
pub const PUBLICATION: &str = "girder_cdc";

/// Change capture's tables: version 911 (pattern crates take 900–999).
#[must_use]
pub fn migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "realtime-cdc",
        sqlite: sqlx::migrate!("migrations/sqlite"),
        postgres: sqlx::migrate!("migrations/postgres"),
    }
}

fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A consumer's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Most changes one poll asks for (a larger `max` is cut to this). A poll may
    /// return more only to finish the transaction it is in — on SQLite never more
    /// than this, so a commit group longer than this comes over several polls; on
    /// PostgreSQL, which decodes whole transactions, one transaction may exceed it.
    /// Default 1,000.
    pub max_changes_per_poll: usize,
    /// How long [`Consumer::next`] waits between polls when nothing wakes it.
    /// Default 1,000 ms.
    pub poll_interval_ms: u64,
    /// How often a poll records that the consumer reads (`read_at`, which
    /// [`Capture::stale_consumers`] compares): a write at most this often. Default
    /// 10,000 ms.
    pub read_at_interval_ms: u64,
    /// PostgreSQL: most decoded rows of delivered but unacknowledged transactions a
    /// poll decodes again before it refuses with [`PollError::Backlog`]. Default
    /// 100,000.
    pub max_decode_rows: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_changes_per_poll: 1_000,
            poll_interval_ms: 1_000,
            read_at_interval_ms: 10_000,
            max_decode_rows: 100_000,
        }
    }
}

/// A consumer (or, on PostgreSQL, any replication slot) holding history back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleConsumer {
    /// The consumer's (slot's) name.
    pub name: String,
    /// PostgreSQL: a session is reading the slot now. SQLite: always false.
    pub active: bool,
    /// When it last read, ms since the Unix epoch; `None` for a slot Girder did not
    /// make.
    pub read_at_ms: Option<u64>,
    /// PostgreSQL: bytes of WAL the slot keeps from being recycled.
    pub retained_bytes: Option<u64>,
    /// SQLite: changes after its position, which pruning must keep.
    pub retained_changes: Option<u64>,
}

/// Change capture on one database: which tables are captured, the consumers, and
/// pruning. Clones share the pool.
#[derive(Clone)]
pub struct Capture {
    db: Db,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("engine", &self.db.engine()).finish_non_exhaustive()
    }
}

impl Capture {
    /// Capture on `db`, applying its [`migrations`] first; `clock` dates reads.
    ///
    /// # Errors
    /// The migrations failed.
    pub async fn open(db: Db, clock: Arc<dyn Clock>) -> Result<Self, girder_sql::migrate::Error> {
        girder_sql::migrate::run(&db, migrations()).await?;
        Ok(Self { db, clock })
    }

    /// The database.
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.db
    }

    fn now_ms(&self) -> i64 {
        clamp_i64(self.clock.now_ms())
    }

    /// Captures `table` from now on (SQLite: makes its triggers again, so installing
    /// twice is harmless and picks up new columns; PostgreSQL: adds it to
    /// [`PUBLICATION`] with replica identity full).
    ///
    /// # Errors
    /// [`InstallError::InvalidTable`], [`InstallError::UnknownTable`],
    /// [`InstallError::UnsupportedColumn`]; the database failed.
    pub async fn install(&self, table: &str) -> Result<(), InstallError> {
        match &self.db {
            Db::Sqlite(pool) => sqlite::install(pool, table).await,
            Db::Postgres(pool) => postgres::install(pool, table).await,
        }
    }

    /// Stops capturing `table`; `false` when it was not captured.
    ///
    /// # Errors
    /// [`InstallError::InvalidTable`]; the database failed.
    pub async fn uninstall(&self, table: &str) -> Result<bool, InstallError> {
        match &self.db {
            Db::Sqlite(pool) => sqlite::uninstall(pool, table).await,
            Db::Postgres(pool) => postgres::uninstall(pool, table).await,
        }
    }

    /// The captured tables, sorted.
    ///
    /// # Errors
    /// The database failed.
    pub async fn tables(&self) -> Result<Vec<String>, sqlx::Error> {
        match &self.db {
            Db::Sqlite(pool) => sqlite::tables(pool).await,
            Db::Postgres(pool) => postgres::tables(pool).await,
        }
    }

    /// Opens consumer `name`, registering it if new: a new consumer starts with
    /// the changes committed after this call (PostgreSQL: creates its slot, waiting
    /// for transactions in flight to end); an existing one resumes after its last
    /// acknowledgement. Open one consumer per name at a time. On PostgreSQL the name
    /// is the slot's, unique in the whole server.
    ///
    /// # Errors
    /// [`OpenError::InvalidName`], [`OpenError::WalLevel`],
    /// [`OpenError::SlotMissing`], [`OpenError::ForeignSlot`]; the database failed.
    pub async fn consumer(
        &self,
        name: &str,
        config: ConsumerConfig,
    ) -> Result<Consumer, OpenError> {
        if !name::is_consumer_name(name) {
            return Err(OpenError::InvalidName(name.to_owned()));
        }
        let now = self.now_ms();
        let (acked, engine) = match &self.db {
            Db::Sqlite(pool) => (sqlite::open(pool, name, now).await?, Engine::Sqlite),
            Db::Postgres(pool) => {
                let (acked, state) = postgres::open(pool, name, now).await?;
                (acked, Engine::Postgres(state))
            }
        };
        Ok(Consumer {
            capture: self.clone(),
            name: name.to_owned(),
            config,
            acked,
            cursor: acked,
            read_at_ms: now,
            engine,
        })
    }

    /// SQLite: deletes at most `max_rows` of the oldest changes every consumer has
    /// acknowledged (with no consumer, every change: a new consumer starts after
    /// them). Returns how many. PostgreSQL: 0 — the server recycles WAL itself once
    /// every slot has moved past it.
    ///
    /// # Errors
    /// The database failed.
    pub async fn prune(&self, max_rows: u64) -> Result<u64, sqlx::Error> {
        match &self.db {
            Db::Sqlite(pool) => sqlite::prune(pool, max_rows).await,
            Db::Postgres(_) => Ok(0),
        }
    }

    /// Consumers not read for `idle_ms` or more, with what they hold back; on
    /// PostgreSQL also any slot of this database (or physical slot) that nobody
    /// reads and Girder did not make.
    ///
    /// # Errors
    /// The database failed.
    pub async fn stale_consumers(&self, idle_ms: u64) -> Result<Vec<StaleConsumer>, sqlx::Error> {
        let read_before = self.now_ms().saturating_sub(clamp_i64(idle_ms)).saturating_add(1);
        match &self.db {
            Db::Sqlite(pool) => sqlite::stale(pool, read_before).await,
            Db::Postgres(pool) => postgres::stale(pool, read_before).await,
        }
    }

    /// Removes consumer `name` and its position (PostgreSQL: drops its slot, which
    /// frees the WAL it held). `false` when there was no such consumer.
    ///
    /// # Errors
    /// [`DropError::InvalidName`], [`DropError::Active`]; the database failed.
    pub async fn drop_consumer(&self, name: &str) -> Result<bool, DropError> {
        if !name::is_consumer_name(name) {
            return Err(DropError::InvalidName(name.to_owned()));
        }
        match &self.db {
            Db::Sqlite(pool) => Ok(sqlite::drop_consumer(pool, name).await?),
            Db::Postgres(pool) => postgres::drop_consumer(pool, name).await,
        }
    }
}

#[derive(Debug)]
enum Engine {
    Sqlite,
    Postgres(postgres::State),
}

/// One named reader of the change stream, with a stored position. See the
/// [module docs](self) for the guarantee.
#[derive(Debug)]
pub struct Consumer {
    capture: Capture,
    name: String,
    config: ConsumerConfig,
    /// The stored position: everything up to it is processed.
    acked: CdcPosition,
    /// The last change delivered (at least `acked`).
    cursor: CdcPosition,
    /// When `read_at` was last stored.
    read_at_ms: i64,
    engine: Engine,
}

impl Consumer {
    /// The consumer's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last acknowledged position (where a reopened consumer resumes).
    #[must_use]
    pub const fn acked(&self) -> CdcPosition {
        self.acked
    }

    /// The position of the last change delivered.
    #[must_use]
    pub const fn delivered(&self) -> CdcPosition {
        self.cursor
    }

    /// The changes committed after the last one delivered, oldest first, in whole
    /// transactions: about `max` (at most [`ConsumerConfig::max_changes_per_poll`]),
    /// more only to finish a transaction; empty when there is nothing new.
    ///
    /// # Errors
    /// [`PollError::Dropped`], [`PollError::Busy`], [`PollError::Backlog`],
    /// [`PollError::Decode`]; the database failed. Nothing is delivered then.
    pub async fn poll(&mut self, max: usize) -> Result<Vec<Change>, PollError> {
        let max = max.clamp(1, self.config.max_changes_per_poll.max(1));
        let now = self.capture.now_ms();
        if now.saturating_sub(self.read_at_ms) >= clamp_i64(self.config.read_at_interval_ms) {
            let name = &self.name;
            let live = on_db!(&self.capture.db, |pool| {
                sqlx::query("UPDATE girder_cdc_consumers SET read_at = $2 WHERE name = $1")
                    .bind(name)
                    .bind(now)
                    .execute(pool)
                    .await?
                    .rows_affected()
                    > 0
            });
            if !live {
                return Err(PollError::Dropped(self.name.clone()));
            }
            self.read_at_ms = now;
        }
        let changes = match (&self.capture.db, &mut self.engine) {
            (Db::Sqlite(pool), Engine::Sqlite) => {
                let cap = self.config.max_changes_per_poll.max(max);
                sqlite::poll(pool, self.cursor, max, cap).await?
            }
            (Db::Postgres(pool), Engine::Postgres(state)) => {
                let max_rows = self.config.max_decode_rows.max(1);
                postgres::poll(pool, &self.name, state, self.acked, self.cursor, max, max_rows)
                    .await?
            }
            _ => unreachable!("a consumer's engine is its database's"),
        };
        if let Some(last) = changes.last() {
            debug_assert!(changes.windows(2).all(|w| w[0].position < w[1].position));
            debug_assert!(changes[0].position > self.cursor, "redelivered {}", self.cursor);
            self.cursor = last.position;
        }
        Ok(changes)
    }

    /// Like [`Consumer::poll`], but waits until there is at least one change:
    /// polling every [`ConsumerConfig::poll_interval_ms`], and at once when `wake`
    /// is notified (a writer in this process can `notify_waiters` after committing).
    /// Cancel it by dropping the future.
    ///
    /// # Errors
    /// As [`Consumer::poll`].
    pub async fn next(
        &mut self,
        max: usize,
        wake: Option<&Notify>,
    ) -> Result<Vec<Change>, PollError> {
        let interval = Duration::from_millis(self.config.poll_interval_ms.max(1));
        loop {
            // Listening before polling, so a notification during the poll counts.
            let mut notified = pin!(wake.map(Notify::notified));
            if let Some(notified) = notified.as_mut().as_pin_mut() {
                notified.enable();
            }
            let changes = self.poll(max).await?;
            if !changes.is_empty() {
                return Ok(changes);
            }
            match notified.as_pin_mut() {
                Some(notified) => drop(tokio::time::timeout(interval, notified).await),
                None => tokio::time::sleep(interval).await,
            }
        }
    }

    /// Stores `position` (a delivered change's) as processed: a consumer opened
    /// again under this name resumes after it. Acknowledging a position at or before
    /// the stored one changes nothing. On PostgreSQL the slot moves past every
    /// transaction acknowledged to its end, freeing its WAL.
    ///
    /// # Errors
    /// [`AckError::Ahead`] for a position after the last delivered change,
    /// [`AckError::Dropped`]; the database failed.
    pub async fn ack(&mut self, position: CdcPosition) -> Result<(), AckError> {
        if position <= self.acked {
            return Ok(());
        }
        if position > self.cursor {
            return Err(AckError::Ahead { position, delivered: self.cursor });
        }
        let now = self.capture.now_ms();
        match (&self.capture.db, &mut self.engine) {
            (Db::Sqlite(pool), Engine::Sqlite) => {
                sqlite::ack(pool, &self.name, position, now).await?
            }
            (Db::Postgres(pool), Engine::Postgres(state)) => {
                postgres::ack(pool, &self.name, state, position, now).await?;
            }
            _ => unreachable!("a consumer's engine is its database's"),
        }
        self.acked = position;
        self.read_at_ms = now;
        Ok(())
    }

    /// Forgets what was delivered since the last acknowledgement, so the next poll
    /// delivers it again (after a failure to process it).
    pub fn rewind(&mut self) {
        self.cursor = self.acked;
        if let Engine::Postgres(state) = &mut self.engine {
            state.rewind();
        }
    }
}
