//! Workloads, one per reference system, each a source of requests plus the
//! status that counts as success for each. `get` requests one fixed path;
//! `bitly` seeds links first, then mixes redirects of those codes (uniform or
//! Zipf; the 302 is the success, never followed) with new shortens.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use rand::Rng;
use tokio::task::JoinSet;

use super::LoadtestError;
use super::client::{self, Conn};
use super::config::{Config, ScenarioConfig, Target};
use super::recorder::Outcome;
use super::zipf::Zipf;

/// Concurrent connections used to seed links.
const SEED_CONNECTIONS_MAX: usize = 32;

/// Which statuses count as success for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Any 2xx.
    Ok,
    /// 201 Created.
    Created,
    /// Any 3xx: a redirect, not followed.
    Redirect,
}

impl Expect {
    pub(crate) fn judge(self, status: StatusCode) -> Outcome {
        let ok = match self {
            Self::Ok => status.is_success(),
            Self::Created => status == StatusCode::CREATED,
            Self::Redirect => status.is_redirection(),
        };
        if ok { Outcome::Success } else { Outcome::Status(status.as_u16()) }
    }
}

/// One request to send and how to judge its answer.
#[derive(Debug)]
pub(crate) struct Op {
    pub(crate) request: Request<Full<Bytes>>,
    pub(crate) expect: Expect,
}

/// How redirect codes are chosen from the seeded ones.
#[derive(Debug)]
pub(crate) enum Picker {
    Uniform,
    Zipf(Zipf),
}

/// A prepared workload, shared by every worker (each brings its own RNG).
#[derive(Debug)]
pub(crate) enum Scenario {
    Get { host: HeaderValue, uri: Uri },
    Bitly { host: HeaderValue, shorten: Uri, redirects: Vec<Uri>, picker: Picker, write_ratio: f64 },
}

impl Scenario {
    /// Prepares `config`'s scenario; for bitly this creates the seed links.
    ///
    /// # Errors
    /// A seed link could not be created.
    pub(crate) async fn prepare(config: &Config) -> Result<Self, LoadtestError> {
        let target = &config.target;
        let host = host_header(target);
        match &config.scenario {
            ScenarioConfig::Get { path } => Ok(Self::Get { host, uri: uri(target, path) }),
            ScenarioConfig::Bitly { write_ratio, seed_links, zipf_s } => {
                let shorten = uri(target, "/api/bitly/urls");
                let timeout = Duration::from_millis(config.timeout_ms);
                let codes = seed(target, &shorten, *seed_links, timeout).await?;
                let redirects = codes.iter().map(|code| uri(target, &format!("/{code}"))).collect();
                let picker = match zipf_s {
                    Some(s) => Picker::Zipf(Zipf::new(*seed_links, *s)),
                    None => Picker::Uniform,
                };
                Ok(Self::Bitly { host, shorten, redirects, picker, write_ratio: *write_ratio })
            }
        }
    }

    /// Links created while preparing.
    pub(crate) fn links_seeded(&self) -> usize {
        match self {
            Self::Get { .. } => 0,
            Self::Bitly { redirects, .. } => redirects.len(),
        }
    }

    /// The next request.
    pub(crate) fn next_op(&self, rng: &mut impl Rng) -> Op {
        match self {
            Self::Get { host, uri } => Op { request: get(host, uri), expect: Expect::Ok },
            Self::Bitly { host, shorten, redirects, picker, write_ratio } => {
                if rng.random::<f64>() < *write_ratio {
                    let url =
                        format!("https://example.com/loadtest/run/{:016x}", rng.random::<u64>());
                    Op { request: post_url(host, shorten, &url), expect: Expect::Created }
                } else {
                    let rank = match picker {
                        Picker::Uniform => rng.random_range(0..redirects.len()),
                        Picker::Zipf(zipf) => zipf.sample(rng),
                    };
                    Op { request: get(host, &redirects[rank]), expect: Expect::Redirect }
                }
            }
        }
    }
}

fn uri(target: &Target, path: &str) -> Uri {
    let full = format!("{}{path}", target.base_path);
    // Paths are validated to start with '/' and codes are base62, but a space
    // or similar in a user's path still must not panic: fall back to encoding it.
    full.parse().unwrap_or_else(|_| {
        let encoded: String =
            full.bytes()
                .map(|b| {
                    if b.is_ascii_graphic() { (b as char).to_string() } else { format!("%{b:02X}") }
                })
                .collect();
        encoded.parse().unwrap_or_else(|_| Uri::from_static("/"))
    })
}

/// The `Host` header, parsed once rather than per request.
fn host_header(target: &Target) -> HeaderValue {
    // The authority came out of a parsed URI, so it is visible ASCII and always
    // a valid header value; the fallback only keeps this total.
    HeaderValue::from_str(&target.authority)
        .unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

fn get(host: &HeaderValue, uri: &Uri) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = uri.clone();
    request.headers_mut().insert(HOST, host.clone());
    request
}

fn post_url(host: &HeaderValue, uri: &Uri, url: &str) -> Request<Full<Bytes>> {
    let body = serde_json::json!({ "url": url }).to_string();
    let mut request = get(host, uri);
    *request.method_mut() = Method::POST;
    *request.body_mut() = Full::new(Bytes::from(body));
    request.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    request
}

/// Creates `count` links over a few connections; returns their codes in
/// creation-index order, so Zipf rank 0 is the first link.
async fn seed(
    target: &Target,
    shorten: &Uri,
    count: usize,
    timeout: Duration,
) -> Result<Vec<String>, LoadtestError> {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for _ in 0..count.min(SEED_CONNECTIONS_MAX) {
        let (next, failed) = (Arc::clone(&next), Arc::clone(&failed));
        let (target, shorten, host) = (target.clone(), shorten.clone(), host_header(target));
        tasks.spawn(async move {
            let mut conn: Option<Conn> = None;
            let mut made = Vec::new();
            let result = loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count || failed.load(Ordering::Relaxed) {
                    break Ok(made);
                }
                let url = format!("https://example.com/loadtest/seed/{index}");
                let request = post_url(&host, &shorten, &url);
                match seed_one(&mut conn, &target, request, timeout).await {
                    Ok(code) => made.push((index, code)),
                    Err(reason) => {
                        failed.store(true, Ordering::Relaxed);
                        break Err(LoadtestError::Seed { index, wanted: count, reason });
                    }
                }
            };
            if let Some(conn) = conn {
                conn.close().await;
            }
            result
        });
    }
    let mut codes = Vec::with_capacity(count);
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(|e| LoadtestError::Worker(e.to_string()))? {
            Ok(made) => codes.extend(made),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    codes.sort_unstable_by_key(|(index, _)| *index);
    assert_eq!(codes.len(), count, "every seed index was claimed exactly once");
    Ok(codes.into_iter().map(|(_, code)| code).collect())
}

async fn seed_one(
    conn: &mut Option<Conn>,
    target: &Target,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<String, String> {
    let response = client::exchange(conn, target, request, timeout)
        .await
        .map_err(|kind| format!("transport error: {}", kind.name()))?;
    if response.status != StatusCode::CREATED {
        return Err(format!(
            "expected 201 from POST /api/bitly/urls, got {} {}",
            response.status,
            String::from_utf8_lossy(&response.body).chars().take(200).collect::<String>()
        ));
    }
    let body: serde_json::Value =
        serde_json::from_slice(&response.body).map_err(|e| format!("201 body is not JSON: {e}"))?;
    body["code"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "201 body has no string `code`".to_owned())
}
