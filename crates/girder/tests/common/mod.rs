//! Shared test plumbing: databases per backend, an in-process app, and real
//! `girder serve` processes for the tests that kill or multiply the server.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use girder::app::App;
use girder::app::{self, Systems};
use girder_core::Clock;
pub use girder_testkit::backends::TestDb;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// An in-process app on `db` with the given clock and extra `serve` flags.
pub async fn app_with(db: &TestDb, clock: Arc<dyn Clock>, flags: &[&str]) -> (App, Systems) {
    let mut args = vec![
        "--database-url",
        db.url(),
        "--public-url",
        "http://sho.rt",
        "--db-max-connections",
        "8",
    ];
    // Each in-process instance keeps its embedded data (queues) in a directory of its
    // own, kept for the rest of the test process.
    let data_dir = Box::leak(Box::new(tempfile::tempdir().expect("data dir")));
    let data_dir = data_dir.path().to_str().expect("utf-8 temp path").to_owned();
    if !flags.contains(&"--data-dir") {
        args.extend(["--data-dir", Box::leak(data_dir.into_boxed_str())]);
    }
    args.extend_from_slice(flags);
    let config = girder::config::from_args(&args, None).expect("valid settings");
    let systems = Systems::open(&config, clock).await.expect("open systems");
    (app::router(&systems, &config), systems)
}

pub async fn app(db: &TestDb) -> (App, Systems) {
    app_with(db, Arc::new(girder_core::SystemClock), &[]).await
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(app: &App, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    Reply { status, headers, body }
}

pub async fn get(app: &App, path: &str) -> Reply {
    send(app, Request::get(path).body(Body::empty()).expect("request")).await
}

pub async fn post_json(app: &App, path: &str, body: &serde_json::Value) -> Reply {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    send(app, request).await
}

/// A `girder serve` child process, killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts the real binary on a free port with `args` after `serve`, waiting
    /// until it answers `/healthz`.
    pub fn start(data_dir: &Path, database_url: &str, extra: &[&str]) -> Self {
        let port =
            TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let bind = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_girder"))
            .args(["serve", "--bind", &bind, "--database-url", database_url, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn girder");
        let server = Self { child, base: format!("http://{bind}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(&bind).is_ok() {
                return server;
            }
            assert!(Instant::now() < deadline, "girder did not start on {bind}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown hooks run.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client that does not follow redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

/// The running Bit.ly.
pub fn bitly(systems: &Systems) -> Arc<girder_bitly::Bitly> {
    systems.get::<girder_bitly::Bitly>().expect("Bit.ly is in the list")
}
