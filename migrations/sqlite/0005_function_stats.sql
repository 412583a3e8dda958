-- Issue 14: per-minute request statistics for functions' owners.
-- Keep in step with migrations/mysql/0005_function_stats.sql.
-- Each router writes its own row per (function, minute): the totals it served
-- in that minute, replaced as the minute goes on (so a write can be repeated).
-- A reader sums the routers' rows. `latency` is a sparse histogram over fixed
-- log-scale buckets, "index:count,..." (core/src/store/stats.rs defines the
-- buckets), so percentiles can be taken after rows are merged.
-- Rows go with their function, and the routers prune those past the retention.

CREATE TABLE function_stats (
    function_id INTEGER NOT NULL REFERENCES functions (id) ON DELETE CASCADE,
    minute      INTEGER NOT NULL, -- start of the minute, ms since the epoch
    router_id   INTEGER NOT NULL, -- random per router process
    invocations INTEGER NOT NULL,
    errors      INTEGER NOT NULL,
    cold_starts INTEGER NOT NULL,
    latency     TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (function_id, minute, router_id)
);
CREATE INDEX function_stats_minute ON function_stats (minute);
