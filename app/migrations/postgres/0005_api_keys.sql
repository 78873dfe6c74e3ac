-- API keys for teams. The key itself is shown once, when it is created; the
-- table keeps only its SHA-256 (keys are 192 random bits, so a fast hash is
-- enough: there is nothing to brute-force) and a short prefix to recognise
-- it by in lists. `bootstrap` rows stand for ADMIN_API_KEY, which is checked
-- against the environment, never looked up here: they exist so that events
-- can name that key too.
CREATE TABLE api_keys (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT      NOT NULL,
    scope         TEXT      NOT NULL,
    user_id       BIGINT    REFERENCES users (id),
    secret_sha256 TEXT      NOT NULL,
    prefix        TEXT      NOT NULL,
    bootstrap     BOOLEAN   NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMP NOT NULL,
    created_by    BIGINT    REFERENCES api_keys (id),
    expires_at    TIMESTAMP,
    revoked_at    TIMESTAMP,
    last_used_at  TIMESTAMP,
    CONSTRAINT api_keys_secret_sha256_key UNIQUE (secret_sha256),
    CONSTRAINT api_keys_scope_check CHECK (scope IN ('admin', 'user', 'read-only')),
    CONSTRAINT api_keys_user_scope_check CHECK (scope <> 'user' OR user_id IS NOT NULL)
);

-- Who wrote each event: `service` for the events the service writes itself
-- (a change made through the API, a redirect, the seed), `client` for those
-- posted to POST /events. `key_id` is the API key that made the change or
-- posted the event (NULL: no key, as in AUTH_MODE=open, the seed, redirects).
-- Events already stored are taken as the service's: nothing recorded which
-- were posted.
ALTER TABLE events ADD COLUMN source TEXT NOT NULL DEFAULT 'service';
ALTER TABLE events ADD CONSTRAINT events_source_check CHECK (source IN ('service', 'client'));
ALTER TABLE events ADD COLUMN key_id BIGINT REFERENCES api_keys (id);
