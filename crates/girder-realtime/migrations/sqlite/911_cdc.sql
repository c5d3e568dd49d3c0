-- girder-realtime change data capture: the change table capture triggers write
-- (its AUTOINCREMENT sequence is the position, never reused after pruning), the
-- open commit group a reader seals, and each consumer's acknowledged position.
CREATE TABLE IF NOT EXISTS girder_cdc_changes (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    txn    INTEGER NOT NULL,
    tbl    TEXT    NOT NULL,
    op     TEXT    NOT NULL,
    before TEXT,
    after  TEXT,
    at_ms  INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS girder_cdc_txn (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    id  INTEGER NOT NULL
);
INSERT INTO girder_cdc_txn (one, id) VALUES (1, 1) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS girder_cdc_consumers (
    name           TEXT   PRIMARY KEY,
    position       BIGINT NOT NULL,
    position_index BIGINT NOT NULL DEFAULT 0,
    read_at        BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);
