//! GoPuff's HTTP surface: request and response shapes with their limits,
//! handlers, and the one place its errors become problems.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::order::{self, NewOrder, OrderError, Shortfall};
use super::store::{Center, Item, Order, STOCK_MAX, StoreError};
use super::{GoPuff, Strategy};
use girder_geo::{CoordError, Point};
use girder_http::cursor::CursorError;
use girder_http::extract::{Json, Path, Query};
use girder_http::identity::{Caller, Operator};
use girder_http::problem::Problem;

/// The OpenAPI description of GoPuff's endpoints.
#[derive(OpenApi)]
#[openapi(
    paths(create_center, list_centers, nearest_center, create_item, set_inventory, restock,
          center_inventory, availability, create_order, get_order, center_orders),
    components(schemas(NewCenterRequest, CenterView, CenterPage, NearestView, ItemRequest, ItemView,
                       InventoryRequest, RestockRequest, StockView, AvailabilityView,
                       CenterAvailability, OrderRequest, OrderLineRequest, OrderView,
                       OrderLineView, OrderPage, Shortfall, Strategy, Problem)),
    tags((name = "gopuff", description = "Local delivery: inventory, availability and orders"))
)]
pub struct GoPuffApi;

/// Longest centre, item or user name, in characters.
const NAME_CHARS_MAX: usize = 100;
/// Longest sku, in bytes (`A-Z a-z 0-9 . _ -`).
const SKU_LEN_MAX: usize = 64;
/// Highest item price, in cents.
const PRICE_CENTS_MAX: i64 = 100_000_000;
/// Most lines in one order.
const ORDER_LINES_MAX: usize = 20;
/// Most units of one sku in one order.
const LINE_QUANTITY_MAX: i64 = 100;
/// Largest availability search radius, in kilometres.
const RADIUS_KM_MAX: f64 = 100.0;
/// Most skus in one availability query.
const AVAILABILITY_SKUS_MAX: usize = 50;
/// The largest page a listing returns.
const PAGE_LIMIT_MAX: u32 = 100;
const CENTERS_SCOPE: &str = "gopuff.centers";
const ORDERS_SCOPE: &str = "gopuff.center-orders";

/// A new distribution centre.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCenterRequest {
    /// Display name, 1–100 characters, not all spaces, no control characters.
    #[schema(example = "Brooklyn DC")]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    /// Latitude in degrees, -90–90.
    #[schema(example = 40.6782, minimum = -90, maximum = 90)]
    pub lat: f64,
    /// Longitude in degrees, -180–180.
    #[schema(example = -73.9442, minimum = -180, maximum = 180)]
    pub lon: f64,
}

/// A distribution centre.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CenterView {
    /// Its id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
}

impl From<Center> for CenterView {
    fn from(c: Center) -> Self {
        Self { id: c.id, name: c.name, lat: c.lat, lon: c.lon }
    }
}

/// One page of centres, in id order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CenterPage {
    /// The centres on this page.
    pub items: Vec<CenterView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Paging parameters of a listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A point to search from.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NearestQuery {
    /// Latitude in degrees, -90–90.
    #[param(minimum = -90, maximum = 90)]
    pub lat: f64,
    /// Longitude in degrees, -180–180.
    #[param(minimum = -180, maximum = 180)]
    pub lon: f64,
}

/// The nearest centre.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NearestView {
    /// The centre.
    pub center: CenterView,
    /// Great-circle distance from the query point, km.
    pub distance_km: f64,
}

/// A new catalogue item.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    /// 1–64 characters of `A-Z a-z 0-9 . _ -`.
    #[schema(example = "cola-330ml")]
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub sku: String,
    /// Display name, 1–100 characters.
    #[schema(example = "Cola 330 ml")]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    /// Unit price in cents, 0–100,000,000.
    #[schema(example = 199, minimum = 0, maximum = 100_000_000)]
    pub price_cents: i64,
}

/// A catalogue item.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ItemView {
    /// Its sku.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Unit price in cents.
    pub price_cents: i64,
}

/// A stock level to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryRequest {
    /// Units on hand, 0–1,000,000.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub quantity: i64,
}

/// Units to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
    /// Units to add, 1–1,000,000; the result may not exceed 1,000,000 (409).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub add: i64,
}

/// A stock level.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StockView {
    /// The centre.
    pub center_id: i64,
    /// The item.
    pub sku: String,
    /// Units on hand now.
    pub quantity: i64,
}

/// An availability search.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityQuery {
    /// Latitude in degrees, -90–90.
    #[param(minimum = -90, maximum = 90)]
    pub lat: f64,
    /// Longitude in degrees, -180–180.
    #[param(minimum = -180, maximum = 180)]
    pub lon: f64,
    /// Search radius in km, above 0 and at most 100.
    #[param(exclusive_minimum = 0, maximum = 100)]
    pub radius_km: f64,
    /// Comma-separated skus, 1–50 of them.
    #[param(pattern = r"^[A-Za-z0-9._-]{1,64}(,[A-Za-z0-9._-]{1,64}){0,49}$")]
    pub skus: String,
}

/// Stock of the asked skus at one centre.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CenterAvailability {
    /// The centre.
    pub center_id: i64,
    /// Its name.
    pub name: String,
    /// Great-circle distance from the query point, km.
    pub distance_km: f64,
    /// Units per asked sku (0 when not stocked).
    pub stock: BTreeMap<String, i64>,
}

/// Availability near a point, nearest centre first. Advisory: an order
/// re-checks stock in its transaction.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AvailabilityView {
    /// Centres within the radius.
    pub centers: Vec<CenterAvailability>,
    /// How old the figures may be, in ms, for changes made on other instances
    /// without Redis (changes through this instance are reflected at once).
    pub staleness_bound_ms: u64,
}

/// One line of an order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLineRequest {
    /// The item.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub sku: String,
    /// Units, 1–100.
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: i64,
}

/// An order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// The centre to fulfil from.
    pub center_id: i64,
    /// 1–20 lines with distinct skus.
    #[schema(min_items = 1, max_items = 20)]
    pub items: Vec<OrderLineRequest>,
    /// `optimistic` or `row_lock`; the server's default when absent.
    pub strategy: Option<Strategy>,
}

/// One line of a stored order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderLineView {
    /// The item.
    pub sku: String,
    /// Units.
    pub quantity: i64,
    /// Unit price when ordered, cents.
    pub price_cents: i64,
}

/// A stored order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    /// Its id.
    pub id: i64,
    /// The centre.
    pub center_id: i64,
    /// Who ordered.
    pub user: String,
    /// `optimistic` or `row_lock`.
    pub strategy: String,
    /// Sum of the lines, cents.
    pub total_cents: i64,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Transaction attempts it took (1 = no retry).
    pub attempts: i64,
    /// The lines, sku-sorted.
    pub lines: Vec<OrderLineView>,
}

impl From<Order> for OrderView {
    fn from(o: Order) -> Self {
        Self {
            id: o.id,
            center_id: o.center_id,
            user: o.user,
            strategy: o.strategy,
            total_cents: o.total_cents,
            created_at: rfc3339(o.created_at_ms),
            attempts: o.attempts,
            lines: o
                .lines
                .into_iter()
                .map(|l| OrderLineView {
                    sku: l.sku,
                    quantity: l.quantity,
                    price_cents: l.price_cents,
                })
                .collect(),
        }
    }
}

/// One page of a centre's orders, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    /// The orders on this page.
    pub items: Vec<OrderView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Everything that can go wrong in GoPuff, mapped to a problem in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A field broke its rule.
    #[error("{0}")]
    Invalid(String),
    /// A coordinate is out of range or not finite.
    #[error(transparent)]
    Coordinates(#[from] CoordError),
    /// No centre has this id.
    #[error("no centre with id {0}")]
    UnknownCenter(i64),
    /// These skus are not in the catalogue.
    #[error("unknown skus: {}", .0.join(", "))]
    UnknownSkus(Vec<String>),
    /// No order has this id.
    #[error("no order with id {0}")]
    UnknownOrder(i64),
    /// The order belongs to another caller.
    #[error("order {0} belongs to another user")]
    NotOwner(i64),
    /// There are no centres at all.
    #[error("there are no centres")]
    NoCenters,
    /// The sku is already in the catalogue.
    #[error("sku {0:?} already exists")]
    SkuTaken(String),
    /// A restock would exceed the stock limit.
    #[error("restock would exceed {STOCK_MAX} units")]
    StockLimit,
    /// An order could not be placed.
    #[error(transparent)]
    Order(#[from] OrderError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A page cursor was malformed, forged or from another list.
    #[error(transparent)]
    Cursor(#[from] CursorError),
    /// The page size is out of range.
    #[error("limit must be 1 to {PAGE_LIMIT_MAX}, got {0}")]
    Limit(u32),
}

impl IntoResponse for ErrorKind {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        let problem = match &self {
            Self::Invalid(_) => Problem::new(unprocessable, "invalid-request", "Invalid request"),
            Self::Coordinates(_) => {
                Problem::new(unprocessable, "invalid-coordinates", "Invalid coordinates")
            }
            Self::UnknownCenter(_) | Self::Order(OrderError::UnknownCenter(_)) => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-center", "Unknown centre")
            }
            Self::UnknownSkus(_) | Self::Order(OrderError::UnknownSkus(_)) => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-sku", "Unknown sku")
            }
            Self::UnknownOrder(_) => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-order", "Unknown order")
            }
            Self::NotOwner(_) => {
                Problem::new(StatusCode::FORBIDDEN, "not-your-order", "Not your order")
            }
            Self::NoCenters => Problem::new(StatusCode::NOT_FOUND, "no-centers", "No centres"),
            Self::SkuTaken(_) => Problem::new(StatusCode::CONFLICT, "sku-taken", "Sku taken"),
            Self::StockLimit => {
                Problem::new(StatusCode::CONFLICT, "stock-limit", "Stock limit exceeded")
            }
            Self::Order(OrderError::Insufficient(_)) => {
                Problem::new(StatusCode::CONFLICT, "insufficient-stock", "Insufficient stock")
            }
            Self::Order(OrderError::Contention { .. }) => {
                let problem = Problem::new(StatusCode::CONFLICT, "contention", "Stock contended")
                    .detail(format!("{detail}; retry the order"));
                let mut response = problem.into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
            Self::Cursor(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-cursor", "Invalid cursor")
            }
            Self::Limit(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-limit", "Invalid limit")
            }
            Self::Store(_) | Self::Order(_) => {
                tracing::error!(error = &self as &dyn std::error::Error, "gopuff backend failure");
                return Problem::unavailable("the inventory store is unavailable; retry later")
                    .into_response();
            }
        };
        problem.detail(detail).into_response()
    }
}

type Result<T, E = ErrorKind> = std::result::Result<T, E>;

impl GoPuff {
    /// The API routes, to be nested at `/api/gopuff`.
    pub fn api_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/centers", post(create_center).get(list_centers))
            .route("/centers/nearest", get(nearest_center))
            .route("/centers/{id}/inventory", get(center_inventory))
            .route("/centers/{id}/inventory/{sku}", put(set_inventory))
            .route("/centers/{id}/inventory/{sku}/restock", post(restock))
            .route("/centers/{id}/orders", get(center_orders))
            .route("/items", post(create_item))
            .route("/availability", get(availability))
            .route("/orders", post(create_order).route_layer(self.idempotency.optional()))
            .route("/orders/{id}", get(get_order))
            .with_state(Arc::clone(self))
    }

    /// The most a cached availability figure can lag a change made elsewhere.
    fn staleness_bound_ms(&self) -> u64 {
        let ttl = self.config.availability_ttl_ms as f64;
        (ttl * (1.0 + self.config.availability_ttl_jitter_fraction)).ceil() as u64
    }

    /// Reloads the centre index first if it is `centers_refresh_ms` old.
    async fn fresh_centers(&self) -> Result<()> {
        Ok(self.nearby.refresh_if_due(&self.store, self.clock.now_ms()).await?)
    }

    async fn require_center(&self, id: i64) -> Result<()> {
        if self.store.center_exists(id).await? { Ok(()) } else { Err(ErrorKind::UnknownCenter(id)) }
    }

    async fn require_item(&self, sku: &str) -> Result<()> {
        check_sku(sku)?;
        if self.store.item_exists(sku).await? {
            Ok(())
        } else {
            Err(ErrorKind::UnknownSkus(vec![sku.to_owned()]))
        }
    }
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn check_name(field: &str, value: &str) -> Result<()> {
    let chars = value.chars().count();
    if chars == 0 || chars > NAME_CHARS_MAX || value.trim().is_empty() {
        return Err(ErrorKind::Invalid(format!(
            "{field} must be 1 to {NAME_CHARS_MAX} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ErrorKind::Invalid(format!("{field} must not contain control characters")));
    }
    Ok(())
}

fn check_sku(sku: &str) -> Result<()> {
    if sku.is_empty()
        || sku.len() > SKU_LEN_MAX
        || !sku.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        let shown: String = sku.chars().take(SKU_LEN_MAX).collect();
        return Err(ErrorKind::Invalid(format!(
            "sku {shown:?} must be 1 to {SKU_LEN_MAX} characters of A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
}

fn page_limit(limit: Option<u32>) -> Result<u32> {
    let limit = limit.unwrap_or(20);
    if (1..=PAGE_LIMIT_MAX).contains(&limit) { Ok(limit) } else { Err(ErrorKind::Limit(limit)) }
}

/// Validates an order's lines and sorts them by sku (the lock order).
fn order_lines(items: Vec<OrderLineRequest>) -> Result<Vec<(String, i64)>> {
    if items.is_empty() || items.len() > ORDER_LINES_MAX {
        return Err(ErrorKind::Invalid(format!(
            "an order has 1 to {ORDER_LINES_MAX} lines, got {}",
            items.len()
        )));
    }
    let mut lines = Vec::with_capacity(items.len());
    for line in items {
        check_sku(&line.sku)?;
        if !(1..=LINE_QUANTITY_MAX).contains(&line.quantity) {
            return Err(ErrorKind::Invalid(format!(
                "quantity of {} must be 1 to {LINE_QUANTITY_MAX}, got {}",
                line.sku, line.quantity
            )));
        }
        lines.push((line.sku, line.quantity));
    }
    lines.sort_unstable();
    if let Some(w) = lines.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ErrorKind::Invalid(format!("sku {} appears more than once", w[0].0)));
    }
    Ok(lines)
}

/// Create a distribution centre.
#[utoipa::path(
    post,
    path = "/api/gopuff/centers",
    tag = "gopuff",
    request_body = NewCenterRequest,
    responses(
        (status = 201, description = "Created", body = CenterView),
        (status = 422, description = "Invalid name or coordinates", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_center(
    State(gopuff): State<Arc<GoPuff>>,
    _operator: Operator,
    Json(request): Json<NewCenterRequest>,
) -> Result<Response> {
    check_name("name", &request.name)?;
    let at = Point::new(request.lat, request.lon)?;
    let center =
        gopuff.store.insert_center(&request.name, at.lat(), at.lon(), gopuff.now_ms()).await?;
    // Searchable on this instance before the answer; others reload on their own.
    gopuff.nearby.insert(center.clone()).await?;
    Ok((StatusCode::CREATED, axum::Json(CenterView::from(center))).into_response())
}

/// List centres in id order, a page at a time.
#[utoipa::path(
    get,
    path = "/api/gopuff/centers",
    tag = "gopuff",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of centres", body = CenterPage),
        (status = 400, description = "Invalid cursor", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Limit out of range", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_centers(
    State(gopuff): State<Arc<GoPuff>>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<CenterPage>> {
    let limit = page_limit(query.limit)?;
    let after: Option<i64> =
        query.cursor.as_deref().map(|c| gopuff.cursors.decode(CENTERS_SCOPE, c)).transpose()?;
    let centers = gopuff.store.list_centers(after, limit).await?;
    let next_cursor = match centers.last() {
        Some(last) if centers.len() == limit as usize => {
            Some(gopuff.cursors.encode(CENTERS_SCOPE, &last.id))
        }
        _ => None,
    };
    Ok(axum::Json(CenterPage {
        items: centers.into_iter().map(CenterView::from).collect(),
        next_cursor,
    }))
}

/// The nearest centre to a point (great-circle distance, through the centre index).
#[utoipa::path(
    get,
    path = "/api/gopuff/centers/nearest",
    tag = "gopuff",
    params(NearestQuery),
    responses(
        (status = 200, description = "The nearest centre", body = NearestView),
        (status = 400, description = "Unparsable query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No centres", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid coordinates", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn nearest_center(
    State(gopuff): State<Arc<GoPuff>>,
    Query(query): Query<NearestQuery>,
) -> Result<axum::Json<NearestView>> {
    let from = Point::new(query.lat, query.lon)?;
    gopuff.fresh_centers().await?;
    let (center, distance_km) = gopuff.nearby.nearest(from)?.ok_or(ErrorKind::NoCenters)?;
    Ok(axum::Json(NearestView { center: CenterView::from(center), distance_km }))
}

/// Add an item to the catalogue.
#[utoipa::path(
    post,
    path = "/api/gopuff/items",
    tag = "gopuff",
    request_body = ItemRequest,
    responses(
        (status = 201, description = "Created", body = ItemView),
        (status = 409, description = "Sku taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid sku, name or price", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_item(
    State(gopuff): State<Arc<GoPuff>>,
    _operator: Operator,
    Json(request): Json<ItemRequest>,
) -> Result<Response> {
    check_sku(&request.sku)?;
    check_name("name", &request.name)?;
    if !(0..=PRICE_CENTS_MAX).contains(&request.price_cents) {
        return Err(ErrorKind::Invalid(format!(
            "price_cents must be 0 to {PRICE_CENTS_MAX}, got {}",
            request.price_cents
        )));
    }
    let item = Item { sku: request.sku, name: request.name, price_cents: request.price_cents };
    if !gopuff.store.insert_item(&item).await? {
        return Err(ErrorKind::SkuTaken(item.sku));
    }
    let view = ItemView { sku: item.sku, name: item.name, price_cents: item.price_cents };
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// Set a centre's stock of an item.
#[utoipa::path(
    put,
    path = "/api/gopuff/centers/{id}/inventory/{sku}",
    tag = "gopuff",
    params(("id" = i64, Path, description = "Centre id"), ("sku" = String, Path, description = "Item sku", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    request_body = InventoryRequest,
    responses(
        (status = 200, description = "Stock set", body = StockView),
        (status = 404, description = "Unknown centre or sku", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Quantity out of range", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn set_inventory(
    State(gopuff): State<Arc<GoPuff>>,
    _operator: Operator,
    Path((center, sku)): Path<(i64, String)>,
    Json(request): Json<InventoryRequest>,
) -> Result<axum::Json<StockView>> {
    if !(0..=STOCK_MAX).contains(&request.quantity) {
        return Err(ErrorKind::Invalid(format!(
            "quantity must be 0 to {STOCK_MAX}, got {}",
            request.quantity
        )));
    }
    gopuff.require_center(center).await?;
    gopuff.require_item(&sku).await?;
    gopuff.store.set_stock(center, &sku, request.quantity).await?;
    gopuff.availability.invalidate_stock(center).await;
    Ok(axum::Json(StockView { center_id: center, sku, quantity: request.quantity }))
}

/// Add units to a centre's stock of an item.
#[utoipa::path(
    post,
    path = "/api/gopuff/centers/{id}/inventory/{sku}/restock",
    tag = "gopuff",
    params(("id" = i64, Path, description = "Centre id"), ("sku" = String, Path, description = "Item sku", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    request_body = RestockRequest,
    responses(
        (status = 200, description = "Restocked", body = StockView),
        (status = 404, description = "Unknown centre or sku", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Would exceed 1,000,000 units", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Amount out of range", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn restock(
    State(gopuff): State<Arc<GoPuff>>,
    _operator: Operator,
    Path((center, sku)): Path<(i64, String)>,
    Json(request): Json<RestockRequest>,
) -> Result<axum::Json<StockView>> {
    if !(1..=STOCK_MAX).contains(&request.add) {
        return Err(ErrorKind::Invalid(format!(
            "add must be 1 to {STOCK_MAX}, got {}",
            request.add
        )));
    }
    gopuff.require_center(center).await?;
    gopuff.require_item(&sku).await?;
    let quantity =
        gopuff.store.restock(center, &sku, request.add).await?.ok_or(ErrorKind::StockLimit)?;
    gopuff.availability.invalidate_stock(center).await;
    Ok(axum::Json(StockView { center_id: center, sku, quantity }))
}

/// Everything a centre stocks, sku-sorted, through the availability cache (as fresh
/// as the `staleness_bound_ms` of `/availability`).
#[utoipa::path(
    get,
    path = "/api/gopuff/centers/{id}/inventory",
    tag = "gopuff",
    params(("id" = i64, Path, description = "Centre id")),
    responses(
        (status = 200, description = "Stock per sku", body = [StockView]),
        (status = 400, description = "Unparsable id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown centre", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn center_inventory(
    State(gopuff): State<Arc<GoPuff>>,
    Path(center): Path<i64>,
) -> Result<axum::Json<Vec<StockView>>> {
    gopuff.require_center(center).await?;
    let stock = gopuff.availability.stock(center).await?;
    Ok(axum::Json(
        stock
            .into_iter()
            .map(|(sku, quantity)| StockView { center_id: center, sku, quantity })
            .collect(),
    ))
}

/// Stock of some items at the centres near a point (cached; see `staleness_bound_ms`).
#[utoipa::path(
    get,
    path = "/api/gopuff/availability",
    tag = "gopuff",
    params(AvailabilityQuery),
    responses(
        (status = 200, description = "Stock per centre, nearest first", body = AvailabilityView),
        (status = 400, description = "Unparsable query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid coordinates, radius or skus", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn availability(
    State(gopuff): State<Arc<GoPuff>>,
    Query(query): Query<AvailabilityQuery>,
) -> Result<axum::Json<AvailabilityView>> {
    let from = Point::new(query.lat, query.lon)?;
    if !query.radius_km.is_finite() || query.radius_km <= 0.0 || query.radius_km > RADIUS_KM_MAX {
        return Err(ErrorKind::Invalid(format!(
            "radius_km must be above 0 and at most {RADIUS_KM_MAX}, got {}",
            query.radius_km
        )));
    }
    let skus: BTreeSet<&str> = query.skus.split(',').collect();
    if skus.len() > AVAILABILITY_SKUS_MAX {
        return Err(ErrorKind::Invalid(format!(
            "at most {AVAILABILITY_SKUS_MAX} distinct skus, got {}",
            skus.len()
        )));
    }
    for sku in &skus {
        check_sku(sku)?;
    }
    gopuff.fresh_centers().await?;
    let mut out = Vec::new();
    for (center, distance_km) in gopuff.nearby.within(from, query.radius_km)? {
        let stocked = gopuff.availability.stock(center.id).await?;
        let stock = skus
            .iter()
            .map(|sku| {
                let units = stocked
                    .binary_search_by(|(s, _)| s.as_str().cmp(sku))
                    .map_or(0, |i| stocked[i].1);
                ((*sku).to_owned(), units)
            })
            .collect();
        out.push(CenterAvailability {
            center_id: center.id,
            name: center.name,
            distance_km,
            stock,
        });
    }
    Ok(axum::Json(AvailabilityView {
        centers: out,
        staleness_bound_ms: gopuff.staleness_bound_ms(),
    }))
}

/// Place an order: all lines or none, in one transaction.
#[utoipa::path(
    post,
    path = "/api/gopuff/orders",
    tag = "gopuff",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Optional: a retry with the same key and body gets the first answer instead of a second order", pattern = r"^[!-~]{1,128}$"),
    ),
    request_body = OrderRequest,
    responses(
        (status = 201, description = "Placed", body = OrderView),
        (status = 404, description = "Unknown centre or sku", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Insufficient stock (names the short skus), contention (retryable, Retry-After), or a request with this key is running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid lines, quantities or strategy, or the key was used for a different request", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_order(
    State(gopuff): State<Arc<GoPuff>>,
    caller: Caller,
    Json(request): Json<OrderRequest>,
) -> Result<Response> {
    let lines = order_lines(request.items)?;
    let strategy = request.strategy.unwrap_or(gopuff.config.default_strategy);
    let new = NewOrder {
        center_id: request.center_id,
        user: caller.id,
        lines,
        strategy,
        now_ms: gopuff.now_ms(),
    };
    let outcome = order::place(&gopuff.store, &new, &gopuff.config.retry).await;
    let retries = u64::from(outcome.attempts.saturating_sub(1));
    let label = strategy.as_str();
    if retries > 0 {
        gopuff.counters.retries.fetch_add(retries, Ordering::Relaxed);
        metrics::counter!("girder_gopuff_order_retries_total", "strategy" => label)
            .increment(retries);
    }
    let outcome_label = match &outcome.result {
        Ok(_) => "accepted",
        Err(OrderError::Insufficient(_)) => "insufficient_stock",
        Err(OrderError::Contention { .. }) => "contention",
        Err(OrderError::UnknownCenter(_) | OrderError::UnknownSkus(_)) => "not_found",
        Err(_) => "error",
    };
    metrics::counter!("girder_gopuff_orders_total", "strategy" => label, "outcome" => outcome_label)
        .increment(1);
    match outcome.result {
        Ok(placed) => {
            gopuff.counters.accepted.fetch_add(1, Ordering::Relaxed);
            gopuff.availability.invalidate_stock(new.center_id).await;
            debug_assert_eq!(i64::from(placed.attempts), placed.order.attempts);
            Ok((StatusCode::CREATED, axum::Json(OrderView::from(placed.order))).into_response())
        }
        Err(e) => {
            gopuff.counters.rejected.fetch_add(1, Ordering::Relaxed);
            if matches!(e, OrderError::Contention { .. }) {
                gopuff.counters.contention.fetch_add(1, Ordering::Relaxed);
            }
            Err(e.into())
        }
    }
}

/// Look an order up.
#[utoipa::path(
    get,
    path = "/api/gopuff/orders/{id}",
    tag = "gopuff",
    params(("id" = i64, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 400, description = "Id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown order", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Someone else's order", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_order(
    State(gopuff): State<Arc<GoPuff>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<axum::Json<OrderView>> {
    let order = gopuff.store.get_order(id).await?.ok_or(ErrorKind::UnknownOrder(id))?;
    if order.user != caller.id && !caller.is_operator() {
        return Err(ErrorKind::NotOwner(id));
    }
    Ok(axum::Json(OrderView::from(order)))
}

/// A centre's orders, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/gopuff/centers/{id}/orders",
    tag = "gopuff",
    params(("id" = i64, Path, description = "Centre id"), PageQuery),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 400, description = "Invalid cursor", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Limit out of range", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown centre", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn center_orders(
    State(gopuff): State<Arc<GoPuff>>,
    _operator: Operator,
    Path(center): Path<i64>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<OrderPage>> {
    let limit = page_limit(query.limit)?;
    let scope = format!("{ORDERS_SCOPE}.{center}");
    let before: Option<i64> =
        query.cursor.as_deref().map(|c| gopuff.cursors.decode(&scope, c)).transpose()?;
    gopuff.require_center(center).await?;
    let orders = gopuff.store.list_center_orders(center, before, limit).await?;
    let next_cursor = match orders.last() {
        Some(last) if orders.len() == limit as usize => {
            Some(gopuff.cursors.encode(&scope, &last.id))
        }
        _ => None,
    };
    Ok(axum::Json(OrderPage {
        items: orders.into_iter().map(OrderView::from).collect(),
        next_cursor,
    }))
}

/// The OpenAPI document, with links from each creating operation to the operations
/// that take what it created (for stateful clients).
#[must_use]
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    use girder_http::openapi::link_created_ids;
    let mut doc = <GoPuffApi as OpenApi>::openapi();
    link_created_ids(&mut doc, "/api/gopuff/centers", &["center_inventory", "center_orders"]);
    link_created_ids(&mut doc, "/api/gopuff/orders", &["get_order"]);
    doc
}
