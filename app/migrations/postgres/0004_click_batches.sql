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
