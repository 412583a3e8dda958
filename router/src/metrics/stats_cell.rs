//! One function's running totals for its owner's statistics: invocations,
//! errors, cold starts and a latency histogram over the store's fixed
//! log-scale buckets, as atomics the request path adds to. They only grow;
//! the stats sampler (`stats_flush.rs`) turns them into per-minute rows by
//! taking differences.
//!
//! What counts: every request answered for a known function is an
//! invocation, the router's own refusals (429, 503, 504, …) included, since
//! the function's callers saw them; an error is a response with a status of
//! 500 or more (the function's own 5xx and the router's 502/503/504).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use skiff_core::store::{LATENCY_BUCKETS, LatencyHistogram, MinuteStats, latency_bucket};

pub struct StatsCell {
    invocations: AtomicU64,
    errors: AtomicU64,
    cold_starts: AtomicU64,
    latency: Box<[AtomicU64]>,
}

impl Default for StatsCell {
    fn default() -> Self {
        Self {
            invocations: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
            latency: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl StatsCell {
    pub fn record(&self, status: u16, elapsed: Duration, cold: bool) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if cold {
            self.cold_starts.fetch_add(1, Ordering::Relaxed);
        }
        let i = latency_bucket(elapsed.as_secs_f64() * 1e3);
        if let Some(c) = self.latency.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The totals since this function was first seen.
    pub fn snapshot(&self) -> MinuteStats {
        let mut latency = LatencyHistogram::default();
        for (i, c) in self.latency.iter().enumerate() {
            latency.add_to_bucket(i, c.load(Ordering::Relaxed));
        }
        MinuteStats {
            invocations: self.invocations.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            cold_starts: self.cold_starts.load(Ordering::Relaxed),
            latency,
        }
    }
}
