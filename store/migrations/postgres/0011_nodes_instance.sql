-- What `chom cluster` shows of each node: the process instance holding the name (random per
-- start) and how many jobs it is running, both written at registration and every heartbeat.
ALTER TABLE nodes ADD COLUMN instance TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN jobs_running BIGINT NOT NULL DEFAULT 0;
