//! Running one partition: read, window, and checkpoint the emissions, the operator's
//! state and the source offset together.
//!
//! **Exactly-once effect.** At each checkpoint the runner calls
//! [`Committer::commit`] once with the emissions since the last checkpoint, the
//! operator's snapshot and the offset after the last record read. A committer that
//! stores all three atomically (one database transaction) makes every record's
//! effect happen once: a crash before the commit loses emissions and state *and*
//! offset together, so the restarted runner reads the same records again into the
//! same state; a crash after it resumes past them. Emissions carry whole values, so
//! the sink's upserts are idempotent as well.
//!
//! **Fencing.** A runner holds its partition under an `epoch` (a lease's fencing
//! token): a committer must refuse a commit whose epoch is not the partition's
//! current one, so a runner that lost its partition to another instance (paused, or
//! cut off) cannot overwrite the new owner's progress.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use girder_core::Clock;

use crate::aggregate::{Aggregate, StateCodec};
use crate::operator::{Emission, OperatorConfig, OperatorStats, Rejected, WindowOperator};
use crate::source::{Source, SourceError};
use crate::window::EventTime;

/// Where a partition stands: the next offset to read and the operator's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The offset after the last record whose effect the state holds.
    pub offset: u64,
    /// [`WindowOperator::snapshot`].
    pub state: Vec<u8>,
}

/// Stores checkpoints and emissions, atomically. See the [module docs](self).
pub trait Committer<K, A>: Send + Sync + 'static {
    /// The store's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The partition's last checkpoint, `None` before its first.
    fn load(
        &self,
        partition: u32,
    ) -> impl Future<Output = Result<Option<Checkpoint>, Self::Error>> + Send;

    /// Stores `emissions` and `checkpoint` in one atomic step, refusing an `epoch`
    /// other than the partition's current one.
    fn commit(
        &self,
        partition: u32,
        epoch: u64,
        checkpoint: &Checkpoint,
        emissions: &[Emission<K, A>],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A record that was not added to any window, for a side output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The partition.
    pub partition: u32,
    /// The record's offset.
    pub offset: u64,
    /// Why.
    pub reason: RefusedReason,
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusedReason {
    /// The decoder could not read it.
    Malformed(String),
    /// Past the allowed lateness.
    Late {
        /// Its event time.
        event_time: EventTime,
        /// The watermark then.
        watermark: EventTime,
    },
    /// The operator's state was full.
    Full,
}

/// When the runner checkpoints and how it reads.
#[derive(Debug, Clone, Copy)]
pub struct RunnerConfig {
    /// Records read at a time.
    pub batch_max: usize,
    /// How long a read waits for new records.
    pub poll_wait: Duration,
    /// Checkpoint at least this often while records arrive.
    pub checkpoint_every: Duration,
    /// …or after this many records, whichever is first.
    pub checkpoint_records: u64,
    /// When the partition has had no records for this long, move the watermark to
    /// the wall clock minus the out-of-orderness, so its windows close. `None` leaves
    /// the watermark to event time alone.
    pub idle_after: Option<Duration>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch_max: 4_096,
            poll_wait: Duration::from_millis(200),
            checkpoint_every: Duration::from_secs(1),
            checkpoint_records: 100_000,
            idle_after: Some(Duration::from_secs(2)),
        }
    }
}

/// A runner stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError<E: std::error::Error + 'static> {
    /// Reading the source failed.
    #[error("reading the source: {0}")]
    Source(#[from] SourceError),
    /// The committer failed (or refused a stale epoch).
    #[error("committing: {0}")]
    Commit(#[source] E),
    /// The operator's settings are out of range.
    #[error("the operator's settings: {0}")]
    Config(#[from] crate::error::ConfigError),
    /// The stored state could not be restored.
    #[error("restoring partition {partition}'s state: {source}")]
    State {
        /// The partition.
        partition: u32,
        /// Why.
        #[source]
        source: crate::error::StateError,
    },
}

/// What a runner did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerStats {
    /// Records read.
    pub records: u64,
    /// Records the decoder refused.
    pub malformed: u64,
    /// Checkpoints committed.
    pub checkpoints: u64,
    /// The operator's counters.
    pub operator: OperatorStats,
    /// The offset after the last record committed.
    pub offset: u64,
}

/// Decodes a record into a key, an event time and an input.
pub type Decoder<K, I> = Arc<dyn Fn(&[u8]) -> Result<(K, EventTime, I), String> + Send + Sync>;

/// Runs one partition until stopped. See the [module docs](self).
pub struct PartitionRunner<S, C, G: Aggregate, K> {
    /// The source read.
    pub source: S,
    /// Where checkpoints go.
    pub committer: Arc<C>,
    /// The aggregate.
    pub aggregate: G,
    /// The operator's settings.
    pub operator: OperatorConfig,
    /// The runner's settings.
    pub config: RunnerConfig,
    /// How records become events.
    pub decode: Decoder<K, G::Input>,
    /// Told of every refused record (the side output).
    pub refused: Arc<dyn Fn(Refused) + Send + Sync>,
    /// The wall clock (for idle partitions).
    pub clock: Arc<dyn Clock>,
}

impl<S, C, G, K> PartitionRunner<S, C, G, K>
where
    S: Source,
    C: Committer<K, G::Acc>,
    G: Aggregate,
    K: Clone + Eq + Hash + StateCodec + Send + Sync,
{
    /// Reads `partition` from its last checkpoint under `epoch` until `stop`
    /// resolves, then commits a last checkpoint (a flush) and returns.
    ///
    /// # Errors
    /// [`RunError`]; the partition's stored progress is whatever was last committed.
    pub async fn run(
        &self,
        partition: u32,
        epoch: u64,
        stop: impl Future<Output = ()> + Send,
    ) -> Result<RunnerStats, RunError<C::Error>> {
        let (mut op, mut next) =
            match self.committer.load(partition).await.map_err(RunError::Commit)? {
                Some(cp) => {
                    let op =
                        WindowOperator::restore(self.aggregate_clone(), self.operator, &cp.state)
                            .map_err(|source| RunError::State { partition, source })?;
                    (op, cp.offset)
                }
                None => {
                    let op = WindowOperator::new(self.aggregate_clone(), self.operator)?;
                    (op, self.source.first_offset(partition).await?)
                }
            };
        let mut stats = RunnerStats { offset: next, ..RunnerStats::default() };
        let mut since_commit = 0u64;
        let mut last_commit = Instant::now();
        let mut last_record = Instant::now();
        let mut watermark_moved = false;
        tokio::pin!(stop);
        loop {
            let records = tokio::select! {
                biased;
                () = &mut stop => break,
                r = self.source.read(partition, next, self.config.batch_max, self.config.poll_wait) => r?,
            };
            if records.is_empty() {
                if let Some(idle) = self.config.idle_after
                    && last_record.elapsed() >= idle
                {
                    let now = i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX);
                    let before = op.watermark();
                    op.advance_watermark(now.saturating_sub(self.operator.out_of_orderness_ms));
                    watermark_moved |= op.watermark() != before;
                }
            } else {
                last_record = Instant::now();
            }
            for record in records {
                stats.records += 1;
                since_commit += 1;
                next = record.offset + 1;
                match (self.decode)(&record.payload) {
                    Ok((key, t, input)) => match op.process(key, t, &input) {
                        Ok(()) => {}
                        Err(Rejected::Late { watermark }) => (self.refused)(Refused {
                            partition,
                            offset: record.offset,
                            reason: RefusedReason::Late { event_time: t, watermark },
                        }),
                        Err(Rejected::Full) => (self.refused)(Refused {
                            partition,
                            offset: record.offset,
                            reason: RefusedReason::Full,
                        }),
                    },
                    Err(why) => {
                        stats.malformed += 1;
                        (self.refused)(Refused {
                            partition,
                            offset: record.offset,
                            reason: RefusedReason::Malformed(why),
                        });
                    }
                }
            }
            let due = since_commit >= self.config.checkpoint_records
                || ((since_commit > 0 || watermark_moved)
                    && last_commit.elapsed() >= self.config.checkpoint_every);
            if due {
                self.checkpoint(partition, epoch, &mut op, next).await?;
                stats.checkpoints += 1;
                since_commit = 0;
                watermark_moved = false;
                last_commit = Instant::now();
            }
        }
        self.checkpoint(partition, epoch, &mut op, next).await?;
        stats.checkpoints += 1;
        stats.operator = op.stats();
        stats.offset = next;
        Ok(stats)
    }

    async fn checkpoint(
        &self,
        partition: u32,
        epoch: u64,
        op: &mut WindowOperator<K, G>,
        next: u64,
    ) -> Result<(), RunError<C::Error>> {
        let emissions = op.fire();
        let checkpoint = Checkpoint { offset: next, state: op.snapshot() };
        self.committer
            .commit(partition, epoch, &checkpoint, &emissions)
            .await
            .map_err(RunError::Commit)
    }

    fn aggregate_clone(&self) -> G {
        self.aggregate.clone()
    }
}
