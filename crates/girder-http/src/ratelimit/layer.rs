//! The tower middleware: `router.layer(RateLimitLayer::new(engine, policy))` checks
//! every request against the engine's rules and answers 429 (or 503 when the backend
//! fails closed) before the handler runs.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use girder_core::Clock;
use girder_ratelimit::LimitError;
use tower::{Layer, Service};

use super::engine::{BackendConfig, Checked, Engine};
use super::headers;
use super::rules::{RequestAttrs, RuleSet, RulesError};
use crate::problem::Problem;

/// The Prometheus counter of the middleware's decisions (`rule`, `outcome`).
pub const DECISIONS_METRIC: &str = "girder_ratelimit_decisions_total";
/// The Prometheus counter of backend failures (`policy` = `open` | `closed`).
pub const FAILURES_METRIC: &str = "girder_ratelimit_backend_failures_total";
/// The default Redis key prefix of the middleware's limiters.
pub const KEY_PREFIX: &str = "girder:rl:mw:";

/// What a request gets when the limiter backend fails (Redis down, script error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Let it through unlimited: availability over protection. The default.
    #[default]
    Open,
    /// Refuse it with 503: protection over availability.
    Closed,
}

impl FailurePolicy {
    const fn label(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// A tower [`Layer`] rate-limiting every request of the service it wraps.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    engine: Arc<Engine>,
    failure: FailurePolicy,
}

impl RateLimitLayer {
    /// A layer applying `engine`'s rules with `failure` as the backend-failure policy.
    /// Keep a clone of `engine` to reload its rules.
    #[must_use]
    pub fn new(engine: Arc<Engine>, failure: FailurePolicy) -> Self {
        Self { engine, failure }
    }

    /// A layer from a rules file: limiters on Redis at `redis_url` (shared by every
    /// instance; keys prefixed `girder:rl:mw:`) or in process when `None`.
    ///
    /// # Errors
    /// The file is unreadable or invalid, or Redis is unreachable.
    pub async fn from_file(
        path: impl AsRef<Path>,
        redis_url: Option<&str>,
        failure: FailurePolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RulesError> {
        Self::from_rules(RuleSet::from_file(path)?, redis_url, failure, clock).await
    }

    /// A layer enforcing `rules`, with limiters as in [`RateLimitLayer::from_file`].
    ///
    /// # Errors
    /// A rule's numbers are invalid, or Redis is unreachable.
    pub async fn from_rules(
        rules: RuleSet,
        redis_url: Option<&str>,
        failure: FailurePolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RulesError> {
        let backend = BackendConfig::from_url(redis_url, KEY_PREFIX, clock).await?;
        let engine = Engine::new(rules, backend, DECISIONS_METRIC)?;
        Ok(Self::new(Arc::new(engine), failure))
    }

    /// The engine: call [`Engine::reload_from_file`] on it to reload the rules.
    #[must_use]
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner, engine: Arc::clone(&self.engine), failure: self.failure }
    }
}

/// The middleware service made by [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    engine: Arc<Engine>,
    failure: FailurePolicy,
}

/// What the checks decided for one request.
enum Verdict {
    /// Run the handler; set these fields on its response.
    Pass(Option<Checked>),
    /// Answer now.
    Refuse(Response<Body>),
}

fn decide(checks: &[Checked], failure: FailurePolicy, path: &str) -> Verdict {
    let mut shown: Option<&Checked> = None;
    for c in checks {
        match &c.result {
            Ok(_) => {
                shown = Some(shown.map_or(c, |s| Checked::more_restrictive(s, c)));
            }
            Err(e @ (LimitError::Unavailable(_) | LimitError::Backend(_))) => {
                let error: &dyn std::error::Error = e;
                tracing::warn!(rule = %c.rule, error, policy = failure.label(), "rate-limit backend failed");
                metrics::counter!(FAILURES_METRIC, "policy" => failure.label()).increment(1);
                if failure == FailurePolicy::Closed {
                    let problem =
                        Problem::unavailable("the rate limiter is unavailable; retry later")
                            .instance(path);
                    return Verdict::Refuse(problem.into_response());
                }
            }
            // Cost 1 and keys hashed to ≤ 256 bytes: the limiter cannot refuse the
            // input. Should it ever, the rule is skipped rather than the request failed.
            Err(e) => {
                tracing::error!(rule = %c.rule, error = %e, "rate-limit check refused its input")
            }
        }
    }
    match shown {
        Some(c) if matches!(c.result, Ok(d) if !d.allowed) => {
            let Ok(decision) = c.result.clone() else { unreachable!() };
            let detail = format!(
                "rule {:?} allows {} requests per {} ms; retry in {} s",
                c.rule,
                c.policy.limit,
                c.policy.period_ms,
                headers::ceil_secs(decision.retry_after_ms).max(1)
            );
            let problem =
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests")
                    .detail(detail)
                    .instance(path);
            let mut response = problem.into_response();
            headers::set_fields(response.headers_mut(), &c.rule, &c.policy, &decision);
            headers::set_retry_after(response.headers_mut(), &decision);
            Verdict::Refuse(response)
        }
        other => Verdict::Pass(other.cloned()),
    }
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone is the one that is not ready: keep the ready one for this call
        // (tower's "clone and swap" idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let engine = Arc::clone(&self.engine);
        let failure = self.failure;
        Box::pin(async move {
            let attrs = RequestAttrs::from_request(&request, &engine.rules());
            let checks = engine.check_request(&attrs).await;
            match decide(&checks, failure, &attrs.path) {
                Verdict::Refuse(response) => Ok(response),
                Verdict::Pass(shown) => {
                    let mut response = inner.call(request).await?;
                    if let Some(c) = shown
                        && let Ok(decision) = &c.result
                    {
                        headers::set_fields(response.headers_mut(), &c.rule, &c.policy, decision);
                    }
                    Ok(response)
                }
            }
        })
    }
}
