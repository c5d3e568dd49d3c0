//! Assembles the server: every system's router, the operational endpoints
//! (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`), the dashboard, and
//! the layers every request passes through (request id, tracing, metrics,
//! body limit, problem-shaped fallbacks).

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use girder_core::Clock;
use girder_http::Problem;
use girder_http::ratelimit::{RateLimitLayer, RuleSet};
use girder_http::request_id;
use girder_system::{Context as SystemContext, Running, System, SystemView};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::config::{Config, RateLimitRules};
use crate::systems::SYSTEMS;
use crate::telemetry;

/// The running systems behind one server, opened from the one list.
#[derive(Clone)]
pub struct Systems {
    running: Arc<[Box<dyn Running>]>,
    /// Who is calling: sign-in, and the tokens every extractor verifies.
    auth: girder_http::auth::Auth,
    /// The rate limits on every system's API (`None`: off).
    ratelimit: Option<RateLimitLayer>,
    /// The one pool every system shares.
    db: girder_sql::Db,
    /// Reads routed to the database's replicas, if it has any.
    reads: girder_sql::replica::ReadRouter,
}

impl std::fmt::Debug for Systems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slugs: Vec<&str> = self.running.iter().map(|s| s.info().slug).collect();
        f.debug_struct("Systems").field("running", &slugs).field("db", &self.db.engine()).finish()
    }
}

impl Systems {
    /// Opens the one pool and every live system on it, every part reading `clock`.
    ///
    /// # Errors
    /// The database cannot be opened, or a system cannot (its settings, migrations
    /// or storage); the message names the system.
    pub async fn open(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        Self::open_with_coarse_clock(config, Arc::clone(&clock), clock).await
    }

    /// As [`Systems::open`], with per-request hot paths (the rate limits) reading
    /// `coarse_clock`: `girder serve` gives them girder-core's `CoarseClock`, one
    /// atomic load per decision instead of a system call.
    ///
    /// # Errors
    /// As [`Systems::open`].
    pub async fn open_with_coarse_clock(
        config: &Config,
        clock: Arc<dyn Clock>,
        coarse_clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        // Systems register metric handles as they open: the recorder must exist first.
        telemetry::prometheus();
        if let Some(dir) = girder_sql::sqlite_parent_dir(&config.database_url) {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating data dir {}", dir.display()))?;
        }
        let db = girder_sql::Db::connect(&config.database_url, config.pool)
            .await
            .context("opening the database")?;
        girder_sql::migrate::run(&db, girder_sql::migrate::server()).await?;
        let reads = girder_sql::replica::ReadRouter::connect(
            db.clone(),
            &config.replica_urls,
            config.replica,
        )
        .await
        .context("the read replicas")?;
        // One signing key for every instance sharing the database.
        let key = girder_sql::shared_key::<32>(
            &db,
            girder_sql::migrate::SERVER_SETTINGS_TABLE,
            "token_key",
        )
        .await
        .context("the token signing key")?;
        let tokens = girder_http::identity::Tokens::new(&key, config.token_ttl_secs);
        let operators = match &config.operator_password {
            Some(password) => girder_http::auth::OperatorAccess::password(password)
                .map_err(|e| anyhow::anyhow!("hashing the operator password: {e}"))?,
            None => girder_http::auth::OperatorAccess::Demo,
        };
        let auth = girder_http::auth::Auth::new(tokens, operators, Arc::clone(&clock));
        let context = SystemContext {
            db: db.clone(),
            reads: reads.clone(),
            redis_url: config.redis_url.clone(),
            clock,
            coarse_clock: Arc::clone(&coarse_clock),
            public_url: config.public_url.clone(),
            data_dir: config.data_dir.clone(),
            nats_url: config.nats_url.clone(),
        };
        let mut running = Vec::new();
        for plan in &SYSTEMS {
            let opened = plan
                .open(&context, &config.matches, config.file.as_ref())
                .await
                .with_context(|| format!("opening {}", plan.info().name))?;
            running.extend(opened);
        }
        let redis = config.redis_url.as_deref();
        let failure = config.ratelimit.failure;
        let ratelimit = match &config.ratelimit.rules {
            RateLimitRules::Off => None,
            RateLimitRules::Builtin => {
                let rules = RuleSet::from_toml_str(girder_http::ratelimit::BUILTIN_RULES)
                    .context("built-in rate limits")?;
                Some(RateLimitLayer::from_rules(rules, redis, failure, coarse_clock).await)
            }
            RateLimitRules::File(path) => {
                Some(RateLimitLayer::from_file(path, redis, failure, coarse_clock).await)
            }
        }
        .transpose()
        .context("rate limits")?;
        Ok(Self { running: running.into(), auth, ratelimit, db, reads })
    }

    /// The running system of type `S`, if it is in the list.
    #[must_use]
    pub fn get<S: System>(&self) -> Option<Arc<S>> {
        self.running.iter().find_map(|s| s.downcast::<S>())
    }

    /// Every running system, in the list's order.
    #[must_use]
    pub fn running(&self) -> &[Box<dyn Running>] {
        &self.running
    }

    /// The tokens this server issues and accepts (tests sign callers in with them).
    #[must_use]
    pub const fn tokens(&self) -> &girder_http::identity::Tokens {
        self.auth.tokens()
    }

    /// The one pool.
    #[must_use]
    pub const fn db(&self) -> &girder_sql::Db {
        &self.db
    }

    /// The read router over the pool and its replicas.
    #[must_use]
    pub const fn reads(&self) -> &girder_sql::replica::ReadRouter {
        &self.reads
    }

    /// Re-reads the rule files: the middleware's and every system's. A bad file leaves
    /// its old rules in place.
    ///
    /// # Errors
    /// A file is unreadable or invalid; the message names it.
    pub fn reload(&self, config: &Config) -> anyhow::Result<()> {
        if let (Some(layer), RateLimitRules::File(path)) =
            (&self.ratelimit, &config.ratelimit.rules)
        {
            layer.engine().reload_from_file(path).with_context(|| path.display().to_string())?;
        }
        for system in self.running.iter() {
            system.reload().map_err(|e| anyhow::anyhow!(e)).with_context(|| system.info().name)?;
        }
        Ok(())
    }

    /// Closes the pool and the replicas' pools, waiting for statements in flight.
    pub async fn close(&self) {
        self.reads.close_replicas().await;
        self.db.close().await;
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Girder",
        description = "System design patterns, running. Every error is an RFC 9457 problem."
    ),
    paths(healthz, readyz, metrics_text, systems_list, lab_results, lab_plot),
    components(schemas(SystemView, Problem, LabResult))
)]
struct ServerApi;

/// The whole OpenAPI document: the server's operations and every live system's.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ServerApi::openapi();
    doc.merge(girder_http::auth::AuthApi::openapi());
    for document in SYSTEMS.iter().filter_map(|plan| plan.openapi()) {
        doc.merge(document);
    }
    girder_http::openapi::declare_shared_responses(&mut doc);
    doc
}

/// State of the server's own routes.
#[derive(Debug, Clone)]
struct AppState {
    systems: Systems,
    lab_dir: Arc<std::path::PathBuf>,
}

/// The complete server: every system's router, behind the fast paths.
pub fn router(systems: &Systems, config: &Config) -> App {
    // Metrics recorded before the recorder exists are lost: install it first.
    telemetry::prometheus();
    let openapi = Arc::new(girder_http::openapi::to_json(&openapi()));
    let mut ops = Router::new()
        .route("/", get(|| async { Html(include_str!("../assets/index.html")) }))
        .route("/dashboard/lab", get(|| async { Html(include_str!("../assets/lab.html")) }))
        .route("/assets/app.css", get(stylesheet))
        .route("/assets/girder.js", get(script))
        .route("/api/lab", get(lab_results))
        .route("/api/lab/{experiment}/plot.svg", get(lab_plot))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/systems", get(systems_list))
        .route("/openapi.json", get(move || async move { Json(openapi.as_ref().clone()) }));
    for plan in &SYSTEMS {
        if let Some(page) = plan.dashboard() {
            let path = format!("/dashboard/{}", plan.info().slug);
            ops = ops.route(&path, get(move || async move { Html(page) }));
        }
    }
    let ops = ops.with_state(AppState {
        systems: systems.clone(),
        lab_dir: Arc::new(config.lab_dir.clone()),
    });
    // Everything but the systems' root routes (the redirect path) is traced and timed
    // per route. Redirects, the hot path, skip those two layers: they are counted by
    // the click buffer, and together the layers cost more than the redirect itself
    // (see BENCHMARKS.md).
    let mut observed = Router::new().merge(ops).nest("/api/auth", systems.auth.clone().router());
    for system in systems.running() {
        observed = observed.nest(&format!("/api/{}", system.info().slug), system.router());
    }
    let observed = observed.layer(axum::middleware::from_fn(telemetry::track)).layer(
        TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let id = request_id::of(request);
            tracing::debug_span!("http", method = %request.method(), uri = %request.uri(), request_id = %id)
        }),
    );
    let mut router = Router::new().merge(observed);
    for root in systems.running().iter().filter_map(|s| s.root_router()) {
        router = router.merge(root);
    }
    let mut router = router.fallback(not_found).method_not_allowed_fallback(method_not_allowed);
    if let Some(limits) = &systems.ratelimit {
        router = router.layer(limits.clone());
    }
    let router = router
        .layer(systems.auth.tokens().clone().layer())
        .layer(DefaultBodyLimit::max(config.body_bytes_max))
        .layer(request_id::propagate_layer())
        .layer(request_id::set_layer());
    App(Arc::new(AppInner { systems: systems.clone(), router }))
}

/// The server as one tower `Service`: a request a system can answer without awaiting
/// (a `GET /{code}` whose link this instance's L1 holds), and that no rate limit
/// covers, is answered on the spot — no routing, no extractors, no await — with the
/// same request-id header as every other response. Everything else, including every
/// redirect the L1 cannot answer, goes to the router, which gives the identical answer.
#[derive(Debug, Clone)]
pub struct App(Arc<AppInner>);

/// What `App` shares between its clones (the server clones it for every request:
/// one reference count, not one per field).
#[derive(Debug)]
struct AppInner {
    systems: Systems,
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
        let systems = &self.0.systems;
        // A path some rate limit covers goes through the router and its limiter.
        let limited = systems.ratelimit.as_ref().is_some_and(|limits| {
            limits.engine().matches_any(request.method(), request.uri().path())
        });
        if !limited
            && let Some(mut response) = systems.running.iter().find_map(|s| s.fast_path(&request))
        {
            request_id::stamp(&request, &mut response);
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

/// Readiness: the database answers and every system says it is ready.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Ready", body = String),
        (status = 503, description = "The database or a system is not ready", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(e) = state.systems.db.ping().await {
        tracing::warn!(error = %e, "readiness: the database does not answer");
        return Problem::unavailable("the database does not answer").into_response();
    }
    for system in state.systems.running() {
        if let Err(e) = system.ready().await {
            let name = system.info().name;
            tracing::warn!(system = name, error = %e, "readiness: a system is not ready");
            return Problem::unavailable(format!("{name} is not ready")).into_response();
        }
    }
    "ready".into_response()
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Metrics", body = String, content_type = "text/plain")))]
async fn metrics_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], telemetry::prometheus().render())
        .into_response()
}

/// The reference systems and their status.
#[utoipa::path(get, path = "/api/systems", tag = "ops", responses((status = 200, description = "Systems", body = [SystemView])))]
async fn systems_list() -> Json<Vec<SystemView>> {
    Json(SYSTEMS.iter().map(|plan| SystemView::new(&plan.info(), plan.status())).collect())
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

/// The dashboard's one shared script: it signs the pages in (a demo identity per tab).
async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../assets/girder.js"),
    )
        .into_response()
}

/// One experiment's latest result, as `/api/lab` lists it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // the shape of the JSON `lab_results` builds, for the OpenAPI document
struct LabResult {
    /// The experiment's name.
    name: String,
    /// What it measures.
    summary: String,
    /// Its `results.json`.
    result: serde_json::Value,
}

/// The latest result of every lab experiment that has run (from `results.json`).
#[utoipa::path(get, path = "/api/lab", tag = "lab", responses((status = 200, description = "Latest results, one per experiment that has run", body = [LabResult])))]
async fn lab_results(State(state): State<AppState>) -> Json<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for experiment in crate::lab::EXPERIMENTS {
        let path = state.lab_dir.join(experiment.name).join("results.json");
        // An experiment that never ran, or a file mid-write, is simply absent.
        if let Ok(bytes) = tokio::fs::read(&path).await
            && let Ok(result) = serde_json::from_slice::<serde_json::Value>(&bytes)
        {
            out.push(serde_json::json!({
                "name": experiment.name,
                "summary": experiment.summary,
                "result": result,
            }));
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
    girder_http::extract::Path(name): girder_http::extract::Path<String>,
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
