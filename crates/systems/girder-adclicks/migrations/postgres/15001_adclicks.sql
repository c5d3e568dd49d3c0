-- Ad Click Aggregator: ads, the raw record of counted clicks (one row per impression:
-- its primary key is the exact duplicate check), and per-minute counts written by
-- each instance's stream pipeline (and by reconciliation, under pipeline 'reconcile').
CREATE TABLE IF NOT EXISTS ac_ads (
    id         BIGSERIAL PRIMARY KEY,
    owner      TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    target_url TEXT    NOT NULL,
    created_ms BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS ac_ads_owner ON ac_ads (owner, id);

CREATE TABLE IF NOT EXISTS ac_clicks (
    impression TEXT   PRIMARY KEY,
    ad_id      BIGINT NOT NULL,
    viewer     TEXT   NOT NULL,
    clicked_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ac_clicks_time ON ac_clicks (clicked_ms);

CREATE TABLE IF NOT EXISTS ac_minute_counts (
    pipeline  TEXT   NOT NULL,
    ad_id     BIGINT NOT NULL,
    minute_ms BIGINT NOT NULL,
    clicks    BIGINT NOT NULL,
    PRIMARY KEY (ad_id, minute_ms, pipeline)
);
CREATE INDEX IF NOT EXISTS ac_minute_counts_time ON ac_minute_counts (minute_ms);
