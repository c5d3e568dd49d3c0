//! This instance's stream pipeline (Pattern: Stream Processing): views read from its
//! partitioned log, counted per video per minute by tumbling windows on event time,
//! and committed with each partition's checkpoint through [`crate::sink::CountSink`].
//!
//! **One pipeline per instance.** The embedded log lives in the instance's own data
//! directory, so no other instance can read it: each instance runs its own pipeline,
//! named `topk-<instance id>`, and holds all of its partitions (the coordinator's
//! fenced leases still guard them, so a second process on the same directory and
//! database could not commit over the first). Instances share *counts*, not
//! partitions: every pipeline writes rows keyed by its name into the shared tables,
//! and every read sums (or merges) across pipelines. The instance id is kept in the
//! data directory, so a restarted instance resumes its own pipeline from its last
//! checkpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use girder_core::Clock;
use girder_stream::log::PartitionedLog;
use girder_stream::runner::{PartitionRunner, Refused, RefusedReason, RunnerConfig};
use girder_stream::sql::{Coordinator, CoordinatorConfig, SqlCommitter, StreamStore};
use girder_stream::{Count, EmitPolicy, OperatorConfig, WindowSpec};

use crate::TopKConfig;
use crate::sink::CountSink;

/// Views the pipeline did not count, since this process started (a replay after a
/// crash may count a refusal twice: the side output is at least once).
#[derive(Debug, Default)]
pub struct Refusals {
    /// Past the allowed lateness when read.
    pub late: AtomicU64,
    /// The partition's open counts were at their bound.
    pub full: AtomicU64,
    /// Records that did not decode.
    pub malformed: AtomicU64,
}

impl Refusals {
    fn count(&self, refused: &Refused) {
        let counter = match refused.reason {
            RefusedReason::Late { .. } => &self.late,
            RefusedReason::Full => &self.full,
            RefusedReason::Malformed(_) => &self.malformed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("girder_topk_views_refused_total").increment(1);
    }
}

/// This instance's pipeline. See the [module docs](self).
pub struct Pipeline {
    pub(crate) log: Arc<PartitionedLog>,
    pub(crate) stream: StreamStore,
    pub(crate) committer: Arc<SqlCommitter<CountSink>>,
    pub(crate) refusals: Arc<Refusals>,
    pub(crate) member: String,
    pub(crate) config: TopKConfig,
    pub(crate) clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("pipeline", &self.stream.pipeline())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    fn operator(&self) -> OperatorConfig {
        OperatorConfig {
            windows: WindowSpec::Tumbling { size_ms: 60_000 },
            out_of_orderness_ms: self.config.out_of_orderness_ms,
            allowed_lateness_ms: self.config.allowed_lateness_ms,
            // The live minute is the point of the system: show it as it fills.
            emit: EmitPolicy::Early,
            slots_max: self.config.slots_max,
        }
    }

    fn runner(
        &self,
    ) -> PartitionRunner<Arc<PartitionedLog>, SqlCommitter<CountSink>, Count, String> {
        let refusals = Arc::clone(&self.refusals);
        PartitionRunner {
            source: Arc::clone(&self.log),
            committer: Arc::clone(&self.committer),
            aggregate: Count,
            operator: self.operator(),
            config: RunnerConfig {
                checkpoint_every: Duration::from_millis(self.config.checkpoint_ms),
                poll_wait: Duration::from_millis(self.config.checkpoint_ms.min(200)),
                ..RunnerConfig::default()
            },
            decode: Arc::new(crate::event::decode),
            refused: Arc::new(move |r: Refused| refusals.count(&r)),
            clock: Arc::clone(&self.clock),
        }
    }

    /// Runs every partition until `shutdown` resolves; each runner commits a last
    /// checkpoint and releases its lease before this returns.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let coordinator = Coordinator::new(
            self.stream.clone(),
            self.member.clone(),
            self.config.partitions,
            CoordinatorConfig::default(),
        );
        coordinator
            .run(
                |partition, epoch, stop| {
                    let runner = self.runner();
                    async move {
                        match runner.run(partition, epoch, stop).await {
                            Ok(stats) => {
                                tracing::debug!(partition, ?stats, "a top-k runner stopped")
                            }
                            Err(e) => tracing::warn!(
                                partition,
                                error = &e as &dyn std::error::Error,
                                "a top-k runner failed; its partition restarts from its checkpoint"
                            ),
                        }
                    }
                },
                shutdown,
            )
            .await;
    }

    /// Each partition's records not yet committed (appended minus checkpointed).
    ///
    /// # Errors
    /// The database failed.
    pub async fn lag(&self) -> Result<Vec<u64>, girder_stream::sql::SqlStreamError> {
        let rows = self.stream.partitions().await?;
        let mut lag = Vec::with_capacity(self.config.partitions as usize);
        for p in 0..self.config.partitions {
            let end = self.log.end_offset(p).unwrap_or(1);
            let next =
                rows.iter().find(|r| r.partition == p).and_then(|r| r.next_offset).unwrap_or(1);
            lag.push(end.saturating_sub(next));
        }
        Ok(lag)
    }

    /// Deletes log segments every partition has checkpointed past.
    pub async fn truncate(&self) {
        let Ok(rows) = self.stream.partitions().await else { return };
        for row in rows {
            if let Some(next) = row.next_offset
                && let Err(e) = self.log.truncate_before(row.partition, next)
            {
                tracing::warn!(
                    partition = row.partition,
                    error = &e as &dyn std::error::Error,
                    "truncating the view log failed"
                );
            }
        }
    }
}
