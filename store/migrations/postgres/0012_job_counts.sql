-- Queue statistics and the reaper at a cost that does not grow with the finished jobs kept for
-- `queue.retention`.
--
-- Pending jobs are counted from the claim index, which holds only them. Reserved, completed and
-- failed jobs cannot be found through an index without losing HOT completions (0004: no index
-- may mention what a completion writes, and a completion is exactly what tells a finished row
-- from a reserved one), so they are counted here instead, per holder node (`jobs.reserved_by`,
-- '' when NULL) and queue, by statement-level triggers on `jobs`:
--
--     job_counts = SELECT coalesce(reserved_by, ''), queue, count(*) FILTER (WHERE state = ...)
--                  FROM jobs WHERE state <> 'pending' GROUP BY 1, 2
--
-- holds after every committed transaction, whoever wrote (this node, an older node during a
-- rolling upgrade, another program, an operator's psql). A trigger fires once per statement
-- with every row it changed (one claim batch, one completion batch: one upsert per node and
-- queue touched), and a node's claims and completions touch only its own rows, so nodes never
-- wait on each other's counters. Rows are upserted in (node, queue) order, so two statements
-- never lock them in opposite orders.
--
-- `queue_marks.stuck_before` bounds the reaper's scans of `jobs_reserved_at_idx` (which also
-- holds every retained finished row): no reserved row has `reserved_at` earlier than it. The
-- stuck-job killer raises it to its cutoff after failing every reservation older than that; the
-- trigger lowers it whenever a row becomes reserved with an earlier time (only another program
-- writing odd rows does that: a claim stamps now()).

-- Writers are held off while the counts are taken, so they start exact.
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE job_counts (
    node       TEXT   NOT NULL,
    queue      TEXT   NOT NULL,
    reserved   BIGINT NOT NULL DEFAULT 0,
    completed  BIGINT NOT NULL DEFAULT 0,
    failed     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (node, queue)
);

CREATE TABLE queue_marks (
    name  TEXT        PRIMARY KEY,
    at    TIMESTAMPTZ NOT NULL
);

INSERT INTO job_counts (node, queue, reserved, completed, failed)
    SELECT coalesce(reserved_by, ''), queue,
           count(*) FILTER (WHERE state = 'reserved'),
           count(*) FILTER (WHERE state = 'completed'),
           count(*) FILTER (WHERE state = 'failed')
    FROM jobs WHERE state <> 'pending'
    GROUP BY 1, 2;

INSERT INTO queue_marks (name, at)
    SELECT 'stuck_before', coalesce(min(reserved_at), now())
    FROM jobs WHERE state = 'reserved';

-- A row as the counts see it.
CREATE TYPE chom_job_holder AS (node text, queue text, state text);

-- One statement's changes to `jobs` applied to the counts: what its new rows add minus what
-- its old rows took away, one upsert per (node, queue) whose counts moved, in (node, queue)
-- order. The three triggers below share the function; each branch reads only the transition
-- tables its event has. An UPDATE (claims, completions, rescue: the queue's own traffic) is
-- counted in one pass over its rows, about 0.5 ms per 500-row batch; an INSERT of pending jobs
-- (an enqueue) is one look at its rows. SECURITY DEFINER: a program allowed to INSERT INTO
-- jobs needs no rights on job_counts.
CREATE FUNCTION chom_job_counts() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    -- The statement's deltas, one element per (node, queue), in that order.
    nodes    text[];
    queues   text[];
    r        bigint[];
    c        bigint[];
    f        bigint[];
    -- Rows inserted (sign 1) or deleted (sign -1) that are not pending.
    changed  chom_job_holder[];
    sign     int;
    lowest   timestamptz;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT array_agg(node), array_agg(queue), array_agg(dr), array_agg(dc), array_agg(df)
        INTO nodes, queues, r, c, f
        FROM (
            SELECT coalesce(reserved_by, '') AS node, queue,
                   sum(sr) AS dr, sum(sc) AS dc, sum(sf) AS df
            FROM (
                SELECT reserved_by, queue, (state = 'reserved')::int AS sr,
                       (state = 'completed')::int AS sc, (state = 'failed')::int AS sf
                FROM new_rows WHERE state <> 'pending'
                UNION ALL
                SELECT reserved_by, queue, -(state = 'reserved')::int,
                       -(state = 'completed')::int, -(state = 'failed')::int
                FROM old_rows WHERE state <> 'pending'
            ) AS d
            GROUP BY 1, 2
            HAVING sum(sr) <> 0 OR sum(sc) <> 0 OR sum(sf) <> 0
            ORDER BY 1, 2
        ) AS g;
    ELSIF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM new_rows WHERE state <> 'pending') THEN
            RETURN NULL;
        END IF;
        SELECT array_agg((coalesce(reserved_by, ''), queue, state)::chom_job_holder)
        INTO changed FROM new_rows WHERE state <> 'pending';
        sign := 1;
    ELSE
        SELECT array_agg((coalesce(reserved_by, ''), queue, state)::chom_job_holder)
        INTO changed FROM old_rows WHERE state <> 'pending';
        sign := -1;
    END IF;
    IF changed IS NOT NULL THEN
        SELECT array_agg(node), array_agg(queue), array_agg(sign * dr), array_agg(sign * dc),
               array_agg(sign * df)
        INTO nodes, queues, r, c, f
        FROM (
            SELECT node, queue, count(*) FILTER (WHERE state = 'reserved') AS dr,
                   count(*) FILTER (WHERE state = 'completed') AS dc,
                   count(*) FILTER (WHERE state = 'failed') AS df
            FROM unnest(changed) GROUP BY 1, 2 ORDER BY 1, 2
        ) AS g;
    END IF;
    INSERT INTO job_counts AS t (node, queue, reserved, completed, failed)
    SELECT * FROM unnest(nodes, queues, r, c, f)
    ON CONFLICT (node, queue) DO UPDATE
        SET reserved = t.reserved + excluded.reserved,
            completed = t.completed + excluded.completed,
            failed = t.failed + excluded.failed;
    IF TG_OP <> 'DELETE' THEN
        SELECT min(reserved_at) INTO lowest FROM new_rows WHERE state = 'reserved';
        IF lowest IS NOT NULL THEN
            UPDATE queue_marks SET at = lowest WHERE name = 'stuck_before' AND at > lowest;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- A trigger with transition tables serves one event.
CREATE TRIGGER jobs_count_inserts AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION chom_job_counts();
CREATE TRIGGER jobs_count_updates AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION chom_job_counts();
CREATE TRIGGER jobs_count_deletes AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION chom_job_counts();

CREATE FUNCTION chom_job_counts_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM job_counts;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_count_truncates AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION chom_job_counts_truncated();
