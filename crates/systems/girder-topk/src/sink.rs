//! Where the stream's per-minute counts land, inside the checkpoint's transaction
//! (Pattern: Stream Processing, with its exactly-once effect).
//!
//! An emission carries the whole count of one video in one minute, not an increment.
//! The sink reads the stored count of each `(pipeline, minute, video)` first, upserts
//! the new one, and moves everything derived from it by the difference: the video's
//! all-time total and the Space-Saving summaries of the partition's minute, ten-minute,
//! hour and all-time buckets. All of it commits with the partition's offset and
//! operator state, or none of it does, so a replay after a crash finds the stored
//! count equal to the emitted one and moves nothing twice.
//!
//! Lock order: totals are shared by every instance's pipeline, so each transaction
//! updates them once per video, in video order; two transactions never wait on each
//! other in a cycle on PostgreSQL. Minute rows and summaries belong to one pipeline
//! and one partition, so no other transaction writes them.

use std::collections::BTreeMap;

use girder_sketch::topk::SpaceSaving;
use girder_stream::sql::{SqlSink, SqlTx};
use girder_stream::{Emission, EmissionKind};

use crate::span::{SPANS, minute_of};

/// The keys each stored summary monitors (`m`): a video with more than `N/m` of the
/// views in any range is reported, each count within its error. Every instance uses
/// this one value (summaries of other sizes would not merge).
pub const SUMMARY_KEYS: u64 = 1_000;

/// Rows per statement (four bound values each, well under either engine's limit).
const ROWS_PER_STATEMENT: usize = 200;

/// Writes one pipeline's emissions. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct CountSink {
    /// The pipeline's name (one per instance).
    pub pipeline: String,
}

/// Everything one commit changes, grouped the way it is written.
#[derive(Debug, Default)]
struct Changes<'a> {
    /// Minute → (video, new whole count), videos in order.
    minutes: BTreeMap<i64, Vec<(&'a str, i64)>>,
}

impl<'a> Changes<'a> {
    fn of(emissions: &'a [Emission<String, u64>]) -> Self {
        let mut changes = Changes::default();
        for e in emissions {
            // Tumbling windows never merge, so nothing is ever retracted.
            debug_assert!(e.kind != EmissionKind::Retract, "a tumbling window was retracted");
            if e.kind == EmissionKind::Retract {
                continue;
            }
            debug_assert_eq!(e.window.end - e.window.start, 60_000, "windows are minutes");
            let views = i64::try_from(e.value).unwrap_or(i64::MAX);
            changes.minutes.entry(minute_of(e.window.start)).or_default().push((&e.key, views));
        }
        for videos in changes.minutes.values_mut() {
            videos.sort_unstable();
        }
        changes
    }
}

fn summary_error(e: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

/// Adds `deltas` to the summary stored in `bytes` (a new one when `None`).
fn add_to(bytes: Option<&[u8]>, deltas: &[(&str, u64)]) -> Result<Vec<u8>, sqlx::Error> {
    let mut summary = match bytes {
        Some(b) => SpaceSaving::from_bytes(b).map_err(summary_error)?,
        None => SpaceSaving::new(SUMMARY_KEYS).map_err(summary_error)?,
    };
    for (video, delta) in deltas {
        summary.add(video, *delta);
    }
    Ok(summary.to_bytes())
}

/// The statements, on either engine's connection `$c`.
macro_rules! write_on {
    ($c:ident, $sink:expr, $partition:expr, $changes:expr) => {{
        let pipeline: &str = &$sink.pipeline;
        let partition = i64::from($partition);
        let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
        let mut summaries: BTreeMap<(i64, i64), Vec<(&str, u64)>> = BTreeMap::new();
        for (&minute, videos) in &$changes.minutes {
            for chunk in videos.chunks(ROWS_PER_STATEMENT) {
                let mut select = sqlx::QueryBuilder::new(
                    "SELECT video, views FROM topk_minute_counts WHERE pipeline = ",
                );
                select.push_bind(pipeline).push(" AND minute = ").push_bind(minute);
                select.push(" AND video IN (");
                let mut list = select.separated(", ");
                for (video, _) in chunk {
                    list.push_bind(*video);
                }
                list.push_unseparated(")");
                let stored: Vec<(String, i64)> =
                    select.build_query_as().fetch_all(&mut *$c).await?;
                let stored: BTreeMap<String, i64> = stored.into_iter().collect();
                let mut changed = Vec::with_capacity(chunk.len());
                for &(video, views) in chunk {
                    let old = stored.get(video).copied().unwrap_or(0);
                    if views == old {
                        continue;
                    }
                    changed.push((video, views));
                    *totals.entry(video).or_default() += views - old;
                    // Counts of a minute only grow (state and rows commit together);
                    // a smaller one would be a bug, and a summary cannot subtract.
                    debug_assert!(views > old, "{video} in minute {minute}: {old} → {views}");
                    if let Ok(delta) = u64::try_from(views - old) {
                        for span in SPANS {
                            summaries
                                .entry((span, minute.div_euclid(span)))
                                .or_default()
                                .push((video, delta));
                        }
                        summaries.entry((0, 0)).or_default().push((video, delta));
                    }
                }
                if changed.is_empty() {
                    continue;
                }
                let mut upsert = sqlx::QueryBuilder::new(
                    "INSERT INTO topk_minute_counts (pipeline, minute, video, views) ",
                );
                upsert.push_values(&changed, |mut row, (video, views)| {
                    row.push_bind(pipeline).push_bind(minute).push_bind(*video).push_bind(*views);
                });
                upsert.push(
                    " ON CONFLICT (pipeline, minute, video) DO UPDATE SET views = excluded.views",
                );
                upsert.build().execute(&mut *$c).await?;
            }
        }
        let totals: Vec<(&str, i64)> = totals.into_iter().filter(|(_, d)| *d != 0).collect();
        for chunk in totals.chunks(ROWS_PER_STATEMENT) {
            let mut upsert = sqlx::QueryBuilder::new("INSERT INTO topk_totals (video, views) ");
            upsert.push_values(chunk, |mut row, (video, delta)| {
                row.push_bind(*video).push_bind(*delta);
            });
            upsert.push(
                " ON CONFLICT (video) DO UPDATE SET views = topk_totals.views + excluded.views",
            );
            upsert.build().execute(&mut *$c).await?;
        }
        for ((span, bucket), deltas) in &summaries {
            let stored: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT summary FROM topk_summaries \
                 WHERE span = $1 AND bucket = $2 AND pipeline = $3 AND partition = $4",
            )
            .bind(*span)
            .bind(*bucket)
            .bind(pipeline)
            .bind(partition)
            .fetch_optional(&mut *$c)
            .await?;
            let summary = add_to(stored.as_deref(), deltas)?;
            sqlx::query(
                "INSERT INTO topk_summaries (span, bucket, pipeline, partition, summary) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (span, bucket, pipeline, partition) \
                 DO UPDATE SET summary = excluded.summary",
            )
            .bind(*span)
            .bind(*bucket)
            .bind(pipeline)
            .bind(partition)
            .bind(summary)
            .execute(&mut *$c)
            .await?;
        }
        Ok(())
    }};
}

impl SqlSink<String, u64> for CountSink {
    async fn write(
        &self,
        tx: SqlTx<'_>,
        partition: u32,
        emissions: &[Emission<String, u64>],
    ) -> Result<(), sqlx::Error> {
        let changes = Changes::of(emissions);
        match tx {
            SqlTx::Sqlite(c) => write_on!(c, self, partition, changes),
            SqlTx::Postgres(c) => write_on!(c, self, partition, changes),
        }
    }
}
