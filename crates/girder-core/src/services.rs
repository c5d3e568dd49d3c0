//! Where the external engines live, and how tests treat their absence.
//!
//! URLs come from `GIRDER_POSTGRES_URL`, `GIRDER_POSTGRES_REPLICA_URL`,
//! `GIRDER_REDIS_URL` and `GIRDER_NATS_URL` with localhost defaults. A test that needs an engine asks [`require`]: when
//! the engine is unreachable it gets `None` and a loud skip line, except under
//! `CI=true`, where an unreachable engine fails the test.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// An external engine Girder can scale out onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// PostgreSQL, the scale-out system of record.
    Postgres,
    /// A streaming replica of that PostgreSQL (hot standby), for read routing.
    PostgresReplica,
    /// Redis, for shared counters, caches, locks and limits.
    Redis,
    /// NATS with JetStream, for durable streams.
    Nats,
}

impl Service {
    /// The environment variable that overrides this service's URL.
    #[must_use]
    pub const fn env_var(self) -> &'static str {
        match self {
            Self::Postgres => "GIRDER_POSTGRES_URL",
            Self::PostgresReplica => "GIRDER_POSTGRES_REPLICA_URL",
            Self::Redis => "GIRDER_REDIS_URL",
            Self::Nats => "GIRDER_NATS_URL",
        }
    }

    /// The URL used when the environment does not name one.
    #[must_use]
    pub const fn default_url(self) -> &'static str {
        match self {
            Self::Postgres => "postgres://postgres@127.0.0.1:5432/postgres",
            Self::PostgresReplica => "postgres://postgres@127.0.0.1:5433/postgres",
            Self::Redis => "redis://127.0.0.1:6379/",
            Self::Nats => "nats://127.0.0.1:4222",
        }
    }

    /// The configured URL: the environment variable if set, else the default.
    #[must_use]
    pub fn url(self) -> String {
        std::env::var(self.env_var()).unwrap_or_else(|_| self.default_url().to_owned())
    }

    /// Whether a TCP connection to the service's host and port succeeds within a second.
    #[must_use]
    pub fn reachable(self) -> bool {
        host_port(&self.url()).is_some_and(|addr| {
            addr.to_socket_addrs().ok().and_then(|mut it| it.next()).is_some_and(|sock| {
                TcpStream::connect_timeout(&sock, Duration::from_secs(1)).is_ok()
            })
        })
    }
}

/// Extracts `host:port` from a `scheme://[user[:pass]@]host:port[/...]` URL.
fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port.contains(':') { Some(host_port.to_owned()) } else { None }
}

/// Whether this run is CI (`CI=true`), where missing services are failures.
#[must_use]
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The service's URL if it is reachable. Otherwise prints a skip line and returns
/// `None` — or panics under `CI=true`, because CI must exercise every backend.
///
/// # Panics
/// Under `CI=true` when the service is unreachable.
#[must_use]
pub fn require(service: Service, test: &str) -> Option<String> {
    if service.reachable() {
        return Some(service.url());
    }
    let msg =
        format!("{test}: {service:?} unreachable at {} (set {})", service.url(), service.env_var());
    assert!(!in_ci(), "CI=true and {msg}");
    eprintln!("SKIPPED {msg}");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parses_the_usual_forms() {
        let check =
            |url: &str, want: Option<&str>| assert_eq!(host_port(url).as_deref(), want, "{url}");
        check("postgres://postgres@127.0.0.1:5432/postgres", Some("127.0.0.1:5432"));
        check("redis://127.0.0.1:6379/", Some("127.0.0.1:6379"));
        check("nats://127.0.0.1:4222", Some("127.0.0.1:4222"));
        check("postgres://u:p@db:5432?sslmode=disable", Some("db:5432"));
        check("redis://localhost/", None);
        check("nonsense", None);
    }
}
