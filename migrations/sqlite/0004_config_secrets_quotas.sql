-- Issue 13: a version is code + configuration; secrets are sealed at rest;
-- operators override quotas per user.
-- Keep in step with migrations/mysql/0004_config_secrets_quotas.sql.

-- The version's configuration as JSON: {"env":{K:V},"secrets":[K…],"settings":{…}}.
-- NULL (versions from before this) reads as the empty configuration.
ALTER TABLE function_versions ADD COLUMN config TEXT;

-- The current value of each secret of a function, sealed with AES-256-GCM
-- (see core/src/secrets.rs). Versions name secrets; the value lives here only.
CREATE TABLE function_secrets (
    function_id INTEGER NOT NULL REFERENCES functions (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    sealed      BLOB    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (function_id, name)
);

-- One row: a known value sealed under the secrets key, so a service started
-- with another key refuses to start instead of failing later, per secret.
CREATE TABLE secrets_key_check (
    id     INTEGER PRIMARY KEY,
    sealed BLOB    NOT NULL
);

-- Per-user overrides of the operator's quotas; NULL = the operator default.
CREATE TABLE user_limits (
    user_id            INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    max_functions      INTEGER,
    max_versions       INTEGER,
    max_artifact_bytes INTEGER,
    rps                INTEGER,
    max_instances      INTEGER,
    updated_at         INTEGER NOT NULL
);
