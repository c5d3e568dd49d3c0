//! The Redis backend: one Lua script per algorithm, each a line-by-line port of the
//! Rust decision function, so every decision is one atomic round trip (`EVALSHA`; the
//! `redis` crate reloads a flushed script transparently on `NOSCRIPT`).
//!
//! Time is the Redis server's (`TIME` inside the script), so the clocks of the server
//! instances sharing a limit do not matter — and tests cannot move it with a manual
//! clock. The scripts accept a time override as their first argument for the
//! crate's own tests only (no public API passes it); tests with real time use short
//! windows and bounded polling. Keys are `{key_prefix}{key}` with a `PEXPIRE` at the
//! moment their state becomes equivalent to fresh, so idle keys vanish by themselves.

mod batched;

use std::sync::LazyLock;

use ::redis::aio::ConnectionManager;
use ::redis::{ErrorKind, FromRedisValue, RedisError, Script, ScriptInvocation};

use crate::{Decision, Kind, LimitError, RateLimiter, Rule, RuleError, check_input};

pub use batched::{BatchedConfig, BatchedLimiter};

/// How many times a decision is tried when the script keeps being flushed.
const NOSCRIPT_ATTEMPTS: u32 = 4;

const PRELUDE: &str = include_str!("prelude.lua");

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
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
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("rule", &self.rule)
            .field("config", &self.config)
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
        Ok(Self { conn, rule: *rule, script, config })
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
        // With a time override, keys would still expire by the server's real clock:
        // keep them an hour longer so a test's virtual time cannot outrun them.
        let (now_arg, grace_ms) = match now_override_ms {
            Some(now) => (now.to_string(), 3_600_000),
            None => (String::new(), 0),
        };
        let mut invocation = self.script.key(self.redis_key(key));
        invocation
            .arg(now_arg)
            .arg(cost)
            .arg(self.rule.limit)
            .arg(self.rule.period_ms)
            .arg(self.rule.burst)
            .arg(grace_ms);
        let out: Vec<i64> = invoke(&invocation, &self.conn).await?;
        let n = |i: usize| {
            out.get(i)
                .and_then(|&v| u64::try_from(v).ok())
                .ok_or_else(|| LimitError::Backend(format!("unexpected script reply {out:?}")))
        };
        let decision = Decision {
            allowed: n(0)? == 1,
            remaining: n(1)?,
            retry_after_ms: n(2)?,
            reset_after_ms: n(3)?,
            limit: n(4)?,
        };
        Ok((decision, n(5)?))
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
            Err(e) => return Err(map_error(&e)),
        }
    }
}

/// Connection trouble is [`LimitError::Unavailable`]; anything else the server said is
/// [`LimitError::Backend`].
pub(crate) fn map_error(e: &RedisError) -> LimitError {
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout() {
        LimitError::Unavailable(e.to_string())
    } else {
        LimitError::Backend(e.to_string())
    }
}

#[cfg(test)]
mod tests;
