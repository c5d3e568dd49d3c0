//! Rate limiting over HTTP ("Pattern: Token Bucket for Rate Limiting"): a TOML rules
//! engine and a tower middleware every system's API wears. The Distributed Rate
//! Limiter system (`girder-ratelimiter`) serves the same engine as a decision service.
//!
//! - [`rules`]: [`RuleSet`] (named rules, overrides, the API-key → tier map) and the
//!   [`RequestAttrs`] a rule sees.
//! - [`engine`]: [`Engine`], the live rules compiled to one limiter per rule and
//!   override ([`Backend::Memory`] or [`Backend::Redis`]), swapped atomically on reload.
//! - [`layer`]: [`RateLimitLayer`], 429 + `Retry-After` + `RateLimit` fields.
//! - [`headers`]: the `RateLimit` and `RateLimit-Policy` fields.
//! - `builtin.toml`: the limits `girder serve` applies when no rules file is given
//!   ([`BUILTIN_RULES`]).
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
//! `girder_ratelimit_decisions_total{rule, outcome}`.

pub mod engine;
pub mod headers;
pub mod layer;
pub mod rules;

pub use engine::{Backend, BackendConfig, CheckError, Checked, Engine, RuleStats};
pub use layer::{FailurePolicy, RateLimit, RateLimitLayer};
pub use rules::{
    Algorithm, AttributeConfig, KeyPart, Matcher, Override, RequestAttrs, RuleSet, RuleSpec,
    RulesBackendError, RulesError, Selector,
};

/// The rate limits `girder serve` puts on every system's API when no rules file is
/// named: a generous per-IP ceiling on `/api`.
pub const BUILTIN_RULES: &str = include_str!("builtin.toml");
