-- The durable job queue, its dead letters and per-queue pauses (same shape as the PostgreSQL
-- schema; see actors/migrations/postgres/0002_jobs.sql for the reasoning).
--
-- Timestamps are INTEGER unix milliseconds (UTC). Their default is computed with strftime
-- rather than unixepoch('subsec') on purpose: unixepoch('subsec') needs SQLite 3.42, and
-- another program enqueueing with its own (older) SQLite library, e.g. Debian 12's 3.40,
-- would get NULL and a NOT NULL violation. Within one statement 'now' is one instant, so the
-- two strftime calls agree.
--
-- Another program may enqueue with a plain
--     INSERT INTO jobs (queue, kind, payload) VALUES ('default', 'noop', '{}');
-- the node polls (SQLite has no notifications).

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT    NOT NULL DEFAULT 'default',
    kind          TEXT    NOT NULL,
    -- Stored as given, valid JSON or not: the node fails a bad one with a readable reason.
    payload       TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NULL,
    timeout_ms    INTEGER NULL,
    state         TEXT    NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'reserved', 'completed', 'failed')),
    unique_key    TEXT    NULL,
    last_error    TEXT    NULL,
    reserved_at   INTEGER NULL,
    reserved_by   TEXT    NULL,
    available_at  INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000
                                            + CAST(substr(strftime('%f', 'now'), 4) AS INTEGER)),
    created_at    INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000
                                            + CAST(substr(strftime('%f', 'now'), 4) AS INTEGER)),
    finished_at   INTEGER NULL
);

CREATE INDEX jobs_claim_idx ON jobs (queue, available_at, id) WHERE state = 'pending';

CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('pending', 'reserved');

CREATE INDEX jobs_reserved_idx ON jobs (reserved_at) WHERE state = 'reserved';

CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- uuid defaults to a random (version 4) UUID in the canonical text form.
CREATE TABLE failed_jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid          TEXT    NOT NULL UNIQUE DEFAULT (
                      lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4'
                      || substr(lower(hex(randomblob(2))), 2) || '-'
                      || substr('89ab', 1 + (random() & 3), 1)
                      || substr(lower(hex(randomblob(2))), 2) || '-'
                      || lower(hex(randomblob(6)))),
    connection    TEXT    NOT NULL DEFAULT 'database',
    queue         TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    exception     TEXT    NOT NULL,
    job_id        INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NULL,
    timeout_ms    INTEGER NULL,
    failed_at     INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000
                                            + CAST(substr(strftime('%f', 'now'), 4) AS INTEGER))
);

CREATE INDEX failed_jobs_failed_at_idx ON failed_jobs (failed_at);

CREATE TABLE queue_pauses (
    queue      TEXT    PRIMARY KEY,
    paused_at  INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000
                                         + CAST(substr(strftime('%f', 'now'), 4) AS INTEGER))
);
