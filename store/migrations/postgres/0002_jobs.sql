-- The durable job queue, its dead letters and per-queue pauses.
--
-- Column names follow Laravel's database queue (`jobs`, `failed_jobs`) wherever they mean the
-- same thing, so people and scripts that know that schema find their way. No IF NOT EXISTS on
-- purpose: a pre-existing `jobs` table of another shape must stop the migration loudly instead
-- of being silently reused.
--
-- Another program may enqueue with a plain
--     INSERT INTO jobs (queue, kind, payload) VALUES ('default', 'noop', '{}');
-- inside its own transaction: every other column has a working default, and the trigger
-- below wakes the nodes when that transaction commits.

CREATE TABLE jobs (
    id            BIGSERIAL PRIMARY KEY,
    queue         TEXT        NOT NULL DEFAULT 'default',
    kind          TEXT        NOT NULL,
    -- TEXT, not JSONB: a payload that is not valid JSON must still be storable, so the node
    -- can fail that job with a readable reason instead of the INSERT failing far away.
    payload       TEXT        NOT NULL,
    -- Attempts started so far (incremented by the claim).
    attempts      INTEGER     NOT NULL DEFAULT 0,
    -- Per-job overrides; NULL = the kind's policy.
    max_attempts  INTEGER     NULL,
    timeout_ms    BIGINT      NULL,
    state         TEXT        NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'reserved', 'completed', 'failed')),
    unique_key    TEXT        NULL,
    last_error    TEXT        NULL,
    reserved_at   TIMESTAMPTZ NULL,
    reserved_by   TEXT        NULL,
    available_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at   TIMESTAMPTZ NULL
);

-- The claim: per queue, oldest due first. Partial, so completed/failed rows kept for the
-- retention period cost the claim nothing.
CREATE INDEX jobs_claim_idx ON jobs (queue, available_at, id) WHERE state = 'pending';

-- Deduplication: at most one pending/reserved job per unique key. Enqueue is
-- INSERT ... ON CONFLICT DO NOTHING against this index, which makes it race-free.
CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('pending', 'reserved');

-- Visibility timeout, stuck-job killer and release at start read reserved rows only.
CREATE INDEX jobs_reserved_idx ON jobs (reserved_at) WHERE state = 'reserved';

-- Pruning of finished rows.
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Wake the nodes (LISTEN chom_jobs) when jobs are inserted, by the node or by anyone else.
-- Notifications are delivered at commit, and identical ones within a transaction are folded
-- into one, so a statement-level trigger costs one notification per inserting transaction.
CREATE FUNCTION chom_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chom_jobs', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION chom_jobs_notify();

-- Jobs that failed for good (Laravel's dead-letter table, plus kind, job_id, attempts and the
-- per-job overrides so a retry does not depend on the pruned `jobs` row).
CREATE TABLE failed_jobs (
    id            BIGSERIAL PRIMARY KEY,
    uuid          TEXT        NOT NULL UNIQUE DEFAULT gen_random_uuid()::text,
    connection    TEXT        NOT NULL DEFAULT 'database',
    queue         TEXT        NOT NULL,
    kind          TEXT        NOT NULL,
    payload       TEXT        NOT NULL,
    exception     TEXT        NOT NULL,
    job_id        BIGINT      NOT NULL,
    attempts      INTEGER     NOT NULL DEFAULT 0,
    max_attempts  INTEGER     NULL,
    timeout_ms    BIGINT      NULL,
    failed_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX failed_jobs_failed_at_idx ON failed_jobs (failed_at);

-- Paused queues, shared by every node on this database.
CREATE TABLE queue_pauses (
    queue      TEXT        PRIMARY KEY,
    paused_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
