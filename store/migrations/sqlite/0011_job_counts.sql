-- Completed and failed jobs per queue, so that the queue statistics do not read the finished
-- rows kept for `queue.retention` (see migrations/postgres/0012_job_counts.sql; SQLite counts
-- pending and reserved jobs from the partial indexes that hold only them, and has no `state`
-- rule for its indexes, so only the finished rows need counting). The node moves these counts
-- in the transaction that moves the rows: a completion batch, the stuck-job killer, the prune.
-- Another program may insert pending jobs; rows it writes as finished are not counted.
CREATE TABLE job_counts (
    queue      TEXT    PRIMARY KEY,
    completed  INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0
);

INSERT INTO job_counts (queue, completed, failed)
    SELECT queue, count(*) FILTER (WHERE state = 'completed'),
           count(*) FILTER (WHERE state = 'failed')
    FROM jobs WHERE state IN ('completed', 'failed')
    GROUP BY queue;
