//! Rate limiting over HTTP ("Pattern: Token Bucket for Rate Limiting", and the
//! "Distributed Rate Limiter" system): a TOML rules engine, a tower middleware any
//! axum `Router` can wear, and a decision service other programs call.
//!
//! - [`rules`]: [`RuleSet`] (named rules, overrides, the API-key → tier map) and the
//!   [`RequestAttrs`] a rule sees.
//! - [`engine`]: [`Engine`], the live rules compiled to one limiter per rule and
//!   override ([`Backend::Memory`] or [`Backend::Redis`]), swapped atomically on reload.
//! - [`layer`]: [`RateLimitLayer`], 429 + `Retry-After` + `RateLimit` fields.
//! - [`api`]: the service, `POST /check` and rule administration, mounted at
//!   `/api/ratelimiter`.
//! - [`shared`]: with Redis, the service's rule edits reach every instance.
//!
//! # The rules file
//!
//! ```toml
//! [attributes]
//! trust_forwarded_for = false   # see AttributeConfig: spoofable unless behind your proxy
//! trust_tier_header = false     # x-tier is client-controlled unless a gateway sets it
//!
//! [tiers]                       # API key → tier (wins over x-tier)
//! "key-gold-1" = "premium"
//!
//! [[rule]]
//! name = "per-user"             # 1–64 of A-Z a-z 0-9 _ - .
//! algorithm = "token_bucket"    # token_bucket | gcra | fixed_window | sliding_log | sliding_window
//! limit = 100                   # per period
//! period_ms = 60000
//! burst = 120                   # optional; bucket algorithms only (default = limit)
//! key = "user"                  # user | api_key | ip | route, or a list; absent = one global bucket
//! route_prefix = "/api"         # optional, segment-aware prefix of the request path
//! methods = ["POST", "PUT"]     # optional, default every method
//!
//! [[override]]
//! rule = "per-user"
//! tier = "premium"              # exactly one of `tier` and `key`
//! limit = 1000                  # any of limit / period_ms / burst; the rest inherited
//!
//! [[override]]
//! rule = "per-user"
//! key = "user=batch-job"        # the rule's key as the middleware builds it
//! limit = 5
//! ```
//!
//! Bounds: at most [`rules::MAX_RULES`] (256) rules, [`rules::MAX_OVERRIDES`] (1,024)
//! overrides and [`rules::MAX_TIER_KEYS`] tier entries; the file at most 4 MiB.
//!
//! # Precedence
//!
//! 1. **Every matching rule applies.** A request must pass all the rules whose matcher
//!    (route prefix, methods) matches it *and* whose key attributes it carries (a rule
//!    keyed on `user` does not apply to a request without `x-user-id`; cover anonymous
//!    traffic with an `ip` rule). The strictest wins: the first denial refuses the
//!    request. Rules are checked in file order and checking stops at a denial, so
//!    later rules are not charged; earlier ones are (the rules are not one
//!    transaction).
//! 2. **Within one rule, the most specific override wins:** an override for the
//!    request's exact key, else one for its tier, else the rule's own numbers. Each
//!    override has its own budget (a key that changes tier starts fresh).
//! 3. **The tier** is the `[tiers]` entry of the request's API key, else `x-tier` when
//!    `trust_tier_header` is set, else none.
//!
//! # Response fields
//!
//! Every response of a request some rule applied to carries, for the most restrictive
//! rule (a denial; else the fewest remaining), the fields of
//! draft-ietf-httpapi-ratelimit-headers-09: `RateLimit-Policy: "per-user";q=100;w=60`
//! (`q` = the applied `limit`, `w` = `period_ms` in seconds, rounded up) and
//! `RateLimit: "per-user";r=42;t=17` (`r` = remaining, `t` = seconds until the budget is
//! full again, or until the retry when denied). A 429 adds `Retry-After` (seconds,
//! rounded up) and an RFC 9457 body of type `/problems/rate-limited`.
//!
//! # Backend failure
//!
//! [`FailurePolicy::Open`] lets the request through unlimited, [`FailurePolicy::Closed`]
//! answers 503; both log a warning and count
//! `girder_ratelimit_backend_failures_total{policy}`. Decisions are counted in
//! `girder_ratelimit_decisions_total{rule, outcome}` (the service's in
//! `girder_ratelimiter_checks_total{rule, outcome}`).

pub mod api;
pub mod engine;
pub mod headers;
pub mod layer;
pub mod rules;
pub mod shared;

use std::path::PathBuf;
use std::sync::Arc;

use girder_core::Clock;
use parking_lot::Mutex;

use shared::{Overlay, SharedRules};

use crate::cursor::CursorCodec;

pub use api::{
    CheckRequest, CheckResponse, ErrorKind, RateLimiterApi, RuleBody, RulePage, RuleStatsView,
    RuleView,
};
pub use engine::{Backend, BackendConfig, Checked, Engine, RuleStats};
pub use layer::{FailurePolicy, RateLimit, RateLimitLayer};
pub use rules::{
    Algorithm, AttributeConfig, KeyPart, Matcher, Override, RequestAttrs, RuleSet, RuleSpec,
    RulesError, Selector,
};

/// The Prometheus counter of the service's decisions (`rule`, `outcome`).
pub const SERVICE_METRIC: &str = "girder_ratelimiter_checks_total";

/// Everything the Distributed Rate Limiter service needs to start.
#[derive(Debug, Clone)]
pub struct RateLimiterConfig {
    /// A rules file to start from (the `[[rule]]`s; `key`, `route_prefix`,
    /// `methods` and tier overrides mean nothing to the service). `None`: start empty.
    pub rules_path: Option<PathBuf>,
    /// Redis, to share decisions between instances. `None`: in process.
    pub redis_url: Option<String>,
    /// The prefix of the service's Redis keys. Default `girder:rl:svc:`.
    pub key_prefix: String,
}

impl Default for RateLimiterConfig {
    fn default() -> Self {
        Self { rules_path: None, redis_url: None, key_prefix: "girder:rl:svc:".to_owned() }
    }
}

/// A running Distributed Rate Limiter: its rules and limiters. With Redis, rule edits
/// made through the API reach every instance sharing the key prefix (see [`shared`]).
#[derive(Debug)]
pub struct RateLimiterService {
    engine: Arc<Engine>,
    cursors: CursorCodec,
    config: RateLimiterConfig,
    /// The rules file's rules (empty without a file).
    base: Mutex<RuleSet>,
    /// Shared edits, with Redis.
    shared: Option<SharedRules>,
    /// The shared edits last applied and the version they were read at.
    overlay: Mutex<(i64, Overlay)>,
    /// Serialises rule writes and syncs, so a sync never undoes a write in flight.
    edits: tokio::sync::Mutex<()>,
}

impl RateLimiterService {
    /// Loads the rules file (if any), connects to Redis (if any) and applies the
    /// rule edits shared there.
    ///
    /// # Errors
    /// The rules file is unreadable or invalid, or Redis is unreachable.
    pub async fn open(
        config: RateLimiterConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, RulesError> {
        let rules = match &config.rules_path {
            Some(path) => RuleSet::from_file(path)?,
            None => RuleSet::empty(),
        };
        let backend =
            BackendConfig::from_url(config.redis_url.as_deref(), &config.key_prefix, clock).await?;
        let shared = backend.redis_connection().map(|c| SharedRules::new(c, &config.key_prefix));
        let engine = Arc::new(Engine::new(rules.clone(), backend, SERVICE_METRIC)?);
        let service = Self::assemble(engine, config, rules, shared);
        service.sync_rules().await?;
        Ok(service)
    }

    /// A service over an existing engine, its rules not shared (tests, drills with
    /// [`Backend::Failing`]).
    #[must_use]
    pub fn with_engine(engine: Arc<Engine>, config: RateLimiterConfig) -> Arc<Self> {
        let base = RuleSet::clone(&engine.rules());
        Self::assemble(engine, config, base, None)
    }

    fn assemble(
        engine: Arc<Engine>,
        config: RateLimiterConfig,
        base: RuleSet,
        shared: Option<SharedRules>,
    ) -> Arc<Self> {
        // List cursors are signed with a per-process key: a cursor from another
        // instance is refused, and the client starts its listing again.
        let cursors = CursorCodec::new(std::array::from_fn(|_| rand::random()));
        Arc::new(Self {
            engine,
            cursors,
            config,
            base: Mutex::new(base),
            shared,
            overlay: Mutex::new((0, Overlay::new())),
            edits: tokio::sync::Mutex::new(()),
        })
    }

    /// The engine (its rules, counts and reload).
    #[must_use]
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Whether rule edits are shared through Redis.
    #[must_use]
    pub fn shares_rules(&self) -> bool {
        self.shared.is_some()
    }

    /// Re-reads the configured rules file and lays the shared edits over it (without
    /// Redis, edits made through the API are replaced by the file's rules). Without a
    /// file, does nothing.
    ///
    /// # Errors
    /// The file is unreadable or invalid; the old rules stay in force.
    pub fn reload(&self) -> Result<(), RulesError> {
        let Some(path) = &self.config.rules_path else { return Ok(()) };
        let rules = RuleSet::from_file(path)?;
        let composed = shared::compose(&rules, &self.overlay.lock().1);
        self.engine.replace(composed)?;
        *self.base.lock() = rules;
        Ok(())
    }

    /// Creates or replaces a rule, on every instance when rules are shared. Returns
    /// whether it was created (on this instance).
    ///
    /// # Errors
    /// The rule would make the set invalid, or Redis refused the edit (nothing
    /// changed anywhere).
    pub async fn put_rule(&self, spec: RuleSpec) -> Result<bool, RulesError> {
        let _edits = self.edits.lock().await;
        // Validate before anything is shared.
        self.engine.rules().with_rule(spec.clone())?;
        if let Some(shared) = &self.shared {
            shared.put(&RuleView::from(&spec)).await?;
        }
        self.engine.upsert(spec)
    }

    /// Deletes a rule, on every instance when rules are shared. Returns whether this
    /// instance had it.
    ///
    /// # Errors
    /// Redis refused the edit (nothing changed anywhere).
    pub async fn delete_rule(&self, name: &str) -> Result<bool, RulesError> {
        let _edits = self.edits.lock().await;
        if self.engine.rules().get(name).is_none() {
            return Ok(false);
        }
        if let Some(shared) = &self.shared {
            shared.delete(name).await?;
        }
        self.engine.remove(name)
    }

    /// Applies the shared edits if they changed since the last call. Returns whether
    /// the rules were rebuilt. Without Redis, does nothing.
    ///
    /// # Errors
    /// Redis is unreachable; the rules in force stay.
    pub async fn sync_rules(&self) -> Result<bool, RulesError> {
        let Some(shared) = &self.shared else { return Ok(false) };
        let _edits = self.edits.lock().await;
        let version = shared.version().await?;
        if version == self.overlay.lock().0 {
            return Ok(false);
        }
        // Edits landing between the two reads bump the version again, so the next
        // call reads them; never fewer than `version` are applied here.
        let overlay = shared.overlay().await?;
        let composed = shared::compose(&self.base.lock(), &overlay);
        self.engine.replace(composed)?;
        *self.overlay.lock() = (version, overlay);
        Ok(true)
    }

    /// Polls for shared rule edits every [`shared::POLL_INTERVAL`] until `shutdown`.
    pub async fn run_background(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        if self.shared.is_none() {
            return;
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(shared::POLL_INTERVAL) => {}
            }
            if let Err(error) = self.sync_rules().await {
                tracing::warn!(%error, "syncing shared rate-limit rules failed; retrying");
            }
        }
    }
}
