-- Bit.ly's links and its shared settings (the code permutation and cursor keys).
-- IF NOT EXISTS: a database created before migrations upgrades in place.
CREATE TABLE IF NOT EXISTS bitly_links (
    code TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    clicks BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS bitly_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
