//! WhatsApp as two real `girder serve` processes sharing PostgreSQL, Redis and NATS:
//! 100 clients exchange 100,000 messages in direct and group chats while one
//! instance is SIGKILLed and restarted and its clients reconnect (resending what was
//! not yet acknowledged, under the same client ids). A checker over the recorded
//! history: every acknowledged message reaches every member's device, each chat's
//! messages first arrive in order with no gap (1, 2, 3, …), and a message is the
//! same wherever it arrives — exactly once after dedupe by `(chat, seq)`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, TestDb, client};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const CLIENTS: usize = 100;
const MESSAGES_PER_CLIENT: usize = 1_000;
/// Sends a client keeps unacknowledged at once.
const WINDOW: usize = 8;
const GROUP_SIZE: usize = 4;

/// What every client saw, shared.
#[derive(Default)]
struct History {
    /// (chat, seq) → client id, from `sent` frames.
    acked: Mutex<BTreeMap<(String, i64), String>>,
    /// Clients that sent and had acknowledged all their messages.
    finished: AtomicUsize,
    /// Reconnects over all clients.
    reconnects: AtomicUsize,
}

/// One client's received messages in arrival order: (chat, seq, client id).
type Received = Vec<(String, i64, String)>;

async fn sign_in(http: &reqwest::Client, base: &str) -> (String, String) {
    let reply = http.post(format!("{base}/api/auth/demo")).send().await.expect("sign in");
    let token: Value = reply.json().await.expect("token");
    (
        token["user"].as_str().unwrap().to_owned(),
        format!("Bearer {}", token["token"].as_str().unwrap()),
    )
}

async fn create(http: &reqwest::Client, base: &str, auth: &str, body: Value) -> String {
    let reply = http
        .post(format!("{base}/api/whatsapp/chats"))
        .header("authorization", auth)
        .json(&body)
        .send()
        .await
        .expect("create chat");
    assert!(reply.status().is_success(), "{}", reply.status());
    reply.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[allow(clippy::too_many_lines)]
async fn run_client(
    index: usize,
    auth: String,
    chats: Vec<String>,
    bases: Arc<Mutex<[String; 2]>>,
    history: Arc<History>,
    deadline: Instant,
) -> Received {
    let home = index % 2;
    let mut received: Received = Vec::new();
    // Per chat: the highest seq with every one below it received.
    let mut contiguous: HashMap<String, i64> = chats.iter().map(|c| (c.clone(), 0)).collect();
    let mut acked_up_to: HashMap<String, i64> = HashMap::new();
    let mut unacked: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut next = 0;
    let mut finished = false;
    let mut attempt = 0usize;
    loop {
        assert!(Instant::now() < deadline, "client {index} did not finish in time");
        let base = bases.lock()[(home + attempt) % 2].replace("http://", "ws://");
        attempt += 1;
        let mut request =
            format!("{base}/api/whatsapp/ws?device=d{index}").into_client_request().unwrap();
        request.headers_mut().insert("authorization", auth.parse().unwrap());
        let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(request))
                .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if attempt > 1 {
            history.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        attempt = 0;
        // What was sent and not acknowledged goes again, under the same ids.
        let mut broken = false;
        for (id, (chat, body)) in &unacked {
            let frame = json!({"type": "send", "chat": chat, "client_id": id, "body": body});
            if ws.send(Message::text(frame.to_string())).await.is_err() {
                broken = true;
                break;
            }
        }
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        // Receipts go out cumulatively, a few times a second, as a phone batches them.
        let mut last_receipts = Instant::now();
        while !broken {
            assert!(Instant::now() < deadline, "client {index} did not finish in time");
            tokio::select! {
                frame = ws.next() => {
                    let Some(Ok(frame)) = frame else { break };
                    let Message::Text(text) = frame else {
                        if matches!(frame, Message::Close(_)) { break; }
                        continue;
                    };
                    let f: Value = serde_json::from_str(text.as_str()).unwrap();
                    match f["type"].as_str() {
                        Some("message") => {
                            let chat = f["chat"].as_str().unwrap().to_owned();
                            let seq = f["seq"].as_i64().unwrap();
                            let top = contiguous.entry(chat.clone()).or_insert(0);
                            if seq == *top + 1 {
                                *top = seq;
                            }
                            received.push((chat, seq, f["client_id"].as_str().unwrap().to_owned()));
                        }
                        Some("sent") => {
                            let id = f["client_id"].as_str().unwrap().to_owned();
                            unacked.remove(&id);
                            let key = (f["chat"].as_str().unwrap().to_owned(), f["seq"].as_i64().unwrap());
                            let earlier = history.acked.lock().insert(key, id.clone());
                            assert!(earlier.is_none_or(|e| e == id), "one seq acknowledged for two messages");
                        }
                        Some("error") => panic!("client {index}: {f}"),
                        _ => {}
                    }
                }
                _ = tick.tick() => {
                    while unacked.len() < WINDOW && next < MESSAGES_PER_CLIENT {
                        let id = format!("c{index}-{next}");
                        let chat = chats[next % chats.len()].clone();
                        let body = format!("m{next} from {index}");
                        let frame = json!({"type": "send", "chat": chat, "client_id": id, "body": body});
                        unacked.insert(id, (chat, body));
                        next += 1;
                        if ws.send(Message::text(frame.to_string())).await.is_err() {
                            broken = true;
                            break;
                        }
                    }
                    let receipts_due = last_receipts.elapsed() >= Duration::from_millis(250);
                    if receipts_due {
                        last_receipts = Instant::now();
                    }
                    for (chat, &top) in contiguous.iter().filter(|_| receipts_due) {
                        if acked_up_to.get(chat).copied().unwrap_or(0) < top {
                            let frame = json!({"type": "delivered", "chat": chat, "seq": top});
                            if ws.send(Message::text(frame.to_string())).await.is_err() {
                                broken = true;
                                break;
                            }
                            acked_up_to.insert(chat.clone(), top);
                        }
                    }
                    if !finished && next == MESSAGES_PER_CLIENT && unacked.is_empty() {
                        finished = true;
                        history.finished.fetch_add(1, Ordering::SeqCst);
                    }
                    if history.finished.load(Ordering::SeqCst) == CLIENTS {
                        // Everything is sent: done once every chat is received to its end.
                        let done = {
                            let acked = history.acked.lock();
                            chats.iter().all(|chat| {
                            let end = acked
                                .range((chat.clone(), 0)..=(chat.clone(), i64::MAX))
                                .next_back()
                                .map_or(0, |((_, seq), _)| *seq);
                            contiguous.get(chat).copied().unwrap_or(0) >= end
                        })
                        };
                        if done {
                            let _ = ws.close(None).await;
                            return received;
                        }
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn two_instances_deliver_every_acknowledged_message_once_in_order_through_a_sigkill() {
    let test = "two_instances_deliver_every_acknowledged_message_once_in_order_through_a_sigkill";
    let Some(db) = TestDb::postgres(test).await else { return };
    let Some(redis) = girder_core::services::require(girder_core::services::Service::Redis, test)
    else {
        return;
    };
    let Some(nats) = girder_core::services::require(girder_core::services::Service::Nats, test)
    else {
        return;
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let flags = [
        "--redis-url",
        &redis,
        "--nats-url",
        &nats,
        "--ratelimit-rules",
        "off",
        "--db-max-connections",
        "16",
    ];
    let mut a = Server::start(dirs[0].path(), db.url(), &flags);
    let b = Server::start(dirs[1].path(), db.url(), &flags);
    let bases = Arc::new(Mutex::new([a.base.clone(), b.base.clone()]));
    let http = client();
    // Readiness: both answer and the schema is in place.
    for base in [&a.base, &b.base] {
        let started = Instant::now();
        while http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
            != 200
        {
            assert!(started.elapsed() < Duration::from_secs(30), "{base} never ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut users = Vec::new();
    for _ in 0..CLIENTS {
        users.push(sign_in(&http, &a.base).await);
    }
    // Pairs in direct chats; groups of four.
    let mut chats: Vec<Vec<String>> = vec![Vec::new(); CLIENTS];
    let mut members: HashMap<String, Vec<usize>> = HashMap::new();
    for i in (0..CLIENTS).step_by(2) {
        let chat = create(
            &http,
            &a.base,
            &users[i].1,
            json!({"kind": "direct", "members": [users[i + 1].0]}),
        )
        .await;
        chats[i].push(chat.clone());
        chats[i + 1].push(chat.clone());
        members.insert(chat, vec![i, i + 1]);
    }
    for g in (0..CLIENTS).step_by(GROUP_SIZE) {
        let others: Vec<&str> = (g + 1..g + GROUP_SIZE).map(|j| users[j].0.as_str()).collect();
        let chat = create(
            &http,
            &b.base,
            &users[g].1,
            json!({"kind": "group", "members": others, "title": format!("g{g}")}),
        )
        .await;
        for member in &mut chats[g..g + GROUP_SIZE] {
            member.push(chat.clone());
        }
        members.insert(chat, (g..g + GROUP_SIZE).collect());
    }
    let history = Arc::new(History::default());
    let deadline = Instant::now() + Duration::from_secs(420);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(run_client(
                i,
                users[i].1.clone(),
                chats[i].clone(),
                Arc::clone(&bases),
                Arc::clone(&history),
                deadline,
            ))
        })
        .collect();
    // SIGKILL instance A a third of the way in, restart it on the same database.
    let total = CLIENTS * MESSAGES_PER_CLIENT;
    let mut shown = Instant::now();
    while history.acked.lock().len() < total / 3 {
        assert!(Instant::now() < deadline, "stalled before the kill");
        tokio::time::sleep(Duration::from_millis(50)).await;
        if shown.elapsed() > Duration::from_secs(5) {
            shown = Instant::now();
            eprintln!(
                "{:.0} s: {} acknowledged",
                started.elapsed().as_secs_f64(),
                history.acked.lock().len()
            );
        }
    }
    a.kill();
    let at_kill = history.acked.lock().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted = Server::start(dirs[0].path(), db.url(), &flags);
    bases.lock()[0] = restarted.base.clone();
    let progress = {
        let history = Arc::clone(&history);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                eprintln!(
                    "{:.0} s: {} acknowledged, {} clients finished sending",
                    started.elapsed().as_secs_f64(),
                    history.acked.lock().len(),
                    history.finished.load(Ordering::SeqCst)
                );
            }
        })
    };
    let mut received = Vec::new();
    for task in tasks {
        received.push(task.await.expect("client task"));
    }
    let elapsed = started.elapsed();
    progress.abort();

    // The checker.
    let acked = history.acked.lock().clone();
    assert_eq!(
        acked.len(),
        total,
        "every message acknowledged once (resends are the same message)"
    );
    for (i, got) in received.iter().enumerate() {
        let mut first: HashMap<&str, Vec<i64>> = HashMap::new();
        let mut seen: HashMap<(&str, i64), &str> = HashMap::new();
        for (chat, seq, id) in got {
            match seen.get(&(chat.as_str(), *seq)) {
                Some(earlier) => {
                    assert_eq!(earlier, id, "client {i}: ({chat}, {seq}) arrived as two messages")
                }
                None => {
                    seen.insert((chat.as_str(), *seq), id);
                    first.entry(chat.as_str()).or_default().push(*seq);
                }
            }
        }
        for chat in &chats[i] {
            let order = first.get(chat.as_str()).cloned().unwrap_or_default();
            let end = acked.range((chat.clone(), 0)..=(chat.clone(), i64::MAX)).count() as i64;
            assert_eq!(
                order,
                (1..=end).collect::<Vec<_>>(),
                "client {i}: chat {chat} first arrivals in order, no gap"
            );
        }
    }
    for ((chat, seq), id) in &acked {
        for &m in &members[chat] {
            let got = received[m].iter().any(|(c, s, i)| c == chat && s == seq && i == id);
            assert!(got, "client {m} never received ({chat}, {seq})");
        }
    }
    let deliveries: usize = received.iter().map(Vec::len).sum();
    eprintln!(
        "{total} messages acknowledged ({at_kill} before the kill), {deliveries} deliveries with repeats, {} reconnects, {:.1} s",
        history.reconnects.load(Ordering::Relaxed),
        elapsed.as_secs_f64()
    );
    drop((restarted, b));
    db.drop_db().await;
}
