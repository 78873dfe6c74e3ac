-- Users are soft-deleted (deleted_at) so that URLs and events never point at
-- a missing row. Emails are unique, case-insensitively, among live users only:
-- a deleted user's address can sign up again.
CREATE TABLE users (
    id          BIGSERIAL PRIMARY KEY,
    username    TEXT      NOT NULL,
    email       TEXT      NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    deleted_at  TIMESTAMP
);
CREATE UNIQUE INDEX users_email_live_key ON users (lower(email)) WHERE deleted_at IS NULL;

CREATE TABLE urls (
    id            BIGSERIAL PRIMARY KEY,
    user_id       BIGINT    REFERENCES users (id),
    short_code    TEXT      NOT NULL,
    original_url  TEXT      NOT NULL,
    title         TEXT,
    is_active     BOOLEAN   NOT NULL DEFAULT TRUE,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL,
    -- Bumped by every write; caches keep the highest version they have seen.
    version       BIGINT    NOT NULL DEFAULT 1,
    CONSTRAINT urls_short_code_key UNIQUE (short_code)
);
-- GET /urls?user_id=…&is_active=… pages in id order.
CREATE INDEX urls_user_id_idx ON urls (user_id, id);
CREATE INDEX urls_is_active_idx ON urls (is_active, id);

-- Redirects per URL, kept by the click writer in the same transaction as
-- the redirect events, so stats never count events. A table of its own so
-- that click traffic never locks the URL rows that edits update; writers
-- upsert in url_id order, so concurrent writers wait for each other but
-- cannot deadlock.
CREATE TABLE redirect_counts (
    url_id           BIGINT    PRIMARY KEY REFERENCES urls (id),
    redirect_count   BIGINT    NOT NULL,
    last_redirect_at TIMESTAMP NOT NULL
);

CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    url_id      BIGINT    NOT NULL REFERENCES urls (id),
    user_id     BIGINT    REFERENCES users (id),
    event_type  TEXT      NOT NULL,
    timestamp   TIMESTAMP NOT NULL,
    details     JSONB     NOT NULL DEFAULT '{}'::jsonb
);
-- GET /events filters page in id order; /urls/{id}/stats counts by type.
CREATE INDEX events_url_id_idx ON events (url_id, id);
CREATE INDEX events_url_id_type_idx ON events (url_id, event_type, id);
CREATE INDEX events_user_id_idx ON events (user_id, id);
CREATE INDEX events_event_type_idx ON events (event_type, id);
