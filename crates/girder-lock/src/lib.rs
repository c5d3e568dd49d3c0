//! Contention: what keeps a seat from being sold twice and stock from going negative
//! when many clients, on many server instances, want the same row at once.
//!
//! - [`lease`]: TTL leases carrying fencing tokens ("Pattern: Distributed Locks with
//!   TTL"), in process, on Redis and on PostgreSQL; [`fence`] is the storage side that
//!   rejects a write carrying a stale token.
//! - [`version`]: records with a version number and compare-and-set ("Pattern:
//!   Optimistic Locking with Version Fields"); [`retry`] retries conflicts with bounded,
//!   jittered exponential backoff.
//! - [`reservation`]: AVAILABLE → RESERVED(until) → SOLD with expiry ("Pattern:
//!   Status-Based Workflow"), every transition one atomic statement or script.
//! - [`txn`]: a bounded retry wrapper for serialization failures ("Pattern: ACID
//!   Transactions for Atomicity").
//!
//! Time comes from `girder_core::Clock`, so expiry is tested with a manual clock. When
//! an engine fails, a lease, reservation, fence or version error's `Backend` variant
//! carries a [`BackendError`], whose source is the driver's own error.

mod backend;
pub mod fence;
pub mod lease;
pub mod reservation;
pub mod retry;
pub mod txn;
pub mod version;

pub use backend::BackendError;
