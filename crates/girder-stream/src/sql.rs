//! Checkpoints, fenced partition leases and membership in girder-sql's database
//! (feature `sql`), so several instances share a pipeline's partitions.
//!
//! **Commit.** [`SqlCommitter`] writes a checkpoint and the sink's rows in one
//! transaction: the partition row is updated only where its epoch is the runner's
//! (a stale runner's transaction finds no row and rolls back), then the
//! [`SqlSink`] writes the emissions on the same connection.
//!
//! **Leases.** A partition is claimed by moving its epoch on, where its owner is
//! nobody, the claimant itself, or a member whose lease ran out; the new epoch is the
//! runner's fencing token. Holders renew; a holder that cannot renew stops.
//!
//! **Rebalance.** [`Coordinator`] keeps each member's heartbeat; the live members,
//! sorted, split the partitions round-robin (partition `p` goes to member
//! `p mod live`). When a member joins or leaves, each member stops the runners of
//! partitions no longer its own (they flush a last checkpoint and release the lease)
//! and claims its new ones as soon as their old holder has released them or its lease
//! has run out. A member that dies without releasing holds its partitions until the
//! lease expires.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use girder_core::Clock;
use girder_sql::{Db, on_db};

use crate::operator::Emission;
use crate::runner::{Checkpoint, Committer};

/// girder-stream's tables (version 901, among the server's own below 1,000).
#[must_use]
pub fn migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "stream",
        sqlite: sqlx::migrate!("migrations/sqlite"),
        postgres: sqlx::migrate!("migrations/postgres"),
    }
}

/// A database operation failed or was fenced off.
#[derive(Debug, thiserror::Error)]
pub enum SqlStreamError {
    /// The partition has moved to a newer epoch: another runner owns it.
    #[error("partition {partition} of {pipeline} is no longer held under epoch {epoch}")]
    Fenced {
        /// The pipeline.
        pipeline: String,
        /// The partition.
        partition: u32,
        /// The epoch that lost it.
        epoch: u64,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// One transaction's connection, on whichever engine.
#[derive(Debug)]
pub enum SqlTx<'a> {
    /// SQLite.
    Sqlite(&'a mut sqlx::SqliteConnection),
    /// PostgreSQL.
    Postgres(&'a mut sqlx::PgConnection),
}

/// Writes emissions inside the checkpoint's transaction. Writes must be upserts by
/// `(key, window)` (and deletes for retractions), so replays change nothing.
pub trait SqlSink<K, A>: Send + Sync + 'static {
    /// Writes `emissions` of `partition` on `tx`.
    fn write(
        &self,
        tx: SqlTx<'_>,
        partition: u32,
        emissions: &[Emission<K, A>],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// A pipeline's rows: leases, checkpoints, members.
#[derive(Clone)]
pub struct StreamStore {
    db: Db,
    pipeline: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for StreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamStore").field("pipeline", &self.pipeline).finish_non_exhaustive()
    }
}

fn now(clock: &dyn Clock) -> i64 {
    i64::try_from(clock.now_ms()).unwrap_or(i64::MAX)
}

impl StreamStore {
    /// The rows of `pipeline` in `db` (run [`migrations`] first).
    #[must_use]
    pub fn new(db: Db, pipeline: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self { db, pipeline: pipeline.into(), clock }
    }

    /// The pipeline's name.
    #[must_use]
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// Claims `partition` for `member` for `lease`: `Some(epoch)` when it was free, the
    /// member's own, or its holder's lease had run out; `None` while another member
    /// holds it.
    ///
    /// # Errors
    /// The database failed.
    pub async fn claim(
        &self,
        partition: u32,
        member: &str,
        lease: Duration,
    ) -> Result<Option<u64>, SqlStreamError> {
        let now = now(&*self.clock);
        let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let p = i64::from(partition);
        let epoch: Option<i64> = on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO girder_stream_partitions (pipeline, partition) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&self.pipeline)
            .bind(p)
            .execute(pool)
            .await?;
            sqlx::query_scalar(
                "UPDATE girder_stream_partitions SET epoch = epoch + 1, owner = $3, lease_until = $4 \
                 WHERE pipeline = $1 AND partition = $2 \
                 AND (owner IS NULL OR owner = $3 OR lease_until < $5) RETURNING epoch",
            )
            .bind(&self.pipeline)
            .bind(p)
            .bind(member)
            .bind(until)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        Ok(epoch.map(|e| e as u64))
    }

    /// Extends the lease of `partition` held under `epoch`.
    ///
    /// # Errors
    /// [`SqlStreamError::Fenced`] when the partition moved on; the database failed.
    pub async fn renew(
        &self,
        partition: u32,
        epoch: u64,
        lease: Duration,
    ) -> Result<(), SqlStreamError> {
        let until =
            now(&*self.clock).saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let rows = on_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE girder_stream_partitions SET lease_until = $4 \
                 WHERE pipeline = $1 AND partition = $2 AND epoch = $3 AND owner IS NOT NULL",
            )
            .bind(&self.pipeline)
            .bind(i64::from(partition))
            .bind(epoch as i64)
            .bind(until)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if rows == 1 { Ok(()) } else { Err(self.fenced(partition, epoch)) }
    }

    /// Gives `partition` up (a no-op when `epoch` already lost it).
    ///
    /// # Errors
    /// The database failed.
    pub async fn release(&self, partition: u32, epoch: u64) -> Result<(), SqlStreamError> {
        on_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE girder_stream_partitions SET owner = NULL, lease_until = 0 \
                 WHERE pipeline = $1 AND partition = $2 AND epoch = $3",
            )
            .bind(&self.pipeline)
            .bind(i64::from(partition))
            .bind(epoch as i64)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The partition's last checkpoint.
    ///
    /// # Errors
    /// The database failed.
    pub async fn load(&self, partition: u32) -> Result<Option<Checkpoint>, SqlStreamError> {
        let row: Option<(Option<i64>, Option<Vec<u8>>)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT next_offset, state FROM girder_stream_partitions \
                 WHERE pipeline = $1 AND partition = $2",
            )
            .bind(&self.pipeline)
            .bind(i64::from(partition))
            .fetch_optional(pool)
            .await?
        });
        Ok(match row {
            Some((Some(offset), Some(state))) => Some(Checkpoint { offset: offset as u64, state }),
            _ => None,
        })
    }

    /// Each partition's holder, epoch and next offset, for dashboards and tests.
    ///
    /// # Errors
    /// The database failed.
    pub async fn partitions(&self) -> Result<Vec<PartitionRow>, SqlStreamError> {
        type Row = (i64, i64, Option<String>, i64, Option<i64>);
        let rows: Vec<Row> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT partition, epoch, owner, lease_until, next_offset FROM girder_stream_partitions \
                 WHERE pipeline = $1 ORDER BY partition",
            )
            .bind(&self.pipeline)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(partition, epoch, owner, lease_until, next_offset)| PartitionRow {
                partition: partition as u32,
                epoch: epoch as u64,
                owner,
                lease_until_ms: lease_until,
                next_offset: next_offset.map(|o| o as u64),
            })
            .collect())
    }

    /// Records that `member` is alive now.
    ///
    /// # Errors
    /// The database failed.
    pub async fn heartbeat(&self, member: &str) -> Result<(), SqlStreamError> {
        let now = now(&*self.clock);
        on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO girder_stream_members (pipeline, member, seen_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (pipeline, member) DO UPDATE SET seen_at = excluded.seen_at",
            )
            .bind(&self.pipeline)
            .bind(member)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Members seen within `ttl`, sorted.
    ///
    /// # Errors
    /// The database failed.
    pub async fn live_members(&self, ttl: Duration) -> Result<Vec<String>, SqlStreamError> {
        let since =
            now(&*self.clock).saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let members: Vec<String> = on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT member FROM girder_stream_members WHERE pipeline = $1 AND seen_at >= $2 \
                 ORDER BY member",
            )
            .bind(&self.pipeline)
            .bind(since)
            .fetch_all(pool)
            .await?
        });
        Ok(members)
    }

    /// Removes `member` (a clean leave: the others rebalance at their next beat).
    ///
    /// # Errors
    /// The database failed.
    pub async fn leave(&self, member: &str) -> Result<(), SqlStreamError> {
        on_db!(&self.db, |pool| {
            sqlx::query("DELETE FROM girder_stream_members WHERE pipeline = $1 AND member = $2")
                .bind(&self.pipeline)
                .bind(member)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    fn fenced(&self, partition: u32, epoch: u64) -> SqlStreamError {
        SqlStreamError::Fenced { pipeline: self.pipeline.clone(), partition, epoch }
    }

    /// Stores `checkpoint` and, through `sink`, `emissions`, in one transaction fenced
    /// by `epoch`.
    ///
    /// # Errors
    /// [`SqlStreamError::Fenced`] (nothing written); the database failed (nothing
    /// written).
    pub async fn commit<K, A, S: SqlSink<K, A>>(
        &self,
        sink: &S,
        partition: u32,
        epoch: u64,
        checkpoint: &Checkpoint,
        emissions: &[Emission<K, A>],
    ) -> Result<(), SqlStreamError> {
        let now = now(&*self.clock);
        let update = "UPDATE girder_stream_partitions SET next_offset = $4, state = $5, committed_at = $6 \
                      WHERE pipeline = $1 AND partition = $2 AND epoch = $3";
        let rows = match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let rows = sqlx::query(update)
                    .bind(&self.pipeline)
                    .bind(i64::from(partition))
                    .bind(epoch as i64)
                    .bind(checkpoint.offset as i64)
                    .bind(&checkpoint.state)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if rows == 1 {
                    sink.write(SqlTx::Sqlite(&mut tx), partition, emissions).await?;
                    tx.commit().await?;
                }
                rows
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let rows = sqlx::query(update)
                    .bind(&self.pipeline)
                    .bind(i64::from(partition))
                    .bind(epoch as i64)
                    .bind(checkpoint.offset as i64)
                    .bind(&checkpoint.state)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if rows == 1 {
                    sink.write(SqlTx::Postgres(&mut tx), partition, emissions).await?;
                    tx.commit().await?;
                }
                rows
            }
        };
        if rows == 1 { Ok(()) } else { Err(self.fenced(partition, epoch)) }
    }
}

/// One partition's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRow {
    /// The partition.
    pub partition: u32,
    /// Its current epoch.
    pub epoch: u64,
    /// The member holding it, if any.
    pub owner: Option<String>,
    /// When the holder's lease runs out (ms since the epoch).
    pub lease_until_ms: i64,
    /// The next offset to read, once checkpointed.
    pub next_offset: Option<u64>,
}

/// A [`Committer`] on a [`StreamStore`] with a [`SqlSink`].
#[derive(Debug)]
pub struct SqlCommitter<S> {
    /// The pipeline's rows.
    pub store: StreamStore,
    /// Where emissions go.
    pub sink: S,
}

impl<K, A, S> Committer<K, A> for SqlCommitter<S>
where
    K: Send + Sync + 'static,
    A: Send + Sync + 'static,
    S: SqlSink<K, A>,
{
    type Error = SqlStreamError;

    async fn load(&self, partition: u32) -> Result<Option<Checkpoint>, SqlStreamError> {
        self.store.load(partition).await
    }

    async fn commit(
        &self,
        partition: u32,
        epoch: u64,
        checkpoint: &Checkpoint,
        emissions: &[Emission<K, A>],
    ) -> Result<(), SqlStreamError> {
        self.store.commit(&self.sink, partition, epoch, checkpoint, emissions).await
    }
}

/// How a member beats and holds.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    /// How often the member beats, renews its leases and rebalances.
    pub heartbeat: Duration,
    /// A member not seen for this long is gone.
    pub member_ttl: Duration,
    /// How long a claim or renewal holds a partition.
    pub lease: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            member_ttl: Duration::from_secs(5),
            lease: Duration::from_secs(10),
        }
    }
}

/// The partitions `member` should hold among `live` members.
#[must_use]
pub fn assignment(partitions: u32, live: &[String], member: &str) -> Vec<u32> {
    let Some(index) = live.iter().position(|m| m == member) else { return Vec::new() };
    (0..partitions).filter(|p| *p as usize % live.len() == index).collect()
}

/// What a member's runner for one partition is given: the partition, its epoch, and a
/// future that resolves when the runner must flush and stop.
pub type StopSignal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

struct Held {
    epoch: u64,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Held {
    /// A coordinator dropped mid-run (its task aborted) takes its runners with it, as
    /// a killed process would: they stop where they are, without a last checkpoint.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One member's share of a pipeline's partitions. See the [module docs](self).
pub struct Coordinator {
    store: StreamStore,
    member: String,
    partitions: u32,
    config: CoordinatorConfig,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("pipeline", &self.store.pipeline)
            .field("member", &self.member)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// `member` of `store`'s pipeline, which has `partitions` partitions.
    #[must_use]
    pub fn new(
        store: StreamStore,
        member: impl Into<String>,
        partitions: u32,
        config: CoordinatorConfig,
    ) -> Self {
        Self { store, member: member.into(), partitions, config }
    }

    /// Holds this member's share until `shutdown` resolves: for each partition it
    /// claims, `spawn(partition, epoch, stop)` runs a runner that must return after
    /// `stop` resolves. Then every runner is stopped, every lease released and the
    /// member leaves.
    pub async fn run<F, Fut>(&self, spawn: F, shutdown: impl Future<Output = ()> + Send)
    where
        F: Fn(u32, u64, StopSignal) -> Fut + Send + Sync,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut held: HashMap<u32, Held> = HashMap::new();
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.beat(&spawn, &mut held).await {
                tracing::warn!(pipeline = %self.store.pipeline, member = %self.member,
                    error = &e as &dyn std::error::Error, "a stream member's beat failed");
            }
        }
        for (partition, h) in held.drain() {
            self.stop(partition, h).await;
        }
        if let Err(e) = self.store.leave(&self.member).await {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "leaving a stream pipeline failed"
            );
        }
    }

    async fn stop(&self, partition: u32, mut h: Held) {
        let (stop, _) = tokio::sync::oneshot::channel();
        let _ = std::mem::replace(&mut h.stop, stop).send(());
        let _ = (&mut h.task).await;
        if let Err(e) = self.store.release(partition, h.epoch).await {
            tracing::warn!(
                partition,
                error = &e as &dyn std::error::Error,
                "releasing a partition failed"
            );
        }
    }

    async fn beat<F, Fut>(
        &self,
        spawn: &F,
        held: &mut HashMap<u32, Held>,
    ) -> Result<(), SqlStreamError>
    where
        F: Fn(u32, u64, StopSignal) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.store.heartbeat(&self.member).await?;
        let live = self.store.live_members(self.config.member_ttl).await?;
        let mine = assignment(self.partitions, &live, &self.member);
        // Runners that ended on their own (an error) give their partition back.
        let ended: Vec<u32> =
            held.iter().filter(|(_, h)| h.task.is_finished()).map(|(p, _)| *p).collect();
        for p in ended {
            if let Some(h) = held.remove(&p) {
                self.stop(p, h).await;
            }
        }
        let gone: Vec<u32> = held.keys().filter(|p| !mine.contains(p)).copied().collect();
        for p in gone {
            if let Some(h) = held.remove(&p) {
                self.stop(p, h).await;
            }
        }
        let mut lost = Vec::new();
        for (p, h) in held.iter() {
            if self.store.renew(*p, h.epoch, self.config.lease).await.is_err() {
                lost.push(*p);
            }
        }
        for p in lost {
            if let Some(h) = held.remove(&p) {
                tracing::warn!(partition = p, "a partition's lease was lost; its runner stops");
                self.stop(p, h).await;
            }
        }
        for p in mine {
            if held.contains_key(&p) {
                continue;
            }
            if let Some(epoch) = self.store.claim(p, &self.member, self.config.lease).await? {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let stop: StopSignal = Box::pin(async move {
                    let _ = rx.await;
                });
                let task = tokio::spawn(spawn(p, epoch, stop));
                held.insert(p, Held { epoch, stop: tx, task });
            }
        }
        Ok(())
    }
}
