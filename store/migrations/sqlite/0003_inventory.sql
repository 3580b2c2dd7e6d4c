-- The fleet's inventory (same shape as the PostgreSQL schema; see
-- actors/migrations/postgres/0003_inventory.sql). Timestamps are INTEGER unix milliseconds.

CREATE TABLE vps_servers (
    id          TEXT    PRIMARY KEY,
    host        TEXT    NOT NULL,
    port        INTEGER NOT NULL DEFAULT 22 CHECK (port BETWEEN 1 AND 65535),
    ssh_user    TEXT    NULL,
    host_key    TEXT    NULL,
    source      TEXT    NOT NULL DEFAULT 'admin' CHECK (source IN ('config', 'admin')),
    created_at  INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000),
    updated_at  INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000)
);

CREATE TABLE tenants (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    tier        TEXT    NOT NULL DEFAULT 'starter' CHECK (tier IN ('starter', 'pro', 'enterprise')),
    status      TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000)
);

CREATE TABLE sites (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       INTEGER NOT NULL REFERENCES tenants (id),
    vps_id          TEXT    NOT NULL REFERENCES vps_servers (id),
    domain          TEXT    NOT NULL UNIQUE,
    type            TEXT    NOT NULL DEFAULT 'wordpress',
    status          TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active', 'failed')),
    failure_reason  TEXT    NULL,
    created_at      INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000),
    updated_at      INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000)
);

CREATE INDEX sites_tenant_idx ON sites (tenant_id);
CREATE INDEX sites_vps_idx ON sites (vps_id);
