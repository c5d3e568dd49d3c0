//! Request ids: every response carries `x-request-id`, the caller's own when it sent
//! one, else a fresh UUIDv7 (time-ordered, so logs sort by it, and drawn from
//! girder-id's per-thread generator rather than a system call per request). The
//! server installs [`set_layer`] outermost and [`propagate_layer`] inside it; a
//! response made without the router (a system's fast path) gets its id from
//! [`stamp`].

use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::Response;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId as TowerRequestId, SetRequestIdLayer,
};

/// The header that carries the id, in both directions.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Makes UUIDv7 request ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIds(girder_id::uuid7::UuidV7Generator);

impl RequestIds {
    /// A fresh id as a header value.
    #[must_use]
    pub fn next_value(&mut self) -> HeaderValue {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = self.0.next().hyphenated().encode_lower(&mut buf);
        HeaderValue::from_str(text).expect("a hyphenated UUID is a valid header value")
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<TowerRequestId> {
        Some(TowerRequestId::new(self.next_value()))
    }
}

/// Gives every request without an id a fresh one (outermost layer).
#[must_use]
pub fn set_layer() -> SetRequestIdLayer<RequestIds> {
    SetRequestIdLayer::new(HEADER, RequestIds::default())
}

/// Copies the request's id onto its response.
#[must_use]
pub fn propagate_layer() -> PropagateRequestIdLayer {
    PropagateRequestIdLayer::new(HEADER)
}

/// The id of `request`, or `""` before [`set_layer`] ran (for log spans).
#[must_use]
pub fn of<B>(request: &Request<B>) -> &str {
    request.headers().get(&HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Puts `request`'s id, or a fresh one, on a response made outside the router.
pub fn stamp<B>(request: &Request<B>, response: &mut Response) {
    let id = request
        .headers()
        .get(&HEADER)
        .cloned()
        .unwrap_or_else(|| RequestIds::default().next_value());
    response.headers_mut().insert(HEADER, id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_uuids_and_a_callers_id_is_kept() {
        let mut ids = RequestIds::default();
        let (a, b) = (ids.next_value(), ids.next_value());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert!(uuid::Uuid::parse_str(a.to_str().unwrap()).is_ok_and(|u| u.get_version_num() == 7));

        let request = Request::get("/").header(HEADER, "caller-42").body(()).unwrap();
        let mut response = Response::new(axum::body::Body::empty());
        stamp(&request, &mut response);
        assert_eq!(response.headers()[HEADER], "caller-42");
        let bare = Request::get("/").body(()).unwrap();
        stamp(&bare, &mut response);
        assert_ne!(response.headers()[HEADER], "caller-42");
        assert_eq!(of(&bare), "");
    }
}
