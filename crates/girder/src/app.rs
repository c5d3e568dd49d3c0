//! Assembles the server: every system's router, the operational endpoints
//! (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`), the dashboard, and
//! the layers every request passes through (request id, tracing, metrics,
//! body limit, problem-shaped fallbacks).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use girder_core::Clock;
use girder_systems::bitly::{Bitly, BitlyApi};
use girder_systems::catalog::{SYSTEMS, SystemInfo};
use girder_systems::gopuff::{GoPuff, GoPuffApi};
use girder_systems::problem::Problem;
use girder_systems::ratelimiter::{RateLimitLayer, RateLimiterApi, RateLimiterService, RuleSet};
use girder_systems::ticketmaster::{Ticketmaster, TicketmasterApi};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::config::{Config, RateLimitRules};
use crate::telemetry;

/// The running systems behind one server.
#[derive(Debug, Clone)]
pub struct Systems {
    /// Bit.ly.
    pub bitly: Arc<Bitly>,
    /// GoPuff.
    pub gopuff: Arc<GoPuff>,
    /// Ticketmaster.
    pub ticketmaster: Arc<Ticketmaster>,
    /// The Distributed Rate Limiter service.
    pub ratelimiter: Arc<RateLimiterService>,
    /// The rate limits on every system's API (`None`: off).
    pub ratelimit: Option<RateLimitLayer>,
}

impl Systems {
    /// Opens every system's storage, every part reading `clock`.
    ///
    /// # Errors
    /// A store cannot be opened.
    pub async fn open(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        Self::open_with_limiter_clock(config, Arc::clone(&clock), clock).await
    }

    /// As [`Systems::open`], with the in-process rate limits (the middleware and the
    /// rate limiter service) reading `limiter_clock`: `girder serve` gives them a
    /// `CoarseClock`, one atomic load per decision instead of a system call.
    ///
    /// # Errors
    /// A store cannot be opened.
    pub async fn open_with_limiter_clock(
        config: &Config,
        clock: Arc<dyn Clock>,
        limiter_clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        // Systems register metric handles as they open: the recorder must exist first.
        telemetry::prometheus();
        if let Some(dir) = sqlite_parent_dir(&config.bitly.database_url) {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("creating data dir {}: {e}", dir.display()))?;
        }
        let bitly = Bitly::open(config.bitly.clone(), Arc::clone(&clock)).await?;
        let gopuff = GoPuff::open(config.gopuff.clone(), Arc::clone(&clock)).await?;
        let ticketmaster =
            Ticketmaster::open(config.ticketmaster.clone(), Arc::clone(&clock)).await?;
        let ratelimiter =
            RateLimiterService::open(config.ratelimiter.clone(), Arc::clone(&limiter_clock))
                .await
                .map_err(|e| anyhow::anyhow!("rate limiter service: {e}"))?;
        let redis = config.bitly.redis_url.as_deref();
        let failure = config.ratelimit.failure;
        let ratelimit = match &config.ratelimit.rules {
            RateLimitRules::Off => None,
            RateLimitRules::Builtin => {
                let rules = RuleSet::from_toml_str(include_str!("../assets/ratelimit.toml"))
                    .map_err(|e| anyhow::anyhow!("built-in rate limits: {e}"))?;
                Some(RateLimitLayer::from_rules(rules, redis, failure, limiter_clock).await)
            }
            RateLimitRules::File(path) => {
                Some(RateLimitLayer::from_file(path, redis, failure, limiter_clock).await)
            }
        }
        .transpose()
        .map_err(|e| anyhow::anyhow!("rate limits: {e}"))?;
        Ok(Self { bitly, gopuff, ticketmaster, ratelimiter, ratelimit })
    }

    /// Re-reads the rate-limit rule files (the middleware's and the service's). A bad
    /// file leaves its old rules in place.
    ///
    /// # Errors
    /// A file is unreadable or invalid; the message names it.
    pub fn reload_rate_limits(&self, config: &Config) -> anyhow::Result<()> {
        if let (Some(layer), RateLimitRules::File(path)) =
            (&self.ratelimit, &config.ratelimit.rules)
        {
            layer
                .engine()
                .reload_from_file(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        self.ratelimiter.reload().map_err(|e| anyhow::anyhow!("rate limiter service rules: {e}"))
    }
}

/// The directory a `sqlite:` URL's file lives in, so it can be created first.
fn sqlite_parent_dir(url: &str) -> Option<std::path::PathBuf> {
    let path = url.strip_prefix("sqlite:")?;
    let path = path.strip_prefix("//").unwrap_or(path);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()).map(Into::into)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Girder",
        description = "System design patterns, running. Every error is an RFC 9457 problem."
    ),
    paths(healthz, readyz, metrics_text, systems_list, lab_results, lab_plot),
    components(schemas(SystemInfo, Problem))
)]
struct ServerApi;

/// The whole OpenAPI document.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ServerApi::openapi();
    doc.merge(BitlyApi::openapi());
    doc.merge(GoPuffApi::openapi());
    doc.merge(TicketmasterApi::openapi());
    doc.merge(RateLimiterApi::openapi());
    doc
}

/// State of the server's own routes.
#[derive(Debug, Clone)]
struct AppState {
    systems: Systems,
    lab_dir: Arc<std::path::PathBuf>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids are UUIDv7 from girder-id: time-ordered (logs sort by them) and drawn
/// from a per-thread CSPRNG instead of a system call per request.
#[derive(Debug, Clone, Copy, Default)]
struct RequestIds(girder_id::uuid7::UuidV7Generator);

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = self.0.next().hyphenated().encode_lower(&mut buf);
        axum::http::HeaderValue::from_str(text).ok().map(RequestId::new)
    }
}

/// The complete server: the router behind the redirect fast path.
pub fn router(systems: &Systems, config: &Config) -> App {
    // Metrics recorded before the recorder exists are lost: install it first.
    telemetry::prometheus();
    let openapi = Arc::new(openapi());
    let ops = Router::new()
        .route("/", get(|| async { Html(include_str!("../assets/index.html")) }))
        .route("/dashboard/bitly", get(|| async { Html(include_str!("../assets/bitly.html")) }))
        .route("/dashboard/lab", get(|| async { Html(include_str!("../assets/lab.html")) }))
        .route("/dashboard/gopuff", get(|| async { Html(include_str!("../assets/gopuff.html")) }))
        .route(
            "/dashboard/ratelimiter",
            get(|| async { Html(include_str!("../assets/ratelimiter.html")) }),
        )
        .route(
            "/dashboard/ticketmaster",
            get(|| async { Html(include_str!("../assets/ticketmaster.html")) }),
        )
        .route("/assets/app.css", get(stylesheet))
        .route("/api/lab", get(lab_results))
        .route("/api/lab/{experiment}/plot.svg", get(lab_plot))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/systems", get(systems_list))
        .route("/openapi.json", get(move || async move { Json(openapi.as_ref().clone()) }))
        .with_state(AppState {
            systems: systems.clone(),
            lab_dir: Arc::new(config.lab_dir.clone()),
        });
    // Everything but the redirect path is traced and timed per route. Redirects, the
    // hot path, skip those two layers: they are counted by the click buffer (and
    // `girder_bitly_redirects_total` as it flushes), and together the layers cost
    // more than the redirect itself (see BENCHMARKS.md).
    let observed = Router::new()
        .merge(ops)
        .nest("/api/bitly", systems.bitly.api_router())
        .nest("/api/gopuff", systems.gopuff.api_router())
        .nest("/api/ticketmaster", systems.ticketmaster.api_router())
        .nest("/api/ratelimiter", systems.ratelimiter.api_router())
        .layer(axum::middleware::from_fn(telemetry::track))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::debug_span!("http", method = %request.method(), uri = %request.uri(), request_id = %id)
        }));
    let mut router = Router::new()
        .merge(observed)
        .merge(systems.bitly.redirect_router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    if let Some(limits) = &systems.ratelimit {
        router = router.layer(limits.clone());
    }
    let router = router
        .layer(DefaultBodyLimit::max(config.body_bytes_max))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds::default()));
    App(Arc::new(AppInner {
        bitly: Arc::clone(&systems.bitly),
        ratelimit: systems.ratelimit.clone(),
        router,
    }))
}

/// The server as one tower `Service`: a `GET`/`HEAD` of `/{code}` whose link this
/// instance's L1 holds, and that no rate limit covers, is answered on the spot (no
/// routing, no extractors, no await: the redirect is the hot path), with the same
/// request-id header as every other response. Everything else, including every redirect the L1 cannot answer,
/// goes to the router, whose `/{code}` route gives the identical answer.
#[derive(Debug, Clone)]
pub struct App(Arc<AppInner>);

/// What `App` shares between its clones (the server clones it for every request:
/// one reference count, not one per field).
#[derive(Debug)]
struct AppInner {
    bitly: Arc<Bitly>,
    ratelimit: Option<RateLimitLayer>,
    router: Router,
}

impl tower::Service<axum::extract::Request> for App {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<Response, std::convert::Infallible>>,
        <Router as tower::Service<axum::extract::Request>>::Future,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // A Router is always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        use futures_util::future::Either;
        // A path some rate limit covers goes through the router and its limiter.
        let hot = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD)
            && self.0.ratelimit.as_ref().is_none_or(|limits| {
                !limits.engine().matches_any(request.method(), request.uri().path())
            });
        if hot && let Some(mut response) = self.0.bitly.redirect_from_l1(request.uri().path()) {
            let id = request.headers().get(&REQUEST_ID).cloned().or_else(|| {
                RequestIds::default().make_request_id(&request).map(RequestId::into_header_value)
            });
            if let Some(id) = id {
                response.headers_mut().insert(REQUEST_ID, id);
            }
            return Either::Left(std::future::ready(Ok(response)));
        }
        Either::Right(tower::Service::call(&mut self.0.router.clone(), request))
    }
}

async fn not_found(uri: Uri) -> Problem {
    Problem::not_found("no route matches this path").instance(uri.path().to_owned())
}

async fn method_not_allowed(uri: Uri) -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
        .instance(uri.path().to_owned())
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: every store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Ready", body = String),
        (status = 503, description = "A store is unreachable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(State(state): State<AppState>) -> Response {
    match state.systems.bitly.store().ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => Problem::unavailable(format!("bitly store: {e}")).into_response(),
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Metrics", body = String, content_type = "text/plain")))]
async fn metrics_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], telemetry::prometheus().render())
        .into_response()
}

/// The reference systems and their status.
#[utoipa::path(get, path = "/api/systems", tag = "ops", responses((status = 200, description = "Systems", body = [SystemInfo])))]
async fn systems_list() -> Json<&'static [SystemInfo]> {
    Json(&SYSTEMS)
}

/// The dashboard's one stylesheet. Assets are compiled into the binary: no build
/// step, no CDN, works offline.
async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")],
        include_str!("../assets/app.css"),
    )
        .into_response()
}

/// The latest result of every lab experiment that has run (from `results.json`).
#[utoipa::path(get, path = "/api/lab", tag = "lab", responses((status = 200, description = "Latest results, one per experiment that has run", body = Object)))]
async fn lab_results(State(state): State<AppState>) -> Json<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for experiment in crate::lab::EXPERIMENTS {
        let path = state.lab_dir.join(experiment.name).join("results.json");
        // An experiment that never ran, or a file mid-write, is simply absent.
        if let Ok(bytes) = tokio::fs::read(&path).await {
            if let Ok(result) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                out.push(serde_json::json!({
                    "name": experiment.name,
                    "summary": experiment.summary,
                    "result": result,
                }));
            }
        }
    }
    Json(out)
}

/// The plot of an experiment's latest run.
#[utoipa::path(
    get,
    path = "/api/lab/{experiment}/plot.svg",
    tag = "lab",
    params(("experiment" = String, Path, description = "Experiment name")),
    responses(
        (status = 200, description = "SVG plot", body = String, content_type = "image/svg+xml"),
        (status = 404, description = "Unknown experiment or not run yet", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn lab_plot(
    State(state): State<AppState>,
    girder_systems::extract::Path(name): girder_systems::extract::Path<String>,
) -> Response {
    // Only registered names reach the filesystem: no path from the request is used as is.
    let Ok(experiment) = crate::lab::find(&name) else {
        return Problem::not_found("no such experiment").into_response();
    };
    match tokio::fs::read(state.lab_dir.join(experiment.name).join("plot.svg")).await {
        Ok(svg) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Err(_) => Problem::not_found(format!(
            "{} has not been run; run `girder lab {}`",
            experiment.name, experiment.name
        ))
        .into_response(),
    }
}
