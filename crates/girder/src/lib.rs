//! The `girder` binary's library half: configuration, server assembly and the
//! serve loop, exposed so integration tests can build the same app in-process.

pub mod app;
pub mod config;
pub mod lab;
pub mod loadtest;
pub mod serve;
pub mod systems;
pub mod telemetry;
