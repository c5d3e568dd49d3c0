//! Push scenarios of `girder loadtest`: `sse` holds N Server-Sent Event streams of
//! one Live Comments video and posts comments; `ws` connects N WhatsApp devices in
//! pairs, each pair sharing a direct chat, and sends between them. Both report the
//! delay from a message's send time to each arrival.
//!
//! **Pacing.** With `--rate R` (open loop) message `i` is due at `start + i / R`
//! whatever happened before, and its delay counts from that *intended* time, so a
//! stall shows in every message scheduled during it. Without it (closed loop), the
//! next message goes once the previous arrived everywhere it should (`sse`: at every
//! stream; `ws`: at the pair's other device), and delays count from the actual send.
//!
//! `girder lab push` drives the same clients against in-process servers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::LoadtestArgs;

/// A client WebSocket.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How messages are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Messages due at fixed times, `per_sec` in all; delay from the intended time.
    Open {
        /// Messages per second, over every sender.
        per_sec: f64,
    },
    /// The next message once the previous arrived; delay from the actual send.
    Closed,
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

pub(crate) fn micros_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1_000.0
}

/// Raises this process's file-descriptor limit for thousands of sockets (each
/// in-process connection is two): to 65,536 where allowed (root), else to the hard
/// limit. Returns the soft limit now.
pub fn raise_nofile() -> std::io::Result<u64> {
    const WANTED: u64 = 65_536;
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if soft >= WANTED {
        return Ok(soft);
    }
    if rlimit::setrlimit(rlimit::Resource::NOFILE, WANTED, WANTED.max(hard)).is_ok() {
        return Ok(WANTED);
    }
    rlimit::increase_nofile_limit(u64::MAX)
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1_024)
}

/// What an SSE fan-out run saw.
#[derive(Debug, Clone)]
pub struct SseRun {
    /// Streams that opened.
    pub viewers: usize,
    /// Comments posted.
    pub posted: u64,
    /// Delay from each comment's (intended) post to each stream's receipt, µs.
    pub latency: Histogram<u64>,
    /// Receipts that did not arrive within 30 s of the last post.
    pub missing: u64,
    /// This process's resident memory per open stream, bytes.
    pub bytes_per_stream: Option<f64>,
}

/// Holds `viewers` SSE streams of `{prefix}/videos/{video}/stream` at `addr` and
/// posts comments there as `auth` for `seconds`, paced by `pacing`.
///
/// # Errors
/// A post failed.
#[allow(clippy::too_many_lines)]
pub async fn drive_sse(
    addr: SocketAddr,
    prefix: &str,
    video: &str,
    auth: &str,
    viewers: usize,
    pacing: Pacing,
    seconds: f64,
) -> anyhow::Result<SseRun> {
    let before = resident_bytes();
    let epoch = Instant::now();
    let latency = Arc::new(Mutex::new(histogram()));
    let received = Arc::new(AtomicU64::new(0));
    // Receipts of the comment in flight (closed loop).
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(viewers.max(1));
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::with_capacity(viewers);
    let path = format!("{prefix}/videos/{video}/stream");
    // One connection per viewer, as browsers hold them.
    for _ in 0..viewers {
        let (ready, latency, received, stop, got, path) = (
            ready_tx.clone(),
            Arc::clone(&latency),
            Arc::clone(&received),
            Arc::clone(&stop),
            got_tx.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let stopped = stop.notified();
            tokio::pin!(stopped);
            let Ok(mut stream) = TcpStream::connect(addr).await else { return };
            let request =
                format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n");
            if tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 16 << 10];
            let mut text = String::new();
            let mut said_ready = false;
            loop {
                let n = tokio::select! {
                    () = &mut stopped => return,
                    n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf) => n,
                };
                let Ok(n) = n else { return };
                if n == 0 {
                    return;
                }
                let at = micros_since(epoch);
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                if !said_ready && text.contains("event: resume") {
                    said_ready = true;
                    let _ = ready.send(()).await;
                }
                while let Some(end) = text.find("\n\n") {
                    let frame: String = text.drain(..end + 2).collect();
                    if !frame.contains("event: comment") {
                        continue;
                    }
                    let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    let Ok(comment) = serde_json::from_str::<serde_json::Value>(data) else {
                        continue;
                    };
                    // Bodies read "load <i> <sent µs>".
                    let body = comment["body"].as_str().unwrap_or("");
                    let mut words = body.split(' ').skip(1);
                    let (Some(i), Some(sent)) = (words.next(), words.next()) else { continue };
                    let (Ok(i), Ok(sent)) = (i.parse::<u64>(), sent.parse::<u64>()) else {
                        continue;
                    };
                    let _ = latency.lock().record(at.saturating_sub(sent).max(1));
                    received.fetch_add(1, Ordering::Relaxed);
                    let _ = got.send(i);
                }
            }
        }));
    }
    drop((ready_tx, got_tx));
    let mut ready = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready < viewers && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), ready_rx.recv()).await {
            Ok(Some(())) => ready += 1,
            Ok(None) => break,
            Err(_) => {}
        }
    }
    let after = resident_bytes();
    let http = reqwest::Client::new();
    let post_url = format!("http://{addr}{prefix}/videos/{video}/comments");
    let start = micros_since(epoch);
    let end = start + (seconds * 1e6) as u64;
    let mut posted = 0u64;
    let mut counts: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    loop {
        let due = match pacing {
            Pacing::Open { per_sec } => start + (posted as f64 * 1e6 / per_sec) as u64,
            Pacing::Closed => micros_since(epoch),
        };
        if due >= end {
            break;
        }
        let now = micros_since(epoch);
        if due > now {
            tokio::time::sleep(Duration::from_micros(due - now)).await;
        }
        let sent = match pacing {
            Pacing::Open { .. } => due,
            Pacing::Closed => micros_since(epoch),
        };
        let reply = http
            .post(&post_url)
            .header("authorization", auth)
            .json(&json!({"body": format!("load {posted} {sent}")}))
            .send()
            .await?;
        anyhow::ensure!(reply.status().is_success(), "posting a comment: {}", reply.status());
        posted += 1;
        if pacing == Pacing::Closed {
            // Wait until every stream has this one (or 5 s).
            let wait = Instant::now() + Duration::from_secs(5);
            while counts.get(&(posted - 1)).copied().unwrap_or(0) < ready && Instant::now() < wait {
                match tokio::time::timeout(Duration::from_millis(100), got_rx.recv()).await {
                    Ok(Some(i)) => *counts.entry(i).or_insert(0) += 1,
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
            counts.remove(&(posted - 1));
        }
    }
    let expected = posted * ready as u64;
    let wait = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < wait {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.notify_waiters();
    for task in tasks {
        let _ = task.await;
    }
    let bytes_per_stream = match (before, after) {
        (Some(b), Some(a)) if ready > 0 => Some(a.saturating_sub(b) as f64 / ready as f64),
        _ => None,
    };
    let latency = latency.lock().clone();
    Ok(SseRun {
        viewers: ready,
        posted,
        latency,
        missing: expected.saturating_sub(received.load(Ordering::Relaxed)),
        bytes_per_stream,
    })
}

/// What a WebSocket relay run saw.
#[derive(Debug, Clone)]
pub struct RelayRun {
    /// Messages sent.
    pub offered: u64,
    /// Messages that reached the other device of their pair.
    pub delivered: u64,
    /// The run's length, s.
    pub seconds: f64,
    /// Delay from each message's (intended) send to its arrival, µs.
    pub latency: Histogram<u64>,
}

/// Client `i`'s frame `k`, carrying its send time in µs.
pub(crate) type FrameFn = dyn Fn(usize, u64, u64) -> String + Send + Sync;
/// A received text frame's sender and send time, for frames that are messages.
pub(crate) type SentAtFn = dyn Fn(&str) -> Option<(usize, u64)> + Send + Sync;

/// `sockets.len() / 2` pairs (clients `2p` and `2p + 1`); each client sends to its
/// peer for `seconds`, paced by `pacing` (an open-loop rate is over all clients).
pub(crate) async fn drive_relay(
    sockets: Vec<Socket>,
    pacing: Pacing,
    seconds: f64,
    frame: Arc<FrameFn>,
    sent_at: Arc<SentAtFn>,
) -> RelayRun {
    let clients = sockets.len();
    let epoch = Instant::now();
    let latency = Arc::new(Mutex::new(histogram()));
    let delivered = Arc::new(AtomicU64::new(0));
    let offered = Arc::new(AtomicU64::new(0));
    let end = Duration::from_secs_f64(seconds);
    let interval = match pacing {
        Pacing::Open { per_sec } => Some(Duration::from_secs_f64(clients as f64 / per_sec)),
        Pacing::Closed => None,
    };
    // Closed loop: client i may send again once its peer received its last message.
    let turns: Arc<Vec<tokio::sync::Notify>> =
        Arc::new((0..clients).map(|_| tokio::sync::Notify::new()).collect());
    let mut tasks = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let (frame, sent_at, latency, delivered, offered, turns) = (
            Arc::clone(&frame),
            Arc::clone(&sent_at),
            Arc::clone(&latency),
            Arc::clone(&delivered),
            Arc::clone(&offered),
            Arc::clone(&turns),
        );
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut source) = socket.split();
            let reader = {
                let turns = Arc::clone(&turns);
                tokio::spawn(async move {
                    while let Some(Ok(message)) = source.next().await {
                        // A message of the peer's (a sender's own copy is skipped).
                        if let Ws::Text(text) = message
                            && let Some((from, sent)) = sent_at(text.as_str())
                            && from != i
                        {
                            let _ = latency
                                .lock()
                                .record(micros_since(epoch).saturating_sub(sent).max(1));
                            delivered.fetch_add(1, Ordering::Relaxed);
                            // The peer's message arrived here: the peer may go on.
                            turns[i ^ 1].notify_one();
                        }
                    }
                })
            };
            let mut k = 0u64;
            loop {
                let intended = match interval {
                    Some(interval) => {
                        // Spread clients over the interval.
                        let offset = interval.mul_f64((i as f64 * 0.618_034) % 1.0);
                        offset + interval.mul_f64(k as f64)
                    }
                    None => epoch.elapsed(),
                };
                if intended >= end {
                    break;
                }
                if interval.is_some() {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(epoch + intended))
                        .await;
                }
                let sent = match interval {
                    Some(_) => u64::try_from(intended.as_micros()).unwrap_or(u64::MAX),
                    None => micros_since(epoch),
                };
                offered.fetch_add(1, Ordering::Relaxed);
                if sink.send(Ws::text(frame(i, k, sent))).await.is_err() {
                    break;
                }
                k += 1;
                if interval.is_none() {
                    let left = end.saturating_sub(epoch.elapsed());
                    if tokio::time::timeout(left.min(Duration::from_secs(5)), turns[i].notified())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
            // Late arrivals still count, up to five seconds after the window.
            tokio::time::sleep(Duration::from_secs(5)).await;
            reader.abort();
            let _ = sink.close().await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let latency = latency.lock().clone();
    RelayRun {
        offered: offered.load(Ordering::Relaxed),
        delivered: delivered.load(Ordering::Relaxed),
        seconds,
        latency,
    }
}

/// Connects to WhatsApp's socket at `url` as `auth` and reads up to `synced`.
///
/// # Errors
/// The upgrade failed.
pub(crate) async fn whatsapp_socket(url: &str, auth: &str) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("authorization", auth.parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    while let Some(Ok(m)) = ws.next().await {
        if matches!(&m, Ws::Text(t) if t.as_str().contains("\"synced\"")) {
            break;
        }
    }
    Ok(ws)
}

/// A WhatsApp `send` of client `i` to its pair's chat; the body is `i` and the send
/// time.
pub(crate) fn whatsapp_frame(chats: Arc<Vec<String>>) -> Arc<FrameFn> {
    Arc::new(move |i, k, sent| {
        json!({"type": "send", "chat": chats[i / 2], "client_id": format!("{k}"), "body": format!("{i} {sent}")})
            .to_string()
    })
}

/// A WhatsApp `message` frame's sender index and send time.
pub(crate) fn whatsapp_sent_at() -> Arc<SentAtFn> {
    Arc::new(|text| {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        (v["type"] == "message").then_some(())?;
        let (from, sent) = v["body"].as_str()?.split_once(' ')?;
        Some((from.parse().ok()?, sent.parse().ok()?))
    })
}

// ---- the command line ----

/// A push scenario's report.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// `sse` or `ws`.
    pub scenario: String,
    /// Streams or sockets.
    pub clients: usize,
    /// `open` (with the rate) or `closed`.
    pub pacing: String,
    /// Messages sent.
    pub sent: u64,
    /// Arrivals counted.
    pub delivered: u64,
    /// Arrivals expected.
    pub expected: u64,
    /// Delay percentiles, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Run length, s.
    pub seconds: f64,
}

impl std::fmt::Display for PushReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "scenario {} · {} clients · {} loop · {:.0} s",
            self.scenario, self.clients, self.pacing, self.seconds
        )?;
        writeln!(
            f,
            "sent {} · delivered {}/{} ({:.0}/s)",
            self.sent,
            self.delivered,
            self.expected,
            self.delivered as f64 / self.seconds
        )?;
        writeln!(
            f,
            "delay p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms",
            self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// Whether `scenario` is one of these.
#[must_use]
pub fn is_push(scenario: &str) -> bool {
    matches!(scenario, "sse" | "ws")
}

pub(crate) async fn demo_token(
    http: &reqwest::Client,
    base: &str,
) -> anyhow::Result<(String, String)> {
    let reply = http.post(format!("{base}/api/auth/demo")).send().await?;
    anyhow::ensure!(reply.status().is_success(), "POST /api/auth/demo: {}", reply.status());
    let t: serde_json::Value = reply.json().await?;
    let user = t["user"].as_str().unwrap_or_default().to_owned();
    Ok((user, format!("Bearer {}", t["token"].as_str().unwrap_or_default())))
}

/// Runs `sse` or `ws` against the server at `args.url`: `--connections` streams or
/// sockets (default 100), `--rate` for the open loop (messages per second in all),
/// `--duration-secs`, `--path` the video for `sse` (default `loadtest`).
///
/// # Errors
/// A flag is out of range, or the server refused sign-in, a chat or a connection.
pub async fn run(args: &LoadtestArgs) -> anyhow::Result<PushReport> {
    let base = args.url.trim_end_matches('/').to_owned();
    let addr: SocketAddr = tokio::net::lookup_host(base.trim_start_matches("http://"))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--url {base:?} resolves to nothing"))?;
    let clients = args.connections.unwrap_or(100);
    anyhow::ensure!(
        (1..=20_000).contains(&clients),
        "--connections must be 1..=20000 for {}",
        args.scenario
    );
    let clients = clients as usize;
    let seconds = args.duration_secs;
    anyhow::ensure!((1..=3_600).contains(&seconds), "--duration-secs must be 1..=3600");
    let pacing = match args.rate {
        Some(r) if r > 0.0 && r <= 1_000_000.0 => Pacing::Open { per_sec: r },
        Some(r) => anyhow::bail!("--rate must be in (0, 1000000], got {r}"),
        None => Pacing::Closed,
    };
    let _ = crate::loadtest::push::raise_nofile();
    let http = reqwest::Client::new();
    let (sent, delivered, expected, latency) = if args.scenario == "sse" {
        let video = args.path.clone().unwrap_or_else(|| "loadtest".to_owned());
        let (_, auth) = demo_token(&http, &base).await?;
        let run =
            drive_sse(addr, "/api/livecomments", &video, &auth, clients, pacing, seconds as f64)
                .await?;
        let expected = run.posted * run.viewers as u64;
        (run.posted, expected - run.missing, expected, run.latency)
    } else {
        anyhow::ensure!(
            clients.is_multiple_of(2),
            "--connections must be even for ws (clients go in pairs)"
        );
        let mut users = Vec::with_capacity(clients);
        for _ in 0..clients {
            users.push(demo_token(&http, &base).await?);
        }
        let mut chats = Vec::with_capacity(clients / 2);
        for pair in users.chunks(2) {
            let reply = http
                .post(format!("{base}/api/whatsapp/chats"))
                .header("authorization", &pair[0].1)
                .json(&json!({"kind": "direct", "members": [pair[1].0]}))
                .send()
                .await?;
            anyhow::ensure!(reply.status().is_success(), "creating a chat: {}", reply.status());
            let chat: serde_json::Value = reply.json().await?;
            chats.push(chat["id"].as_str().unwrap_or_default().to_owned());
        }
        let ws = format!("ws://{addr}/api/whatsapp/ws?device=loadtest");
        let mut sockets = Vec::with_capacity(clients);
        for (_, auth) in &users {
            sockets.push(whatsapp_socket(&ws, auth).await?);
        }
        let run = drive_relay(
            sockets,
            pacing,
            seconds as f64,
            whatsapp_frame(Arc::new(chats)),
            whatsapp_sent_at(),
        )
        .await;
        (run.offered, run.delivered, run.offered, run.latency)
    };
    Ok(PushReport {
        scenario: args.scenario.clone(),
        clients,
        pacing: match pacing {
            Pacing::Open { per_sec } => format!("open ({per_sec}/s)"),
            Pacing::Closed => "closed".to_owned(),
        },
        sent,
        delivered,
        expected,
        p50_ms: quantile_ms(&latency, 0.5),
        p99_ms: quantile_ms(&latency, 0.99),
        max_ms: latency.max() as f64 / 1_000.0,
        seconds: seconds as f64,
    })
}
