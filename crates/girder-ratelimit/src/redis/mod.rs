//! The Redis backend: one Lua script per algorithm, each a line-by-line port of the
//! Rust decision function, so every decision is one atomic round trip (`EVALSHA`; the
//! `redis` crate reloads a flushed script transparently on `NOSCRIPT`). A script
//! decides any number of keys in order in one call, which [`RedisLimiter::coalescing`]
//! uses to let concurrent checks share calls.
//!
//! Time is the Redis server's (`TIME` inside the script), so the clocks of the server
//! instances sharing a limit do not matter — and tests cannot move it with a manual
//! clock. The scripts accept a time override as their first argument for the
//! crate's own tests only (no public API passes it); tests with real time use short
//! windows and bounded polling. Keys are `{key_prefix}{key}` with a `PEXPIRE` at the
//! moment their state becomes equivalent to fresh, so idle keys vanish by themselves.

mod batched;
mod coalesce;

use std::sync::{Arc, LazyLock};

use ::redis::aio::ConnectionManager;
use ::redis::{ErrorKind, FromRedisValue, RedisError, Script, ScriptInvocation};

use crate::{BackendError, Decision, Kind, LimitError, RateLimiter, Rule, RuleError, check_input};

pub use batched::{BatchedConfig, BatchedLimiter};
pub use coalesce::{Coalescing, CoalescingStats};

use coalesce::{Coalescer, Target};

/// How many times a decision is tried when the script keeps being flushed.
const NOSCRIPT_ATTEMPTS: u32 = 4;

const PRELUDE: &str = include_str!("prelude.lua");
const EPILOGUE: &str = include_str!("epilogue.lua");

/// An algorithm's script: the shared argument parsing and helpers, its `decide`
/// function, and the loop calling `decide` once per key.
fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}\n{EPILOGUE}"))
}

static TOKEN_BUCKET: LazyLock<Script> = LazyLock::new(|| script(include_str!("token_bucket.lua")));
static GCRA: LazyLock<Script> = LazyLock::new(|| script(include_str!("gcra.lua")));
static FIXED_WINDOW: LazyLock<Script> = LazyLock::new(|| script(include_str!("fixed_window.lua")));
static SLIDING_LOG: LazyLock<Script> = LazyLock::new(|| script(include_str!("sliding_log.lua")));
static SLIDING_WINDOW: LazyLock<Script> =
    LazyLock::new(|| script(include_str!("sliding_window.lua")));

/// Where a [`RedisLimiter`] keeps its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Prefix of every Redis key: the state of `k` is at `{key_prefix}{k}`. Give each
    /// rule its own prefix. Default `girder:rl:`.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { key_prefix: "girder:rl:".to_owned() }
    }
}

/// A [`RateLimiter`] whose state lives in Redis, shared by every instance using the
/// same server and prefix.
///
/// Each key is one Redis key (a list for the sliding log, a short string otherwise),
/// so the limiter works on Redis Cluster too. Decisions equal those of
/// [`crate::MemoryLimiter`] with the same rule for the same times (tested).
#[derive(Clone)]
pub struct RedisLimiter {
    conn: ConnectionManager,
    rule: Rule,
    script: &'static Script,
    config: RedisConfig,
    coalescer: Option<Arc<Coalescer>>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("rule", &self.rule)
            .field("config", &self.config)
            .field("coalescing", &self.coalescer.as_ref().map(|c| c.settings()))
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limiter applying `rule` on `conn`.
    ///
    /// # Errors
    /// The rule's [`RuleError`].
    pub fn new(
        conn: ConnectionManager,
        rule: &Rule,
        config: RedisConfig,
    ) -> Result<Self, RuleError> {
        rule.validate()?;
        let script = match rule.kind {
            Kind::TokenBucket => &*TOKEN_BUCKET,
            Kind::Gcra => &*GCRA,
            Kind::FixedWindow => &*FIXED_WINDOW,
            Kind::SlidingLog => &*SLIDING_LOG,
            Kind::SlidingWindow => &*SLIDING_WINDOW,
        };
        Ok(Self { conn, rule: *rule, script, config, coalescer: None })
    }

    /// Lets concurrent checks share script calls: one `EVALSHA` decides a batch of
    /// waiting checks, in order, at one server time, with at most
    /// `settings.max_in_flight` calls outstanding. Decisions are those the same checks
    /// would get one by one; under load the Redis server does a fraction of the
    /// per-call work. Needs a tokio runtime (without one, checks run alone). On Redis
    /// Cluster, give the prefix a `{tag}` so all keys share a slot. Clones share the
    /// batches.
    #[must_use]
    pub fn coalescing(mut self, settings: Coalescing) -> Self {
        self.coalescer = Some(Arc::new(Coalescer::new(settings)));
        self
    }

    /// Script calls and the checks they decided, if coalescing is on.
    #[must_use]
    pub fn coalescing_stats(&self) -> Option<CoalescingStats> {
        self.coalescer.as_ref().map(|c| c.stats())
    }

    /// The rule applied.
    #[must_use]
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// The Redis key holding the state of `key`.
    #[must_use]
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.config.key_prefix)
    }

    fn max_cost(&self) -> u64 {
        if self.rule.kind.has_burst() { self.rule.burst } else { self.rule.limit }
    }

    /// One decision: the script's answer and the server time it used.
    async fn eval(
        &self,
        key: &str,
        cost: u64,
        now_override_ms: Option<u64>,
    ) -> Result<(Decision, u64), LimitError> {
        check_input(key, cost, self.max_cost())?;
        if now_override_ms.is_none()
            && let Some(coalescer) = &self.coalescer
            && let Some(answer) =
                coalescer.submit(|| self.target(), self.redis_key(key), cost).await
        {
            return answer;
        }
        let mut out = self.target().run(&[(self.redis_key(key), cost)], now_override_ms).await?;
        out.pop().ok_or_else(|| BackendError::UnexpectedReply("no decision".to_owned()).into())
    }

    fn target(&self) -> Target {
        Target { conn: self.conn.clone(), rule: self.rule, script: self.script }
    }

    /// A check at a given time (the crate's tests only).
    #[cfg(test)]
    pub(crate) async fn check_at(
        &self,
        key: &str,
        cost: u64,
        now_ms: u64,
    ) -> Result<Decision, LimitError> {
        Ok(self.eval(key, cost, Some(now_ms)).await?.0)
    }

    /// A check, with the server time it was decided at (the crate's tests only).
    #[cfg(test)]
    pub(crate) async fn check_timed(
        &self,
        key: &str,
        cost: u64,
    ) -> Result<(Decision, u64), LimitError> {
        self.eval(key, cost, None).await
    }
}

impl RateLimiter for RedisLimiter {
    async fn check(&self, key: &str, cost: u64) -> Result<Decision, LimitError> {
        Ok(self.eval(key, cost, None).await?.0)
    }
}

/// Runs a script invocation. `invoke_async` reloads a flushed script once; a second
/// `SCRIPT FLUSH` landing between that reload and its retry surfaces NOSCRIPT again
/// (seen under 200 concurrent callers), so NOSCRIPT is retried, boundedly.
pub(crate) async fn invoke<T: FromRedisValue>(
    invocation: &ScriptInvocation<'_>,
    conn: &ConnectionManager,
) -> Result<T, LimitError> {
    let mut conn = conn.clone();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match invocation.invoke_async(&mut conn).await {
            Ok(out) => return Ok(out),
            Err(e) if e.kind() == ErrorKind::NoScriptError && attempts < NOSCRIPT_ATTEMPTS => {}
            Err(e) => return Err(map_error(e)),
        }
    }
}

/// Connection trouble is [`LimitError::Unavailable`]; anything else the server said is
/// [`LimitError::Backend`], with the Redis error as its source.
pub(crate) fn map_error(e: RedisError) -> LimitError {
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout() {
        LimitError::Unavailable(e.into())
    } else {
        LimitError::Backend(e.into())
    }
}

#[cfg(test)]
mod tests;
