-- `site.delete` marks a site `deleting` while it removes it from its server, then deletes the
-- row (the tenant API's DELETE /api/v1/sites/{id}). SQLite cannot change a CHECK constraint:
-- the table is rebuilt with the same columns, rows and indexes (nothing references `sites`).
CREATE TABLE sites_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       INTEGER NOT NULL REFERENCES tenants (id),
    vps_id          TEXT    NOT NULL REFERENCES vps_servers (id),
    domain          TEXT    NOT NULL UNIQUE,
    type            TEXT    NOT NULL DEFAULT 'wordpress',
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'active', 'failed', 'deleting')),
    failure_reason  TEXT    NULL,
    created_at      INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000),
    updated_at      INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000)
);

INSERT INTO sites_new (id, tenant_id, vps_id, domain, type, status, failure_reason, created_at,
                       updated_at)
    SELECT id, tenant_id, vps_id, domain, type, status, failure_reason, created_at, updated_at
    FROM sites;

DROP TABLE sites;
ALTER TABLE sites_new RENAME TO sites;

CREATE INDEX sites_tenant_idx ON sites (tenant_id);
CREATE INDEX sites_vps_idx ON sites (vps_id);
