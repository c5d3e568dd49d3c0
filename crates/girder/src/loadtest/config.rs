//! The arguments of `girder loadtest` and their one validation step: raw
//! [`LoadtestArgs`] (as typed, negative numbers included) become a checked
//! [`Config`] through `TryFrom`, or a [`ConfigError`] naming the bad flag.

use clap::Args;
use hyper::Uri;

/// Most connections (closed loop) or in-flight requests (open loop): each is a socket.
pub const CONNECTIONS_MAX: usize = 10_000;
/// Highest open-loop rate, in requests per second.
pub const RATE_MAX: f64 = 1_000_000.0;
/// Longest measured run and longest warm-up, in seconds (one hour).
pub const DURATION_SECS_MAX: u64 = 3_600;
/// Longest per-request timeout, in milliseconds.
pub const TIMEOUT_MS_MAX: u64 = 60_000;
/// Most links the bitly scenario seeds before the run.
pub const SEED_LINKS_MAX: usize = 1_000_000;
/// Largest Zipf exponent accepted.
pub const ZIPF_S_MAX: f64 = 10.0;

/// Flags of `girder loadtest`, as typed. Numbers are signed so a negative value
/// reaches [`Config::try_from`] and gets its own message rather than a parse error.
#[derive(Debug, Clone, Args)]
pub struct LoadtestArgs {
    /// Scenario: `bitly` (redirect/shorten mix), `get` (one fixed path), `sse` (Live
    /// Comments streams: `--connections` viewers, `--rate` comments/s or closed loop,
    /// `--path` the video), `ws` (WhatsApp: `--connections` devices in pairs, `--rate`
    /// messages/s in all or closed loop) or `uber` (`--drivers` moving and taking
    /// rides, `--requests` riders asking at once, each request settled within
    /// `--duration-secs`; `--database-url` the server's database).
    pub scenario: String,
    /// Base URL of the server under test (plain http).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Closed loop: connections, each sending its next request when the last completes [default: 64].
    #[arg(long, allow_negative_numbers = true)]
    pub connections: Option<i64>,
    /// Open loop: target rate in requests per second, on a fixed schedule.
    #[arg(long, allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// Open loop: most requests in flight at once [default: 1024].
    #[arg(long, allow_negative_numbers = true)]
    pub max_in_flight: Option<i64>,
    /// Measured run length, in seconds (1..=3600).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub duration_secs: i64,
    /// Unmeasured warm-up before the run, in seconds (0..=3600).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub warmup_secs: i64,
    /// Per-request timeout (connect, send and read the body), in milliseconds.
    #[arg(long, default_value_t = 5_000, allow_negative_numbers = true)]
    pub timeout_ms: i64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// `get` scenario: the path to request [default: /healthz].
    #[arg(long)]
    pub path: Option<String>,
    /// `bitly` scenario: fraction of requests that shorten (0..=1) [default: 0.1].
    #[arg(long, allow_negative_numbers = true)]
    pub write_ratio: Option<f64>,
    /// `bitly` scenario: links created before the run, from which redirects draw [default: 1000].
    #[arg(long, allow_negative_numbers = true)]
    pub seed_links: Option<i64>,
    /// `bitly` scenario: draw redirect codes by Zipf with this exponent instead of uniformly.
    #[arg(long, allow_negative_numbers = true)]
    pub zipf_s: Option<f64>,
    /// `uber` scenario: drivers on duty, each reporting a fix a second [default: 500].
    #[arg(long, allow_negative_numbers = true)]
    pub drivers: Option<i64>,
    /// `uber` scenario: riders, each asking for one ride, all at once [default: 1000].
    #[arg(long, allow_negative_numbers = true)]
    pub requests: Option<i64>,
    /// `uber` scenario: the server's database (`sqlite:PATH` or `postgres://…`), where
    /// the ride history is read to count double assignments.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Seed of the random choices, for repeatable request sequences.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl LoadtestArgs {
    /// Arguments for `scenario` with every other flag at its default.
    #[must_use]
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            url: "http://127.0.0.1:8080".to_owned(),
            connections: None,
            rate: None,
            max_in_flight: None,
            duration_secs: 10,
            warmup_secs: 1,
            timeout_ms: 5_000,
            json: false,
            path: None,
            write_ratio: None,
            seed_links: None,
            zipf_s: None,
            drivers: None,
            requests: None,
            database_url: None,
            seed: 1,
        }
    }
}

/// Where requests go: a plain-http origin plus an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The `Host` header value (`host[:port]` as given).
    pub authority: String,
    /// Prefix of every request path, without a trailing slash (often empty).
    pub base_path: String,
}

/// How requests are paced.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Each connection sends its next request when the previous completes.
    Closed {
        /// Concurrent connections.
        connections: usize,
    },
    /// Requests are due at fixed times `i / rate`; latency counts from then.
    Open {
        /// Target requests per second.
        rate_per_sec: f64,
        /// Most requests in flight at once.
        max_in_flight: usize,
    },
}

/// Which workload to send.
#[derive(Debug, Clone, PartialEq)]
pub enum ScenarioConfig {
    /// `GET` one fixed path.
    Get {
        /// Path, starting with `/`.
        path: String,
    },
    /// Bit.ly: redirects of seeded codes mixed with shortens.
    Bitly {
        /// Fraction of requests that are shortens.
        write_ratio: f64,
        /// Links created before the run.
        seed_links: usize,
        /// Zipf exponent for choosing codes; uniform when `None`.
        zipf_s: Option<f64>,
    },
}

impl ScenarioConfig {
    /// The scenario's name as typed on the command line.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Get { .. } => "get",
            Self::Bitly { .. } => "bitly",
        }
    }
}

/// A validated load test.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Server under test.
    pub target: Target,
    /// Pacing.
    pub mode: Mode,
    /// Workload.
    pub scenario: ScenarioConfig,
    /// Measured run length.
    pub duration_secs: u64,
    /// Unmeasured warm-up before the run.
    pub warmup_secs: u64,
    /// Per-request timeout.
    pub timeout_ms: u64,
    /// Seed of the random choices.
    pub seed: u64,
}

/// A flag value that `girder loadtest` refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The scenario name is not one we know.
    #[error("unknown scenario {0:?}: expected `bitly`, `get`, `sse`, `ws` or `uber`")]
    UnknownScenario(String),
    /// `--connections` is out of range.
    #[error("--connections must be 1..={CONNECTIONS_MAX}, got {0}")]
    Connections(i64),
    /// `--rate` is out of range or not a number.
    #[error("--rate must be a number in (0, {RATE_MAX}] requests per second, got {0}")]
    Rate(f64),
    /// `--max-in-flight` is out of range.
    #[error("--max-in-flight must be 1..={CONNECTIONS_MAX}, got {0}")]
    MaxInFlight(i64),
    /// A flag was given that only makes sense in the other mode.
    #[error("{0} applies only to the open loop (with --rate)")]
    OpenLoopOnly(&'static str),
    /// Both pacing modes were asked for.
    #[error(
        "--connections (closed loop) and --rate (open loop) are exclusive; use --max-in-flight with --rate"
    )]
    BothModes,
    /// `--duration-secs` is out of range.
    #[error("--duration-secs must be 1..={DURATION_SECS_MAX}, got {0}")]
    Duration(i64),
    /// `--warmup-secs` is out of range.
    #[error("--warmup-secs must be 0..={DURATION_SECS_MAX}, got {0}")]
    Warmup(i64),
    /// `--timeout-ms` is out of range.
    #[error("--timeout-ms must be 1..={TIMEOUT_MS_MAX}, got {0}")]
    Timeout(i64),
    /// `--url` is not a usable plain-http base URL.
    #[error("--url {url:?} is not usable: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `--path` does not start with `/`.
    #[error("--path must start with '/', got {0:?}")]
    Path(String),
    /// `--write-ratio` is outside `[0, 1]`.
    #[error("--write-ratio must be within [0, 1], got {0}")]
    WriteRatio(f64),
    /// `--seed-links` is out of range.
    #[error("--seed-links must be 1..={SEED_LINKS_MAX}, got {0}")]
    SeedLinks(i64),
    /// `--zipf-s` is out of range.
    #[error("--zipf-s must be in (0, {ZIPF_S_MAX}], got {0}")]
    ZipfS(f64),
    /// A scenario-specific flag was given to another scenario.
    #[error("{flag} does not apply to the {scenario} scenario")]
    NotForScenario {
        /// The flag.
        flag: &'static str,
        /// The scenario it was given to.
        scenario: &'static str,
    },
}

impl TryFrom<LoadtestArgs> for Config {
    type Error = ConfigError;

    fn try_from(args: LoadtestArgs) -> Result<Self, ConfigError> {
        let target = parse_target(&args.url)?;
        let mode = match (args.connections, args.rate) {
            (Some(_), Some(_)) => return Err(ConfigError::BothModes),
            (None, Some(rate)) => {
                if !(rate > 0.0 && rate <= RATE_MAX) {
                    return Err(ConfigError::Rate(rate));
                }
                let max_in_flight = args.max_in_flight.unwrap_or(1_024);
                Mode::Open {
                    rate_per_sec: rate,
                    max_in_flight: in_range(max_in_flight, 1, CONNECTIONS_MAX)
                        .ok_or(ConfigError::MaxInFlight(max_in_flight))?,
                }
            }
            (connections, None) => {
                if args.max_in_flight.is_some() {
                    return Err(ConfigError::OpenLoopOnly("--max-in-flight"));
                }
                let connections = connections.unwrap_or(64);
                Mode::Closed {
                    connections: in_range(connections, 1, CONNECTIONS_MAX)
                        .ok_or(ConfigError::Connections(connections))?,
                }
            }
        };
        let duration_secs = in_range(args.duration_secs, 1, DURATION_SECS_MAX as usize)
            .ok_or(ConfigError::Duration(args.duration_secs))?;
        let warmup_secs = in_range(args.warmup_secs, 0, DURATION_SECS_MAX as usize)
            .ok_or(ConfigError::Warmup(args.warmup_secs))?;
        let timeout_ms = in_range(args.timeout_ms, 1, TIMEOUT_MS_MAX as usize)
            .ok_or(ConfigError::Timeout(args.timeout_ms))?;
        for (given, flag) in [
            (args.drivers.is_some(), "--drivers"),
            (args.requests.is_some(), "--requests"),
            (args.database_url.is_some(), "--database-url"),
        ] {
            if given {
                let scenario = if args.scenario == "bitly" { "bitly" } else { "get" };
                return Err(ConfigError::NotForScenario { flag, scenario });
            }
        }
        let scenario = match args.scenario.as_str() {
            "get" => {
                let not_for = |flag| ConfigError::NotForScenario { flag, scenario: "get" };
                if args.write_ratio.is_some() {
                    return Err(not_for("--write-ratio"));
                }
                if args.seed_links.is_some() {
                    return Err(not_for("--seed-links"));
                }
                if args.zipf_s.is_some() {
                    return Err(not_for("--zipf-s"));
                }
                let path = args.path.unwrap_or_else(|| "/healthz".to_owned());
                if !path.starts_with('/') {
                    return Err(ConfigError::Path(path));
                }
                ScenarioConfig::Get { path }
            }
            "bitly" => {
                if args.path.is_some() {
                    return Err(ConfigError::NotForScenario { flag: "--path", scenario: "bitly" });
                }
                let write_ratio = args.write_ratio.unwrap_or(0.1);
                if !(0.0..=1.0).contains(&write_ratio) {
                    return Err(ConfigError::WriteRatio(write_ratio));
                }
                let seed_links = args.seed_links.unwrap_or(1_000);
                let seed_links = in_range(seed_links, 1, SEED_LINKS_MAX)
                    .ok_or(ConfigError::SeedLinks(seed_links))?;
                if let Some(s) = args.zipf_s
                    && !(s > 0.0 && s <= ZIPF_S_MAX)
                {
                    return Err(ConfigError::ZipfS(s));
                }
                ScenarioConfig::Bitly { write_ratio, seed_links, zipf_s: args.zipf_s }
            }
            other => return Err(ConfigError::UnknownScenario(other.to_owned())),
        };
        Ok(Self {
            target,
            mode,
            scenario,
            duration_secs: duration_secs as u64,
            warmup_secs: warmup_secs as u64,
            timeout_ms: timeout_ms as u64,
            seed: args.seed,
        })
    }
}

/// `value` as a `usize` when `min <= value <= max`.
fn in_range(value: i64, min: usize, max: usize) -> Option<usize> {
    usize::try_from(value).ok().filter(|v| (min..=max).contains(v))
}

fn parse_target(url: &str) -> Result<Target, ConfigError> {
    let bad = |reason| ConfigError::Url { url: url.to_owned(), reason };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("https is not supported; give an http:// URL")),
        Some(_) => return Err(bad("the scheme must be http")),
        None => return Err(bad("expected an absolute URL such as http://127.0.0.1:8080")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    if uri.query().is_some() {
        return Err(bad("a base URL takes no query string"));
    }
    Ok(Target {
        host: host.to_owned(),
        port: authority.port_u16().unwrap_or(80),
        authority: authority.as_str().to_owned(),
        base_path: uri.path().trim_end_matches('/').to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `edit` to default `scenario` arguments and validates.
    fn check(scenario: &str, edit: impl FnOnce(&mut LoadtestArgs)) -> Result<Config, ConfigError> {
        let mut args = LoadtestArgs::new(scenario);
        edit(&mut args);
        Config::try_from(args)
    }

    #[test]
    fn bad_arguments_are_named_errors() {
        type Edit = fn(&mut LoadtestArgs);
        let table: &[(&str, Edit, &str)] = &[
            ("nope", |_| {}, "unknown scenario \"nope\""),
            ("get", |a| a.connections = Some(0), "--connections must be 1..=10000, got 0"),
            ("get", |a| a.connections = Some(-4), "--connections must be 1..=10000, got -4"),
            ("get", |a| a.connections = Some(10_001), "--connections must be"),
            ("get", |a| a.rate = Some(0.0), "--rate must be"),
            ("get", |a| a.rate = Some(-1.0), "--rate must be"),
            ("get", |a| a.rate = Some(f64::NAN), "--rate must be"),
            ("get", |a| a.rate = Some(2e6), "--rate must be"),
            ("get", |a| (a.rate, a.max_in_flight) = (Some(10.0), Some(0)), "--max-in-flight must"),
            ("get", |a| a.max_in_flight = Some(8), "applies only to the open loop"),
            ("get", |a| (a.rate, a.connections) = (Some(10.0), Some(8)), "are exclusive"),
            ("get", |a| a.duration_secs = 0, "--duration-secs must be 1..=3600, got 0"),
            ("get", |a| a.duration_secs = 3_601, "--duration-secs must be 1..=3600, got 3601"),
            ("get", |a| a.duration_secs = -1, "--duration-secs must be"),
            ("get", |a| a.warmup_secs = -1, "--warmup-secs must be"),
            ("get", |a| a.timeout_ms = 0, "--timeout-ms must be"),
            ("get", |a| a.url = "not a url".into(), "not a URL"),
            ("get", |a| a.url = "127.0.0.1:8080".into(), "expected an absolute URL"),
            ("get", |a| a.url = "https://x.test".into(), "https is not supported"),
            ("get", |a| a.url = "ftp://x.test".into(), "scheme must be http"),
            ("get", |a| a.url = "http://x.test/?q=1".into(), "no query string"),
            ("get", |a| a.path = Some("healthz".into()), "--path must start with '/'"),
            ("get", |a| a.write_ratio = Some(0.5), "--write-ratio does not apply to the get"),
            ("get", |a| a.seed_links = Some(5), "--seed-links does not apply"),
            ("bitly", |a| a.path = Some("/x".into()), "--path does not apply to the bitly"),
            ("bitly", |a| a.write_ratio = Some(-0.1), "--write-ratio must be within [0, 1]"),
            ("bitly", |a| a.write_ratio = Some(1.5), "--write-ratio must be within [0, 1]"),
            ("bitly", |a| a.write_ratio = Some(f64::NAN), "--write-ratio must be"),
            ("bitly", |a| a.seed_links = Some(0), "--seed-links must be"),
            ("bitly", |a| a.drivers = Some(5), "--drivers does not apply to the bitly"),
            ("get", |a| a.database_url = Some("sqlite:x".into()), "--database-url does not"),
            ("bitly", |a| a.zipf_s = Some(0.0), "--zipf-s must be"),
        ];
        for (scenario, edit, want) in table {
            let err = check(scenario, *edit).expect_err(want).to_string();
            assert!(err.contains(want), "want {want:?}, got {err:?}");
        }
    }

    #[test]
    fn good_arguments_resolve_with_defaults() {
        let config = check("bitly", |_| {}).unwrap();
        assert_eq!(config.mode, Mode::Closed { connections: 64 });
        assert_eq!(
            config.scenario,
            ScenarioConfig::Bitly { write_ratio: 0.1, seed_links: 1_000, zipf_s: None }
        );
        assert_eq!(
            config.target,
            Target {
                host: "127.0.0.1".into(),
                port: 8080,
                authority: "127.0.0.1:8080".into(),
                base_path: String::new(),
            }
        );
        assert_eq!((config.duration_secs, config.warmup_secs), (10, 1));

        let config = check("get", |a| {
            a.rate = Some(500.0);
            a.url = "http://localhost/prefix/".into();
            a.duration_secs = 3_600;
            a.warmup_secs = 0;
        })
        .unwrap();
        assert_eq!(config.mode, Mode::Open { rate_per_sec: 500.0, max_in_flight: 1_024 });
        assert_eq!(config.scenario, ScenarioConfig::Get { path: "/healthz".into() });
        assert_eq!((config.target.port, config.target.base_path.as_str()), (80, "/prefix"));

        let config =
            check("bitly", |a| (a.write_ratio, a.zipf_s) = (Some(1.0), Some(1.1))).unwrap();
        assert_eq!(
            config.scenario,
            ScenarioConfig::Bitly { write_ratio: 1.0, seed_links: 1_000, zipf_s: Some(1.1) }
        );
    }
}
