-- Read models derived from events, updated in the append transaction; `keymint projections rebuild` refills them.
-- A removed object's rows are deleted: its history stays in `events`.
CREATE TABLE orgs (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    sequence    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    changed_at  INTEGER NOT NULL
);

CREATE TABLE projects (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    sequence    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    changed_at  INTEGER NOT NULL,
    UNIQUE (org_id, name)
);
CREATE INDEX projects_by_org ON projects (org_id, created_at, id);

CREATE TABLE apps (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL,
    project_id  TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    client_id   TEXT    NOT NULL,
    sequence    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    changed_at  INTEGER NOT NULL,
    UNIQUE (project_id, name)
);
CREATE INDEX apps_by_project ON apps (project_id, created_at, id);

CREATE TABLE app_keys (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL,
    project_id  TEXT    NOT NULL,
    app_id      TEXT    NOT NULL,
    key_type    INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    public_key  TEXT    NOT NULL,
    sequence    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    changed_at  INTEGER NOT NULL
);
CREATE INDEX app_keys_by_app ON app_keys (app_id, created_at, id);
CREATE INDEX app_keys_by_project ON app_keys (project_id);

-- Bearer credentials by the SHA-256 of their secret; the secret itself is never stored.
CREATE TABLE credentials (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL,
    token_hash  TEXT    NOT NULL UNIQUE,
    role        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
