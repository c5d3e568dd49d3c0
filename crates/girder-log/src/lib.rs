//! Durable logs, for when an acknowledged write must survive a crash.
//!
//! - [`wal`]: a write-ahead log ("Pattern: Write-Ahead Log (WAL) for Durability"):
//!   append-only, checksummed segments; concurrent appenders share one `fdatasync`
//!   (group commit) and are acknowledged only once it covers them; recovery cuts a
//!   torn or damaged tail and never hands back a corrupt record.
//!
//! The crate knows nothing of HTTP or of any system; systems build on it.

pub mod wal;

pub use wal::{Lsn, Recovery, SyncPolicy, Wal, WalConfig, WalError, WalStats};
