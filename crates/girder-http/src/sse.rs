//! Server-Sent Events responses: the headers every event stream needs, once.

use axum::body::{Body, Bytes};
use axum::http::header::{self, HeaderName};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};

/// A `text/event-stream` response of `frames` (encoded events, e.g. from
/// `girder_realtime::sse::stream`): never stored by caches (`no-store`) and not
/// buffered by proxies (`X-Accel-Buffering: no`), so each event leaves at once.
pub fn response<S>(frames: S) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(frames.map(Ok::<_, std::convert::Infallible>)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::header;

    #[tokio::test]
    async fn an_event_stream_is_neither_cached_nor_buffered() {
        let frames = futures_util::stream::iter([axum::body::Bytes::from_static(b"data: 1\n\n")]);
        let response = super::response(frames);
        let h = response.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h["x-accel-buffering"], "no");
        let body = axum::body::to_bytes(response.into_body(), 1_024).await.unwrap();
        assert_eq!(&body[..], b"data: 1\n\n");
    }
}
