//! Logs, metrics and request ids: tracing to stderr, a Prometheus recorder
//! installed once per process, and a middleware timing every request by route.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;

/// Installs the tracing subscriber (`RUST_LOG` or `info`). Idempotent.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
    // A second call (tests build several apps) finds a subscriber and does nothing.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The process-wide Prometheus handle, installing the recorder on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours renders empty.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// How often histogram samples are folded into their distributions.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into their distributions every
/// [`UPKEEP_INTERVAL`] until `stop` resolves. Without it the exporter keeps every
/// sample between two scrapes: memory that grows with traffic when nobody scrapes.
pub async fn run_upkeep(stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => prometheus().run_upkeep(),
        }
    }
}

/// The metric handles of one (route, method, status), registered once and reused:
/// building a labelled key per request cost ~15% of a trivial request's throughput.
#[derive(Clone)]
struct RouteMetrics {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// Route template → (method, status) → handles. Cardinality is bounded: routes are
/// the router's templates plus `unmatched`, methods the standard ones plus `OTHER`,
/// statuses at most 500 values.
type Registry = HashMap<Box<str>, HashMap<(&'static str, u16), RouteMetrics>>;

fn registry() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(RwLock::default)
}

/// A static label for the method; anything non-standard is `OTHER`, so clients
/// cannot mint label values.
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    STANDARD.iter().find(|(m, _)| m == method).map_or("OTHER", |(_, label)| label)
}

fn route_metrics(route: &str, method: &'static str, status: u16) -> RouteMetrics {
    if let Some(found) = registry().read().get(route).and_then(|by| by.get(&(method, status))) {
        return found.clone();
    }
    let handles = RouteMetrics {
        requests: metrics::counter!(
            "girder_http_requests_total",
            "method" => method,
            "route" => route.to_owned(),
            "status" => status.to_string()
        ),
        duration: metrics::histogram!("girder_http_request_duration_seconds", "route" => route.to_owned()),
    };
    registry().write().entry(route.into()).or_default().insert((method, status), handles.clone());
    handles
}

/// Counts and times each request, labelled by route template (never the raw
/// path, whose cardinality is unbounded), method and status.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let handles =
        route_metrics(route.as_ref().map_or("unmatched", MatchedPath::as_str), method, status);
    handles.requests.increment(1);
    handles.duration.record(started.elapsed().as_secs_f64());
    response
}
