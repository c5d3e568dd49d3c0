//! `Idempotency-Key` for any operation ("Pattern: Idempotent Operations"): a client
//! that retries a request with the same key gets the first answer back instead of a
//! second execution.
//!
//! A system puts [`Idempotency::required`] or [`Idempotency::optional`] on the routes
//! that honour keys. For a request with a key the layer:
//!
//! 1. checks the key (1–128 visible ASCII characters, else 400
//!    `invalid-idempotency-key`; a missing key is 400 `idempotency-key-missing` where
//!    keys are required and passes straight through where they are optional);
//! 2. claims `(caller, key)` in the shared database with an atomic insert-if-absent,
//!    together with a fingerprint of the request (method, path, query, content type
//!    and body, hashed with BLAKE3);
//! 3. runs the handler, which may read the key with the [`IdempotencyKey`] extractor
//!    (to pass it on, for example to a payment provider that is idempotent per key);
//! 4. stores the answer (status, headers, body) or releases the claim.
//!
//! A later request with the same caller and key gets:
//!
//! - the stored answer, byte for byte, with `Idempotent-Replayed: true`, when its
//!   fingerprint matches;
//! - 422 `idempotency-key-reused` when the fingerprint differs (another path, another
//!   body): a key names one request, never two;
//! - 409 `request-in-progress` with `Retry-After: 1` while the first is still running
//!   (a concurrent duplicate does not wait; it retries).
//!
//! **Which answers are stored.** An answer is stored when the operation reached a
//! definite end: every 2xx and 3xx, and the 4xx that say so (402 declined, 403, 404,
//! 410, …). The claim is released, so that a retry with the same key runs again, for
//! 5xx (the outcome is unknown: a timeout, a lost database) and for the 4xx that mean
//! "not like this" or "not now" before anything happened: 400, 408, 409, 413, 415,
//! 422, 425 and 429. A handler whose side effect may have happened before a 5xx must
//! itself be safe to run again with the same key; Ticketmaster's confirmation is,
//! because its payment provider is idempotent per key.
//!
//! **Scope and lifetime.** Keys are scoped to the authenticated caller, so two callers
//! cannot see each other's answers by choosing the same key; a request without a
//! valid bearer token passes straight through (the handler then refuses it or serves
//! it anonymously, without deduplication). A stored answer is kept for
//! `retention_ms` (24 hours by default) and [`Idempotency::purge_expired`] deletes
//! older ones. A claim whose instance died mid-request is taken over after
//! `pending_ttl_ms` (60 seconds by default), so a handler that runs longer than that
//! may run twice for one key.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use girder_core::Clock;
use girder_sql::{Db, on_db};
use tower::{Layer, Service};

use crate::identity::caller_of;
use crate::problem::Problem;

/// The request header that carries the key.
pub const HEADER: &str = "idempotency-key";
/// The response header set on a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";
/// The longest key accepted.
pub const KEY_LEN_MAX: usize = 128;
/// The largest request body the layer buffers to fingerprint it; larger is 413.
pub const BODY_BYTES_MAX: usize = 1 << 20;

const PENDING: &str = "pending";
const COMPLETED: &str = "completed";

/// Response headers that describe the connection, not the answer: never stored.
const UNSTORED_HEADERS: [HeaderName; 5] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::DATE,
    header::SET_COOKIE,
];

/// Why the records could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdempotencyError {
    /// The database failed.
    #[error("idempotency records unavailable")]
    Database(#[from] sqlx::Error),
    /// A stored record cannot be read back (a status out of range, bad headers).
    #[error("idempotency record for key {key:?} is corrupt: {what}")]
    Corrupt {
        /// The key whose record is bad.
        key: String,
        /// What is wrong with it.
        what: &'static str,
    },
}

/// The idempotency records in the shared database (table `girder_idempotency`,
/// created by the server's migrations), and the layers that use them.
#[derive(Clone)]
pub struct Idempotency {
    db: Db,
    clock: Arc<dyn Clock>,
    pending_ttl_ms: u64,
    retention_ms: u64,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("pending_ttl_ms", &self.pending_ttl_ms)
            .field("retention_ms", &self.retention_ms)
            .finish_non_exhaustive()
    }
}

/// What a request holding a key should do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Begin {
    /// The request owns the key under this claim: run it.
    Proceed { claim: String },
    /// Another request with this key is running.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
    /// The key finished before: answer exactly this.
    Replay(Stored),
}

/// An answer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// `(fingerprint, claim, state, status, headers, body, expires_at_ms)`.
type RecordRow = (String, String, String, Option<i32>, Option<String>, Option<Vec<u8>>, i64);

impl Idempotency {
    /// Records in `db`, timed by `clock`: claims are orphans after 60 s, answers are
    /// kept 24 h.
    #[must_use]
    pub fn new(db: Db, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock, pending_ttl_ms: 60_000, retention_ms: 24 * 3_600_000 }
    }

    /// Claims older than `ms` are presumed orphaned and may be taken over.
    #[must_use]
    pub fn with_pending_ttl_ms(mut self, ms: u64) -> Self {
        self.pending_ttl_ms = ms.max(1);
        self
    }

    /// Stored answers are replayed for `ms` after they were stored.
    #[must_use]
    pub fn with_retention_ms(mut self, ms: u64) -> Self {
        self.retention_ms = ms.max(1);
        self
    }

    /// The layer for routes that refuse a request without a key.
    #[must_use]
    pub fn required(&self) -> IdempotencyLayer {
        IdempotencyLayer { records: self.clone(), required: true }
    }

    /// The layer for routes where a key is the client's choice.
    #[must_use]
    pub fn optional(&self) -> IdempotencyLayer {
        IdempotencyLayer { records: self.clone(), required: false }
    }

    /// Deletes stored answers and orphaned claims whose time is up; returns how many.
    ///
    /// # Errors
    /// The database failed.
    pub async fn purge_expired(&self) -> Result<u64, IdempotencyError> {
        let now = self.now_ms();
        let deleted = on_db!(&self.db, |pool| sqlx::query(
            "DELETE FROM girder_idempotency WHERE expires_at_ms <= $1"
        )
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(deleted)
    }

    /// Calls [`Idempotency::purge_expired`] every `every` until `stop` resolves.
    pub async fn purge_until(&self, every: std::time::Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => match self.purge_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(purged = n, "expired idempotency records"),
                    Err(e) => tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "purging idempotency records"
                    ),
                },
            }
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    fn later(&self, ms: u64) -> i64 {
        self.now_ms().saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<Begin, IdempotencyError> {
        // A row can vanish between a refused insert and the read (released or
        // purged): then insert again, a bounded number of times.
        for _ in 0..3 {
            let claim = new_claim();
            let expires = self.later(self.pending_ttl_ms);
            let inserted = on_db!(&self.db, |pool| sqlx::query(
                "INSERT INTO girder_idempotency \
                 (scope, key, fingerprint, claim, state, expires_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, key) DO NOTHING"
            )
            .bind(scope)
            .bind(key)
            .bind(fingerprint)
            .bind(&claim)
            .bind(PENDING)
            .bind(expires)
            .execute(pool)
            .await?
            .rows_affected());
            if inserted == 1 {
                return Ok(Begin::Proceed { claim });
            }
            let row: Option<RecordRow> = on_db!(&self.db, |pool| {
                sqlx::query_as(
                    "SELECT fingerprint, claim, state, status, headers, body, expires_at_ms \
                     FROM girder_idempotency WHERE scope = $1 AND key = $2",
                )
                .bind(scope)
                .bind(key)
                .fetch_optional(pool)
                .await?
            });
            let Some((stored_fingerprint, stored_claim, state, status, headers, body, expires)) =
                row
            else {
                continue;
            };
            if expires <= self.now_ms() {
                return self.take_over(scope, key, fingerprint, &stored_claim).await;
            }
            if stored_fingerprint != fingerprint {
                return Ok(Begin::Mismatch);
            }
            if state != COMPLETED {
                return Ok(Begin::InProgress);
            }
            let corrupt = |what| IdempotencyError::Corrupt { key: key.to_owned(), what };
            let status = status
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| StatusCode::from_u16(*s).is_ok())
                .ok_or_else(|| corrupt("status"))?;
            let headers = serde_json::from_str(headers.as_deref().unwrap_or("[]"))
                .map_err(|_| corrupt("headers"))?;
            return Ok(Begin::Replay(Stored { status, headers, body: body.unwrap_or_default() }));
        }
        Ok(Begin::InProgress)
    }

    /// Claims an expired record if it is still as read; one racer wins.
    async fn take_over(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        old_claim: &str,
    ) -> Result<Begin, IdempotencyError> {
        let claim = new_claim();
        let expires = self.later(self.pending_ttl_ms);
        let updated = on_db!(&self.db, |pool| sqlx::query(
            "UPDATE girder_idempotency SET fingerprint = $3, claim = $4, state = $5, \
             status = NULL, headers = NULL, body = NULL, expires_at_ms = $6 \
             WHERE scope = $1 AND key = $2 AND claim = $7"
        )
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .bind(&claim)
        .bind(PENDING)
        .bind(expires)
        .bind(old_claim)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(if updated == 1 { Begin::Proceed { claim } } else { Begin::InProgress })
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        claim: &str,
        answer: &Stored,
    ) -> Result<(), IdempotencyError> {
        let headers = serde_json::to_string(&answer.headers).unwrap_or_else(|_| "[]".into());
        let expires = self.later(self.retention_ms);
        on_db!(&self.db, |pool| sqlx::query(
            "UPDATE girder_idempotency SET state = $4, status = $5, headers = $6, body = $7, \
             expires_at_ms = $8 WHERE scope = $1 AND key = $2 AND claim = $3"
        )
        .bind(scope)
        .bind(key)
        .bind(claim)
        .bind(COMPLETED)
        .bind(i32::from(answer.status))
        .bind(&headers)
        .bind(&answer.body)
        .bind(expires)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    async fn release(&self, scope: &str, key: &str, claim: &str) -> Result<(), IdempotencyError> {
        on_db!(&self.db, |pool| sqlx::query(
            "DELETE FROM girder_idempotency WHERE scope = $1 AND key = $2 AND claim = $3"
        )
        .bind(scope)
        .bind(key)
        .bind(claim)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }
}

fn new_claim() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Whether an answer with `status` is stored (see the module's rule) rather than
/// released for a retry.
#[must_use]
pub fn is_stored(status: StatusCode) -> bool {
    if status.is_server_error() {
        return false;
    }
    !matches!(status.as_u16(), 400 | 408 | 409 | 413 | 415 | 422 | 425 | 429)
}

/// The key of the request being handled, put there by the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(key) = parts.extensions.get::<Self>() {
            return Ok(key.clone());
        }
        if parts.headers.contains_key(HEADER) {
            tracing::error!("a handler reads the Idempotency-Key but its route has no layer");
            return Err(Problem::internal().into_response());
        }
        Err(key_missing().into_response())
    }
}

fn key_missing() -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "idempotency-key-missing", "Idempotency-Key required")
        .detail("this operation needs an Idempotency-Key header")
}

/// Checks a key: 1 to [`KEY_LEN_MAX`] visible ASCII characters.
fn parse_key(value: &HeaderValue) -> Result<String, Problem> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= KEY_LEN_MAX
        && bytes.iter().all(|b| (0x21..=0x7e).contains(b));
    if ok {
        Ok(String::from_utf8_lossy(bytes).into_owned())
    } else {
        Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
        )
        .detail(format!("Idempotency-Key must be 1 to {KEY_LEN_MAX} visible ASCII characters")))
    }
}

/// The request's fingerprint: what must match for a key to replay.
fn fingerprint(parts: &Parts, body: &[u8]) -> String {
    let mut hasher = blake3::Hasher::new();
    let content_type = parts.headers.get(header::CONTENT_TYPE).map_or(&b""[..], |v| v.as_bytes());
    for field in [
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        parts.uri.query().unwrap_or("").as_bytes(),
        content_type,
        body,
    ] {
        // Length-prefixed, so no two different requests hash the same fields.
        hasher.update(&(field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    hasher.finalize().to_hex().to_string()
}

/// Applies an [`Idempotency`]'s records to the routes it wraps.
#[derive(Debug, Clone)]
pub struct IdempotencyLayer {
    records: Idempotency,
    required: bool,
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService { inner, records: self.records.clone(), required: self.required }
    }
}

/// The service [`IdempotencyLayer`] wraps a route in.
#[derive(Debug, Clone)]
pub struct IdempotencyService<S> {
    inner: S,
    records: Idempotency,
    required: bool,
}

impl<S> Service<Request> for IdempotencyService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone that was polled ready serves this request.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let (records, required) = (self.records.clone(), self.required);
        Box::pin(async move { Ok(handle(records, required, inner, request).await) })
    }
}

async fn handle<S>(records: Idempotency, required: bool, mut inner: S, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let (mut parts, body) = request.into_parts();
    let key = match parts.headers.get(HEADER).map(parse_key) {
        None if required => return key_missing().into_response(),
        None => return call(&mut inner, Request::from_parts(parts, body)).await,
        Some(Err(problem)) => return problem.into_response(),
        Some(Ok(key)) => key,
    };
    // Only an authenticated caller's keys are recorded; the handler refuses or
    // serves the rest.
    let Ok(Some(caller)) = caller_of(&parts) else {
        return call(&mut inner, Request::from_parts(parts, body)).await;
    };
    // The handler's extractor reads it from here instead of verifying the token again.
    parts.extensions.insert(caller.clone());
    let Ok(bytes) = axum::body::to_bytes(body, BODY_BYTES_MAX).await else {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
        )
        .detail(format!(
            "a request with an Idempotency-Key may carry at most {BODY_BYTES_MAX} bytes"
        ))
        .into_response();
    };
    let print = fingerprint(&parts, &bytes);
    let claim = match records.begin(&caller.id, &key, &print).await {
        Ok(Begin::Proceed { claim }) => claim,
        Ok(Begin::InProgress) => return outcome("in_progress", in_progress()),
        Ok(Begin::Mismatch) => return outcome("mismatch", reused()),
        Ok(Begin::Replay(stored)) => return outcome("replayed", replay(stored)),
        Err(e) => {
            tracing::warn!(error = &e as &dyn std::error::Error, "idempotency records");
            return Problem::unavailable("the idempotency records are unavailable; retry")
                .into_response();
        }
    };
    parts.extensions.insert(IdempotencyKey(key.clone()));
    let response = call(&mut inner, Request::from_parts(parts, Body::from(bytes))).await;
    let (mut head, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => {
            // The answer is lost either way; let a retry run again.
            tracing::warn!(error = &e as &dyn std::error::Error, "reading a response to store");
            let _ = records.release(&caller.id, &key, &claim).await;
            return Problem::internal().into_response();
        }
    };
    let recorded = if is_stored(head.status) {
        let stored = Stored {
            status: head.status.as_u16(),
            headers: stored_headers(&head.headers),
            body: body.to_vec(),
        };
        records.complete(&caller.id, &key, &claim, &stored).await
    } else {
        records.release(&caller.id, &key, &claim).await
    };
    if let Err(e) = recorded {
        // The claim stays pending; after the pending TTL a retry takes it over and
        // runs again, which the handler must tolerate (see the module's rule).
        tracing::warn!(error = &e as &dyn std::error::Error, "could not record an outcome");
    }
    metrics::counter!("girder_idempotency_total", "outcome" => "executed").increment(1);
    head.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(head, Body::from(body))
}

async fn call<S>(inner: &mut S, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    match inner.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

fn outcome(name: &'static str, response: Response) -> Response {
    metrics::counter!("girder_idempotency_total", "outcome" => name).increment(1);
    response
}

fn in_progress() -> Response {
    let mut response =
        Problem::new(StatusCode::CONFLICT, "request-in-progress", "Request in progress")
            .detail(
                "a request with this Idempotency-Key is running; retry shortly with the same key",
            )
            .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn reused() -> Response {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        "Idempotency-Key reused",
    )
    .detail("this Idempotency-Key was used for a different request; use a new key")
    .into_response()
}

fn stored_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !UNSTORED_HEADERS.contains(name))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

fn replay(stored: Stored) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Bytes::from(stored.body)).into_response();
    let headers = response.headers_mut();
    // Exactly the stored headers: none of the defaults a fresh body brings.
    headers.clear();
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) =
            (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str()))
        {
            headers.append(name, value);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storing_rule_keeps_definite_answers_and_releases_the_rest() {
        for stored in [200, 201, 204, 302, 401, 402, 403, 404, 410] {
            assert!(is_stored(StatusCode::from_u16(stored).unwrap()), "{stored}");
        }
        for released in [400, 408, 409, 413, 415, 422, 425, 429, 500, 503, 504] {
            assert!(!is_stored(StatusCode::from_u16(released).unwrap()), "{released}");
        }
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        for good in ["k", "a-b_c.d~!", &"x".repeat(KEY_LEN_MAX)] {
            assert_eq!(parse_key(&HeaderValue::from_str(good).unwrap()).unwrap(), good);
        }
        for bad in ["", "has space", &"x".repeat(KEY_LEN_MAX + 1)] {
            assert!(parse_key(&HeaderValue::from_str(bad).unwrap()).is_err(), "{bad:?}");
        }
        assert!(parse_key(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()).is_err());
    }

    #[test]
    fn fingerprints_differ_for_every_field() {
        let parts = |method: &str, uri: &str| {
            let (parts, ()) = axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .unwrap()
                .into_parts();
            parts
        };
        let base = fingerprint(&parts("POST", "/a?x=1"), b"{}");
        assert_eq!(base, fingerprint(&parts("POST", "/a?x=1"), b"{}"));
        assert_ne!(base, fingerprint(&parts("PUT", "/a?x=1"), b"{}"));
        assert_ne!(base, fingerprint(&parts("POST", "/b?x=1"), b"{}"));
        assert_ne!(base, fingerprint(&parts("POST", "/a?x=2"), b"{}"));
        assert_ne!(base, fingerprint(&parts("POST", "/a?x=1"), b"[]"));
        // The fields are length-prefixed: moving a byte from one to the next changes it.
        assert_ne!(
            fingerprint(&parts("POST", "/ab"), b"c"),
            fingerprint(&parts("POST", "/a"), b"bc")
        );
    }
}
