-- A server may belong to one tenant (see migrations/postgres/0006_vps_tenant.sql). SQLite adds
-- a REFERENCES column only with a NULL default, which is what an unowned server has.
ALTER TABLE vps_servers ADD COLUMN tenant_id INTEGER NULL REFERENCES tenants (id);

CREATE INDEX vps_servers_tenant_idx ON vps_servers (tenant_id);
