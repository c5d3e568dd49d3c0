//! Conformance suites every Girder backend must pass, and the small helpers tests use
//! to reach the real engines.
//!
//! One suite per trait, run against every backend (the way ripgrep runs each test
//! against every regex engine): a backend is only done when its suite passes.

pub mod backends;
pub mod cache;
pub mod geo;
pub mod id;
pub mod lease;
pub mod replica;
pub mod reservation;
pub mod version;
