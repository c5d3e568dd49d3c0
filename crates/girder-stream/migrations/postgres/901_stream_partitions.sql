-- girder-stream: each pipeline partition's lease (owner, fencing epoch) and last
-- checkpoint (next offset, operator state); the members sharing the partitions.
CREATE TABLE IF NOT EXISTS girder_stream_partitions (
    pipeline     TEXT    NOT NULL,
    partition    BIGINT  NOT NULL,
    epoch        BIGINT  NOT NULL DEFAULT 0,
    owner        TEXT,
    lease_until  BIGINT  NOT NULL DEFAULT 0,
    next_offset  BIGINT,
    state        BYTEA,
    committed_at BIGINT,
    PRIMARY KEY (pipeline, partition)
);

CREATE TABLE IF NOT EXISTS girder_stream_members (
    pipeline TEXT   NOT NULL,
    member   TEXT   NOT NULL,
    seen_at  BIGINT NOT NULL,
    PRIMARY KEY (pipeline, member)
);
