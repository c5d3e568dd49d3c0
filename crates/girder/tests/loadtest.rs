//! `girder loadtest` against real servers on 127.0.0.1:0: both pacing modes
//! account for every request, the bitly scenario really creates links, the
//! open loop measures from the intended send time, the uber scenario settles every
//! request without a double assignment, and bad flags exit cleanly.

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{Server, TestDb, app, client};
use girder::loadtest::{self, Config, LoadtestArgs, Report};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An axum server on an ephemeral loopback port, stopped and joined by `stop`.
struct Running {
    base: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    async fn start<S>(service: S) -> Self
    where
        S: tower::Service<
                axum::extract::Request,
                Response = axum::response::Response,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, axum::ServiceExt::into_make_service(service))
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Self { base, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task");
    }
}

/// Arguments for a one-second, no-warm-up run of `scenario` against `base`.
fn args(scenario: &str, base: &str) -> LoadtestArgs {
    LoadtestArgs {
        url: base.to_owned(),
        duration_secs: 1,
        warmup_secs: 0,
        ..LoadtestArgs::new(scenario)
    }
}

async fn run(args: LoadtestArgs) -> Report {
    let config = Config::try_from(args).expect("valid arguments");
    loadtest::run(&config).await.expect("run")
}

fn assert_accounted(report: &Report) {
    assert!(report.requests > 0, "{report}");
    assert_eq!(report.successes + report.errors, report.requests, "{report}");
    let by_status: u64 = report.errors_by_status.values().sum();
    let by_kind: u64 = report.errors_by_kind.values().sum();
    assert_eq!(by_status + by_kind, report.errors, "{report}");
    assert!(report.latency_us.p50 <= report.latency_us.p99, "{report}");
    assert!(report.latency_us.p99 <= report.latency_us.max, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_bitly_creates_links_and_counts_add_up() {
    let db = TestDb::sqlite();
    let (router, _systems) = app(&db).await;
    let server = Running::start(router).await;

    let report = run(LoadtestArgs {
        connections: Some(4),
        seed_links: Some(25),
        write_ratio: Some(0.5),
        zipf_s: Some(1.0),
        ..args("bitly", &server.base)
    })
    .await;
    assert_accounted(&report);
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.links_seeded, 25);

    // The links are really there, seeds and run-time shortens alike.
    let http = client();
    let (mut seeded, mut shortened, mut cursor) = (0, 0, None::<String>);
    loop {
        let mut url = format!("{}/api/bitly/urls?limit=100", server.base);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: serde_json::Value =
            http.get(url).send().await.expect("list").json().await.expect("json");
        for item in page["items"].as_array().expect("items") {
            let target = item["url"].as_str().expect("url");
            seeded += usize::from(target.starts_with("https://example.com/loadtest/seed/"));
            shortened += usize::from(target.starts_with("https://example.com/loadtest/run/"));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seeded, 25);
    assert!(shortened > 0, "half the run's requests shorten");
    let first = http.get(format!("{}/api/bitly/urls/0000000", server.base)).send().await;
    assert_eq!(first.expect("lookup").status(), reqwest::StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_get_sends_the_schedule_and_counts_add_up() {
    let router = Router::new().route("/healthz", get(|| async { "ok" }));
    let server = Running::start(router).await;
    let report = run(LoadtestArgs { rate: Some(200.0), ..args("get", &server.base) }).await;
    assert_accounted(&report);
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.requests + report.dropped, 200, "one second at 200/s: {report}");
    assert_eq!(report.mode, "open");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_status_and_by_transport_kind() {
    let router = Router::new();
    let server = Running::start(router).await;
    let report = run(LoadtestArgs {
        connections: Some(2),
        path: Some("/missing".into()),
        ..args("get", &server.base)
    })
    .await;
    assert_accounted(&report);
    assert_eq!(report.successes, 0);
    assert_eq!(report.errors_by_status.get(&404), Some(&report.requests), "{report}");
    let base = server.base.clone();
    server.stop().await;

    // Nothing listens on the port any more: every request is a connect error.
    let report = run(LoadtestArgs { rate: Some(50.0), ..args("get", &base) }).await;
    assert_accounted(&report);
    assert_eq!(report.errors_by_kind.get("connect"), Some(&report.requests), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_counts_from_the_intended_send_time() {
    // The workload: every response takes 50 ms of server time.
    let router = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            "slow"
        }),
    );
    let server = Running::start(router).await;
    // 40/s is due every 25 ms; one request in flight serves one per 50 ms, so
    // the backlog grows and a send-time clock would still read ~50 ms.
    let report = run(LoadtestArgs {
        rate: Some(40.0),
        max_in_flight: Some(1),
        path: Some("/slow".into()),
        ..args("get", &server.base)
    })
    .await;
    assert_accounted(&report);
    assert!(report.latency_us.p50 >= 50_000, "{report}");
    assert!(report.latency_us.p99 >= 250_000, "queueing behind the cap is latency: {report}");
    assert!(report.late > 0 && report.dropped > 0, "{report}");
    assert_eq!(report.requests + report.dropped, 40, "{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_prints_a_json_report() {
    let router = Router::new().route("/healthz", get(|| async { "ok" }));
    let server = Running::start(router).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_girder"))
        .args(["loadtest", "get", "--connections", "2", "--duration-secs", "1"])
        .args(["--warmup-secs", "0", "--json", "--url", &server.base])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run girder");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    let requests = report["requests"].as_u64().expect("requests");
    assert!(requests > 0);
    assert_eq!(report["successes"].as_u64(), Some(requests));
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(report["latency_us"][key].is_u64(), "{key}: {report}");
    }
    server.stop().await;
}

/// A tiny city against a real `girder serve` on SQLite with short offer and matching
/// timeouts: twice as many riders as drivers, so half the rides wait for a driver
/// to finish one; every request is matched or cancelled for want of a driver within
/// the bound, and the stored history has no driver on two rides at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uber_settles_every_request_without_double_assignment() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(
        dir.path(),
        db.url(),
        &["--uber-offer-timeout-ms", "2000", "--uber-match-timeout-ms", "10000"],
    );
    let report = loadtest::uber::run(&LoadtestArgs {
        url: server.base.clone(),
        duration_secs: 20,
        drivers: Some(20),
        requests: Some(40),
        database_url: Some(db.url().to_owned()),
        ..LoadtestArgs::new("uber")
    })
    .await
    .expect("the uber scenario runs");
    assert!(report.violations().is_empty(), "{:?}\n{report}", report.violations());
    assert_eq!(report.requested, 40, "{report}");
    assert_eq!(report.matched + report.no_driver, 40, "{report}");
    assert!(report.matched >= 20, "every driver takes at least one ride: {report}");
    assert_eq!(report.rides_in_history, 40, "{report}");
    assert_eq!(report.double_assignments, 0, "{report}");
    assert!(report.completed >= 20, "{report}");
    assert!(report.fixes > 0 && report.fixes_per_sec > 0.0, "{report}");
    assert!(report.match_p50_ms > 0.0 && report.match_p50_ms <= report.match_p99_ms, "{report}");
    drop(server);
}

#[test]
fn bad_flags_exit_non_zero_with_a_message() {
    let check = |flags: &[&str], want: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_girder"))
            .arg("loadtest")
            .args(flags)
            .output()
            .expect("run girder");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?} succeeded");
        assert!(stderr.contains(want), "{flags:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
    };
    check(&["get", "--connections", "0"], "--connections must be");
    check(&["get", "--connections", "-3"], "--connections must be");
    check(&["get", "--rate", "0"], "--rate must be");
    check(&["wrk", "--connections", "2"], "unknown scenario");
    check(&["get", "--url", "http//nope"], "--url");
    check(&["bitly", "--write-ratio", "2"], "--write-ratio must be within [0, 1]");
    check(&["get", "--duration-secs", "0"], "--duration-secs must be");
    check(&["get", "--duration-secs", "3601"], "--duration-secs must be");
    check(&["uber"], "needs --database-url");
    check(&["uber", "--database-url", "sqlite:x", "--drivers", "0"], "--drivers must be");
    check(&["uber", "--database-url", "sqlite:x", "--rate", "5"], "--rate does not apply");
    check(&["bitly", "--requests", "5"], "--requests does not apply");
}
