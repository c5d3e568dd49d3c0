//! The reference systems of the catalogue, each an axum `Router` over Girder's
//! pattern crates. Systems speak HTTP; the pattern crates they use do not.

pub mod bitly;
pub mod catalog;
pub mod cursor;
pub mod db;
pub mod extract;
pub mod gopuff;
mod keys;
pub mod problem;
pub mod ratelimiter;
pub mod ticketmaster;
