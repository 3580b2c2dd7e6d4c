-- One row the database health check rewrites in a committed transaction, so `/health` reports
-- a store that can answer `SELECT 1` but cannot write (a full disk, a read-only server) as down.
CREATE TABLE health_probe (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at  TIMESTAMPTZ NOT NULL
);
