//! Stream processing: "Stream Processing" and "Write Batching & Buffering" made real.
//!
//! **Problem.** Counting events as they arrive — clicks per ad per minute, views per
//! video per hour — one database write per event does not scale, and a batch job
//! over yesterday's log answers too late. Events also arrive out of order and
//! sometimes twice, and a counter that restarts must neither lose nor repeat any.
//!
//! **Guarantee.** A [`operator::WindowOperator`] groups keyed events into tumbling,
//! sliding or session windows on *event time* and emits each window's value when the
//! watermark says it is complete; a late event within the allowed lateness corrects
//! it, a later one is refused to a side output and counted. A
//! [`runner::PartitionRunner`] reads one partition of a [`source::Source`], and at
//! each checkpoint hands the [`runner::Committer`] the emissions, the operator's
//! state and the source offset *together*: a committer that writes them in one
//! transaction (as [`sql`] does) gives an **exactly-once effect** — after a crash the
//! partition restarts from its last checkpoint and replays the same events into the
//! same state, and the sink's upserts by `(key, window)` land on the same values.
//! Partitions are independent (keys are partitioned), so each partition's results
//! depend only on its own log order, never on how partitions interleave.
//!
//! **Trade-off.** Results wait for the watermark: a window of one minute with five
//! seconds of out-of-orderness is final about five seconds after its end (early
//! emissions show it while it fills). Events later than the allowed lateness are not
//! counted in the stream's results; a reconciliation from the raw log catches them.
//! State is held in memory per partition, bounded by a slot limit.
//!
//! Sources: [`log::PartitionedLog`], N girder-log write-ahead logs in one directory
//! (the embedded default), and with feature `nats` [`jetstream::JetStreamLog`], one
//! stream with a subject per partition. With feature `sql`, [`sql`] keeps
//! checkpoints and fenced partition leases in girder-sql's database, so instances
//! share the partitions and take over those of an instance that leaves or dies.

pub mod aggregate;
mod error;
#[cfg(feature = "nats")]
pub mod jetstream;
pub mod log;
pub mod memory;
pub mod operator;
pub mod runner;
pub mod source;
#[cfg(feature = "sql")]
pub mod sql;
pub mod window;

pub use aggregate::{Aggregate, Count, StateCodec, Sum};
pub use error::{ConfigError, StateError};
pub use operator::{
    Emission, EmissionKind, EmitPolicy, OperatorConfig, OperatorStats, Rejected, WindowOperator,
};
pub use source::{Source, SourceError, SourceRecord, partition_of};
pub use window::{EventTime, Window, WindowSpec};
