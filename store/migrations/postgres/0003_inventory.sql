-- The fleet's inventory: VPS servers, tenants and their sites. `site.provision` works on
-- `sites`; `chom_active_tenants` and `chom_active_sites` count from here.

CREATE TABLE vps_servers (
    -- The operator's name for the server (`web-1`); the actor is fleet/vps:<id>.
    id          TEXT        PRIMARY KEY,
    host        TEXT        NOT NULL,
    port        INTEGER     NOT NULL DEFAULT 22 CHECK (port BETWEEN 1 AND 65535),
    -- NULL = ssh.user.
    ssh_user    TEXT        NULL,
    -- Pinned host key fingerprint (SHA256:...); NULL = ssh.known_hosts decides.
    host_key    TEXT        NULL,
    -- 'config' rows are upserted from [[vps]] at every start; 'admin' rows come from `chom vps add`.
    source      TEXT        NOT NULL DEFAULT 'admin' CHECK (source IN ('config', 'admin')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE tenants (
    id          BIGSERIAL   PRIMARY KEY,
    name        TEXT        NOT NULL UNIQUE,
    tier        TEXT        NOT NULL DEFAULT 'starter' CHECK (tier IN ('starter', 'pro', 'enterprise')),
    status      TEXT        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE sites (
    id              BIGSERIAL   PRIMARY KEY,
    -- A tenant or server with sites cannot be deleted by accident.
    tenant_id       BIGINT      NOT NULL REFERENCES tenants (id),
    vps_id          TEXT        NOT NULL REFERENCES vps_servers (id),
    domain          TEXT        NOT NULL UNIQUE,
    type            TEXT        NOT NULL DEFAULT 'wordpress',
    status          TEXT        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active', 'failed')),
    failure_reason  TEXT        NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX sites_tenant_idx ON sites (tenant_id);
CREATE INDEX sites_vps_idx ON sites (vps_id);
