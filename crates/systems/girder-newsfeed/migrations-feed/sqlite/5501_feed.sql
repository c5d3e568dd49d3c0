-- One feed shard: the entries fan-out on write put into each follower's feed.
-- (owner, post_id) is the key, so a redelivered fan-out job inserts nothing twice.
CREATE TABLE IF NOT EXISTS nf_feed (
    owner TEXT NOT NULL,
    post_id INTEGER NOT NULL,
    author TEXT NOT NULL,
    PRIMARY KEY (owner, post_id)
);
