//! The sixteen reference systems and where each stands, for the dashboard and
//! `/api/systems`. Kept beside the code so the list cannot drift from what the
//! server mounts.

use serde::Serialize;
use utoipa::ToSchema;

/// How far a system has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Served by `girder serve` and tested.
    Live,
    /// Not built yet.
    Planned,
}

/// One reference system.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct SystemInfo {
    /// URL slug: the API lives under `/api/<slug>`.
    pub slug: &'static str,
    /// Display name.
    pub name: &'static str,
    /// What it demonstrates.
    pub summary: &'static str,
    /// Whether it runs.
    pub status: Status,
}

const fn system(
    slug: &'static str,
    name: &'static str,
    summary: &'static str,
    status: Status,
) -> SystemInfo {
    SystemInfo { slug, name, summary, status }
}

/// All sixteen systems, in the catalogue's order.
pub const SYSTEMS: [SystemInfo; 16] = [
    system(
        "ticketmaster",
        "Ticketmaster",
        "seat holds with expiry, idempotent payment, a virtual waiting room",
        Status::Live,
    ),
    system("dropbox", "Dropbox", "large blobs, chunked upload, sync", Status::Planned),
    system(
        "bitly",
        "Bit.ly",
        "URL shortener: counter + Base62, read-heavy redirects, batched clicks",
        Status::Live,
    ),
    system(
        "gopuff",
        "GoPuff",
        "inventory and multi-item ACID orders: row locks or optimistic versions, cached availability",
        Status::Live,
    ),
    system("newsfeed", "News Feed", "fan-out and pre-computed feeds", Status::Planned),
    system("whatsapp", "WhatsApp", "bi-directional real-time messaging", Status::Planned),
    system("livecomments", "Live Comments", "real-time broadcast to viewers", Status::Planned),
    system("postsearch", "Post Search", "full-text search over posts", Status::Planned),
    system("tinder", "Tinder", "geospatial matching", Status::Planned),
    system("youtube", "YouTube", "video upload, transcoding, adaptive streaming", Status::Planned),
    system("leetcode", "LeetCode", "isolated code execution", Status::Planned),
    system("webcrawler", "Web Crawler", "distributed crawling pipeline", Status::Planned),
    system("topk", "YouTube Top-K", "stream aggregation and heavy hitters", Status::Planned),
    system(
        "ratelimiter",
        "Distributed Rate Limiter",
        "five algorithms as a service, one Redis script per decision, shared by every instance",
        Status::Live,
    ),
    system("adclicks", "Ad Click Aggregator", "real-time click analytics", Status::Planned),
    system("uber", "Uber", "ride matching and location updates", Status::Planned),
];
