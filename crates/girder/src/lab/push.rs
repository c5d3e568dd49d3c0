//! `girder lab push` — real-time push measured on loopback, in this process:
//!
//! - **Transports for one update stream.** One topic gets an update every `gap`;
//!   clients follow it by short polling every `poll` (`gap / poll` = 12, the
//!   catalogue's 5-second polls of a once-a-minute stream, time-scaled), long polling,
//!   Server-Sent Events and a WebSocket. Per transport: HTTP requests made, bytes the
//!   server wrote (headers included, counted on its sockets), and the delay from an
//!   update's publish to its arrival. The catalogue claims long polling makes about
//!   12× fewer requests than short polling.
//! - **SSE fan-out** through the real Live Comments (SQLite): N viewers hold streams
//!   of one video; comments are posted and the delay from each post to each
//!   viewer's receipt is recorded (p50, p99, max), with this process's resident
//!   memory per open stream (server and client both live here, so it is an upper
//!   bound of the server's share). The file-descriptor limit is raised first.
//! - **WebSocket 1:1 relay** through the real WhatsApp (SQLite) against a bare axum
//!   relay that forwards each frame to its peer's socket and stores nothing, at the
//!   same offered rate from the same clients: delivered messages per second and the
//!   delay from each message's *intended* send time (open loop), so a stall counts
//!   against every message scheduled during it. Beside them, the floor under
//!   WhatsApp: its store's append rate alone.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll as TaskPoll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message as AxumWs, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use girder_core::{Clock, SystemClock};
use girder_http::identity::{Role, Tokens};
use girder_realtime::longpoll::{self, Poll};
use girder_realtime::sse::{SseConfig, stream};
use girder_realtime::{
    Event, Hub, HubConfig, Pattern, Position, SlowConsumer, SubscribeConfig, Topic,
};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{LabContext, Plot, Report, Series};
use crate::loadtest::push::{
    FrameFn, Pacing, RelayRun, SentAtFn, SseRun, drive_relay, drive_sse, histogram, micros_since,
    quantile_ms, whatsapp_frame, whatsapp_sent_at, whatsapp_socket,
};

// ---- a listener that counts the bytes the server writes ----

#[derive(Debug, Default)]
struct Wire {
    written: AtomicU64,
}

struct Counted {
    inner: TcpStream,
    wire: Arc<Wire>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> TaskPoll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> TaskPoll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let TaskPoll::Ready(Ok(n)) = polled {
            this.wire.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> TaskPoll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> TaskPoll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

struct CountingListener {
    inner: TcpListener,
    wire: Arc<Wire>,
}

impl axum::serve::Listener for CountingListener {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((stream, addr)) = self.inner.accept().await {
                let _ = stream.set_nodelay(true);
                return (Counted { inner: stream, wire: Arc::clone(&self.wire) }, addr);
            }
            // Out of descriptors or a reset before accept: try again shortly.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Serves `router` on a loopback port; the bytes it writes are counted in the
/// returned `Wire`.
async fn serve(
    router: Router,
) -> anyhow::Result<(SocketAddr, Arc<Wire>, tokio::task::JoinHandle<()>)> {
    let inner = TcpListener::bind("127.0.0.1:0").await?;
    let addr = inner.local_addr()?;
    let wire = Arc::new(Wire::default());
    let listener = CountingListener { inner, wire: Arc::clone(&wire) };
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((addr, wire, task))
}

// ---- part 1: four transports for one update stream ----

#[derive(Clone)]
struct Feed {
    hub: Hub,
    topic: Topic,
}

#[derive(serde::Deserialize)]
struct Since {
    since: Option<String>,
}

fn position(since: Option<&String>) -> Option<Position> {
    since.and_then(|s| Position::decode(s))
}

fn answer(poll: Poll, last: Option<Position>) -> Response {
    let last = last.map(|p| p.encode());
    match poll {
        Poll::Messages(messages) => {
            let items: Vec<serde_json::Value> = messages
                .iter()
                .map(|m| json!({"id": m.position.encode(), "data": String::from_utf8_lossy(&m.payload)}))
                .collect();
            axum::Json(json!({"items": items, "last": last})).into_response()
        }
        Poll::Reset { .. } => {
            axum::Json(json!({"items": [], "reset": true, "last": last})).into_response()
        }
    }
}

fn transport_router(feed: Feed) -> Router {
    Router::new()
        .route(
            "/short",
            get(|State(f): State<Feed>, Query(q): Query<Since>| async move {
                let last = f.hub.last_position(&f.topic);
                let since = position(q.since.as_ref()).or(last);
                match longpoll::poll(&f.hub, &f.topic, since, 100, Duration::ZERO).await {
                    Ok(p) => answer(p, last),
                    Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                }
            }),
        )
        .route(
            "/long",
            get(|State(f): State<Feed>, Query(q): Query<Since>| async move {
                let last = f.hub.last_position(&f.topic);
                let since = position(q.since.as_ref()).or(last);
                match longpoll::poll(&f.hub, &f.topic, since, 100, Duration::from_secs(30)).await {
                    Ok(p) => answer(p, last),
                    Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                }
            }),
        )
        .route(
            "/sse",
            get(|State(f): State<Feed>| async move {
                let config = SubscribeConfig { capacity: 256, policy: SlowConsumer::DropOldest };
                let Ok((sub, resume)) = f.hub.resume(&f.topic, None, config) else {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                };
                let body = stream(sub, resume, SseConfig::default())
                    .map(Ok::<_, std::convert::Infallible>);
                (
                    [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                    axum::body::Body::from_stream(body),
                )
                    .into_response()
            }),
        )
        .route(
            "/ws",
            get(|State(f): State<Feed>, upgrade: WebSocketUpgrade| async move {
                upgrade.on_upgrade(move |mut socket: WebSocket| async move {
                    let config =
                        SubscribeConfig { capacity: 256, policy: SlowConsumer::DropOldest };
                    let Ok(pattern) = Pattern::new(f.topic.as_str()) else { return };
                    let Ok(mut sub) = f.hub.subscribe(&pattern, config) else { return };
                    while let Ok(Event::Message(m)) = sub.recv().await {
                        let text = String::from_utf8_lossy(&m.payload).into_owned();
                        if socket.send(AxumWs::Text(text.into())).await.is_err() {
                            return;
                        }
                    }
                })
            }),
        )
        .with_state(feed)
}

/// What one transport cost over the run.
struct TransportRun {
    name: &'static str,
    requests: u64,
    bytes: u64,
    received: u64,
    latency: Histogram<u64>,
}

/// Updates carry the µs since `epoch` they were published at.
fn record(latency: &Mutex<Histogram<u64>>, epoch: Instant, data: &str) -> bool {
    let Ok(sent) = data.trim().parse::<u64>() else { return false };
    let _ = latency.lock().record(micros_since(epoch).saturating_sub(sent).max(1));
    true
}

#[allow(clippy::too_many_lines)]
async fn run_transport(
    name: &'static str,
    clients: usize,
    poll_every: Duration,
    gap: Duration,
    updates: u32,
) -> anyhow::Result<TransportRun> {
    let hub = Hub::new(HubConfig { history_per_topic: 1_000, ..HubConfig::default() })?;
    let topic = Topic::new("updates")?;
    let feed = Feed { hub: hub.clone(), topic: topic.clone() };
    let (addr, wire, server) = serve(transport_router(feed)).await?;
    let epoch = Instant::now();
    // A first message (not an update) so every poller starts from a kept position.
    hub.publish(&topic, "start")?;
    let requests = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(histogram()));
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, requests, received, latency, stop) = (
            http.clone(),
            Arc::clone(&requests),
            Arc::clone(&received),
            Arc::clone(&latency),
            Arc::clone(&stop),
        );
        let base = format!("http://{addr}");
        tasks.push(tokio::spawn(async move {
            let stopped = stop.notified();
            tokio::pin!(stopped);
            match name {
                "short polling" | "long polling" => {
                    let path = if name == "short polling" { "short" } else { "long" };
                    let mut since: Option<String> = None;
                    loop {
                        let url = match &since {
                            Some(s) => format!("{base}/{path}?since={s}"),
                            None => format!("{base}/{path}"),
                        };
                        requests.fetch_add(1, Ordering::Relaxed);
                        let reply = tokio::select! {
                            () = &mut stopped => return,
                            r = http.get(url).send() => r,
                        };
                        let Ok(reply) = reply else { return };
                        let Ok(body) = reply.json::<serde_json::Value>().await else { return };
                        for item in body["items"].as_array().into_iter().flatten() {
                            if record(&latency, epoch, item["data"].as_str().unwrap_or("")) {
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            since = item["id"].as_str().map(str::to_owned);
                        }
                        if since.is_none() {
                            // Nothing new yet: go on from the stream's end as the server
                            // sees it.
                            since = body["last"].as_str().map(str::to_owned);
                        }
                        if path == "short" {
                            tokio::select! {
                                () = &mut stopped => return,
                                () = tokio::time::sleep(poll_every) => {}
                            }
                        }
                    }
                }
                "SSE" => {
                    requests.fetch_add(1, Ordering::Relaxed);
                    let Ok(mut stream) = TcpStream::connect(addr).await else { return };
                    let request = format!("GET /sse HTTP/1.1\r\nhost: {addr}\r\n\r\n");
                    if tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let mut buf = vec![0u8; 8 << 10];
                    let mut text = String::new();
                    loop {
                        let n = tokio::select! {
                            () = &mut stopped => return,
                            n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf) => n,
                        };
                        let Ok(n) = n else { return };
                        if n == 0 {
                            return;
                        }
                        text.push_str(&String::from_utf8_lossy(&buf[..n]));
                        while let Some(end) = text.find("\n\n") {
                            let frame: String = text.drain(..end + 2).collect();
                            let is_message = !frame.contains("event:");
                            // Chunked encoding puts a size line before each chunk: only
                            // `data: ` lines are read.
                            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: "))
                                && is_message
                                && record(&latency, epoch, data)
                            {
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                _ => {
                    requests.fetch_add(1, Ordering::Relaxed);
                    let Ok(request) = format!("ws://{addr}/ws").into_client_request() else {
                        return;
                    };
                    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(request).await else {
                        return;
                    };
                    loop {
                        let frame = tokio::select! {
                            () = &mut stopped => return,
                            f = ws.next() => f,
                        };
                        match frame {
                            Some(Ok(Ws::Text(t))) => {
                                if record(&latency, epoch, t.as_str()) {
                                    received.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => return,
                        }
                    }
                }
            }
        }));
    }
    // Let every client connect and ask once before the first update.
    tokio::time::sleep(poll_every.max(Duration::from_millis(200))).await;
    for _ in 0..updates {
        tokio::time::sleep(gap).await;
        hub.publish(&topic, micros_since(epoch).to_string())?;
    }
    tokio::time::sleep(poll_every + Duration::from_millis(200)).await;
    stop.notify_waiters();
    for task in tasks {
        let _ = task.await;
    }
    server.abort();
    hub.close();
    let latency = latency.lock().clone();
    Ok(TransportRun {
        name,
        requests: requests.load(Ordering::Relaxed),
        bytes: wire.written.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        latency,
    })
}

// ---- part 2: SSE fan-out through Live Comments ----

async fn run_fanout(viewers: usize, comments: usize) -> anyhow::Result<SseRun> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("lc.db").display());
    let db = girder_sql::Db::connect(&url, girder_sql::PoolConfig::default()).await?;
    girder_sql::migrate::run(&db, girder_livecomments::migrations()).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let context = girder_system::Context::new(db.clone(), clock).with_data_dir(dir.path());
    let lc = girder_livecomments::LiveComments::open_with(
        &context,
        girder_livecomments::LiveCommentsConfig::new(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Its background work: the feed that publishes committed comments to the hub.
    let (trigger, shutdown) = girder_system::Shutdown::new();
    let background = tokio::spawn(girder_system::System::run(Arc::clone(&lc), shutdown));
    // A new feed starts from the newest commit once its consumer is open: comments
    // before that are history, not pushed. Post only once it reads.
    let opened = Instant::now();
    while !matches!(lc.feed_state(), girder_livecomments::FeedState::Live) {
        anyhow::ensure!(
            opened.elapsed() < Duration::from_secs(30),
            "the comment feed never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tokens = Tokens::new(&rand::random::<[u8; 32]>(), 3_600);
    let now = SystemClock.now_ms() / 1_000;
    let auth = format!("Bearer {}", tokens.issue("poster", Role::User, now).token);
    let (addr, _wire, server) = serve(lc.api_router().layer(tokens.layer())).await?;
    // Five comments a second, open loop.
    let run = drive_sse(
        addr,
        "",
        "lab",
        &auth,
        viewers,
        Pacing::Open { per_sec: 5.0 },
        comments as f64 / 5.0,
    )
    .await;
    server.abort();
    trigger.fire();
    let _ = background.await;
    db.close().await;
    run
}

// ---- part 3: WebSocket 1:1 relay, WhatsApp against a bare axum relay ----

type Peers = Arc<Mutex<HashMap<u64, tokio::sync::mpsc::Sender<String>>>>;

#[derive(serde::Deserialize)]
struct Who {
    id: u64,
}

/// Forwards `{"to": id, …}` text frames to that client's socket; stores nothing.
fn bare_relay() -> Router {
    let peers: Peers = Arc::new(Mutex::new(HashMap::new()));
    Router::new()
        .route(
            "/ws",
            get(|State(peers): State<Peers>, Query(who): Query<Who>, upgrade: WebSocketUpgrade| async move {
                upgrade.on_upgrade(move |socket: WebSocket| async move {
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1_024);
                    peers.lock().insert(who.id, tx);
                    let (mut sink, mut source) = socket.split();
                    let writer = tokio::spawn(async move {
                        while let Some(text) = rx.recv().await {
                            if sink.send(AxumWs::Text(text.into())).await.is_err() {
                                return;
                            }
                        }
                    });
                    while let Some(Ok(AxumWs::Text(text))) = source.next().await {
                        let to = serde_json::from_str::<serde_json::Value>(text.as_str())
                            .ok()
                            .and_then(|v| v["to"].as_u64());
                        let peer = to.and_then(|to| peers.lock().get(&to).cloned());
                        if let Some(peer) = peer {
                            let _ = peer.try_send(text.as_str().to_owned());
                        }
                    }
                    peers.lock().remove(&who.id);
                    writer.abort();
                })
            }),
        )
        .with_state(peers)
}

async fn run_whatsapp(
    pairs: usize,
    pacing: Pacing,
    seconds: f64,
) -> anyhow::Result<(RelayRun, f64)> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("wa.db").display());
    let db = girder_sql::Db::connect(&url, girder_sql::PoolConfig::default()).await?;
    girder_sql::migrate::run(&db, girder_whatsapp::migrations()).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let context = girder_system::Context::new(db.clone(), clock);
    let mut config = girder_whatsapp::WhatsAppConfig::new();
    config.registry.connections_max = pairs * 2 + 10;
    let wa = girder_whatsapp::WhatsApp::open_with(&context, config)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tokens = Tokens::new(&rand::random::<[u8; 32]>(), 3_600);
    let (addr, _wire, server) = serve(wa.api_router().layer(tokens.clone().layer())).await?;
    let mut chats = Vec::with_capacity(pairs);
    for p in 0..pairs {
        let (chat, _, _) = wa
            .create_chat(&format!("u{}", 2 * p), "direct", "", &[format!("u{}", 2 * p + 1)])
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chats.push(chat.id);
    }
    // The floor: the store's append rate alone, one writer after another.
    let floor = {
        let n = 2_000;
        let started = Instant::now();
        for k in 0..n {
            wa.store().append(&chats[0], "u0", "floor", &format!("floor-{k}"), "x", 0).await?;
        }
        f64::from(n) / started.elapsed().as_secs_f64()
    };
    let now = SystemClock.now_ms() / 1_000;
    let ws = format!("ws://{addr}/ws?device=lab");
    let mut sockets = Vec::with_capacity(pairs * 2);
    for i in 0..pairs * 2 {
        let auth = format!("Bearer {}", tokens.issue(&format!("u{i}"), Role::User, now).token);
        sockets.push(whatsapp_socket(&ws, &auth).await?);
    }
    let run =
        drive_relay(sockets, pacing, seconds, whatsapp_frame(Arc::new(chats)), whatsapp_sent_at())
            .await;
    server.abort();
    db.close().await;
    Ok((run, floor))
}

async fn run_bare(pairs: usize, pacing: Pacing, seconds: f64) -> anyhow::Result<RelayRun> {
    let (addr, _wire, server) = serve(bare_relay()).await?;
    let mut sockets = Vec::with_capacity(pairs * 2);
    for i in 0..pairs * 2 {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?id={i}")).await?;
        sockets.push(ws);
    }
    let frame: Arc<FrameFn> =
        Arc::new(|i, _k, sent| json!({"to": i ^ 1, "from": i, "at": sent}).to_string());
    let sent_at: Arc<SentAtFn> = Arc::new(|text| {
        let v = serde_json::from_str::<serde_json::Value>(text).ok()?;
        Some((usize::try_from(v["from"].as_u64()?).ok()?, v["at"].as_u64()?))
    });
    let run = drive_relay(sockets, pacing, seconds, frame, sent_at).await;
    server.abort();
    Ok(run)
}

#[allow(clippy::too_many_lines)]
pub(super) async fn run(ctx: &LabContext) -> anyhow::Result<Report> {
    let quick = ctx.options.quick;
    // Descriptors: every SSE stream and socket here is two (client and server end).
    let limit = crate::loadtest::push::raise_nofile().unwrap_or(0);
    // Part 1: time-scaled so gap / poll = 12, as 5-second polls of a once-a-minute stream.
    let (poll_every, updates, clients) = if quick {
        (Duration::from_millis(50), 4, 10)
    } else {
        (Duration::from_millis(250), 10, 100)
    };
    let gap = poll_every * 12;
    ctx.phase("transports", 4);
    let mut transports = Vec::new();
    for name in ["short polling", "long polling", "SSE", "WebSocket"] {
        transports.push(run_transport(name, clients, poll_every, gap, updates).await?);
        ctx.progress.inc(1);
    }
    // Part 2.
    // In one process every stream is two descriptors; 5,000 keeps under a 20,000 limit.
    // 10,000 viewers: `girder loadtest sse` against a separate `girder serve`.
    let sizes: &[usize] = if quick { &[10, 100] } else { &[100, 1_000, 5_000] };
    let comments = if quick { 5 } else { 20 };
    ctx.phase("SSE fan-out", sizes.len() as u64);
    let mut fanouts = Vec::new();
    for &n in sizes {
        fanouts.push(run_fanout(n, comments).await?);
        ctx.progress.inc(1);
    }
    // Part 3.
    let (pairs, per_client, seconds) = if quick { (25, 2.0, 3.0) } else { (2_500, 0.5, 20.0) };
    let pacing = Pacing::Open { per_sec: per_client * (pairs * 2) as f64 };
    ctx.phase("WebSocket relay", 2);
    let bare = run_bare(pairs, pacing, seconds).await?;
    ctx.progress.inc(1);
    let (whatsapp, floor) = run_whatsapp(pairs, pacing, seconds).await?;
    ctx.progress.inc(1);

    let columns = [
        "measurement",
        "clients",
        "requests",
        "bytes written",
        "received",
        "p50 ms",
        "p99 ms",
        "max ms",
        "note",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut rows = Vec::new();
    let expected = u64::from(updates) * clients as u64;
    for t in &transports {
        rows.push(vec![
            t.name.to_owned(),
            clients.to_string(),
            t.requests.to_string(),
            t.bytes.to_string(),
            format!("{}/{expected}", t.received),
            format!("{:.1}", quantile_ms(&t.latency, 0.5)),
            format!("{:.1}", quantile_ms(&t.latency, 0.99)),
            format!("{:.1}", t.latency.max() as f64 / 1_000.0),
            format!("{} updates {} ms apart", updates, gap.as_millis()),
        ]);
    }
    for f in &fanouts {
        rows.push(vec![
            "SSE fan-out (Live Comments)".to_owned(),
            f.viewers.to_string(),
            String::new(),
            String::new(),
            format!("{} missing", f.missing),
            format!("{:.1}", quantile_ms(&f.latency, 0.5)),
            format!("{:.1}", quantile_ms(&f.latency, 0.99)),
            format!("{:.1}", f.latency.max() as f64 / 1_000.0),
            f.bytes_per_stream.map_or(String::new(), |b| {
                format!("{:.1} KiB resident per open stream", b / 1_024.0)
            }),
        ]);
    }
    for (name, r) in [("bare axum relay", &bare), ("WhatsApp (stored, SQLite)", &whatsapp)] {
        rows.push(vec![
            format!("WebSocket 1:1: {name}"),
            (pairs * 2).to_string(),
            String::new(),
            String::new(),
            format!("{}/{} ({:.0}/s)", r.delivered, r.offered, r.delivered as f64 / r.seconds),
            format!("{:.1}", quantile_ms(&r.latency, 0.5)),
            format!("{:.1}", quantile_ms(&r.latency, 0.99)),
            format!("{:.1}", r.latency.max() as f64 / 1_000.0),
            if name.starts_with("WhatsApp") {
                format!("floor: its store appends {floor:.0}/s alone")
            } else {
                String::new()
            },
        ]);
    }
    let short = transports[0].requests as f64;
    let long = transports[1].requests.max(1) as f64;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let wa_rate = whatsapp.delivered as f64 / whatsapp.seconds;
    let bare_rate = bare.delivered as f64 / bare.seconds;
    let mut findings = vec![
        format!(
            "Short polling every {} ms made {:.1}× the requests of long polling for updates {} ms apart (the catalogue's claim: about 12×).",
            poll_every.as_millis(),
            short / long,
            gap.as_millis()
        ),
        format!(
            "Bytes written: short polling {:.1}×, long polling {:.1}× of SSE's; SSE and WebSocket hold one connection each.",
            ratio(transports[0].bytes as f64, transports[2].bytes as f64),
            ratio(transports[1].bytes as f64, transports[2].bytes as f64)
        ),
    ];
    if let Some(f) = fanouts.last() {
        findings.push(format!(
            "{} SSE viewers: a comment reached them with p99 {:.1} ms (target at 10,000: ≤ 250 ms), {} deliveries missing.",
            f.viewers,
            quantile_ms(&f.latency, 0.99),
            f.missing
        ));
    }
    findings.push(format!(
        "WebSocket 1:1 over {} clients at {per_client} msg/s each: WhatsApp delivered {:.2}× the bare relay's rate, p99 {:.1} ms against {:.1} ms (target ≥ 0.7×); its store alone appends {floor:.0}/s.",
        pairs * 2,
        ratio(wa_rate, bare_rate),
        quantile_ms(&whatsapp.latency, 0.99),
        quantile_ms(&bare.latency, 0.99)
    ));
    let plot = Plot {
        title: "SSE fan-out delay against viewers (Live Comments)".to_owned(),
        x_label: "viewers".to_owned(),
        y_label: "delay from post, ms".to_owned(),
        series: vec![
            Series {
                name: "p50".to_owned(),
                points: fanouts
                    .iter()
                    .map(|f| (f.viewers as f64, quantile_ms(&f.latency, 0.5)))
                    .collect(),
            },
            Series {
                name: "p99".to_owned(),
                points: fanouts
                    .iter()
                    .map(|f| (f.viewers as f64, quantile_ms(&f.latency, 0.99)))
                    .collect(),
            },
        ],
        log_x: false,
        log_y: false,
    };
    Ok(Report {
        experiment: "push".to_owned(),
        ran_at: super::now_rfc3339(),
        parameters: json!({
            "quick": quick,
            "nofile_limit": limit,
            "transport_clients": clients,
            "poll_ms": poll_every.as_millis() as u64,
            "update_gap_ms": gap.as_millis() as u64,
            "updates": updates,
            "fanout_viewers": sizes,
            "comments": comments,
            "relay_pairs": pairs,
            "relay_msgs_per_client_per_sec": per_client,
            "relay_seconds": seconds,
        }),
        columns,
        rows,
        plot: Some(plot),
        findings,
        more_plots: Vec::new(),
    })
}
