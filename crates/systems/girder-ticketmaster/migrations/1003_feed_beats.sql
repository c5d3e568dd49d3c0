-- One row per seat feed (change consumer), rewritten when the feed has handed
-- nothing over for a while. The table is captured, so on PostgreSQL the rewrite
-- comes back through every slot, whose acknowledgement moves the slot past the WAL
-- of tables it does not capture.
CREATE TABLE IF NOT EXISTS tm_feed_beats (
    consumer TEXT   PRIMARY KEY,
    beat_ms  BIGINT NOT NULL
);
