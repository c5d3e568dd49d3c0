//! The contract every reference system implements ([`System`]), the shared
//! [`Context`] it opens from, and the type-erased [`Plan`] the binary keeps one list
//! of. Everything the server does per system — flags and settings, routes, the
//! OpenAPI document, background tasks, `/readyz`, the shutdown flush, the dashboard
//! page, `/api/systems` — is derived from that list, so adding a system is one crate
//! plus one line in the list.
//!
//! A system crate implements [`System`] in its `lib.rs`; its handlers and DTOs live
//! in its HTTP module, its domain modules never see HTTP.

pub mod catalog;
mod plan;
mod settings;

use std::future::Future;
use std::sync::Arc;

use girder_core::Clock;
use tokio::sync::watch;

pub use axum::Router;
pub use axum::extract::Request;
pub use axum::http::Method;
pub use axum::response::Response;
pub use catalog::{Status, SystemInfo, SystemView};
pub use plan::{Live, Plan, Planned, Running};
pub use settings::SettingsError;

/// A boxed error with its chain intact.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The engines and clocks every system opens from, configured once per instance.
#[derive(Clone)]
pub struct Context {
    /// The one system-of-record pool of this instance, shared by every system.
    pub db: girder_sql::Db,
    /// Reads routed to PostgreSQL streaming replicas when the server has some
    /// (`--database-replica-url`), with read-your-writes through write tokens; with
    /// none (and always on SQLite) every read it routes goes to `db`. Writes go to
    /// `db`.
    pub reads: girder_sql::replica::ReadRouter,
    /// Redis, when configured: the shared cache layer, rate-limit state, cross-instance
    /// invalidation. `None`: everything stays in process.
    pub redis_url: Option<String>,
    /// The clock for expiries, TTLs and timestamps (a manual clock in tests).
    pub clock: Arc<dyn Clock>,
    /// A clock read with one atomic load, for per-request hot paths (rate limits),
    /// at most about a millisecond behind `clock`.
    pub coarse_clock: Arc<dyn Clock>,
    /// The origin this instance is reached at, e.g. `http://127.0.0.1:8080`.
    pub public_url: String,
    /// This instance's directory for embedded data (write-ahead logs, durable
    /// queues): never shared between instances.
    pub data_dir: std::path::PathBuf,
    /// NATS with JetStream, when configured: queues and streams shared by every
    /// instance. `None`: embedded queues in `data_dir`.
    pub nats_url: Option<String>,
}

/// The first path segments the server itself serves or may serve: nothing a system
/// serves at the root (Bit.ly's codes) may take one, in any letter case.
pub const SERVER_PATHS: &[&str] = &[
    "api",
    "healthz",
    "readyz",
    "livez",
    "metrics",
    "openapi.json",
    "openapi",
    "assets",
    "static",
    "dashboard",
    "lab",
    "systems",
    "docs",
    "favicon.ico",
    "robots.txt",
    "index.html",
    "problems",
    "admin",
    "login",
    "logout",
    "well-known",
    ".well-known",
];

impl Context {
    /// A context on `db` with every clock reading `clock`, no replicas, no Redis, no NATS,
    /// `./girder-data` as the data directory and `http://127.0.0.1:8080` as the public
    /// origin: for tests and for embedding one system in another program.
    #[must_use]
    pub fn new(db: girder_sql::Db, clock: Arc<dyn Clock>) -> Self {
        Self {
            reads: girder_sql::replica::ReadRouter::primary_only(db.clone()),
            db,
            redis_url: None,
            coarse_clock: Arc::clone(&clock),
            clock,
            public_url: "http://127.0.0.1:8080".to_owned(),
            data_dir: std::path::PathBuf::from("girder-data"),
            nats_url: None,
        }
    }

    /// The same context with its embedded data in `dir`.
    #[must_use]
    pub fn with_data_dir(self, dir: impl Into<std::path::PathBuf>) -> Self {
        Self { data_dir: dir.into(), ..self }
    }

    /// The same context with NATS at `url`.
    #[must_use]
    pub fn with_nats(self, url: impl Into<String>) -> Self {
        Self { nats_url: Some(url.into()), ..self }
    }

    /// The same context with reads routed by `reads` (whose primary should be `db`).
    #[must_use]
    pub fn with_reads(self, reads: girder_sql::replica::ReadRouter) -> Self {
        Self { reads, ..self }
    }

    /// The same context with Redis at `url`.
    #[must_use]
    pub fn with_redis(self, url: impl Into<String>) -> Self {
        Self { redis_url: Some(url.into()), ..self }
    }

    /// This instance's id for `system`, kept in `<data_dir>/<system>/instance` (made,
    /// synced and renamed into place the first time), so a restart on the same data
    /// directory is the same instance: its stream pipelines and leases resume.
    ///
    /// # Errors
    /// The directory cannot be made or the file read or written, or it is empty.
    pub fn instance_id(&self, system: &str) -> Result<String, std::io::Error> {
        let dir = self.data_dir.join(system);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("instance");
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
            Ok(_) => Err(std::io::Error::other(format!("{} is empty", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = format!("{:016x}", rand::random::<u64>());
                let tmp = dir.join("instance.tmp");
                std::fs::write(&tmp, &id)?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(&dir)?.sync_all()?;
                Ok(id)
            }
            Err(e) => Err(e),
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("db", &self.db.engine())
            .field("replicas", &self.reads.replicas().len())
            .field("redis", &self.redis_url.is_some())
            .field("nats", &self.nats_url.is_some())
            .field("data_dir", &self.data_dir)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// Resolves when the server stops: background tasks select on it, finish their last
/// flush and return. Clones resolve together.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown signal and the handle that fires it.
    #[must_use]
    pub fn new() -> (ShutdownTrigger, Self) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Self(rx))
    }

    /// Waits until shutdown is triggered (or its trigger is dropped).
    pub async fn wait(mut self) {
        // An error means the trigger is gone, which also means stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Fires a [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    /// Every clone of the [`Shutdown`] resolves.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

/// Why a system could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Its settings are invalid; the message names the setting.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// Its tables could not be migrated.
    #[error(transparent)]
    Migrate(#[from] girder_sql::migrate::Error),
    /// Its store, cache or another engine failed while opening.
    #[error("opening its storage")]
    Storage(#[source] BoxError),
}

impl OpenError {
    /// A storage failure, its cause kept as the source.
    pub fn storage(error: impl Into<BoxError>) -> Self {
        Self::Storage(error.into())
    }
}

/// A reference system, as the server runs it.
///
/// The server opens it from the shared [`Context`] and its settings, nests its
/// [`router`](System::router) at `/api/<slug>`, merges its OpenAPI document, serves its
/// dashboard page at `/dashboard/<slug>`, runs its background work until shutdown,
/// asks it whether it is ready, and lets it flush last.
pub trait System: Send + Sync + Sized + 'static {
    /// Its settings section: flags (`--<slug>-…`), `GIRDER_<SLUG>_…` variables and the
    /// `[<slug>]` TOML table, every field optional so the sources can be layered.
    /// Field names carry the slug as a prefix (`bitly_codes`), which the TOML table
    /// drops (`[bitly] codes = …`) through `#[serde(rename)]`.
    type Settings: clap::Args
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Default
        + Send
        + 'static;

    /// Who it is.
    const INFO: SystemInfo;

    /// Its dashboard page, an HTML document embedded in the crate.
    const DASHBOARD: &'static str;

    /// Opens it: validates `settings`, migrates its tables, reads its shared keys.
    fn open(
        context: &Context,
        settings: Self::Settings,
    ) -> impl Future<Output = Result<Arc<Self>, OpenError>> + Send;

    /// Its API, nested by the server at `/api/<slug>`.
    fn router(self: &Arc<Self>) -> Router;

    /// Routes outside `/api/<slug>` (Bit.ly's redirects at `/{code}`), merged at the
    /// root, below every server route. Default: none.
    fn root_router(self: &Arc<Self>) -> Option<Router> {
        None
    }

    /// Its OpenAPI document, with paths under `/api/<slug>`.
    fn openapi() -> utoipa::openapi::OpenApi;

    /// Its background work, run until `shutdown` resolves; it finishes its last flush
    /// before returning. The server spawns it and joins it. Default: none.
    fn run(self: Arc<Self>, shutdown: Shutdown) -> impl Future<Output = ()> + Send {
        let _ = self;
        shutdown.wait()
    }

    /// Whether what it depends on answers. Default: ready.
    fn ready(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }

    /// Re-reads its files on SIGHUP. Default: nothing to reload.
    ///
    /// # Errors
    /// A file is unreadable or invalid; the old configuration stays.
    fn reload(&self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Answers a request before routing, when it can do so without awaiting (Bit.ly's
    /// warm redirects). Default: never.
    fn fast_path(&self, request: &axum::extract::Request) -> Option<axum::response::Response> {
        let _ = request;
        None
    }
}
