//! Uber's HTTP surface: drivers' duty, fixes (HTTP batches and a WebSocket) and
//! offers; riders' quotes, rides, actions and live streams; operators' zones,
//! airport queues and stats. Shapes with their limits, and the one place its errors
//! become problems.
//!
//! Who may see what: a ride exists only for its rider, its driver and the driver it
//! is offered to — to anyone else it is 404. Zones and surge are public to callers;
//! changing zones and reading queues and stats needs an operator token.

mod driver_ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures_util::StreamExt;
use girder_geo::Point;
use girder_http::extract::{Json, Path, Query};
use girder_http::identity::{Caller, Operator};
use girder_http::problem::Problem;
use girder_realtime::sse::{SseConfig, stream, write_event};
use girder_realtime::{Pattern, Resume, SlowConsumer, SubscribeConfig};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::ride::{RideAction, RideState};
use crate::store::RideRow;
use crate::zones::{AirportQueueView, Shape, ZoneKind};
use crate::{Uber, UberError, ride_topic};

pub use driver_ws::{DriverClientFrame, DriverServerFrame};

/// The OpenAPI description of Uber's endpoints.
#[derive(OpenApi)]
#[openapi(
    paths(
        set_duty, report_locations, current_offer, driver_ws::connect, accept, decline, quote,
        request_ride, list_rides, get_ride, act, ride_stream, nearby, put_zone, list_zones,
        delete_zone, zone_queue, surge, stats
    ),
    components(schemas(
        DriverStatusRequest, DriverView, FixView, LocationsRequest, LocationsView, OfferView,
        CurrentOfferView, AcceptRequest, QuoteView, LatLon, RideRequest, RideView, RidesView,
        RideActionRequest, RideAction, RideState, NearbyView, NearbyDriver, ZoneRequest,
        ZoneView, ZonesView, ZoneKind, Shape, AirportQueueView, SurgeView, SurgeCell, UberStatsView,
        DriverClientFrame, DriverServerFrame, Problem
    )),
    tags((name = "uber", description = "Uber: drivers' locations in a geo index, rides matched one offer at a time under fenced leases, live ride streams, surge and airport zones"))
)]
pub struct UberApi;

/// The OpenAPI document.
#[must_use]
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    <UberApi as OpenApi>::openapi()
}

pub(crate) fn router(uber: Arc<Uber>) -> Router {
    Router::new()
        .route("/drivers/me", put(set_duty))
        .route("/drivers/me/locations", post(report_locations))
        .route("/drivers/me/offer", get(current_offer))
        .route("/drivers/ws", get(driver_ws::connect))
        .route("/drivers/nearby", get(nearby))
        .route("/quote", get(quote))
        .route("/rides", post(request_ride).get(list_rides))
        .route("/rides/{ride}", get(get_ride))
        .route("/rides/{ride}/accept", post(accept))
        .route("/rides/{ride}/decline", post(decline))
        .route("/rides/{ride}/actions", post(act))
        .route("/rides/{ride}/stream", get(ride_stream))
        .route("/zones", get(list_zones))
        .route(
            "/zones/{zone}",
            put(put_zone).delete(delete_zone).layer(DefaultBodyLimit::max(ZONE_BODY_BYTES_MAX)),
        )
        .route("/zones/{zone}/queue", get(zone_queue))
        .route("/surge", get(surge))
        .route("/stats", get(stats))
        .with_state(uber)
}

const ID_BYTES_MAX: usize = 128;
const FIXES_MAX: usize = 100;
const ZONE_CHARS_MAX: usize = 64;
/// A zone's body: room for a polygon of the most vertices, written out loosely, so
/// that one vertex too many is a 422 that says so, not a 413.
const ZONE_BODY_BYTES_MAX: usize = 256 * 1024;

impl IntoResponse for UberError {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        match &self {
            Self::NotFound => Problem::not_found(detail).into_response(),
            Self::Invalid(_) => Problem::invalid(detail).into_response(),
            Self::Conflict(_) => Problem::conflict(detail).into_response(),
            Self::Forbidden(_) => Problem::forbidden(detail).into_response(),
            Self::Store(_) | Self::Backend(_) => {
                tracing::error!(error = &self as &dyn std::error::Error, "uber backend failure");
                Problem::unavailable("the ride store or geo index is unavailable; retry later")
                    .into_response()
            }
        }
    }
}

type Result<T, E = UberError> = std::result::Result<T, E>;

/// A user id from a token: 1–128 bytes, no control characters.
fn check_user(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > ID_BYTES_MAX || id.chars().any(char::is_control) {
        return Err(UberError::Invalid(format!(
            "user ids are 1–{ID_BYTES_MAX} bytes without control characters"
        )));
    }
    Ok(())
}

/// A ride id: 32 lowercase hex digits (as the server makes them).
fn check_ride(id: &str) -> Result<()> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(UberError::Invalid("ride ids are 32 lowercase hex digits".into()))
    }
}

/// A zone name: 1–64 of a-z 0-9 - _.
fn check_zone(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= ZONE_CHARS_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(UberError::Invalid("zone names are 1–64 of a-z 0-9 - _".into())) }
}

/// A point given as latitude and longitude.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LatLon {
    /// Latitude in degrees, -85.05112878..=85.05112878.
    #[schema(minimum = -85.05112878, maximum = 85.05112878)]
    pub lat: f64,
    /// Longitude in degrees, -180..=180.
    #[schema(minimum = -180, maximum = 180)]
    pub lon: f64,
}

impl LatLon {
    pub(crate) fn point(self, what: &str) -> Result<Point> {
        Point::indexable(self.lat, self.lon).map_err(|e| UberError::Invalid(format!("{what}: {e}")))
    }
}

/// Going on or off duty.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DriverStatusRequest {
    /// `true`: on duty (report fixes to be offered rides); `false`: off duty.
    pub online: bool,
}

/// A driver's status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DriverView {
    /// The driver.
    pub id: String,
    /// On duty.
    pub online: bool,
    /// The ride they hold under way.
    pub ride: Option<String>,
}

/// One location fix.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FixView {
    /// Latitude in degrees, -85.05112878..=85.05112878.
    #[schema(minimum = -85.05112878, maximum = 85.05112878)]
    pub lat: f64,
    /// Longitude in degrees, -180..=180.
    #[schema(minimum = -180, maximum = 180)]
    pub lon: f64,
    /// When it was taken, ms since the epoch [default: when received].
    #[schema(minimum = 0)]
    pub at_ms: Option<i64>,
}

/// A batch of fixes, oldest first.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationsRequest {
    /// 1–100 fixes; the last is where the driver is now.
    #[schema(min_items = 1, max_items = 100)]
    pub fixes: Vec<FixView>,
}

/// What a batch of fixes did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LocationsView {
    /// Fixes taken.
    pub accepted: usize,
    /// The driver holds a ride under way.
    pub on_ride: bool,
    /// Report again after this long, ms (shorter while a ride is under way).
    pub next_interval_ms: u64,
}

/// A ride offered to a driver.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OfferView {
    /// The ride.
    pub ride: String,
    /// Pickup.
    pub pickup: LatLon,
    /// Drop-off.
    pub dropoff: LatLon,
    /// The surge multiplier.
    pub surge: f64,
    /// The lease's fencing token: send it back to accept or decline.
    pub token: i64,
    /// The offer lapses at this time, ms since the epoch.
    pub expires_ms: i64,
}

impl OfferView {
    pub(crate) fn new(ride: &RideRow, token: i64, expires_ms: i64) -> Self {
        Self {
            ride: ride.id.clone(),
            pickup: LatLon { lat: ride.pickup_lat, lon: ride.pickup_lon },
            dropoff: LatLon { lat: ride.dropoff_lat, lon: ride.dropoff_lon },
            surge: ride.surge,
            token,
            expires_ms,
        }
    }
}

/// The offer open to the caller now, if any.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CurrentOfferView {
    /// The offer, or null.
    pub offer: Option<OfferView>,
}

/// Answering an offer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    /// The offer's token.
    #[schema(minimum = 1)]
    pub token: i64,
}

/// What a ride would cost now, and who is near.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuoteView {
    /// The surge multiplier at the pickup (1 outside surge zones).
    pub surge: f64,
    /// Free drivers within the search radius.
    pub drivers_nearby: usize,
    /// The nearest free driver's distance, m.
    pub nearest_m: Option<f64>,
    /// The airport zone the pickup is in, if any.
    pub airport: Option<String>,
}

/// Where a quote is asked for.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PointQuery {
    /// Latitude in degrees, -85.05112878..=85.05112878.
    #[param(minimum = -85.05112878, maximum = 85.05112878)]
    pub lat: f64,
    /// Longitude in degrees, -180..=180.
    #[param(minimum = -180, maximum = 180)]
    pub lon: f64,
    /// Search radius for `nearby`, m, 1–50,000 [default: the matcher's radius].
    #[param(minimum = 1, maximum = 50000)]
    pub radius_m: Option<u32>,
}

/// A ride asked for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RideRequest {
    /// Where to be picked up.
    pub pickup: LatLon,
    /// Where to go.
    pub dropoff: LatLon,
}

/// A ride.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RideView {
    /// Its id.
    pub id: String,
    /// Its rider.
    pub rider: String,
    /// Where it is in its life.
    pub state: String,
    /// Pickup.
    pub pickup: LatLon,
    /// Drop-off.
    pub dropoff: LatLon,
    /// The surge multiplier quoted when it was requested.
    pub surge: f64,
    /// Its driver, once one accepted.
    pub driver: Option<String>,
    /// Why it was cancelled (`rider`, `no_driver`).
    pub cancel_reason: Option<String>,
    /// When the rider was told the driver is arriving, ms.
    pub arriving_ms: Option<i64>,
    /// When it was requested, ms.
    pub created_ms: i64,
    /// When it last changed, ms.
    pub updated_ms: i64,
    /// Bumped by every change.
    pub version: i64,
}

impl RideView {
    pub(crate) fn from_row(r: &RideRow) -> Self {
        Self {
            id: r.id.clone(),
            rider: r.rider.clone(),
            state: r.state.clone(),
            pickup: LatLon { lat: r.pickup_lat, lon: r.pickup_lon },
            dropoff: LatLon { lat: r.dropoff_lat, lon: r.dropoff_lon },
            surge: r.surge,
            driver: r.driver.clone(),
            cancel_reason: r.cancel_reason.clone(),
            arriving_ms: r.arriving_ms,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
            version: r.version,
        }
    }
}

/// The caller's rides, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RidesView {
    /// Up to 50.
    pub items: Vec<RideView>,
}

/// A transition asked for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RideActionRequest {
    /// `depart`, `pickup`, `complete` (the driver) or `cancel` (either).
    pub action: RideAction,
}

/// A driver on the map.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NearbyDriver {
    /// An opaque id, stable per driver (not the driver's user id).
    pub id: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Distance from the point asked about, m.
    pub dist_m: f64,
    /// Free to take a ride.
    pub free: bool,
}

/// Drivers near a point, nearest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NearbyView {
    /// Up to 200.
    pub drivers: Vec<NearbyDriver>,
}

/// A zone to draw.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneRequest {
    /// `surge` or `airport`.
    pub kind: ZoneKind,
    /// Its area.
    pub shape: Shape,
}

/// A zone.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ZoneView {
    /// Its name.
    pub name: String,
    /// `surge` or `airport`.
    pub kind: ZoneKind,
    /// Its area.
    pub shape: Shape,
}

/// Every zone.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ZonesView {
    /// By name.
    pub items: Vec<ZoneView>,
}

/// One H3 cell's surge.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SurgeCell {
    /// The H3 cell (hex).
    pub cell: String,
    /// Its centre.
    pub center: LatLon,
    /// Requests in the window.
    pub demand: u64,
    /// Free drivers now.
    pub supply: u64,
    /// The multiplier.
    pub multiplier: f64,
}

/// Surge inside every surge zone.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SurgeView {
    /// The H3 resolution of the cells.
    pub resolution: u8,
    /// When computed, ms (0: not yet).
    pub computed_ms: i64,
    /// Cells with demand or supply, by cell.
    pub cells: Vec<SurgeCell>,
}

/// This instance's counters and the rides by state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UberStatsView {
    /// Drivers on duty with a fresh fix.
    pub drivers_on_duty: usize,
    /// Drivers free to take a ride.
    pub drivers_free: usize,
    /// Rides by state.
    pub rides: std::collections::BTreeMap<String, i64>,
    /// Fixes taken by this instance.
    pub fixes: u64,
    /// Offers made by this instance.
    pub offers: u64,
    /// Offers accepted through this instance.
    pub accepted: u64,
    /// Offers this instance found lapsed.
    pub offers_lapsed: u64,
    /// Rides this instance cancelled for want of a driver.
    pub no_driver: u64,
    /// The indexes are shared in Redis.
    pub shared_index: bool,
    /// This instance's id.
    pub instance: String,
}

/// Go on or off duty as a driver.
#[utoipa::path(
    put,
    path = "/api/uber/drivers/me",
    tag = "uber",
    request_body = DriverStatusRequest,
    responses(
        (status = 200, description = "The driver's status", body = DriverView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid request", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn set_duty(
    State(uber): State<Arc<Uber>>,
    caller: Caller,
    Json(request): Json<DriverStatusRequest>,
) -> Result<axum::Json<DriverView>> {
    check_user(&caller.id)?;
    uber.set_duty(&caller.id, request.online).await?;
    let ride = uber.store.active_ride_of_driver(&caller.id).await?;
    Ok(axum::Json(DriverView { id: caller.id, online: request.online, ride }))
}

/// Report a batch of the caller's location fixes, as a driver on duty.
#[utoipa::path(
    post,
    path = "/api/uber/drivers/me/locations",
    tag = "uber",
    request_body = LocationsRequest,
    responses(
        (status = 200, description = "Taken", body = LocationsView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not on duty", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fixes", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store or index unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn report_locations(
    State(uber): State<Arc<Uber>>,
    caller: Caller,
    Json(request): Json<LocationsRequest>,
) -> Result<axum::Json<LocationsView>> {
    check_user(&caller.id)?;
    if request.fixes.is_empty() || request.fixes.len() > FIXES_MAX {
        return Err(UberError::Invalid(format!("fixes: 1–{FIXES_MAX}")));
    }
    let now = uber.now_ms();
    let mut fixes = Vec::with_capacity(request.fixes.len());
    for (i, f) in request.fixes.iter().enumerate() {
        let p = LatLon { lat: f.lat, lon: f.lon }.point(&format!("fixes[{i}]"))?;
        let at = f.at_ms.unwrap_or(now);
        if at < 0 {
            return Err(UberError::Invalid(format!("fixes[{i}].at_ms must not be negative")));
        }
        fixes.push((p, at));
    }
    let done = uber.report(&caller.id, &fixes).await?;
    Ok(axum::Json(LocationsView {
        accepted: done.accepted,
        on_ride: done.on_ride,
        next_interval_ms: done.next_interval_ms,
    }))
}

/// The offer open to the caller now, as a driver (for clients without the socket).
#[utoipa::path(
    get,
    path = "/api/uber/drivers/me/offer",
    tag = "uber",
    responses(
        (status = 200, description = "The open offer, or null", body = CurrentOfferView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn current_offer(
    State(uber): State<Arc<Uber>>,
    caller: Caller,
) -> Result<axum::Json<CurrentOfferView>> {
    let offer = uber.open_offer(&caller.id).await?;
    Ok(axum::Json(CurrentOfferView { offer }))
}

/// Accept the ride offered to the caller.
#[utoipa::path(
    post,
    path = "/api/uber/rides/{ride}/accept",
    tag = "uber",
    params(("ride" = String, Path, description = "Ride id", pattern = r"^[0-9a-f]{32}$", min_length = 32, max_length = 32)),
    request_body = AcceptRequest,
    responses(
        (status = 200, description = "The ride, now the caller's", body = RideView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such ride offered to the caller", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The offer lapsed or was withdrawn, or the caller holds a ride", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid ride id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn accept(
    State(uber): State<Arc<Uber>>,
    caller: Caller,
    Path(ride): Path<String>,
    Json(request): Json<AcceptRequest>,
) -> Result<axum::Json<RideView>> {
    check_ride(&ride)?;
    let row = uber.accept(&caller.id, &ride, request.token).await?;
    Ok(axum::Json(RideView::from_row(&row)))
}

/// Decline the ride offered to the caller; it goes to the next driver.
#[utoipa::path(
    post,
    path = "/api/uber/rides/{ride}/decline",
    tag = "uber",
    params(("ride" = String, Path, description = "Ride id", pattern = r"^[0-9a-f]{32}$", min_length = 32, max_length = 32)),
    request_body = AcceptRequest,
    responses(
        (status = 204, description = "Declined"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The offer is not open to the caller", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid ride id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn decline(
    State(uber): State<Arc<Uber>>,
    caller: Caller,
    Path(ride): Path<String>,
    Json(request): Json<AcceptRequest>,
) -> Result<StatusCode> {
    check_ride(&ride)?;
    uber.decline(&caller.id, &ride, request.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a ride from a point would cost now, and how many free drivers are near.
#[utoipa::path(
    get,
    path = "/api/uber/quote",
    tag = "uber",
    params(PointQuery),
    responses(
        (status = 200, description = "The quote", body = QuoteView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid point", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Index unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn quote(
    State(uber): State<Arc<Uber>>,
    _caller: Caller,
    Query(query): Query<PointQuery>,
) -> Result<axum::Json<QuoteView>> {
    let at = LatLon { lat: query.lat, lon: query.lon }.point("point")?;
    let radius = query.radius_m.map_or(uber.config.search_radius_m, f64::from);
    check_radius(query.radius_m)?;
    Ok(axum::Json(uber.quote(at, radius).await?))
}

fn check_radius(radius_m: Option<u32>) -> Result<()> {
    match radius_m {
        Some(r) if r == 0 || r > 50_000 => Err(UberError::Invalid("radius_m: 1–50000".into())),
        _ => Ok(()),
    }
}

/// Ask for a ride. The caller may have one ride under way at a time.
#[utoipa::path(
    post,
    path = "/api/uber/rides",
    tag = "uber",
    request_body = RideRequest,
    responses(
        (status = 201, description = "Requested; a driver is being found", body = RideView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The caller has a ride under way", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid pickup or drop-off", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn request_ride(
    State(uber): State<Arc<Uber>>,
    caller: Caller,
    Json(request): Json<RideRequest>,
) -> Result<Response> {
    check_user(&caller.id)?;
    let pickup = request.pickup.point("pickup")?;
    let dropoff = request.dropoff.point("dropoff")?;
    let row = uber.request_ride(&caller.id, pickup, dropoff).await?;
    let location = format!("/api/uber/rides/{}", row.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(RideView::from_row(&row)))
        .into_response())
}

/// The caller's rides, as rider or driver, newest first.
#[utoipa::path(
    get,
    path = "/api/uber/rides",
    tag = "uber",
    responses(
        (status = 200, description = "Up to 50 rides", body = RidesView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_rides(
    State(uber): State<Arc<Uber>>,
    caller: Caller,
) -> Result<axum::Json<RidesView>> {
    let items = uber.store.rides_of(&caller.id, 50).await?.iter().map(RideView::from_row).collect();
    Ok(axum::Json(RidesView { items }))
}

/// One of the caller's rides.
#[utoipa::path(
    get,
    path = "/api/uber/rides/{ride}",
    tag = "uber",
    params(("ride" = String, Path, description = "Ride id", pattern = r"^[0-9a-f]{32}$", min_length = 32, max_length = 32)),
    responses(
        (status = 200, description = "The ride", body = RideView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such ride of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid ride id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_ride(
    State(uber): State<Arc<Uber>>,
    caller: Caller,
    Path(ride): Path<String>,
) -> Result<axum::Json<RideView>> {
    check_ride(&ride)?;
    let row = uber.ride_for(&caller.id, &ride).await?;
    Ok(axum::Json(RideView::from_row(&row)))
}

/// Move one of the caller's rides on: the driver departs, picks up and completes;
/// the rider cancels before pickup; the driver cancelling hands the ride back to be
/// offered to someone else.
#[utoipa::path(
    post,
    path = "/api/uber/rides/{ride}/actions",
    tag = "uber",
    params(("ride" = String, Path, description = "Ride id", pattern = r"^[0-9a-f]{32}$", min_length = 32, max_length = 32)),
    request_body = RideActionRequest,
    responses(
        (status = 200, description = "The ride after the action", body = RideView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the caller's action to take", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such ride of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not allowed in the ride's state, or it changed meanwhile", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid ride id or action", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn act(
    State(uber): State<Arc<Uber>>,
    caller: Caller,
    Path(ride): Path<String>,
    Json(request): Json<RideActionRequest>,
) -> Result<axum::Json<RideView>> {
    check_ride(&ride)?;
    let row = uber.act(&caller.id, &ride, request.action).await?;
    Ok(axum::Json(RideView::from_row(&row)))
}

/// Follow one of the caller's rides as server-sent events: `ride` (its state, first
/// at once and then on every change), `driver` (the driver's position while the
/// ride is under way) and `arriving` (the driver came within the arriving radius of
/// the pickup).
#[utoipa::path(
    get,
    path = "/api/uber/rides/{ride}/stream",
    tag = "uber",
    params(("ride" = String, Path, description = "Ride id", pattern = r"^[0-9a-f]{32}$", min_length = 32, max_length = 32)),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such ride of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid ride id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn ride_stream(
    State(uber): State<Arc<Uber>>,
    caller: Caller,
    Path(ride): Path<String>,
) -> Result<Response> {
    check_ride(&ride)?;
    // Subscribe before reading the ride, so no change falls between the two.
    let pattern = Pattern::new(ride_topic(&ride).as_str())
        .unwrap_or_else(|_| unreachable!("a topic is a pattern"));
    let sub = uber
        .hub
        .subscribe(&pattern, SubscribeConfig { capacity: 256, policy: SlowConsumer::DropOldest })
        .map_err(|e| UberError::Backend(e.to_string()))?;
    let row = uber.ride_for(&caller.id, &ride).await?;
    let mut first = bytes::BytesMut::new();
    let snapshot = serde_json::json!({ "type": "ride", "ride": RideView::from_row(&row) });
    write_event(&mut first, None, Some("ride"), &snapshot.to_string());
    let sse = SseConfig { event: Some("update".into()), ..SseConfig::default() };
    let body = futures_util::stream::once(async move { first.freeze() }).chain(stream(
        sub,
        Resume::Reset { oldest: None },
        sse,
    ));
    Ok(girder_http::sse::response(body))
}

/// Drivers on duty near a point, nearest first (opaque ids: for a map).
#[utoipa::path(
    get,
    path = "/api/uber/drivers/nearby",
    tag = "uber",
    params(PointQuery),
    responses(
        (status = 200, description = "Up to 200 drivers", body = NearbyView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid point or radius", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Index unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn nearby(
    State(uber): State<Arc<Uber>>,
    _caller: Caller,
    Query(query): Query<PointQuery>,
) -> Result<axum::Json<NearbyView>> {
    let at = LatLon { lat: query.lat, lon: query.lon }.point("point")?;
    check_radius(query.radius_m)?;
    let radius = query.radius_m.map_or(uber.config.search_radius_m, f64::from);
    Ok(axum::Json(NearbyView { drivers: uber.nearby(at, radius).await? }))
}

/// Draw or redraw a zone (operator).
#[utoipa::path(
    put,
    path = "/api/uber/zones/{zone}",
    tag = "uber",
    params(("zone" = String, Path, description = "Zone name", pattern = r"^[a-z0-9_-]{1,64}$", min_length = 1, max_length = 64)),
    request_body = ZoneRequest,
    responses(
        (status = 200, description = "The zone", body = ZoneView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or shape", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn put_zone(
    State(uber): State<Arc<Uber>>,
    _operator: Operator,
    Path(zone): Path<String>,
    Json(request): Json<ZoneRequest>,
) -> Result<axum::Json<ZoneView>> {
    check_zone(&zone)?;
    uber.put_zone(&zone, request.kind, &request.shape).await?;
    Ok(axum::Json(ZoneView { name: zone, kind: request.kind, shape: request.shape }))
}

/// Every zone.
#[utoipa::path(
    get,
    path = "/api/uber/zones",
    tag = "uber",
    responses(
        (status = 200, description = "The zones", body = ZonesView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_zones(
    State(uber): State<Arc<Uber>>,
    _caller: Caller,
) -> Result<axum::Json<ZonesView>> {
    Ok(axum::Json(ZonesView { items: uber.zone_views() }))
}

/// Erase a zone and its queue (operator).
#[utoipa::path(
    delete,
    path = "/api/uber/zones/{zone}",
    tag = "uber",
    params(("zone" = String, Path, description = "Zone name", pattern = r"^[a-z0-9_-]{1,64}$", min_length = 1, max_length = 64)),
    responses(
        (status = 204, description = "Erased"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such zone", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_zone(
    State(uber): State<Arc<Uber>>,
    _operator: Operator,
    Path(zone): Path<String>,
) -> Result<StatusCode> {
    check_zone(&zone)?;
    if uber.delete_zone(&zone).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(UberError::NotFound)
    }
}

/// An airport zone's queue of free drivers, first in first (operator).
#[utoipa::path(
    get,
    path = "/api/uber/zones/{zone}/queue",
    tag = "uber",
    params(("zone" = String, Path, description = "Zone name", pattern = r"^[a-z0-9_-]{1,64}$", min_length = 1, max_length = 64)),
    responses(
        (status = 200, description = "The queue", body = AirportQueueView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such airport zone", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn zone_queue(
    State(uber): State<Arc<Uber>>,
    _operator: Operator,
    Path(zone): Path<String>,
) -> Result<axum::Json<AirportQueueView>> {
    check_zone(&zone)?;
    Ok(axum::Json(uber.queue_view(&zone).await?))
}

/// Surge per H3 cell inside every surge zone, as last computed.
#[utoipa::path(
    get,
    path = "/api/uber/surge",
    tag = "uber",
    responses(
        (status = 200, description = "The surge map", body = SurgeView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn surge(State(uber): State<Arc<Uber>>, _caller: Caller) -> axum::Json<SurgeView> {
    axum::Json(uber.surge_view())
}

/// This instance's counters and the rides by state (operator).
#[utoipa::path(
    get,
    path = "/api/uber/stats",
    tag = "uber",
    responses(
        (status = 200, description = "The counters", body = UberStatsView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn stats(
    State(uber): State<Arc<Uber>>,
    _operator: Operator,
) -> Result<axum::Json<UberStatsView>> {
    Ok(axum::Json(uber.stats().await?))
}
