-- Skiff schema, MySQL 8 / MariaDB 10.11+ flavour. Keep in step with
-- migrations/sqlite/0001_init.sql. Times are integer milliseconds since the Unix epoch.

CREATE TABLE users (
    id               BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username         VARCHAR(32)  NOT NULL,
    password_hash    VARCHAR(255) NOT NULL,
    token_generation BIGINT       NOT NULL DEFAULT 0,
    created_at       BIGINT       NOT NULL,
    UNIQUE KEY users_username (username)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE functions (
    id             BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id        BIGINT      NOT NULL,
    name           VARCHAR(40) NOT NULL,
    live_version   BIGINT      NOT NULL,
    latest_version BIGINT      NOT NULL,
    created_at     BIGINT      NOT NULL,
    updated_at     BIGINT      NOT NULL,
    UNIQUE KEY functions_user_name (user_id, name),
    CONSTRAINT functions_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE function_versions (
    function_id BIGINT   NOT NULL,
    version     BIGINT   NOT NULL,
    source      LONGBLOB NOT NULL,
    sha256      CHAR(64) NOT NULL,
    size        BIGINT   NOT NULL,
    created_at  BIGINT   NOT NULL,
    PRIMARY KEY (function_id, version),
    CONSTRAINT versions_function FOREIGN KEY (function_id) REFERENCES functions (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE changes (
    id            BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_name     VARCHAR(32) NOT NULL,
    function_name VARCHAR(40) NOT NULL,
    at            BIGINT      NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
