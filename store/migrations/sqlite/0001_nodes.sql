-- Every node process that ever started against this database, and when it was last seen.
-- Timestamps are RFC 3339 text in UTC (SQLite has no timestamp type).
CREATE TABLE IF NOT EXISTS nodes (
    name        TEXT PRIMARY KEY,
    hostname    TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    version     TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    seen_at     TEXT NOT NULL
);
