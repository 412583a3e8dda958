-- Issue 12: a version is the upload as it came (a file or an archive) plus the
-- artifact the deploy built from it (the module graph resolved, pinned and
-- bundled into one module) and the lock file that pinned it.
-- Keep in step with migrations/mysql/0003_artifacts.sql.
-- Versions stored before this have no artifact: the data plane runs their source.
ALTER TABLE function_versions ADD COLUMN source_type TEXT NOT NULL DEFAULT 'file'; -- file | tar | tar.gz | zip
ALTER TABLE function_versions ADD COLUMN entry TEXT;            -- the entry module's path in the upload
ALTER TABLE function_versions ADD COLUMN artifact BLOB;         -- the bundled module the data plane runs
ALTER TABLE function_versions ADD COLUMN artifact_sha256 TEXT;
ALTER TABLE function_versions ADD COLUMN lock_file TEXT;        -- deno.lock of the resolution
