-- Active alerts received from Alertmanager's webhook (`POST /webhooks/alertmanager`): a
-- firing alert is upserted by its fingerprint, a resolved one deleted, so every row is an
-- alert firing now. `chom alerts` and the `alerts` health check read them.
CREATE TABLE alerts (
    -- Alertmanager's fingerprint of the label set.
    fingerprint    TEXT        PRIMARY KEY,
    alertname      TEXT        NOT NULL,
    -- The `severity` label; NULL when the alert has none.
    severity       TEXT        NULL,
    -- JSON objects of strings, as received.
    labels         TEXT        NOT NULL,
    annotations    TEXT        NOT NULL,
    starts_at      TIMESTAMPTZ NOT NULL,
    -- NULL when Alertmanager sent no end (its zero time).
    ends_at        TIMESTAMPTZ NULL,
    generator_url  TEXT        NOT NULL DEFAULT '',
    -- First received, and last re-sent.
    received_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The listing's and the health check's order: critical first, then oldest first.
CREATE INDEX alerts_severity_starts_idx ON alerts (severity, starts_at);
