-- WhatsApp: devices, chats, members and per-device delivery cursors. Messages live
-- on the message shards (6501).
CREATE TABLE IF NOT EXISTS wa_devices (
    user_id    TEXT    NOT NULL,
    device     TEXT    NOT NULL,
    created_ms BIGINT  NOT NULL,
    seen_ms    BIGINT  NOT NULL,
    PRIMARY KEY (user_id, device)
);
CREATE TABLE IF NOT EXISTS wa_chats (
    id         TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL,
    title      TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_ms BIGINT  NOT NULL
);
-- A member sees the chat's messages after joined_seq.
CREATE TABLE IF NOT EXISTS wa_members (
    chat       TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    joined_seq BIGINT  NOT NULL,
    joined_ms  BIGINT  NOT NULL,
    PRIMARY KEY (chat, user_id)
);
CREATE INDEX IF NOT EXISTS wa_members_user ON wa_members (user_id, chat);
-- How far each device has received (and read) each chat: its offline inbox is
-- every message above delivered_seq.
CREATE TABLE IF NOT EXISTS wa_cursors (
    user_id       TEXT    NOT NULL,
    device        TEXT    NOT NULL,
    chat          TEXT    NOT NULL,
    delivered_seq BIGINT  NOT NULL,
    read_seq      BIGINT  NOT NULL,
    updated_ms    BIGINT  NOT NULL,
    PRIMARY KEY (user_id, device, chat)
);
CREATE INDEX IF NOT EXISTS wa_cursors_chat ON wa_cursors (chat);
