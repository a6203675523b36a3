-- OAuth 2.0. The scopes an application's tokens may carry (a JSON array; empty: any), and the access tokens
-- revoked before they expire (read model of `app.token.revoked`, pruned once they have expired).
ALTER TABLE apps ADD COLUMN allowed_scopes TEXT NOT NULL DEFAULT '[]';

CREATE TABLE revoked_tokens (
    jti         TEXT    PRIMARY KEY,
    app_id      TEXT    NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX revoked_tokens_by_app ON revoked_tokens (app_id);
CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (expires_at);

-- Not a read model: the IDs (jti) of the assertions applications presented, each kept until its assertion
-- expires, so that none is accepted twice. The primary key decides a race between processes.
CREATE TABLE used_assertions (
    client_id   TEXT    NOT NULL,
    jti         TEXT    NOT NULL,
    expires_at  BIGINT  NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX used_assertions_by_expiry ON used_assertions (expires_at);
