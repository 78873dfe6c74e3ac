-- API keys and event attribution (see the PostgreSQL migration of the same
-- number for the reasons).
CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL,
    scope         TEXT    NOT NULL CHECK (scope IN ('admin', 'user', 'read-only')),
    user_id       INTEGER REFERENCES users (id),
    secret_sha256 TEXT    NOT NULL,
    prefix        TEXT    NOT NULL,
    bootstrap     BOOLEAN NOT NULL DEFAULT 0,
    created_at    TEXT    NOT NULL,
    created_by    INTEGER REFERENCES api_keys (id),
    expires_at    TEXT,
    revoked_at    TEXT,
    last_used_at  TEXT,
    CONSTRAINT api_keys_secret_sha256_key UNIQUE (secret_sha256),
    CHECK (scope <> 'user' OR user_id IS NOT NULL)
);

ALTER TABLE events ADD COLUMN source TEXT NOT NULL DEFAULT 'service' CHECK (source IN ('service', 'client'));
ALTER TABLE events ADD COLUMN key_id INTEGER REFERENCES api_keys (id);
