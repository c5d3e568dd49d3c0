//! The Distributed Rate Limiter's HTTP surface: `POST /check` for other programs,
//! rule administration, per-rule counts, and the one place its errors become
//! problems.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use girder_ratelimit::{LimitError, MAX_KEY_BYTES, Rule};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::RateLimiterService;
use girder_http::cursor::CursorError;
use girder_http::extract::{Json, Path, Query};
use girder_http::identity::Operator;
use girder_http::problem::Problem;
use girder_http::ratelimit::engine::{CheckError, Checked};
use girder_http::ratelimit::headers;
use girder_http::ratelimit::rules::{Algorithm, KeyPart, RuleSpec, RulesError, valid_name};

/// The OpenAPI description of the Distributed Rate Limiter's endpoints.
#[derive(OpenApi)]
#[openapi(
    paths(check, list_rules, get_rule, put_rule, delete_rule, rule_stats),
    components(schemas(CheckRequest, CheckResponse, RuleBody, RuleView, RulePage, RuleStatsView, Algorithm, KeyPart, Problem)),
    tags((name = "ratelimiter", description = "Distributed rate limiter: decisions for other services"))
)]
pub struct RateLimiterApi;

/// Is this request within the budget of `key` under `rule`?
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The caller's key (a user, an API key, an IP…): 1 to 256 bytes.
    #[schema(example = "user:42", min_length = 1, max_length = 256)]
    pub key: String,
    /// The rule's name.
    #[schema(example = "per-user", pattern = r"^[A-Za-z0-9_.-]{1,64}$")]
    pub rule: String,
    /// Units to consume: an integer from 1 to the rule's burst (bucket algorithms)
    /// or limit (window algorithms). Default 1.
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 4_294_967_296_u64)]
    pub cost: u64,
}

const fn one() -> u64 {
    1
}

/// The decision. `allowed: false` is still a 200: the check itself succeeded.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckResponse {
    /// Whether the cost was admitted (and consumed).
    pub allowed: bool,
    /// Requests of cost 1 still admitted right now.
    pub remaining: u64,
    /// When denied, milliseconds until the same request would be admitted; else 0.
    pub retry_after_ms: u64,
    /// Milliseconds until the key's budget is back to full.
    pub reset_after_ms: u64,
    /// The most cost ever admitted at once.
    pub limit: u64,
}

/// A rule's algorithm and numbers (`PUT /rules/{name}`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Units per period: 1 to 2^32.
    #[schema(minimum = 1, maximum = 4_294_967_296_u64)]
    pub limit: u64,
    /// The period in milliseconds: 1 to 30 days.
    #[schema(minimum = 1, maximum = 2_592_000_000_u64)]
    pub period_ms: u64,
    /// Bucket algorithms: the most units at once (default `limit`); window
    /// algorithms: must be absent or equal `limit`.
    #[schema(minimum = 1, maximum = 4_294_967_296_u64)]
    pub burst: Option<u64>,
}

/// A rule as listed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleView {
    /// The name.
    pub name: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Units per period.
    pub limit: u64,
    /// The period in milliseconds.
    pub period_ms: u64,
    /// The most units at once.
    pub burst: u64,
    /// Attributes the middleware keys on (informational for this service).
    pub key: Vec<KeyPart>,
    /// How many overrides the rule has.
    pub overrides: usize,
}

impl From<&RuleSpec> for RuleView {
    fn from(r: &RuleSpec) -> Self {
        Self {
            name: r.name.clone(),
            algorithm: Algorithm::from_kind(r.limit.kind),
            limit: r.limit.limit,
            period_ms: r.limit.period_ms,
            burst: r.limit.burst,
            key: r.key.clone(),
            overrides: r.overrides.len(),
        }
    }
}

/// One page of rules, by name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RulePage {
    /// The rules on this page.
    pub items: Vec<RuleView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Query parameters of the rule listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1–256 (default 100).
    #[param(minimum = 1, maximum = 256)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (valid on the instance that issued it).
    pub cursor: Option<String>,
}

/// The largest page of rules.
pub const PAGE_LIMIT_MAX: u32 = 256;
const LIST_SCOPE: &str = "ratelimiter.rules";

/// A rule's decision counts on the instance answering.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleStatsView {
    /// The rule.
    pub rule: String,
    /// Checks admitted.
    pub allowed: u64,
    /// Checks denied.
    pub limited: u64,
    /// Checks that failed in the backend.
    pub backend_failures: u64,
}

/// Everything that can go wrong in the service, mapped to a problem in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No rule has this name.
    #[error("no rule named {0:?}")]
    UnknownRule(String),
    /// A rule is invalid (name or numbers).
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The cost is outside `1..=max`.
    #[error("cost {cost} must be 1 to {max} for this rule")]
    Cost {
        /// The cost asked.
        cost: u64,
        /// The rule's largest cost.
        max: u64,
    },
    /// The key is empty or longer than 256 bytes.
    #[error("key must be 1 to {MAX_KEY_BYTES} bytes, got {0}")]
    Key(usize),
    /// The limiter backend is unavailable or failed; the source says how.
    #[error("rate-limit check failed")]
    Unavailable(#[source] CheckError),
    /// A page cursor was malformed, forged or from another instance.
    #[error(transparent)]
    Cursor(#[from] CursorError),
    /// The page size is out of range.
    #[error("limit must be 1 to {PAGE_LIMIT_MAX}, got {0}")]
    Limit(u32),
}

impl From<CheckError> for ErrorKind {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::UnknownRule(name) => Self::UnknownRule(name),
            CheckError::Limit(LimitError::InvalidCost { cost, max }) => Self::Cost { cost, max },
            CheckError::Limit(LimitError::KeyTooLong { len }) => Self::Key(len),
            // A failure the service does not know yet is the engine's, not the caller's.
            other => Self::Unavailable(other),
        }
    }
}

impl IntoResponse for ErrorKind {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        let problem = match &self {
            Self::UnknownRule(_) => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-rule", "Unknown rule")
            }
            Self::Rules(RulesError::InvalidName(_)) => {
                Problem::new(unprocessable, "invalid-rule-name", "Invalid rule name")
            }
            Self::Rules(RulesError::TooManyRules(_)) => {
                Problem::new(unprocessable, "too-many-rules", "Too many rules")
            }
            Self::Rules(RulesError::Backend(_)) => {
                // The chain, so the driver's message reaches the log.
                tracing::error!(
                    error = &self as &dyn std::error::Error,
                    "ratelimiter backend failure"
                );
                return Problem::unavailable("the rate-limit backend is unavailable; retry later")
                    .into_response();
            }
            Self::Rules(_) => Problem::new(unprocessable, "invalid-rule", "Invalid rule"),
            Self::Cost { .. } => Problem::new(unprocessable, "invalid-cost", "Invalid cost"),
            Self::Key(_) => Problem::new(unprocessable, "invalid-key", "Invalid key"),
            Self::Cursor(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-cursor", "Invalid cursor")
            }
            Self::Limit(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-limit", "Invalid limit")
            }
            Self::Unavailable(_) => {
                tracing::warn!(
                    error = &self as &dyn std::error::Error,
                    "ratelimiter backend failure"
                );
                return Problem::unavailable("the rate-limit backend is unavailable; retry later")
                    .into_response();
            }
        };
        problem.detail(detail).into_response()
    }
}

type Result<T, E = ErrorKind> = std::result::Result<T, E>;
type State = axum::extract::State<Arc<RateLimiterService>>;

impl RateLimiterService {
    /// The routes, to be nested at `/api/ratelimiter`.
    pub fn api_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/check", post(check))
            .route("/rules", get(list_rules))
            .route("/rules/{name}", get(get_rule).put(put_rule).delete(delete_rule))
            .route("/rules/{name}/stats", get(rule_stats))
            .with_state(Arc::clone(self))
    }
}

/// Check (and consume) `cost` units of `key`'s budget under `rule`. The answer is a
/// 200 whether or not the request is allowed, with `RateLimit-Policy` and `RateLimit`.
#[utoipa::path(
    post,
    path = "/api/ratelimiter/check",
    tag = "ratelimiter",
    request_body = CheckRequest,
    responses(
        (status = 200, description = "The decision (allowed or not)", body = CheckResponse),
        (status = 404, description = "Unknown rule", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid key or cost", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Backend unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn check(
    axum::extract::State(service): State,
    Json(request): Json<CheckRequest>,
) -> Result<Response> {
    if request.key.is_empty() {
        return Err(ErrorKind::Key(0));
    }
    let Checked { rule, policy, result } =
        service.engine.check_key(&request.rule, &request.key, request.cost).await?;
    let decision = result.map_err(CheckError::from)?;
    let body = CheckResponse {
        allowed: decision.allowed,
        remaining: decision.remaining,
        retry_after_ms: decision.retry_after_ms,
        reset_after_ms: decision.reset_after_ms,
        limit: decision.limit,
    };
    let mut response = axum::Json(body).into_response();
    headers::set_fields(response.headers_mut(), &rule, &policy, &decision);
    Ok(response)
}

/// List rules by name, a page at a time.
#[utoipa::path(
    get,
    path = "/api/ratelimiter/rules",
    tag = "ratelimiter",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of rules", body = RulePage),
        (status = 400, description = "Invalid cursor", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Limit out of range", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_rules(
    axum::extract::State(service): State,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<RulePage>> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=PAGE_LIMIT_MAX).contains(&limit) {
        return Err(ErrorKind::Limit(limit));
    }
    let after: Option<String> =
        query.cursor.as_deref().map(|c| service.cursors.decode(LIST_SCOPE, c)).transpose()?;
    let rules = service.engine.rules();
    let mut specs: Vec<&RuleSpec> = rules
        .rules()
        .iter()
        .filter(|r| after.as_deref().is_none_or(|a| r.name.as_str() > a))
        .collect();
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    let more = specs.len() > limit as usize;
    specs.truncate(limit as usize);
    let next_cursor = match specs.last() {
        Some(last) if more => Some(service.cursors.encode(LIST_SCOPE, &last.name)),
        _ => None,
    };
    Ok(axum::Json(RulePage { items: specs.into_iter().map(RuleView::from).collect(), next_cursor }))
}

/// One rule.
#[utoipa::path(
    get,
    path = "/api/ratelimiter/rules/{name}",
    tag = "ratelimiter",
    params(("name" = String, Path, description = "Rule name")),
    responses(
        (status = 200, description = "The rule", body = RuleView),
        (status = 404, description = "Unknown rule", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_rule(
    axum::extract::State(service): State,
    Path(name): Path<String>,
) -> Result<axum::Json<RuleView>> {
    let rules = service.engine.rules();
    let rule = rules.get(&name).ok_or(ErrorKind::UnknownRule(name))?;
    Ok(axum::Json(RuleView::from(rule)))
}

/// Create or replace a rule (a replaced rule loses its overrides; its limiter keeps
/// its state only if the numbers are unchanged). With Redis, every instance sharing
/// it applies the edit within 250 ms; this one before it answers.
#[utoipa::path(
    put,
    path = "/api/ratelimiter/rules/{name}",
    tag = "ratelimiter",
    params(("name" = String, Path, description = "Rule name: 1–64 of A-Z a-z 0-9 _ - .", pattern = r"^[A-Za-z0-9_.-]{1,64}$")),
    request_body = RuleBody,
    responses(
        (status = 200, description = "Replaced", body = RuleView),
        (status = 201, description = "Created", body = RuleView),
        (status = 422, description = "Invalid name or numbers", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn put_rule(
    axum::extract::State(service): State,
    _operator: Operator,
    Path(name): Path<String>,
    Json(body): Json<RuleBody>,
) -> Result<Response> {
    if !valid_name(&name) {
        return Err(RulesError::InvalidName(name.chars().take(80).collect()).into());
    }
    let limit = Rule::new(body.algorithm.kind(), body.limit, body.period_ms)
        .with_burst(body.burst.unwrap_or(body.limit));
    limit.validate().map_err(|source| RulesError::Numbers { rule: name.clone(), source })?;
    let key = service.engine.rules().get(&name).map(|r| r.key.clone()).unwrap_or_default();
    let spec = RuleSpec::new(name, limit, key);
    let view = RuleView::from(&spec);
    let created = service.put_rule(spec).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(view)).into_response())
}

/// Delete a rule.
#[utoipa::path(
    delete,
    path = "/api/ratelimiter/rules/{name}",
    tag = "ratelimiter",
    params(("name" = String, Path, description = "Rule name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown rule", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_rule(
    axum::extract::State(service): State,
    _operator: Operator,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    if service.delete_rule(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ErrorKind::UnknownRule(name))
    }
}

/// A rule's allowed/limited counts on the instance answering (also exported as
/// `girder_ratelimiter_checks_total{rule, outcome}`).
#[utoipa::path(
    get,
    path = "/api/ratelimiter/rules/{name}/stats",
    tag = "ratelimiter",
    params(("name" = String, Path, description = "Rule name")),
    responses(
        (status = 200, description = "The counts", body = RuleStatsView),
        (status = 404, description = "Unknown rule", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rule_stats(
    axum::extract::State(service): State,
    Path(name): Path<String>,
) -> Result<axum::Json<RuleStatsView>> {
    let stats = service.engine.stats(&name).ok_or_else(|| ErrorKind::UnknownRule(name.clone()))?;
    Ok(axum::Json(RuleStatsView {
        rule: name,
        allowed: stats.allowed,
        limited: stats.limited,
        backend_failures: stats.backend_failures,
    }))
}

/// The OpenAPI document, with links from each creating operation to the operations
/// that take what it created (for stateful clients).
#[must_use]
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    use girder_http::openapi::{Link, link};
    let mut doc = <RateLimiterApi as OpenApi>::openapi();
    for to_operation in ["get_rule", "rule_stats", "delete_rule"] {
        let from = Link {
            from_path: "/api/ratelimiter/rules/{name}",
            from_method: "put",
            status: "201",
            to_operation,
            parameter: "name",
            value: "$request.path.name",
        };
        link(&mut doc, from);
    }
    for to_operation in ["get_rule", "rule_stats", "delete_rule"] {
        let from = Link {
            from_path: "/api/ratelimiter/rules/{name}",
            from_method: "put",
            status: "200",
            to_operation,
            parameter: "name",
            value: "$request.path.name",
        };
        link(&mut doc, from);
    }
    doc
}
