-- YouTube Top-K. Each instance's stream pipeline writes whole per-minute view
-- counts of its partitions (upserted by pipeline, minute and video, so a replay lands
-- on the same value), every video's all-time total (moved by new − old in the same
-- transaction), and one Space-Saving summary per pipeline, partition, span and bucket.
CREATE TABLE IF NOT EXISTS topk_minute_counts (
    pipeline TEXT   NOT NULL,
    minute   BIGINT NOT NULL,
    video    TEXT   NOT NULL,
    views    BIGINT NOT NULL,
    PRIMARY KEY (pipeline, minute, video)
);

CREATE INDEX IF NOT EXISTS topk_minute_counts_by_minute ON topk_minute_counts (minute);

CREATE TABLE IF NOT EXISTS topk_totals (
    video TEXT   NOT NULL PRIMARY KEY,
    views BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS topk_totals_by_views ON topk_totals (views DESC, video);

-- span: the bucket's length in minutes (1, 10, 60), or 0 for all time (bucket 0).
CREATE TABLE IF NOT EXISTS topk_summaries (
    span      INTEGER NOT NULL,
    bucket    BIGINT  NOT NULL,
    pipeline  TEXT    NOT NULL,
    partition INTEGER NOT NULL,
    summary   BYTEA   NOT NULL,
    PRIMARY KEY (span, bucket, pipeline, partition)
);
