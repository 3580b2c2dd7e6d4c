-- Operators of the web console and their sessions (same shape as the PostgreSQL schema; see
-- store/migrations/postgres/0013_ui_users.sql). Timestamps are INTEGER unix milliseconds.
CREATE TABLE ui_users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT    NOT NULL UNIQUE,
    password_hash  TEXT    NOT NULL,
    created_at     INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000)
);

CREATE TABLE ui_sessions (
    id_hash       TEXT    PRIMARY KEY CHECK (length(id_hash) = 64),
    user_id       INTEGER NOT NULL REFERENCES ui_users (id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000),
    last_seen_at  INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000)
);

CREATE INDEX ui_sessions_user_idx ON ui_sessions (user_id);
