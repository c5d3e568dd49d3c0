//! Tinder's HTTP surface: the caller's profile, the feed, swipes, matches, the event
//! stream and the operator's stats; shapes with their limits, and the one place its
//! errors become problems.
//!
//! Everything is the caller's own: a profile is the token subject's, swipes are made
//! as the subject, matches are listed and ended only by one of their two users
//! (anyone else gets 404, whether or not the match exists). Other users' profiles are
//! seen only through the feed and matches, with a distance in whole kilometres and
//! never their place.

mod stream;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use girder_geo::index::GeoIndex;
use girder_http::extract::{Json, Path, Query};
use girder_http::identity::{Caller, Operator};
use girder_http::problem::Problem;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::profile::{Gender, Profile, ProfileDraft, shown_km};
use crate::store::MatchRow;
use crate::{MatchEvent, Tinder, TinderError};

/// The OpenAPI description of Tinder's endpoints.
#[derive(OpenApi)]
#[openapi(
    paths(
        get_profile, put_profile, put_location, feed, swipe, list_matches, unmatch,
        stream::events, stats
    ),
    components(schemas(
        ProfileRequest, ProfileView, LocationRequest, Gender, FeedPageView, CandidateView,
        SwipeRequest, SwipeAction, SwipeView, MatchView, MatchPageView, MatchEvent,
        TinderStatsView, Problem
    )),
    tags((name = "tinder", description = "Tinder: a mutual, nearest-first feed shown once, swipes and matches pushed over SSE"))
)]
pub struct TinderApi;

const FEED_LIMIT_MAX: u32 = 50;
const MATCHES_LIMIT_MAX: u32 = 100;

impl IntoResponse for TinderError {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        let problem = match &self {
            Self::Invalid(_) | Self::Profile(_) => Problem::invalid(detail),
            Self::NoProfile => {
                Problem::new(StatusCode::NOT_FOUND, "no-profile", "No profile").detail(detail)
            }
            Self::ProfileRequired => {
                Problem::new(StatusCode::CONFLICT, "profile-required", "Profile required")
                    .detail(detail)
            }
            Self::UnknownProfile(_) => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-profile", "Unknown profile")
                    .detail(detail)
            }
            Self::NoMatch => Problem::not_found(detail),
            Self::Cursor(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-cursor", "Invalid cursor")
                    .detail(detail)
            }
            Self::Contention => {
                let mut response = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "Busy")
                    .detail(detail)
                    .into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
            Self::Store(_) | Self::Index(_) | Self::Stream(_) | Self::Sketch(_) => {
                tracing::error!(error = &self as &dyn std::error::Error, "tinder backend failure");
                Problem::unavailable("a Tinder store is unavailable; retry later")
            }
        };
        problem.into_response()
    }
}

type Result<T, E = TinderError> = std::result::Result<T, E>;

/// The caller's profile, as they write it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    /// The display name: 1–50 characters, not all spaces, no control characters.
    #[schema(
        example = "Ann",
        min_length = 1,
        max_length = 50,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    /// Age in years, 18–120.
    #[schema(minimum = 18, maximum = 120)]
    pub age: i64,
    /// The caller's gender.
    pub gender: Gender,
    /// The genders the caller wants to be shown: 1–3, each once.
    #[schema(value_type = BTreeSet<Gender>, min_items = 1, max_items = 3)]
    pub interested_in: Vec<Gender>,
    /// The youngest age the caller wants to be shown, 18–120 (at most `age_max`).
    #[schema(minimum = 18, maximum = 120)]
    pub age_min: i64,
    /// The oldest age the caller wants to be shown, 18–120.
    #[schema(minimum = 18, maximum = 120)]
    pub age_max: i64,
    /// How far away, at most, profiles may be, km (1–500). Showing is mutual: a
    /// profile is shown only if the caller is within its distance too.
    #[schema(minimum = 1, maximum = 500)]
    pub max_distance_km: i64,
    /// Latitude, degrees (the geo index holds ±85.05112878).
    #[schema(minimum = -85.05112878, maximum = 85.05112878, example = 52.52)]
    pub lat: f64,
    /// Longitude, degrees.
    #[schema(minimum = -180, maximum = 180, example = 13.405)]
    pub lon: f64,
    /// A few words, at most 500 characters; line breaks are the only control
    /// characters allowed [default: empty].
    #[schema(max_length = 500, pattern = r"^[^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*$")]
    pub bio: Option<String>,
}

/// A new place for the caller.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationRequest {
    /// Latitude, degrees (the geo index holds ±85.05112878).
    #[schema(minimum = -85.05112878, maximum = 85.05112878, example = 52.53)]
    pub lat: f64,
    /// Longitude, degrees.
    #[schema(minimum = -180, maximum = 180, example = 13.41)]
    pub lon: f64,
}

/// The caller's own profile.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProfileView {
    /// The caller's id.
    pub user: String,
    /// The display name.
    pub name: String,
    /// Age in years.
    pub age: i64,
    /// Gender.
    pub gender: Gender,
    /// The genders the caller wants to be shown.
    pub interested_in: Vec<Gender>,
    /// The youngest age the caller wants to be shown.
    pub age_min: i64,
    /// The oldest age the caller wants to be shown.
    pub age_max: i64,
    /// The search distance, km.
    pub max_distance_km: i64,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// A few words.
    pub bio: String,
    /// When it was made, ms since the epoch.
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
}

impl From<Profile> for ProfileView {
    fn from(p: Profile) -> Self {
        Self {
            interested_in: p.interested_in.to_vec(),
            lat: p.location.lat(),
            lon: p.location.lon(),
            user: p.user,
            name: p.name,
            age: p.age,
            gender: p.gender,
            age_min: p.age_min,
            age_max: p.age_max,
            max_distance_km: p.max_distance_km,
            bio: p.bio,
            created_ms: p.created_ms,
            updated_ms: p.updated_ms,
        }
    }
}

/// A profile in the feed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CandidateView {
    /// Their id (to swipe on).
    pub user: String,
    /// Their name.
    pub name: String,
    /// Their age.
    pub age: i64,
    /// Their gender.
    pub gender: Gender,
    /// Their few words.
    pub bio: String,
    /// How far away, whole km rounded up (at least 1).
    pub distance_km: u32,
}

/// A page of the feed, nearest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FeedPageView {
    /// The profiles; none of them is shown to the caller again while their seen
    /// filters remember it (one to two generations, 24–48 h by default).
    pub items: Vec<CandidateView>,
    /// Pass as `cursor` for the next page; absent when nothing is left within the
    /// caller's distance. A page may hold fewer than `limit` profiles, or none, and
    /// still have a next one: it stopped after examining `scan_max` candidates.
    pub next_cursor: Option<String>,
    /// Candidates this page read and filtered.
    pub examined: usize,
    /// The search radius the page ended at, km.
    pub radius_km: i64,
}

/// Paging through the feed.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Profiles per page, 1–50 [default: 10].
    #[param(minimum = 1, maximum = 50)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor` [default: the nearest first].
    #[param(min_length = 1, max_length = 512, pattern = r"^[A-Za-z0-9_-]{1,512}$")]
    pub cursor: Option<String>,
}

/// Which way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SwipeAction {
    /// Right: interested. Returned, it is a match.
    Like,
    /// Left: not interested.
    Pass,
}

/// A swipe.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwipeRequest {
    /// The user swiped on (not the caller): 1–128 bytes, no control characters.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
    pub target: String,
    /// `like` or `pass`.
    pub action: SwipeAction,
}

/// A stored swipe.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SwipeView {
    /// The user swiped on.
    pub target: String,
    /// `like` or `pass`: the first swipe's, for a repeat.
    pub action: SwipeAction,
    /// When the first swipe was stored, ms since the epoch.
    pub created_ms: i64,
    /// Whether both liked each other.
    pub matched: bool,
    /// The match, when there is one.
    pub match_id: Option<i64>,
}

/// One of the caller's matches.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MatchView {
    /// The match.
    pub id: i64,
    /// The other user.
    pub user: String,
    /// Their name.
    pub name: String,
    /// Their age.
    pub age: i64,
    /// Their gender.
    pub gender: Gender,
    /// Their few words.
    pub bio: String,
    /// When the match was made, ms since the epoch.
    pub created_ms: i64,
}

impl From<MatchRow> for MatchView {
    fn from(m: MatchRow) -> Self {
        Self {
            id: m.id,
            user: m.other.user,
            name: m.other.name,
            age: m.other.age,
            gender: m.other.gender,
            bio: m.other.bio,
            created_ms: m.created_ms,
        }
    }
}

/// A page of matches, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MatchPageView {
    /// The matches.
    pub items: Vec<MatchView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Paging through matches.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MatchesQuery {
    /// Matches per page, 1–100 [default: 20].
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor` [default: the newest first].
    #[param(min_length = 1, max_length = 512, pattern = r"^[A-Za-z0-9_-]{1,512}$")]
    pub cursor: Option<String>,
}

/// Counters of this instance and rows of the database (operators).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TinderStatsView {
    /// Profiles in the table.
    pub profiles: i64,
    /// Members of the geo index this instance searches.
    pub indexed: usize,
    /// Whether that index is Redis's, shared by every instance.
    pub shared_index: bool,
    /// Swipes in the table.
    pub swipes: i64,
    /// Of which likes.
    pub likes: i64,
    /// Matches in the table.
    pub matches: i64,
    /// Users with seen filters.
    pub users_with_seen_filters: i64,
    /// Feed pages served here.
    pub pages: u64,
    /// Profiles those pages showed.
    pub shown: u64,
    /// Candidates they read from the table.
    pub examined: u64,
    /// Hits they passed over because a seen filter may hold them.
    pub hidden_by_seen: u64,
    /// Profiles dropped from a page because a page served at the same time showed
    /// them.
    pub dropped_as_concurrent: u64,
    /// Seen filter writes that lost to another page's (and were retried).
    pub seen_conflicts: u64,
    /// Seen filters whose stored bytes failed their checks and started over.
    pub seen_damaged: u64,
    /// Pages whose search reached `depth_max` hits.
    pub depth_capped: u64,
    /// Matches made through this instance.
    pub matches_made_here: u64,
    /// `match` events published from this instance.
    pub events_pushed: u64,
    /// Index writes that failed and were left to the refresh.
    pub index_failures: u64,
    /// Event streams opened here.
    pub streams_opened: u64,
    /// The configured false-positive rate of one full seen filter.
    pub seen_false_positive_rate: f64,
    /// Profiles a seen filter is sized for.
    pub seen_items_per_generation: u64,
    /// How long a seen filter stays current, ms.
    pub seen_generation_ms: u64,
}

impl Tinder {
    /// The API routes, to be nested at `/api/tinder`.
    pub fn api_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/profiles/me", get(get_profile).put(put_profile))
            .route("/profiles/me/location", put(put_location))
            .route("/feed", get(feed))
            .route("/swipes", post(swipe))
            .route("/matches", get(list_matches))
            .route("/matches/{id}", delete(unmatch))
            .route("/events/stream", get(stream::events))
            .route("/stats", get(stats))
            .with_state(Arc::clone(self))
    }
}

/// The caller's profile.
#[utoipa::path(
    get,
    path = "/api/tinder/profiles/me",
    tag = "tinder",
    responses(
        (status = 200, description = "The profile", body = ProfileView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller has no profile yet", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_profile(
    State(tinder): State<Arc<Tinder>>,
    caller: Caller,
) -> Result<axum::Json<ProfileView>> {
    let profile = tinder.profile(&caller.id).await?.ok_or(TinderError::NoProfile)?;
    Ok(axum::Json(ProfileView::from(profile)))
}

/// Create or replace the caller's profile; it is in the feed of others (and they in
/// its) from now on.
#[utoipa::path(
    put,
    path = "/api/tinder/profiles/me",
    tag = "tinder",
    request_body = ProfileRequest,
    responses(
        (status = 200, description = "The stored profile", body = ProfileView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field breaks a rule (ages, genders, distance, place, name, bio)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn put_profile(
    State(tinder): State<Arc<Tinder>>,
    caller: Caller,
    Json(request): Json<ProfileRequest>,
) -> Result<axum::Json<ProfileView>> {
    let draft = ProfileDraft {
        name: request.name,
        age: request.age,
        gender: request.gender,
        interested_in: request.interested_in,
        age_min: request.age_min,
        age_max: request.age_max,
        max_distance_km: request.max_distance_km,
        lat: request.lat,
        lon: request.lon,
        bio: request.bio.unwrap_or_default(),
    };
    let profile = tinder.put_profile(&caller.id, &draft).await?;
    Ok(axum::Json(ProfileView::from(profile)))
}

/// Move the caller: the feed's distances (theirs and others') follow.
#[utoipa::path(
    put,
    path = "/api/tinder/profiles/me/location",
    tag = "tinder",
    request_body = LocationRequest,
    responses(
        (status = 200, description = "The moved profile", body = ProfileView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller has no profile yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A place the index cannot hold", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn put_location(
    State(tinder): State<Arc<Tinder>>,
    caller: Caller,
    Json(request): Json<LocationRequest>,
) -> Result<axum::Json<ProfileView>> {
    let profile = tinder.move_to(&caller.id, request.lat, request.lon).await?;
    Ok(axum::Json(ProfileView::from(profile)))
}

/// The caller's feed: profiles within their distance that they want, and that want
/// them back within *their* distance, nearest first, never one the caller swiped, and
/// none shown before while the caller's seen filters remember it. Follow
/// `next_cursor` for more; each page reads a bounded number of candidates.
#[utoipa::path(
    get,
    path = "/api/tinder/feed",
    tag = "tinder",
    params(FeedQuery),
    responses(
        (status = 200, description = "A page", body = FeedPageView),
        (status = 400, description = "Malformed query, or a cursor that is forged or from another list or user", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The caller has no profile yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Limit out of range", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store or index unavailable, or busy (Retry-After)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn feed(
    State(tinder): State<Arc<Tinder>>,
    caller: Caller,
    Query(query): Query<FeedQuery>,
) -> Result<axum::Json<FeedPageView>> {
    let limit = query.limit.unwrap_or(10);
    if !(1..=FEED_LIMIT_MAX).contains(&limit) {
        return Err(TinderError::Invalid(format!("limit: 1–{FEED_LIMIT_MAX}")));
    }
    let feed = tinder.feed(&caller.id, limit as usize, query.cursor.as_deref()).await?;
    let items = feed
        .page
        .items
        .into_iter()
        .map(|(p, dist_m)| CandidateView {
            user: p.user,
            name: p.name,
            age: p.age,
            gender: p.gender,
            bio: p.bio,
            distance_km: shown_km(dist_m),
        })
        .collect();
    Ok(axum::Json(FeedPageView {
        items,
        next_cursor: feed.next_cursor,
        examined: feed.page.examined,
        radius_km: feed.page.radius_km,
    }))
}

/// Swipe on a profile. The first swipe on a profile is final: a repeat answers the
/// stored swipe with 200 and changes nothing. A like that the other already gave is
/// a match, pushed to both as a `match` event.
#[utoipa::path(
    post,
    path = "/api/tinder/swipes",
    tag = "tinder",
    request_body = SwipeRequest,
    responses(
        (status = 201, description = "Stored", body = SwipeView),
        (status = 200, description = "A repeat: the stored swipe", body = SwipeView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The target has no profile", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The caller has no profile yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Swiping oneself, or a malformed target", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn swipe(
    State(tinder): State<Arc<Tinder>>,
    caller: Caller,
    Json(request): Json<SwipeRequest>,
) -> Result<Response> {
    let liked = request.action == SwipeAction::Like;
    let outcome = tinder.swipe(&caller.id, &request.target, liked).await?;
    let view = SwipeView {
        target: outcome.swipe.target,
        action: if outcome.swipe.liked { SwipeAction::Like } else { SwipeAction::Pass },
        created_ms: outcome.swipe.created_ms,
        matched: outcome.matched.is_some(),
        match_id: outcome.matched.map(|(id, _)| id),
    };
    let status = if outcome.new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(view)).into_response())
}

/// The caller's matches, newest first.
#[utoipa::path(
    get,
    path = "/api/tinder/matches",
    tag = "tinder",
    params(MatchesQuery),
    responses(
        (status = 200, description = "A page", body = MatchPageView),
        (status = 400, description = "Malformed query, or a cursor that is forged or from another list or user", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Limit out of range", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_matches(
    State(tinder): State<Arc<Tinder>>,
    caller: Caller,
    Query(query): Query<MatchesQuery>,
) -> Result<axum::Json<MatchPageView>> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=MATCHES_LIMIT_MAX).contains(&limit) {
        return Err(TinderError::Invalid(format!("limit: 1–{MATCHES_LIMIT_MAX}")));
    }
    let (rows, next_cursor) = tinder.matches(&caller.id, limit, query.cursor.as_deref()).await?;
    Ok(axum::Json(MatchPageView {
        items: rows.into_iter().map(MatchView::from).collect(),
        next_cursor,
    }))
}

/// End one of the caller's matches. The swipes stay: neither is shown the other
/// again.
#[utoipa::path(
    delete,
    path = "/api/tinder/matches/{id}",
    tag = "tinder",
    params(("id" = i64, Path, description = "Match id", minimum = 1)),
    responses(
        (status = 204, description = "Ended"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such match of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An id below 1", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn unmatch(
    State(tinder): State<Arc<Tinder>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    if id < 1 {
        return Err(TinderError::Invalid("id: at least 1".into()));
    }
    tinder.unmatch(&caller.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This instance's counters and the tables' row counts (operators).
#[utoipa::path(
    get,
    path = "/api/tinder/stats",
    tag = "tinder",
    responses(
        (status = 200, description = "The counters", body = TinderStatsView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store or index unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn stats(
    State(tinder): State<Arc<Tinder>>,
    _operator: Operator,
) -> Result<axum::Json<TinderStatsView>> {
    let counts = tinder.store.counts().await?;
    let indexed = tinder.locations.index().len().await?;
    let c = &tinder.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let seen = &tinder.config.seen;
    Ok(axum::Json(TinderStatsView {
        profiles: counts.profiles,
        indexed,
        shared_index: matches!(tinder.index(), girder_geo::index::AnyGeoIndex::Redis(_)),
        swipes: counts.swipes,
        likes: counts.likes,
        matches: counts.matches,
        users_with_seen_filters: counts.seen_rows,
        pages: load(&c.pages),
        shown: load(&c.shown),
        examined: load(&c.examined),
        hidden_by_seen: load(&c.hidden_by_seen),
        dropped_as_concurrent: load(&c.dropped_as_concurrent),
        seen_conflicts: load(&c.seen_conflicts),
        seen_damaged: load(&c.seen_damaged),
        depth_capped: load(&c.depth_capped),
        matches_made_here: load(&c.matches),
        events_pushed: load(&c.events),
        index_failures: load(&c.index_failures),
        streams_opened: load(&c.streams),
        seen_false_positive_rate: seen.false_positive_rate,
        seen_items_per_generation: seen.items_per_generation,
        seen_generation_ms: seen.generation_ms,
    }))
}

/// The OpenAPI document.
#[must_use]
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    <TinderApi as OpenApi>::openapi()
}
