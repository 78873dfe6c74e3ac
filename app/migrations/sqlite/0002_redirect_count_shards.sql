-- Redirect counters split by writer shard (see the PostgreSQL migration of
-- the same number). SQLite cannot change a primary key in place: the table
-- is rebuilt, existing counters becoming shard 0.
CREATE TABLE redirect_counts_sharded (
    url_id           INTEGER NOT NULL REFERENCES urls (id),
    shard            INTEGER NOT NULL DEFAULT 0,
    redirect_count   INTEGER NOT NULL,
    last_redirect_at TEXT    NOT NULL,
    PRIMARY KEY (url_id, shard)
);
INSERT INTO redirect_counts_sharded (url_id, shard, redirect_count, last_redirect_at)
    SELECT url_id, 0, redirect_count, last_redirect_at FROM redirect_counts;
DROP TABLE redirect_counts;
ALTER TABLE redirect_counts_sharded RENAME TO redirect_counts;
