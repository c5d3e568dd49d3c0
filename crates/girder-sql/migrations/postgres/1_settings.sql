-- The server's own shared settings (the token signing key), beside the systems' tables.
CREATE TABLE IF NOT EXISTS girder_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
