-- Kubernetes runtime: the outcome of the last apply of each function's objects.
-- Keep in step with migrations/mysql/0002_function_runtime.sql.
-- One row per function (replaced on every recorded apply); it goes with the function.

CREATE TABLE function_runtime (
    function_id   INTEGER PRIMARY KEY REFERENCES functions (id) ON DELETE CASCADE,
    version       INTEGER NOT NULL, -- the function version the state is about
    state         TEXT    NOT NULL, -- pending | ready | error
    error_message TEXT,             -- set when state = error
    updated_at    INTEGER NOT NULL
);
