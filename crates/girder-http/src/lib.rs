//! What every reference system shares on HTTP, written once:
//!
//! - [`problem`]: [`Problem`], the RFC 9457 document every error becomes, and the one
//!   rule for 400 vs 422.
//! - [`extract`]: `Json`, `Path` and `Query` extractors whose rejections are problems.
//! - [`cursor`]: [`CursorCodec`](cursor::CursorCodec), opaque keyset cursors under a
//!   MAC ("Pattern: Pagination & Cursor-based Fetching").
//! - [`identity`]: signed, expiring bearer tokens and the `Caller` / `Operator`
//!   extractors, with one rule for 401 vs 403; [`auth`]: the sign-in endpoints.
//! - [`idempotency`]: the `Idempotency-Key` layer: a retried request gets the
//!   first answer back instead of running twice ("Pattern: Idempotent Operations").
//! - [`openapi`]: the statuses the shared layers answer, declared on every operation.
//! - [`ratelimit`]: the rules engine and the tower layer every system's API wears
//!   ("Pattern: Token Bucket for Rate Limiting").
//! - [`request_id`]: the `x-request-id` every response carries.
//!
//! Pattern crates never depend on this crate; systems and the binary do.

pub mod auth;
pub mod cursor;
pub mod extract;
pub mod idempotency;
pub mod identity;
pub mod openapi;
pub mod problem;
pub mod ratelimit;
pub mod request_id;
pub mod sse;
pub mod ws;

pub use problem::Problem;
