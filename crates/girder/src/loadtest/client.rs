//! The HTTP/1.1 client under the load generator: one hyper connection per
//! worker, no pool, no redirects followed, nothing per request beyond building
//! the request. A connection that fails is dropped and reopened on next use.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::config::Target;

/// How a request failed below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The TCP connection could not be opened.
    Connect,
    /// No complete response within the timeout.
    Timeout,
    /// The server closed the connection before a complete response.
    Closed,
    /// The response was not valid HTTP/1.1.
    Protocol,
    /// Any other I/O failure.
    Io,
}

impl TransportErrorKind {
    /// The kind's name in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::Protocol => "protocol",
            Self::Io => "io",
        }
    }

    fn of(error: &hyper::Error) -> Self {
        if error.is_parse() || error.is_parse_status() || error.is_user() {
            Self::Protocol
        } else if error.is_closed() || error.is_incomplete_message() || error.is_canceled() {
            Self::Closed
        } else if error.is_timeout() {
            Self::Timeout
        } else {
            Self::Io
        }
    }
}

/// One open HTTP/1.1 connection and the task driving it.
#[derive(Debug)]
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Conn {
    async fn open(target: &Target) -> Result<Self, TransportErrorKind> {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|_| TransportErrorKind::Connect)?;
        // Small requests and responses: do not wait to coalesce them.
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|e| TransportErrorKind::of(&e))?;
        let driver = tokio::spawn(async move {
            // Its failure surfaces on the request that was in flight.
            let _ = connection.await;
        });
        Ok(Self { sender, driver })
    }

    /// Closes the connection and joins its driver task.
    pub(crate) async fn close(self) {
        drop(self.sender);
        let mut driver = self.driver;
        // An idle connection ends as soon as its sender is gone; one abandoned
        // mid-response (after a timeout) may not, so it is cut.
        if tokio::time::timeout(Duration::from_millis(100), &mut driver).await.is_err() {
            driver.abort();
            let _ = driver.await;
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

/// Sends `request` on `conn`, opening it first if needed, and reads the whole
/// response within `timeout`. On any failure the connection is closed and left
/// `None`, so the next call reconnects.
pub(crate) async fn exchange(
    conn: &mut Option<Conn>,
    target: &Target,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Response, TransportErrorKind> {
    let result = tokio::time::timeout(timeout, send(conn, target, request)).await;
    let result = result.unwrap_or(Err(TransportErrorKind::Timeout));
    if result.is_err()
        && let Some(broken) = conn.take()
    {
        broken.close().await;
    }
    result
}

async fn send(
    conn: &mut Option<Conn>,
    target: &Target,
    request: Request<Full<Bytes>>,
) -> Result<Response, TransportErrorKind> {
    if conn.as_ref().is_some_and(|c| c.sender.is_closed())
        && let Some(stale) = conn.take()
    {
        stale.close().await;
    }
    let open = match conn {
        Some(open) => open,
        None => conn.insert(Conn::open(target).await?),
    };
    open.sender.ready().await.map_err(|e| TransportErrorKind::of(&e))?;
    let response =
        open.sender.send_request(request).await.map_err(|e| TransportErrorKind::of(&e))?;
    let status = response.status();
    // The body must be read in full before the connection can carry the next request.
    let body = response.into_body().collect().await.map_err(|e| TransportErrorKind::of(&e))?;
    Ok(Response { status, body: body.to_bytes() })
}
