//! Rule edits shared between the service's instances through Redis.
//!
//! With Redis configured, `PUT` and `DELETE /rules/{name}` on any instance write the
//! edit to a Redis hash (`{key_prefix}rules`: name → the rule as JSON, or `null` for a
//! deleted rule) and bump a version counter (`{key_prefix}rules:version`) in one
//! transaction, then apply it locally. Every instance polls the version and, when it
//! moves, lays the whole hash over its own rules file. So all instances converge on
//! the file's rules plus every edit, within one poll interval; the instance that took
//! the edit applies it before it answers.
//!
//! An edit that cannot be written to Redis is refused (503) and applied nowhere. An
//! entry that does not parse (written by something else) is skipped and logged.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::api::RuleView;
use girder_http::ratelimit::rules::{RuleSet, RuleSpec, RulesBackendError, RulesError};

/// How often instances look for edits made elsewhere.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The shared edits: `(rule name, JSON or "null")`.
pub(crate) type Overlay = Vec<(String, String)>;

/// The Redis side of shared rules.
pub(crate) struct SharedRules {
    conn: ConnectionManager,
    hash: String,
    version: String,
}

impl std::fmt::Debug for SharedRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRules").field("hash", &self.hash).finish_non_exhaustive()
    }
}

/// A failure of the shared store (Redis, or the JSON a rule is shared as), the cause
/// kept as the source.
fn backend(e: impl Into<RulesBackendError>) -> RulesError {
    RulesError::Backend(e.into())
}

impl SharedRules {
    /// Shared edits on `conn` (the limiters' connection), keys under `key_prefix`.
    pub(crate) fn new(conn: ConnectionManager, key_prefix: &str) -> Self {
        Self {
            conn,
            hash: format!("{key_prefix}rules"),
            version: format!("{key_prefix}rules:version"),
        }
    }

    /// Records `rule` as the current version of its name, for every instance.
    pub(crate) async fn put(&self, rule: &RuleView) -> Result<(), RulesError> {
        let json = serde_json::to_string(rule).map_err(backend)?;
        self.write(&rule.name, &json).await
    }

    /// Records that rule `name` is deleted, for every instance.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), RulesError> {
        self.write(name, "null").await
    }

    async fn write(&self, name: &str, value: &str) -> Result<(), RulesError> {
        let mut conn = self.conn.clone();
        let ((), _version): ((), i64) = redis::pipe()
            .atomic()
            .hset(&self.hash, name, value)
            .incr(&self.version, 1)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// The version counter (0 before any edit).
    pub(crate) async fn version(&self) -> Result<i64, RulesError> {
        let mut conn = self.conn.clone();
        let version: Option<i64> =
            redis::cmd("GET").arg(&self.version).query_async(&mut conn).await.map_err(backend)?;
        Ok(version.unwrap_or(0))
    }

    /// Every shared edit.
    pub(crate) async fn overlay(&self) -> Result<Overlay, RulesError> {
        let mut conn = self.conn.clone();
        let mut edits: Overlay =
            redis::cmd("HGETALL").arg(&self.hash).query_async(&mut conn).await.map_err(backend)?;
        edits.sort();
        Ok(edits)
    }
}

/// `base` with every edit in `overlay` applied. An edit that does not parse, or that
/// would make the set invalid, is skipped and logged.
pub(crate) fn compose(base: &RuleSet, overlay: &Overlay) -> RuleSet {
    let mut rules = base.clone();
    for (name, value) in overlay {
        if value == "null" {
            if let Some(next) = rules.without_rule(name) {
                rules = next;
            }
            continue;
        }
        let applied = serde_json::from_str::<RuleView>(value).map_err(backend).and_then(|view| {
            rules.with_rule(spec_from_view(RuleView { name: name.clone(), ..view }))
        });
        match applied {
            Ok((next, _)) => rules = next,
            Err(error) => {
                let error: &dyn std::error::Error = &error;
                tracing::warn!(rule = %name, error, "skipping a shared rule edit");
            }
        }
    }
    rules
}

/// The rule a view describes (its overrides are not part of a view, so none).
pub(crate) fn spec_from_view(view: RuleView) -> RuleSpec {
    let limit = girder_ratelimit::Rule::new(view.algorithm.kind(), view.limit, view.period_ms)
        .with_burst(view.burst);
    RuleSpec::new(view.name, limit, view.key)
}

#[cfg(test)]
mod tests {
    use girder_ratelimit::Kind;

    use super::*;

    fn base() -> RuleSet {
        RuleSet::from_toml_str(
            "[[rule]]\nname = \"a\"\nalgorithm = \"fixed_window\"\nlimit = 5\nperiod_ms = 1000\n\n\
             [[rule]]\nname = \"b\"\nalgorithm = \"gcra\"\nlimit = 5\nperiod_ms = 1000\n",
        )
        .expect("valid rules")
    }

    fn numbers(rules: &RuleSet, name: &str) -> Option<(Kind, u64, u64)> {
        rules.get(name).map(|r| (r.limit.kind, r.limit.limit, r.limit.burst))
    }

    #[test]
    fn edits_replace_add_and_delete_and_bad_ones_are_skipped() {
        let edit = |name: &str, value: &str| (name.to_owned(), value.to_owned());
        let overlay = vec![
            // Replaces `a`; the name comes from the hash field, not the JSON.
            edit(
                "a",
                r#"{"name":"x","algorithm":"token_bucket","limit":9,"period_ms":1000,"burst":4,"key":["user"],"overrides":0}"#,
            ),
            edit("b", "null"),
            edit(
                "c",
                r#"{"name":"c","algorithm":"sliding_log","limit":2,"period_ms":1000,"burst":2,"key":[],"overrides":0}"#,
            ),
            edit("garbled", "{not json"),
            // Invalid numbers: skipped, the rest stands.
            edit(
                "zero",
                r#"{"name":"zero","algorithm":"gcra","limit":0,"period_ms":1000,"burst":1,"key":[],"overrides":0}"#,
            ),
            edit("never-existed", "null"),
        ];
        let rules = compose(&base(), &overlay);
        assert_eq!(numbers(&rules, "a"), Some((Kind::TokenBucket, 9, 4)));
        assert_eq!(
            rules.get("a").map(|r| r.key.clone()),
            Some(vec![girder_http::ratelimit::KeyPart::User])
        );
        assert_eq!(numbers(&rules, "b"), None);
        assert_eq!(numbers(&rules, "c"), Some((Kind::SlidingLog, 2, 2)));
        assert_eq!(numbers(&rules, "x"), None);
        assert_eq!(numbers(&rules, "garbled"), None);
        assert_eq!(numbers(&rules, "zero"), None);
        assert_eq!(compose(&base(), &Vec::new()), base(), "no edits, the file's rules");
    }
}
