-- Each API key's count of uses on one UTC day (`day`: days since 1970-01-01), shared by every keymint process on
-- the database: a process leases a batch of uses in one statement when the batch it holds runs out. `granted` is
-- what the last lease took. Not derived from events: a rebuild leaves it alone.
CREATE TABLE quota_counters (
    key_id      TEXT    PRIMARY KEY,
    day         BIGINT  NOT NULL,
    used        BIGINT  NOT NULL,
    granted     BIGINT  NOT NULL
);
