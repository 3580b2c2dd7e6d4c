-- Tenant API tokens (`chom tenants token`). Only the hex SHA-256 of a token is stored; the
-- token itself is shown once to the operator and never written anywhere. The HTTP API
-- authenticates a request by looking its token's hash up here.
CREATE TABLE api_tokens (
    id            BIGSERIAL   PRIMARY KEY,
    -- A tenant with tokens cannot be deleted by accident.
    tenant_id     BIGINT      NOT NULL REFERENCES tenants (id),
    name          TEXT        NOT NULL,
    -- 64 lowercase hex digits; unique, and the lookup of every API request.
    hash          TEXT        NOT NULL UNIQUE CHECK (length(hash) = 64),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Written at most once a minute per token, not per request.
    last_used_at  TIMESTAMPTZ NULL,
    -- A revoked token authenticates nothing; the row stays for the listing.
    revoked_at    TIMESTAMPTZ NULL
);

-- A tenant's listing, and the count of its active tokens when one is made.
CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id);
