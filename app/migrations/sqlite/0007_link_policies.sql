-- A link's policy (see the PostgreSQL migration of the same name).
ALTER TABLE urls ADD COLUMN redirect_type INTEGER NOT NULL DEFAULT 302
    CHECK (redirect_type IN (301, 302, 307, 308));
ALTER TABLE urls ADD COLUMN expires_at TEXT;
ALTER TABLE urls ADD COLUMN max_visits INTEGER CHECK (max_visits > 0);
ALTER TABLE urls ADD COLUMN visits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE urls ADD COLUMN fallback_url TEXT;
