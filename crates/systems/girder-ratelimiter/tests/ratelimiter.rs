//! Rate limiting over HTTP, through real routers: the rules file (parse, validate,
//! reject), precedence (every rule applies, the most specific override wins), atomic
//! reload, the middleware's 429 / `RateLimit` fields / failure policies / counters,
//! and the Distributed Rate Limiter service — its endpoints, a table of bad input that
//! must all be 4xx problems, and two instances sharing one budget through Redis.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::routing::get;
use girder_core::services::{Service, require};
use girder_core::{Clock, ManualClock};
use girder_http::identity::{Role, test_bearer as bearer, test_tokens};
use girder_http::ratelimit::rules::{MAX_OVERRIDES, MAX_RULES};
use girder_http::ratelimit::{
    BackendConfig, Engine, FailurePolicy, RateLimitLayer, RequestAttrs, RuleSet, RulesBackendError,
    RulesError, Selector,
};
use girder_ratelimit::{BackendError, Kind, LimitError, Rule, UnavailableError};
use girder_ratelimiter::{RateLimiterConfig, RateLimiterService};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tower::ServiceExt;

// ---------------------------------------------------------------- plumbing

fn clock() -> ManualClock {
    // Aligned to the minute, so fixed windows start now.
    ManualClock::new(1_700_000_040_000)
}

fn memory_engine(toml: &str, clock: &ManualClock) -> Arc<Engine> {
    let rules = RuleSet::from_toml_str(toml).expect("valid rules");
    let backend = BackendConfig::memory(Arc::new(clock.clone()));
    Arc::new(Engine::new(rules, backend, "test_decisions_total").expect("engine"))
}

/// A small app behind the middleware.
fn limited_app(engine: &Arc<Engine>, failure: FailurePolicy) -> Router {
    Router::new()
        .route("/api/items", get(|| async { "items" }).post(|| async { "created" }))
        .route("/api/items/{id}", get(|| async { "item" }))
        .route("/health", get(|| async { "ok" }))
        .layer(RateLimitLayer::new(Arc::clone(engine), failure))
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii header"))
    }
}

/// One request to the middleware app: headers and the TCP peer (as `ConnectInfo`).
async fn send(
    router: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    peer: Option<&str>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::empty()).expect("request");
    if let Some(peer) = peer {
        let addr = SocketAddr::new(peer.parse().expect("ip"), 40_000);
        request.extensions_mut().insert(ConnectInfo(addr));
    }
    let response = router.clone().oneshot(request).await.expect("infallible router");
    into_reply(response).await
}

async fn into_reply(response: axum::response::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    if status.is_client_error() || status.is_server_error() {
        let ct = headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes());
        assert_eq!(ct, Some(&b"application/problem+json"[..]), "{status} not a problem: {body}");
        assert_eq!(body["status"], status.as_u16(), "{body}");
    }
    Reply { status, headers, body }
}

/// A JSON request to the service router.
/// The service's API as the server mounts it: behind the layer that verifies tokens.
fn routed(service: &Arc<RateLimiterService>) -> Router {
    service.api_router().layer(test_tokens().layer())
}

/// Sends a request as an operator.
async fn call(router: &Router, method: &str, uri: &str, body: Option<&str>) -> Reply {
    call_as(router, method, uri, body, Some(bearer("operator", Role::Operator))).await
}

/// Sends a request with `authorization` (none if `None`).
async fn call_as(
    router: &Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
    authorization: Option<String>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let request = request.body(Body::from(body.unwrap_or_default().to_owned())).expect("request");
    into_reply(router.clone().oneshot(request).await.expect("infallible router")).await
}

async fn check(router: &Router, rule: &str, key: &str, cost: u64) -> Reply {
    let body = json!({"rule": rule, "key": key, "cost": cost}).to_string();
    call(router, "POST", "/check", Some(&body)).await
}

/// A short tag per error variant, for tables.
fn tag(e: &RulesError) -> &'static str {
    match e {
        RulesError::Io { .. } => "io",
        RulesError::Parse(_) => "parse",
        RulesError::InvalidName(_) => "name",
        RulesError::DuplicateRule(_) => "duplicate-rule",
        RulesError::Numbers { .. } => "numbers",
        RulesError::Matcher { .. } => "matcher",
        RulesError::UnknownRule { .. } => "unknown-rule",
        RulesError::Selector { .. } => "selector",
        RulesError::DuplicateOverride { .. } => "duplicate-override",
        RulesError::TooManyRules(_) => "too-many-rules",
        RulesError::TooManyOverrides(_) => "too-many-overrides",
        RulesError::TooManyTierKeys(_) => "too-many-tier-keys",
        RulesError::Backend(_) => "backend",
        _ => "other",
    }
}

const EXAMPLE: &str = r#"
[attributes]
trust_forwarded_for = false
trust_tier_header = true

[tiers]
"gold-key" = "premium"

[[rule]]
name = "per-user"
algorithm = "token_bucket"
limit = 100
period_ms = 60000
burst = 120
key = "user"

[[rule]]
name = "writes"
algorithm = "sliding_window"
limit = 10
period_ms = 1000
key = ["api_key", "route"]
route_prefix = "/api"
methods = ["post", "PUT"]

[[override]]
rule = "per-user"
tier = "premium"
limit = 1000

[[override]]
rule = "per-user"
key = "user=batch"
limit = 5
burst = 5
"#;

// ---------------------------------------------------------------- rules

#[test]
fn the_example_parses_to_what_it_says() {
    let set = RuleSet::from_toml_str(EXAMPLE).expect("example");
    assert_eq!(set.rules().len(), 2);
    assert!(set.attributes().trust_tier_header);
    assert_eq!(set.tiers().get("gold-key").map(String::as_str), Some("premium"));
    let user = set.get("per-user").expect("per-user");
    assert_eq!(user.limit, Rule::new(Kind::TokenBucket, 100, 60_000).with_burst(120));
    // Overrides inherit what they do not set; the rule's own burst is kept.
    assert_eq!(user.limit_for("user=x", Some("premium")).limit, 1_000);
    assert_eq!(user.limit_for("user=x", Some("premium")).burst, 120);
    assert_eq!(user.limit_for("user=batch", Some("premium")).burst, 5);
    assert_eq!(user.limit_for("user=x", None), user.limit);
    let writes = set.get("writes").expect("writes");
    assert_eq!(writes.limit, Rule::new(Kind::SlidingWindow, 10, 1_000));
    assert_eq!(writes.matcher.methods.len(), 2);
    assert!(matches!(&user.overrides[1].selector, Selector::Key(k) if k == "user=batch"));
    assert_eq!(set.override_count(), 2);
}

#[test]
fn bad_rules_files_are_rejected_with_the_reason() {
    let rule = |extra: &str| {
        format!(
            "[[rule]]\nname = \"r\"\nalgorithm = \"token_bucket\"\nlimit = 10\nperiod_ms = 1000\n{extra}\n"
        )
    };
    let many_rules: String = (0..=MAX_RULES)
        .map(|i| {
            format!("[[rule]]\nname = \"r{i}\"\nalgorithm = \"gcra\"\nlimit = 1\nperiod_ms = 1\n")
        })
        .collect();
    let many_overrides: String = rule("")
        + &(0..=MAX_OVERRIDES)
            .map(|i| format!("[[override]]\nrule = \"r\"\nkey = \"k{i}\"\nlimit = 2\n"))
            .collect::<String>();
    let cases: Vec<(&str, String, Result<(), &str>)> = vec![
        ("empty file", String::new(), Ok(())),
        ("one rule", rule(""), Ok(())),
        ("key list", rule("key = [\"api_key\", \"route\"]"), Ok(())),
        (
            "256 rules",
            many_rules
                .split("[[rule]]")
                .skip(1)
                .take(MAX_RULES)
                .map(|r| format!("[[rule]]{r}"))
                .collect(),
            Ok(()),
        ),
        ("not toml", "[[rule".to_owned(), Err("parse")),
        ("unknown algorithm", rule("").replace("token_bucket", "leaky"), Err("parse")),
        ("unknown field", rule("colour = \"red\""), Err("parse")),
        ("unknown key part", rule("key = \"email\""), Err("parse")),
        ("negative limit", rule("").replace("limit = 10", "limit = -1"), Err("parse")),
        ("limit 0", rule("").replace("limit = 10", "limit = 0"), Err("numbers")),
        ("period 0", rule("").replace("period_ms = 1000", "period_ms = 0"), Err("numbers")),
        ("burst 0", rule("burst = 0"), Err("numbers")),
        (
            "burst on a window",
            rule("burst = 20").replace("token_bucket", "fixed_window"),
            Err("numbers"),
        ),
        (
            "sliding log too long",
            rule("").replace("token_bucket", "sliding_log").replace("limit = 10", "limit = 100001"),
            Err("numbers"),
        ),
        ("bad name", rule("").replace("\"r\"", "\"a b\""), Err("name")),
        ("long name", rule("").replace("\"r\"", &format!("\"{}\"", "n".repeat(65))), Err("name")),
        ("duplicate rule", rule("") + &rule(""), Err("duplicate-rule")),
        ("relative prefix", rule("route_prefix = \"api\""), Err("matcher")),
        ("bad method", rule("methods = [\"G ET\"]"), Err("matcher")),
        ("repeated key part", rule("key = [\"user\", \"user\"]"), Err("matcher")),
        (
            "override of unknown rule",
            rule("") + "[[override]]\nrule = \"nope\"\ntier = \"t\"\n",
            Err("unknown-rule"),
        ),
        (
            "override with key and tier",
            rule("") + "[[override]]\nrule = \"r\"\ntier = \"t\"\nkey = \"k\"\n",
            Err("selector"),
        ),
        (
            "override with neither",
            rule("") + "[[override]]\nrule = \"r\"\nlimit = 3\n",
            Err("selector"),
        ),
        (
            "override limit 0",
            rule("") + "[[override]]\nrule = \"r\"\ntier = \"t\"\nlimit = 0\n",
            Err("numbers"),
        ),
        (
            "bad tier name",
            rule("") + "[[override]]\nrule = \"r\"\ntier = \"gold tier\"\n",
            Err("name"),
        ),
        (
            "duplicate override",
            rule("") + &"[[override]]\nrule = \"r\"\ntier = \"t\"\n".repeat(2),
            Err("duplicate-override"),
        ),
        ("bad tier in map", "[tiers]\nk = \"not ok\"\n".to_owned(), Err("name")),
        ("257 rules", many_rules, Err("too-many-rules")),
        ("1025 overrides", many_overrides, Err("too-many-overrides")),
    ];
    for (name, text, want) in cases {
        let got = RuleSet::from_toml_str(&text).map(|_| ()).map_err(|e| tag(&e));
        assert_eq!(got, want, "{name}: {:?}", RuleSet::from_toml_str(&text).err());
    }
}

#[test]
fn attributes_are_read_as_documented_and_spoofing_is_off_by_default() {
    let attrs = |toml: &str, headers: &[(&str, &str)], peer: Option<&str>| {
        let set = RuleSet::from_toml_str(toml).expect("rules");
        let mut request = Request::builder().uri("/api/items/7?x=1");
        for (n, v) in headers {
            request = request.header(*n, *v);
        }
        let mut request = request.body(()).expect("request");
        if let Some(p) = peer {
            request.extensions_mut().insert(ConnectInfo(SocketAddr::new(p.parse().unwrap(), 1)));
        }
        RequestAttrs::from_request(&request, &set)
    };
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    let xff = [("x-forwarded-for", "1.1.1.1, 2.2.2.2")];
    let trusted = "[attributes]\ntrust_forwarded_for = true\n";
    assert_eq!(attrs("", &xff, Some("9.9.9.9")).ip, ip("9.9.9.9"), "untrusted XFF ignored");
    assert_eq!(attrs("", &xff, None).ip, None, "untrusted XFF ignored without a peer");
    assert_eq!(attrs(trusted, &xff, Some("9.9.9.9")).ip, ip("2.2.2.2"), "last entry wins");
    let junk = [("x-forwarded-for", "not-an-ip")];
    assert_eq!(attrs(trusted, &junk, Some("9.9.9.9")).ip, ip("9.9.9.9"), "junk falls back");

    let tier = [("x-tier", "premium"), ("x-api-key", "k")];
    assert_eq!(attrs("", &tier, None).tier, None, "x-tier untrusted by default");
    let trust_tier = "[attributes]\ntrust_tier_header = true\n";
    assert_eq!(attrs(trust_tier, &tier, None).tier.as_deref(), Some("premium"));
    let mapped = "[attributes]\ntrust_tier_header = true\n[tiers]\nk = \"basic\"\n";
    assert_eq!(attrs(mapped, &tier, None).tier.as_deref(), Some("basic"), "the map wins");

    let a = attrs("", &[("x-user-id", " alice "), ("x-api-key", "")], None);
    assert_eq!(a.user.as_deref(), Some("alice"));
    assert_eq!(a.api_key, None, "empty header = absent");
    assert_eq!((a.path.as_str(), a.route.as_str()), ("/api/items/7", "/api/items/7"));
}

// ---------------------------------------------------------------- precedence

#[tokio::test]
async fn every_matching_rule_applies_and_the_strictest_decides() {
    let clock = clock();
    let engine = memory_engine(
        r#"
        [[rule]]
        name = "per-user"
        algorithm = "fixed_window"
        limit = 5
        period_ms = 60000
        key = "user"

        [[rule]]
        name = "item-writes"
        algorithm = "fixed_window"
        limit = 2
        period_ms = 60000
        key = "route"
        route_prefix = "/api/items"
        methods = ["POST"]
        "#,
        &clock,
    );
    let app = limited_app(&engine, FailurePolicy::Open);
    let alice = [("x-user-id", "alice")];

    // Both rules apply to a POST; the headers name the one with fewer left.
    let r = send(&app, "POST", "/api/items", &alice, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("ratelimit"), Some("\"item-writes\";r=1;t=60"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"item-writes\";q=2;w=60"));
    assert_eq!(send(&app, "POST", "/api/items", &alice, None).await.status, StatusCode::OK);
    // The stricter rule refuses the third, though per-user has 3 left.
    let r = send(&app, "POST", "/api/items", &alice, None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("ratelimit-policy"), Some("\"item-writes\";q=2;w=60"));
    // A GET is not matched by item-writes: only per-user (3 used, 2 left).
    let r = send(&app, "GET", "/api/items", &alice, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("ratelimit"), Some("\"per-user\";r=1;t=60"));
    // The 429'd request was charged to per-user (checked first), item-writes was not
    // charged twice; per-user's last unit goes, then per-user refuses everything.
    assert_eq!(send(&app, "GET", "/health", &alice, None).await.status, StatusCode::OK);
    let r = send(&app, "GET", "/health", &alice, None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("ratelimit-policy"), Some("\"per-user\";q=5;w=60"));
    // item-writes is keyed on the route: another user's POSTs share its budget.
    let r = send(&app, "POST", "/api/items", &[("x-user-id", "bob")], None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "item-writes is per route");
}

#[tokio::test]
async fn the_most_specific_override_wins() {
    let clock = clock();
    let engine = memory_engine(
        r#"
        [attributes]
        trust_tier_header = true
        [tiers]
        "gold-key" = "premium"

        [[rule]]
        name = "per-user"
        algorithm = "gcra"
        limit = 2
        period_ms = 60000
        key = "user"

        [[override]]
        rule = "per-user"
        tier = "premium"
        limit = 5

        [[override]]
        rule = "per-user"
        key = "user=vip"
        limit = 8
        "#,
        &clock,
    );
    let app = limited_app(&engine, FailurePolicy::Open);
    let admitted = |headers: Vec<(&'static str, &'static str)>| {
        let app = app.clone();
        async move {
            let mut n = 0;
            while send(&app, "GET", "/health", &headers, None).await.status == StatusCode::OK {
                n += 1;
                assert!(n <= 100, "never limited");
            }
            n
        }
    };
    assert_eq!(admitted(vec![("x-user-id", "bob")]).await, 2, "default");
    assert_eq!(admitted(vec![("x-user-id", "carol"), ("x-tier", "premium")]).await, 5, "tier");
    assert_eq!(admitted(vec![("x-user-id", "dave"), ("x-api-key", "gold-key")]).await, 5, "mapped");
    assert_eq!(
        admitted(vec![("x-user-id", "erin"), ("x-tier", "unknown")]).await,
        2,
        "no such tier"
    );
    assert_eq!(admitted(vec![("x-user-id", "vip"), ("x-tier", "premium")]).await, 8, "key > tier");
    let r = send(&app, "GET", "/health", &[("x-user-id", "vip")], None).await;
    assert_eq!(r.header("ratelimit-policy"), Some("\"per-user\";q=8;w=60"));
}

// ---------------------------------------------------------------- reload

fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).expect("write rules file");
}

fn one_rule(name: &str, limit: u64) -> String {
    format!(
        "[[rule]]\nname = \"{name}\"\nalgorithm = \"fixed_window\"\nlimit = {limit}\nperiod_ms = 60000\nkey = \"user\"\n"
    )
}

#[tokio::test]
async fn reload_swaps_the_rules_and_a_bad_file_keeps_the_old_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rules.toml");
    write(&path, &one_rule("per-user", 2));
    let clock = clock();
    let layer =
        RateLimitLayer::from_file(&path, None, FailurePolicy::Open, Arc::new(clock.clone()))
            .await
            .expect("layer");
    let engine = Arc::clone(layer.engine());
    let app = Router::new().route("/", get(|| async { "ok" })).layer(layer);
    let alice = [("x-user-id", "alice")];
    for _ in 0..2 {
        assert_eq!(send(&app, "GET", "/", &alice, None).await.status, StatusCode::OK);
    }
    assert_eq!(send(&app, "GET", "/", &alice, None).await.status, StatusCode::TOO_MANY_REQUESTS);

    // The same numbers again: the limiter, and alice's exhausted budget, are kept.
    engine.reload_from_file(&path).expect("same file");
    assert_eq!(send(&app, "GET", "/", &alice, None).await.status, StatusCode::TOO_MANY_REQUESTS);

    // New numbers: a new limiter, in force at once.
    write(&path, &one_rule("per-user", 3));
    engine.reload_from_file(&path).expect("new numbers");
    let r = send(&app, "GET", "/", &alice, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("ratelimit-policy"), Some("\"per-user\";q=3;w=60"));

    // Bad files: typed errors, and the rules in force are untouched.
    let before = engine.rules();
    for (text, want) in [
        (one_rule("per-user", 0), "numbers"),
        ("[[rule]]\nname = ".to_owned(), "parse"),
        (one_rule("per-user", 1) + &one_rule("per-user", 1), "duplicate-rule"),
    ] {
        write(&path, &text);
        let err = engine.reload_from_file(&path).expect_err("bad file");
        assert_eq!(tag(&err), want, "{err}");
        assert_eq!(*engine.rules(), *before);
    }
    let err = engine.reload_from_file(dir.path().join("missing.toml")).expect_err("missing");
    assert_eq!(tag(&err), "io");
    let r = send(&app, "GET", "/", &alice, None).await;
    assert_eq!(r.header("ratelimit-policy"), Some("\"per-user\";q=3;w=60"), "old rules in force");
}

#[test]
fn readers_see_one_whole_rule_set_or_the_other() {
    let clock = clock();
    let set =
        |p: &str| format!("{}{}", one_rule(&format!("{p}1"), 1), one_rule(&format!("{p}2"), 2));
    let engine = memory_engine(&set("a"), &clock);
    let (a, b) =
        (RuleSet::from_toml_str(&set("a")).unwrap(), RuleSet::from_toml_str(&set("b")).unwrap());
    // Readers take snapshots while the writer flips the sets until both are done.
    let done = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (engine, done) = (Arc::clone(&engine), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut seen = [0u64; 2];
                for _ in 0..20_000 {
                    let rules = engine.rules();
                    let names: Vec<&str> = rules.rules().iter().map(|r| r.name.as_str()).collect();
                    match names.as_slice() {
                        ["a1", "a2"] => seen[0] += 1,
                        ["b1", "b2"] => seen[1] += 1,
                        torn => panic!("torn read {torn:?}"),
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
                seen
            })
        })
        .collect();
    let mut flips = 0u64;
    while done.load(Ordering::SeqCst) < 2 {
        engine
            .replace(if flips.is_multiple_of(2) { b.clone() } else { a.clone() })
            .expect("replace");
        flips += 1;
    }
    for r in readers {
        let seen = r.join().expect("reader");
        assert_eq!(seen[0] + seen[1], 20_000);
    }
    assert!(flips > 0);
}

// ---------------------------------------------------------------- middleware

#[tokio::test]
async fn over_the_limit_is_a_429_problem_with_retry_after() {
    let clock = clock();
    let engine = memory_engine(
        "[[rule]]\nname = \"per-user\"\nalgorithm = \"token_bucket\"\nlimit = 2\nperiod_ms = 10000\nkey = \"user\"\n",
        &clock,
    );
    let app = limited_app(&engine, FailurePolicy::Open);
    let alice = [("x-user-id", "alice")];
    let r = send(&app, "GET", "/api/items", &alice, None).await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &json!("items")));
    assert_eq!(r.header("ratelimit-policy"), Some("\"per-user\";q=2;w=10"));
    // One token used: full again in 5 s.
    assert_eq!(r.header("ratelimit"), Some("\"per-user\";r=1;t=5"));
    assert_eq!(r.header("retry-after"), None);
    let r = send(&app, "GET", "/api/items", &alice, None).await;
    assert_eq!(r.header("ratelimit"), Some("\"per-user\";r=0;t=10"));

    let r = send(&app, "GET", "/api/items", &alice, None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("5"), "one token per 5 s");
    assert_eq!(r.header("ratelimit"), Some("\"per-user\";r=0;t=5"));
    assert_eq!(r.body["type"], "/problems/rate-limited");
    assert_eq!(r.body["instance"], "/api/items");

    // Rounded up: 1 ms short of the token, still 1 s to wait.
    clock.advance(Duration::from_millis(4_999));
    let r = send(&app, "GET", "/api/items", &alice, None).await;
    assert_eq!((r.status, r.header("retry-after")), (StatusCode::TOO_MANY_REQUESTS, Some("1")));
    clock.advance(Duration::from_millis(1));
    assert_eq!(send(&app, "GET", "/api/items", &alice, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn keys_by_user_ip_and_api_key_are_independent() {
    let clock = clock();
    for (part, a, b) in [
        ("user", vec![("x-user-id", "alice")], vec![("x-user-id", "bob")]),
        ("api_key", vec![("x-api-key", "k1")], vec![("x-api-key", "k2")]),
    ] {
        let engine = memory_engine(
            &format!(
                "[[rule]]\nname = \"r\"\nalgorithm = \"fixed_window\"\nlimit = 1\nperiod_ms = 60000\nkey = \"{part}\"\n"
            ),
            &clock,
        );
        let app = limited_app(&engine, FailurePolicy::Open);
        assert_eq!(send(&app, "GET", "/health", &a, None).await.status, StatusCode::OK, "{part}");
        assert_eq!(
            send(&app, "GET", "/health", &a, None).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(send(&app, "GET", "/health", &b, None).await.status, StatusCode::OK, "{part}");
        // Without the attribute the rule does not apply: no limit, no fields.
        let r = send(&app, "GET", "/health", &[], None).await;
        assert_eq!((r.status, r.header("ratelimit")), (StatusCode::OK, None), "{part}");
    }

    let engine = memory_engine(
        "[[rule]]\nname = \"r\"\nalgorithm = \"fixed_window\"\nlimit = 1\nperiod_ms = 60000\nkey = \"ip\"\n",
        &clock,
    );
    let app = limited_app(&engine, FailurePolicy::Open);
    assert_eq!(send(&app, "GET", "/health", &[], Some("10.0.0.1")).await.status, StatusCode::OK);
    let spoof = [("x-forwarded-for", "6.6.6.6")];
    assert_eq!(
        send(&app, "GET", "/health", &spoof, Some("10.0.0.1")).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "an untrusted X-Forwarded-For buys no fresh budget"
    );
    assert_eq!(send(&app, "GET", "/health", &[], Some("10.0.0.2")).await.status, StatusCode::OK);

    // A composite key: the same API key on two routes has two budgets.
    let engine = memory_engine(
        "[[rule]]\nname = \"r\"\nalgorithm = \"fixed_window\"\nlimit = 1\nperiod_ms = 60000\nkey = [\"api_key\", \"route\"]\n",
        &clock,
    );
    let app = limited_app(&engine, FailurePolicy::Open);
    let k = [("x-api-key", "k")];
    assert_eq!(send(&app, "GET", "/api/items/1", &k, None).await.status, StatusCode::OK);
    // The route is the matched template: /api/items/2 is the same route.
    assert_eq!(
        send(&app, "GET", "/api/items/2", &k, None).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(&app, "GET", "/api/items", &k, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_failing_backend_fails_open_or_closed_as_configured() {
    let rules = RuleSet::from_toml_str(&one_rule("per-user", 1)).unwrap();
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    let failing = BackendConfig::Failing(UnavailableError::other(refused).into());
    let engine = Arc::new(Engine::new(rules, failing, "test_decisions_total").unwrap());
    let alice = [("x-user-id", "alice")];

    let open = limited_app(&engine, FailurePolicy::Open);
    for _ in 0..3 {
        let r = send(&open, "GET", "/health", &alice, None).await;
        assert_eq!((r.status, r.header("ratelimit")), (StatusCode::OK, None));
    }
    let closed = limited_app(&engine, FailurePolicy::Closed);
    let r = send(&closed, "GET", "/health", &alice, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["type"], "/problems/unavailable");
    assert_eq!(engine.stats("per-user").unwrap().backend_failures, 4);

    // A Redis that is not there is refused at start-up, with a typed error.
    let err = BackendConfig::redis("redis://127.0.0.1:1/", "t:").await.expect_err("port 1");
    assert_eq!(tag(&err), "backend");
    assert!(
        matches!(
            err,
            RulesError::Backend(RulesBackendError::Redis(_) | RulesBackendError::TimedOut { .. })
        ),
        "{err:?}"
    );
}

/// A metrics recorder keeping counters in memory, keyed `name{k=v,...}`.
#[derive(Default)]
struct Counters(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Counters {
    fn get(&self, key: &str) -> u64 {
        self.0.lock().get(key).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl metrics::Recorder for Counters {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<String> =
            key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        metrics::Counter::from_arc(Arc::clone(self.0.lock().entry(name).or_default()))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[tokio::test]
async fn decisions_and_failures_are_counted() {
    // The current-thread runtime runs everything on this thread, so a thread-local
    // recorder sees every increment.
    let counters = Counters::default();
    let _guard = metrics::set_default_local_recorder(&counters);
    let clock = clock();
    let rules = "[[rule]]\nname = \"per-user\"\nalgorithm = \"fixed_window\"\nlimit = 2\nperiod_ms = 60000\nkey = \"user\"\n";
    let set = RuleSet::from_toml_str(rules).unwrap();
    let backend = BackendConfig::memory(Arc::new(clock.clone()));
    let engine = Arc::new(Engine::new(set, backend, "girder_ratelimit_decisions_total").unwrap());
    let app = limited_app(&engine, FailurePolicy::Open);
    for _ in 0..5 {
        send(&app, "GET", "/health", &[("x-user-id", "alice")], None).await;
    }
    let stats = engine.stats("per-user").unwrap();
    assert_eq!((stats.allowed, stats.limited), (2, 3));
    assert_eq!(counters.get("girder_ratelimit_decisions_total{rule=per-user,outcome=allowed}"), 2);
    assert_eq!(counters.get("girder_ratelimit_decisions_total{rule=per-user,outcome=limited}"), 3);

    let set = RuleSet::from_toml_str(rules).unwrap();
    let script_error = redis::RedisError::from((redis::ErrorKind::ResponseError, "script error"));
    let failing = BackendConfig::Failing(LimitError::Backend(BackendError::from(script_error)));
    let engine = Arc::new(Engine::new(set, failing, "girder_ratelimit_decisions_total").unwrap());
    send(&limited_app(&engine, FailurePolicy::Open), "GET", "/health", &[("x-user-id", "a")], None)
        .await;
    send(
        &limited_app(&engine, FailurePolicy::Closed),
        "GET",
        "/health",
        &[("x-user-id", "a")],
        None,
    )
    .await;
    send(
        &limited_app(&engine, FailurePolicy::Closed),
        "GET",
        "/health",
        &[("x-user-id", "a")],
        None,
    )
    .await;
    assert_eq!(counters.get("girder_ratelimit_backend_failures_total{policy=open}"), 1);
    assert_eq!(counters.get("girder_ratelimit_backend_failures_total{policy=closed}"), 2);
}

// ---------------------------------------------------------------- the service

async fn service(clock: &ManualClock) -> (Arc<RateLimiterService>, Router) {
    let service = RateLimiterService::open(RateLimiterConfig::default(), Arc::new(clock.clone()))
        .await
        .expect("open");
    let router = routed(&service);
    (service, router)
}

async fn put_rule(router: &Router, name: &str, body: &Value) -> Reply {
    call(router, "PUT", &format!("/rules/{name}"), Some(&body.to_string())).await
}

#[tokio::test]
async fn the_service_checks_and_administers_rules() {
    let clock = clock();
    let (_service, router) = service(&clock).await;
    let tb = json!({"algorithm": "token_bucket", "limit": 3, "period_ms": 60000});
    let r = put_rule(&router, "api", &tb).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["burst"], 3);
    let r = put_rule(
        &router,
        "api",
        &json!({"algorithm": "token_bucket", "limit": 3, "period_ms": 60000, "burst": 4}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "replaced");

    let r = check(&router, "api", "user:1", 1).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({"allowed": true, "remaining": 3, "retry_after_ms": 0, "reset_after_ms": 20000, "limit": 4})
    );
    assert_eq!(r.header("ratelimit-policy"), Some("\"api\";q=3;w=60"));
    assert_eq!(r.header("ratelimit"), Some("\"api\";r=3;t=20"));
    assert_eq!(check(&router, "api", "user:1", 3).await.body["allowed"], true);
    let r = check(&router, "api", "user:1", 1).await;
    assert_eq!(r.status, StatusCode::OK, "a denial is still a 200");
    assert_eq!(r.body["allowed"], false);
    assert_eq!(r.body["retry_after_ms"], 20_000);
    assert_eq!(check(&router, "api", "user:2", 1).await.body["allowed"], true, "own budget");
    clock.advance(Duration::from_secs(20));
    assert_eq!(check(&router, "api", "user:1", 1).await.body["allowed"], true);

    let r = call(&router, "GET", "/rules/api/stats", None).await;
    assert_eq!(r.body, json!({"rule": "api", "allowed": 4, "limited": 1, "backend_failures": 0}));
    let r = call(&router, "GET", "/rules/api", None).await;
    assert_eq!(r.body["algorithm"], "token_bucket");
    assert_eq!((r.body["limit"].as_u64(), r.body["burst"].as_u64()), (Some(3), Some(4)));

    // Cursor-paged by name.
    for name in ["d", "b", "c", "a"] {
        assert_eq!(put_rule(&router, name, &tb).await.status, StatusCode::CREATED);
    }
    let mut names = Vec::new();
    let mut uri = "/rules?limit=2".to_owned();
    loop {
        let r = call(&router, "GET", &uri, None).await;
        assert_eq!(r.status, StatusCode::OK);
        let items = r.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        names.extend(items.iter().map(|i| i["name"].as_str().unwrap().to_owned()));
        match r.body["next_cursor"].as_str() {
            Some(c) => uri = format!("/rules?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(names, ["a", "api", "b", "c", "d"]);

    assert_eq!(call(&router, "DELETE", "/rules/api", None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(call(&router, "DELETE", "/rules/api", None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(check(&router, "api", "user:1", 1).await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&router, "GET", "/rules/api/stats", None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_service_starts_from_a_rules_file_and_reloads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rules.toml");
    write(
        &path,
        &format!("{}[[override]]\nrule = \"r\"\nkey = \"vip\"\nlimit = 3\n", one_rule("r", 1)),
    );
    let config =
        RateLimiterConfig { rules_path: Some(path.clone()), ..RateLimiterConfig::default() };
    let service = RateLimiterService::open(config, Arc::new(clock())).await.expect("open");
    let router = routed(&service);
    assert_eq!(check(&router, "r", "bob", 1).await.body["allowed"], true);
    assert_eq!(check(&router, "r", "bob", 1).await.body["allowed"], false);
    // An explicit-key override applies to the service's caller keys.
    assert_eq!(check(&router, "r", "vip", 3).await.body["allowed"], true);

    write(&path, &one_rule("s", 1));
    service.reload().expect("reload");
    assert_eq!(check(&router, "r", "bob", 1).await.status, StatusCode::NOT_FOUND);
    assert_eq!(check(&router, "s", "bob", 1).await.status, StatusCode::OK);
    write(&path, "garbage = [");
    assert!(service.reload().is_err());
    assert_eq!(check(&router, "s", "bob", 1).await.status, StatusCode::OK, "old rules kept");
}

/// A method, a URI and a body.
type Call = (&'static str, String, Option<String>);

#[tokio::test]
async fn bad_input_to_the_service_is_a_4xx_problem() {
    let clock = clock();
    let (service, router) = service(&clock).await;
    put_rule(
        &router,
        "tb",
        &json!({"algorithm": "token_bucket", "limit": 5, "period_ms": 1000, "burst": 10}),
    )
    .await;
    put_rule(&router, "fw", &json!({"algorithm": "fixed_window", "limit": 5, "period_ms": 1000}))
        .await;
    let long_key = "k".repeat(257);
    let ok_key = "k".repeat(256);
    let post = |body: String| ("POST", "/check".to_owned(), Some(body));
    let cases: Vec<(Call, StatusCode)> = vec![
        (post(r#"{"rule": "tb", "key": "k", "cost": 10}"#.into()), StatusCode::OK),
        (post(format!(r#"{{"rule": "tb", "key": "{ok_key}"}}"#)), StatusCode::OK),
        (post(r#"{"rule": "tb", "key": "k""#.into()), StatusCode::BAD_REQUEST),
        (post("not json".into()), StatusCode::BAD_REQUEST),
        (post(r#"{"rule": "tb", "key": "k", "cost": 0}"#.into()), StatusCode::UNPROCESSABLE_ENTITY),
        (
            post(r#"{"rule": "tb", "key": "k", "cost": -1}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            post(r#"{"rule": "tb", "key": "k", "cost": 1.5}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            post(r#"{"rule": "tb", "key": "k", "cost": "1"}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            post(r#"{"rule": "tb", "key": "k", "cost": 1e30}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            post(r#"{"rule": "tb", "key": "k", "cost": 11}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (post(r#"{"rule": "fw", "key": "k", "cost": 6}"#.into()), StatusCode::UNPROCESSABLE_ENTITY),
        (post(r#"{"rule": "tb", "key": ""}"#.into()), StatusCode::UNPROCESSABLE_ENTITY),
        (
            post(format!(r#"{{"rule": "tb", "key": "{long_key}"}}"#)),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (post(r#"{"rule": "tb"}"#.into()), StatusCode::UNPROCESSABLE_ENTITY),
        (
            post(r#"{"rule": "tb", "key": "k", "colour": 1}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (post(r#"{"rule": "nope", "key": "k"}"#.into()), StatusCode::NOT_FOUND),
        (post(r#"{"rule": "", "key": "k"}"#.into()), StatusCode::NOT_FOUND),
        (
            (
                "PUT",
                "/rules/a%20b".into(),
                Some(r#"{"algorithm": "gcra", "limit": 1, "period_ms": 1}"#.into()),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            (
                "PUT",
                format!("/rules/{}", "n".repeat(65)),
                Some(r#"{"algorithm": "gcra", "limit": 1, "period_ms": 1}"#.into()),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            (
                "PUT",
                "/rules/x".into(),
                Some(r#"{"algorithm": "gcra", "limit": 0, "period_ms": 1}"#.into()),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            (
                "PUT",
                "/rules/x".into(),
                Some(r#"{"algorithm": "gcra", "limit": 1, "period_ms": 0}"#.into()),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            (
                "PUT",
                "/rules/x".into(),
                Some(r#"{"algorithm": "gcra", "limit": 1, "period_ms": 99999999999999}"#.into()),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            (
                "PUT",
                "/rules/x".into(),
                Some(
                    r#"{"algorithm": "fixed_window", "limit": 1, "period_ms": 1, "burst": 2}"#
                        .into(),
                ),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            (
                "PUT",
                "/rules/x".into(),
                Some(r#"{"algorithm": "leaky", "limit": 1, "period_ms": 1}"#.into()),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            (
                "PUT",
                "/rules/x".into(),
                Some(r#"{"algorithm": "gcra", "limit": -5, "period_ms": 1}"#.into()),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (("PUT", "/rules/x".into(), Some("{".into())), StatusCode::BAD_REQUEST),
        (("GET", "/rules/nope".into(), None), StatusCode::NOT_FOUND),
        (("GET", "/rules/nope/stats".into(), None), StatusCode::NOT_FOUND),
        (("DELETE", "/rules/nope".into(), None), StatusCode::NOT_FOUND),
        (("GET", "/rules?limit=0".into(), None), StatusCode::UNPROCESSABLE_ENTITY),
        (("GET", "/rules?limit=257".into(), None), StatusCode::UNPROCESSABLE_ENTITY),
        (("GET", "/rules?limit=x".into(), None), StatusCode::BAD_REQUEST),
        (("GET", "/rules?cursor=forged".into(), None), StatusCode::BAD_REQUEST),
        (("GET", "/rules?page=2".into(), None), StatusCode::BAD_REQUEST),
    ];
    for ((method, uri, body), want) in cases {
        let r = call(&router, method, &uri, body.as_deref()).await;
        assert_eq!(r.status, want, "{method} {uri} {body:?}: {}", r.body);
    }
    // Nothing bad was stored.
    assert!(service.engine().rules().get("x").is_none());

    // A failing backend is a 503 problem, not a 500.
    let rules = RuleSet::from_toml_str(&one_rule("r", 1)).unwrap();
    let timed_out = UnavailableError::TimedOut { after: Duration::from_millis(500) };
    let failing = BackendConfig::Failing(timed_out.into());
    let engine = Arc::new(Engine::new(rules, failing, "test_checks_total").unwrap());
    let router = routed(&RateLimiterService::with_engine(engine, RateLimiterConfig::default()));
    assert_eq!(check(&router, "r", "k", 1).await.status, StatusCode::SERVICE_UNAVAILABLE);
}

// ---------------------------------------------------------------- Redis

fn unique_prefix() -> String {
    format!("girder:test:rl:{:016x}:", rand::random::<u64>())
}

/// A rules file holding `toml` in `dir`, and a service configuration that starts from
/// it on Redis at `url` under a fresh key prefix.
fn redis_service_config(
    dir: &tempfile::TempDir,
    url: &str,
    toml: &str,
) -> (std::path::PathBuf, RateLimiterConfig) {
    let path = dir.path().join("rules.toml");
    write(&path, toml);
    let config = RateLimiterConfig {
        rules_path: Some(path.clone()),
        redis_url: Some(url.to_owned()),
        key_prefix: unique_prefix(),
    };
    (path, config)
}

#[tokio::test]
async fn two_service_instances_sharing_redis_share_one_budget() {
    let Some(url) = require(Service::Redis, "two_service_instances_sharing_redis_share_one_budget")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // A ten-minute window: real Redis time cannot refill it during the test.
    let (path, config) = redis_service_config(
        &dir,
        &url,
        "[[rule]]\nname = \"shared\"\nalgorithm = \"token_bucket\"\nlimit = 10\nperiod_ms = 600000\n",
    );
    let clock: Arc<dyn Clock> = Arc::new(clock());
    let a = routed(&RateLimiterService::open(config.clone(), Arc::clone(&clock)).await.expect("a"));
    let b = routed(&RateLimiterService::open(config, Arc::clone(&clock)).await.expect("b"));
    let mut allowed = 0;
    for i in 0..30 {
        let router = if i % 2 == 0 { &a } else { &b };
        let r = check(router, "shared", "user:1", 1).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        allowed += u32::from(r.body["allowed"] == true);
    }
    assert_eq!(allowed, 10, "one budget across both instances");
    assert_eq!(check(&b, "shared", "user:2", 1).await.body["allowed"], true, "per key");

    // The middleware on Redis: two layers (two instances) share one budget too.
    write(
        &path,
        "[[rule]]\nname = \"mw\"\nalgorithm = \"fixed_window\"\nlimit = 3\nperiod_ms = 600000\nkey = \"user\"\n",
    );
    let layer_a =
        RateLimitLayer::from_file(&path, Some(&url), FailurePolicy::Closed, Arc::clone(&clock))
            .await
            .expect("layer a");
    let layer_b = RateLimitLayer::from_file(&path, Some(&url), FailurePolicy::Closed, clock)
        .await
        .expect("layer b");
    let user = format!("u{:x}", rand::random::<u64>());
    let headers = [("x-user-id", user.as_str())];
    let app_a = Router::new().route("/", get(|| async { "a" })).layer(layer_a);
    let app_b = Router::new().route("/", get(|| async { "b" })).layer(layer_b);
    let mut statuses = Vec::new();
    for i in 0..6 {
        let app = if i % 2 == 0 { &app_a } else { &app_b };
        statuses.push(send(app, "GET", "/", &headers, None).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
}

#[test]
fn the_openapi_document_lists_every_endpoint() {
    use utoipa::OpenApi;
    let doc = girder_ratelimiter::RateLimiterApi::openapi();
    let paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "/api/ratelimiter/check",
            "/api/ratelimiter/rules",
            "/api/ratelimiter/rules/{name}",
            "/api/ratelimiter/rules/{name}/stats"
        ]
    );
}

/// A TCP proxy to the Redis at `url` (see [`proxy`]).
async fn proxy_to_redis(url: &str) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let parsed = url::Url::parse(url).expect("redis url");
    proxy(format!("{}:{}", parsed.host_str().expect("host"), parsed.port().unwrap_or(6379))).await
}

/// A TCP proxy to `target` (`host:port`); aborting the returned task closes the
/// listener and every proxied connection, as if the server died.
async fn proxy(target: String) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        // Dropping the set (when this task is aborted) aborts every connection.
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            connections.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_redis_that_goes_away_fails_open_or_closed() {
    let Some(url) = require(Service::Redis, "a_redis_that_goes_away_fails_open_or_closed") else {
        return;
    };
    let (addr, proxy_task) = proxy_to_redis(&url).await;
    let proxy_url = format!("redis://{addr}/");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rules.toml");
    write(
        &path,
        "[[rule]]\nname = \"r\"\nalgorithm = \"fixed_window\"\nlimit = 100\nperiod_ms = 600000\nkey = \"user\"\n",
    );
    let clock: Arc<dyn Clock> = Arc::new(clock());
    let open =
        RateLimitLayer::from_file(&path, Some(&proxy_url), FailurePolicy::Open, Arc::clone(&clock))
            .await
            .expect("open layer");
    let closed = RateLimitLayer::from_file(&path, Some(&proxy_url), FailurePolicy::Closed, clock)
        .await
        .expect("closed layer");
    let (open_engine, closed_engine) = (Arc::clone(open.engine()), Arc::clone(closed.engine()));
    let app_open = Router::new().route("/", get(|| async { "ok" })).layer(open);
    let app_closed = Router::new().route("/", get(|| async { "ok" })).layer(closed);
    let user = format!("u{:x}", rand::random::<u64>());
    let headers = [("x-user-id", user.as_str())];
    for app in [&app_open, &app_closed] {
        let r = send(app, "GET", "/", &headers, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.header("ratelimit").is_some(), "decided by Redis through the proxy");
    }

    proxy_task.abort();
    let _ = proxy_task.await;
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let r = send(&app_open, "GET", "/", &headers, None).await;
        assert_eq!((r.status, r.header("ratelimit")), (StatusCode::OK, None), "fails open");
        let r = send(&app_closed, "GET", "/", &headers, None).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "fails closed");
    }
    // Each check is bounded by the Redis timeout (500 ms), not the reconnect back-off.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(open_engine.stats("r").unwrap().backend_failures, 3);
    assert_eq!(closed_engine.stats("r").unwrap().backend_failures, 3);
}

/// Rule edits made through one instance's API reach every instance sharing Redis:
/// at the next sync (the server polls every 250 ms; the test syncs by hand), at the
/// start of a later instance, and across a reload of the rules file. An edit Redis
/// refuses is applied nowhere.
#[tokio::test]
async fn rule_edits_reach_every_instance_sharing_redis() {
    let Some(url) = require(Service::Redis, "rule_edits_reach_every_instance_sharing_redis") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, config) = redis_service_config(
        &dir,
        &url,
        "[[rule]]\nname = \"from-file\"\nalgorithm = \"fixed_window\"\nlimit = 5\nperiod_ms = 1000\n",
    );
    let clock: Arc<dyn Clock> = Arc::new(clock());
    let a = RateLimiterService::open(config.clone(), Arc::clone(&clock)).await.expect("a");
    let b = RateLimiterService::open(config.clone(), Arc::clone(&clock)).await.expect("b");
    assert!(a.shares_rules() && b.shares_rules());
    let (api_a, api_b) = (routed(&a), routed(&b));
    let limit_of = |service: &RateLimiterService, name: &str| {
        service.engine().rules().get(name).map(|r| (r.limit.kind, r.limit.limit, r.limit.burst))
    };
    assert!(!b.sync_rules().await.expect("sync"), "nothing changed yet");

    // Created on A: A has it when it answers, B after its next sync.
    let body = r#"{"algorithm":"gcra","limit":7,"period_ms":1000,"burst":3}"#;
    let r = call(&api_a, "PUT", "/rules/shared", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(limit_of(&a, "shared"), Some((Kind::Gcra, 7, 3)));
    assert_eq!(limit_of(&b, "shared"), None);
    assert!(b.sync_rules().await.expect("sync"));
    assert_eq!(limit_of(&b, "shared"), Some((Kind::Gcra, 7, 3)));
    assert_eq!(check(&api_b, "shared", "k", 1).await.status, StatusCode::OK);

    // Replaced on B, seen by A.
    let body = r#"{"algorithm":"token_bucket","limit":9,"period_ms":1000}"#;
    let r = call(&api_b, "PUT", "/rules/shared", Some(body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(a.sync_rules().await.expect("sync"));
    assert_eq!(limit_of(&a, "shared"), Some((Kind::TokenBucket, 9, 9)));

    // A rule from the file, deleted on A, is gone on B too.
    let r = call(&api_a, "DELETE", "/rules/from-file", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(b.sync_rules().await.expect("sync"));
    assert_eq!(limit_of(&b, "from-file"), None);

    // A reload re-reads the file under the shared edits: the deletion and the
    // replacement stand, and a rule new in the file appears.
    write(
        &path,
        "[[rule]]\nname = \"from-file\"\nalgorithm = \"fixed_window\"\nlimit = 5\nperiod_ms = 1000\n\n\
         [[rule]]\nname = \"new-in-file\"\nalgorithm = \"sliding_log\"\nlimit = 2\nperiod_ms = 1000\n",
    );
    b.reload().expect("reload");
    assert_eq!(limit_of(&b, "from-file"), None);
    assert_eq!(limit_of(&b, "shared"), Some((Kind::TokenBucket, 9, 9)));
    assert_eq!(limit_of(&b, "new-in-file"), Some((Kind::SlidingLog, 2, 2)));

    // An instance started now applies every edit before it serves.
    let c = RateLimiterService::open(config.clone(), Arc::clone(&clock)).await.expect("c");
    assert_eq!(limit_of(&c, "shared"), Some((Kind::TokenBucket, 9, 9)));
    assert_eq!(limit_of(&c, "from-file"), None);

    // Redis gone: the edit is refused with a 503 and applied nowhere.
    a.sync_rules().await.expect("sync");
    let (addr, proxy_task) = proxy_to_redis(&url).await;
    let via_proxy = RateLimiterConfig { redis_url: Some(format!("redis://{addr}/")), ..config };
    let d = RateLimiterService::open(via_proxy, clock).await.expect("d");
    assert_eq!(limit_of(&d, "shared"), Some((Kind::TokenBucket, 9, 9)));
    proxy_task.abort();
    let _ = proxy_task.await;
    let body = r#"{"algorithm":"gcra","limit":1,"period_ms":1000}"#;
    let r = call(&routed(&d), "PUT", "/rules/refused", Some(body)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(limit_of(&d, "refused"), None);
    assert!(!a.sync_rules().await.expect("sync"), "nothing was shared");
    assert_eq!(limit_of(&a, "refused"), None);
}

#[tokio::test]
async fn rule_edits_need_an_operator() {
    let service =
        RateLimiterService::open(RateLimiterConfig::default(), Arc::new(ManualClock::new(0)))
            .await
            .expect("open");
    let router = routed(&service);
    let body = r#"{"algorithm":"token_bucket","limit":5,"period_ms":1000}"#;
    let anonymous = call_as(&router, "PUT", "/rules/r1", Some(body), None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers.get(header::WWW_AUTHENTICATE).is_some());
    let user = Some(bearer("alice", Role::User));
    let refused = call_as(&router, "PUT", "/rules/r1", Some(body), user.clone()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        call_as(&router, "DELETE", "/rules/r1", None, user).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(service.engine().rules().get("r1").is_none(), "a refused edit changes nothing");
    assert_eq!(call(&router, "PUT", "/rules/r1", Some(body)).await.status, StatusCode::CREATED);
    // Decisions stay open to every caller: the service is called by other programs.
    let checked =
        call_as(&router, "POST", "/check", Some(r#"{"rule":"r1","key":"k"}"#), None).await;
    assert_eq!(checked.status, StatusCode::OK);
}
