-- See migrations/postgres/0011_nodes_instance.sql.
ALTER TABLE nodes ADD COLUMN instance TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN jobs_running INTEGER NOT NULL DEFAULT 0;
