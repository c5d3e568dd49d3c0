//! Ticketmaster's HTTP surface: request and response shapes, validation,
//! handlers, and the one place its errors become problems.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use girder_realtime::sse::{SseConfig, stream};
use girder_realtime::{Position, SlowConsumer, SubscribeConfig};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{OpenApi, ToSchema};

use super::booking::{SEATS_PER_RESERVATION_MAX, seat_id};
use super::seats::{SeatError, SeatRow, SeatState};
use super::store::{Event, Reservation, ReservationState, Section, StoreError, Venue};
use super::waiting_room::{frontier, wait_ms};
use super::{Ticketmaster, new_id, seat_topic};
use girder_http::cursor::CursorError;
use girder_http::extract::{Json, Path, Query};
use girder_http::idempotency::IdempotencyKey;
use girder_http::identity::{Caller, Operator};
use girder_http::problem::Problem;

/// The OpenAPI description of Ticketmaster's endpoints.
#[derive(OpenApi)]
#[openapi(
    paths(
        create_venue, get_venue, create_event, list_events, get_event, seat_map, seat_stream,
        reserve, confirm, get_reservation, cancel, join_queue, queue_status
    ),
    components(schemas(
        CreateVenueRequest, Section, VenueView, CreateEventRequest, WaitingRoomSpec, EventView,
        EventPage, SeatView, SeatMap, SeatState, SeatChange, ReserveRequest, ReservationView,
        ReservationState, ConfirmRequest, QueueView, Problem
    )),
    tags((name = "ticketmaster", description = "Ticket booking under contention"))
)]
pub struct TicketmasterApi;

/// Bounds of a venue.
const SECTIONS_MAX: usize = 20;
const ROWS_MAX: u32 = 100;
const SEATS_PER_ROW_MAX: u32 = 100;
const VENUE_SEATS_MAX: u32 = 20_000;
const PRICE_CENTS_MAX: i64 = 10_000_000;
const SECTION_NAME_LEN_MAX: usize = 16;
/// Bounds of names and other text.
const NAME_LEN_MAX: usize = 200;
const CITY_LEN_MAX: usize = 100;
const TOKEN_LEN_MAX: usize = 64;
const SEAT_ID_LEN_MAX: usize = 64;
const ADMISSION_LEN_MAX: usize = 128;
const QUERY_LEN_MAX: usize = 100;
const ADMIT_PER_SEC_MAX: u32 = 100_000;
/// The largest page the event listing returns.
pub const PAGE_LIMIT_MAX: u32 = 100;
/// A seat-map stream's buffer of seat changes not yet written to its connection.
const STREAM_BUFFER: usize = 1_024;
const LIST_SCOPE: &str = "ticketmaster.events";

/// A new venue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVenueRequest {
    /// 1–200 characters.
    #[schema(example = "Royal Albert Hall")]
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub name: String,
    /// 1–100 characters.
    #[schema(example = "London")]
    #[schema(min_length = 1, max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub city: String,
    /// 1–20 sections with distinct names; at most 20,000 seats in all.
    #[schema(min_items = 1, max_items = 20)]
    pub sections: Vec<Section>,
}

/// A stored venue.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VenueView {
    /// Venue id.
    pub id: String,
    /// Name.
    pub name: String,
    /// City.
    pub city: String,
    /// Sections.
    pub sections: Vec<Section>,
    /// Seats in all sections.
    pub seat_count: u32,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

/// An event's waiting room.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitingRoomSpec {
    /// Users admitted per second, 1–100,000.
    #[schema(minimum = 1, maximum = 100_000)]
    pub admit_per_sec: u32,
}

/// A new event.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEventRequest {
    /// 1–200 characters.
    #[schema(example = "Proms 2030: First Night")]
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub name: String,
    /// The venue whose seats are sold.
    #[schema(max_length = 64)]
    pub venue_id: String,
    /// Start time (RFC 3339).
    #[schema(example = "2030-07-18T19:30:00Z", format = DateTime)]
    pub starts_at: String,
    /// A waiting room admitting users at a fixed rate, or `null` for none.
    #[serde(default)]
    pub waiting_room: Option<WaitingRoomSpec>,
}

/// A stored event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Event id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Venue id.
    pub venue_id: String,
    /// Start time (RFC 3339).
    pub starts_at: String,
    /// The waiting room, if any.
    pub waiting_room: Option<WaitingRoomSpec>,
}

/// One page of events, by start time.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// The events on this page.
    pub items: Vec<EventView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Query parameters of the event listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Case-insensitive substring of the name, at most 100 characters.
    #[param(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub q: Option<String>,
    /// Only events starting at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Only events starting before this time (RFC 3339).
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One seat of the seat map.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SeatView {
    /// `section-row-number`, e.g. `A-3-12`.
    pub id: String,
    /// Section name.
    pub section: String,
    /// Row, from 1.
    pub row: u32,
    /// Seat number in the row, from 1.
    pub number: u32,
    /// Price in cents.
    pub price_cents: i64,
    /// `available`, `held` or `sold`; a lapsed hold shows `available`.
    pub status: SeatState,
}

/// Every seat of an event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SeatMap {
    /// The event.
    pub event_id: String,
    /// All seats, section by section, row by row.
    pub seats: Vec<SeatView>,
}

/// One seat's new state, as the seat-map stream sends it (`event: seat`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SeatChange {
    /// `section-row-number`, e.g. `A-3-12`.
    pub seat: String,
    /// `available`, `held` or `sold`.
    pub status: SeatState,
    /// While held: when the hold lapses (RFC 3339). The seat is available from then
    /// on; the stream says so once the sweeper has reset its row.
    pub held_until: Option<String>,
}

/// The stream's message for a captured seat row, read at `now_ms`.
pub(crate) fn seat_change(row: &SeatRow, now_ms: i64) -> SeatChange {
    let (status, until) = row.status(now_ms);
    SeatChange { seat: row.item.clone(), status, held_until: until.map(rfc3339) }
}

/// A hold request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// 1–10 distinct seat ids.
    #[schema(example = json!(["A-3-12", "A-3-13"]), min_items = 1, max_items = 10)]
    pub seats: Vec<String>,
    /// The admission token from the waiting room, for events that have one.
    #[schema(max_length = 128)]
    pub admission: Option<String>,
}

/// A reservation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReservationView {
    /// Reservation id.
    pub id: String,
    /// The event.
    pub event_id: String,
    /// Its owner.
    pub user: String,
    /// Seat ids, sorted.
    pub seats: Vec<String>,
    /// When the hold lapses (RFC 3339).
    pub expires_at: String,
    /// `held`, `confirmed`, `cancelled` or `expired`.
    pub state: ReservationState,
    /// Total price in cents.
    pub amount_cents: i64,
    /// The charge, once confirmed.
    pub charge_id: Option<String>,
}

impl From<Reservation> for ReservationView {
    fn from(r: Reservation) -> Self {
        Self {
            id: r.id,
            event_id: r.event_id,
            user: r.user,
            seats: r.seats,
            expires_at: rfc3339(r.until_ms),
            state: r.state,
            amount_cents: r.amount_cents,
            charge_id: r.charge_id,
        }
    }
}

/// A confirmation: what the caller pays with.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// The fake provider's token: `tok_ok`, `tok_decline`, `tok_timeout_before`,
    /// `tok_timeout_after` (1–64 characters).
    #[schema(
        example = "tok_ok",
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub payment_token: String,
}

/// A place in an event's waiting room.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    /// The event.
    pub event_id: String,
    /// The user.
    pub user: String,
    /// 1-based position; joining again returns the same one.
    pub position: i64,
    /// Whether the user may reserve now.
    pub admitted: bool,
    /// Milliseconds until admission (0 once admitted).
    pub estimated_wait_ms: u64,
    /// The token `reserve` requires, once admitted.
    pub admission: Option<String>,
}

/// Everything that can go wrong in Ticketmaster, mapped to a problem in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A field broke a rule.
    #[error("{0}")]
    Invalid(String),
    /// The venue does not exist.
    #[error("no venue {0:?}")]
    UnknownVenue(String),
    /// The event does not exist.
    #[error("no event {0:?}")]
    UnknownEvent(String),
    /// Seats that do not exist at the event.
    #[error("no such seats: {}", .0.join(", "))]
    UnknownSeats(Vec<String>),
    /// The reservation does not exist.
    #[error("no reservation {0:?}")]
    UnknownReservation(String),
    /// Seats someone else holds or bought.
    #[error("seats already taken: {}", .0.join(", "))]
    SeatsTaken(Vec<String>),
    /// The event has a waiting room and no admission was given.
    #[error("this event has a waiting room: join the queue and reserve with its admission token")]
    AdmissionRequired,
    /// The admission token is not valid for this event and user.
    #[error("the admission token is not valid for this event and user")]
    AdmissionInvalid,
    /// The reservation belongs to someone else.
    #[error("the reservation belongs to another user")]
    NotOwner,
    /// The reservation is no longer held.
    #[error("the reservation is {}", .0.as_str())]
    NotHeld(ReservationState),
    /// The hold lapsed; anything charged was refunded.
    #[error("the hold expired; nothing is charged")]
    HoldExpired,
    /// The payment provider knows this key from another payment (the layer keeps
    /// keys per caller; the provider's ledger is global).
    #[error("this Idempotency-Key was already used for another payment; use a new key")]
    KeyUsedElsewhere,
    /// Another Idempotency-Key is confirming this reservation.
    #[error("another Idempotency-Key is confirming this reservation; retry that key")]
    OtherKeyInProgress,
    /// The payment was declined.
    #[error("{0}")]
    Declined(String),
    /// The payment provider did not answer; retry with the same key.
    #[error("the payment provider timed out; retry with the same Idempotency-Key")]
    PaymentTimeout,
    /// The event has no waiting room.
    #[error("event {0:?} has no waiting room")]
    NoWaitingRoom(String),
    /// The user is not in the queue.
    #[error("user has not joined the queue of event {0:?}")]
    NotInQueue(String),
    /// A page cursor was malformed, forged or from another list.
    #[error(transparent)]
    Cursor(#[from] CursorError),
    /// The tables failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The reservation store failed.
    #[error(transparent)]
    Seats(#[from] SeatError),
    /// This instance streams as many events' seat maps as it holds.
    #[error("{0}")]
    StreamsFull(String),
}

impl ErrorKind {
    /// The problem document this error is answered with.
    #[must_use]
    pub fn problem(&self) -> Problem {
        use StatusCode as S;
        let (status, slug, title) = match self {
            Self::Invalid(_) => (S::UNPROCESSABLE_ENTITY, "invalid-request", "Invalid request"),
            Self::UnknownVenue(_) => (S::NOT_FOUND, "unknown-venue", "Unknown venue"),
            Self::UnknownEvent(_) => (S::NOT_FOUND, "unknown-event", "Unknown event"),
            Self::UnknownSeats(_) => (S::NOT_FOUND, "unknown-seat", "Unknown seat"),
            Self::UnknownReservation(_) => {
                (S::NOT_FOUND, "unknown-reservation", "Unknown reservation")
            }
            Self::SeatsTaken(_) => (S::CONFLICT, "seats-taken", "Seats already taken"),
            Self::AdmissionRequired => (S::FORBIDDEN, "admission-required", "Admission required"),
            Self::AdmissionInvalid => (S::FORBIDDEN, "admission-invalid", "Invalid admission"),
            Self::NotOwner => (S::FORBIDDEN, "not-your-reservation", "Not your reservation"),
            Self::NotHeld(_) => (S::CONFLICT, "reservation-not-held", "Reservation not held"),
            Self::HoldExpired => (S::CONFLICT, "hold-expired", "Hold expired"),
            Self::OtherKeyInProgress => {
                (S::CONFLICT, "confirmation-in-progress", "Confirmation in progress")
            }
            Self::KeyUsedElsewhere => {
                (S::UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency-Key reused")
            }
            Self::Declined(_) => (S::PAYMENT_REQUIRED, "payment-declined", "Payment declined"),
            Self::PaymentTimeout => (S::GATEWAY_TIMEOUT, "payment-timeout", "Payment timeout"),
            Self::NoWaitingRoom(_) => (S::NOT_FOUND, "no-waiting-room", "No waiting room"),
            Self::NotInQueue(_) => (S::NOT_FOUND, "not-in-queue", "Not in the queue"),
            Self::Cursor(_) => (S::BAD_REQUEST, "invalid-cursor", "Invalid cursor"),
            Self::StreamsFull(detail) => return Problem::unavailable(detail.clone()),
            Self::Store(_) | Self::Seats(_) => {
                tracing::error!(
                    error = self as &dyn std::error::Error,
                    "ticketmaster backend failure"
                );
                return Problem::unavailable("a store is unavailable; retry later");
            }
        };
        Problem::new(status, slug, title).detail(self.to_string())
    }
}

impl IntoResponse for ErrorKind {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

type Result<T, E = ErrorKind> = std::result::Result<T, E>;

impl Ticketmaster {
    /// The API routes, to be nested at `/api/ticketmaster`.
    pub fn api_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/venues", post(create_venue))
            .route("/venues/{id}", get(get_venue))
            .route("/events", post(create_event).get(list_events))
            .route("/events/{id}", get(get_event))
            .route("/events/{id}/seats", get(seat_map))
            .route("/events/{id}/seats/stream", get(seat_stream))
            .route(
                "/events/{id}/reservations",
                post(reserve).route_layer(self.idempotency.optional()),
            )
            .route("/events/{id}/queue", post(join_queue).get(queue_status))
            .route("/reservations/{id}", get(get_reservation).delete(cancel))
            .route(
                "/reservations/{id}/confirm",
                post(confirm).route_layer(self.idempotency.required()),
            )
            .with_state(Arc::clone(self))
    }
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn parse_time(field: &str, raw: &str) -> Result<i64> {
    let t = OffsetDateTime::parse(raw, &Rfc3339)
        .map_err(|e| ErrorKind::Invalid(format!("{field}: not an RFC 3339 timestamp ({e})")))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ErrorKind::Invalid(format!("{field}: out of range")))
}

fn text(field: &str, value: &str, max: usize) -> Result<()> {
    let chars = value.chars().count();
    if chars == 0 || chars > max {
        return Err(ErrorKind::Invalid(format!("{field} must be 1 to {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(ErrorKind::Invalid(format!("{field} must not contain control characters")));
    }
    Ok(())
}

fn validate_venue(request: &CreateVenueRequest) -> Result<u32> {
    text("name", &request.name, NAME_LEN_MAX)?;
    text("city", &request.city, CITY_LEN_MAX)?;
    if request.sections.is_empty() || request.sections.len() > SECTIONS_MAX {
        return Err(ErrorKind::Invalid(format!("sections must number 1 to {SECTIONS_MAX}")));
    }
    let mut names = HashSet::new();
    let mut total: u32 = 0;
    for s in &request.sections {
        let ok_name = !s.name.is_empty()
            && s.name.len() <= SECTION_NAME_LEN_MAX
            && s.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok_name {
            return Err(ErrorKind::Invalid(format!(
                "section name {:?} must be 1 to {SECTION_NAME_LEN_MAX} of A-Z a-z 0-9 _",
                s.name.chars().take(SECTION_NAME_LEN_MAX + 1).collect::<String>()
            )));
        }
        if !names.insert(s.name.as_str()) {
            return Err(ErrorKind::Invalid(format!("section name {:?} is repeated", s.name)));
        }
        if !(1..=ROWS_MAX).contains(&s.rows) {
            return Err(ErrorKind::Invalid(format!("rows must be 1 to {ROWS_MAX}")));
        }
        if !(1..=SEATS_PER_ROW_MAX).contains(&s.seats_per_row) {
            return Err(ErrorKind::Invalid(format!(
                "seats_per_row must be 1 to {SEATS_PER_ROW_MAX}"
            )));
        }
        if !(0..=PRICE_CENTS_MAX).contains(&s.price_cents) {
            return Err(ErrorKind::Invalid(format!("price_cents must be 0 to {PRICE_CENTS_MAX}")));
        }
        total += s.rows * s.seats_per_row;
    }
    if total > VENUE_SEATS_MAX {
        return Err(ErrorKind::Invalid(format!(
            "a venue holds at most {VENUE_SEATS_MAX} seats, these sections hold {total}"
        )));
    }
    Ok(total)
}

fn seat_count(sections: &[Section]) -> u32 {
    sections.iter().map(|s| s.rows * s.seats_per_row).sum()
}

fn venue_view(venue: Venue) -> VenueView {
    VenueView {
        seat_count: seat_count(&venue.sections),
        created_at: rfc3339(venue.created_at_ms),
        id: venue.id,
        name: venue.name,
        city: venue.city,
        sections: venue.sections,
    }
}

fn event_view(event: &Event) -> EventView {
    EventView {
        id: event.id.clone(),
        name: event.name.clone(),
        venue_id: event.venue_id.clone(),
        starts_at: rfc3339(event.starts_at_ms),
        waiting_room: event
            .admit_per_sec
            .map(|r| WaitingRoomSpec { admit_per_sec: u32::try_from(r).unwrap_or(u32::MAX) }),
    }
}

fn created<T: Serialize>(body: &T) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// Create a venue.
#[utoipa::path(
    post,
    path = "/api/ticketmaster/venues",
    tag = "ticketmaster",
    request_body = CreateVenueRequest,
    responses(
        (status = 201, description = "Created", body = VenueView),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field broke a rule", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_venue(
    State(tm): State<Arc<Ticketmaster>>,
    _operator: Operator,
    Json(request): Json<CreateVenueRequest>,
) -> Result<Response> {
    validate_venue(&request)?;
    let venue = Venue {
        id: new_id("v"),
        name: request.name,
        city: request.city,
        sections: request.sections,
        created_at_ms: tm.now_ms(),
    };
    tm.db.insert_venue(&venue).await?;
    Ok(created(&venue_view(venue)))
}

/// Look a venue up.
#[utoipa::path(
    get,
    path = "/api/ticketmaster/venues/{id}",
    tag = "ticketmaster",
    params(("id" = String, Path, description = "Venue id")),
    responses(
        (status = 200, description = "The venue", body = VenueView),
        (status = 404, description = "Unknown venue", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_venue(
    State(tm): State<Arc<Ticketmaster>>,
    Path(id): Path<String>,
) -> Result<axum::Json<VenueView>> {
    let venue = tm.db.venue(&id).await?.ok_or(ErrorKind::UnknownVenue(id))?;
    Ok(axum::Json(venue_view(venue)))
}

/// Create an event and put all its seats on sale.
#[utoipa::path(
    post,
    path = "/api/ticketmaster/events",
    tag = "ticketmaster",
    request_body = CreateEventRequest,
    responses(
        (status = 201, description = "Created", body = EventView),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown venue", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field broke a rule", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_event(
    State(tm): State<Arc<Ticketmaster>>,
    _operator: Operator,
    Json(request): Json<CreateEventRequest>,
) -> Result<Response> {
    text("name", &request.name, NAME_LEN_MAX)?;
    let starts_at_ms = parse_time("starts_at", &request.starts_at)?;
    if let Some(room) = request.waiting_room
        && !(1..=ADMIT_PER_SEC_MAX).contains(&room.admit_per_sec)
    {
        return Err(ErrorKind::Invalid(format!(
            "waiting_room.admit_per_sec must be 1 to {ADMIT_PER_SEC_MAX}"
        )));
    }
    let venue = tm
        .db
        .venue(&request.venue_id)
        .await?
        .ok_or_else(|| ErrorKind::UnknownVenue(request.venue_id.clone()))?;
    let now_ms = tm.now_ms();
    let event = Event {
        id: new_id("e"),
        name: request.name,
        venue_id: venue.id.clone(),
        starts_at_ms,
        admit_per_sec: request.waiting_room.map(|r| i64::from(r.admit_per_sec)),
        queue_opened_at_ms: request.waiting_room.map(|_| now_ms),
        created_at_ms: now_ms,
    };
    let mut ids = Vec::with_capacity(seat_count(&venue.sections) as usize);
    for s in &venue.sections {
        for row in 1..=s.rows {
            for number in 1..=s.seats_per_row {
                ids.push(seat_id(&s.name, row, number));
            }
        }
    }
    // Seats first: an event row is only visible once all its seats are on
    // sale. A crash in between leaves unreachable items, never a seatless event.
    tm.seats.add_items(&event.id, &ids).await?;
    tm.db.insert_event(&event).await?;
    Ok(created(&event_view(&event)))
}

/// List events by start time, optionally filtered by name and time range.
#[utoipa::path(
    get,
    path = "/api/ticketmaster/events",
    tag = "ticketmaster",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 400, description = "Invalid cursor or query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_events(
    State(tm): State<Arc<Ticketmaster>>,
    Query(query): Query<EventsQuery>,
) -> Result<axum::Json<EventPage>> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=PAGE_LIMIT_MAX).contains(&limit) {
        return Err(ErrorKind::Invalid(format!("limit must be 1 to {PAGE_LIMIT_MAX}")));
    }
    let q = query.q.as_deref().filter(|q| !q.is_empty());
    if let Some(q) = q {
        text("q", q, QUERY_LEN_MAX)?;
    }
    let q = q.map(str::to_lowercase);
    let from_ms = query.from.as_deref().map(|t| parse_time("from", t)).transpose()?;
    let to_ms = query.to.as_deref().map(|t| parse_time("to", t)).transpose()?;
    // The filters are part of the scope: a cursor only continues its own list.
    let scope = format!(
        "{LIST_SCOPE}|{}|{}|{}",
        q.as_deref().unwrap_or(""),
        from_ms.map(|t| t.to_string()).unwrap_or_default(),
        to_ms.map(|t| t.to_string()).unwrap_or_default()
    );
    let after: Option<(i64, String)> =
        query.cursor.as_deref().map(|c| tm.cursors.decode(&scope, c)).transpose()?;
    let events = tm
        .db
        .list_events(
            q.as_deref(),
            from_ms,
            to_ms,
            after.as_ref().map(|(t, id)| (*t, id.as_str())),
            limit,
        )
        .await?;
    let next_cursor = match events.last() {
        Some(last) if events.len() == limit as usize => {
            Some(tm.cursors.encode(&scope, &(last.starts_at_ms, &last.id)))
        }
        _ => None,
    };
    Ok(axum::Json(EventPage { items: events.iter().map(event_view).collect(), next_cursor }))
}

/// Look an event up.
#[utoipa::path(
    get,
    path = "/api/ticketmaster/events/{id}",
    tag = "ticketmaster",
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "The event", body = EventView),
        (status = 404, description = "Unknown event", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_event(
    State(tm): State<Arc<Ticketmaster>>,
    Path(id): Path<String>,
) -> Result<axum::Json<EventView>> {
    let entry = tm.event_and_venue(&id).await?.ok_or(ErrorKind::UnknownEvent(id))?;
    Ok(axum::Json(event_view(&entry.0)))
}

/// Every seat of an event with its price and status.
#[utoipa::path(
    get,
    path = "/api/ticketmaster/events/{id}/seats",
    tag = "ticketmaster",
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "The seat map", body = SeatMap),
        (status = 404, description = "Unknown event", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn seat_map(
    State(tm): State<Arc<Ticketmaster>>,
    Path(id): Path<String>,
) -> Result<axum::Json<SeatMap>> {
    let entry =
        tm.event_and_venue(&id).await?.ok_or_else(|| ErrorKind::UnknownEvent(id.clone()))?;
    let states = tm.seats.states(&id).await?;
    let venue = &entry.1;
    let mut seats = Vec::with_capacity(seat_count(&venue.sections) as usize);
    for s in &venue.sections {
        for row in 1..=s.rows {
            for number in 1..=s.seats_per_row {
                let id = seat_id(&s.name, row, number);
                let status = states.get(&id).copied().unwrap_or(SeatState::Available);
                seats.push(SeatView {
                    id,
                    section: s.name.clone(),
                    row,
                    number,
                    price_cents: s.price_cents,
                    status,
                });
            }
        }
    }
    Ok(axum::Json(SeatMap { event_id: id, seats }))
}

/// Follow an event's seat map as Server-Sent Events: every seat whose state
/// changes, as it commits on any instance. The stream opens with `event: resume`
/// (`{"recovered": true}` when every change after `Last-Event-ID` follows, `false`
/// when the client must load the seat map again), then one `seat` event per change
/// (a `SeatChange`; its `id` is the resume position), `gap` when the client fell
/// behind (load the map again), comment lines as heartbeats, and `closed` at the
/// end. A client loads the map (`GET …/seats`) after `resume` and applies the
/// changes that follow. A hold that lapses is sent once the sweeper resets it. The
/// stream does not end on its own.
#[utoipa::path(
    get,
    path = "/api/ticketmaster/events/{id}/seats/stream",
    tag = "ticketmaster",
    params(
        ("id" = String, Path, description = "Event id"),
        ("last-event-id" = Option<String>, Header, description = "The id of the last event received, to resume after it", max_length = 60),
    ),
    responses(
        (status = 200, description = "The event stream of `SeatChange`s", content_type = "text/event-stream", body = String),
        (status = 404, description = "Unknown event", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This instance streams as many events as it holds", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn seat_stream(
    State(tm): State<Arc<Ticketmaster>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    tm.event_and_venue(&id).await?.ok_or_else(|| ErrorKind::UnknownEvent(id.clone()))?;
    let topic = seat_topic(&id).ok_or_else(|| ErrorKind::UnknownEvent(id.clone()))?;
    // A Last-Event-ID that is not a position of ours resumes nothing: a reset.
    let since = headers.get("last-event-id").map(|v| {
        v.to_str().ok().and_then(Position::decode).unwrap_or(Position {
            epoch: 0,
            stream: 0,
            seq: 0,
        })
    });
    let config = SubscribeConfig { capacity: STREAM_BUFFER, policy: SlowConsumer::DropOldest };
    let (subscription, resume) =
        tm.hub.resume(&topic, since, config).map_err(|e| ErrorKind::StreamsFull(e.to_string()))?;
    let sse = SseConfig { event: Some("seat".into()), ..SseConfig::default() };
    let body = stream(subscription, resume, sse);
    Ok(girder_http::sse::response(body))
}

/// Hold seats, all or none, for `hold_ttl_ms`.
#[utoipa::path(
    post,
    path = "/api/ticketmaster/events/{id}/reservations",
    tag = "ticketmaster",
    params(
        ("id" = String, Path, description = "Event id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Optional: a retry with the same key and body gets the first answer instead of a second hold", pattern = r"^[!-~]{1,128}$"),
    ),
    request_body = ReserveRequest,
    responses(
        (status = 201, description = "Held", body = ReservationView),
        (status = 403, description = "Waiting-room admission missing or invalid", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown event or seat", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Seats taken (named in the detail), or a request with this key is running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad seat list, or the key was used for a different request", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn reserve(
    State(tm): State<Arc<Ticketmaster>>,
    caller: Caller,
    Path(event_id): Path<String>,
    Json(request): Json<ReserveRequest>,
) -> Result<Response> {
    let n = request.seats.len();
    if !(1..=SEATS_PER_RESERVATION_MAX).contains(&n) {
        return Err(ErrorKind::Invalid(format!(
            "seats must list 1 to {SEATS_PER_RESERVATION_MAX} seats, got {n}"
        )));
    }
    let mut distinct = HashSet::new();
    for seat in &request.seats {
        if seat.is_empty() || seat.len() > SEAT_ID_LEN_MAX {
            // No seat has such an id: unknown, like any other id that names no seat.
            let shown = seat.chars().take(SEAT_ID_LEN_MAX).collect();
            return Err(ErrorKind::UnknownSeats(vec![shown]));
        }
        if !distinct.insert(seat.as_str()) {
            return Err(ErrorKind::Invalid(format!("seat {seat:?} is listed twice")));
        }
    }
    if request.admission.as_ref().is_some_and(|a| a.len() > ADMISSION_LEN_MAX) {
        return Err(ErrorKind::AdmissionInvalid);
    }
    let reservation =
        tm.reserve(&event_id, &caller.id, &request.seats, request.admission.as_deref()).await?;
    Ok(created(&ReservationView::from(reservation)))
}

/// Pay for a held reservation and sell its seats. Requires `Idempotency-Key`:
/// the same request again with the same key gets the first answer back (same
/// status and body, `Idempotent-Replayed: true`) and never charges again; a
/// duplicate arriving while the first runs gets 409 `request-in-progress` and
/// should retry; the key with another reservation or body is 422
/// `idempotency-key-reused`; after a 504 `payment-timeout` retrying with the same
/// key asks the provider again with the same key.
#[utoipa::path(
    post,
    path = "/api/ticketmaster/reservations/{id}/confirm",
    tag = "ticketmaster",
    params(
        ("id" = String, Path, description = "Reservation id"),
        ("Idempotency-Key" = String, Header, description = "1–128 visible ASCII characters", pattern = r"^[!-~]{1,128}$"),
    ),
    request_body = ConfirmRequest,
    responses(
        (status = 200, description = "Confirmed and charged", body = ReservationView),
        (status = 400, description = "Missing or malformed Idempotency-Key, malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Payment declined; the reservation stays held", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Someone else's reservation", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown reservation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Hold expired, not held, or a request with this key or another key is confirming it", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Key already used for a different request; bad field", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "Payment provider timed out; retry with the same key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn confirm(
    State(tm): State<Arc<Ticketmaster>>,
    caller: Caller,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    Json(request): Json<ConfirmRequest>,
) -> Result<axum::Json<ReservationView>> {
    text("payment_token", &request.payment_token, TOKEN_LEN_MAX)?;
    let view = tm.confirm(&id, &caller.id, &key, &request.payment_token).await?;
    Ok(axum::Json(view))
}

/// Look one of the caller's reservations up (operators may read any).
#[utoipa::path(
    get,
    path = "/api/ticketmaster/reservations/{id}",
    tag = "ticketmaster",
    params(("id" = String, Path, description = "Reservation id")),
    responses(
        (status = 200, description = "The reservation", body = ReservationView),
        (status = 403, description = "Someone else's reservation", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown reservation", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_reservation(
    State(tm): State<Arc<Ticketmaster>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<ReservationView>> {
    let mut r = tm.db.reservation(&id).await?.ok_or(ErrorKind::UnknownReservation(id))?;
    if r.user != caller.id && !caller.is_operator() {
        return Err(ErrorKind::NotOwner);
    }
    // The sweeper may not have run yet: a lapsed hold reads as expired at once.
    if r.state == ReservationState::Held && tm.now_ms() >= r.until_ms && r.confirming_key.is_none()
    {
        r.state = ReservationState::Expired;
    }
    Ok(axum::Json(ReservationView::from(r)))
}

/// Release one of the caller's held reservations.
#[utoipa::path(
    delete,
    path = "/api/ticketmaster/reservations/{id}",
    tag = "ticketmaster",
    params(("id" = String, Path, description = "Reservation id")),
    responses(
        (status = 204, description = "Released"),
        (status = 403, description = "Someone else's reservation", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown reservation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not held, or a confirmation is under way", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn cancel(
    State(tm): State<Arc<Ticketmaster>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    tm.cancel(&id, &caller.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl Ticketmaster {
    fn queue_view(&self, event: &Event, user: &str, position: i64) -> QueueView {
        let opened = event.queue_opened_at_ms.unwrap_or(event.created_at_ms);
        let rate = event.admit_per_sec.unwrap_or(0);
        let now_ms = self.now_ms();
        let admitted = position <= frontier(opened, rate, now_ms);
        QueueView {
            event_id: event.id.clone(),
            user: user.to_owned(),
            position,
            admitted,
            estimated_wait_ms: if admitted { 0 } else { wait_ms(position, opened, rate, now_ms) },
            admission: admitted.then(|| self.admissions.token(&event.id, user)),
        }
    }

    async fn queued_event(&self, event_id: &str) -> Result<Arc<(Event, Venue)>> {
        let entry = self
            .event_and_venue(event_id)
            .await?
            .ok_or_else(|| ErrorKind::UnknownEvent(event_id.to_owned()))?;
        if entry.0.admit_per_sec.is_none() {
            return Err(ErrorKind::NoWaitingRoom(event_id.to_owned()));
        }
        Ok(entry)
    }
}

/// Join an event's waiting room. Joining again returns the same position.
#[utoipa::path(
    post,
    path = "/api/ticketmaster/events/{id}/queue",
    tag = "ticketmaster",
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "The caller's place", body = QueueView),
        (status = 404, description = "Unknown event, or it has no waiting room", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn join_queue(
    State(tm): State<Arc<Ticketmaster>>,
    caller: Caller,
    Path(event_id): Path<String>,
) -> Result<axum::Json<QueueView>> {
    let entry = tm.queued_event(&event_id).await?;
    let position = tm.db.queue_join(&event_id, &caller.id, tm.now_ms()).await?;
    Ok(axum::Json(tm.queue_view(&entry.0, &caller.id, position)))
}

/// The caller's place in the waiting room, with the admission token once admitted.
#[utoipa::path(
    get,
    path = "/api/ticketmaster/events/{id}/queue",
    tag = "ticketmaster",
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "The caller's place", body = QueueView),
        (status = 404, description = "Unknown event, no waiting room, or not queued", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn queue_status(
    State(tm): State<Arc<Ticketmaster>>,
    caller: Caller,
    Path(event_id): Path<String>,
) -> Result<axum::Json<QueueView>> {
    let entry = tm.queued_event(&event_id).await?;
    let position = tm
        .db
        .queue_position(&event_id, &caller.id)
        .await?
        .ok_or_else(|| ErrorKind::NotInQueue(event_id.clone()))?;
    Ok(axum::Json(tm.queue_view(&entry.0, &caller.id, position)))
}

/// The OpenAPI document, with links from each creating operation to the operations
/// that take what it created (for stateful clients).
#[must_use]
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    use girder_http::openapi::link_created_ids;
    let mut doc = <TicketmasterApi as OpenApi>::openapi();
    link_created_ids(&mut doc, "/api/ticketmaster/venues", &["get_venue"]);
    let event_operations = ["get_event", "seat_map", "reserve", "join_queue", "queue_status"];
    link_created_ids(&mut doc, "/api/ticketmaster/events", &event_operations);
    let reservation_operations = ["get_reservation", "confirm", "cancel"];
    link_created_ids(
        &mut doc,
        "/api/ticketmaster/events/{id}/reservations",
        &reservation_operations,
    );
    doc
}
