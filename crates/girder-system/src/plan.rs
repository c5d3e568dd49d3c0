//! The binary's list of systems holds [`Plan`]s: a live system ([`Live`]) or one not
//! built yet ([`Planned`]). A plan opens into a [`Running`] system, the type-erased
//! face of a [`System`] the server drives.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::Router;
use clap::{ArgMatches, Args};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::{BoxError, Context, OpenError, Shutdown, Status, System, SystemInfo};

/// One entry of the list of systems.
pub trait Plan: Sync {
    /// Who it is.
    fn info(&self) -> SystemInfo;

    /// Live or planned.
    fn status(&self) -> Status;

    /// Adds its flags to `serve` (under a heading of its own). Planned: none.
    fn augment(&self, command: clap::Command) -> clap::Command;

    /// Opens it from `context`, its flags in `matches` and the config file's
    /// `[<slug>]` table. Planned: `None`.
    fn open<'a>(
        &'a self,
        context: &'a Context,
        matches: &'a ArgMatches,
        file: Option<&'a toml::Table>,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Running>>, OpenError>>;

    /// Its OpenAPI document. Planned: `None`.
    fn openapi(&self) -> Option<utoipa::openapi::OpenApi>;

    /// Its dashboard page. Planned: `None`.
    fn dashboard(&self) -> Option<&'static str>;
}

/// A running system, as the server drives it.
pub trait Running: Send + Sync {
    /// Who it is.
    fn info(&self) -> SystemInfo;
    /// Its API, to nest at `/api/<slug>`.
    fn router(&self) -> Router;
    /// Its routes at the root, if any.
    fn root_router(&self) -> Option<Router>;
    /// Its background work, to spawn and join.
    fn run(&self, shutdown: Shutdown) -> BoxFuture<'static, ()>;
    /// Whether what it depends on answers.
    fn ready(&self) -> BoxFuture<'_, Result<(), BoxError>>;
    /// Re-reads its files.
    ///
    /// # Errors
    /// A file is unreadable or invalid.
    fn reload(&self) -> Result<(), BoxError>;
    /// Answers a request before routing, if it can.
    fn fast_path(&self, request: &axum::extract::Request) -> Option<axum::response::Response>;
    /// The system itself, for [`downcast`](dyn Running::downcast).
    fn as_any(&self) -> &dyn Any;
}

impl dyn Running {
    /// The system as its own type (tests and operators reach into a system this way).
    #[must_use]
    pub fn downcast<S: System>(&self) -> Option<Arc<S>> {
        self.as_any().downcast_ref::<Arc<S>>().cloned()
    }
}

/// A live system of type `S`.
pub struct Live<S>(PhantomData<fn() -> S>);

impl<S> Live<S> {
    /// The plan of `S`.
    #[must_use]
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<S> Default for Live<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: System> Plan for Live<S> {
    fn info(&self) -> SystemInfo {
        S::INFO
    }

    fn status(&self) -> Status {
        Status::Live
    }

    fn augment(&self, command: clap::Command) -> clap::Command {
        S::Settings::augment_args(command)
    }

    fn open<'a>(
        &'a self,
        context: &'a Context,
        matches: &'a ArgMatches,
        file: Option<&'a toml::Table>,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Running>>, OpenError>> {
        async move {
            let settings = crate::settings::layered::<S::Settings>(S::INFO.slug, matches, file)?;
            let system = S::open(context, settings).await?;
            Ok(Some(Box::new(system) as Box<dyn Running>))
        }
        .boxed()
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        Some(S::openapi())
    }

    fn dashboard(&self) -> Option<&'static str> {
        Some(S::DASHBOARD)
    }
}

impl<S: System> Running for Arc<S> {
    fn info(&self) -> SystemInfo {
        S::INFO
    }

    fn router(&self) -> Router {
        System::router(self)
    }

    fn root_router(&self) -> Option<Router> {
        System::root_router(self)
    }

    fn run(&self, shutdown: Shutdown) -> BoxFuture<'static, ()> {
        System::run(Arc::clone(self), shutdown).boxed()
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        System::ready(self.as_ref()).boxed()
    }

    fn reload(&self) -> Result<(), BoxError> {
        System::reload(self.as_ref())
    }

    fn fast_path(&self, request: &axum::extract::Request) -> Option<axum::response::Response> {
        System::fast_path(self.as_ref(), request)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A system the catalogue names that is not built yet: listed, never opened.
#[derive(Debug, Clone, Copy)]
pub struct Planned(pub SystemInfo);

impl Plan for Planned {
    fn info(&self) -> SystemInfo {
        self.0
    }

    fn status(&self) -> Status {
        Status::Planned
    }

    fn augment(&self, command: clap::Command) -> clap::Command {
        command
    }

    fn open<'a>(
        &'a self,
        _context: &'a Context,
        _matches: &'a ArgMatches,
        _file: Option<&'a toml::Table>,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Running>>, OpenError>> {
        async { Ok(None) }.boxed()
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        None
    }

    fn dashboard(&self) -> Option<&'static str> {
        None
    }
}
