-- Kubernetes runtime: the outcome of the last apply of each function's objects.
-- Keep in step with migrations/sqlite/0002_function_runtime.sql.
-- One row per function (replaced on every recorded apply); it goes with the function.

CREATE TABLE function_runtime (
    function_id   BIGINT      NOT NULL PRIMARY KEY,
    version       BIGINT      NOT NULL,
    state         VARCHAR(16) NOT NULL,
    error_message TEXT        NULL,
    updated_at    BIGINT      NOT NULL,
    CONSTRAINT runtime_function FOREIGN KEY (function_id) REFERENCES functions (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
