//! RFC 9457 problem details: the one shape every error takes on the wire.
//!
//! Every system maps its typed errors to a [`Problem`] in one place; handlers
//! never build status codes by hand.
//!
//! **400 or 422, one rule.** 400 when the request cannot be read: a JSON body that is
//! not JSON, a path or query parameter that does not deserialize (wrong type, unknown
//! parameter), a required header that is missing or malformed, an opaque value that
//! fails verification (a forged or foreign cursor). 422 when it was read and something
//! in it breaks a rule: a JSON body of the wrong shape (a wrong type, a missing or
//! unknown field), a value out of range, too long or malformed by the operation's own
//! rules (`limit=0`, an invalid URL). 415 for a body that is not `application/json`,
//! 413 for one over the size limit. Every bound behind a 422 is also in the OpenAPI
//! schema.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem details document.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct Problem {
    /// A URI reference naming the problem type; relative, resolved against the server.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// A human-readable explanation of this occurrence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path this occurrence is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl Problem {
    /// A problem with the given status, type slug and title. The type URI is
    /// `/problems/<slug>`, stable across releases so clients can match on it.
    #[must_use]
    pub fn new(status: StatusCode, slug: &str, title: &str) -> Self {
        Self {
            type_uri: format!("/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            instance: None,
        }
    }

    /// Adds the occurrence-specific explanation.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds the path the problem is about.
    #[must_use]
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// 404 for a path or resource that does not exist.
    #[must_use]
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found").detail(detail)
    }

    /// 422 for a request that is well-formed but says something invalid.
    #[must_use]
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request", "Invalid request")
            .detail(detail)
    }

    /// 409 for a request the resource's current state does not allow.
    #[must_use]
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict").detail(detail)
    }

    /// 403 for a caller who may not do this.
    #[must_use]
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").detail(detail)
    }

    /// 500 for a failure that is ours, not the client's. The detail stays in the
    /// log; the client gets no internals.
    #[must_use]
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
    }

    /// 503 when a backing engine is unavailable.
    #[must_use]
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable")
            .detail(detail)
    }

    /// The status as a [`StatusCode`].
    #[must_use]
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}
