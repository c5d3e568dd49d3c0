//! Live Comments' HTTP surface: shapes with their limits, handlers (the SSE stream
//! among them), and the one place its errors become problems.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use girder_realtime::sse::{SseConfig, stream};
use girder_realtime::{Position, SlowConsumer, SubscribeConfig};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::store::Comment;
use crate::{LiveComments, LiveCommentsError, Viewers, topic};
use girder_http::extract::{Json, Path, Query};
use girder_http::identity::{Caller, MaybeCaller};
use girder_http::problem::Problem;

/// The OpenAPI description of Live Comments' endpoints.
#[derive(OpenApi)]
#[openapi(
    paths(post_comment, list_comments, watch, viewers),
    components(schemas(NewCommentRequest, CommentView, CommentPage, ViewersView, Problem)),
    tags((name = "livecomments", description = "Live Comments: comments broadcast to every viewer over SSE"))
)]
pub struct LiveCommentsApi;

const BODY_CHARS_MAX: usize = 500;
const PAGE_LIMIT_MAX: u32 = 100;
const VIDEO_BYTES_MAX: usize = 64;
/// A viewer's buffer of comments not yet written to their connection.
const VIEWER_BUFFER: usize = 256;

/// A new comment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCommentRequest {
    /// The text, 1–500 characters, not all spaces, no control characters.
    #[schema(
        example = "What a goal!",
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub body: String,
}

/// A comment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommentView {
    /// Its id; ids grow with time.
    pub id: i64,
    /// The video.
    pub video: String,
    /// Who wrote it.
    pub author: String,
    /// The text.
    pub body: String,
    /// When it was posted, ms since the Unix epoch.
    pub created_ms: i64,
}

impl From<Comment> for CommentView {
    fn from(c: Comment) -> Self {
        Self { id: c.id, video: c.video, author: c.author, body: c.body, created_ms: c.created_ms }
    }
}

/// A page of comments, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommentPage {
    /// The comments.
    pub items: Vec<CommentView>,
    /// Pass as `before` for the next (older) page; absent on the last.
    pub next_before: Option<i64>,
}

/// Who is watching.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ViewersView {
    /// Viewers (users, each counted once) with a live stream.
    pub viewers: usize,
    /// Open streams (a viewer may have several).
    pub streams: usize,
}

/// Paging back through a video's comments.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Comments with ids below this [default: the newest].
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// Page size, 1–100 [default: 50].
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// What went wrong, as a problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The body or a parameter is out of bounds.
    #[error("{0}")]
    Invalid(String),
    /// This instance is watching as many videos as it holds.
    #[error("{0}")]
    Full(String),
    /// A store failed.
    #[error("store")]
    Store(#[from] LiveCommentsError),
}

impl From<sqlx::Error> for ErrorKind {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

impl IntoResponse for ErrorKind {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        match &self {
            Self::Invalid(_) => Problem::invalid(detail).into_response(),
            Self::Full(_) => Problem::unavailable(detail).into_response(),
            Self::Store(_) => {
                tracing::error!(
                    error = &self as &dyn std::error::Error,
                    "livecomments backend failure"
                );
                Problem::unavailable("the comment store is unavailable; retry later")
                    .into_response()
            }
        }
    }
}

type Result<T, E = ErrorKind> = std::result::Result<T, E>;

impl LiveComments {
    /// The API routes, to be nested at `/api/livecomments`.
    pub fn api_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/videos/{video}/comments", get(list_comments).post(post_comment))
            .route("/videos/{video}/stream", get(watch))
            .route("/videos/{video}/viewers", get(viewers))
            .with_state(Arc::clone(self))
    }
}

fn check_video(video: &str) -> Result<()> {
    let ok = !video.is_empty()
        && video.len() <= VIDEO_BYTES_MAX
        && video.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ErrorKind::Invalid(format!("video ids are 1–{VIDEO_BYTES_MAX} of A-Z a-z 0-9 _ -")))
    }
}

/// Comment on a video as the caller: stored, then sent to every viewer.
#[utoipa::path(
    post,
    path = "/api/livecomments/videos/{video}/comments",
    tag = "livecomments",
    params(("video" = String, Path, description = "Video id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]{1,64}$")),
    request_body = NewCommentRequest,
    responses(
        (status = 201, description = "Posted", body = CommentView),
        (status = 422, description = "Invalid video or body", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Commenting too fast", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn post_comment(
    State(lc): State<Arc<LiveComments>>,
    caller: Caller,
    Path(video): Path<String>,
    Json(request): Json<NewCommentRequest>,
) -> Result<Response> {
    check_video(&video)?;
    let chars = request.body.chars().count();
    if chars == 0
        || chars > BODY_CHARS_MAX
        || request.body.trim().is_empty()
        || request.body.chars().any(char::is_control)
    {
        return Err(ErrorKind::Invalid(format!(
            "body: 1–{BODY_CHARS_MAX} characters, not all spaces, no control characters"
        )));
    }
    if caller.id.is_empty() || caller.id.len() > 128 {
        return Err(ErrorKind::Invalid("caller ids are 1–128 bytes".into()));
    }
    let comment = lc.post(&video, &caller.id, &request.body).await?;
    Ok((StatusCode::CREATED, axum::Json(CommentView::from(comment))).into_response())
}

/// A video's comments, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/livecomments/videos/{video}/comments",
    tag = "livecomments",
    params(("video" = String, Path, description = "Video id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]{1,64}$"), PageQuery),
    responses(
        (status = 200, description = "A page", body = CommentPage),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid video or limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_comments(
    State(lc): State<Arc<LiveComments>>,
    _caller: MaybeCaller,
    Path(video): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<CommentPage>> {
    check_video(&video)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=PAGE_LIMIT_MAX).contains(&limit) {
        return Err(ErrorKind::Invalid(format!("limit: 1–{PAGE_LIMIT_MAX}")));
    }
    let before = query.before.unwrap_or(i64::MAX);
    if before < 1 {
        return Err(ErrorKind::Invalid("before: at least 1".into()));
    }
    let items = lc.store.page(&video, before, limit).await?;
    let next_before = (items.len() == limit as usize).then(|| items.last().map(|c| c.id)).flatten();
    Ok(axum::Json(CommentPage {
        items: items.into_iter().map(CommentView::from).collect(),
        next_before,
    }))
}

/// Keeps a stream's viewer present while the stream is open; leaves when it drops.
struct Watching {
    viewers: Viewers,
    video: String,
    viewer: String,
    connection: String,
    beat: tokio::task::JoinHandle<()>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.beat.abort();
        let (viewers, video, viewer, connection) = (
            self.viewers.clone(),
            self.video.clone(),
            self.viewer.clone(),
            self.connection.clone(),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = viewers.leave(&video, &viewer, &connection).await;
            });
        }
    }
}

/// Watch a video's comments as Server-Sent Events. The stream opens with
/// `event: resume` (`{"recovered": true}` when every comment after `Last-Event-ID`
/// follows, `false` when the client must reload the history), then one `comment`
/// event per comment (its `id` is the resume position), `gap` when the viewer fell
/// behind, comment lines as heartbeats, and `closed` at the end. The stream does not
/// end on its own.
#[utoipa::path(
    get,
    path = "/api/livecomments/videos/{video}/stream",
    tag = "livecomments",
    params(
        ("video" = String, Path, description = "Video id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]{1,64}$"),
        ("last-event-id" = Option<String>, Header, description = "The id of the last event received, to resume after it", max_length = 60),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 422, description = "Invalid video", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Presence unavailable, or this instance holds as many live videos as it can", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn watch(
    State(lc): State<Arc<LiveComments>>,
    caller: MaybeCaller,
    Path(video): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    check_video(&video)?;
    let topic = topic(&video).ok_or_else(|| ErrorKind::Invalid("video".into()))?;
    // A Last-Event-ID that is not a position of ours resumes nothing: a reset.
    let since = headers.get("last-event-id").map(|v| {
        v.to_str().ok().and_then(Position::decode).unwrap_or(Position {
            epoch: 0,
            stream: 0,
            seq: 0,
        })
    });
    let viewer = match caller.0 {
        Some(c) => c.id,
        None => format!("anon-{:016x}", rand::random::<u64>()),
    };
    let connection = format!("{:016x}", rand::random::<u64>());
    let ttl = lc.config.presence_ttl_ms;
    lc.viewers.beat(&video, &viewer, &connection, ttl).await.map_err(LiveCommentsError::from)?;
    let config = SubscribeConfig { capacity: VIEWER_BUFFER, policy: SlowConsumer::DropOldest };
    let (subscription, resume) =
        lc.hub.resume(&topic, since, config).map_err(|e| ErrorKind::Full(e.to_string()))?;
    let beat = {
        let (viewers, video, viewer, connection) =
            (lc.viewers.clone(), video.clone(), viewer.clone(), connection.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(ttl / 3)).await;
                if let Err(e) = viewers.beat(&video, &viewer, &connection, ttl).await {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "a viewer's presence beat failed"
                    );
                }
            }
        })
    };
    let guard = Watching { viewers: lc.viewers.clone(), video, viewer, connection, beat };
    let sse = SseConfig { event: Some("comment".into()), ..SseConfig::default() };
    let body = stream(subscription, resume, sse).map(move |frame| {
        let _keep = &guard;
        frame
    });
    Ok(girder_http::sse::response(body))
}

/// How many are watching a video now.
#[utoipa::path(
    get,
    path = "/api/livecomments/videos/{video}/viewers",
    tag = "livecomments",
    params(("video" = String, Path, description = "Video id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "The count", body = ViewersView),
        (status = 422, description = "Invalid video", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Presence unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn viewers(
    State(lc): State<Arc<LiveComments>>,
    _caller: MaybeCaller,
    Path(video): Path<String>,
) -> Result<axum::Json<ViewersView>> {
    check_video(&video)?;
    let (viewers, streams) = lc.viewers(&video).await?;
    Ok(axum::Json(ViewersView { viewers, streams }))
}

/// The OpenAPI document.
#[must_use]
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    <LiveCommentsApi as OpenApi>::openapi()
}
