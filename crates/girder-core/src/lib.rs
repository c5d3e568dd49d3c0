//! Girder's shared foundation. Deliberately tiny: the [`Clock`] every pattern
//! reads time from (so TTLs, windows and expiries are testable without sleeps),
//! the process's one [`CoarseClock`] for hot paths, and the addresses of the
//! external services tests and servers talk to.

mod clock;
pub mod coarse;
pub mod error;
pub mod services;

pub use clock::{Clock, ManualClock, SystemClock};
pub use coarse::CoarseClock;
