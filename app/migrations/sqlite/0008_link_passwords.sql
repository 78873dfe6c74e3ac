-- A link's password (see the PostgreSQL migration of the same name).
ALTER TABLE urls ADD COLUMN password_hash TEXT;
