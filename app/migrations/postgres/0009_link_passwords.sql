-- A link's password, as its Argon2id hash in PHC form (`$argon2id$v=19$…`); `NULL`: open.
-- The password itself is never stored. Adding a column without a default rewrites nothing.
ALTER TABLE urls ADD COLUMN IF NOT EXISTS password_hash TEXT;
