-- WhatsApp's message shards: each chat's messages and its sequence live on the shard
-- its id hashes to.
CREATE TABLE IF NOT EXISTS wa_chat_seq (
    chat     TEXT    PRIMARY KEY,
    last_seq BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS wa_messages (
    chat       TEXT    NOT NULL,
    seq        BIGINT  NOT NULL,
    sender     TEXT    NOT NULL,
    device     TEXT    NOT NULL,
    client_id  TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    created_ms BIGINT  NOT NULL,
    PRIMARY KEY (chat, seq)
);
-- A resend with the same client id is the same message.
CREATE UNIQUE INDEX IF NOT EXISTS wa_messages_client ON wa_messages (chat, sender, client_id);
CREATE INDEX IF NOT EXISTS wa_messages_created ON wa_messages (created_ms);
