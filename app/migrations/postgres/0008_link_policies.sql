-- A link's policy: the status of its redirect, when it stops (`expires_at`), after how many
-- visits (`max_visits`, counted in `visits` while it is set), and where visitors go then
-- (`fallback_url`). Defaults are today's behaviour (302, no expiry, no cap), so every
-- existing row and every older build's insert keep it. Adding columns with constant
-- defaults rewrites nothing (PostgreSQL 11+), and the redirect's read (by short code)
-- stays one index lookup.
ALTER TABLE urls
    ADD COLUMN IF NOT EXISTS redirect_type SMALLINT NOT NULL DEFAULT 302
        CONSTRAINT urls_redirect_type_check CHECK (redirect_type IN (301, 302, 307, 308)),
    ADD COLUMN IF NOT EXISTS expires_at TIMESTAMP,
    ADD COLUMN IF NOT EXISTS max_visits BIGINT
        CONSTRAINT urls_max_visits_check CHECK (max_visits > 0),
    ADD COLUMN IF NOT EXISTS visits BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS fallback_url TEXT;
