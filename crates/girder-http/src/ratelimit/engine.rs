//! The live rules: a [`RuleSet`] compiled to one limiter per rule and override, behind
//! a lock that is held only to clone an `Arc`, so a reload swaps everything at once
//! and in-flight requests finish on the set they started with.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use girder_core::Clock;
use girder_ratelimit::{
    Coalescing, Decision, LimitError, MemoryConfig, MemoryLimiter, RateLimiter, RedisConfig,
    RedisLimiter, Rule, RuleError, UnavailableError,
};
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::rules::{RequestAttrs, RuleSet, RuleSpec, RulesBackendError, RulesError, Selector};

/// One limiter: in process, on Redis, or (drills and tests) always failing.
#[derive(Debug)]
pub enum Backend {
    /// In process memory: decisions are this instance's alone.
    Memory(MemoryLimiter),
    /// Redis: decisions are shared by every instance using the same server and prefix.
    Redis(RedisLimiter),
    /// Fails every check with this error: for fail-open/closed drills and tests.
    Failing(LimitError),
}

impl Backend {
    /// Checks `cost` against `key`.
    ///
    /// # Errors
    /// As [`RateLimiter::check`].
    pub async fn check(&self, key: &str, cost: u64) -> Result<Decision, LimitError> {
        match self {
            Self::Memory(l) => l.check_now(key, cost),
            // The connection manager waits for a reconnect in progress: bound it, so a
            // dead Redis costs each request at most REDIS_TIMEOUT.
            Self::Redis(l) => {
                tokio::time::timeout(REDIS_TIMEOUT, l.check(key, cost)).await.unwrap_or_else(|_| {
                    Err(UnavailableError::TimedOut { after: REDIS_TIMEOUT }.into())
                })
            }
            Self::Failing(e) => Err(e.clone()),
        }
    }
}

/// Where limiters keep their state; every rule and override gets its own limiter.
#[derive(Clone)]
pub enum BackendConfig {
    /// In process, bounded per limiter by `memory`.
    Memory {
        /// Bounds of each limiter.
        memory: MemoryConfig,
        /// The time source.
        clock: Arc<dyn Clock>,
    },
    /// On Redis: limiter keys are `{key_prefix}{rule}:{d | t:TIER | k}:{key}`.
    Redis {
        /// A connection (cheap to clone; shared by all limiters).
        conn: Box<ConnectionManager>,
        /// The prefix of every Redis key.
        key_prefix: String,
    },
    /// Every limiter fails with this error (drills and tests).
    Failing(LimitError),
}

impl std::fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory { memory, .. } => {
                f.debug_struct("Memory").field("memory", memory).finish()
            }
            Self::Redis { key_prefix, .. } => {
                f.debug_struct("Redis").field("key_prefix", key_prefix).finish()
            }
            Self::Failing(e) => f.debug_tuple("Failing").field(e).finish(),
        }
    }
}

/// The per-limiter bound of the in-process backend: 10,000 keys in 8 shards.
pub const DEFAULT_MEMORY: MemoryConfig = MemoryConfig { max_keys: 10_000, shards: 8 };

/// How long each Redis check (including waiting for a reconnect) may take before it
/// fails as unavailable and the failure policy decides; connecting at start-up may
/// take 4 times this.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

impl BackendConfig {
    /// In process with [`DEFAULT_MEMORY`].
    #[must_use]
    pub fn memory(clock: Arc<dyn Clock>) -> Self {
        Self::Memory { memory: DEFAULT_MEMORY, clock }
    }

    /// Connects to Redis at `url` (connect and command timeouts [`REDIS_TIMEOUT`]).
    ///
    /// # Errors
    /// [`RulesError::Backend`] when the URL is invalid or the server unreachable.
    pub async fn redis(url: &str, key_prefix: impl Into<String>) -> Result<Self, RulesError> {
        let fail = |e: redis::RedisError| RulesError::from(RulesBackendError::from(e));
        let client = redis::Client::open(url).map_err(fail)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(100);
        let connect = ConnectionManager::new_with_config(client, config);
        let after = REDIS_TIMEOUT * 4;
        let conn = tokio::time::timeout(after, connect)
            .await
            .map_err(|_| RulesError::from(RulesBackendError::TimedOut { after }))?
            .map_err(fail)?;
        Ok(Self::Redis { conn: Box::new(conn), key_prefix: key_prefix.into() })
    }

    /// The Redis connection, if the limiters live in Redis.
    #[must_use]
    pub fn redis_connection(&self) -> Option<ConnectionManager> {
        match self {
            Self::Redis { conn, .. } => Some((**conn).clone()),
            Self::Memory { .. } | Self::Failing(_) => None,
        }
    }

    /// Redis at `redis_url` if given, else in process.
    ///
    /// # Errors
    /// As [`BackendConfig::redis`].
    pub async fn from_url(
        redis_url: Option<&str>,
        key_prefix: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RulesError> {
        match redis_url {
            Some(url) => Self::redis(url, key_prefix).await,
            None => Ok(Self::memory(clock)),
        }
    }

    fn build(&self, rule: &str, scope: &str, limit: &Rule) -> Result<Backend, RuleError> {
        Ok(match self {
            Self::Memory { memory, clock } => {
                Backend::Memory(MemoryLimiter::from_rule(limit, memory.clone(), Arc::clone(clock))?)
            }
            Self::Redis { conn, key_prefix } => {
                let config = RedisConfig { key_prefix: format!("{key_prefix}{rule}:{scope}:") };
                // Concurrent checks of one rule and scope share script calls: under load
                // the Redis server does a fraction of the per-call work.
                let limiter = RedisLimiter::new((**conn).clone(), limit, config)?;
                Backend::Redis(limiter.coalescing(Coalescing::default()))
            }
            Self::Failing(e) => {
                limit.validate()?;
                Backend::Failing(e.clone())
            }
        })
    }
}

/// Decision counts of one rule on this instance, since the rule was created (a
/// replaced rule keeps its counts; a deleted one loses them).
#[derive(Debug, Default)]
struct Counters {
    allowed: AtomicU64,
    limited: AtomicU64,
    failed: AtomicU64,
}

/// A snapshot of one rule's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Checks admitted.
    pub allowed: u64,
    /// Checks denied.
    pub limited: u64,
    /// Checks that failed in the backend.
    pub backend_failures: u64,
}

/// A limiter with the numbers it was built for, so a reload can keep it (and its
/// state) when they did not change.
type Built = (Rule, Arc<Backend>);

#[derive(Debug)]
struct Compiled {
    name: Arc<str>,
    default: Built,
    tiers: HashMap<String, Built>,
    keys: HashMap<String, Built>,
    counters: Arc<Counters>,
}

#[derive(Debug)]
struct Active {
    rules: Arc<RuleSet>,
    compiled: Vec<Compiled>,
}

/// The result of checking one rule.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The rule's name.
    pub rule: Arc<str>,
    /// The numbers that applied (the rule's, or an override's).
    pub policy: Rule,
    /// The decision, or why there is none.
    pub result: Result<Decision, LimitError>,
}

impl Checked {
    /// Of two allowed-or-denied results, the one a client should hear about: a denial
    /// over an admission; between denials the longer wait; between admissions the
    /// fewer remaining (then the later reset).
    #[must_use]
    pub fn more_restrictive<'a>(a: &'a Self, b: &'a Self) -> &'a Self {
        match (&a.result, &b.result) {
            (Ok(da), Ok(db)) => {
                let rank = |d: &Decision| {
                    (!d.allowed, d.retry_after_ms, std::cmp::Reverse(d.remaining), d.reset_after_ms)
                };
                if rank(db) > rank(da) { b } else { a }
            }
            (Err(_), Ok(_)) => b,
            _ => a,
        }
    }
}

/// Why the service's check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// No rule has this name.
    #[error("no rule named {0:?}")]
    UnknownRule(String),
    /// The limiter refused the input or failed.
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// A live, reloadable rule set with its limiters.
pub struct Engine {
    /// The compiled rules; readers never block or contend (a reload swaps the pointer).
    active: ArcSwap<Active>,
    /// Serialises writers (reload, admin edits), so two edits cannot lose one.
    writer: Mutex<()>,
    backend: BackendConfig,
    metric: &'static str,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.active.load().rules.rules().len())
            .field("backend", &self.backend)
            .field("metric", &self.metric)
            .finish_non_exhaustive()
    }
}

fn build(
    backend: &BackendConfig,
    previous: Option<&HashMap<String, Built>>,
    rule: &str,
    scope: &str,
    id: &str,
    limit: &Rule,
) -> Result<Built, RulesError> {
    if let Some((old, limiter)) = previous.and_then(|p| p.get(id))
        && old == limit
    {
        return Ok((*limit, Arc::clone(limiter)));
    }
    let limiter = backend
        .build(rule, scope, limit)
        .map_err(|source| RulesError::Numbers { rule: rule.to_owned(), source })?;
    Ok((*limit, Arc::new(limiter)))
}

fn compile(
    rules: RuleSet,
    backend: &BackendConfig,
    previous: Option<&Active>,
) -> Result<Active, RulesError> {
    let old: HashMap<&str, &Compiled> =
        previous.map(|p| p.compiled.iter().map(|c| (&*c.name, c)).collect()).unwrap_or_default();
    let mut compiled = Vec::with_capacity(rules.rules().len());
    for spec in rules.rules() {
        let prev = old.get(spec.name.as_str()).copied();
        let name = spec.name.as_str();
        let prev_default = prev.map(|p| HashMap::from([(String::new(), p.default.clone())]));
        let default = build(backend, prev_default.as_ref(), name, "d", "", &spec.limit)?;
        let mut tiers = HashMap::new();
        let mut keys = HashMap::new();
        for o in &spec.overrides {
            match &o.selector {
                Selector::Tier(t) => {
                    let scope = format!("t:{t}");
                    let built = build(backend, prev.map(|p| &p.tiers), name, &scope, t, &o.limit)?;
                    tiers.insert(t.clone(), built);
                }
                Selector::Key(k) => {
                    let built = build(backend, prev.map(|p| &p.keys), name, "k", k, &o.limit)?;
                    keys.insert(k.clone(), built);
                }
            }
        }
        let counters = prev.map_or_else(Arc::default, |p| Arc::clone(&p.counters));
        compiled.push(Compiled { name: Arc::from(name), default, tiers, keys, counters });
    }
    Ok(Active { rules: Arc::new(rules), compiled })
}

impl Compiled {
    /// The limiter for `key` with `tier`: explicit key, else tier, else the default.
    fn select(&self, key: &str, tier: Option<&str>) -> &Built {
        self.keys.get(key).or_else(|| tier.and_then(|t| self.tiers.get(t))).unwrap_or(&self.default)
    }

    fn count(&self, metric: &'static str, result: &Result<Decision, LimitError>) {
        let outcome = match result {
            Ok(d) if d.allowed => {
                self.counters.allowed.fetch_add(1, Ordering::Relaxed);
                "allowed"
            }
            Ok(_) => {
                self.counters.limited.fetch_add(1, Ordering::Relaxed);
                "limited"
            }
            Err(LimitError::Unavailable(_) | LimitError::Backend(_)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => return,
        };
        metrics::counter!(metric, "rule" => self.name.to_string(), "outcome" => outcome)
            .increment(1);
    }
}

impl Engine {
    /// An engine applying `rules` on `backend`, counting decisions in the Prometheus
    /// counter `metric` (labels `rule`, `outcome`).
    ///
    /// # Errors
    /// A limiter could not be built (never for a validated set).
    pub fn new(
        rules: RuleSet,
        backend: BackendConfig,
        metric: &'static str,
    ) -> Result<Self, RulesError> {
        let active = compile(rules, &backend, None)?;
        Ok(Self { active: ArcSwap::from_pointee(active), writer: Mutex::new(()), backend, metric })
    }

    /// The rules in force.
    #[must_use]
    pub fn rules(&self) -> Arc<RuleSet> {
        Arc::clone(&self.active.load().rules)
    }

    /// Whether any rule in force matches a request with this method and path; reads
    /// the rules without a lock or a reference count (the server asks this of every
    /// request it might answer without routing).
    #[must_use]
    pub fn matches_any(&self, method: &axum::http::Method, path: &str) -> bool {
        self.active.load().rules.matches_any(method, path)
    }

    fn snapshot(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// Swaps in `rules`. Limiters whose rule and numbers are unchanged keep their
    /// state; every other limiter starts fresh.
    ///
    /// # Errors
    /// A limiter could not be built; the old rules stay in force.
    pub fn replace(&self, rules: RuleSet) -> Result<(), RulesError> {
        let _writer = self.writer.lock();
        self.swap_locked(rules)
    }

    fn swap_locked(&self, rules: RuleSet) -> Result<(), RulesError> {
        let current = self.snapshot();
        let next = compile(rules, &self.backend, Some(&current))?;
        self.active.store(Arc::new(next));
        Ok(())
    }

    /// Reads, validates and swaps in the rules file at `path`, all or nothing: on
    /// any error the old rules stay in force and the error says why.
    ///
    /// # Errors
    /// The file is unreadable or invalid.
    pub fn reload_from_file(&self, path: impl AsRef<Path>) -> Result<(), RulesError> {
        let rules = RuleSet::from_file(path)?;
        self.replace(rules)
    }

    /// Adds or replaces one rule. Returns whether it was added.
    ///
    /// # Errors
    /// The new set would be invalid.
    pub fn upsert(&self, rule: RuleSpec) -> Result<bool, RulesError> {
        let _writer = self.writer.lock();
        let (next, created) = self.rules().with_rule(rule)?;
        self.swap_locked(next)?;
        Ok(created)
    }

    /// Removes the rule `name`. Returns whether it existed.
    ///
    /// # Errors
    /// A limiter could not be rebuilt (never for a validated set).
    pub fn remove(&self, name: &str) -> Result<bool, RulesError> {
        let _writer = self.writer.lock();
        match self.rules().without_rule(name) {
            Some(next) => self.swap_locked(next).map(|()| true),
            None => Ok(false),
        }
    }

    /// This instance's counts for rule `name`.
    #[must_use]
    pub fn stats(&self, name: &str) -> Option<RuleStats> {
        let active = self.snapshot();
        let c = active.compiled.iter().find(|c| &*c.name == name)?;
        Some(RuleStats {
            allowed: c.counters.allowed.load(Ordering::Relaxed),
            limited: c.counters.limited.load(Ordering::Relaxed),
            backend_failures: c.counters.failed.load(Ordering::Relaxed),
        })
    }

    /// Checks a request against every rule that applies to it, in set order, each
    /// with cost 1, stopping at the first denial (so later rules are not charged for a
    /// request that will be refused anyway). Rules already checked keep the charge:
    /// the rules are not one transaction. Backend failures are returned, not skipped;
    /// the caller applies its failure policy.
    pub async fn check_request(&self, attrs: &RequestAttrs) -> Vec<Checked> {
        let active = self.snapshot();
        let mut out = Vec::new();
        for (i, spec, key) in active.rules.applicable(attrs) {
            let compiled = &active.compiled[i];
            let (policy, limiter) = compiled.select(&key, attrs.tier.as_deref());
            let result = limiter.check(&key, 1).await;
            compiled.count(self.metric, &result);
            debug_assert_eq!(&*compiled.name, spec.name);
            let denied = matches!(result, Ok(d) if !d.allowed);
            out.push(Checked { rule: Arc::clone(&compiled.name), policy: *policy, result });
            if denied {
                break;
            }
        }
        out
    }

    /// Checks `cost` against `key` under rule `name` (explicit-key overrides apply;
    /// the service has no tiers).
    ///
    /// # Errors
    /// [`CheckError::UnknownRule`], or the limiter's error.
    pub async fn check_key(&self, name: &str, key: &str, cost: u64) -> Result<Checked, CheckError> {
        let active = self.snapshot();
        let compiled = active
            .compiled
            .iter()
            .find(|c| &*c.name == name)
            .ok_or_else(|| CheckError::UnknownRule(name.to_owned()))?;
        let (policy, limiter) = compiled.select(key, None);
        let result = limiter.check(key, cost).await;
        compiled.count(self.metric, &result);
        let checked = Checked { rule: Arc::clone(&compiled.name), policy: *policy, result };
        checked.result.clone()?;
        Ok(checked)
    }
}
