//! What a reference system is, for the dashboard and `/api/systems`: its slug,
//! name, summary and the catalogue patterns it is built from. Whether it is live is
//! not written here: it follows from the binary's list of systems.

use serde::Serialize;
use utoipa::ToSchema;

/// A reference system's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemInfo {
    /// URL slug: the API lives under `/api/<slug>`, the dashboard page at
    /// `/dashboard/<slug>`, the settings under `[<slug>]`.
    pub slug: &'static str,
    /// Display name.
    pub name: &'static str,
    /// What it demonstrates, in one line.
    pub summary: &'static str,
    /// The catalogue patterns it is built from, by their catalogue names.
    pub patterns: &'static [&'static str],
}

/// How far a system has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Served by `girder serve` and tested.
    Live,
    /// Not built yet.
    Planned,
}

/// One entry of `/api/systems`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SystemView {
    /// URL slug: the API lives under `/api/<slug>`.
    #[schema(pattern = "^[a-z][a-z0-9]{1,31}$")]
    pub slug: &'static str,
    /// Display name.
    pub name: &'static str,
    /// What it demonstrates.
    pub summary: &'static str,
    /// The catalogue patterns it is built from.
    pub patterns: Vec<&'static str>,
    /// Whether it runs.
    pub status: Status,
}

impl SystemView {
    /// The view of `info` at `status`.
    #[must_use]
    pub fn new(info: &SystemInfo, status: Status) -> Self {
        Self {
            slug: info.slug,
            name: info.name,
            summary: info.summary,
            patterns: info.patterns.to_vec(),
            status,
        }
    }
}
