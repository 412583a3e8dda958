-- Skiff schema, SQLite flavour. Keep in step with migrations/mysql/0001_init.sql:
-- the same tables, columns and meanings; only the dialect differs.
-- Times are integer milliseconds since the Unix epoch.

CREATE TABLE users (
    id               INTEGER PRIMARY KEY AUTOINCREMENT, -- AUTOINCREMENT: ids are never reused
    username         TEXT    NOT NULL UNIQUE,
    password_hash    TEXT    NOT NULL,
    token_generation INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL
);

CREATE TABLE functions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           TEXT    NOT NULL,
    live_version   INTEGER NOT NULL, -- the version that serves; a rollback moves only this
    latest_version INTEGER NOT NULL, -- the highest version ever stored
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (user_id, name)
);

-- Every deploy adds one immutable row here.
CREATE TABLE function_versions (
    function_id INTEGER NOT NULL REFERENCES functions (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    source      BLOB    NOT NULL,
    sha256      TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (function_id, version)
);

-- Change feed: one row per deploy or delete, written in the same transaction.
-- Routers poll it to invalidate their caches without touching the request path.
CREATE TABLE changes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name     TEXT    NOT NULL,
    function_name TEXT    NOT NULL,
    at            INTEGER NOT NULL
);
