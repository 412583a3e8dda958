-- Issue 14: per-minute request statistics for functions' owners.
-- Keep in step with migrations/sqlite/0005_function_stats.sql.
-- Each router writes its own row per (function, minute): the totals it served
-- in that minute, replaced as the minute goes on (so a write can be repeated).
-- A reader sums the routers' rows. `latency` is a sparse histogram over fixed
-- log-scale buckets, "index:count,..." (core/src/store/stats.rs defines the
-- buckets), so percentiles can be taken after rows are merged.
-- Rows go with their function, and the routers prune those past the retention.

CREATE TABLE function_stats (
    function_id BIGINT      NOT NULL,
    minute      BIGINT      NOT NULL, -- start of the minute, ms since the epoch
    router_id   BIGINT      NOT NULL, -- random per router process
    invocations BIGINT      NOT NULL,
    errors      BIGINT      NOT NULL,
    cold_starts BIGINT      NOT NULL,
    latency     TEXT        NOT NULL,
    updated_at  BIGINT      NOT NULL,
    PRIMARY KEY (function_id, minute, router_id),
    KEY function_stats_minute (minute),
    CONSTRAINT fk_stats_function FOREIGN KEY (function_id) REFERENCES functions (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
