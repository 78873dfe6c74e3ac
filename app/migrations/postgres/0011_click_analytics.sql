-- Link analytics, kept up to date by the click writer in the same statement as the clicks'
-- events and counters (so exactly once, as they are), and read without scanning events.
--
-- Clicks per link, hour, referring host ('' for none), browser, operating system and device
-- class: one row per combination seen, so that a batch of clicks alike (the usual case) adds
-- to one row, and every breakdown is a GROUP BY of the same rows. Split by writer shard as
-- the redirect counters are, so that concurrent writers do not queue on one hot link's rows.
-- Bots' visits are not in it.
CREATE TABLE IF NOT EXISTS click_rollups (
    url_id   BIGINT    NOT NULL,
    hour     TIMESTAMP NOT NULL,
    referrer TEXT      NOT NULL,
    browser  TEXT      NOT NULL,
    os       TEXT      NOT NULL,
    device   TEXT      NOT NULL,
    shard    SMALLINT  NOT NULL,
    clicks   BIGINT    NOT NULL,
    PRIMARY KEY (url_id, hour, referrer, browser, os, device, shard)
);

-- One row per link, day and visitor: the visitor is a hash of the client address and
-- user agent with that day's salt (below), so no address is stored and a visitor cannot be
-- followed from one day to the next. Unique visitors of a day are its rows.
CREATE TABLE IF NOT EXISTS visitor_days (
    url_id  BIGINT NOT NULL,
    day     DATE   NOT NULL,
    visitor BIGINT NOT NULL,
    PRIMARY KEY (url_id, day, visitor)
);

-- The day's random salt, shared by every replica; salts older than yesterday are deleted,
-- after which that day's hashes can no longer be recomputed from an address.
CREATE TABLE IF NOT EXISTS visitor_salts (
    day  DATE  PRIMARY KEY,
    salt BYTEA NOT NULL
);
