//! Ad Click Aggregator's HTTP surface: shapes with their limits, handlers, and the
//! one place its errors become problems.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::store::{Ad, MINUTE_MS};
use crate::token::TOKEN_CHARS_MAX;
use crate::{AdClicks, AdClicksError, ClickOutcome, Reconciliation};
use girder_http::extract::{Json, Path, Query};
use girder_http::identity::{Caller, Operator};
use girder_http::problem::Problem;

/// The OpenAPI description of Ad Click Aggregator's endpoints.
#[derive(OpenApi)]
#[openapi(
    paths(create_ad, list_ads, get_ad, create_impression, click, ad_clicks, stats, reconcile),
    components(schemas(NewAdRequest, AdView, AdPage, ImpressionView, ClicksView, BucketView,
                       Granularity, StatsView, PartitionView, ReconcileView, Problem)),
    tags((name = "adclicks", description = "Ad Click Aggregator: impressions, clicks counted once, per-minute aggregates"))
)]
pub struct AdClicksApi;

const NAME_CHARS_MAX: usize = 100;
const URL_BYTES_MAX: usize = 2_048;
const CALLER_ID_MAX: usize = 128;
const PAGE_LIMIT_MAX: u32 = 100;
/// The most buckets one query returns.
const BUCKETS_MAX: i64 = 10_080;

/// A new ad.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdRequest {
    /// A display name, 1–100 characters, no control characters.
    #[schema(
        example = "Winter sale",
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub name: String,
    /// Where a click goes: an absolute `http` or `https` URL of at most 2,048 bytes.
    #[schema(
        example = "https://shop.example/sale",
        min_length = 8,
        max_length = 2048,
        pattern = r"^https?://[^\s]+$"
    )]
    pub target_url: String,
}

/// An ad.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdView {
    /// Its id.
    pub id: i64,
    /// The advertiser.
    pub owner: String,
    /// Its name.
    pub name: String,
    /// Where clicks go.
    pub target_url: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
}

impl From<Ad> for AdView {
    fn from(a: Ad) -> Self {
        Self {
            id: a.id,
            owner: a.owner,
            name: a.name,
            target_url: a.target_url,
            created_ms: a.created_ms,
        }
    }
}

/// A page of the caller's ads, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdPage {
    /// The ads.
    pub items: Vec<AdView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<i64>,
}

/// An impression: the ad was shown to the caller.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImpressionView {
    /// The impression id (32 hex digits).
    pub impression_id: String,
    /// The signed token a click carries.
    pub token: String,
    /// The click URL (relative to this server).
    pub click_url: String,
    /// Until when a click is counted, ms since the Unix epoch.
    pub expires_ms: i64,
}

/// Bucket size.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One minute.
    #[default]
    Minute,
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl Granularity {
    const fn ms(self) -> i64 {
        match self {
            Self::Minute => MINUTE_MS,
            Self::Hour => 60 * MINUTE_MS,
            Self::Day => 24 * 60 * MINUTE_MS,
        }
    }
}

/// Which clicks to aggregate.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ClicksQuery {
    /// Start, ms since the Unix epoch (inclusive; rounded down to the bucket) [default:
    /// an hour before `to`].
    #[param(minimum = 0, maximum = 32503680000000_i64)]
    pub from: Option<i64>,
    /// End, ms since the Unix epoch (exclusive) [default: now].
    #[param(minimum = 0, maximum = 32503680000000_i64)]
    pub to: Option<i64>,
    /// Bucket size [default: minute]; at most 10,080 buckets per query.
    pub granularity: Option<Granularity>,
}

/// One bucket.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BucketView {
    /// Its start, ms since the Unix epoch.
    pub start_ms: i64,
    /// Clicks counted in it.
    pub clicks: i64,
}

/// An ad's clicks over a range.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClicksView {
    /// The ad.
    pub ad_id: i64,
    /// Bucket size.
    pub granularity: Granularity,
    /// Range start (rounded down to the bucket).
    pub from_ms: i64,
    /// Range end.
    pub to_ms: i64,
    /// Non-empty buckets, oldest first.
    pub buckets: Vec<BucketView>,
    /// Their sum.
    pub total: i64,
}

/// Paging through the caller's ads.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AdsQuery {
    /// Ads with ids above this [default: 0].
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Page size, 1–100 [default: 20].
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// One log partition of this instance's pipeline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartitionView {
    /// The partition.
    pub partition: u32,
    /// The member holding it.
    pub owner: Option<String>,
    /// Its fencing epoch.
    pub epoch: u64,
    /// The next offset the pipeline reads (checkpointed).
    pub next_offset: Option<u64>,
    /// The offset the next click will get (the embedded log only).
    pub end_offset: Option<u64>,
}

/// Counters since this instance started, and its pipeline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatsView {
    /// Clicks counted.
    pub counted: u64,
    /// Repeated clicks not counted.
    pub duplicates: u64,
    /// Clicks on expired impressions.
    pub expired: u64,
    /// Bloom filter "maybe seen" answers (each checked exactly).
    pub bloom_maybe: u64,
    /// Of those, impressions not in fact clicked before (false positives, counted).
    pub bloom_false_positives: u64,
    /// Counted clicks the log did not take (reconciliation counts them).
    pub unlogged: u64,
    /// Logged clicks the stream refused (late beyond the allowed lateness).
    pub refused: u64,
    /// The pipeline's name.
    pub pipeline: String,
    /// Its partitions.
    pub partitions: Vec<PartitionView>,
}

/// A reconciliation's findings.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReconcileView {
    /// Range start.
    pub from_ms: i64,
    /// Range end (the last closed minute).
    pub to_ms: i64,
    /// (ad, minute) pairs compared.
    pub checked: u64,
    /// Pairs whose stream count differed from the raw clicks.
    pub drifted: u64,
    /// The sum of the differences.
    pub drift: i64,
    /// Corrections written or removed.
    pub repaired: u64,
}

/// Which minutes to reconcile.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReconcileQuery {
    /// Start, ms since the Unix epoch [default: the reconcile window before `to`].
    #[param(minimum = 0, maximum = 32503680000000_i64)]
    pub from: Option<i64>,
    /// End, ms since the Unix epoch; at most the last closed minute [default: it].
    #[param(minimum = 0, maximum = 32503680000000_i64)]
    pub to: Option<i64>,
}

/// What went wrong, as a problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The body or a parameter is out of bounds.
    #[error("{0}")]
    Invalid(String),
    /// The token is not one this server issued.
    #[error("the click token is not a genuine impression")]
    Token,
    /// No such ad.
    #[error("no ad {0}")]
    UnknownAd(i64),
    /// Someone else's ad.
    #[error("ad {0} belongs to another advertiser")]
    NotOwner(i64),
    /// A store failed.
    #[error("store")]
    Store(#[from] AdClicksError),
}

impl From<sqlx::Error> for ErrorKind {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

impl IntoResponse for ErrorKind {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        let problem = match &self {
            Self::Invalid(_) => Problem::new(unprocessable, "invalid-request", "Invalid request"),
            Self::Token => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-impression", "Invalid impression")
            }
            Self::UnknownAd(_) => Problem::new(StatusCode::NOT_FOUND, "unknown-ad", "Unknown ad"),
            Self::NotOwner(_) => Problem::new(StatusCode::FORBIDDEN, "not-your-ad", "Not your ad"),
            Self::Store(_) => {
                tracing::error!(
                    error = &self as &dyn std::error::Error,
                    "adclicks backend failure"
                );
                return Problem::unavailable("the click store is unavailable; retry later")
                    .into_response();
            }
        };
        problem.detail(detail).into_response()
    }
}

type Result<T, E = ErrorKind> = std::result::Result<T, E>;

impl AdClicks {
    /// The API routes, to be nested at `/api/adclicks`.
    pub fn api_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/ads", post(create_ad).get(list_ads))
            .route("/ads/{id}", get(get_ad))
            .route("/ads/{id}/impressions", post(create_impression))
            .route("/ads/{id}/clicks", get(ad_clicks))
            .route("/click/{token}", get(click))
            .route("/stats", get(stats))
            .route("/reconcile", post(reconcile))
            .with_state(Arc::clone(self))
    }
}

/// The latest time a query takes (the year 3000), in ms since the Unix epoch.
const TIME_MS_MAX: i64 = 32_503_680_000_000;

/// Refuses a `from`/`to` outside `0..=TIME_MS_MAX`, as the schema says, rather than
/// clamping it.
fn check_times(from: Option<i64>, to: Option<i64>) -> Result<()> {
    for (name, t) in [("from", from), ("to", to)] {
        if t.is_some_and(|t| !(0..=TIME_MS_MAX).contains(&t)) {
            return Err(ErrorKind::Invalid(format!(
                "{name}: 0..={TIME_MS_MAX} ms since the Unix epoch"
            )));
        }
    }
    Ok(())
}

fn check_caller(caller: &Caller) -> Result<()> {
    let id = &caller.id;
    if id.is_empty() || id.len() > CALLER_ID_MAX {
        return Err(ErrorKind::Invalid(format!("caller ids are 1–{CALLER_ID_MAX} bytes")));
    }
    Ok(())
}

fn check_ad(request: &NewAdRequest) -> Result<()> {
    let chars = request.name.chars().count();
    if chars == 0 || chars > NAME_CHARS_MAX || request.name.chars().any(char::is_control) {
        return Err(ErrorKind::Invalid(format!(
            "name: 1–{NAME_CHARS_MAX} characters without control characters"
        )));
    }
    let url = &request.target_url;
    let parsed = url::Url::parse(url).ok();
    let ok = url.len() <= URL_BYTES_MAX
        && (url.starts_with("http://") || url.starts_with("https://"))
        && !url.chars().any(char::is_whitespace)
        && parsed.is_some_and(|u| u.host_str().is_some_and(|h| !h.is_empty()))
        && HeaderValue::from_str(url).is_ok();
    if ok {
        Ok(())
    } else {
        Err(ErrorKind::Invalid(format!(
            "target_url: an absolute http(s) URL with a host, at most {URL_BYTES_MAX} bytes"
        )))
    }
}

async fn own_ad(ads: &AdClicks, caller: &Caller, id: i64) -> Result<Ad> {
    match ads.store.ad(id).await? {
        None => Err(ErrorKind::UnknownAd(id)),
        Some(ad) if ad.owner != caller.id && !caller.is_operator() => Err(ErrorKind::NotOwner(id)),
        Some(ad) => Ok(ad),
    }
}

/// Create an ad as the caller (the advertiser).
#[utoipa::path(
    post,
    path = "/api/adclicks/ads",
    tag = "adclicks",
    request_body = NewAdRequest,
    responses(
        (status = 201, description = "Created", body = AdView),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_ad(
    State(ads): State<Arc<AdClicks>>,
    caller: Caller,
    Json(request): Json<NewAdRequest>,
) -> Result<Response> {
    check_caller(&caller)?;
    check_ad(&request)?;
    let ad =
        ads.store.create_ad(&caller.id, &request.name, &request.target_url, ads.now_ms()).await?;
    Ok((StatusCode::CREATED, axum::Json(AdView::from(ad))).into_response())
}

/// The caller's ads, oldest first.
#[utoipa::path(
    get,
    path = "/api/adclicks/ads",
    tag = "adclicks",
    params(AdsQuery),
    responses(
        (status = 200, description = "A page", body = AdPage),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Limit out of range", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_ads(
    State(ads): State<Arc<AdClicks>>,
    caller: Caller,
    Query(query): Query<AdsQuery>,
) -> Result<axum::Json<AdPage>> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=PAGE_LIMIT_MAX).contains(&limit) {
        return Err(ErrorKind::Invalid(format!("limit: 1–{PAGE_LIMIT_MAX}")));
    }
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ErrorKind::Invalid("after: at least 0".into()));
    }
    let items = ads.store.ads_of(&caller.id, after, limit).await?;
    let next_after = (items.len() == limit as usize).then(|| items.last().map(|a| a.id)).flatten();
    Ok(axum::Json(AdPage { items: items.into_iter().map(AdView::from).collect(), next_after }))
}

/// One of the caller's ads.
#[utoipa::path(
    get,
    path = "/api/adclicks/ads/{id}",
    tag = "adclicks",
    params(("id" = i64, Path, description = "Ad id")),
    responses(
        (status = 200, description = "The ad", body = AdView),
        (status = 400, description = "Id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another advertiser's ad", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown ad", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_ad(
    State(ads): State<Arc<AdClicks>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<axum::Json<AdView>> {
    Ok(axum::Json(own_ad(&ads, &caller, id).await?.into()))
}

/// Record that the ad was shown to the caller: a signed impression whose click URL
/// counts one click.
#[utoipa::path(
    post,
    path = "/api/adclicks/ads/{id}/impressions",
    tag = "adclicks",
    params(("id" = i64, Path, description = "Ad id")),
    responses(
        (status = 201, description = "The impression", body = ImpressionView),
        (status = 400, description = "Id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown ad", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Caller id too long", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_impression(
    State(ads): State<Arc<AdClicks>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Response> {
    check_caller(&caller)?;
    if ads.store.ad(id).await?.is_none() {
        return Err(ErrorKind::UnknownAd(id));
    }
    let (impression, token) = ads.impression(id, &caller.id);
    let view = ImpressionView {
        impression_id: impression.id_hex(),
        click_url: format!("/api/adclicks/click/{token}"),
        token,
        expires_ms: impression.issued_ms.saturating_add(ads.config.impression_ttl_ms),
    };
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// Follow a click: redirects to the advertiser. The impression's first click within
/// its time to live is counted; `girder-click` says what happened.
#[utoipa::path(
    get,
    path = "/api/adclicks/click/{token}",
    tag = "adclicks",
    params(("token" = String, Path, description = "The impression token", max_length = 300, pattern = r"^[A-Za-z0-9_-]+$")),
    responses(
        (status = 302, description = "To the advertiser",
         headers(("location" = String, description = "The ad's target URL"),
                 ("girder-click" = String, description = "`counted`, `duplicate` or `expired`"))),
        (status = 400, description = "Not a genuine impression", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The ad is gone", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many clicks from this address or user", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn click(State(ads): State<Arc<AdClicks>>, Path(token): Path<String>) -> Result<Response> {
    if token.len() > TOKEN_CHARS_MAX {
        return Err(ErrorKind::Token);
    }
    let impression = ads.verify(&token).ok_or(ErrorKind::Token)?;
    let ad = ads.store.ad(impression.ad_id).await?.ok_or(ErrorKind::UnknownAd(impression.ad_id))?;
    let outcome = ads.click(&impression).await?;
    let location =
        HeaderValue::from_str(&ad.target_url).map_err(|_| ErrorKind::UnknownAd(ad.id))?;
    let said = match outcome {
        ClickOutcome::Counted => "counted",
        ClickOutcome::Duplicate => "duplicate",
        ClickOutcome::Expired => "expired",
    };
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::HeaderName::from_static("girder-click"), HeaderValue::from_static(said)),
        ],
    )
        .into_response())
}

/// An ad's clicks per minute, hour or day over a range (the caller's own ads).
#[utoipa::path(
    get,
    path = "/api/adclicks/ads/{id}/clicks",
    tag = "adclicks",
    params(("id" = i64, Path, description = "Ad id"), ClicksQuery),
    responses(
        (status = 200, description = "The buckets", body = ClicksView),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another advertiser's ad", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown ad", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Range out of bounds", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn ad_clicks(
    State(ads): State<Arc<AdClicks>>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(query): Query<ClicksQuery>,
) -> Result<axum::Json<ClicksView>> {
    let granularity = query.granularity.unwrap_or_default();
    let g = granularity.ms();
    check_times(query.from, query.to)?;
    let to = query.to.unwrap_or_else(|| ads.now_ms());
    let from = query.from.unwrap_or(to.saturating_sub(3_600_000)).max(0);
    if from >= to {
        return Err(ErrorKind::Invalid("from must be before to".into()));
    }
    let from = from - from.rem_euclid(g);
    if (to - from).div_euclid(g) > BUCKETS_MAX {
        return Err(ErrorKind::Invalid(format!("at most {BUCKETS_MAX} buckets per query")));
    }
    own_ad(&ads, &caller, id).await?;
    let buckets = ads.store.buckets(id, from, to, g).await?;
    let total = buckets.iter().map(|(_, n)| n).sum();
    Ok(axum::Json(ClicksView {
        ad_id: id,
        granularity,
        from_ms: from,
        to_ms: to,
        buckets: buckets
            .into_iter()
            .map(|(start_ms, clicks)| BucketView { start_ms, clicks })
            .collect(),
        total,
    }))
}

/// This instance's counters and its stream pipeline's partitions.
#[utoipa::path(
    get,
    path = "/api/adclicks/stats",
    tag = "adclicks",
    responses(
        (status = 200, description = "Counters", body = StatsView),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn stats(
    State(ads): State<Arc<AdClicks>>,
    _operator: Operator,
) -> Result<axum::Json<StatsView>> {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &ads.counters;
    let rows = ads.stream.partitions().await.map_err(|e| match e {
        girder_stream::sql::SqlStreamError::Db(e) => ErrorKind::from(e),
        other => ErrorKind::Invalid(other.to_string()),
    })?;
    let partitions = rows
        .into_iter()
        .map(|r| PartitionView {
            partition: r.partition,
            owner: r.owner,
            epoch: r.epoch,
            next_offset: r.next_offset,
            end_offset: ads.log.end_offset(r.partition),
        })
        .collect();
    Ok(axum::Json(StatsView {
        counted: c.counted.load(Relaxed),
        duplicates: c.duplicates.load(Relaxed),
        expired: c.expired.load(Relaxed),
        bloom_maybe: c.bloom_maybe.load(Relaxed),
        bloom_false_positives: c.bloom_false_positives.load(Relaxed),
        unlogged: c.unlogged.load(Relaxed),
        refused: c.refused.load(Relaxed),
        pipeline: ads.stream.pipeline().to_owned(),
        partitions,
    }))
}

/// Recompute closed minutes from the raw clicks, report the stream's drift and
/// repair it.
#[utoipa::path(
    post,
    path = "/api/adclicks/reconcile",
    tag = "adclicks",
    params(ReconcileQuery),
    responses(
        (status = 200, description = "The findings", body = ReconcileView),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Range out of bounds", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn reconcile(
    State(ads): State<Arc<AdClicks>>,
    _operator: Operator,
    Query(query): Query<ReconcileQuery>,
) -> Result<axum::Json<ReconcileView>> {
    check_times(query.from, query.to)?;
    let closed = ads.closed_before();
    // A `to` past the last closed minute is shortened to it (the response says so).
    let to = query.to.unwrap_or(closed).min(closed);
    let from = query.from.unwrap_or(to.saturating_sub(ads.config.reconcile_window_ms)).max(0);
    if from >= to {
        return Err(ErrorKind::Invalid(format!(
            "from must be before to (at most the last closed minute, {closed})"
        )));
    }
    if to - from > 31 * 24 * 3_600_000 {
        return Err(ErrorKind::Invalid("at most 31 days per reconciliation".into()));
    }
    let Reconciliation { checked, drifted, drift, repaired } = ads.reconcile(from, to).await?;
    Ok(axum::Json(ReconcileView { from_ms: from, to_ms: to, checked, drifted, drift, repaired }))
}

/// The OpenAPI document, with links from each creating operation to the operations
/// that take what it created.
#[must_use]
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    use girder_http::openapi::link_created_ids;
    let mut doc = <AdClicksApi as OpenApi>::openapi();
    link_created_ids(&mut doc, "/api/adclicks/ads", &["get_ad", "create_impression", "ad_clicks"]);
    doc
}
