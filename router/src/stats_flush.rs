//! Turns the functions' running totals (`metrics::StatsCell`) into the
//! per-minute rows owners read (`function_stats`, `core/src/store/stats.rs`),
//! off the request path.
//!
//! Every second (or each flush, if more often) the sampler takes each
//! function's totals, and adds what grew since the last sample to the row of
//! the current minute: a request is counted in the minute it was sampled in,
//! at most a second late. Every `SKIFF_STATS_FLUSH_MS` (10 s) the rows that
//! changed are written, each as this router's whole total for that minute
//! (`router_id` is random per process), so a repeated write never counts
//! twice. While the database is down rows are kept for ten minutes, then
//! dropped (and `skiff_stats_flush_failures_total` grows). At the router's
//! stop, a last sample is flushed. Every ten minutes the router also prunes
//! rows past the retention (seven days), a bounded batch at a time.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use skiff_core::store::{MINUTE_MS, MinuteStats, RETENTION, StatsRow, Store, minute_of};
use skiff_core::time::now_millis;
use tokio::sync::watch;

use crate::metrics::Metrics;

const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Functions pruned per statement batch, and batches per prune.
const PRUNE_FUNCTIONS: i64 = 100;
const PRUNE_BATCHES: usize = 50;
/// Rows not written for this long (the database is down) are dropped.
const KEEP_UNWRITTEN: i64 = 10 * MINUTE_MS;
/// The last flush at the router's stop waits at most this long.
const LAST_FLUSH: Duration = Duration::from_secs(5);

/// A random id for this router process (std's hasher keys come from the OS).
pub fn new_router_id() -> i64 {
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    // Positive, so it reads the same everywhere.
    i64::try_from(h.finish() >> 1).unwrap_or(1)
}

pub struct StatsFlusher {
    store: Store,
    metrics: Arc<Metrics>,
    router_id: i64,
    flush_every: Duration,
    /// Each function's totals at the last sample.
    last: HashMap<i64, MinuteStats>,
    /// This router's totals per (function, minute) not yet past.
    rows: HashMap<(i64, i64), MinuteStats>,
    /// Rows changed since they were last written.
    dirty: HashSet<(i64, i64)>,
}

/// What grew from `before` to `now`.
fn growth(now: &MinuteStats, before: Option<&MinuteStats>) -> MinuteStats {
    let Some(b) = before else {
        return now.clone();
    };
    let mut d = MinuteStats {
        invocations: now.invocations.saturating_sub(b.invocations),
        errors: now.errors.saturating_sub(b.errors),
        cold_starts: now.cold_starts.saturating_sub(b.cold_starts),
        latency: Default::default(),
    };
    for i in 0..skiff_core::store::LATENCY_BUCKETS {
        d.latency
            .add_to_bucket(i, now.latency.bucket(i).saturating_sub(b.latency.bucket(i)));
    }
    d
}

impl StatsFlusher {
    pub fn new(store: Store, metrics: Arc<Metrics>, router_id: i64, flush_every: Duration) -> Self {
        Self {
            store,
            metrics,
            router_id,
            flush_every,
            last: HashMap::new(),
            rows: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    /// Adds what each function served since the last sample to its row of
    /// the minute `now_millis` is in.
    pub fn sample(&mut self, now_millis: i64) {
        let minute = minute_of(now_millis);
        let functions = self.metrics.functions();
        let mut seen = HashSet::with_capacity(functions.len());
        for f in functions {
            seen.insert(f.function_id);
            let now = f.stats.snapshot();
            let grew = growth(&now, self.last.get(&f.function_id));
            if grew.invocations > 0 || grew.cold_starts > 0 {
                let key = (f.function_id, minute);
                self.rows.entry(key).or_default().merge(&grew);
                self.dirty.insert(key);
            }
            self.last.insert(f.function_id, now);
        }
        // Deleted functions.
        self.last.retain(|id, _| seen.contains(id));
    }

    /// Writes the rows that changed; keeps them for the next flush if the
    /// database cannot be reached.
    pub async fn flush(&mut self, now_millis: i64) {
        let current = minute_of(now_millis);
        if !self.dirty.is_empty() {
            let rows: Vec<StatsRow> = self
                .dirty
                .iter()
                .filter_map(|k| {
                    self.rows.get(k).map(|s| StatsRow {
                        function_id: k.0,
                        minute: k.1,
                        stats: s.clone(),
                    })
                })
                .collect();
            match self.store.write_stats(self.router_id, &rows).await {
                Ok(()) => self.dirty.clear(),
                Err(e) => {
                    self.metrics.stats_flush_failed();
                    tracing::warn!(error = %e, rows = rows.len(), "writing the per-minute stats failed; kept for the next flush");
                    let dirty = &mut self.dirty;
                    self.rows.retain(|k, _| {
                        let keep = k.1 >= current - KEEP_UNWRITTEN;
                        if !keep {
                            dirty.remove(k);
                        }
                        keep
                    });
                }
            }
        }
        // A past minute's row is final once written.
        let dirty = &self.dirty;
        self.rows.retain(|k, _| k.1 >= current || dirty.contains(k));
    }

    async fn prune(&self) {
        let before = now_millis() - i64::try_from(RETENTION.as_millis()).unwrap_or(i64::MAX);
        let mut deleted = 0;
        for _ in 0..PRUNE_BATCHES {
            match self.store.prune_stats(before, PRUNE_FUNCTIONS).await {
                Ok(0) => break,
                Ok(n) => deleted += n,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning old stats failed");
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::debug!(rows = deleted, "pruned old per-minute stats");
        }
    }

    /// Samples and flushes until `last_call` turns true, then flushes once more.
    pub async fn run(mut self, mut last_call: watch::Receiver<bool>) {
        let mut sample = tokio::time::interval(SAMPLE_EVERY.min(self.flush_every));
        let mut flush = tokio::time::interval(self.flush_every);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        for t in [&mut sample, &mut flush, &mut prune] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = sample.tick() => self.sample(now_millis()),
                _ = flush.tick() => {
                    self.sample(now_millis());
                    self.flush(now_millis()).await;
                }
                _ = prune.tick() => self.prune().await,
                _ = crate::server::stopped(&mut last_call) => break,
            }
        }
        self.sample(now_millis());
        if tokio::time::timeout(LAST_FLUSH, self.flush(now_millis()))
            .await
            .is_err()
        {
            tracing::warn!("the last write of the per-minute stats did not finish in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_per_bucket() {
        let mut a = MinuteStats {
            invocations: 3,
            errors: 1,
            ..Default::default()
        };
        a.latency.record_ms(1.0);
        a.latency.record_ms(1.0);
        a.latency.record_ms(9.0);
        let mut b = a.clone();
        b.invocations = 5;
        b.cold_starts = 1;
        b.latency.record_ms(9.0);
        b.latency.record_ms(100.0);
        let g = growth(&b, Some(&a));
        assert_eq!((g.invocations, g.errors, g.cold_starts), (2, 0, 1));
        assert_eq!(g.latency.total(), 2);
        assert_eq!(growth(&a, None), a);
        assert_ne!(new_router_id(), new_router_id());
        assert!(new_router_id() > 0);
    }
}
