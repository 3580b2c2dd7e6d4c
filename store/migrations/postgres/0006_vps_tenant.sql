-- A server may belong to one tenant: only that tenant's sites may be placed on it (the site
-- INSERT checks it in the same statement). NULL = a shared server that takes any tenant's sites.
ALTER TABLE vps_servers ADD COLUMN tenant_id BIGINT NULL REFERENCES tenants (id);

CREATE INDEX vps_servers_tenant_idx ON vps_servers (tenant_id);
