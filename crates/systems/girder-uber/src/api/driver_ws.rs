//! A driver's WebSocket: fixes in, one at a time; offers, ride changes and the
//! next reporting interval out. The socket subscribes to the driver's topic on this
//! instance's hub, which the broker joins across instances, so an offer made by any
//! instance's matcher reaches the driver wherever they are connected.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use girder_http::problem::Problem;
use girder_http::ws::{PROTOCOL, WsCaller};
use girder_realtime::ws::CloseCode;
use girder_realtime::{Event, Pattern, SlowConsumer, SubscribeConfig};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{LatLon, OfferView, RideView, check_user};
use crate::{Uber, UberError, user_topic};

/// The largest frame a driver may send, bytes.
const FRAME_BYTES_MAX: usize = 4_096;
/// Between pings.
const PING_EVERY: Duration = Duration::from_secs(20);
/// Silence (no frame, no pong) after which the socket is closed (4009).
const IDLE_MAX: Duration = Duration::from_secs(60);
/// A write that takes longer than this ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A frame a driver sends (JSON text).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DriverClientFrame {
    /// Where the driver is now.
    Fix {
        /// Latitude in degrees, -85.05112878..=85.05112878.
        lat: f64,
        /// Longitude in degrees, -180..=180.
        lon: f64,
        /// When it was taken, ms since the epoch [default: when received].
        at_ms: Option<i64>,
    },
}

/// A frame the server sends (JSON text).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DriverServerFrame {
    /// First frame: who is connected, the offer open to them (if any) and when to
    /// report.
    Hello {
        /// The driver.
        driver: String,
        /// The open offer.
        offer: Option<OfferView>,
        /// Report after this long, ms.
        next_interval_ms: u64,
    },
    /// After each fix: when to report next.
    Interval {
        /// Report after this long, ms.
        next_interval_ms: u64,
        /// The driver holds a ride under way.
        on_ride: bool,
    },
    /// A ride offered to the driver: accept or decline it over HTTP with its token
    /// before it expires.
    Offer {
        /// The offer.
        offer: OfferView,
    },
    /// A ride of the driver's changed.
    Ride {
        /// The ride.
        ride: RideView,
    },
    /// A frame was refused; the socket stays open.
    Error {
        /// What was wrong.
        message: String,
    },
}

/// Open the caller's driver socket. Authenticate with `Authorization: Bearer
/// <token>` or, from a browser, the subprotocols `girder.v1` and `bearer.<token>`.
/// The client sends `DriverClientFrame`s (`fix`), the server `DriverServerFrame`s.
/// Close codes: 1003 binary frame, 1009 frame over 4 KiB, 4001 token expired, 4009
/// unresponsive.
#[utoipa::path(
    get,
    path = "/api/uber/drivers/ws",
    tag = "uber",
    responses(
        (status = 101, description = "Switching to WebSocket"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 426, description = "Not a WebSocket upgrade", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn connect(
    State(uber): State<Arc<Uber>>,
    caller: WsCaller,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, UberError> {
    check_user(&caller.caller.id)?;
    let Ok(upgrade) = upgrade else {
        return Ok(Problem::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade-required",
            "Upgrade required",
        )
        .detail("this endpoint speaks WebSocket only")
        .into_response());
    };
    let driver = caller.caller.id;
    let expires_at = caller.expires_at;
    Ok(upgrade
        .protocols([PROTOCOL])
        .max_message_size(FRAME_BYTES_MAX)
        .max_frame_size(FRAME_BYTES_MAX)
        .on_upgrade(move |socket| run(uber, socket, driver, expires_at)))
}

async fn send(socket: &mut WebSocket, text: String) -> Result<(), ()> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(WsMessage::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn close(socket: &mut WebSocket, code: CloseCode) {
    let frame = CloseFrame { code: code.code(), reason: Utf8Bytes::from_static(code.reason()) };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, socket.send(WsMessage::Close(Some(frame)))).await;
}

fn frame(f: &DriverServerFrame) -> String {
    serde_json::to_string(f).unwrap_or_else(|_| r#"{"type":"error","message":"encoding"}"#.into())
}

async fn run(uber: Arc<Uber>, mut socket: WebSocket, driver: String, expires_at: u64) {
    let pattern = Pattern::new(user_topic(&driver).as_str())
        .unwrap_or_else(|_| unreachable!("a topic is a pattern"));
    let Ok(mut sub) = uber
        .hub
        .subscribe(&pattern, SubscribeConfig { capacity: 256, policy: SlowConsumer::Disconnect })
    else {
        close(&mut socket, CloseCode::TryAgainLater).await;
        return;
    };
    let offer = uber.open_offer(&driver).await.unwrap_or(None);
    let hello = DriverServerFrame::Hello {
        driver: driver.clone(),
        offer,
        next_interval_ms: crate::interval_for(false, false).as_millis() as u64,
    };
    if send(&mut socket, frame(&hello)).await.is_err() {
        return;
    }
    let now_secs = uber.clock.now_ms() / 1_000;
    let expiry = tokio::time::sleep(Duration::from_secs(expires_at.saturating_sub(now_secs)));
    tokio::pin!(expiry);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    let code = loop {
        tokio::select! {
            () = &mut expiry => break CloseCode::TokenExpired,
            _ = ping.tick() => {
                if heard.elapsed() > IDLE_MAX {
                    break CloseCode::Unresponsive;
                }
                if socket.send(WsMessage::Ping(bytes::Bytes::new())).await.is_err() {
                    return;
                }
            }
            event = sub.recv() => match event {
                Ok(Event::Message(m)) => {
                    let Ok(text) = std::str::from_utf8(&m.payload) else { continue };
                    if send(&mut socket, text.to_owned()).await.is_err() {
                        return;
                    }
                }
                // A missed push: the open offer is re-read and sent again.
                Ok(Event::Gap { .. }) => {
                    if let Ok(Some(offer)) = uber.open_offer(&driver).await
                        && send(&mut socket, frame(&DriverServerFrame::Offer { offer })).await.is_err()
                    {
                        return;
                    }
                }
                Err(girder_realtime::Closed::SlowConsumer) => break CloseCode::SlowConsumer,
                Err(girder_realtime::Closed::Hub) => break CloseCode::GoingAway,
            },
            incoming = socket.recv() => {
                heard = tokio::time::Instant::now();
                let Some(Ok(message)) = incoming else {
                    // Closed by the peer, or a frame over the limit (1009 is axum's).
                    return;
                };
                let text = match message {
                    WsMessage::Text(text) => text,
                    WsMessage::Binary(_) => break CloseCode::Unsupported,
                    WsMessage::Close(_) => return,
                    WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                };
                let reply = match handle(&uber, &driver, text.as_str()).await {
                    Ok(f) | Err(f) => f,
                };
                if send(&mut socket, frame(&reply)).await.is_err() {
                    return;
                }
            }
        }
    };
    close(&mut socket, code).await;
}

/// Carries out one client frame; the reply either way.
async fn handle(
    uber: &Uber,
    driver: &str,
    text: &str,
) -> Result<DriverServerFrame, DriverServerFrame> {
    let refuse = |message: String| DriverServerFrame::Error { message };
    let DriverClientFrame::Fix { lat, lon, at_ms } =
        serde_json::from_str(text).map_err(|e| refuse(format!("invalid frame: {e}")))?;
    let point = LatLon { lat, lon }.point("fix").map_err(|e| refuse(e.to_string()))?;
    let at = at_ms.unwrap_or_else(|| uber.now_ms());
    if at < 0 {
        return Err(refuse("at_ms must not be negative".into()));
    }
    let done = uber.report(driver, &[(point, at)]).await.map_err(|e| refuse(e.to_string()))?;
    Ok(DriverServerFrame::Interval {
        next_interval_ms: done.next_interval_ms,
        on_ride: done.on_ride,
    })
}
