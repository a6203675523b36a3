-- The event log: the source of truth. Times are microseconds since the Unix epoch, UTC.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    aggregate_type  TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    sequence        INTEGER NOT NULL,
    event_type      TEXT    NOT NULL,
    event_version   INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    resource_owner  TEXT    NOT NULL,
    creator         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, sequence)
);
