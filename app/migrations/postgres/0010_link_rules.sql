-- A link's rule-based targets, as a JSON array (`[]`: none), and whether the short URL's
-- query is forwarded to the target. Kept as text, read whole with the link: the redirect
-- path never queries into them. Constant defaults: adding the columns rewrites nothing
-- (PostgreSQL 11 and later), and an older build's inserts, which do not name them, get
-- "no rules, no forwarding".
ALTER TABLE urls ADD COLUMN IF NOT EXISTS rules TEXT NOT NULL DEFAULT '[]';
ALTER TABLE urls ADD COLUMN IF NOT EXISTS forward_query BOOLEAN NOT NULL DEFAULT FALSE;
