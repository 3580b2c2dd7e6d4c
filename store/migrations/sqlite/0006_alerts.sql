-- Active alerts received from Alertmanager's webhook (same shape as the PostgreSQL schema;
-- see store/migrations/postgres/0007_alerts.sql). Timestamps are INTEGER unix milliseconds.
CREATE TABLE alerts (
    fingerprint    TEXT    PRIMARY KEY,
    alertname      TEXT    NOT NULL,
    severity       TEXT    NULL,
    labels         TEXT    NOT NULL,
    annotations    TEXT    NOT NULL,
    starts_at      INTEGER NOT NULL,
    ends_at        INTEGER NULL,
    generator_url  TEXT    NOT NULL DEFAULT '',
    received_at    INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000),
    updated_at     INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000)
);

CREATE INDEX alerts_severity_starts_idx ON alerts (severity, starts_at);
