-- Tinder: profiles (the truth the geo index is rebuilt from), swipes (one per swiper
-- and target, final), matches (one per pair, its ids ordered so both likes name the
-- same row), each user's seen filters, and the shared settings (the cursor key).
-- IF NOT EXISTS: a database created before migrations upgrades in place.
CREATE TABLE IF NOT EXISTS tinder_profiles (
    user_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    age BIGINT NOT NULL,
    gender TEXT NOT NULL,
    interested_in BIGINT NOT NULL,
    age_min BIGINT NOT NULL,
    age_max BIGINT NOT NULL,
    max_distance_km BIGINT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lon DOUBLE PRECISION NOT NULL,
    bio TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
-- The index refresh reads profiles changed since its last pass.
CREATE INDEX IF NOT EXISTS tinder_profiles_by_update ON tinder_profiles (updated_ms, user_id);
CREATE TABLE IF NOT EXISTS tinder_swipes (
    swiper TEXT NOT NULL,
    target TEXT NOT NULL,
    liked BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (swiper, target)
);
CREATE TABLE IF NOT EXISTS tinder_matches (
    id BIGSERIAL PRIMARY KEY,
    user_a TEXT NOT NULL,
    user_b TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (user_a, user_b)
);
CREATE INDEX IF NOT EXISTS tinder_matches_by_a ON tinder_matches (user_a, id);
CREATE INDEX IF NOT EXISTS tinder_matches_by_b ON tinder_matches (user_b, id);
CREATE TABLE IF NOT EXISTS tinder_seen (
    user_id TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    current_started_ms BIGINT NOT NULL,
    current_count BIGINT NOT NULL,
    current_bits BYTEA NOT NULL,
    previous_started_ms BIGINT,
    previous_bits BYTEA,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS tinder_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
