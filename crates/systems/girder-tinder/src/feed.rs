//! One page of the feed: nearby profiles from the geo index, filtered both ways,
//! nearest first, continued by a cursor (Patterns: Geohashing for Proximity Search
//! — here Redis's geo index —, Pagination & Cursor-based Fetching).
//!
//! **Order and the cursor.** Profiles come in the index's order: distance from the
//! page's origin, ties by user id. The cursor holds the origin (the viewer's place
//! when the first page was served, so a viewer who moves while paging still pages
//! one list), the radius step reached, and the last position examined, `(distance,
//! user)`: the next page starts strictly after it, so pages neither repeat nor skip
//! a profile that stayed put (a keyset, not an offset). A profile that moves between
//! pages may come up again further on; the seen filter catches that.
//!
//! **Filters.** In order of cost: the viewer themself; profiles the seen filter may
//! hold ([`crate::seen`]); then, one query per batch of up to [`BATCH_MAX`], profiles
//! that exist and that the viewer has not swiped (exact, from the swipes table);
//! then both sides' preferences and distances ([`crate::profile::shown_to_each_other`]).
//!
//! **Bounded work.** A page reads at most `scan_max` profiles from the table (the
//! candidates it *examines*; 1,000 by default). When the filters remove most of them
//! the page ends early, shorter than asked or even empty, with a cursor at the last
//! one examined: the client keeps paging and no candidate is examined twice. The
//! index is searched in growing circles — 2, 5, 10, 20, 50, 100, 200, 350 and 500
//! km, cut at the viewer's distance, which is always the last step — because a
//! `GEOSEARCH` costs in proportion to the members inside its circle: a viewer in a
//! dense city with plenty nearby never pays for a 500 km search. Within a step the
//! reply is asked for the profiles up to the cursor plus `scan_max` more, and doubled
//! while it comes back full and the page wants more, up to `depth_max` (10,000) hits
//! per search. That is also the limit of the feed: it reaches at most `depth_max`
//! profiles deep from its origin, so in a place so dense that more than 10,000
//! profiles are nearer than the next one worth showing, the feed ends there.

use std::collections::HashMap;
use std::num::NonZeroUsize;

use girder_geo::Point;
use girder_geo::index::{Center, GeoError, GeoIndex, Hit, Search};
use serde::{Deserialize, Serialize};

use crate::profile::{Profile, shown_to_each_other};
use crate::seen::Seen;
use crate::store::{Store, StoreError};

/// Candidates whose profiles one query reads.
pub const BATCH_MAX: usize = 100;

/// The radius steps, km; a viewer's own distance is always the last step.
pub const STEPS_KM: [i64; 9] = [2, 5, 10, 20, 50, 100, 200, 350, 500];

/// How much a page may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedConfig {
    /// Candidates a page reads from the table, at most.
    pub scan_max: usize,
    /// Hits one index search returns, at most: how deep a feed reaches.
    pub depth_max: usize,
}

impl FeedConfig {
    /// The defaults: 1,000 candidates per page, 10,000 hits per search.
    #[must_use]
    pub const fn new() -> Self {
        Self { scan_max: 1_000, depth_max: 10_000 }
    }
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the next page starts (serialized into the opaque cursor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedCursor {
    /// The origin's latitude.
    pub lat: f64,
    /// The origin's longitude.
    pub lon: f64,
    /// The radius step reached (an index into the viewer's steps).
    pub step: u8,
    /// The last examined hit's distance from the origin, m.
    pub dist_m: f64,
    /// The last examined hit's user.
    pub user: String,
    /// How many hits lie at or before it (sizes the next search; not trusted for
    /// correctness).
    pub depth: u32,
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    /// The profiles, nearest first, with their distance from the origin in m.
    pub items: Vec<(Profile, f64)>,
    /// Where the next page starts; `None` when nothing is left within the viewer's
    /// distance.
    pub next: Option<FeedCursor>,
    /// Candidates read from the table.
    pub examined: usize,
    /// Hits passed over because the seen filter may hold them.
    pub hidden_by_seen: usize,
    /// The radius of the step the page ended in, km.
    pub radius_km: i64,
    /// Whether a search came back with `depth_max` hits and more could not be read.
    pub depth_capped: bool,
}

/// Why a page could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The geo index failed.
    #[error(transparent)]
    Index(#[from] GeoError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cursor's origin is not a place (it came from an older release).
    #[error("the cursor's origin is not a valid place")]
    Origin,
}

/// The radius steps for a viewer searching within `max_km`: the steps below it, then
/// `max_km` itself.
#[must_use]
pub fn steps(max_km: i64) -> Vec<i64> {
    let mut steps: Vec<i64> = STEPS_KM.iter().copied().filter(|s| *s < max_km).collect();
    steps.push(max_km.max(1));
    steps
}

/// The index's order: distance, then user id.
fn order(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    a.dist_m.total_cmp(&b.dist_m).then_with(|| a.member.cmp(&b.member))
}

/// Whether `hit` is at or before the position `(dist_m, user)`.
fn at_or_before(hit: &Hit, after: &(f64, String)) -> bool {
    hit.dist_m.total_cmp(&after.0).then_with(|| (*hit.member).cmp(after.1.as_str())).is_le()
}

/// What one page is asked for.
#[derive(Debug)]
pub struct PageRequest<'a> {
    /// Whose feed.
    pub viewer: &'a Profile,
    /// Their seen filters.
    pub seen: &'a Seen,
    /// Where to continue; `None` for the first page.
    pub cursor: Option<&'a FeedCursor>,
    /// Profiles wanted, at least 1.
    pub limit: usize,
}

/// Serves one page (see the module docs).
///
/// # Errors
/// The index or the store failed, or the cursor's origin is invalid.
pub async fn page<I: GeoIndex>(
    index: &I,
    store: &Store,
    request: &PageRequest<'_>,
    config: &FeedConfig,
) -> Result<FeedPage, FeedError> {
    let PageRequest { viewer, seen, cursor, limit } = *request;
    debug_assert!(limit >= 1 && config.scan_max >= 1 && config.depth_max >= config.scan_max);
    let origin = match cursor {
        Some(c) => Point::indexable(c.lat, c.lon).map_err(|_| FeedError::Origin)?,
        None => viewer.location,
    };
    let steps = steps(viewer.max_distance_km);
    let mut step = cursor.map_or(0, |c| usize::from(c.step)).min(steps.len() - 1);
    let mut after: Option<(f64, String)> = cursor.map(|c| (c.dist_m, c.user.clone()));
    let mut depth = cursor.map_or(0, |c| c.depth as usize);
    let mut out = FeedPage {
        items: Vec::new(),
        next: None,
        examined: 0,
        hidden_by_seen: 0,
        radius_km: steps[step],
        depth_capped: false,
    };
    let cursor_at = |step: usize, after: &(f64, String), depth: usize| FeedCursor {
        lat: origin.lat(),
        lon: origin.lon(),
        step: u8::try_from(step).unwrap_or(u8::MAX),
        dist_m: after.0,
        user: after.1.clone(),
        depth: u32::try_from(depth).unwrap_or(u32::MAX),
    };
    loop {
        out.radius_km = steps[step];
        // Exact: steps are at most 500 km.
        let radius_m = (steps[step] * 1_000) as f64;
        let mut want = (depth + config.scan_max).clamp(1, config.depth_max);
        loop {
            let count = NonZeroUsize::new(want).unwrap_or(NonZeroUsize::MIN);
            let search = Search::radius(Center::At(origin), radius_m).limit(count);
            let mut hits = index.search(&search).await?;
            let full = hits.len() >= want;
            // Both backends already sort so; sorting again makes the keyset
            // comparison below agree with the order whatever a backend rounds.
            hits.sort_by(order);
            let start = after.as_ref().map_or(0, |a| hits.partition_point(|h| at_or_before(h, a)));
            depth = start;
            let mut i = start;
            while i < hits.len() {
                // A window of hits holding up to one batch of candidates worth reading.
                let budget = (config.scan_max - out.examined).min(BATCH_MAX);
                let mut end = i;
                let mut wanted: Vec<&str> = Vec::new();
                while end < hits.len() && wanted.len() < budget {
                    let member: &str = &hits[end].member;
                    if member != viewer.user && !seen.contains(member) {
                        wanted.push(member);
                    }
                    end += 1;
                }
                let mut profiles: HashMap<String, Profile> = store
                    .unswiped(&viewer.user, &wanted)
                    .await?
                    .into_iter()
                    .map(|p| (p.user.clone(), p))
                    .collect();
                for hit in &hits[i..end] {
                    after = Some((hit.dist_m, hit.member.to_string()));
                    depth += 1;
                    let member: &str = &hit.member;
                    if member == viewer.user {
                        continue;
                    }
                    if seen.contains(member) {
                        out.hidden_by_seen += 1;
                        continue;
                    }
                    out.examined += 1;
                    if let Some(profile) = profiles.remove(member)
                        && shown_to_each_other(viewer, &profile, hit.dist_m)
                    {
                        out.items.push((profile, hit.dist_m));
                    }
                    if out.items.len() >= limit || out.examined >= config.scan_max {
                        let position = after.as_ref().unwrap_or_else(|| unreachable!("set above"));
                        out.next = Some(cursor_at(step, position, depth));
                        return Ok(out);
                    }
                }
                i = end;
            }
            if full && want < config.depth_max {
                want = want.saturating_mul(2).min(config.depth_max);
                continue;
            }
            out.depth_capped |= full;
            break;
        }
        if step + 1 == steps.len() {
            return Ok(out);
        }
        step += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_end_at_the_viewers_distance() {
        assert_eq!(steps(1), [1]);
        assert_eq!(steps(2), [2]);
        assert_eq!(steps(3), [2, 3]);
        assert_eq!(steps(60), [2, 5, 10, 20, 50, 60]);
        assert_eq!(steps(500), STEPS_KM);
    }
}
