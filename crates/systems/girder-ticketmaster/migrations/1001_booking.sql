-- Ticketmaster: venues, events, reservations, the waiting-room queue, idempotency
-- records, the fake provider's ledger and the shared settings (cursor and admission keys).
-- Seat state lives in girder-lock's reservation tables, which that crate creates.
-- IF NOT EXISTS: a database created before migrations upgrades in place.
CREATE TABLE IF NOT EXISTS tm_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tm_venues (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    city TEXT NOT NULL,
    sections TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS tm_events (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    name_lower TEXT NOT NULL,
    venue_id TEXT NOT NULL REFERENCES tm_venues (id),
    starts_at_ms BIGINT NOT NULL,
    admit_per_sec BIGINT,
    queue_opened_at_ms BIGINT,
    queue_next BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS tm_events_start ON tm_events (starts_at_ms, id);
CREATE TABLE IF NOT EXISTS tm_reservations (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    seats TEXT NOT NULL,
    hold_id TEXT NOT NULL,
    until_ms BIGINT NOT NULL,
    state TEXT NOT NULL,
    charge_id TEXT,
    confirming_key TEXT,
    amount_cents BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS tm_reservations_due ON tm_reservations (state, until_ms);
CREATE INDEX IF NOT EXISTS tm_reservations_event ON tm_reservations (event_id);
CREATE TABLE IF NOT EXISTS tm_queue (
    event_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    position BIGINT NOT NULL,
    joined_at_ms BIGINT NOT NULL,
    PRIMARY KEY (event_id, user_name),
    UNIQUE (event_id, position)
);
CREATE TABLE IF NOT EXISTS tm_idempotency (
    key TEXT PRIMARY KEY,
    reservation_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    state TEXT NOT NULL,
    status INTEGER,
    body TEXT,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS tm_payments (
    key TEXT PRIMARY KEY,
    charge_id TEXT,
    reference TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    state TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS tm_payments_reference ON tm_payments (reference);
