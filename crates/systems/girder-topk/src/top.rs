//! Answering "the top K videos of a window", exactly or from merged summaries.
//!
//! **Exact** sums the minute rows of the range over every pipeline (for all time, the
//! totals table): right to the view, at a cost that grows with the distinct videos
//! in the range.
//!
//! **Approximate** merges the stored Space-Saving summaries that cover the range
//! (every pipeline's, every partition's; [`crate::span::cover`] picks at most 51 per
//! partition for a day) and reports the merged summary's top K. Each count comes with
//! its error: the true count is in `count − error ..= count`, and any video not
//! listed has at most `max(floor, the k-th count)` views. The cost is fixed by the
//! summary size and the number of buckets, whatever the number of videos.

use girder_sketch::topk::SpaceSaving;

use crate::sink::SUMMARY_KEYS;
use crate::span::{Window, cover};
use crate::store::{Store, StoreError};

/// How a top-K is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Sums of the stored counts.
    Exact,
    /// Merged Space-Saving summaries, each count with its error.
    Approx,
}

/// One video of a top-K.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    /// The video.
    pub video: String,
    /// Its views (an upper bound in approximate mode).
    pub views: u64,
    /// How far `views` may be above the true count (0 when exact).
    pub error: u64,
}

/// A top-K answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Top {
    /// The videos, most viewed first.
    pub videos: Vec<Ranked>,
    /// All views in the window.
    pub total_views: u64,
    /// Approximate mode: every video not monitored by the merged summary has at most
    /// this many views.
    pub floor: Option<u64>,
    /// Approximate mode: how many stored summaries were merged.
    pub summaries: usize,
}

/// The answer could not be computed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored summary is damaged or of another size.
    #[error("a stored summary cannot be merged")]
    Summary(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The exact top `k` of `window` when the current minute is `now`.
///
/// # Errors
/// [`TopError::Store`].
pub async fn exact(store: &Store, window: Window, now: i64, k: u32) -> Result<Top, TopError> {
    let (rows, total) = match window.minutes(now) {
        Some((first, last)) => {
            (store.top_in(first, last, k).await?, store.views_in(first, last).await?)
        }
        None => (store.top_all(k).await?, store.views_all().await?),
    };
    Ok(Top {
        videos: rows
            .into_iter()
            .map(|c| Ranked { video: c.video, views: unsigned(c.views), error: 0 })
            .collect(),
        total_views: unsigned(total),
        floor: None,
        summaries: 0,
    })
}

/// The approximate top `k` of `window` when the current minute is `now`.
///
/// # Errors
/// [`TopError`].
pub async fn approx(store: &Store, window: Window, now: i64, k: u32) -> Result<Top, TopError> {
    let mut merged = SpaceSaving::new(SUMMARY_KEYS).map_err(|e| TopError::Summary(e.into()))?;
    let mut summaries = 0;
    let mut merge = |stored: Vec<Vec<u8>>| -> Result<(), TopError> {
        for bytes in stored {
            let summary =
                SpaceSaving::from_bytes(&bytes).map_err(|e| TopError::Summary(e.into()))?;
            merged.merge(&summary).map_err(|e| TopError::Summary(e.into()))?;
            summaries += 1;
        }
        Ok(())
    };
    match window.minutes(now) {
        Some((first, last)) => {
            for run in cover(first, last) {
                merge(store.summaries(run).await?)?;
            }
        }
        None => merge(store.summaries_all().await?)?,
    }
    let videos = merged
        .top(k as usize)
        .into_iter()
        .map(|h| Ranked {
            video: String::from_utf8_lossy(h.key).into_owned(),
            views: h.count,
            error: h.error,
        })
        .collect();
    Ok(Top { videos, total_views: merged.total(), floor: Some(merged.floor()), summaries })
}
