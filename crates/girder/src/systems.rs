//! The one list of systems. Routes, the OpenAPI document, `/readyz`, shutdown,
//! `/api/systems`, the dashboard index and `girder serve --help` are all derived from
//! it: adding a system is its crate plus one line here.

use girder_system::{Live, Plan, Planned, SystemInfo};

const fn planned(
    slug: &'static str,
    name: &'static str,
    summary: &'static str,
    patterns: &'static [&'static str],
) -> Planned {
    Planned(SystemInfo { slug, name, summary, patterns })
}

/// All sixteen reference systems, in the catalogue's order.
pub static SYSTEMS: [&dyn Plan; 16] = [
    &Live::<girder_ticketmaster::Ticketmaster>::new(),
    &planned(
        "dropbox",
        "Dropbox",
        "large blobs, chunked upload, sync",
        &[
            "Chunking & Multipart Upload",
            "Content-Addressed Storage",
            "Presigned URLs for Direct Upload/Download",
        ],
    ),
    &Live::<girder_bitly::Bitly>::new(),
    &Live::<girder_gopuff::GoPuff>::new(),
    &Live::<girder_newsfeed::NewsFeed>::new(),
    &Live::<girder_whatsapp::WhatsApp>::new(),
    &Live::<girder_livecomments::LiveComments>::new(),
    &planned(
        "postsearch",
        "Post Search",
        "full-text search over posts",
        &["Inverted Index for Text Search"],
    ),
    &Live::<girder_tinder::Tinder>::new(),
    &planned(
        "youtube",
        "YouTube",
        "video upload, transcoding, adaptive streaming",
        &["Chunking & Multipart Upload", "Adaptive Bitrate Streaming"],
    ),
    &planned(
        "leetcode",
        "LeetCode",
        "isolated code execution",
        &["Asynchronous Processing with Message Queues"],
    ),
    &planned(
        "webcrawler",
        "Web Crawler",
        "distributed crawling pipeline",
        &["Asynchronous Processing with Message Queues", "Bloom Filter for Membership Testing"],
    ),
    &Live::<girder_topk::TopK>::new(),
    &Live::<girder_ratelimiter::RateLimiterService>::new(),
    &Live::<girder_adclicks::AdClicks>::new(),
    &Live::<girder_uber::Uber>::new(),
];
