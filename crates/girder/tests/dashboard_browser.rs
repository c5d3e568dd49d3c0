//! The dashboard in a real browser: headless Chromium, driven over WebDriver by
//! chromedriver through fantoccini, shortens a URL through the Bit.ly page and
//! follows the short link, holds and buys a seat on the Ticketmaster seat map and
//! sees another client's hold arrive over its event stream, orders from the GoPuff
//! inventory page, bursts past a rule on the rate-limiter page, fills the YouTube
//! Top-K table, counts clicks on the Ad Click Aggregator page and receives a comment
//! over the Live Comments stream. Skips loudly when Chromium is not installed,
//! fails under `CI=true`.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, TestDb};
use fantoccini::elements::Element;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a page may take to show an element: the pages fill in after their fetches.
const PAGE_WAIT: Duration = Duration::from_secs(10);

/// A chromedriver on a free loopback port, killed on drop.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Chromedriver {
    async fn start() -> Self {
        let port =
            TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let driver = Self { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    /// A new headless Chromium session with its profile in `profile`.
    async fn session(&self, profile: &Path) -> Client {
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
        let mut caps = Capabilities::new();
        caps.insert("browserName".to_owned(), json!("chrome"));
        caps.insert("goog:chromeOptions".to_owned(), json!({"binary": CHROMIUM, "args": args}));
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("webdriver session")
    }
}

/// A fresh `girder serve` on SQLite and a browser session, dropped (and killed)
/// together at the end of a test.
struct Page {
    client: Client,
    server: Server,
    _driver: Chromedriver,
    _dirs: [tempfile::TempDir; 2],
    _db: TestDb,
}

impl Page {
    async fn open() -> Self {
        let db = TestDb::sqlite();
        let (data, profile) =
            (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("profile"));
        let server = Server::start(data.path(), db.url(), &[]);
        let driver = Chromedriver::start().await;
        let client = driver.session(profile.path()).await;
        Self { client, server, _driver: driver, _dirs: [data, profile], _db: db }
    }

    async fn goto(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.server.base)).await.expect("goto");
    }

    /// Waits for the element `css` selects.
    async fn find(&self, css: &str) -> Element {
        let found = self.client.wait().at_most(PAGE_WAIT).for_element(Locator::Css(css)).await;
        found.unwrap_or_else(|e| panic!("no element matches {css}: {e}"))
    }

    /// Clicks the element `css` selects; if the page redrew it between the find and
    /// the click (a stale element), finds it again.
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            match self.find(css).await.click().await {
                Ok(_) => return,
                Err(e) => assert!(Instant::now() < deadline, "{css} never took a click: {e}"),
            }
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.find(css).await.send_keys(text).await.expect("type");
    }

    async fn prop(&self, css: &str, name: &str) -> String {
        let value = self.find(css).await.prop(name).await.expect("property");
        value.unwrap_or_else(|| panic!("{css} has no {name}"))
    }

    /// Waits until no element `css` selects has `text` in its text.
    async fn gone(&self, css: &str, text: &str) {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let mut present = false;
            for element in self.client.find_all(Locator::Css(css)).await.expect("find") {
                present |= element.text().await.is_ok_and(|t| t.contains(text));
            }
            if !present {
                return;
            }
            assert!(Instant::now() < deadline, "{css} still shows {text:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ends the browser session; chromedriver and the server die as the rest drops.
    async fn close(self) {
        self.client.close().await.expect("close session");
    }
}

fn browser_available(test: &str) -> bool {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
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
    let base = page.server.base.clone();

    page.goto("/dashboard/bitly").await;
    // The destination is this server's own health check: the sandbox has no internet.
    let destination = format!("{base}/healthz");
    page.type_into("#url", &destination).await;
    page.click("#submit").await;
    let short = page.prop("#short", "href").await;
    assert!(short.starts_with(&base), "{short}");
    let code = short.rsplit('/').next().expect("code");

    // The new link shows up in the recent-links table.
    page.find(&format!("#links a[href='/{code}']")).await;

    // Following the short link lands on the destination.
    page.client.goto(&short).await.expect("follow");
    let landing = destination.parse().expect("url");
    if let Err(e) = page.client.wait().at_most(PAGE_WAIT).for_url(&landing).await {
        panic!("browser ended at {} ({e})", page.client.current_url().await.expect("url"));
    }
    assert_eq!(page.prop("body", "innerText").await.trim(), "ok");
    page.close().await;
}

/// The Ticketmaster page: create a demo event, pick a seat on the map, hold it and
/// pay; the map shows the seat held, then sold. A hold made elsewhere (through the
/// API, as another fan on another instance would) reaches the open page over its
/// seat-map event stream: the button it drew turns held in place, and the page never
/// loads the map again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_buy_a_seat_on_the_seat_map() {
    if !browser_available("hold_and_buy_a_seat_on_the_seat_map") {
        return;
    }
    let page = Page::open().await;
    let base = &page.server.base;

    page.goto("/dashboard/ticketmaster").await;
    page.click("#demo").await;
    let xpath = "//span[@id='live'][. = 'live']";
    let found = page.client.wait().at_most(PAGE_WAIT).for_element(Locator::XPath(xpath)).await;
    found.unwrap_or_else(|e| panic!("the seat map's stream never opened: {e}"));
    page.click("button.seat.available[data-seat='A-1-1']").await;
    page.find("button.seat.picked[data-seat='A-1-1']").await;
    page.click("#reserve").await;
    page.find("button.seat.held[data-seat='A-1-1']").await;
    page.click("#pay").await;
    page.find("button.seat.sold[data-seat='A-1-1']").await;
    let result = page.prop("#result", "innerText").await;
    assert!(result.starts_with("Sold: A-1-1"), "{result}");

    // Another fan holds a seat through the API; the open page hears of it.
    let seat = page.find("button.seat.available[data-seat='B-2-3']").await;
    let http = reqwest::Client::new();
    let event = page.prop("#event", "value").await;
    let someone_else: Value = http
        .post(format!("{base}/api/auth/demo"))
        .send()
        .await
        .expect("sign in")
        .json()
        .await
        .expect("token");
    let bearer = format!("Bearer {}", someone_else["token"].as_str().expect("token"));
    let held = http
        .post(format!("{base}/api/ticketmaster/events/{event}/reservations"))
        .header("authorization", bearer)
        .json(&json!({"seats": ["B-2-3"]}))
        .send()
        .await
        .expect("reserve");
    assert_eq!(held.status().as_u16(), 201);
    // The same button element: a redrawn map would have made it stale.
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let class = seat.attr("class").await.expect("the button the page drew first");
        if class.as_deref().is_some_and(|c| c.split(' ').any(|c| c == "held")) {
            break;
        }
        assert!(Instant::now() < deadline, "B-2-3 never turned held: {class:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let loads = page
        .client
        .execute(
            "return performance.getEntriesByType('resource')\
               .filter((e) => new URL(e.name).pathname.endsWith('/seats')).length",
            vec![],
        )
        .await
        .expect("count the page's loads");
    assert_eq!(loads, json!(1), "the seat map was loaded once, then only streamed");
    page.close().await;
}

/// The GoPuff page: a demo centre's inventory table, and an order placed through the
/// form lowers the stock it shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_from_the_inventory_page() {
    if !browser_available("order_from_the_inventory_page") {
        return;
    }
    let page = Page::open().await;

    page.goto("/dashboard/gopuff").await;
    page.click("#demo").await;
    page.find("#stock tr[data-sku='soda'] td.num[data-quantity='20']").await;
    page.type_into("#sku", "soda").await;
    page.click("#order button").await;
    page.find("#stock tr[data-sku='soda'] td.num[data-quantity='19']").await;
    let result = page.prop("#result", "innerText").await;
    assert!(result.starts_with("Order "), "{result}");
    page.close().await;
}

/// The rate-limiter page: add the demo rule, send a burst through the form, and the
/// rule's row shows rejected decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_the_rate_limiter_page_shows_rejections() {
    if !browser_available("a_burst_on_the_rate_limiter_page_shows_rejections") {
        return;
    }
    let page = Page::open().await;

    page.goto("/dashboard/ratelimiter").await;
    page.click("#demo").await;
    page.find("#rules tr[data-rule='demo']").await;
    page.click("#burst").await;
    // 20 checks against 5 per second: some are rejected, and the row counts them.
    page.find("#rules tr[data-rule='demo'] td:nth-child(6):not([data-total='0'])").await;
    let result = page.prop("#result", "innerText").await;
    assert!(result.contains("RateLimit:"), "{result}");
    page.close().await;
}

/// The News Feed page: demo authors appear, following one brings their posts into the
/// feed (backfilled by the fan-out workers, marked `push`), an own post shows at the
/// top and leaves when deleted, and the queue panel shows the fan-out queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_post_and_delete_on_the_news_feed_page() {
    if !browser_available("follow_post_and_delete_on_the_news_feed_page") {
        return;
    }
    let page = Page::open().await;

    page.goto("/dashboard/newsfeed").await;
    page.click("#demo").await;
    page.click("#users tr[data-user^='demo-'] button").await;
    page.find("#feed tr[data-source='push']").await;
    page.type_into("#body", "hello from the browser").await;
    page.click("#post button").await;
    // The own post arrives through the fan-out workers, at the top.
    let xpath =
        "//tbody[@id='feed']/tr[1][@data-source='push'][contains(., 'hello from the browser')]";
    // The feed is redrawn while the post arrives: a row found may be replaced before
    // the click lands, so find and click again until one click holds.
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let found = page.client.wait().at_most(PAGE_WAIT).for_element(Locator::XPath(xpath)).await;
        let top = found.unwrap_or_else(|e| panic!("the post is not at the top of the feed: {e}"));
        let clicked = match top.find(Locator::Css("button")).await {
            Ok(button) => button.click().await,
            Err(e) => Err(e),
        };
        if clicked.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the delete button never took a click: {clicked:?}");
    }
    page.gone("#feed tr", "hello from the browser").await;
    let queue = page.prop("#q-threshold", "innerText").await;
    assert_eq!(queue, "1000", "the queue panel shows the push threshold");
    page.close().await;
}

/// The YouTube Top-K page: views sent through its form show in the live table with
/// their count, the generator's Zipf views follow, and the approximate mode shows the
/// merged summaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_the_generator_fill_the_top_k_page() {
    if !browser_available("views_and_the_generator_fill_the_top_k_page") {
        return;
    }
    let page = Page::open().await;

    page.goto("/dashboard/topk").await;
    page.type_into("#video", "browser-video").await;
    let times = page.find("#times").await;
    times.clear().await.expect("clear");
    times.send_keys("50").await.expect("type");
    page.click("#view button").await;
    // The views go through the log and the pipeline's next checkpoint.
    let row = "#top tr[data-video='browser-video'] td.views";
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let views = page.prop(row, "innerText").await;
        if views == "50" {
            break;
        }
        assert!(Instant::now() < deadline, "browser-video shows {views} views, not 50");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    page.click("#gen-start").await;
    page.find("#top tr[data-video^='vid-']").await;
    page.find("#mode").await.select_by_value("approx").await.expect("select approx");
    let xpath = "//span[@id='summary'][contains(., 'summaries merged')]";
    let found = page.client.wait().at_most(PAGE_WAIT).for_element(Locator::XPath(xpath)).await;
    found.unwrap_or_else(|e| panic!("the approximate mode's summary line never showed: {e}"));
    page.find("#top tr[data-video^='vid-'] td.error").await;
    page.click("#gen-stop").await;
    let xpath = "//span[@id='gen'][starts-with(., 'stopped')]";
    let found = page.client.wait().at_most(PAGE_WAIT).for_element(Locator::XPath(xpath)).await;
    found.unwrap_or_else(|e| panic!("the generator never showed as stopped: {e}"));
    page.close().await;
}

/// The Ad Click Aggregator page: an ad created there, impressions shown and each
/// clicked twice, and the per-minute chart and table count every impression once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_on_the_ad_clicks_page_are_counted_once() {
    if !browser_available("clicks_on_the_ad_clicks_page_are_counted_once") {
        return;
    }
    let page = Page::open().await;

    page.goto("/dashboard/adclicks").await;
    page.click("#new-ad button").await;
    let xpath = "//p[@id='result'][starts-with(., 'Created ad #')]";
    let found = page.client.wait().at_most(PAGE_WAIT).for_element(Locator::XPath(xpath)).await;
    found.unwrap_or_else(|e| panic!("the ad was never created: {e}"));
    let times = page.find("#times").await;
    times.clear().await.expect("clear");
    times.send_keys("6").await.expect("type");
    page.click("#show").await;
    let xpath = "//p[@id='result'][contains(., '6 first clicks, 6 repeats')]";
    let found = page.client.wait().at_most(PAGE_WAIT).for_element(Locator::XPath(xpath)).await;
    found.unwrap_or_else(|e| panic!("the clicks were not answered as first and repeat: {e}"));
    // The counts arrive through the log and the pipeline's checkpoints.
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let total = page.prop("#total", "innerText").await;
        if total == "6" {
            break;
        }
        assert!(Instant::now() < deadline, "the page shows {total} clicks, not 6");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One row and one bar per minute with clicks (the six may straddle a minute).
    page.find("#buckets tr td.clicks").await;
    page.find("#chart rect").await;
    page.close().await;
}

/// The Live Comments page: a comment posted through its form comes back over the
/// page's own event stream, and the page counts itself as a viewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_arrives_over_the_live_comments_stream() {
    if !browser_available("a_comment_arrives_over_the_live_comments_stream") {
        return;
    }
    let page = Page::open().await;

    page.goto("/dashboard/livecomments").await;
    let xpath = "//span[@id='state'][starts-with(., 'live')]";
    let found = page.client.wait().at_most(PAGE_WAIT).for_element(Locator::XPath(xpath)).await;
    found.unwrap_or_else(|e| panic!("the stream never opened: {e}"));
    page.type_into("#body", "hello from the browser").await;
    page.click("#post button").await;
    let xpath = "//ul[@id='comments']/li[contains(., 'hello from the browser')]";
    let found = page.client.wait().at_most(PAGE_WAIT).for_element(Locator::XPath(xpath)).await;
    found.unwrap_or_else(|e| panic!("the comment never arrived over the stream: {e}"));
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        if page.prop("#viewers", "innerText").await == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "the page does not count itself as a viewer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    page.close().await;
}

/// The WhatsApp page in two browser sessions (two users): one opens a chat with the
/// other and sends; the other receives it over its socket, which reads it, and the
/// sender's page shows the read receipt; the reply travels back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_sessions_chat_and_see_each_others_receipts() {
    if !browser_available("two_browser_sessions_chat_and_see_each_others_receipts") {
        return;
    }
    let ann = Page::open().await;
    let profile = tempfile::tempdir().expect("profile");
    let bob = ann._driver.session(profile.path()).await;
    let wait_for = |client: &Client, xpath: String, what: &'static str| {
        let client = client.clone();
        async move {
            let found = client.wait().at_most(PAGE_WAIT).for_element(Locator::XPath(&xpath)).await;
            found.unwrap_or_else(|e| panic!("{what}: {e}"))
        }
    };
    ann.goto("/dashboard/whatsapp").await;
    wait_for(&ann.client, "//span[@id='state'][.='online']".into(), "ann never came online").await;
    let ann_id = ann.prop("#me", "innerText").await;
    bob.goto(&format!("{}/dashboard/whatsapp", ann.server.base)).await.expect("goto");
    wait_for(&bob, "//span[@id='state'][.='online']".into(), "bob never came online").await;
    let bob_id = bob.find(Locator::Css("#me")).await.expect("me").text().await.expect("text");
    assert_ne!(ann_id, bob_id, "two sessions are two users");

    bob.find(Locator::Css("#peer")).await.expect("peer").send_keys(&ann_id).await.expect("type");
    bob.find(Locator::Css("#open button")).await.expect("open").click().await.expect("click");
    wait_for(&bob, "//div[@id='chats']/button".into(), "the chat never opened").await;
    bob.find(Locator::Css("#body"))
        .await
        .expect("body")
        .send_keys("hello ann")
        .await
        .expect("type");
    bob.find(Locator::Css("#send button")).await.expect("send").click().await.expect("click");

    let got = "//ul[@id='messages']/li[contains(., 'hello ann')]".to_owned();
    wait_for(&ann.client, got, "the message never reached the other session").await;
    let read = "//ul[@id='messages']/li[contains(., 'hello ann')][@data-status='read']".to_owned();
    wait_for(&bob, read, "the sender never saw the read receipt").await;

    ann.type_into("#body", "hi bob").await;
    ann.click("#send button").await;
    let reply = "//ul[@id='messages']/li[contains(., 'hi bob')]".to_owned();
    wait_for(&bob, reply, "the reply never arrived").await;
    bob.close().await.expect("close bob");
    ann.close().await;
}

/// The Tinder page: the profile form saves, demo profiles nearby fill the feed, and
/// liking one that likes the page's user back shows the match notice (from the
/// page's own event stream) and the match in the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_like_returned_on_the_tinder_page_is_announced_as_a_match() {
    if !browser_available("a_like_returned_on_the_tinder_page_is_announced_as_a_match") {
        return;
    }
    let page = Page::open().await;
    let wait_for = |xpath: &'static str, what: &'static str| {
        let client = page.client.clone();
        async move {
            let found = client.wait().at_most(PAGE_WAIT).for_element(Locator::XPath(xpath)).await;
            found.unwrap_or_else(|e| panic!("{what}: {e}"))
        }
    };

    page.goto("/dashboard/tinder").await;
    wait_for("//span[@id='state'][.='live']", "the event stream never opened").await;
    page.click("#save").await;
    wait_for("//p[@id='result'][.='Saved.']", "the profile was not saved").await;
    page.click("#demo").await;
    wait_for("//div[@id='feed']/div[@class='card']", "no demo profile reached the feed").await;
    let liker = page.find("#feed .card:has(.likes)").await;
    let name = liker.find(Locator::Css(".name")).await.expect("name").text().await.expect("text");
    let name = name.split(',').next().expect("a name").to_owned();
    liker.find(Locator::Css("button.like")).await.expect("like").click().await.expect("click");
    wait_for("//ul[@id='notices']/li[contains(., 'a match')]", "no match notice over the stream")
        .await;
    let notice = page.prop("#notices li", "innerText").await;
    assert!(notice.contains(&name), "the notice names {name}: {notice}");
    wait_for("//ul[@id='matches']/li", "the match is not listed").await;
    page.close().await;
}

/// The Uber page: simulated drivers appear on the SVG map, a requested ride is
/// matched to one of them (whose simulator accepts the offer and drives off), and
/// the ride's stream moves the state and the driver's dot on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ride_requested_on_the_uber_page_is_matched_and_followed() {
    if !browser_available("a_ride_requested_on_the_uber_page_is_matched_and_followed") {
        return;
    }
    let page = Page::open().await;
    let wait_for = |xpath: &'static str, what: &'static str| {
        let client = page.client.clone();
        async move {
            let found = client.wait().at_most(PAGE_WAIT).for_element(Locator::XPath(xpath)).await;
            found.unwrap_or_else(|e| panic!("{what}: {e}"))
        }
    };

    page.goto("/dashboard/uber").await;
    page.click("#start").await;
    wait_for("//span[@id='count'][number(.) >= 8]", "the 8 drivers never reached the map").await;
    wait_for("//*[local-name()='circle'][contains(@class, 'driver')]", "no driver dot").await;
    page.click("#request").await;
    wait_for(
        "//b[@id='state'][.='en_route' or .='in_progress' or .='completed']",
        "the ride was never matched and driven",
    )
    .await;
    wait_for("//*[local-name()='circle'][@class='mine']", "the driver's position never arrived")
        .await;
    page.close().await;
}
