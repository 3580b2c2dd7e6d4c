-- A server's capacity: at most this many sites (a site INSERT that would exceed it inserts
-- nothing, checked under the server row's lock). NULL = no limit.
ALTER TABLE vps_servers ADD COLUMN max_sites INTEGER NULL CHECK (max_sites IS NULL OR max_sites > 0);
