//! The rate-limit response fields of draft-ietf-httpapi-ratelimit-headers-09
//! (`RateLimit-Policy: "name";q=100;w=60` and `RateLimit: "name";r=42;t=17`, both
//! Structured Field lists of one item named by an sf-string) and `Retry-After`.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use girder_ratelimit::{Decision, Rule};

/// `RateLimit-Policy`: the quota policy.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: the state of the quota for this request.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds, rounded up.
#[must_use]
pub const fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1_000)
}

/// `"name";q=LIMIT;w=PERIOD_SECONDS` (the window rounded up to a whole second).
#[must_use]
pub fn policy_value(name: &str, policy: &Rule) -> String {
    format!("\"{name}\";q={};w={}", policy.limit, ceil_secs(policy.period_ms).max(1))
}

/// `"name";r=REMAINING;t=SECONDS`: `t` is when more quota is available — the retry
/// delay when denied, else when the key's quota is back to full.
#[must_use]
pub fn ratelimit_value(name: &str, decision: &Decision) -> String {
    let t_ms = if decision.allowed { decision.reset_after_ms } else { decision.retry_after_ms };
    format!("\"{name}\";r={};t={}", decision.remaining, ceil_secs(t_ms))
}

/// Sets `RateLimit-Policy` and `RateLimit` (rule names are validated to
/// `A-Z a-z 0-9 _ - .`, so they need no escaping).
pub fn set_fields(headers: &mut HeaderMap, name: &str, policy: &Rule, decision: &Decision) {
    if let Ok(v) = HeaderValue::from_str(&policy_value(name, policy)) {
        headers.insert(RATELIMIT_POLICY.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&ratelimit_value(name, decision)) {
        headers.insert(RATELIMIT.clone(), v);
    }
}

/// Sets `Retry-After`: the decision's retry delay in whole seconds, rounded up (at
/// least 1).
pub fn set_retry_after(headers: &mut HeaderMap, decision: &Decision) {
    let secs = ceil_secs(decision.retry_after_ms).max(1);
    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
}
