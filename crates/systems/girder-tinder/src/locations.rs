//! Where profiles are: the geo index the feed searches, kept following the profiles
//! table (Pattern: Redis Geospatial Indexes).
//!
//! **The table is the truth.** A profile write commits to `tinder_profiles` first and
//! then upserts the index; the index is rebuilt from the table when the system opens
//! and refreshed from it every `index_refresh_ms` (2 s by default): each pass reads
//! the profiles whose `updated_ms` is at or after the last one it saw, less a margin
//! of [`REFRESH_MARGIN_MS`] for writers whose clocks lag or whose statement committed
//! late, and upserts them. An index write that failed after its commit is repaired by
//! the next pass.
//!
//! **Which index.** With Redis (`Context::redis_url`) every instance shares one sorted
//! set, so a profile one instance moves is found at its new place by every instance
//! at once. Without Redis each instance holds its own in-memory index; another
//! instance's writes reach it through the refresh, so a profile created or moved
//! through one instance appears in another's feeds within `index_refresh_ms`. Several
//! instances without Redis are therefore consistent within that interval, not at
//! once; give them Redis for that.

use girder_geo::Point;
use girder_geo::index::{AnyGeoIndex, GeoError, GeoIndex, Update};

use crate::store::{Store, StoreError};

/// How far behind its last-seen change a refresh looks again, ms.
pub const REFRESH_MARGIN_MS: i64 = 60_000;
/// Profiles a refresh reads per query.
const REFRESH_BATCH: u32 = 1_000;
/// Queries one refresh makes at most; the rest waits for the next pass.
const REFRESH_QUERIES_MAX: usize = 1_000;

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The table could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The index refused or failed.
    #[error(transparent)]
    Index(#[from] GeoError),
}

/// The index and how far the refresh has read.
#[derive(Debug)]
pub struct Locations {
    index: AnyGeoIndex,
    /// The newest `(updated_ms, user)` a refresh upserted.
    seen_up_to: tokio::sync::Mutex<(i64, String)>,
}

impl Locations {
    /// Over `index`, nothing read yet.
    #[must_use]
    pub fn new(index: AnyGeoIndex) -> Self {
        Self { index, seen_up_to: tokio::sync::Mutex::new((i64::MIN, String::new())) }
    }

    /// The index.
    #[must_use]
    pub fn index(&self) -> &AnyGeoIndex {
        &self.index
    }

    /// Puts `user` at `point`.
    ///
    /// # Errors
    /// The index failed.
    pub async fn place(&self, user: &str, point: Point) -> Result<(), GeoError> {
        self.index.upsert(&[Update { member: user, point, ttl_ms: None }]).await.map(drop)
    }

    /// Upserts every profile changed since the last pass (all of them on the first);
    /// returns how many were read.
    ///
    /// # Errors
    /// The table or the index failed; what was upserted stays, and the next pass
    /// starts from the last batch that was.
    pub async fn refresh(&self, store: &Store) -> Result<usize, RefreshError> {
        let mut seen_up_to = self.seen_up_to.lock().await;
        let (mut since, mut after) = if seen_up_to.0 == i64::MIN {
            (i64::MIN, String::new())
        } else {
            (seen_up_to.0.saturating_sub(REFRESH_MARGIN_MS), String::new())
        };
        let mut read = 0;
        for _ in 0..REFRESH_QUERIES_MAX {
            let batch = store.placed_since(since, &after, REFRESH_BATCH).await?;
            let Some(last) = batch.last() else { break };
            let points: Vec<(String, Point)> = batch
                .iter()
                .filter_map(|p| match Point::indexable(p.lat, p.lon) {
                    Ok(point) => Some((p.user.clone(), point)),
                    Err(e) => {
                        tracing::warn!(user = %p.user, error = %e, "a profile's place cannot be indexed");
                        None
                    }
                })
                .collect();
            let updates: Vec<Update<'_>> = points
                .iter()
                .map(|(user, point)| Update { member: user, point: *point, ttl_ms: None })
                .collect();
            self.index.upsert(&updates).await?;
            read += batch.len();
            (since, after) = (last.updated_ms, last.user.clone());
            if seen_up_to.0 < since || (seen_up_to.0 == since && seen_up_to.1 < after) {
                *seen_up_to = (since, after.clone());
            }
            if batch.len() < REFRESH_BATCH as usize {
                break;
            }
        }
        Ok(read)
    }
}
