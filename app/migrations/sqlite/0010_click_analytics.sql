-- Link analytics (see the PostgreSQL migration of the same name).
CREATE TABLE click_rollups (
    url_id   INTEGER NOT NULL,
    hour     TEXT    NOT NULL,
    referrer TEXT    NOT NULL,
    browser  TEXT    NOT NULL,
    os       TEXT    NOT NULL,
    device   TEXT    NOT NULL,
    shard    INTEGER NOT NULL,
    clicks   INTEGER NOT NULL,
    PRIMARY KEY (url_id, hour, referrer, browser, os, device, shard)
) WITHOUT ROWID;

CREATE TABLE visitor_days (
    url_id  INTEGER NOT NULL,
    day     TEXT    NOT NULL,
    visitor INTEGER NOT NULL,
    PRIMARY KEY (url_id, day, visitor)
) WITHOUT ROWID;

CREATE TABLE visitor_salts (
    day  TEXT PRIMARY KEY,
    salt BLOB NOT NULL
);
