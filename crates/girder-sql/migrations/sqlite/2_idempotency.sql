-- Idempotency-Key records (girder-http's idempotency layer): one row per caller and
-- key, holding the request's fingerprint while it runs and its answer once it ends.
CREATE TABLE girder_idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    claim TEXT NOT NULL,
    state TEXT NOT NULL,
    status INTEGER,
    headers TEXT,
    body BLOB,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX girder_idempotency_expiry ON girder_idempotency (expires_at_ms);
