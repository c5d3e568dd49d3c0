//! Top-K's HTTP surface: request and response shapes with their limits, handlers,
//! and the one place its errors become problems.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::event::{VIDEO_ID_MAX, valid_video_id};
use crate::generator::{GeneratorSpec, RATE_MAX, SKEW_MAX, VIDEOS_MAX};
use crate::span::Window;
use crate::top::Mode;
use crate::{BATCH_MAX, GeneratorState, TopK, TopKError};
use girder_http::extract::{Json, Query};
use girder_http::identity::{Caller, Operator};
use girder_http::problem::Problem;

/// The OpenAPI description of Top-K's endpoints.
#[derive(OpenApi)]
#[openapi(
    paths(post_views, get_top, get_stats, get_generator, start_generator, stop_generator),
    components(schemas(TopKViewEvent, TopKViewBatch, TopKIngestView, TopKWindow, TopKMode, TopKTopView,
                       TopKRankedView, TopKStatsView, TopKGeneratorRequest, TopKGeneratorView, Problem)),
    tags((name = "topk", description = "YouTube Top-K: view events in, the most viewed videos of a window out"))
)]
pub struct TopKApi;

/// The largest `k`.
const K_MAX: u32 = 100;
/// The largest request body of a batch (1,000 views of the longest ids fit well).
const BATCH_BYTES_MAX: usize = 256 * 1024;
/// The latest event time accepted in a request: the end of year 9999, in ms.
const AT_MS_MAX: i64 = 253_402_300_799_999;

/// One view.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopKViewEvent {
    /// The video: 1–64 characters of `A-Z a-z 0-9 _ -`.
    #[schema(
        example = "dQw4w9WgXcQ",
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9_-]{1,64}$"
    )]
    pub video_id: String,
    /// When it was viewed, in ms since the Unix epoch (default: now). A view more
    /// than the allowed skew ahead of the server's clock, or in a minute closed past
    /// the allowed lateness, is refused and counted as such.
    #[schema(minimum = 0, maximum = 253_402_300_799_999_i64)]
    pub at_ms: Option<i64>,
}

/// A batch of views.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopKViewBatch {
    /// 1–1,000 views.
    #[schema(min_items = 1, max_items = 1000)]
    pub views: Vec<TopKViewEvent>,
}

/// What a batch did.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct TopKIngestView {
    /// Views durable in the log, to be counted.
    pub accepted: u64,
    /// Views refused: their minute closed longer ago than the allowed lateness.
    pub rejected_too_old: u64,
    /// Views refused: further ahead of the server's clock than the allowed skew.
    pub rejected_in_future: u64,
}

/// A top-K's window.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TopKWindow {
    /// The current minute so far.
    Minute,
    /// The current minute and the 59 before it.
    Hour,
    /// The current minute and the 1,439 before it.
    Day,
    /// All time.
    All,
}

impl From<TopKWindow> for Window {
    fn from(w: TopKWindow) -> Self {
        match w {
            TopKWindow::Minute => Self::Minute,
            TopKWindow::Hour => Self::Hour,
            TopKWindow::Day => Self::Day,
            TopKWindow::All => Self::All,
        }
    }
}

/// How a top-K is computed.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TopKMode {
    /// Sums of the stored per-minute counts: exact.
    Exact,
    /// Merged Space-Saving summaries: fixed cost, each count with its error.
    Approx,
}

/// Which top-K.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// The window (default `hour`).
    #[param(inline)]
    pub window: Option<TopKWindow>,
    /// How many videos, 1–100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub k: Option<u32>,
    /// `exact` (default) or `approx`.
    #[param(inline)]
    pub mode: Option<TopKMode>,
}

/// One video of a top-K.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct TopKRankedView {
    /// 1 for the most viewed.
    pub rank: u32,
    /// The video.
    pub video_id: String,
    /// Its views in the window (in `approx` mode an upper bound).
    pub views: u64,
    /// How far `views` may be above the true count: the true count is in
    /// `views − error ..= views` (0 in `exact` mode).
    pub error: u64,
}

/// The most viewed videos of a window.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct TopKTopView {
    /// The window.
    pub window: TopKWindow,
    /// How it was computed.
    pub mode: TopKMode,
    /// The first minute of the window (minutes since the epoch); absent for `all`.
    pub first_minute: Option<i64>,
    /// The last (current) minute of the window; absent for `all`.
    pub last_minute: Option<i64>,
    /// All views in the window (from the summaries in `approx` mode).
    pub total_views: u64,
    /// `approx` only: a video not listed by the merged summary has at most this many
    /// views.
    pub floor: Option<u64>,
    /// `approx` only: how many stored summaries were merged.
    pub summaries_merged: Option<u64>,
    /// Most viewed first.
    pub videos: Vec<TopKRankedView>,
}

/// This instance's pipeline and the shared totals.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct TopKStatsView {
    /// This instance's id; its pipeline is `topk-<instance>`.
    pub instance: String,
    /// Views this process appended to its log.
    pub accepted: u64,
    /// Views this process refused as too old.
    pub rejected_too_old: u64,
    /// Views this process refused as ahead of its clock.
    pub rejected_in_future: u64,
    /// Views the pipeline refused as later than the allowed lateness.
    pub refused_late: u64,
    /// Views the pipeline refused because a partition's open counts were full.
    pub refused_full: u64,
    /// Per partition of this instance's log, views appended and not yet committed.
    pub lag: Vec<u64>,
    /// Instances counting into the shared database.
    pub pipelines: i64,
    /// All views counted by every instance.
    pub total_views: i64,
}

/// What the built-in generator should make.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopKGeneratorRequest {
    /// Views a second, 1–20,000 (default 200).
    #[schema(minimum = 1, maximum = 20000)]
    pub rate_per_sec: Option<u32>,
    /// Distinct videos, 1–100,000 (default 1,000), named `vid-000001` (most popular)
    /// and up.
    #[schema(minimum = 1, maximum = 100000)]
    pub videos: Option<u32>,
    /// The Zipf exponent of their popularity, 0–3 (default 1.1; 0 is uniform).
    #[schema(minimum = 0, maximum = 3)]
    pub skew: Option<f64>,
}

/// The built-in generator.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct TopKGeneratorView {
    /// Whether it runs.
    pub running: bool,
    /// Views a second, while it runs.
    pub rate_per_sec: Option<u32>,
    /// Distinct videos, while it runs.
    pub videos: Option<u32>,
    /// The Zipf exponent, while it runs.
    pub skew: Option<f64>,
    /// Views generated by the current run (or the last, once stopped).
    pub generated: u64,
}

impl From<GeneratorState> for TopKGeneratorView {
    fn from(s: GeneratorState) -> Self {
        Self {
            running: s.running.is_some(),
            rate_per_sec: s.running.map(|r| r.rate_per_sec),
            videos: s.running.map(|r| r.videos),
            skew: s.running.map(|r| r.skew),
            generated: s.generated,
        }
    }
}

/// Everything that can go wrong in Top-K, mapped to a problem in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A field broke its rule.
    #[error("{0}")]
    Invalid(String),
    /// A video id is malformed.
    #[error("views[{0}].video_id must be 1 to {VIDEO_ID_MAX} characters of A-Z a-z 0-9 _ -")]
    VideoId(usize),
    /// A batch has no views.
    #[error("a batch carries 1 to {BATCH_MAX} views, got none")]
    EmptyBatch,
    /// A batch has too many views.
    #[error("a batch carries at most {BATCH_MAX} views, got {0}")]
    BatchTooLarge(usize),
    /// `k` is out of range.
    #[error("k must be 1 to {K_MAX}, got {0}")]
    K(u32),
    /// The log or the database failed.
    #[error(transparent)]
    Backend(#[from] TopKError),
}

impl IntoResponse for ErrorKind {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        let problem = match &self {
            Self::Invalid(_) | Self::EmptyBatch => {
                Problem::new(unprocessable, "invalid-request", "Invalid request")
            }
            Self::VideoId(_) => Problem::new(unprocessable, "invalid-video-id", "Invalid video id"),
            Self::BatchTooLarge(_) => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "batch-too-large", "Batch too large")
            }
            Self::K(_) => Problem::new(unprocessable, "invalid-k", "Invalid k"),
            Self::Backend(_) => {
                tracing::error!(error = &self as &dyn std::error::Error, "top-k backend failure");
                return Problem::unavailable(
                    "the view log or the database is unavailable; retry later",
                )
                .into_response();
            }
        };
        problem.detail(detail).into_response()
    }
}

type Result<T, E = ErrorKind> = std::result::Result<T, E>;

impl TopK {
    /// The API routes, to be nested at `/api/topk`.
    pub fn api_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/views", post(post_views).layer(DefaultBodyLimit::max(BATCH_BYTES_MAX)))
            .route("/top", get(get_top))
            .route("/stats", get(get_stats))
            .route("/generator", get(get_generator).post(start_generator).delete(stop_generator))
            .with_state(Arc::clone(self))
    }
}

/// Count a batch of views. The answer comes once the accepted views are durable in
/// this instance's log; they show in the top-K within about a checkpoint interval.
#[utoipa::path(
    post,
    path = "/api/topk/views",
    tag = "topk",
    request_body = TopKViewBatch,
    responses(
        (status = 202, description = "Accepted for counting (refused views are counted in the answer)", body = TopKIngestView),
        (status = 413, description = "More than 1,000 views, or a body over 256 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An empty batch or a malformed video id or time", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Log unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn post_views(
    State(topk): State<Arc<TopK>>,
    _caller: Caller,
    Json(batch): Json<TopKViewBatch>,
) -> Result<Response> {
    if batch.views.is_empty() {
        return Err(ErrorKind::EmptyBatch);
    }
    if batch.views.len() > BATCH_MAX {
        return Err(ErrorKind::BatchTooLarge(batch.views.len()));
    }
    for (i, view) in batch.views.iter().enumerate() {
        if !valid_video_id(&view.video_id) {
            return Err(ErrorKind::VideoId(i));
        }
        if let Some(at) = view.at_ms
            && !(0..=AT_MS_MAX).contains(&at)
        {
            return Err(ErrorKind::Invalid(format!(
                "views[{i}].at_ms must be 0 to {AT_MS_MAX}, got {at}"
            )));
        }
    }
    let views: Vec<(&str, Option<i64>)> =
        batch.views.iter().map(|v| (v.video_id.as_str(), v.at_ms)).collect();
    let done = topk.ingest(&views).await?;
    let view = TopKIngestView {
        accepted: done.accepted,
        rejected_too_old: done.too_old,
        rejected_in_future: done.in_future,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(view)).into_response())
}

/// The most viewed videos of a window, summed over every instance.
#[utoipa::path(
    get,
    path = "/api/topk/top",
    tag = "topk",
    params(TopQuery),
    responses(
        (status = 200, description = "The top K", body = TopKTopView),
        (status = 422, description = "k out of range", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_top(
    State(topk): State<Arc<TopK>>,
    _caller: Caller,
    Query(query): Query<TopQuery>,
) -> Result<axum::Json<TopKTopView>> {
    let k = query.k.unwrap_or(10);
    if !(1..=K_MAX).contains(&k) {
        return Err(ErrorKind::K(k));
    }
    let window = query.window.unwrap_or(TopKWindow::Hour);
    let mode = query.mode.unwrap_or(TopKMode::Exact);
    let domain_mode = match mode {
        TopKMode::Exact => Mode::Exact,
        TopKMode::Approx => Mode::Approx,
    };
    let now = topk.current_minute();
    let top = topk.top(window.into(), domain_mode, k).await?;
    let range = Window::from(window).minutes(now);
    Ok(axum::Json(TopKTopView {
        window,
        mode,
        first_minute: range.map(|r| r.0),
        last_minute: range.map(|r| r.1),
        total_views: top.total_views,
        floor: top.floor,
        summaries_merged: (mode == TopKMode::Approx).then_some(top.summaries as u64),
        videos: top
            .videos
            .into_iter()
            .zip(1..)
            .map(|(v, rank)| TopKRankedView {
                rank,
                video_id: v.video,
                views: v.views,
                error: v.error,
            })
            .collect(),
    }))
}

/// This instance's pipeline (accepted and refused views, lag per partition) and the
/// totals every instance shares.
#[utoipa::path(
    get,
    path = "/api/topk/stats",
    tag = "topk",
    responses(
        (status = 200, description = "Counters", body = TopKStatsView),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_stats(
    State(topk): State<Arc<TopK>>,
    _caller: Caller,
) -> Result<axum::Json<TopKStatsView>> {
    let s = topk.stats().await?;
    Ok(axum::Json(TopKStatsView {
        instance: s.instance,
        accepted: s.accepted,
        rejected_too_old: s.too_old,
        rejected_in_future: s.in_future,
        refused_late: s.late,
        refused_full: s.full,
        lag: s.lag,
        pipelines: s.pipelines,
        total_views: s.total_views,
    }))
}

/// The built-in view generator of this instance.
#[utoipa::path(
    get,
    path = "/api/topk/generator",
    tag = "topk",
    responses((status = 200, description = "Its state", body = TopKGeneratorView)),
    security(("bearer" = []))
)]
async fn get_generator(
    State(topk): State<Arc<TopK>>,
    _caller: Caller,
) -> axum::Json<TopKGeneratorView> {
    axum::Json(topk.generator().await.into())
}

/// Start (or restart) this instance's view generator: Zipf-distributed views of
/// `videos` videos at `rate_per_sec`, through the same log as `POST /views`.
#[utoipa::path(
    post,
    path = "/api/topk/generator",
    tag = "topk",
    request_body = TopKGeneratorRequest,
    responses(
        (status = 200, description = "Running", body = TopKGeneratorView),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A value out of range", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn start_generator(
    State(topk): State<Arc<TopK>>,
    _operator: Operator,
    Json(request): Json<TopKGeneratorRequest>,
) -> Result<axum::Json<TopKGeneratorView>> {
    let spec = GeneratorSpec {
        rate_per_sec: request.rate_per_sec.unwrap_or(200),
        videos: request.videos.unwrap_or(1_000),
        skew: request.skew.unwrap_or(1.1),
    };
    spec.validate().map_err(ErrorKind::Invalid)?;
    debug_assert!(
        spec.rate_per_sec <= RATE_MAX && spec.videos <= VIDEOS_MAX && spec.skew <= SKEW_MAX
    );
    Ok(axum::Json(topk.start_generator(spec).await.into()))
}

/// Stop this instance's view generator (a no-op when it is not running).
#[utoipa::path(
    delete,
    path = "/api/topk/generator",
    tag = "topk",
    responses(
        (status = 200, description = "Stopped", body = TopKGeneratorView),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn stop_generator(
    State(topk): State<Arc<TopK>>,
    _operator: Operator,
) -> axum::Json<TopKGeneratorView> {
    axum::Json(topk.stop_generator().await.into())
}

/// The OpenAPI document.
#[must_use]
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    <TopKApi as OpenApi>::openapi()
}
