-- A server's capacity (see migrations/postgres/0010_vps_max_sites.sql). NULL = no limit.
ALTER TABLE vps_servers ADD COLUMN max_sites INTEGER NULL CHECK (max_sites IS NULL OR max_sites > 0);
