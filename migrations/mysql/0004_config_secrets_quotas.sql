-- Issue 13: a version is code + configuration; secrets are sealed at rest;
-- operators override quotas per user.
-- Keep in step with migrations/sqlite/0004_config_secrets_quotas.sql.

-- The version's configuration as JSON: {"env":{K:V},"secrets":[K…],"settings":{…}}.
-- NULL (versions from before this) reads as the empty configuration.
ALTER TABLE function_versions ADD COLUMN config MEDIUMTEXT NULL;

-- The current value of each secret of a function, sealed with AES-256-GCM
-- (see core/src/secrets.rs). Versions name secrets; the value lives here only.
CREATE TABLE function_secrets (
    function_id BIGINT       NOT NULL,
    name        VARCHAR(64)  NOT NULL,
    sealed      MEDIUMBLOB   NOT NULL,
    updated_at  BIGINT       NOT NULL,
    PRIMARY KEY (function_id, name),
    CONSTRAINT fk_secrets_function FOREIGN KEY (function_id) REFERENCES functions (id) ON DELETE CASCADE
) ENGINE = InnoDB;

-- One row: a known value sealed under the secrets key, so a service started
-- with another key refuses to start instead of failing later, per secret.
CREATE TABLE secrets_key_check (
    id     BIGINT     NOT NULL PRIMARY KEY,
    sealed BLOB       NOT NULL
) ENGINE = InnoDB;

-- Per-user overrides of the operator's quotas; NULL = the operator default.
CREATE TABLE user_limits (
    user_id            BIGINT NOT NULL PRIMARY KEY,
    max_functions      BIGINT NULL,
    max_versions       BIGINT NULL,
    max_artifact_bytes BIGINT NULL,
    rps                BIGINT NULL,
    max_instances      BIGINT NULL,
    updated_at         BIGINT NOT NULL,
    CONSTRAINT fk_limits_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB;
