-- A link's rule-based targets and query forwarding (see the PostgreSQL migration of the
-- same name).
ALTER TABLE urls ADD COLUMN rules TEXT NOT NULL DEFAULT '[]';
ALTER TABLE urls ADD COLUMN forward_query BOOLEAN NOT NULL DEFAULT FALSE;
