-- Redirect counters split by writer shard: each concurrent click writer adds
-- to its own row per URL, so writers committing at the same time never wait
-- on one another's row lock for a hot URL. A URL's count is the sum of its
-- rows (at most one per shard in use: a handful per replica).
-- Existing counters become shard 0.
ALTER TABLE redirect_counts ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE redirect_counts DROP CONSTRAINT redirect_counts_pkey;
ALTER TABLE redirect_counts ADD PRIMARY KEY (url_id, shard);
