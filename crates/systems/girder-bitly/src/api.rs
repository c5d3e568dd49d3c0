//! Bit.ly's HTTP surface: request and response shapes, handlers, and the one
//! place its errors become problems.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{OpenApi, ToSchema};

use super::store::{Link, StoreError};
use super::validate::{self, ALIAS_LEN_MAX, AliasError, UrlError};
use super::{Bitly, MintError, RedirectKind};
use girder_http::cursor::CursorError;
use girder_http::extract::{Json, Path, Query};
use girder_http::problem::Problem;

/// The OpenAPI description of Bit.ly's endpoints.
#[derive(OpenApi)]
#[openapi(
    paths(shorten, list_links, get_link, update_link, delete_link, link_stats, cache_layers, redirect),
    components(schemas(ShortenRequest, ShortenResponse, UpdateRequest, LinkView, LinkPage, LinkStats, CacheLayer, Problem)),
    tags((name = "bitly", description = "URL shortener"))
)]
pub struct BitlyApi;

/// A request to shorten a URL.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShortenRequest {
    /// The destination: an absolute http or https URL of at most 2,048 bytes.
    #[schema(example = "https://example.com/some/long/path", min_length = 1, max_length = 2048)]
    pub url: String,
    /// A custom code: 3–64 characters of `A-Z a-z 0-9 _ -`, not a server path.
    #[schema(example = "my-link", pattern = r"^[A-Za-z0-9_-]{3,64}$")]
    pub alias: Option<String>,
    /// When the link stops redirecting (RFC 3339, in the future); 410 after.
    #[schema(example = "2030-01-01T00:00:00Z", format = DateTime)]
    pub expires_at: Option<String>,
}

/// A change to an existing link: a new destination and/or expiry.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// The new destination (same rules as when shortening).
    #[schema(min_length = 1, max_length = 2048)]
    pub url: Option<String>,
    /// The new expiry (RFC 3339, in the future), or `null` to never expire.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<String>>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A created short link.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ShortenResponse {
    /// The code, the last path segment of the short URL.
    pub code: String,
    /// The full short URL.
    pub short_url: String,
    /// The normalised destination.
    pub url: String,
    /// Expiry (RFC 3339), if any.
    pub expires_at: Option<String>,
}

/// A stored link.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkView {
    /// The code.
    pub code: String,
    /// The destination.
    pub url: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Expiry (RFC 3339), if any.
    pub expires_at: Option<String>,
    /// Clicks flushed to the store (buffered clicks are in `/stats`).
    pub clicks: u64,
}

/// One page of links, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkPage {
    /// The links on this page.
    pub items: Vec<LinkView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Query parameters of the link listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The largest page the listing returns.
pub const PAGE_LIMIT_MAX: u32 = 100;
const LIST_SCOPE: &str = "bitly.links";

/// Hit and miss counts of one layer of the redirect path's cache.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CacheLayer {
    /// `l1` (in process), `l2` (Redis, when configured) or `store` (the database).
    pub layer: String,
    /// Lookups this layer answered.
    pub hits: u64,
    /// Lookups it passed down.
    pub misses: u64,
}

/// Click counts of a link.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkStats {
    /// The code.
    pub code: String,
    /// Clicks: flushed to the store plus buffered on the instance answering.
    pub clicks: u64,
    /// Of those, the ones still buffered here. Other instances' buffers are
    /// not visible until they flush (at most one flush interval).
    pub clicks_buffered: u64,
}

/// Everything that can go wrong in Bit.ly, mapped to a problem in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The destination URL broke a rule.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The alias broke a rule.
    #[error(transparent)]
    Alias(#[from] AliasError),
    /// The alias is already in use.
    #[error("alias {0:?} is already taken")]
    AliasTaken(String),
    /// The expiry is unparsable or not in the future.
    #[error("expires_at: {0}")]
    Expiry(String),
    /// No link has this code.
    #[error("no link with code {0:?}")]
    UnknownCode(String),
    /// The link has expired.
    #[error("link {0:?} has expired")]
    Expired(String),
    /// No code could be minted.
    #[error(transparent)]
    Mint(#[from] MintError),
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
        let problem = match &self {
            Self::Url(UrlError::TooLong { .. }) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "url-too-long", "URL too long")
            }
            Self::Url(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-url", "Invalid URL")
            }
            Self::Alias(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-alias", "Invalid alias")
            }
            Self::AliasTaken(_) => Problem::new(StatusCode::CONFLICT, "alias-taken", "Alias taken"),
            Self::Expiry(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-expiry", "Invalid expiry")
            }
            Self::UnknownCode(_) => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-code", "Unknown code")
            }
            Self::Expired(_) => Problem::new(StatusCode::GONE, "expired", "Link expired"),
            Self::Cursor(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-cursor", "Invalid cursor")
            }
            Self::Limit(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-limit", "Invalid limit")
            }
            Self::Mint(MintError::Exhausted) => Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "code-space-exhausted",
                "No codes left",
            ),
            Self::Mint(_) | Self::Store(_) => {
                tracing::error!(error = &self as &dyn std::error::Error, "bitly backend failure");
                return Problem::unavailable("the link store is unavailable; retry later")
                    .into_response();
            }
        };
        problem.detail(detail).into_response()
    }
}

type Result<T, E = ErrorKind> = std::result::Result<T, E>;

/// Where a handler reads a link from.
#[derive(Debug, Clone, Copy)]
enum Lookup {
    /// Through the cache: the redirect path.
    Cached,
    /// From the store: management reads.
    Fresh,
}

impl Bitly {
    /// The API routes, to be nested at `/api/bitly`.
    pub fn api_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/urls", post(shorten).get(list_links))
            .route("/urls/{code}", get(get_link).patch(update_link).delete(delete_link))
            .route("/urls/{code}/stats", get(link_stats))
            .route("/cache", get(cache_layers))
            .with_state(Arc::clone(self))
    }

    /// The redirect route `/{code}`, to be merged at the server root.
    pub fn redirect_router(self: &Arc<Self>) -> Router {
        Router::new().route("/{code}", get(redirect)).with_state(Arc::clone(self))
    }

    /// Now, in the store's unit (signed Unix milliseconds).
    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    fn short_url(&self, code: &str) -> String {
        format!("{}/{code}", self.public_url.trim_end_matches('/'))
    }

    /// Finds a live link: unknown → 404, expired → 410. `Lookup::Cached` goes
    /// through the redirect path's cache; `Lookup::Fresh` reads the store, for the
    /// management API, whose answers (click counts) must not lag.
    async fn live_link(&self, code: &str, lookup: Lookup) -> Result<Arc<Link>> {
        // Anything that cannot be a code is unknown without a database round trip.
        if !could_be_code(code) {
            return Err(ErrorKind::UnknownCode(code.chars().take(ALIAS_LEN_MAX).collect()));
        }
        let found = match lookup {
            Lookup::Cached => self.resolver.resolve(code).await?,
            Lookup::Fresh => self.store.get(code).await?.map(Arc::new),
        };
        let link = found.ok_or_else(|| ErrorKind::UnknownCode(code.to_owned()))?;
        let now_ms = self.now_ms();
        if link.expires_at_ms.is_some_and(|t| t <= now_ms) {
            return Err(ErrorKind::Expired(code.to_owned()));
        }
        Ok(link)
    }
}

/// Whether `code` has the shape of a code or alias; anything else is unknown without
/// a lookup.
fn could_be_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= ALIAS_LEN_MAX
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl From<Link> for LinkView {
    fn from(link: Link) -> Self {
        Self {
            code: link.code,
            url: link.url,
            created_at: rfc3339(link.created_at_ms),
            expires_at: link.expires_at_ms.map(rfc3339),
            clicks: u64::try_from(link.clicks).unwrap_or(0),
        }
    }
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn parse_expiry(raw: &str, now_ms: i64) -> Result<i64> {
    let t = OffsetDateTime::parse(raw, &Rfc3339)
        .map_err(|e| ErrorKind::Expiry(format!("not an RFC 3339 timestamp ({e})")))?;
    let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ErrorKind::Expiry("out of range".to_owned()))?;
    if ms <= now_ms {
        return Err(ErrorKind::Expiry("must be in the future".to_owned()));
    }
    Ok(ms)
}

/// Shorten a URL.
#[utoipa::path(
    post,
    path = "/api/bitly/urls",
    tag = "bitly",
    request_body = ShortenRequest,
    responses(
        (status = 201, description = "Created", body = ShortenResponse),
        (status = 409, description = "Alias taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid URL, alias or expiry", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn shorten(
    axum::extract::State(bitly): axum::extract::State<Arc<Bitly>>,
    Json(request): Json<ShortenRequest>,
) -> Result<Response> {
    let url = validate::destination(&request.url)?;
    let now_ms = bitly.now_ms();
    let expires_at_ms =
        request.expires_at.as_deref().map(|raw| parse_expiry(raw, now_ms)).transpose()?;
    let mut link = Link {
        code: String::new(),
        url: url.into(),
        created_at_ms: now_ms,
        expires_at_ms,
        clicks: 0,
    };
    if let Some(alias) = request.alias {
        validate::alias(&alias, &bitly.config.reserved)?;
        link.code = alias;
        match bitly.insert_link(&link).await {
            Err(StoreError::Conflict) => return Err(ErrorKind::AliasTaken(link.code)),
            other => other?,
        }
    } else {
        // A generated code can collide only with a custom alias that happens to
        // look like one; draw the next code then. Bounded: aliases are finite.
        let mut attempts = 0;
        loop {
            link.code = bitly.minter.mint().await?;
            match bitly.insert_link(&link).await {
                Err(StoreError::Conflict) if attempts < 16 => attempts += 1,
                other => break other?,
            }
        }
    }
    // A lookup of this code before it existed may have cached its absence.
    bitly.resolver.invalidate(&link.code).await;
    metrics::counter!("girder_bitly_links_created_total").increment(1);
    let body = ShortenResponse {
        short_url: bitly.short_url(&link.code),
        code: link.code,
        url: link.url,
        expires_at: link.expires_at_ms.map(rfc3339),
    };
    let mut response = (StatusCode::CREATED, axum::Json(&body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&body.short_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// List links, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/bitly/urls",
    tag = "bitly",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of links", body = LinkPage),
        (status = 400, description = "Invalid cursor", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Limit out of range", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_links(
    axum::extract::State(bitly): axum::extract::State<Arc<Bitly>>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<LinkPage>> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=PAGE_LIMIT_MAX).contains(&limit) {
        return Err(ErrorKind::Limit(limit));
    }
    let after: Option<(i64, String)> =
        query.cursor.as_deref().map(|c| bitly.cursors.decode(LIST_SCOPE, c)).transpose()?;
    let links = bitly.store.list(after.as_ref().map(|(t, c)| (*t, c.as_str())), limit).await?;
    let next_cursor = match links.last() {
        Some(last) if links.len() == limit as usize => {
            Some(bitly.cursors.encode(LIST_SCOPE, &(last.created_at_ms, &last.code)))
        }
        _ => None,
    };
    Ok(axum::Json(LinkPage { items: links.into_iter().map(LinkView::from).collect(), next_cursor }))
}

/// Look a link up.
#[utoipa::path(
    get,
    path = "/api/bitly/urls/{code}",
    tag = "bitly",
    params(("code" = String, Path, description = "Short code or alias")),
    responses(
        (status = 200, description = "The link", body = LinkView),
        (status = 404, description = "Unknown code", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_link(
    axum::extract::State(bitly): axum::extract::State<Arc<Bitly>>,
    Path(code): Path<String>,
) -> Result<axum::Json<LinkView>> {
    let link = bitly.live_link(&code, Lookup::Fresh).await?;
    Ok(axum::Json(LinkView::from(Arc::unwrap_or_clone(link))))
}

/// Change a link's destination or expiry. Every instance stops serving the old
/// destination within the cache's documented bound.
#[utoipa::path(
    patch,
    path = "/api/bitly/urls/{code}",
    tag = "bitly",
    params(("code" = String, Path, description = "Short code or alias")),
    request_body = UpdateRequest,
    responses(
        (status = 200, description = "The updated link", body = LinkView),
        (status = 404, description = "Unknown code", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid URL or expiry", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_link(
    axum::extract::State(bitly): axum::extract::State<Arc<Bitly>>,
    Path(code): Path<String>,
    Json(request): Json<UpdateRequest>,
) -> Result<axum::Json<LinkView>> {
    let mut link =
        bitly.store.get(&code).await?.ok_or_else(|| ErrorKind::UnknownCode(code.clone()))?;
    if let Some(raw) = &request.url {
        link.url = validate::destination(raw)?.into();
    }
    if let Some(expiry) = &request.expires_at {
        let now_ms = bitly.now_ms();
        link.expires_at_ms = expiry.as_deref().map(|raw| parse_expiry(raw, now_ms)).transpose()?;
    }
    if !bitly.store.update(&code, &link.url, link.expires_at_ms).await? {
        return Err(ErrorKind::UnknownCode(code));
    }
    bitly.resolver.invalidate(&code).await;
    Ok(axum::Json(LinkView::from(link)))
}

/// Delete a link. Every instance stops redirecting it within the cache's bound.
#[utoipa::path(
    delete,
    path = "/api/bitly/urls/{code}",
    tag = "bitly",
    params(("code" = String, Path, description = "Short code or alias")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown code", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_link(
    axum::extract::State(bitly): axum::extract::State<Arc<Bitly>>,
    Path(code): Path<String>,
) -> Result<StatusCode> {
    if !bitly.store.delete(&code).await? {
        return Err(ErrorKind::UnknownCode(code));
    }
    bitly.resolver.invalidate(&code).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Click counts of a link.
#[utoipa::path(
    get,
    path = "/api/bitly/urls/{code}/stats",
    tag = "bitly",
    params(("code" = String, Path, description = "Short code or alias")),
    responses(
        (status = 200, description = "Counts", body = LinkStats),
        (status = 404, description = "Unknown code", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn link_stats(
    axum::extract::State(bitly): axum::extract::State<Arc<Bitly>>,
    Path(code): Path<String>,
) -> Result<axum::Json<LinkStats>> {
    let link = Arc::unwrap_or_clone(bitly.live_link(&code, Lookup::Fresh).await?);
    let buffered = bitly.clicks.pending(&link.code);
    Ok(axum::Json(LinkStats {
        clicks: u64::try_from(link.clicks).unwrap_or(0) + buffered,
        clicks_buffered: buffered,
        code: link.code,
    }))
}

/// Hits and misses per layer of the redirect path's cache, on this instance.
#[utoipa::path(
    get,
    path = "/api/bitly/cache",
    tag = "bitly",
    responses((status = 200, description = "One entry per layer, top first", body = [CacheLayer]))
)]
async fn cache_layers(
    axum::extract::State(bitly): axum::extract::State<Arc<Bitly>>,
) -> axum::Json<Vec<CacheLayer>> {
    let s = bitly.resolver.stats();
    let mut layers = vec![CacheLayer { layer: "l1".into(), hits: s.l1_hits, misses: s.l1_misses }];
    if bitly.resolver.is_shared() {
        layers.push(CacheLayer {
            layer: "l2".into(),
            hits: s.l2_hits,
            misses: s.l2_misses + s.l2_errors,
        });
    }
    layers.push(CacheLayer {
        layer: "store".into(),
        hits: s.loader_calls.saturating_sub(s.loader_errors),
        misses: s.loader_errors,
    });
    axum::Json(layers)
}

/// Follow a short link.
#[utoipa::path(
    get,
    path = "/{code}",
    tag = "bitly",
    params(("code" = String, Path, description = "Short code or alias")),
    responses(
        (status = 302, description = "Redirect to the destination (301 when configured)"),
        (status = 404, description = "Unknown code", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn redirect(
    axum::extract::State(bitly): axum::extract::State<Arc<Bitly>>,
    Path(code): Path<String>,
) -> Result<Response> {
    let link = bitly.live_link(&code, Lookup::Cached).await?;
    bitly.redirect_to(&link)
}

impl Bitly {
    /// The redirect for `path` if this instance's L1 holds a live link for it, without
    /// routing, extractors or an await: the server tries this before its router, and
    /// everything else (misses, unknown or expired codes, anything that is not a bare
    /// `/{code}`) goes through the `/{code}` route, which answers exactly as before.
    #[must_use]
    pub fn redirect_from_l1(&self, path: &str) -> Option<Response> {
        let code = path.strip_prefix('/').filter(|c| could_be_code(c))?;
        let link = self.resolver.cached(code)??;
        if link.expires_at_ms.is_some_and(|t| t <= self.now_ms()) {
            return None;
        }
        self.redirect_to(&link).ok()
    }

    /// Counts the click and answers with the configured redirect to `link`.
    fn redirect_to(&self, link: &Link) -> Result<Response> {
        // Counts the click, and the redirect in `girder_bitly_redirects_total` when the
        // click is flushed (or dropped): no shared atomic per redirect.
        self.clicks.record(&link.code);
        let status = match self.config.redirect {
            RedirectKind::Found => StatusCode::FOUND,
            RedirectKind::Permanent => StatusCode::MOVED_PERMANENTLY,
        };
        let location = HeaderValue::from_str(&link.url).map_err(|_| {
            // Stored URLs passed validation, which yields only valid header bytes.
            ErrorKind::UnknownCode(link.code.clone())
        })?;
        Ok((status, [(header::LOCATION, location)]).into_response())
    }
}

/// The OpenAPI document, with links from each creating operation to the operations
/// that take what it created (for stateful clients).
#[must_use]
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    use girder_http::openapi::{Link, link};
    let mut doc = <BitlyApi as OpenApi>::openapi();
    for to_operation in ["get_link", "update_link", "delete_link", "link_stats"] {
        let from = Link {
            from_path: "/api/bitly/urls",
            from_method: "post",
            status: "201",
            to_operation,
            parameter: "code",
            value: "$response.body#/code",
        };
        link(&mut doc, from);
    }
    doc
}
