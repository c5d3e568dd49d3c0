//! The yardstick for HTTP numbers: a bare axum handler that answers every
//! request with the same 302, no routing table, no state, no I/O. Girder's
//! redirect throughput is reported as a ratio to this, measured in the same run
//! with the same load generator.
//!
//! Usage: `baseline-302 127.0.0.1:PORT`.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let app = Router::new().route(
            "/{code}",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "https://example.com/")]) }),
        );
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        axum::serve(listener, app).await
    })
}
