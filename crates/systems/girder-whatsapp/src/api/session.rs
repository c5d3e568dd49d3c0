//! One device's WebSocket: the offline inbox first, then live frames in per-chat
//! order, client frames carried out, keep-alive, and the close codes of
//! [`girder_realtime::ws::CloseCode`]. See the crate docs for the delivery argument.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use bytes::Bytes;
use girder_realtime::presence::PresenceStore;
use girder_realtime::ws::{CloseCode, Connection, Outbound};

use super::{check_body, check_chat, check_client_id};
use crate::{ClientFrame, MessageView, Push, ReceiptState, ServerFrame, WhatsApp, WhatsAppError};

/// Messages read from the table per query while draining.
const DRAIN_PAGE: u32 = 256;
/// A write that takes longer than this ends the connection (the peer is not reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one typing frame per chat per this long from one connection.
const TYPING_EVERY: Duration = Duration::from_secs(1);

/// Why a session ends.
enum End {
    /// Close with this code.
    Close(CloseCode),
    /// The socket is gone (closed by the peer, or a write failed).
    Gone,
}

struct Session {
    wa: Arc<WhatsApp>,
    socket: WebSocket,
    user: String,
    device: String,
    /// The last seq written per chat.
    last: HashMap<String, i64>,
    typed: HashMap<String, Instant>,
    heard: Instant,
}

/// Runs the connection of `device` of `user` until it ends.
pub(crate) async fn run(
    wa: Arc<WhatsApp>,
    mut socket: WebSocket,
    user: String,
    device: String,
    expires_at: u64,
) {
    let connection = match wa.registry.register(&user, &device) {
        Ok(c) => c,
        Err(e) => {
            let code = match e {
                girder_realtime::ws::RegisterError::Full { .. } => CloseCode::TryAgainLater,
                _ => CloseCode::PolicyViolation,
            };
            let _ = close(&mut socket, code).await;
            return;
        }
    };
    metrics::gauge!("girder_whatsapp_connections").increment(1.0);
    let mut session = Session {
        wa: Arc::clone(&wa),
        socket,
        user: user.clone(),
        device: device.clone(),
        last: HashMap::new(),
        typed: HashMap::new(),
        heard: Instant::now(),
    };
    let end = session.serve(connection, expires_at).await;
    if let End::Close(code) = end {
        let _ = close(&mut session.socket, code).await;
    }
    metrics::gauge!("girder_whatsapp_connections").decrement(1.0);
    let room = crate::presence_room(&user);
    if let Err(e) = wa.presence.leave(&room, &user, &device).await {
        tracing::debug!(error = &e as &dyn std::error::Error, "presence leave failed");
    }
}

async fn close(socket: &mut WebSocket, code: CloseCode) -> Result<(), axum::Error> {
    let frame = CloseFrame { code: code.code(), reason: Utf8Bytes::from_static(code.reason()) };
    tokio::time::timeout(WRITE_TIMEOUT, socket.send(WsMessage::Close(Some(frame))))
        .await
        .unwrap_or(Ok(()))
}

impl Session {
    async fn serve(&mut self, mut connection: Connection<Arc<Push>>, expires_at: u64) -> End {
        let ttl = self.wa.config.presence_ttl_ms;
        let room = crate::presence_room(&self.user);
        if let Err(e) = self.wa.presence.heartbeat(&room, &self.user, &self.device, ttl).await {
            tracing::debug!(error = &e as &dyn std::error::Error, "presence beat failed");
        }
        if let Err(e) = self.wa.store.touch_device(&self.user, &self.device, self.wa.now_ms()).await
        {
            tracing::warn!(error = &e as &dyn std::error::Error, "a device could not be recorded");
            return End::Close(CloseCode::InternalError);
        }
        let hello =
            ServerFrame::Hello { user: self.user.clone(), device: self.device.clone(), expires_at };
        if let Err(end) = self.write(hello.to_bytes()).await {
            return end;
        }
        if let Err(end) = self.drain_all().await {
            return end;
        }
        if let Err(end) = self.write(ServerFrame::Synced.to_bytes()).await {
            return end;
        }
        let keepalive = self.wa.config.keepalive;
        let mut ping = tokio::time::interval(keepalive.ping_interval);
        ping.tick().await;
        let mut beat = tokio::time::interval(Duration::from_millis(ttl / 3));
        beat.tick().await;
        // The server's one clock says when the token runs out.
        let now_secs = self.wa.clock.now_ms() / 1_000;
        let expiry = tokio::time::sleep(Duration::from_secs(expires_at.saturating_sub(now_secs)));
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                out = connection.recv() => match out {
                    Outbound::Text(push) => {
                        if let Err(end) = self.forward(&push).await {
                            return end;
                        }
                    }
                    Outbound::Close(code) => return End::Close(code),
                },
                inbound = self.socket.recv() => match inbound {
                    Some(Ok(WsMessage::Text(text))) => {
                        self.heard = Instant::now();
                        if let Err(end) = self.on_text(text.as_str()).await {
                            return end;
                        }
                    }
                    Some(Ok(WsMessage::Binary(_))) => return End::Close(CloseCode::Unsupported),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => self.heard = Instant::now(),
                    Some(Ok(WsMessage::Close(_))) | None => return End::Gone,
                    Some(Err(e)) => {
                        // The one error a peer causes on purpose is a frame over the limit.
                        let text = e.to_string();
                        return if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
                            End::Close(CloseCode::TooBig)
                        } else {
                            End::Gone
                        };
                    }
                },
                _ = ping.tick() => {
                    if self.heard.elapsed() > keepalive.idle_timeout {
                        return End::Close(CloseCode::Unresponsive);
                    }
                    if let Err(end) = self.send(WsMessage::Ping(Bytes::new())).await {
                        return end;
                    }
                }
                _ = beat.tick() => {
                    if let Err(e) = self.wa.presence.heartbeat(&room, &self.user, &self.device, ttl).await {
                        tracing::debug!(error = &e as &dyn std::error::Error, "presence beat failed");
                    }
                }
                () = &mut expiry => return End::Close(CloseCode::TokenExpired),
            }
        }
    }

    async fn send(&mut self, message: WsMessage) -> Result<(), End> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Close(CloseCode::SlowConsumer)),
        }
    }

    async fn write(&mut self, json: Bytes) -> Result<(), End> {
        let text = Utf8Bytes::try_from(json).map_err(|_| End::Close(CloseCode::InternalError))?;
        self.send(WsMessage::Text(text)).await
    }

    /// Writes `chat`'s messages after the last one written (or after the device's
    /// cursor, for a chat this connection has not seen yet).
    async fn drain(&mut self, chat: &str) -> Result<(), End> {
        let mut after = match self.last.get(chat) {
            Some(&seq) => seq,
            None => match self.wa.store.inbox_start(&self.user, &self.device, chat).await {
                Ok(Some(start)) => start,
                // Not (or no longer) a member: nothing to deliver.
                Ok(None) => return Ok(()),
                Err(e) => return Err(store_failed(&e)),
            },
        };
        loop {
            let page =
                self.wa.store.after(chat, after, DRAIN_PAGE).await.map_err(|e| store_failed(&e))?;
            let full = page.len() == DRAIN_PAGE as usize;
            for message in page {
                after = message.seq;
                self.write(ServerFrame::Message(MessageView::from(message)).to_bytes()).await?;
                self.last.insert(chat.to_owned(), after);
            }
            self.last.entry(chat.to_owned()).or_insert(after);
            if !full {
                return Ok(());
            }
        }
    }

    async fn drain_all(&mut self) -> Result<(), End> {
        let starts = self
            .wa
            .store
            .inbox_starts(&self.user, &self.device)
            .await
            .map_err(|e| store_failed(&e))?;
        for (chat, start) in starts {
            let last = self.last.entry(chat.clone()).or_insert(start);
            *last = (*last).max(start);
            self.drain(&chat).await?;
        }
        Ok(())
    }

    async fn forward(&mut self, push: &Push) -> Result<(), End> {
        match push {
            Push::Message { chat, seq, json } => {
                if !self.last.contains_key(chat) {
                    // A chat joined since connecting: start from the table.
                    return self.drain(chat).await;
                }
                let last = self.last[chat];
                if *seq <= last {
                    Ok(())
                } else if *seq == last + 1 {
                    self.write(json.clone()).await?;
                    self.last.insert(chat.clone(), *seq);
                    Ok(())
                } else {
                    // Something between was not pushed to us: the table has it.
                    self.drain(chat).await
                }
            }
            Push::Other(json) => self.write(json.clone()).await,
            Push::Resync => self.drain_all().await,
        }
    }

    async fn error(
        &mut self,
        error: &str,
        detail: String,
        client_id: Option<String>,
    ) -> Result<(), End> {
        let frame = ServerFrame::Error { error: error.to_owned(), detail, client_id };
        self.write(frame.to_bytes()).await
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(e) => return self.error("invalid_message", e.to_string(), None).await,
        };
        match frame {
            ClientFrame::Send { chat, client_id, body } => {
                let checked = check_chat(&chat)
                    .and_then(|()| check_client_id(&client_id))
                    .and_then(|()| check_body(&body));
                if let Err(e) = checked {
                    return self.error("invalid", e.to_string(), Some(client_id)).await;
                }
                let wa = Arc::clone(&self.wa);
                match wa.send(&self.user, &self.device, &chat, &client_id, &body).await {
                    Ok((message, duplicate)) => {
                        let sent = ServerFrame::Sent {
                            chat,
                            seq: message.seq,
                            client_id,
                            created_ms: message.created_ms,
                            duplicate,
                        };
                        self.write(sent.to_bytes()).await
                    }
                    Err(e) => self.refused(&e, Some(client_id)).await,
                }
            }
            ClientFrame::Delivered { chat, seq } => {
                self.ack(chat, seq, ReceiptState::Delivered).await
            }
            ClientFrame::Read { chat, seq } => self.ack(chat, seq, ReceiptState::Read).await,
            ClientFrame::Typing { chat } => {
                if let Err(e) = check_chat(&chat) {
                    return self.error("invalid", e.to_string(), None).await;
                }
                if self.typed.get(&chat).is_some_and(|t| t.elapsed() < TYPING_EVERY) {
                    return Ok(());
                }
                if self.typed.len() > 1_000 {
                    self.typed.retain(|_, t| t.elapsed() < TYPING_EVERY);
                }
                self.typed.insert(chat.clone(), Instant::now());
                let wa = Arc::clone(&self.wa);
                match wa.typing(&self.user, &chat).await {
                    Ok(()) => Ok(()),
                    Err(e) => self.refused(&e, None).await,
                }
            }
        }
    }

    async fn ack(&mut self, chat: String, seq: i64, state: ReceiptState) -> Result<(), End> {
        if let Err(e) = check_chat(&chat) {
            return self.error("invalid", e.to_string(), None).await;
        }
        // A device acknowledges only what this connection wrote to it.
        let written = self.last.get(&chat).copied().unwrap_or(0);
        if seq < 1 || seq > written {
            return self
                .error(
                    "invalid",
                    format!("seq must be 1..={written}: the last message of this chat written to this device"),
                    None,
                )
                .await;
        }
        let wa = Arc::clone(&self.wa);
        match wa.ack(&self.user, &self.device, &chat, seq, state).await {
            Ok(_) => Ok(()),
            Err(e) => self.refused(&e, None).await,
        }
    }

    async fn refused(&mut self, e: &WhatsAppError, client_id: Option<String>) -> Result<(), End> {
        match e {
            WhatsAppError::NotFound => {
                self.error("not_found", "no such chat".to_owned(), client_id).await
            }
            WhatsAppError::Invalid(detail) | WhatsAppError::Forbidden(detail) => {
                self.error("invalid", detail.clone(), client_id).await
            }
            WhatsAppError::Store(s) => {
                tracing::warn!(error = s as &dyn std::error::Error, "whatsapp store failure");
                self.error(
                    "unavailable",
                    "the message store is unavailable; retry".to_owned(),
                    client_id,
                )
                .await
            }
        }
    }
}

fn store_failed(e: &crate::store::StoreError) -> End {
    tracing::warn!(error = e as &dyn std::error::Error, "whatsapp store failure while draining");
    End::Close(CloseCode::TryAgainLater)
}
