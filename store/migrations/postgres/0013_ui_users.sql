-- Operators of the web console (`chom ui user add NAME`) and their sessions. A password is
-- stored only as its Argon2id hash (PHC string); a session only as the SHA-256 of its id,
-- so neither the database nor its backups hold anything a browser could present.
CREATE TABLE ui_users (
    id             BIGSERIAL   PRIMARY KEY,
    name           TEXT        NOT NULL UNIQUE,
    password_hash  TEXT        NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE ui_sessions (
    -- 64 lowercase hex digits: SHA-256 of the random session id the cookie carries.
    id_hash       TEXT        PRIMARY KEY CHECK (length(id_hash) = 64),
    -- Removing an operator ends their sessions.
    user_id       BIGINT      NOT NULL REFERENCES ui_users (id) ON DELETE CASCADE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Written at most once a minute per session; older than ui.session_idle = over.
    last_seen_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX ui_sessions_user_idx ON ui_sessions (user_id);
