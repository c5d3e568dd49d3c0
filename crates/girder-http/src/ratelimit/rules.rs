//! The rules engine's data: a validated [`RuleSet`] parsed from TOML, the
//! [`RequestAttrs`] a rule sees, and how one request selects its rules, its key and
//! its numbers (see the precedence rules in the module docs of
//! [`crate::ratelimit`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath};
use axum::http::{HeaderMap, Method, Request};
use girder_ratelimit::{Kind, MAX_KEY_BYTES, Rule, RuleError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most rules a set may hold.
pub const MAX_RULES: usize = 256;
/// The most overrides a set may hold, across all its rules.
pub const MAX_OVERRIDES: usize = 1_024;
/// The most entries of the API-key → tier map.
pub const MAX_TIER_KEYS: usize = 10_000;
/// The longest rule or tier name, in bytes (names are `A-Z a-z 0-9 _ - .`).
pub const NAME_LEN_MAX: usize = 64;
/// The longest rules file read, in bytes.
pub const FILE_BYTES_MAX: u64 = 4 << 20;

/// The header naming the user.
pub const USER_HEADER: &str = "x-user-id";
/// The header carrying the API key.
pub const API_KEY_HEADER: &str = "x-api-key";
/// The header naming the caller's tier (read only when trusted).
pub const TIER_HEADER: &str = "x-tier";
/// The proxy header naming the client address (read only when trusted).
pub const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// The algorithm of a rule, as spelled in TOML and JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Token bucket: `burst` tokens refilled at `limit` per `period_ms`.
    TokenBucket,
    /// GCRA: decides as the token bucket.
    Gcra,
    /// `limit` per aligned window of `period_ms`.
    FixedWindow,
    /// `limit` in every window of `period_ms`, exactly (memory grows with `limit`).
    SlidingLog,
    /// The weighted two-window counter approximation.
    SlidingWindow,
}

impl Algorithm {
    /// The pattern crate's [`Kind`].
    #[must_use]
    pub const fn kind(self) -> Kind {
        match self {
            Self::TokenBucket => Kind::TokenBucket,
            Self::Gcra => Kind::Gcra,
            Self::FixedWindow => Kind::FixedWindow,
            Self::SlidingLog => Kind::SlidingLog,
            Self::SlidingWindow => Kind::SlidingWindow,
        }
    }

    /// The algorithm of a [`Kind`].
    #[must_use]
    pub const fn from_kind(kind: Kind) -> Self {
        match kind {
            Kind::TokenBucket => Self::TokenBucket,
            Kind::Gcra => Self::Gcra,
            Kind::FixedWindow => Self::FixedWindow,
            Kind::SlidingLog => Self::SlidingLog,
            Kind::SlidingWindow => Self::SlidingWindow,
        }
    }
}

/// A request attribute a rule can key on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    /// The `x-user-id` header.
    User,
    /// The `x-api-key` header.
    ApiKey,
    /// The client address (see [`AttributeConfig::trust_forwarded_for`]).
    Ip,
    /// The matched route template (e.g. `/api/items/{id}`), else the raw path.
    Route,
}

impl KeyPart {
    const fn label(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::ApiKey => "api_key",
            Self::Ip => "ip",
            Self::Route => "route",
        }
    }
}

/// How request attributes are read. Part of the rules file (`[attributes]`), so it
/// reloads with the rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeConfig {
    /// Take the client address from the **last** `X-Forwarded-For` entry (the one
    /// appended by the proxy in front of this server) instead of the TCP peer.
    /// Default `false`. Turn it on only when every request arrives through a proxy
    /// you run that appends the address it saw: otherwise any client can send a
    /// made-up `X-Forwarded-For` and get a fresh budget per request (spoofing).
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// Read the tier from the `x-tier` header when the API key is not in `[tiers]`.
    /// Default `false`: the header is client-controlled, so trust it only when a
    /// gateway in front of this server sets it after authenticating the caller (and
    /// strips it from client requests).
    #[serde(default)]
    pub trust_tier_header: bool,
}

/// What a rule applies to. An empty matcher matches every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    /// A path prefix, matched at segment boundaries (`/api` matches `/api` and
    /// `/api/x`, not `/apix`). Matched against the request's full path.
    pub route_prefix: Option<String>,
    /// The methods matched; empty means every method.
    pub methods: Vec<Method>,
}

impl Matcher {
    /// Whether a request with this method and path is matched.
    #[must_use]
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return false;
        }
        match &self.route_prefix {
            None => true,
            Some(prefix) => path.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/')
            }),
        }
    }
}

/// Which requests (or keys) an override is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// One exact rate-limit key of the rule (as built by [`RuleSpec::key_for`], e.g.
    /// `user=alice`; the service matches the caller's `key` as given).
    Key(String),
    /// Every request whose tier is this one.
    Tier(String),
}

/// Other numbers for part of a rule's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Who gets them.
    pub selector: Selector,
    /// The numbers (same algorithm as the rule).
    pub limit: Rule,
}

/// One named rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// Unique name: the policy name in `RateLimit` headers and a metrics label.
    pub name: String,
    /// Algorithm and numbers.
    pub limit: Rule,
    /// The attributes the key is built from; empty means one bucket for everyone.
    pub key: Vec<KeyPart>,
    /// The requests it applies to (the middleware; the service ignores it).
    pub matcher: Matcher,
    /// Overrides, most specific first when they are resolved.
    pub overrides: Vec<Override>,
}

impl RuleSpec {
    /// A rule applying `limit` to every request, keyed on `key`, without overrides.
    #[must_use]
    pub fn new(name: impl Into<String>, limit: Rule, key: Vec<KeyPart>) -> Self {
        Self { name: name.into(), limit, key, matcher: Matcher::default(), overrides: Vec::new() }
    }

    /// The rate-limit key of a request: `part=value` for each key part, joined by `|`
    /// (`%` and `|` in values escaped as `%25`, `%7C`), `*` for a rule without key
    /// parts. `None` when the request lacks one of the attributes — the rule then does
    /// not apply to it. Keys longer than 256 bytes are replaced by `#` and their
    /// BLAKE3 hash, so a long header cannot make the check fail.
    #[must_use]
    pub fn key_for(&self, attrs: &RequestAttrs) -> Option<String> {
        if self.key.is_empty() {
            return Some("*".to_owned());
        }
        let mut key = String::new();
        for (i, part) in self.key.iter().enumerate() {
            let ip;
            let value = match part {
                KeyPart::User => attrs.user.as_deref()?,
                KeyPart::ApiKey => attrs.api_key.as_deref()?,
                KeyPart::Route => attrs.route.as_str(),
                KeyPart::Ip => {
                    ip = attrs.ip?.to_string();
                    ip.as_str()
                }
            };
            if i > 0 {
                key.push('|');
            }
            key.push_str(part.label());
            key.push('=');
            for c in value.chars() {
                match c {
                    '%' => key.push_str("%25"),
                    '|' => key.push_str("%7C"),
                    c => key.push(c),
                }
            }
        }
        if key.len() > MAX_KEY_BYTES {
            key = format!("#{}", blake3::hash(key.as_bytes()).to_hex());
        }
        Some(key)
    }

    /// The override that applies to `key` with `tier`, by precedence: an explicit-key
    /// override, else a tier override, else none (the rule's own numbers).
    #[must_use]
    pub fn resolve(&self, key: &str, tier: Option<&str>) -> Option<&Override> {
        let by_key =
            self.overrides.iter().find(|o| matches!(&o.selector, Selector::Key(k) if k == key));
        by_key.or_else(|| {
            let tier = tier?;
            self.overrides.iter().find(|o| matches!(&o.selector, Selector::Tier(t) if t == tier))
        })
    }

    /// The numbers that apply to `key` with `tier` (see [`RuleSpec::resolve`]).
    #[must_use]
    pub fn limit_for(&self, key: &str, tier: Option<&str>) -> Rule {
        self.resolve(key, tier).map_or(self.limit, |o| o.limit)
    }
}

/// What a rule sees of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAttrs {
    /// The method.
    pub method: Method,
    /// The full request path.
    pub path: String,
    /// The matched route template when routing has run, else the path.
    pub route: String,
    /// `x-user-id`.
    pub user: Option<String>,
    /// `x-api-key`.
    pub api_key: Option<String>,
    /// The client address.
    pub ip: Option<IpAddr>,
    /// The tier: from `[tiers]` by API key, else `x-tier` when trusted.
    pub tier: Option<String>,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

impl RequestAttrs {
    /// A request's attributes under `rules`' [`AttributeConfig`] and tier map.
    ///
    /// The client address is the TCP peer (axum's `ConnectInfo<SocketAddr>`
    /// extension, present when the server is run with
    /// `into_make_service_with_connect_info`); with `trust_forwarded_for`, the last
    /// valid `X-Forwarded-For` entry wins over it.
    #[must_use]
    pub fn from_request<B>(request: &Request<B>, rules: &RuleSet) -> Self {
        let headers = request.headers();
        let config = rules.attributes;
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let forwarded = config
            .trust_forwarded_for
            .then(|| {
                let all = headers.get_all(FORWARDED_FOR_HEADER);
                let last = all.iter().next_back()?.to_str().ok()?;
                last.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
            })
            .flatten();
        let api_key = header(headers, API_KEY_HEADER);
        let tier = api_key
            .as_deref()
            .and_then(|k| rules.tiers.get(k).cloned())
            .or_else(|| config.trust_tier_header.then(|| header(headers, TIER_HEADER)).flatten());
        let path = request.uri().path().to_owned();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| path.clone(), |m| m.as_str().to_owned());
        Self {
            method: request.method().clone(),
            path,
            route,
            user: header(headers, USER_HEADER),
            api_key,
            ip: forwarded.or(peer),
            tier,
        }
    }
}

/// Why a rule set was refused. A refused reload leaves the previous rules in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// The file could not be read (or is larger than [`FILE_BYTES_MAX`]).
    #[error("cannot read rules file {path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The TOML is malformed or has unknown or mistyped fields.
    #[error("rules TOML: {0}")]
    Parse(String),
    /// A rule or tier name is empty, too long or has other characters than
    /// `A-Z a-z 0-9 _ - .`.
    #[error("invalid name {0:?}: 1 to 64 characters of A-Z a-z 0-9 _ - .")]
    InvalidName(String),
    /// Two rules have the same name.
    #[error("duplicate rule {0:?}")]
    DuplicateRule(String),
    /// A rule's or an override's numbers are invalid.
    #[error("rule {rule:?}: {source}")]
    Numbers {
        /// The rule.
        rule: String,
        /// What is wrong with the numbers.
        source: RuleError,
    },
    /// A rule's `route_prefix` or `methods` is invalid.
    #[error("rule {rule:?}: {message}")]
    Matcher {
        /// The rule.
        rule: String,
        /// What is wrong.
        message: String,
    },
    /// An override names no rule of the set.
    #[error("override #{index} names unknown rule {rule:?}")]
    UnknownRule {
        /// The override's position in the file, from 0.
        index: usize,
        /// The name it gave.
        rule: String,
    },
    /// An override must name exactly one of `key` and `tier`.
    #[error("override #{index} must have exactly one of `key` and `tier`")]
    Selector {
        /// The override's position, from 0.
        index: usize,
    },
    /// Two overrides of one rule select the same key or tier.
    #[error("rule {rule:?}: duplicate override for {selector}")]
    DuplicateOverride {
        /// The rule.
        rule: String,
        /// The key or tier.
        selector: String,
    },
    /// More than [`MAX_RULES`] rules.
    #[error("{0} rules: at most {MAX_RULES}")]
    TooManyRules(usize),
    /// More than [`MAX_OVERRIDES`] overrides.
    #[error("{0} overrides: at most {MAX_OVERRIDES}")]
    TooManyOverrides(usize),
    /// More than [`MAX_TIER_KEYS`] entries in `[tiers]`.
    #[error("{0} tier entries: at most {MAX_TIER_KEYS}")]
    TooManyTierKeys(usize),
    /// The backend could not be set up (a Redis URL that does not connect), or rules
    /// could not be shared through it; the source says how.
    #[error("rate-limit backend")]
    Backend(#[from] RulesBackendError),
}

/// Why the backend behind a rule set failed: the driver's or encoder's own error is
/// kept as the `source()`, so a caller can log the chain or downcast it.
///
/// Errors are held in an [`Arc`] so [`RulesError`] stays `Clone`; equality is identity
/// for them (an error equals only itself and its clones), by value for the rest.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RulesBackendError {
    /// Redis failed: an invalid URL, the server unreachable, or a command refused.
    Redis(Arc<redis::RedisError>),
    /// Connecting to Redis did not finish in time.
    TimedOut {
        /// How long connecting was given.
        after: Duration,
    },
    /// A rule could not be encoded to, or decoded from, the JSON it is shared as.
    Json(Arc<serde_json::Error>),
}

impl From<redis::RedisError> for RulesBackendError {
    fn from(err: redis::RedisError) -> Self {
        Self::Redis(Arc::new(err))
    }
}

impl From<serde_json::Error> for RulesBackendError {
    fn from(err: serde_json::Error) -> Self {
        Self::Json(Arc::new(err))
    }
}

impl fmt::Display for RulesBackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The driver's message is the source's, not repeated here.
        match self {
            Self::Redis(_) => f.write_str("redis"),
            Self::TimedOut { after } => write!(f, "connecting to redis took over {after:?}"),
            Self::Json(_) => f.write_str("rule JSON"),
        }
    }
}

impl std::error::Error for RulesBackendError {
    /// The driver's error itself (not its `Arc`), so it can be downcast.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Redis(err) => Some(&**err),
            Self::TimedOut { .. } => None,
            Self::Json(err) => Some(&**err),
        }
    }
}

impl PartialEq for RulesBackendError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Redis(a), Self::Redis(b)) => Arc::ptr_eq(a, b),
            (Self::TimedOut { after: a }, Self::TimedOut { after: b }) => a == b,
            (Self::Json(a), Self::Json(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for RulesBackendError {}

/// A validated, immutable set of rules. Change it by building a new one
/// ([`RuleSet::with_rule`], [`RuleSet::without_rule`], [`RuleSet::from_toml_str`]) and
/// swapping it in (`Engine::replace`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    attributes: AttributeConfig,
    tiers: BTreeMap<String, String>,
    rules: Vec<RuleSpec>,
}

/// A rule as written in TOML (`[[rule]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleToml {
    name: String,
    algorithm: Algorithm,
    limit: u64,
    period_ms: u64,
    burst: Option<u64>,
    #[serde(default)]
    key: KeyToml,
    route_prefix: Option<String>,
    #[serde(default)]
    methods: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum KeyToml {
    #[default]
    None,
    One(KeyPart),
    Many(Vec<KeyPart>),
}

/// An override as written in TOML (`[[override]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideToml {
    rule: String,
    tier: Option<String>,
    key: Option<String>,
    limit: Option<u64>,
    period_ms: Option<u64>,
    burst: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    attributes: AttributeConfig,
    #[serde(default)]
    tiers: BTreeMap<String, String>,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleToml>,
    #[serde(default, rename = "override")]
    overrides: Vec<OverrideToml>,
}

/// Whether `name` is a valid rule or tier name.
#[must_use]
pub fn valid_name(name: &str) -> bool {
    (1..=NAME_LEN_MAX).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The numbers of a rule: `burst` defaults to `limit`, and is forced to it for the
/// window algorithms only when not given (giving another is an error).
fn numbers(
    name: &str,
    algorithm: Algorithm,
    limit: u64,
    period_ms: u64,
    burst: Option<u64>,
) -> Result<Rule, RulesError> {
    let rule = Rule::new(algorithm.kind(), limit, period_ms).with_burst(burst.unwrap_or(limit));
    rule.validate().map_err(|source| RulesError::Numbers { rule: name.to_owned(), source })?;
    Ok(rule)
}

impl RuleSet {
    /// The empty set: no rule applies to anything.
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses and fully validates a rules file's text.
    ///
    /// # Errors
    /// The first problem found, as a [`RulesError`].
    pub fn from_toml_str(text: &str) -> Result<Self, RulesError> {
        let file: FileToml = toml::from_str(text).map_err(|e| RulesError::Parse(e.to_string()))?;
        if file.rules.len() > MAX_RULES {
            return Err(RulesError::TooManyRules(file.rules.len()));
        }
        if file.overrides.len() > MAX_OVERRIDES {
            return Err(RulesError::TooManyOverrides(file.overrides.len()));
        }
        if file.tiers.len() > MAX_TIER_KEYS {
            return Err(RulesError::TooManyTierKeys(file.tiers.len()));
        }
        for tier in file.tiers.values() {
            if !valid_name(tier) {
                return Err(RulesError::InvalidName(tier.clone()));
            }
        }
        let mut rules = Vec::with_capacity(file.rules.len());
        for r in file.rules {
            let limit = numbers(&r.name, r.algorithm, r.limit, r.period_ms, r.burst)?;
            let key = match r.key {
                KeyToml::None => Vec::new(),
                KeyToml::One(part) => vec![part],
                KeyToml::Many(parts) => parts,
            };
            let mut methods = Vec::with_capacity(r.methods.len());
            for m in &r.methods {
                let method =
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                        RulesError::Matcher {
                            rule: r.name.clone(),
                            message: format!("bad method {m:?}"),
                        }
                    })?;
                methods.push(method);
            }
            let matcher = Matcher { route_prefix: r.route_prefix, methods };
            rules.push(RuleSpec { name: r.name, limit, key, matcher, overrides: Vec::new() });
        }
        let by_name: HashMap<String, usize> =
            rules.iter().enumerate().map(|(i, r)| (r.name.clone(), i)).collect();
        for (index, o) in file.overrides.into_iter().enumerate() {
            let Some(&i) = by_name.get(&o.rule) else {
                return Err(RulesError::UnknownRule { index, rule: o.rule });
            };
            let selector = match (o.key, o.tier) {
                (Some(key), None) => Selector::Key(key),
                (None, Some(tier)) => {
                    if !valid_name(&tier) {
                        return Err(RulesError::InvalidName(tier));
                    }
                    Selector::Tier(tier)
                }
                _ => return Err(RulesError::Selector { index }),
            };
            let base = rules[i].limit;
            let limit = o.limit.unwrap_or(base.limit);
            // The burst follows the limit unless the rule or the override set one.
            let burst = o.burst.or((base.burst != base.limit).then_some(base.burst));
            let period_ms = o.period_ms.unwrap_or(base.period_ms);
            let algorithm = Algorithm::from_kind(base.kind);
            let limit = numbers(&o.rule, algorithm, limit, period_ms, burst)?;
            rules[i].overrides.push(Override { selector, limit });
        }
        Self::new(file.attributes, file.tiers, rules)
    }

    /// Reads and parses a rules file.
    ///
    /// # Errors
    /// [`RulesError::Io`] when unreadable or too large, else as
    /// [`RuleSet::from_toml_str`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, RulesError> {
        let path = path.as_ref();
        let io = |message: String| RulesError::Io { path: path.display().to_string(), message };
        let len = std::fs::metadata(path).map_err(|e| io(e.to_string()))?.len();
        if len > FILE_BYTES_MAX {
            return Err(io(format!("{len} bytes, at most {FILE_BYTES_MAX}")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| io(e.to_string()))?;
        Self::from_toml_str(&text)
    }

    /// A set of `rules`, validated: names, uniqueness, numbers, matchers, bounds.
    ///
    /// # Errors
    /// The first problem found.
    pub fn new(
        attributes: AttributeConfig,
        tiers: BTreeMap<String, String>,
        rules: Vec<RuleSpec>,
    ) -> Result<Self, RulesError> {
        if rules.len() > MAX_RULES {
            return Err(RulesError::TooManyRules(rules.len()));
        }
        let overrides: usize = rules.iter().map(|r| r.overrides.len()).sum();
        if overrides > MAX_OVERRIDES {
            return Err(RulesError::TooManyOverrides(overrides));
        }
        if tiers.len() > MAX_TIER_KEYS {
            return Err(RulesError::TooManyTierKeys(tiers.len()));
        }
        let mut names = HashSet::new();
        for rule in &rules {
            if !valid_name(&rule.name) {
                return Err(RulesError::InvalidName(rule.name.clone()));
            }
            if !names.insert(rule.name.as_str()) {
                return Err(RulesError::DuplicateRule(rule.name.clone()));
            }
            let numbers_err = |source| RulesError::Numbers { rule: rule.name.clone(), source };
            rule.limit.validate().map_err(numbers_err)?;
            if let Some(prefix) = &rule.matcher.route_prefix
                && (!prefix.starts_with('/') || prefix.len() > 1_024)
            {
                return Err(RulesError::Matcher {
                    rule: rule.name.clone(),
                    message: format!("route_prefix {prefix:?} must start with / (≤ 1,024 bytes)"),
                });
            }
            let mut seen = HashSet::new();
            let mut parts = HashSet::new();
            if !rule.key.iter().all(|p| parts.insert(*p)) {
                return Err(RulesError::Matcher {
                    rule: rule.name.clone(),
                    message: "a key part is repeated".to_owned(),
                });
            }
            for o in &rule.overrides {
                o.limit.validate().map_err(numbers_err)?;
                if o.limit.kind != rule.limit.kind {
                    return Err(RulesError::Matcher {
                        rule: rule.name.clone(),
                        message: "an override must keep the rule's algorithm".to_owned(),
                    });
                }
                let selector = match &o.selector {
                    Selector::Key(k) if k.is_empty() || k.len() > MAX_KEY_BYTES => {
                        return Err(RulesError::Matcher {
                            rule: rule.name.clone(),
                            message: format!("override key must be 1 to {MAX_KEY_BYTES} bytes"),
                        });
                    }
                    Selector::Key(k) => format!("key {k:?}"),
                    Selector::Tier(t) if !valid_name(t) => {
                        return Err(RulesError::InvalidName(t.clone()));
                    }
                    Selector::Tier(t) => format!("tier {t:?}"),
                };
                if !seen.insert(o.selector.clone()) {
                    return Err(RulesError::DuplicateOverride {
                        rule: rule.name.clone(),
                        selector,
                    });
                }
            }
        }
        Ok(Self { attributes, tiers, rules })
    }

    /// The rules, in file order.
    #[must_use]
    pub fn rules(&self) -> &[RuleSpec] {
        &self.rules
    }

    /// The rule named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&RuleSpec> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// How attributes are read.
    #[must_use]
    pub fn attributes(&self) -> AttributeConfig {
        self.attributes
    }

    /// The API key → tier map.
    #[must_use]
    pub fn tiers(&self) -> &BTreeMap<String, String> {
        &self.tiers
    }

    /// The number of overrides across all rules.
    #[must_use]
    pub fn override_count(&self) -> usize {
        self.rules.iter().map(|r| r.overrides.len()).sum()
    }

    /// A copy with `rule` added, or replacing the rule of the same name (keeping its
    /// position). Returns whether it was added.
    ///
    /// # Errors
    /// The new set is invalid (bad numbers, too many rules).
    pub fn with_rule(&self, rule: RuleSpec) -> Result<(Self, bool), RulesError> {
        let mut rules = self.rules.clone();
        let created = match rules.iter_mut().find(|r| r.name == rule.name) {
            Some(slot) => {
                *slot = rule;
                false
            }
            None => {
                rules.push(rule);
                true
            }
        };
        Ok((Self::new(self.attributes, self.tiers.clone(), rules)?, created))
    }

    /// A copy without the rule `name`, or `None` if there is none.
    #[must_use]
    pub fn without_rule(&self, name: &str) -> Option<Self> {
        let i = self.rules.iter().position(|r| r.name == name)?;
        let mut set = self.clone();
        set.rules.remove(i);
        Some(set)
    }

    /// Whether any rule matches a request with this method and path (whatever it keys
    /// on): a path no rule matches can skip the limiter altogether.
    #[must_use]
    pub fn matches_any(&self, method: &Method, path: &str) -> bool {
        self.rules.iter().any(|rule| rule.matcher.matches(method, path))
    }

    /// The rules applying to a request, each with the request's key for it, in set
    /// order. A rule applies when its matcher matches and the request has every
    /// attribute it keys on.
    pub fn applicable<'a>(
        &'a self,
        attrs: &'a RequestAttrs,
    ) -> impl Iterator<Item = (usize, &'a RuleSpec, String)> + 'a {
        self.rules.iter().enumerate().filter_map(move |(i, rule)| {
            if !rule.matcher.matches(&attrs.method, &attrs.path) {
                return None;
            }
            Some((i, rule, rule.key_for(attrs)?))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn backend_failures_keep_their_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = RulesError::from(RulesBackendError::from(redis::RedisError::from(io)));
        assert_eq!(err, err.clone(), "a clone is the same failure");
        assert_eq!(err.to_string(), "rate-limit backend");
        let cause = err.source().and_then(|s| s.source());
        let redis = cause.and_then(|s| s.downcast_ref::<redis::RedisError>());
        assert!(redis.is_some_and(redis::RedisError::is_connection_refusal), "{err:?}");

        let json = serde_json::from_str::<u64>("{").unwrap_err();
        let err = RulesBackendError::from(json);
        assert_ne!(err, RulesBackendError::from(serde_json::from_str::<u64>("{").unwrap_err()));
        assert!(err.source().is_some_and(|s| s.is::<serde_json::Error>()), "{err:?}");

        let after = Duration::from_secs(2);
        let err = RulesBackendError::TimedOut { after };
        assert_eq!(err, RulesBackendError::TimedOut { after });
        assert_eq!(err.to_string(), "connecting to redis took over 2s");
        assert!(err.source().is_none());
    }
}
