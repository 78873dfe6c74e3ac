-- Same shape as the PostgreSQL schema (see migrations/postgres). Timestamps
-- are TEXT 'YYYY-MM-DD HH:MM:SS', booleans 0/1, details JSON text.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    username    TEXT    NOT NULL,
    email       TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    deleted_at  TEXT
);
CREATE UNIQUE INDEX users_email_live_key ON users (lower(email)) WHERE deleted_at IS NULL;

CREATE TABLE urls (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER REFERENCES users (id),
    short_code    TEXT    NOT NULL,
    original_url  TEXT    NOT NULL,
    title         TEXT,
    is_active     BOOLEAN NOT NULL DEFAULT 1,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    -- Bumped by every write; caches keep the highest version they have seen.
    version       INTEGER   NOT NULL DEFAULT 1,
    CONSTRAINT urls_short_code_key UNIQUE (short_code)
);
CREATE INDEX urls_user_id_idx ON urls (user_id, id);
CREATE INDEX urls_is_active_idx ON urls (is_active, id);

-- Redirects per URL, kept by the click writer in the same transaction as
-- the redirect events, so stats never count events. A table of its own so
-- that click traffic never locks the URL rows that edits update; writers
-- upsert in url_id order, so concurrent writers wait for each other but
-- cannot deadlock.
CREATE TABLE redirect_counts (
    url_id           INTEGER   PRIMARY KEY REFERENCES urls (id),
    redirect_count   INTEGER   NOT NULL,
    last_redirect_at TEXT NOT NULL
);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    url_id      INTEGER NOT NULL REFERENCES urls (id),
    user_id     INTEGER REFERENCES users (id),
    event_type  TEXT    NOT NULL,
    timestamp   TEXT    NOT NULL,
    details     TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX events_url_id_idx ON events (url_id, id);
CREATE INDEX events_url_id_type_idx ON events (url_id, event_type, id);
CREATE INDEX events_user_id_idx ON events (user_id, id);
CREATE INDEX events_event_type_idx ON events (event_type, id);
