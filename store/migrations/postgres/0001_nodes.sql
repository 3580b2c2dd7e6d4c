-- Every node process that ever started against this database, and when it was last seen.
-- Operators read it to see which nodes share a database; later issues use it for ownership.
CREATE TABLE IF NOT EXISTS nodes (
    name        TEXT PRIMARY KEY,
    hostname    TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    version     TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    seen_at     TIMESTAMPTZ NOT NULL
);
