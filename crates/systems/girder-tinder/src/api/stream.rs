//! The caller's event stream: Server-Sent Events of their matches as they are made,
//! from whichever instance made them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use girder_http::identity::Caller;
use girder_http::problem::Problem;
use girder_realtime::Position;
use girder_realtime::sse::{SseConfig, stream};

use crate::{Tinder, TinderError};

/// The caller's events as Server-Sent Events. The stream opens with `event: resume`
/// (`{"recovered": true}` when every event after `Last-Event-ID` follows; `false`
/// when the client should reload `GET /matches`: a first connection, another
/// instance, a restart, or history that no longer reaches back), then `event: match`
/// with a `MatchEvent` for each match made (its `id` is the resume position), `gap`
/// when the client fell behind, comment lines as heartbeats, and `closed` at
/// shutdown. The stream does not end on its own.
#[utoipa::path(
    get,
    path = "/api/tinder/events/stream",
    tag = "tinder",
    params(
        ("last-event-id" = Option<String>, Header, description = "The id of the last event received, to resume after it", max_length = 60),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This instance holds as many open streams as it can", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(super) async fn events(
    State(tinder): State<Arc<Tinder>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, TinderError> {
    // A Last-Event-ID that is not a position of ours resumes nothing: a reset.
    let since = headers.get("last-event-id").map(|v| {
        v.to_str().ok().and_then(Position::decode).unwrap_or(Position {
            epoch: 0,
            stream: 0,
            seq: 0,
        })
    });
    let (subscription, resume) = tinder.subscribe(&caller.id, since)?;
    let sse = SseConfig { event: Some("match".into()), ..SseConfig::default() };
    let body = stream(subscription, resume, sse);
    Ok(girder_http::sse::response(body))
}
