-- girder-realtime change data capture: each consumer's acknowledged position (the
-- commit LSN and the index within its transaction) and when it last read. The
-- replication slot of the same name holds the WAL.
CREATE TABLE IF NOT EXISTS girder_cdc_consumers (
    name           TEXT   PRIMARY KEY,
    position       BIGINT NOT NULL,
    position_index BIGINT NOT NULL DEFAULT 0,
    read_at        BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);
