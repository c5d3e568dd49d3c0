//! WhatsApp over real sockets: messages reach every device of every member in
//! order with sent, delivered and read receipts; the offline inbox is drained on
//! reconnect; resends are idempotent; two instances route through NATS; only
//! members read or write; bad input gets an error frame, a close code or a problem.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use futures_util::{SinkExt, StreamExt};
use girder_core::{Clock, ManualClock, SystemClock};
use girder_http::identity::{Role, Tokens, test_bearer as bearer, test_tokens};
use girder_sql::{Db, PoolConfig};
use girder_system::Context;
use girder_testkit::backends::TestDb;
use girder_whatsapp::{WhatsApp, WhatsAppConfig};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

struct Server {
    wa: Arc<WhatsApp>,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    db: &str,
    nats: Option<&str>,
    prefix: &str,
    clock: Arc<dyn Clock>,
    config: WhatsAppConfig,
) -> Server {
    let pool = Db::connect(db, PoolConfig::default()).await.expect("database");
    girder_sql::migrate::run(&pool, girder_whatsapp::migrations()).await.expect("migrations");
    let mut context = Context::new(pool, clock);
    let mut config = config;
    if let Some(url) = nats {
        context = context.with_nats(url);
        config.nats_prefix = prefix.to_owned();
    }
    let wa = WhatsApp::open_with(&context, config).await.expect("open");
    let router: Router = wa.api_router().layer(test_tokens().layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Server { wa, addr, task }
}

async fn open(db: &str) -> Server {
    serve(db, None, "", Arc::new(SystemClock), WhatsAppConfig::new()).await
}

async fn http(
    server: &Server,
    user: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = hyper_request(server, method, path);
    if !user.is_empty() {
        request = request.header("authorization", bearer(user, Role::User));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let request = request
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("connection", "close")
        .body(body)
        .unwrap();
    // A minimal HTTP/1.1 exchange: the request line, headers and body; then read to EOF.
    let mut text =
        format!("{} {} HTTP/1.1\r\nhost: {}\r\n", request.method(), request.uri(), server.addr);
    for (k, v) in request.headers() {
        text.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    text.push_str("\r\n");
    text.push_str(request.body());
    let mut stream = stream;
    tokio::io::AsyncWriteExt::write_all(&mut stream, text.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    let status: u16 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn hyper_request(_server: &Server, method: &str, path: &str) -> axum::http::request::Builder {
    axum::http::Request::builder().method(method).uri(path)
}

/// One device's socket, read frame by frame.
struct Device {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Device {
    async fn connect(server: &Server, user: &str, device: &str) -> Self {
        Self::connect_with(server, device, Some(bearer(user, Role::User))).await.expect("upgrade")
    }

    async fn connect_with(
        server: &Server,
        device: &str,
        authorization: Option<String>,
    ) -> Result<Self, u16> {
        let mut request =
            format!("ws://{}/ws?device={device}", server.addr).into_client_request().unwrap();
        if let Some(a) = authorization {
            request.headers_mut().insert("authorization", a.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Self { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("connect: {e}"),
        }
    }

    async fn send(&mut self, frame: Value) {
        self.ws.send(Message::text(frame.to_string())).await.unwrap();
    }

    /// The next text frame, or `{"close": code}`.
    async fn next(&mut self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame =
                tokio::time::timeout(left, self.ws.next()).await.expect("a frame within 10 s");
            match frame {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(Message::Close(c))) => {
                    return json!({"close": c.map_or(1005, |c| u16::from(c.code))});
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return json!({"close": 1006}),
            }
        }
    }

    /// Frames until one of type `kind` (included).
    async fn until(&mut self, kind: &str) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let f = self.next().await;
            let done = f["type"] == kind || (kind == "close" && f.get("close").is_some());
            assert!(
                f.get("close").is_none() || kind == "close",
                "closed while waiting for {kind}: {frames:?} {f}"
            );
            frames.push(f);
            if done {
                return frames;
            }
        }
    }

    /// Messages in `frames`, as (chat, seq, body).
    fn messages(frames: &[Value]) -> Vec<(String, i64, String)> {
        frames
            .iter()
            .filter(|f| f["type"] == "message")
            .map(|f| {
                (
                    f["chat"].as_str().unwrap().to_owned(),
                    f["seq"].as_i64().unwrap(),
                    f["body"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

async fn direct_chat(server: &Server, a: &str, b: &str) -> String {
    let (status, chat) =
        http(server, a, "POST", "/chats", Some(json!({"kind": "direct", "members": [b]}))).await;
    assert!(status == 201 || status == 200, "{status} {chat}");
    chat["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_every_device_in_order_with_receipts_and_an_offline_inbox() {
    for db in TestDb::all("wa_messages_reach_every_device").await {
        let server = open(db.url()).await;
        let chat = direct_chat(&server, "ann", "bob").await;
        // The same pair again is the same chat.
        assert_eq!(direct_chat(&server, "bob", "ann").await, chat);
        let mut phone = Device::connect(&server, "ann", "phone").await;
        let mut laptop = Device::connect(&server, "ann", "laptop").await;
        let mut bob = Device::connect(&server, "bob", "phone").await;
        for d in [&mut phone, &mut laptop, &mut bob] {
            let hello = d.until("synced").await;
            assert_eq!(hello[0]["type"], "hello");
        }
        for i in 1..=3 {
            phone.send(json!({"type": "send", "chat": chat, "client_id": format!("m{i}"), "body": format!("hi {i}")})).await;
        }
        let frames = phone.until("sent").await;
        assert_eq!(frames.last().unwrap()["seq"], 1);
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(Device::messages(&[bob.next().await]));
        }
        assert_eq!(got.iter().map(|m| m.1).collect::<Vec<_>>(), [1, 2, 3], "in chat order");
        assert_eq!(got[0].2, "hi 1");
        // The sender's other device has them too.
        let mut on_laptop = Vec::new();
        while on_laptop.len() < 3 {
            on_laptop.extend(Device::messages(&[laptop.next().await]));
        }
        assert_eq!(on_laptop, got);
        // Bob's receipts reach Ann's devices.
        bob.send(json!({"type": "delivered", "chat": chat, "seq": 3})).await;
        bob.send(json!({"type": "read", "chat": chat, "seq": 2})).await;
        let mut receipts = Vec::new();
        while receipts.len() < 2 {
            let f = laptop.next().await;
            if f["type"] == "receipt" && f["user"] == "bob" {
                receipts
                    .push((f["state"].as_str().unwrap().to_owned(), f["seq"].as_i64().unwrap()));
            }
        }
        assert_eq!(receipts, [("delivered".to_owned(), 3), ("read".to_owned(), 2)]);
        // Cursor moves are written in batches; write this one now.
        server.wa.flush_acks().await;
        let (_, r) = http(&server, "ann", "GET", &format!("/chats/{chat}/receipts"), None).await;
        assert_eq!(r["last_seq"], 3);
        let bob_cursor =
            r["devices"].as_array().unwrap().iter().find(|c| c["user"] == "bob").unwrap();
        assert_eq!(
            (bob_cursor["delivered_seq"].as_i64(), bob_cursor["read_seq"].as_i64()),
            (Some(3), Some(2))
        );
        // Offline: Bob's phone goes away; two more messages wait in its inbox.
        drop(bob);
        for i in 4..=5 {
            phone.send(json!({"type": "send", "chat": chat, "client_id": format!("m{i}"), "body": format!("hi {i}")})).await;
        }
        // Earlier frames are still queued on the phone: wait for the last `sent`.
        loop {
            let f = phone.next().await;
            if f["type"] == "sent" && f["client_id"] == "m5" {
                break;
            }
        }
        let mut bob = Device::connect(&server, "bob", "phone").await;
        let drained = Device::messages(&bob.until("synced").await);
        assert_eq!(
            drained.iter().map(|m| m.1).collect::<Vec<_>>(),
            [4, 5],
            "only what was not acknowledged"
        );
        // A new device of Bob's gets the chat from his join.
        let mut tablet = Device::connect(&server, "bob", "tablet").await;
        let all = Device::messages(&tablet.until("synced").await);
        assert_eq!(all.iter().map(|m| m.1).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        // History pages newest first.
        let (status, page) =
            http(&server, "bob", "GET", &format!("/chats/{chat}/messages?limit=2"), None).await;
        assert_eq!(status, 200);
        assert_eq!(page["items"][0]["seq"], 5);
        assert_eq!(page["next_before"], 4);
        drop((phone, laptop, bob, tablet));
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_with_the_same_client_id_is_the_same_message() {
    let db = TestDb::sqlite();
    let server = open(db.url()).await;
    let chat = direct_chat(&server, "ann", "bob").await;
    let mut ann = Device::connect(&server, "ann", "phone").await;
    let mut bob = Device::connect(&server, "bob", "phone").await;
    ann.until("synced").await;
    bob.until("synced").await;
    let send = json!({"type": "send", "chat": chat, "client_id": "once", "body": "only once"});
    ann.send(send.clone()).await;
    let first = ann.until("sent").await.pop().unwrap();
    ann.send(send).await;
    let second = ann.until("sent").await.pop().unwrap();
    assert_eq!(first["seq"], second["seq"]);
    assert_eq!(
        (first["duplicate"].as_bool(), second["duplicate"].as_bool()),
        (Some(false), Some(true))
    );
    // Over HTTP too: 200 with the stored message.
    let (status, m) = http(
        &server,
        "ann",
        "POST",
        &format!("/chats/{chat}/messages"),
        Some(json!({"client_id": "once", "body": "only once"})),
    )
    .await;
    assert_eq!((status, m["seq"].clone()), (200, first["seq"].clone()));
    ann.send(json!({"type": "send", "chat": chat, "client_id": "next", "body": "then this"})).await;
    let mut got = Vec::new();
    while !got.iter().any(|m: &(String, i64, String)| m.2 == "then this") {
        got.extend(Device::messages(&[bob.next().await]));
    }
    assert_eq!(
        got.iter().map(|m| m.1).collect::<Vec<_>>(),
        [1, 2],
        "the resend was not pushed again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_read_or_write_and_bad_input_is_refused() {
    let db = TestDb::sqlite();
    let server = open(db.url()).await;
    let chat = direct_chat(&server, "ann", "bob").await;
    let (status, group) = http(
        &server,
        "ann",
        "POST",
        "/chats",
        Some(json!({"kind": "group", "members": ["bob"], "title": "crew"})),
    )
    .await;
    assert_eq!(status, 201);
    let group = group["id"].as_str().unwrap().to_owned();
    // Outsiders see nothing.
    let mut eve = Device::connect(&server, "eve", "x").await;
    eve.until("synced").await;
    eve.send(json!({"type": "send", "chat": chat, "client_id": "1", "body": "let me in"})).await;
    let refused = eve.next().await;
    assert_eq!(
        (refused["type"].as_str(), refused["error"].as_str(), refused["client_id"].as_str()),
        (Some("error"), Some("not_found"), Some("1"))
    );
    for path in [
        format!("/chats/{chat}"),
        format!("/chats/{chat}/messages"),
        format!("/chats/{chat}/receipts"),
        "/users/ann/presence".to_owned(),
    ] {
        assert_eq!(http(&server, "eve", "GET", &path, None).await.0, 404, "{path}");
    }
    // A member adds Eve to the group: she sees its messages from then on.
    let (_, before) = http(
        &server,
        "ann",
        "POST",
        &format!("/chats/{group}/messages"),
        Some(json!({"client_id": "a", "body": "before eve"})),
    )
    .await;
    assert_eq!(before["seq"], 1);
    let (status, _) = http(
        &server,
        "bob",
        "POST",
        &format!("/chats/{group}/members"),
        Some(json!({"user": "eve"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        http(
            &server,
            "ann",
            "POST",
            &format!("/chats/{chat}/members"),
            Some(json!({"user": "eve"}))
        )
        .await
        .0,
        403,
        "direct chats are fixed"
    );
    http(
        &server,
        "ann",
        "POST",
        &format!("/chats/{group}/messages"),
        Some(json!({"client_id": "b", "body": "after eve"})),
    )
    .await;
    let got = loop {
        let f = eve.next().await;
        if f["type"] == "message" {
            break f;
        }
    };
    assert_eq!((got["seq"].as_i64(), got["body"].as_str()), (Some(2), Some("after eve")));
    let (_, page) = http(&server, "eve", "GET", &format!("/chats/{group}/messages"), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "history from her join");
    // Typing reaches the others and is not stored.
    let mut ann = Device::connect(&server, "ann", "phone").await;
    ann.until("synced").await;
    eve.send(json!({"type": "typing", "chat": group})).await;
    let typing = loop {
        let f = ann.next().await;
        if f["type"] == "typing" {
            break f;
        }
    };
    assert_eq!(
        (typing["user"].as_str(), typing["chat"].as_str()),
        (Some("eve"), Some(group.as_str()))
    );
    let (_, page) = http(&server, "ann", "GET", &format!("/chats/{group}/messages"), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "typing is not a message");
    // Presence: members see each other online.
    let (status, p) = http(&server, "ann", "GET", "/users/eve/presence", None).await;
    assert_eq!((status, p["online"].as_bool()), (200, Some(true)));
    // Bad frames: an error frame, the connection stays.
    eve.send(json!({"type": "shout"})).await;
    assert_eq!(eve.next().await["error"], "invalid_message");
    eve.ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(eve.next().await["error"], "invalid_message");
    eve.send(json!({"type": "send", "chat": group, "client_id": "", "body": "x"})).await;
    assert_eq!(eve.next().await["error"], "invalid");
    eve.send(json!({"type": "send", "chat": "UPPER", "client_id": "c", "body": "x"})).await;
    assert_eq!(eve.next().await["error"], "invalid");
    eve.send(json!({"type": "delivered", "chat": group, "seq": 99})).await;
    assert_eq!(eve.next().await["error"], "invalid", "no acknowledging what was not delivered");
    // A frame over the limit closes with 1009; a binary frame with 1003.
    eve.send(
        json!({"type": "send", "chat": group, "client_id": "big", "body": "x".repeat(20_000)}),
    )
    .await;
    assert_eq!(eve.until("close").await.pop().unwrap()["close"], 1009);
    let mut eve = Device::connect(&server, "eve", "x").await;
    eve.until("synced").await;
    eve.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(eve.until("close").await.pop().unwrap()["close"], 1003);
    // Upgrades without a valid token are 401 problems; a bad device id 422.
    assert_eq!(Device::connect_with(&server, "x", None).await.err(), Some(401));
    assert_eq!(
        Device::connect_with(&server, "x", Some("Bearer forged".into())).await.err(),
        Some(401)
    );
    let expired = format!("Bearer {}", test_tokens().issue("ann", Role::User, 1_000).token);
    assert_eq!(Device::connect_with(&server, "x", Some(expired)).await.err(), Some(401));
    let long = "d".repeat(129);
    assert_eq!(
        Device::connect_with(&server, &long, Some(bearer("ann", Role::User))).await.err(),
        Some(422)
    );
    // A plain GET is told to upgrade.
    assert_eq!(http(&server, "ann", "GET", "/ws?device=x", None).await.0, 426);
    // HTTP bad input.
    assert_eq!(
        http(
            &server,
            "ann",
            "POST",
            "/chats",
            Some(json!({"kind": "direct", "members": ["bob", "eve"]}))
        )
        .await
        .0,
        422
    );
    assert_eq!(
        http(&server, "ann", "POST", "/chats", Some(json!({"kind": "group", "members": ["bob"]})))
            .await
            .0,
        422,
        "a group needs a title"
    );
    assert_eq!(
        http(
            &server,
            "ann",
            "POST",
            &format!("/chats/{chat}/messages"),
            Some(json!({"client_id": "z", "body": "   "}))
        )
        .await
        .0,
        422
    );
    assert_eq!(http(&server, "", "GET", "/chats", None).await.0, 401);
    assert_eq!(http(&server, "ann", "GET", "/stats", None).await.0, 403);
    drop(ann);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_of_a_device_replaces_the_first_and_an_expired_token_closes() {
    let db = TestDb::sqlite();
    let server = open(db.url()).await;
    let mut first = Device::connect(&server, "ann", "phone").await;
    first.until("synced").await;
    let mut second = Device::connect(&server, "ann", "phone").await;
    second.until("synced").await;
    assert_eq!(first.until("close").await.pop().unwrap()["close"], 4002);
    // A token that expires in two seconds ends its socket with 4001.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let short = Tokens::new(&[7; 32], 2).issue("ann", Role::User, now);
    let mut dying =
        Device::connect_with(&server, "tablet", Some(format!("Bearer {}", short.token)))
            .await
            .unwrap();
    assert_eq!(dying.until("synced").await[0]["expires_at"], short.expires_at);
    assert_eq!(dying.until("close").await.pop().unwrap()["close"], 4001);
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_messages_past_their_days() {
    let db = TestDb::sqlite();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let server = serve(db.url(), None, "", clock.clone(), WhatsAppConfig::new()).await;
    let chat = direct_chat(&server, "ann", "bob").await;
    for i in 0..3 {
        http(
            &server,
            "ann",
            "POST",
            &format!("/chats/{chat}/messages"),
            Some(json!({"client_id": format!("{i}"), "body": "old"})),
        )
        .await;
    }
    clock.advance(Duration::from_millis(29 * 86_400_000));
    http(
        &server,
        "ann",
        "POST",
        &format!("/chats/{chat}/messages"),
        Some(json!({"client_id": "new", "body": "new"})),
    )
    .await;
    assert_eq!(server.wa.run_retention(10).await.unwrap(), 0, "nothing is 30 days old yet");
    clock.advance(Duration::from_millis(2 * 86_400_000));
    assert_eq!(server.wa.run_retention(10).await.unwrap(), 3);
    let (_, page) = http(&server, "bob", "GET", &format!("/chats/{chat}/messages"), None).await;
    let bodies: Vec<&str> =
        page["items"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["new"]);
    // The sequence goes on.
    let (_, m) = http(
        &server,
        "ann",
        "POST",
        &format!("/chats/{chat}/messages"),
        Some(json!({"client_id": "later", "body": "later"})),
    )
    .await;
    assert_eq!(m["seq"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_route_messages_and_receipts_through_nats() {
    let Some(nats) = girder_core::services::require(
        girder_core::services::Service::Nats,
        "two_instances_route_messages_and_receipts_through_nats",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("wa.db").display());
    let prefix = format!("girder-test.wa{}", std::process::id());
    let a = serve(&url, Some(&nats), &prefix, Arc::new(SystemClock), WhatsAppConfig::new()).await;
    let b = serve(&url, Some(&nats), &prefix, Arc::new(SystemClock), WhatsAppConfig::new()).await;
    let chat = direct_chat(&a, "ann", "bob").await;
    let mut ann = Device::connect(&a, "ann", "phone").await;
    let mut bob = Device::connect(&b, "bob", "phone").await;
    ann.until("synced").await;
    bob.until("synced").await;
    for i in 1..=20 {
        ann.send(json!({"type": "send", "chat": chat, "client_id": format!("{i}"), "body": format!("m{i}")})).await;
    }
    let mut got = Vec::new();
    while got.len() < 20 {
        got.extend(Device::messages(&[bob.next().await]));
    }
    assert_eq!(got.iter().map(|m| m.1).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
    bob.send(json!({"type": "read", "chat": chat, "seq": 20})).await;
    loop {
        let f = ann.next().await;
        if f["type"] == "receipt" && f["user"] == "bob" {
            assert_eq!((f["state"].as_str(), f["seq"].as_i64()), (Some("read"), Some(20)));
            break;
        }
    }
}
