//! Durable logs, for when an acknowledged write must survive a crash.
//!
//! - [`wal`]: a write-ahead log ("Pattern: Write-Ahead Log (WAL) for Durability"):
//!   append-only, checksummed segments; concurrent appenders share one `fdatasync`
//!   (group commit) and are acknowledged only once it covers them; recovery cuts a
//!   torn or damaged tail and never hands back a corrupt record.
//!
//! - [`batch`]: a batch writer ("Pattern: Write Batching & Buffering"): concurrent
//!   submissions share one sink write (one transaction, one sync), each caller gets
//!   its own item's result, with bounded waiting and a flush on close; and
//!   [`batch::coalesce`], a coalescing buffer for aggregates: values merged per key
//!   in sharded maps (no channel, no await per add), the map flushed on time, on its
//!   key count and on close, bounded, failed flushes put back.
//!
//! - [`queue`]: a durable queue on the WAL ("Pattern: Asynchronous Processing with
//!   Message Queues"): visibility timeouts, receipts, nack with delay, dead letters
//!   and redrive, consumer groups; state replayed from the log on open. The same
//!   operations are the `MessageQueue` trait, which the feature `nats` also
//!   implements on NATS JetStream (`queue::jetstream`), for queues shared by several
//!   machines.
//!
//! The crate knows nothing of HTTP or of any system; systems build on it.

pub mod batch;
pub mod queue;
pub mod wal;

pub use wal::{Lsn, Recovery, SyncPolicy, Wal, WalConfig, WalError, WalStats};
