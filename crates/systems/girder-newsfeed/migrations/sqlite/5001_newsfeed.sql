-- News Feed's graph and posts (on the instance's database). The feeds themselves
-- live on the feed shards (migrations-feed/).
CREATE TABLE IF NOT EXISTS nf_users (
    id TEXT PRIMARY KEY NOT NULL,
    followers INTEGER NOT NULL DEFAULT 0,
    following INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS nf_follows (
    follower TEXT NOT NULL,
    followee TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    PRIMARY KEY (follower, followee)
);
CREATE INDEX IF NOT EXISTS nf_follows_by_followee ON nf_follows (followee, follower);

-- fanout: 'push' (written into followers' feeds) or 'pull' (merged in at read).
-- fanout_done_ms: NULL while a push post's fan-out is outstanding (the outbox);
-- claimed_until_ms: when a sweeper's re-enqueue of it may be repeated.
CREATE TABLE IF NOT EXISTS nf_posts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    fanout TEXT NOT NULL CHECK (fanout IN ('push', 'pull')),
    fanout_done_ms INTEGER,
    claimed_until_ms INTEGER NOT NULL DEFAULT 0,
    deleted_ms INTEGER
);
CREATE INDEX IF NOT EXISTS nf_posts_by_author ON nf_posts (author, id);
CREATE INDEX IF NOT EXISTS nf_posts_pull ON nf_posts (author, id) WHERE fanout = 'pull';
CREATE INDEX IF NOT EXISTS nf_posts_outbox ON nf_posts (id) WHERE fanout_done_ms IS NULL;
