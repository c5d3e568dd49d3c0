//! The Distributed Rate Limiter system: the rate-limit engine of `girder-http`
//! ("Pattern: Token Bucket for Rate Limiting") served as a decision service other
//! programs call — `POST /check`, rule administration and per-rule stats, mounted at
//! `/api/ratelimiter`. The rules file format, its precedence and the response fields
//! are documented in [`girder_http::ratelimit`].
//!
//! - [`api`]: the HTTP surface.
//! - [`shared`]: with Redis, rule edits reach every instance.

pub mod api;
mod settings;
pub mod shared;

use std::path::PathBuf;
use std::sync::Arc;

use girder_core::Clock;
use parking_lot::Mutex;

use shared::{Overlay, SharedRules};

use girder_http::cursor::CursorCodec;
use girder_http::ratelimit::{BackendConfig, Engine, RuleSet, RuleSpec, RulesError};
use girder_system::{BoxError, Context, OpenError, Shutdown, System, SystemInfo};

pub use api::{
    CheckRequest, CheckResponse, ErrorKind, RateLimiterApi, RuleBody, RulePage, RuleStatsView,
    RuleView,
};

pub use settings::RateLimiterSettings;

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
                let error: &dyn std::error::Error = &error;
                tracing::warn!(error, "syncing shared rate-limit rules failed; retrying");
            }
        }
    }
}

impl System for RateLimiterService {
    type Settings = RateLimiterSettings;

    const INFO: SystemInfo = SystemInfo {
        slug: "ratelimiter",
        name: "Distributed Rate Limiter",
        summary: "five algorithms as a service, one Redis script per decision, shared by every instance",
        patterns: &["Token Bucket for Rate Limiting", "Pagination & Cursor-based Fetching"],
    };

    const DASHBOARD: &'static str = include_str!("../assets/ratelimiter.html");

    async fn open(
        context: &Context,
        settings: RateLimiterSettings,
    ) -> Result<Arc<Self>, OpenError> {
        let config = settings.resolve(context.redis_url.clone())?;
        // In-process decisions read the coarse clock: one atomic load per check.
        Self::open(config, Arc::clone(&context.coarse_clock)).await.map_err(OpenError::storage)
    }

    fn router(self: &Arc<Self>) -> girder_system::Router {
        self.api_router()
    }

    fn openapi() -> utoipa::openapi::OpenApi {
        api::document()
    }

    async fn run(self: Arc<Self>, shutdown: Shutdown) {
        self.run_background(shutdown.wait()).await;
    }

    fn reload(&self) -> Result<(), BoxError> {
        Ok(RateLimiterService::reload(self)?)
    }
}
