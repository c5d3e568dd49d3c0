//! Pattern: Database Read Replicas. [`ReadRouter`] sends writes to the primary and
//! reads to PostgreSQL streaming replicas, with **read-your-writes** for reads that
//! carry the [`WriteToken`] of an earlier write.
//!
//! - **Writes** go to the primary. [`ReadRouter::token`] (or [`ReadRouter::write`],
//!   which calls it) then reads the primary's WAL *insert* position: every record
//!   the committed transaction wrote lies before it.
//! - **Reads without a token** go round robin to the healthy replicas, and to the
//!   primary when there are none. They may be stale by the replicas' lag: the
//!   catalogue's eventual consistency.
//! - **Reads with a token** go to a healthy replica known to have replayed the
//!   token's position; failing that, they wait — at most `read_your_writes_wait_ms`,
//!   re-reading `pg_last_wal_replay_lsn()` every `catch_up_poll_ms` — for the
//!   unpaused replica that is furthest along, and otherwise go to the primary. A
//!   read therefore sees its own writes whichever way it goes.
//! - **A monitor** ([`ReadRouter::monitor`], a loop the server runs and joins) probes
//!   every replica each `monitor_interval_ms`: its replay position, whether replay is
//!   paused, and its lag behind the primary in bytes and seconds, exported as
//!   `girder_sql_replica_lag_bytes`, `girder_sql_replica_lag_seconds` and
//!   `girder_sql_replica_healthy` with a `replica="host:port/db"` label. A replica
//!   that cannot be reached, is not in recovery, or is more than `lag_bytes_max`
//!   behind is skipped until a probe finds it well again. A read that fails on a
//!   replica for want of a connection (or is cancelled by a recovery conflict) is
//!   retried elsewhere, so a replica going down changes where reads go, never what
//!   they answer.
//!
//! **On SQLite**, the embedded default, there are no replicas: every read goes to the
//! one database, tokens are [`WriteToken::Primary`], and nothing is probed.
//!
//! Why the insert position and not `pg_current_wal_lsn()` (the write position): with
//! `synchronous_commit = off` a commit returns before its record is written out, so
//! the write position read just after it can lie *before* the commit; a replica that
//! reached it could still miss the write. The insert position is past every record
//! already inserted, the commit included, whatever the commit mode. Its price: it may
//! also cover WAL of other sessions' transactions still in flight, so a token read may
//! wait a little longer (or go to the primary) while they flush.
//!
//! Connection budget: each replica has its own small pool (`max_connections`, 4 by
//! default); the replica is a separate server with its own `max_connections`, so this
//! does not eat into the primary's budget.

mod health;
mod lsn;

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use health::{Health, ReplicaStatus};
pub use lsn::{Lsn, LsnParseError, WriteToken};

use crate::Db;
use health::Replica;

/// How replicas are pooled, probed and waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Connections per replica pool (1–1,024). Default 4.
    pub max_connections: u32,
    /// How long a read or a probe waits for a replica connection before the replica
    /// counts as down (1–600,000 ms). Default 1,000 ms.
    pub acquire_timeout_ms: u64,
    /// How long a read carrying a token waits for a replica to replay it before it
    /// goes to the primary (0–60,000 ms; 0: never wait). Default 50 ms.
    pub read_your_writes_wait_ms: u64,
    /// While waiting, how often the replica's replay position is re-read (1–10,000
    /// ms). Default 2 ms.
    pub catch_up_poll_ms: u64,
    /// How often the monitor probes every replica (10–3,600,000 ms). Default 500 ms.
    pub monitor_interval_ms: u64,
    /// A replica further behind the primary than this many bytes of WAL is skipped.
    /// Default 16 MiB.
    pub lag_bytes_max: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            max_connections: 4,
            acquire_timeout_ms: 1_000,
            read_your_writes_wait_ms: 50,
            catch_up_poll_ms: 2,
            monitor_interval_ms: 500,
            lag_bytes_max: 16 * 1024 * 1024,
        }
    }
}

impl ReplicaConfig {
    /// Checks every bound.
    ///
    /// # Errors
    /// [`ReplicaError::Config`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), ReplicaError> {
        let checks: [(&'static str, &'static str, bool); 5] = [
            ("max_connections", "1..=1024", (1..=1_024).contains(&self.max_connections)),
            ("acquire_timeout_ms", "1..=600000", (1..=600_000).contains(&self.acquire_timeout_ms)),
            ("read_your_writes_wait_ms", "0..=60000", self.read_your_writes_wait_ms <= 60_000),
            ("catch_up_poll_ms", "1..=10000", (1..=10_000).contains(&self.catch_up_poll_ms)),
            (
                "monitor_interval_ms",
                "10..=3600000",
                (10..=3_600_000).contains(&self.monitor_interval_ms),
            ),
        ];
        match checks.into_iter().find(|(_, _, ok)| !ok) {
            Some((setting, range, _)) => Err(ReplicaError::Config { setting, range }),
            None => Ok(()),
        }
    }
}

/// Why a [`ReadRouter`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// Replicas were given but the primary is SQLite, which has none.
    #[error("read replicas need a PostgreSQL primary; the primary is {engine}")]
    NotPostgres {
        /// The primary's engine.
        engine: &'static str,
    },
    /// Replica `index` (from 0) is not a `postgres://` URL.
    #[error("replica {index} is not a postgres:// or postgresql:// URL")]
    UnsupportedUrl {
        /// Its place in the list.
        index: usize,
    },
    /// Replica `index` (from 0) does not parse as a PostgreSQL URL.
    #[error("replica {index}: malformed URL")]
    BadUrl {
        /// Its place in the list.
        index: usize,
        /// The driver's complaint.
        #[source]
        source: sqlx::Error,
    },
    /// A setting is out of its range.
    #[error("replica setting {setting} must be in {range}")]
    Config {
        /// The setting's name in [`ReplicaConfig`].
        setting: &'static str,
        /// Its allowed range.
        range: &'static str,
    },
}

/// Why a read went to the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrimaryBecause {
    /// No replica is configured (SQLite, or none given) or none is healthy.
    NoReplica,
    /// The token was [`WriteToken::Primary`].
    TokenNeedsPrimary,
    /// No replica replayed the token's position within `read_your_writes_wait_ms`.
    NotCaughtUp,
    /// The read failed on every replica tried for want of a connection, or was
    /// cancelled there by a recovery conflict.
    ReplicaFailed,
}

impl PrimaryBecause {
    const ALL: [Self; 4] =
        [Self::NoReplica, Self::TokenNeedsPrimary, Self::NotCaughtUp, Self::ReplicaFailed];

    const fn label(self) -> &'static str {
        match self {
            Self::NoReplica => "primary_no_replica",
            Self::TokenNeedsPrimary => "primary_token",
            Self::NotCaughtUp => "primary_not_caught_up",
            Self::ReplicaFailed => "primary_replica_failed",
        }
    }
}

/// Which database served a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The replica at this index of the router's list.
    Replica(usize),
    /// The primary, and why.
    Primary(PrimaryBecause),
}

/// A read's value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read<T> {
    /// What the read returned.
    pub value: T,
    /// Which database answered.
    pub served: Served,
}

/// Routes writes to the primary and reads to replicas (see the module docs). Clones
/// share the pools, the replicas' state and the round-robin position.
#[derive(Clone)]
pub struct ReadRouter {
    inner: Arc<Inner>,
}

struct Inner {
    primary: Db,
    replicas: Vec<Replica>,
    config: ReplicaConfig,
    next: AtomicUsize,
    /// `girder_sql_reads_total{route=replica}`, then one per [`PrimaryBecause::ALL`].
    reads: [metrics::Counter; 5],
}

impl std::fmt::Debug for ReadRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self.inner.replicas.iter().map(|r| r.label.as_str()).collect();
        f.debug_struct("ReadRouter")
            .field("primary", &self.inner.primary.engine())
            .field("replicas", &labels)
            .finish_non_exhaustive()
    }
}

/// What to do after a read failed on a replica.
enum Failure {
    /// The replica is unreachable: mark it down, read elsewhere.
    Unavailable,
    /// The replica cancelled the read (a recovery conflict): read elsewhere.
    Conflict,
    /// The statement itself failed: the caller's error.
    Statement,
}

fn failure<E: std::error::Error + 'static>(error: &E) -> Failure {
    use sqlx::Error as X;
    match girder_core::error::source_of::<sqlx::Error>(error) {
        Some(
            X::Io(_)
            | X::PoolTimedOut
            | X::PoolClosed
            | X::Tls(_)
            | X::Protocol(_)
            | X::WorkerCrashed,
        ) => Failure::Unavailable,
        Some(X::Database(db)) => match db.code().as_deref() {
            // connection_exception, admin/crash shutdown, cannot_connect_now
            Some(code) if code.starts_with("08") || code.starts_with("57P") => Failure::Unavailable,
            // A standby cancels queries that conflict with replay as a serialization
            // failure or a deadlock.
            Some("40001" | "40P01") => Failure::Conflict,
            _ => Failure::Statement,
        },
        _ => Failure::Statement,
    }
}

/// `host:port/database` of a replica, for labels and logs: never its credentials.
fn label(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or(options.get_username())
    )
}

impl ReadRouter {
    /// A router with no replicas: every read goes to `primary` (SQLite, or a
    /// PostgreSQL without replicas).
    #[must_use]
    pub fn primary_only(primary: Db) -> Self {
        Self::build(primary, Vec::new(), ReplicaConfig::default())
    }

    /// A router over `primary` and a pool per replica URL, probed once before this
    /// returns. A replica that cannot be reached is not an error: it starts as
    /// [`Health::Down`] and the monitor brings it in when it comes up.
    ///
    /// # Errors
    /// Replicas with a SQLite primary, a URL that is not PostgreSQL's or does not
    /// parse, a setting out of range.
    pub async fn connect(
        primary: Db,
        replica_urls: &[impl AsRef<str>],
        config: ReplicaConfig,
    ) -> Result<Self, ReplicaError> {
        config.validate()?;
        if replica_urls.is_empty() {
            return Ok(Self::build(primary, Vec::new(), config));
        }
        if !matches!(primary, Db::Postgres(_)) {
            return Err(ReplicaError::NotPostgres { engine: primary.engine() });
        }
        let mut replicas = Vec::with_capacity(replica_urls.len());
        for (index, url) in replica_urls.iter().enumerate() {
            let url = url.as_ref();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ReplicaError::UnsupportedUrl { index });
            }
            let options = PgConnectOptions::from_str(url)
                .map_err(|source| ReplicaError::BadUrl { index, source })?;
            let label = label(&options);
            // Lazy: a replica that is down at start-up must not stop the server.
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
                .connect_lazy_with(options);
            replicas.push(Replica::new(Db::Postgres(pool), label));
        }
        let router = Self::build(primary, replicas, config);
        router.refresh().await;
        Ok(router)
    }

    fn build(primary: Db, replicas: Vec<Replica>, config: ReplicaConfig) -> Self {
        let counter =
            |route: &'static str| metrics::counter!("girder_sql_reads_total", "route" => route);
        let [a, b, c, d] = PrimaryBecause::ALL.map(|why| counter(why.label()));
        let reads = [counter("replica"), a, b, c, d];
        Self {
            inner: Arc::new(Inner { primary, replicas, config, next: AtomicUsize::new(0), reads }),
        }
    }

    /// The primary: every write goes here.
    #[must_use]
    pub fn primary(&self) -> &Db {
        &self.inner.primary
    }

    /// The router's settings.
    #[must_use]
    pub fn config(&self) -> &ReplicaConfig {
        &self.inner.config
    }

    /// The state of every replica, in the order they were given.
    #[must_use]
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.inner.replicas.iter().map(Replica::status).collect()
    }

    /// The token for the writes committed so far: call it after the commit. Without
    /// replicas it is [`WriteToken::Primary`] and costs nothing; if the primary's
    /// position cannot be read it is `Primary` too (the write has committed, so the
    /// conservative token is the useful answer).
    pub async fn token(&self) -> WriteToken {
        if self.inner.replicas.is_empty() {
            return WriteToken::Primary;
        }
        match self.primary_lsn("SELECT pg_current_wal_insert_lsn()::text").await {
            Ok(lsn) => WriteToken::After(lsn),
            Err(error) => {
                tracing::warn!(%error, "reading the primary's WAL position; reads go to it");
                WriteToken::Primary
            }
        }
    }

    async fn primary_lsn(&self, sql: &'static str) -> Result<Lsn, sqlx::Error> {
        let Db::Postgres(pool) = &self.inner.primary else {
            return Err(sqlx::Error::Configuration("the primary is not PostgreSQL".into()));
        };
        let text: String = sqlx::query_scalar(sql).fetch_one(pool).await?;
        text.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }

    /// Runs `write` on the primary, then takes the [`token`](Self::token) of what it
    /// committed.
    ///
    /// # Errors
    /// Whatever `write` returns; the token itself never fails.
    pub async fn write<T, E, F, Fut>(&self, write: F) -> Result<(T, WriteToken), E>
    where
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let value = write(self.inner.primary.clone()).await?;
        Ok((value, self.token().await))
    }

    /// Runs `read` on a replica, or on the primary when no replica is healthy. The
    /// answer may be as stale as the replica's lag; use [`Self::read_after`] to see
    /// your own writes.
    ///
    /// `read` may run more than once (on another database after a replica failed),
    /// so it must not write.
    ///
    /// # Errors
    /// `read`'s error from the database that ran it last.
    pub async fn read<T, E, F, Fut>(&self, read: F) -> Result<Read<T>, E>
    where
        F: Fn(Db) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        self.route(None, read).await
    }

    /// Runs `read` where it sees every write `token` covers: a replica that has
    /// replayed that far (waiting for one at most `read_your_writes_wait_ms`), else
    /// the primary.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub async fn read_after<T, E, F, Fut>(&self, token: WriteToken, read: F) -> Result<Read<T>, E>
    where
        F: Fn(Db) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        match token {
            WriteToken::After(lsn) => self.route(Some(lsn), read).await,
            WriteToken::Primary => self.on_primary(PrimaryBecause::TokenNeedsPrimary, read).await,
        }
    }

    async fn on_primary<T, E, F, Fut>(&self, why: PrimaryBecause, read: F) -> Result<Read<T>, E>
    where
        F: Fn(Db) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let value = read(self.inner.primary.clone()).await?;
        let at = PrimaryBecause::ALL.iter().position(|w| *w == why).map_or(0, |i| i + 1);
        self.inner.reads[at].increment(1);
        Ok(Read { value, served: Served::Primary(why) })
    }

    /// Runs `read` on replica `index`; `Ok(None)` when the replica could not serve it
    /// and another database should.
    async fn on_replica<T, E, F, Fut>(&self, index: usize, read: &F) -> Result<Option<Read<T>>, E>
    where
        F: Fn(Db) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        let replica = &self.inner.replicas[index];
        match read(replica.db.clone()).await {
            Ok(value) => {
                self.inner.reads[0].increment(1);
                Ok(Some(Read { value, served: Served::Replica(index) }))
            }
            Err(error) => match failure(&error) {
                Failure::Statement => Err(error),
                Failure::Conflict => Ok(None),
                Failure::Unavailable => {
                    let label = &replica.label;
                    tracing::warn!(replica = %label, %error, "replica read failed; skipping it");
                    replica.mark_down();
                    Ok(None)
                }
            },
        }
    }

    async fn route<T, E, F, Fut>(&self, after: Option<Lsn>, read: F) -> Result<Read<T>, E>
    where
        F: Fn(Db) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        let replicas = &self.inner.replicas;
        let n = replicas.len();
        if n == 0 {
            return self.on_primary(PrimaryBecause::NoReplica, read).await;
        }
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut tried_any = false;
        // Round robin over the healthy replicas that already have what the read needs.
        for index in (0..n).map(|i| (start + i) % n) {
            let replica = &replicas[index];
            if !replica.eligible() || after.is_some_and(|lsn| replica.known_replay() < lsn) {
                continue;
            }
            tried_any = true;
            if let Some(done) = self.on_replica(index, &read).await? {
                return Ok(done);
            }
        }
        let why = match after {
            None if tried_any => PrimaryBecause::ReplicaFailed,
            None => PrimaryBecause::NoReplica,
            Some(lsn) => match self.wait_for(lsn).await {
                Some(index) => match self.on_replica(index, &read).await? {
                    Some(done) => return Ok(done),
                    None => PrimaryBecause::ReplicaFailed,
                },
                None if tried_any => PrimaryBecause::ReplicaFailed,
                None => PrimaryBecause::NotCaughtUp,
            },
        };
        self.on_primary(why, read).await
    }

    /// Waits, at most `read_your_writes_wait_ms`, for the healthy, unpaused replica
    /// that is furthest along to replay `lsn`; its index if it did.
    async fn wait_for(&self, lsn: Lsn) -> Option<usize> {
        let config = &self.inner.config;
        if config.read_your_writes_wait_ms == 0 {
            return None;
        }
        let (index, replica) = self
            .inner
            .replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.eligible() && !r.paused())
            .max_by_key(|(_, r)| r.known_replay())?;
        let poll = Duration::from_millis(config.catch_up_poll_ms);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(config.read_your_writes_wait_ms);
        // Bounded: every round sleeps `poll` (at least 1 ms) and none starts past the
        // deadline.
        loop {
            match tokio::time::timeout_at(deadline, replica.replay_lsn()).await {
                Ok(Ok(Some(replayed))) => {
                    replica.observed(replayed);
                    if replayed >= lsn {
                        return Some(index);
                    }
                }
                Ok(Ok(None)) | Err(_) => return None,
                Ok(Err(error)) => {
                    if matches!(failure(&error), Failure::Unavailable) {
                        replica.mark_down();
                    }
                    return None;
                }
            }
            if tokio::time::Instant::now() + poll >= deadline {
                return None;
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Probes every replica once (concurrently, each bounded by
    /// `acquire_timeout_ms`) and updates its health, lag and gauges.
    pub async fn refresh(&self) {
        let replicas = &self.inner.replicas;
        if replicas.is_empty() {
            return;
        }
        let config = &self.inner.config;
        let timeout = Duration::from_millis(config.acquire_timeout_ms);
        let primary = match self.primary_lsn("SELECT pg_current_wal_lsn()::text").await {
            Ok(lsn) => Some(lsn),
            Err(error) => {
                tracing::warn!(%error, "reading the primary's WAL position for replica lag");
                None
            }
        };
        let probes = replicas.iter().map(|replica| async move {
            let probe = tokio::time::timeout(timeout, replica.probe())
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut));
            replica.record(probe, primary, config.lag_bytes_max);
        });
        futures_util::future::join_all(probes).await;
    }

    /// Closes every replica pool, waiting for reads in flight; the primary is its
    /// owner's to close.
    pub async fn close_replicas(&self) {
        for replica in &self.inner.replicas {
            replica.db.close().await;
        }
    }

    /// Probes every replica each `monitor_interval_ms` until `stop` resolves. The
    /// caller runs it (e.g. spawns it and joins it at shutdown); without replicas it
    /// just waits for `stop`.
    pub async fn monitor(&self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        if self.inner.replicas.is_empty() {
            return stop.await;
        }
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.inner.config.monitor_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => self.refresh().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_is_checked() {
        let check = |edit: fn(&mut ReplicaConfig), setting: &str| {
            let mut config = ReplicaConfig::default();
            edit(&mut config);
            match config.validate() {
                Err(ReplicaError::Config { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("{setting}: {other:?}"),
            }
        };
        assert!(ReplicaConfig::default().validate().is_ok());
        check(|c| c.max_connections = 0, "max_connections");
        check(|c| c.acquire_timeout_ms = 0, "acquire_timeout_ms");
        check(|c| c.read_your_writes_wait_ms = 60_001, "read_your_writes_wait_ms");
        check(|c| c.catch_up_poll_ms = 0, "catch_up_poll_ms");
        check(|c| c.monitor_interval_ms = 9, "monitor_interval_ms");
    }

    #[tokio::test]
    async fn on_sqlite_every_read_goes_to_the_one_database_and_replicas_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite:{}", dir.path().join("r.db").display());
        let db = Db::connect(&url, crate::PoolConfig::default()).await.expect("sqlite");
        let none: &[&str] = &[];
        let router =
            ReadRouter::connect(db.clone(), none, ReplicaConfig::default()).await.expect("router");
        let ((), token) = router.write(async |_db| Ok::<_, sqlx::Error>(())).await.expect("write");
        assert_eq!(token, WriteToken::Primary);
        let select = async |db: Db| -> Result<i64, sqlx::Error> {
            crate::on_db!(&db, |pool| sqlx::query_scalar("SELECT 7").fetch_one(pool).await)
        };
        let read = router.read(select).await.expect("read");
        assert_eq!(read, Read { value: 7, served: Served::Primary(PrimaryBecause::NoReplica) });
        let read = router.read_after(token, select).await.expect("read");
        assert_eq!(read.served, Served::Primary(PrimaryBecause::TokenNeedsPrimary));
        assert!(router.replicas().is_empty());

        let replica = ["postgres://postgres@127.0.0.1:5433/postgres"];
        let refused = ReadRouter::connect(db.clone(), &replica, ReplicaConfig::default()).await;
        assert!(matches!(refused, Err(ReplicaError::NotPostgres { engine: "sqlite" })));
    }

    #[tokio::test]
    async fn replica_urls_are_checked_before_anything_connects() {
        let primary = Db::Postgres(
            PgPoolOptions::new()
                .connect_lazy_with(PgConnectOptions::new().host("127.0.0.1").port(1)),
        );
        let config = ReplicaConfig::default();
        let connect = |urls: &'static [&'static str]| {
            let primary = primary.clone();
            async move { ReadRouter::connect(primary, urls, config).await }
        };
        let refused = connect(&["postgres://x/y", "sqlite:z.db"]).await;
        assert!(matches!(refused, Err(ReplicaError::UnsupportedUrl { index: 1 })));
        let refused = connect(&["postgres://host:notaport/db"]).await;
        assert!(matches!(refused, Err(ReplicaError::BadUrl { index: 0, .. })));
        let bad = ReplicaConfig { max_connections: 0, ..config };
        let refused = ReadRouter::connect(primary.clone(), &["postgres://x/y"], bad).await;
        assert!(matches!(refused, Err(ReplicaError::Config { setting: "max_connections", .. })));
    }

    #[test]
    fn labels_name_the_server_never_the_password() {
        let options =
            PgConnectOptions::from_str("postgres://u:secret@db.example:6543/app").expect("url");
        assert_eq!(label(&options), "db.example:6543/app");
    }
}
