//! Per-minute request statistics for functions' owners (`function_stats`,
//! migration 0005), written by many routers and read as one.
//!
//! Each router keeps, per function and minute, the totals it served —
//! invocations, errors, cold starts and a latency histogram — and replaces its
//! own row (`router_id`, random per router process) as the minute goes on. A
//! write is therefore idempotent: a flush that is repeated after a failure
//! does not count twice. A reader sums every router's rows.
//!
//! Latency is kept in fixed log-scale buckets ([`LATENCY_BUCKETS`] of them,
//! four per doubling from 0.1 ms), the same on every router and every version
//! of Skiff, so histograms from several routers and minutes add up bucket by
//! bucket and percentiles are taken after merging. A percentile is the
//! geometric middle of the bucket it falls in: within ±9 % of the true value.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::Row;

use super::retry::retrying;
use super::{Store, StoreError};
use crate::names::FunctionName;
use crate::time::now_millis;

/// Number of latency buckets. Bucket 0 holds latencies up to 0.1 ms; bucket
/// `i` holds (0.1·2^((i-1)/4), 0.1·2^(i/4)] ms; the last one everything above
/// 0.1·2^(94/4) ms (about 20 minutes). Never change these three constants:
/// stored rows are read with them.
pub const LATENCY_BUCKETS: usize = 96;
const FIRST_BOUND_MS: f64 = 0.1;
const BUCKETS_PER_DOUBLING: f64 = 4.0;

/// How long rows are kept (routers prune older ones).
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

pub const MINUTE_MS: i64 = 60_000;

/// The start of the minute `millis` falls in.
pub fn minute_of(millis: i64) -> i64 {
    millis.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// The bucket a latency of `ms` milliseconds is counted in.
pub fn latency_bucket(ms: f64) -> usize {
    if ms.is_nan() || ms <= FIRST_BOUND_MS {
        return 0;
    }
    let i = ((ms / FIRST_BOUND_MS).log2() * BUCKETS_PER_DOUBLING).ceil();
    // `as` saturates; the clamp keeps the overflow bucket.
    (i as usize).min(LATENCY_BUCKETS - 1)
}

/// The upper bound of bucket `i`, in milliseconds.
pub fn bucket_upper_ms(i: usize) -> f64 {
    FIRST_BOUND_MS * (i as f64 / BUCKETS_PER_DOUBLING).exp2()
}

/// What a percentile falling in bucket `i` is reported as.
fn bucket_value_ms(i: usize) -> f64 {
    let hi = bucket_upper_ms(i);
    let v = if i == 0 {
        hi
    } else {
        (bucket_upper_ms(i - 1) * hi).sqrt()
    };
    (v * 100.0).round() / 100.0
}

/// A latency histogram over the fixed buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: vec![0; LATENCY_BUCKETS],
        }
    }
}

impl LatencyHistogram {
    pub fn record_ms(&mut self, ms: f64) {
        self.add_to_bucket(latency_bucket(ms), 1);
    }

    /// Adds `n` to bucket `i` (out of range: ignored).
    pub fn add_to_bucket(&mut self, i: usize, n: u64) {
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(n);
        }
    }

    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
    }

    pub fn bucket(&self, i: usize) -> u64 {
        self.counts.get(i).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| *c == 0)
    }

    /// The `q`-quantile (0 < q ≤ 1) in milliseconds; `None` when empty.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        // The rank of the q-quantile among `total` sorted values (1-based).
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_value_ms(i));
            }
        }
        None
    }

    /// The stored form: `index:count` of each non-empty bucket, comma-separated.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&format!("{i}:{c}"));
        }
        out
    }

    /// Reads the stored form; a part that does not parse is skipped (a
    /// statistic is better shown without it than not at all).
    pub fn decode(text: &str) -> Self {
        let mut h = Self::default();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            if let Some((i, c)) = part.split_once(':')
                && let (Ok(i), Ok(c)) = (i.parse::<usize>(), c.parse::<u64>())
            {
                h.add_to_bucket(i, c);
            }
        }
        h
    }
}

/// One router's totals for one function and minute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinuteStats {
    pub invocations: u64,
    pub errors: u64,
    pub cold_starts: u64,
    pub latency: LatencyHistogram,
}

impl MinuteStats {
    pub fn merge(&mut self, o: &Self) {
        self.invocations = self.invocations.saturating_add(o.invocations);
        self.errors = self.errors.saturating_add(o.errors);
        self.cold_starts = self.cold_starts.saturating_add(o.cold_starts);
        self.latency.merge(&o.latency);
    }
}

/// A row a router writes: its totals so far for `function_id` in `minute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsRow {
    pub function_id: i64,
    /// Start of the minute, ms since the epoch ([`minute_of`]).
    pub minute: i64,
    pub stats: MinuteStats,
}

/// One minute of the series an owner reads.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SeriesPoint {
    /// Start of the minute, ms since the epoch.
    pub t: i64,
    pub invocations: u64,
    pub errors: u64,
    pub cold_starts: u64,
    /// The minute's latency percentiles; `None` when it served nothing.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A function's statistics over a window, every router's rows summed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FunctionStats {
    pub invocations: u64,
    pub errors: u64,
    pub cold_starts: u64,
    /// `None` when nothing was served in the window.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// One point per minute of the window, oldest first, minutes without
    /// requests included (as zeros); the last one is the current minute.
    pub series: Vec<SeriesPoint>,
}

/// Rows written per transaction.
const WRITE_BATCH: usize = 200;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store {
    /// Replaces router `router_id`'s rows for these functions and minutes. A
    /// row of a function deleted meanwhile is not written.
    pub async fn write_stats(&self, router_id: i64, rows: &[StatsRow]) -> Result<(), StoreError> {
        for batch in rows.chunks(WRITE_BATCH) {
            retrying(|| self.write_stats_once(router_id, batch)).await?;
        }
        Ok(())
    }

    async fn write_stats_once(&self, router_id: i64, rows: &[StatsRow]) -> Result<(), StoreError> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        for r in rows {
            // REPLACE ... SELECT: the same on MySQL/MariaDB and SQLite, and a
            // no-op for a function that is gone (its rows went with it).
            sqlx::query(
                "REPLACE INTO function_stats \
                 (function_id, minute, router_id, invocations, errors, cold_starts, latency, updated_at) \
                 SELECT id, ?, ?, ?, ?, ?, ?, ? FROM functions WHERE id = ?",
            )
            .bind(r.minute)
            .bind(router_id)
            .bind(to_i64(r.stats.invocations))
            .bind(to_i64(r.stats.errors))
            .bind(to_i64(r.stats.cold_starts))
            .bind(r.stats.latency.encode())
            .bind(now)
            .bind(r.function_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The statistics of a user's function over the last `window` (at least a
    /// minute, at most [`RETENTION`]); `None` when there is no such function.
    pub async fn function_stats(
        &self,
        user_id: i64,
        name: &FunctionName,
        window: Duration,
    ) -> Result<Option<FunctionStats>, StoreError> {
        let Some(row) = sqlx::query("SELECT id FROM functions WHERE user_id = ? AND name = ?")
            .bind(user_id)
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let function_id: i64 = row.try_get("id")?;
        let minutes =
            i64::try_from(window.clamp(Duration::from_secs(60), RETENTION).as_secs() / 60)
                .unwrap_or(1);
        let last = minute_of(now_millis());
        let first = last - (minutes - 1) * MINUTE_MS;
        self.function_stats_between(function_id, first, last)
            .await
            .map(Some)
    }

    /// For each function that served at least one call in the stored
    /// minutes: the start of the last such minute (any router's row). What
    /// the manager's scale to zero calls a function's last use.
    pub async fn last_called_minutes(&self) -> Result<BTreeMap<i64, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT function_id, MAX(minute) AS last_minute FROM function_stats \
             WHERE invocations > 0 GROUP BY function_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("function_id")?, r.try_get("last_minute")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// A function's statistics for the minutes `first..=last` (minute starts).
    pub async fn function_stats_between(
        &self,
        function_id: i64,
        first: i64,
        last: i64,
    ) -> Result<FunctionStats, StoreError> {
        let (first, last) = (minute_of(first), minute_of(last));
        let rows = sqlx::query(
            "SELECT minute, invocations, errors, cold_starts, latency FROM function_stats \
             WHERE function_id = ? AND minute >= ? AND minute <= ?",
        )
        .bind(function_id)
        .bind(first)
        .bind(last)
        .fetch_all(&self.pool)
        .await?;
        let mut by_minute: BTreeMap<i64, MinuteStats> = BTreeMap::new();
        for r in &rows {
            let latency: String = r.try_get("latency")?;
            let row = MinuteStats {
                invocations: to_u64(r.try_get("invocations")?),
                errors: to_u64(r.try_get("errors")?),
                cold_starts: to_u64(r.try_get("cold_starts")?),
                latency: LatencyHistogram::decode(&latency),
            };
            by_minute
                .entry(r.try_get("minute")?)
                .or_default()
                .merge(&row);
        }
        let mut total = MinuteStats::default();
        for m in by_minute.values() {
            total.merge(m);
        }
        let series = (0..)
            .map(|i| first + i * MINUTE_MS)
            .take_while(|t| *t <= last)
            .map(|t| {
                let m = by_minute.get(&t);
                SeriesPoint {
                    t,
                    invocations: m.map_or(0, |m| m.invocations),
                    errors: m.map_or(0, |m| m.errors),
                    cold_starts: m.map_or(0, |m| m.cold_starts),
                    p50_ms: m.and_then(|m| m.latency.percentile_ms(0.50)),
                    p95_ms: m.and_then(|m| m.latency.percentile_ms(0.95)),
                    p99_ms: m.and_then(|m| m.latency.percentile_ms(0.99)),
                }
            })
            .collect();
        Ok(FunctionStats {
            invocations: total.invocations,
            errors: total.errors,
            cold_starts: total.cold_starts,
            p50_ms: total.latency.percentile_ms(0.50),
            p95_ms: total.latency.percentile_ms(0.95),
            p99_ms: total.latency.percentile_ms(0.99),
            series,
        })
    }

    /// Deletes rows of minutes before `before_millis`, for at most
    /// `max_functions` functions per call (each function's old rows by its
    /// key); returns the rows deleted. Call again while it deletes anything.
    pub async fn prune_stats(
        &self,
        before_millis: i64,
        max_functions: i64,
    ) -> Result<u64, StoreError> {
        let ids: Vec<i64> =
            sqlx::query("SELECT DISTINCT function_id FROM function_stats WHERE minute < ? LIMIT ?")
                .bind(before_millis)
                .bind(max_functions)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get("function_id"))
                .collect::<Result<_, _>>()?;
        let mut deleted = 0;
        for id in ids {
            let done = retrying(|| async move {
                sqlx::query("DELETE FROM function_stats WHERE function_id = ? AND minute < ?")
                    .bind(id)
                    .bind(before_millis)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::from)
            })
            .await?;
            deleted += done.rows_affected();
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log_scale_and_cover_the_range() {
        assert_eq!(latency_bucket(0.0), 0);
        assert_eq!(latency_bucket(0.1), 0);
        assert_eq!(latency_bucket(0.1001), 1);
        assert_eq!(latency_bucket(f64::NAN), 0);
        assert_eq!(latency_bucket(1e12), LATENCY_BUCKETS - 1);
        assert_eq!(latency_bucket(f64::INFINITY), LATENCY_BUCKETS - 1);
        // Each value lands in the bucket whose bounds hold it.
        for ms in [0.25, 1.0, 3.3, 10.0, 99.0, 1234.5, 60_000.0] {
            let i = latency_bucket(ms);
            assert!(ms <= bucket_upper_ms(i) * 1.000_001, "{ms} in {i}");
            assert!(ms > bucket_upper_ms(i - 1) * 0.999_999, "{ms} in {i}");
            // The reported value is within 10 % of the true one.
            let v = bucket_value_ms(i);
            assert!((v - ms).abs() / ms < 0.10, "{ms} shown as {v}");
        }
        assert!(bucket_upper_ms(LATENCY_BUCKETS - 2) > 19.0 * 60_000.0);
    }

    #[test]
    fn histograms_round_trip_and_merge() {
        let mut a = LatencyHistogram::default();
        for ms in [1.0, 1.0, 5.0, 200.0] {
            a.record_ms(ms);
        }
        let text = a.encode();
        assert_eq!(LatencyHistogram::decode(&text), a);
        assert_eq!(LatencyHistogram::decode(""), LatencyHistogram::default());
        // Junk and out-of-range parts are skipped.
        let junk = LatencyHistogram::decode("x,3:2,999:5,4:-1,:,5:7");
        assert_eq!((junk.bucket(3), junk.bucket(5), junk.total()), (2, 7, 9));
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.total(), 8);
        assert_eq!(b.percentile_ms(0.5), a.percentile_ms(0.5));
        assert_eq!(LatencyHistogram::default().percentile_ms(0.5), None);
    }

    #[test]
    fn percentiles_come_from_the_buckets() {
        let mut h = LatencyHistogram::default();
        // 90 fast, 9 medium, 1 slow.
        for _ in 0..90 {
            h.record_ms(2.0);
        }
        for _ in 0..9 {
            h.record_ms(50.0);
        }
        h.record_ms(1000.0);
        let near = |got: Option<f64>, want: f64| {
            let got = got.unwrap();
            assert!((got - want).abs() / want < 0.10, "{got} vs {want}");
        };
        near(h.percentile_ms(0.50), 2.0);
        near(h.percentile_ms(0.90), 2.0);
        near(h.percentile_ms(0.95), 50.0);
        near(h.percentile_ms(0.99), 50.0);
        near(h.percentile_ms(1.0), 1000.0);
    }

    #[test]
    fn minutes_start_on_the_minute() {
        assert_eq!(minute_of(0), 0);
        assert_eq!(minute_of(59_999), 0);
        assert_eq!(minute_of(60_000), 60_000);
        assert_eq!(minute_of(-1), -60_000);
    }
}
