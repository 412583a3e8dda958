-- Issue 12: a version is the upload as it came (a file or an archive) plus the
-- artifact the deploy built from it (the module graph resolved, pinned and
-- bundled into one module) and the lock file that pinned it.
-- Keep in step with migrations/sqlite/0003_artifacts.sql.
-- Versions stored before this have no artifact: the data plane runs their source.
ALTER TABLE function_versions
    ADD COLUMN source_type     VARCHAR(16)  NOT NULL DEFAULT 'file', -- file | tar | tar.gz | zip
    ADD COLUMN entry           VARCHAR(1024) NULL,                   -- the entry module's path in the upload
    ADD COLUMN artifact        LONGBLOB     NULL,                    -- the bundled module the data plane runs
    ADD COLUMN artifact_sha256 CHAR(64)     NULL,
    ADD COLUMN lock_file       MEDIUMTEXT   NULL;                    -- deno.lock of the resolution
