-- Click batches written back from the spill, and the last batch each click
-- writer committed (see the PostgreSQL migration of the same number).
CREATE TABLE click_batches (
    id         INTEGER PRIMARY KEY,
    applied_at TEXT    NOT NULL
);

CREATE TABLE click_writers (
    writer     INTEGER PRIMARY KEY,
    last_batch INTEGER NOT NULL,
    updated_at TEXT    NOT NULL
);
