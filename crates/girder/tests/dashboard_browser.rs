//! The dashboard in a real browser: headless Chromium, driven over WebDriver by
//! chromedriver, shortens a URL through the Bit.ly page and follows the short
//! link, holds and buys a seat on the Ticketmaster seat map, orders from the GoPuff
//! inventory page, and bursts past a rule on the rate-limiter page. Skips loudly when
//! Chromium is not installed, fails under `CI=true`.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, TestDb};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver key under which an element reference is returned.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(profile: &std::path::Path) -> Self {
        let port =
            TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let http = reqwest::Client::new();
        let mut driver = Self { child, base, http, session: String::new() };
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let created = driver.call("POST", "/session", &caps).await;
        driver.session = created["sessionId"].as_str().expect("session id").to_owned();
        driver
    }

    async fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(body),
        };
        let reply: Value = request.send().await.expect("webdriver").json().await.expect("json");
        reply["value"].clone()
    }

    async fn session_call(&self, method: &str, path: &str, body: &Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body).await
    }

    async fn goto(&self, url: &str) {
        self.session_call("POST", "/url", &json!({ "url": url })).await;
    }

    /// Finds an element by CSS selector, waiting up to 10 s for it to appear
    /// (the page fills in asynchronously after fetches).
    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .session_call("POST", "/element", &json!({"using": "css selector", "value": css}))
                .await;
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no element matches {css}: {found}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.session_call("POST", &format!("/element/{id}/value"), &json!({ "text": text })).await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.session_call("POST", &format!("/element/{id}/click"), &json!({})).await;
    }

    async fn property(&self, css: &str, name: &str) -> Value {
        let id = self.find(css).await;
        self.session_call("GET", &format!("/element/{id}/property/{name}"), &Value::Null).await
    }

    async fn current_url(&self) -> String {
        self.session_call("GET", "/url", &Value::Null).await.as_str().unwrap_or_default().to_owned()
    }
}

/// A fresh `girder serve` on SQLite and a browser session, dropped (and killed)
/// together at the end of a test.
struct Page {
    driver: Driver,
    server: Server,
    _dirs: [tempfile::TempDir; 2],
    _db: TestDb,
}

impl Page {
    async fn open() -> Self {
        let db = TestDb::sqlite();
        let (data, profile) =
            (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("profile"));
        let server = Server::start(data.path(), db.url(), &[]);
        let driver = Driver::start(profile.path()).await;
        Self { driver, server, _dirs: [data, profile], _db: db }
    }
}

fn browser_available(test: &str) -> bool {
    if std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    let msg = format!(
        "{test}: {CHROMIUM} or {CHROMEDRIVER} missing (apt-get install chromium chromium-driver)"
    );
    assert!(!girder_core::services::in_ci(), "CI=true and {msg}");
    eprintln!("SKIPPED {msg}");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shorten_through_the_page_and_follow_the_link() {
    if !browser_available("shorten_through_the_page_and_follow_the_link") {
        return;
    }
    let page = Page::open().await;
    let (server, driver) = (&page.server, &page.driver);

    driver.goto(&format!("{}/dashboard/bitly", server.base)).await;
    // The destination is this server's own health check: the sandbox has no internet.
    let destination = format!("{}/healthz", server.base);
    driver.type_into("#url", &destination).await;
    driver.click("#submit").await;
    let short = driver.property("#short", "href").await;
    let short = short.as_str().expect("href").to_owned();
    assert!(short.starts_with(&server.base), "{short}");
    let code = short.rsplit('/').next().expect("code").to_owned();

    // The new link shows up in the recent-links table.
    driver.find(&format!("#links a[href='/{code}']")).await;

    // Following the short link lands on the destination.
    driver.goto(&short).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while driver.current_url().await != destination {
        assert!(Instant::now() < deadline, "browser ended at {}", driver.current_url().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = driver.property("body", "innerText").await;
    assert_eq!(body.as_str().map(str::trim), Some("ok"));
    driver.session_call("DELETE", "", &Value::Null).await;
}

/// The Ticketmaster page: create a demo event, pick a seat on the map, hold it and
/// pay; the map shows the seat held, then sold, and a hold made elsewhere (through
/// the API, as another fan on another instance would) appears without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_buy_a_seat_on_the_seat_map() {
    if !browser_available("hold_and_buy_a_seat_on_the_seat_map") {
        return;
    }
    let page = Page::open().await;
    let (server, driver) = (&page.server, &page.driver);

    driver.goto(&format!("{}/dashboard/ticketmaster", server.base)).await;
    driver.click("#demo").await;
    driver.click("button.seat.available[data-seat='A-1-1']").await;
    driver.find("button.seat.picked[data-seat='A-1-1']").await;
    driver.click("#reserve").await;
    driver.find("button.seat.held[data-seat='A-1-1']").await;
    driver.click("#pay").await;
    driver.find("button.seat.sold[data-seat='A-1-1']").await;
    let result = driver.property("#result", "innerText").await;
    assert!(result.as_str().is_some_and(|t| t.starts_with("Sold: A-1-1")), "{result}");

    // Another fan holds a seat through the API; the open page picks it up by polling.
    let http = reqwest::Client::new();
    let event = driver.property("#event", "value").await;
    let event = event.as_str().expect("event id");
    let someone_else: Value = http
        .post(format!("{}/api/auth/demo", server.base))
        .send()
        .await
        .expect("sign in")
        .json()
        .await
        .expect("token");
    let bearer = format!("Bearer {}", someone_else["token"].as_str().expect("token"));
    let held = http
        .post(format!("{}/api/ticketmaster/events/{event}/reservations", server.base))
        .header("authorization", bearer)
        .json(&json!({"seats": ["B-2-3"]}))
        .send()
        .await
        .expect("reserve");
    assert_eq!(held.status().as_u16(), 201);
    driver.find("button.seat.held[data-seat='B-2-3']").await;
    driver.session_call("DELETE", "", &Value::Null).await;
}

/// The GoPuff page: a demo centre's inventory table, and an order placed through the
/// form lowers the stock it shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_from_the_inventory_page() {
    if !browser_available("order_from_the_inventory_page") {
        return;
    }
    let page = Page::open().await;
    let (server, driver) = (&page.server, &page.driver);

    driver.goto(&format!("{}/dashboard/gopuff", server.base)).await;
    driver.click("#demo").await;
    driver.find("#stock tr[data-sku='soda'] td.num[data-quantity='20']").await;
    driver.type_into("#sku", "soda").await;
    driver.click("#order button").await;
    driver.find("#stock tr[data-sku='soda'] td.num[data-quantity='19']").await;
    let result = driver.property("#result", "innerText").await;
    assert!(result.as_str().is_some_and(|t| t.starts_with("Order ")), "{result}");
    driver.session_call("DELETE", "", &Value::Null).await;
}

/// The rate-limiter page: add the demo rule, send a burst through the form, and the
/// rule's row shows rejected decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_the_rate_limiter_page_shows_rejections() {
    if !browser_available("a_burst_on_the_rate_limiter_page_shows_rejections") {
        return;
    }
    let page = Page::open().await;
    let (server, driver) = (&page.server, &page.driver);

    driver.goto(&format!("{}/dashboard/ratelimiter", server.base)).await;
    driver.click("#demo").await;
    driver.find("#rules tr[data-rule='demo']").await;
    driver.click("#burst").await;
    // 20 checks against 5 per second: some are rejected, and the row counts them.
    driver.find("#rules tr[data-rule='demo'] td:nth-child(6):not([data-total='0'])").await;
    let result = driver.property("#result", "innerText").await;
    assert!(result.as_str().is_some_and(|t| t.contains("RateLimit:")), "{result}");
    driver.session_call("DELETE", "", &Value::Null).await;
}
