-- Click batches written back from the spill (see the PostgreSQL migration
-- of the same number).
CREATE TABLE click_batches (
    id         INTEGER PRIMARY KEY,
    applied_at TEXT    NOT NULL
);
