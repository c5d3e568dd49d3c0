//! `girder serve`: bind, serve until SIGINT/SIGTERM, drain in-flight requests,
//! then stop background work (flushing buffered writes) and close stores.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use girder_core::{CoarseClock, SystemClock};
use girder_system::Shutdown;

use crate::app::{self, Systems};
use crate::config::Config;

/// How often expired Idempotency-Key records are deleted.
const IDEMPOTENCY_PURGE_EVERY: Duration = Duration::from_secs(600);

/// Runs the server until a shutdown signal arrives.
///
/// # Errors
/// Start-up failures: a store cannot be opened or the address cannot be bound.
pub async fn run(config: Config) -> anyhow::Result<()> {
    crate::telemetry::prometheus();
    // Per-request hot paths (rate-limit decisions) read a clock refreshed every
    // millisecond by one shared thread, saving a system call per request. A decision
    // sees a time up to about 1 ms old: refill-based limits are then at most as
    // permissive, and window edges move by at most that much.
    let coarse_clock = Arc::new(CoarseClock::shared());
    // The one clock of this instance: the systems' and the idempotency purge's.
    let clock: Arc<dyn girder_core::Clock> = Arc::new(SystemClock);
    let systems =
        Systems::open_with_coarse_clock(&config, Arc::clone(&clock), coarse_clock).await?;
    let (stop, shutdown) = Shutdown::new();
    let reloads = reload_on_sighup(systems.clone(), config.clone(), shutdown.clone().wait());
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let local = listener.local_addr()?;
    tracing::info!(
        address = %local,
        store = systems.db().engine(),
        "girder serving; dashboard at http://{local}/"
    );

    // Every system's background work, spawned here and joined below.
    let background: Vec<_> =
        systems.running().iter().map(|s| tokio::spawn(s.run(shutdown.clone()))).collect();
    let upkeep = tokio::spawn(crate::telemetry::run_upkeep(shutdown.clone().wait()));
    // Replica health and lag, probed on an interval (nothing to do without replicas).
    let replicas = {
        let reads = systems.reads().clone();
        let stop = shutdown.clone().wait();
        tokio::spawn(async move { reads.monitor(stop).await })
    };
    // Every system's Idempotency-Key records share one table; one sweep keeps it small.
    let records =
        girder_http::idempotency::Idempotency::new(systems.db().clone(), Arc::clone(&clock));
    let purge = {
        let stop = shutdown.clone().wait();
        tokio::spawn(async move { records.purge_until(IDEMPOTENCY_PURGE_EVERY, stop).await })
    };

    let router = app::router(&systems, &config);
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    // Peer addresses reach the rate limiter (its `ip` keys) through ConnectInfo.
    let service = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
        std::net::SocketAddr,
    >(router);
    let reloads = tokio::spawn(reloads);
    let server = axum::serve(listener, service).with_graceful_shutdown(shutdown_signal());
    server.await.context("serving")?;
    tracing::info!("shutting down: flushing buffered writes");

    // In-flight requests have drained; now let background work finish its last flush.
    stop.fire();
    let _ = upkeep.await;
    let _ = replicas.await;
    let _ = purge.await;
    let _ = reloads.await;
    let joined = async {
        for task in background {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(grace, joined).await.is_err() {
        tracing::warn!(grace_ms = config.shutdown_grace_ms, "background work did not stop in time");
    }
    systems.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Reloads the rate-limit rule files on every SIGHUP until `stop` resolves, counting
/// each attempt in `girder_ratelimit_reloads_total{outcome=applied|rejected}`.
fn reload_on_sighup(
    systems: Systems,
    config: Config,
    stop: impl std::future::Future<Output = ()>,
) -> impl std::future::Future<Output = ()> {
    // The handler is installed now, not when the task first runs: a SIGHUP that
    // arrives once the port is open must find it (the default action ends the process).
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    async move {
        #[cfg(unix)]
        {
            let Some(mut hangups) = hangups else { return };
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    Some(()) = hangups.recv() => match systems.reload(&config) {
                        Ok(()) => {
                            metrics::counter!("girder_ratelimit_reloads_total", "outcome" => "applied").increment(1);
                            tracing::info!("rate limits reloaded");
                        }
                        Err(e) => {
                            metrics::counter!("girder_ratelimit_reloads_total", "outcome" => "rejected").increment(1);
                            tracing::warn!(error = %e, "rate limits not reloaded; the old rules stay");
                        }
                    },
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (systems, config);
            stop.await;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
