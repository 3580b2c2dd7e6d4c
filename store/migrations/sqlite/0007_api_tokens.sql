-- Tenant API tokens (same shape as the PostgreSQL schema; see
-- store/migrations/postgres/0008_api_tokens.sql). Only the hex SHA-256 of a token is stored.
-- Timestamps are INTEGER unix milliseconds.
CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     INTEGER NOT NULL REFERENCES tenants (id),
    name          TEXT    NOT NULL,
    hash          TEXT    NOT NULL UNIQUE CHECK (length(hash) = 64),
    created_at    INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000),
    last_used_at  INTEGER NULL,
    revoked_at    INTEGER NULL
);

CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id);
