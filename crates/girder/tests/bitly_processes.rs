//! Bit.ly as real `girder serve` processes: several instances sharing one
//! PostgreSQL never hand out the same code, and a SIGKILL under load loses no
//! link that was acknowledged with 201.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{Server, TestDb, client};
use serde_json::json;

/// Shortens `url` on `base`; `Some(code)` on 201.
async fn shorten(http: &reqwest::Client, base: &str, url: &str) -> Option<String> {
    let reply =
        http.post(format!("{base}/api/bitly/urls")).json(&json!({"url": url})).send().await.ok()?;
    if reply.status() != reqwest::StatusCode::CREATED {
        return None;
    }
    let body: serde_json::Value = reply.json().await.ok()?;
    body["code"].as_str().map(str::to_owned)
}

async fn location(http: &reqwest::Client, base: &str, code: &str) -> Option<String> {
    let reply = http.get(format!("{base}/{code}")).send().await.ok()?;
    reply.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_postgres_never_duplicate_a_code() {
    let Some(db) = TestDb::postgres("two_instances_sharing_postgres_never_duplicate_a_code").await
    else {
        return;
    };
    let dirs = [tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir")];
    // Small leases force the instances to interleave on the shared counter.
    let servers: Vec<Server> =
        dirs.iter().map(|d| Server::start(d.path(), db.url(), &["--id-batch-size", "7"])).collect();
    let bases: Arc<Vec<String>> = Arc::new(servers.iter().map(|s| s.base.clone()).collect());
    let http = client();

    const CLIENTS: usize = 64;
    const PER_CLIENT: usize = 25;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (http, bases) = (http.clone(), Arc::clone(&bases));
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0..PER_CLIENT {
                let url = format!("https://example.com/{c}/{i}");
                let base = &bases[(c + i) % bases.len()];
                let code = shorten(&http, base, &url).await.expect("shorten answered 201");
                made.push((code, url));
            }
            made
        }));
    }
    let mut all: HashMap<String, String> = HashMap::new();
    for task in tasks {
        for (code, url) in task.await.expect("client task") {
            assert!(all.insert(code.clone(), url).is_none(), "code {code} issued twice");
        }
    }
    assert_eq!(all.len(), CLIENTS * PER_CLIENT);
    // Every code resolves to its own URL, through either instance.
    for (i, (code, url)) in all.iter().enumerate() {
        let base = &bases[i % bases.len()];
        assert_eq!(location(&http, base, code).await.as_deref(), Some(url.as_str()), "{code}");
    }
    drop(servers);
    db.drop_db().await;
}

/// Links acknowledged before the test kills the server.
const KILL_AFTER_ACKS: usize = 400;

/// Shortens from 16 clients until `stop`; returns every (code, url) answered 201.
/// `reached` fires once [`KILL_AFTER_ACKS`] links have been acknowledged.
async fn shorten_until(
    base: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    reached: Arc<tokio::sync::Notify>,
) -> Vec<(String, String)> {
    let http = client();
    let mut tasks = Vec::new();
    for c in 0..16 {
        let (http, base, stop, acked, reached) = (
            http.clone(),
            base.clone(),
            Arc::clone(&stop),
            Arc::clone(&acked),
            Arc::clone(&reached),
        );
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let url = format!("https://example.com/kill/{c}/{i}");
                match shorten(&http, &base, &url).await {
                    Some(code) => {
                        made.push((code, url));
                        if acked.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER_ACKS {
                            reached.notify_one();
                        }
                    }
                    // The server is gone: this client is done.
                    None => break,
                }
            }
            made
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_link() {
    for db in TestDb::all("sigkill_under_load_loses_no_acknowledged_link").await {
        let dir = tempfile::tempdir().expect("dir");
        let mut server = Server::start(dir.path(), db.url(), &["--id-batch-size", "50"]);
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let reached = Arc::new(tokio::sync::Notify::new());
        let load = tokio::spawn(shorten_until(
            server.base.clone(),
            Arc::clone(&stop),
            Arc::clone(&acked),
            Arc::clone(&reached),
        ));
        // Kill once a few hundred links were acknowledged, mid-stream. Bounded: if the
        // clients fail before that, the test fails instead of waiting forever.
        tokio::time::timeout(std::time::Duration::from_secs(120), reached.notified())
            .await
            .expect("400 links acknowledged within 120 s");
        server.kill();
        stop.store(true, Ordering::SeqCst);
        let before = load.await.expect("load");
        assert!(before.len() >= KILL_AFTER_ACKS);

        let server = Server::start(dir.path(), db.url(), &["--id-batch-size", "50"]);
        let http = client();
        for (code, url) in &before {
            assert_eq!(
                location(&http, &server.base, code).await.as_deref(),
                Some(url.as_str()),
                "{}: acknowledged code {code} lost after SIGKILL",
                db.engine()
            );
        }
        // The restarted instance leases past everything issued before the crash.
        let old: HashSet<&String> = before.iter().map(|(c, _)| c).collect();
        for i in 0..100 {
            let code = shorten(&http, &server.base, &format!("https://example.com/after/{i}"))
                .await
                .expect("201");
            assert!(!old.contains(&code), "{}: code {code} reissued after restart", db.engine());
        }
        drop(server);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_buffered_clicks() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    // A flush interval far longer than the test: only the shutdown flush can persist clicks.
    let mut server = Server::start(dir.path(), db.url(), &["--click-flush-interval-ms", "3600000"]);
    let http = client();
    let code = shorten(&http, &server.base, "https://example.com/clicked").await.expect("201");
    for _ in 0..5 {
        assert!(location(&http, &server.base, &code).await.is_some());
    }
    assert!(server.terminate().success(), "clean exit on SIGTERM");
    let server = Server::start(dir.path(), db.url(), &[]);
    let stats: serde_json::Value = http
        .get(format!("{}/api/bitly/urls/{code}/stats", server.base))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["clicks"], 5);
    assert_eq!(stats["clicks_buffered"], 0);
}
