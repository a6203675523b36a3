-- API keys (read model of the `apikey` aggregate). The record stays after deletion, with `deleted_at`. `origin`
-- and `settings` hold the event's JSON; the columns beside them are what lists filter and order by.
CREATE TABLE api_keys (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL,
    app_id      TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    prefix      TEXT    NOT NULL,
    last_four   TEXT    NOT NULL,
    origin      TEXT    NOT NULL,
    settings    TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    deleted_at  INTEGER,
    sequence    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    changed_at  INTEGER NOT NULL
);
CREATE INDEX api_keys_by_org ON api_keys (org_id, created_at, id);

-- Secrets by their SHA-256, current and rolled: `expires_at` is NULL for the current secret and the end of the
-- grace period for a rolled one.
CREATE TABLE api_key_secrets (
    secret_hash TEXT    PRIMARY KEY,
    key_id      TEXT    NOT NULL,
    expires_at  INTEGER
);
CREATE INDEX api_key_secrets_by_key ON api_key_secrets (key_id);

-- Usage counters, added to in batches from memory. Not derived from events: a rebuild leaves them alone.
CREATE TABLE api_key_usage (
    key_id          TEXT    PRIMARY KEY,
    total_requests  INTEGER NOT NULL,
    total_denied    INTEGER NOT NULL,
    last_used_at    INTEGER NOT NULL,
    quota_day       INTEGER NOT NULL,
    quota_count     INTEGER NOT NULL
);
