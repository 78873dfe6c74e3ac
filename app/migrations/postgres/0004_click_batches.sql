-- Click batches written back from a replica's spill (the clicks of
-- redirects answered while the database was away; docs/decisions.md).
-- Each spilled batch has an id; writing it back inserts the id here in the
-- same transaction as its events and counters, so a batch written back
-- twice (a crash after the commit, a commit whose answer was lost) is
-- recognised and skipped. Rows older than 30 days are pruned by the writer.
CREATE TABLE click_batches (
    id         BIGINT PRIMARY KEY,
    applied_at TIMESTAMP NOT NULL
);

-- The last batch each click writer committed. A writer (one per counter
-- shard, renamed after any failed write) numbers its batches 1, 2, 3, …
-- and writes one at a time; every batch sets its number here in its own
-- transaction. A batch whose write failed without a clear answer (the
-- connection dropped or the timeout fired during the COMMIT) is spilled
-- with its writer and number; when it is written back, a number here at
-- least as large means the first write did commit, and the batch is
-- skipped. One row per writer; rows older than 30 days are pruned.
CREATE TABLE click_writers (
    writer     BIGINT PRIMARY KEY,
    last_batch BIGINT    NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
