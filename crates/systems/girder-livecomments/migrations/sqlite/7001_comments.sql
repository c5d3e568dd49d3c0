-- FB Live Comments: every comment, paged newest first per video by id.
CREATE TABLE IF NOT EXISTS lc_comments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    video      TEXT    NOT NULL,
    author     TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    created_ms BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS lc_comments_video ON lc_comments (video, id);
