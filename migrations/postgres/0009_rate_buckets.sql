-- Each API key's token bucket, shared by every keymint process on the database: a process leases a batch of
-- tokens in one statement when the batch it holds runs out (see src/domain/lease.rs). `level` is in millionths of
-- a token at `updated_at` (microseconds); the bucket refills from time, so nothing writes it between leases.
-- `granted` is what the last lease took (the statement's RETURNING reports the row after it). Not derived from
-- events: a rebuild leaves it alone, and a key without a row has a full bucket.
CREATE TABLE rate_buckets (
    key_id      TEXT    PRIMARY KEY,
    level       BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    granted     BIGINT  NOT NULL
);
