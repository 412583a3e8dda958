//! What the router counts: Prometheus metrics (`exposition.rs`, served on a
//! listener of their own by `crate::private_listener`) and the per-minute statistics its
//! owners read (`StatsCell`, turned into rows by `stats_flush.rs`).
//! The lowest layer beside `body.rs`: it imports nothing of the router.
//!
//! The request path never takes a lock here. A request resolves its
//! function's [`FunctionMetrics`] once per directory entry (cached in the
//! entry, `directory::MetricsSlot`); after that, recording is a handful of
//! relaxed atomic adds on that function's counters. The table below is
//! written only the first time a function id is seen, and read by scrapes
//! and the stats sampler.
//!
//! Label cardinality is bounded: at most `max_functions` distinct
//! (user, function) pairs get series of their own (`SKIFF_METRICS_MAX_FUNCTIONS`,
//! 2000 by default); requests to any other function are counted in the
//! series labelled `user="other",function="other"`. A deleted function's
//! series is dropped, freeing its place. The owners' statistics are kept per
//! function whatever the cap (they are bounded by the functions that exist).

mod exposition;
pub mod histogram;
mod stats_cell;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

pub use exposition::{CONTENT_TYPE, MetricsCollector};
use histogram::{AtomicHistogram, COLD_START_BOUNDS, REQUEST_BOUNDS};
pub use stats_cell::StatsCell;

/// The label values of the shared series of functions over the cap.
pub const OTHER: &str = "other";

/// Why the router answered a request to a known function itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The owner is over their requests per second (429).
    RateLimited,
    /// The function is at its concurrency limit and the wait ran out (429).
    QueueFull,
    /// One client address holds its share of the function's concurrency (429).
    ClientShare,
    /// The request body is over the limit (413).
    BodyTooLarge,
    /// The caller stopped sending its body (408).
    BodyTimeout,
    /// A malformed request (400).
    BadRequest,
    /// No instance could be started (503).
    StartFailed,
    /// The owner runs as many instances as allowed, none idle (403).
    InstanceQuota,
    /// The function did not answer in time (504).
    Timeout,
    /// The instance failed or answered garbage (502).
    BadGateway,
    /// The function was scaled to zero and did not come up while the
    /// request was held, or could not be woken (503).
    Waking,
}

impl Refusal {
    pub const ALL: [Refusal; 11] = [
        Refusal::RateLimited,
        Refusal::QueueFull,
        Refusal::ClientShare,
        Refusal::BodyTooLarge,
        Refusal::BodyTimeout,
        Refusal::BadRequest,
        Refusal::StartFailed,
        Refusal::InstanceQuota,
        Refusal::Timeout,
        Refusal::BadGateway,
        Refusal::Waking,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate_limited",
            Refusal::QueueFull => "queue_full",
            Refusal::ClientShare => "client_share",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::BadRequest => "bad_request",
            Refusal::StartFailed => "start_failed",
            Refusal::InstanceQuota => "instance_quota",
            Refusal::Timeout => "timeout",
            Refusal::BadGateway => "bad_gateway",
            Refusal::Waking => "waking",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a call to the manager's wake endpoint answered (Kubernetes, a
/// function at zero). The first three woke it (or found it up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeOutcome {
    /// The manager scaled the function up.
    Scaled,
    /// The manager joined a wake already in progress.
    Shared,
    /// The function has a pod already (starting or serving).
    AlreadyUp,
    /// The manager knows no such function (404).
    NotFound,
    /// The manager could not scale it (503 `wake_failed`), or answered
    /// anything else unexpected.
    Failed,
    /// The wake endpoint could not be reached or did not answer in time.
    Unreachable,
}

impl WakeOutcome {
    pub const ALL: [WakeOutcome; 6] = [
        WakeOutcome::Scaled,
        WakeOutcome::Shared,
        WakeOutcome::AlreadyUp,
        WakeOutcome::NotFound,
        WakeOutcome::Failed,
        WakeOutcome::Unreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WakeOutcome::Scaled => "scaled",
            WakeOutcome::Shared => "shared",
            WakeOutcome::AlreadyUp => "already_up",
            WakeOutcome::NotFound => "not_found",
            WakeOutcome::Failed => "failed",
            WakeOutcome::Unreachable => "unreachable",
        }
    }

    /// Whether the function is up or on its way up.
    pub fn woke(self) -> bool {
        matches!(
            self,
            WakeOutcome::Scaled | WakeOutcome::Shared | WakeOutcome::AlreadyUp
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Statuses are counted in a fixed array: `100..=599`.
const FIRST_STATUS: u16 = 100;
const STATUSES: usize = 500;

/// The Prometheus series of one (user, function) pair, or of all the
/// functions over the cap.
pub struct Series {
    user: String,
    function: String,
    statuses: Box<[AtomicU64]>,
    duration: AtomicHistogram,
    cold_starts: AtomicU64,
    refusals: [AtomicU64; Refusal::ALL.len()],
    start_failures: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    in_flight: AtomicI64,
}

impl Series {
    fn new(user: &str, function: &str) -> Self {
        Self {
            user: user.to_owned(),
            function: function.to_owned(),
            statuses: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
            duration: AtomicHistogram::new(REQUEST_BOUNDS),
            cold_starts: AtomicU64::new(0),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            start_failures: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
        }
    }
}

/// One function's handle: its series (its own or the shared one) and its
/// owner's statistics.
pub struct FunctionMetrics {
    pub function_id: i64,
    series: Arc<Series>,
    pub stats: StatsCell,
}

/// What one answered request was.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub status: u16,
    /// From the request's arrival to its response head.
    pub elapsed: Duration,
    /// The wait for an instance start, when the request paid one.
    pub cold: Option<Duration>,
    pub refusal: Option<Refusal>,
}

impl FunctionMetrics {
    /// Counts a request in flight until the guard is dropped.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.series.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn answered(&self, o: Outcome) {
        let s = &self.series;
        if let Some(c) = o
            .status
            .checked_sub(FIRST_STATUS)
            .and_then(|i| s.statuses.get(usize::from(i)))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
        s.duration.observe(o.elapsed);
        if o.cold.is_some() {
            s.cold_starts.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(r) = o.refusal {
            s.refusals[r.index()].fetch_add(1, Ordering::Relaxed);
        }
        self.stats.record(o.status, o.elapsed, o.cold.is_some());
    }

    pub fn add_bytes_in(&self, n: u64) {
        if n > 0 {
            self.series.bytes_in.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn add_bytes_out(&self, n: u64) {
        if n > 0 {
            self.series.bytes_out.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// An instance of this function could not be started.
    pub fn start_failed(&self) {
        self.series.start_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request in flight (see [`FunctionMetrics::in_flight`]).
pub struct InFlight(Arc<FunctionMetrics>);

impl InFlight {
    pub fn function(&self) -> &Arc<FunctionMetrics> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.series.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Instances by state, as the runtime reports them at a scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstanceCounts {
    pub starting: u64,
    pub ready: u64,
    pub draining: u64,
}

type InstanceSource = Box<dyn Fn() -> Option<InstanceCounts> + Send + Sync>;

#[derive(Default)]
struct Table {
    by_id: HashMap<i64, Arc<FunctionMetrics>>,
    /// Keyed by (user, function): a function recreated under its name (a new
    /// id) continues its series.
    series: HashMap<(String, String), Arc<Series>>,
}

pub struct Metrics {
    enabled: bool,
    max_functions: usize,
    table: RwLock<Table>,
    other: Arc<Series>,
    cold_start_duration: AtomicHistogram,
    /// Requests to no known function (404).
    unmatched: AtomicU64,
    access_log_dropped: AtomicU64,
    stats_flush_failures: AtomicU64,
    /// Calls to the manager's wake endpoint, by outcome.
    wakes: [AtomicU64; WakeOutcome::ALL.len()],
    instances: OnceLock<InstanceSource>,
}

impl Metrics {
    /// `enabled: false` records nothing per request (to measure what
    /// recording costs); the listener still answers.
    pub fn new(enabled: bool, max_functions: usize) -> Self {
        Self {
            enabled,
            max_functions,
            table: RwLock::default(),
            other: Arc::new(Series::new(OTHER, OTHER)),
            cold_start_duration: AtomicHistogram::new(COLD_START_BOUNDS),
            unmatched: AtomicU64::new(0),
            access_log_dropped: AtomicU64::new(0),
            stats_flush_failures: AtomicU64::new(0),
            wakes: std::array::from_fn(|_| AtomicU64::new(0)),
            instances: OnceLock::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Where `skiff_instances` comes from (the runtime); set once.
    pub fn set_instance_source(&self, f: InstanceSource) {
        let _ = self.instances.set(f);
    }

    /// The handle of function `function_id` (`user`/`name`), made the first
    /// time it is asked for.
    pub fn function(&self, function_id: i64, user: &str, name: &str) -> Arc<FunctionMetrics> {
        {
            let t = self.table.read().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = t.by_id.get(&function_id) {
                return f.clone();
            }
        }
        let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = t.by_id.get(&function_id) {
            return f.clone();
        }
        let key = (user.to_owned(), name.to_owned());
        let series = match t.series.get(&key) {
            Some(s) => s.clone(),
            None if t.series.len() < self.max_functions => {
                let s = Arc::new(Series::new(user, name));
                t.series.insert(key, s.clone());
                s
            }
            None => self.other.clone(),
        };
        let f = Arc::new(FunctionMetrics {
            function_id,
            series,
            stats: StatsCell::default(),
        });
        t.by_id.insert(function_id, f.clone());
        f
    }

    /// A function was deleted: its handle and its series go.
    pub fn forget(&self, function_id: i64, user: &str, name: &str) {
        let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
        t.by_id.remove(&function_id);
        let key = (user.to_owned(), name.to_owned());
        // Unless a function of the same name (another id) still uses it.
        if !t
            .by_id
            .values()
            .any(|f| f.series.user == key.0 && f.series.function == key.1)
        {
            t.series.remove(&key);
        }
    }

    /// Every function's handle (for the stats sampler).
    pub fn functions(&self) -> Vec<Arc<FunctionMetrics>> {
        let t = self.table.read().unwrap_or_else(|p| p.into_inner());
        t.by_id.values().cloned().collect()
    }

    fn all_series(&self) -> Vec<Arc<Series>> {
        let t = self.table.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Arc<Series>> = t.series.values().cloned().collect();
        all.sort_by(|a, b| (&a.user, &a.function).cmp(&(&b.user, &b.function)));
        all.push(self.other.clone());
        all
    }

    pub fn cold_start(&self, d: Duration) {
        self.cold_start_duration.observe(d);
    }

    pub fn unmatched(&self) {
        self.unmatched.fetch_add(1, Ordering::Relaxed);
    }

    pub fn access_log_dropped(&self) {
        self.access_log_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats_flush_failed(&self) {
        self.stats_flush_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A call to the manager's wake endpoint answered `o` (counted whether
    /// or not per-request metrics are on: a wake is rare and matters).
    pub fn wake(&self, o: WakeOutcome) {
        self.wakes[o.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything above.
    pub fn render(&self) -> String {
        exposition::render(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ms: u64) -> Outcome {
        Outcome {
            status: 200,
            elapsed: Duration::from_millis(ms),
            cold: None,
            refusal: None,
        }
    }

    #[test]
    fn functions_over_the_cap_share_the_other_series() {
        let m = Metrics::new(true, 2);
        let a = m.function(1, "alice", "a");
        let b = m.function(2, "alice", "b");
        let c = m.function(3, "bob", "c");
        let d = m.function(4, "bob", "d");
        assert!(
            Arc::ptr_eq(&a, &m.function(1, "alice", "a")),
            "resolved once"
        );
        assert!(!Arc::ptr_eq(&a.series, &b.series));
        assert!(Arc::ptr_eq(&c.series, &m.other));
        assert!(Arc::ptr_eq(&d.series, &m.other));
        c.answered(ok(1));
        d.answered(ok(1));
        a.answered(ok(1));
        let text = m.render();
        assert!(
            text.contains(r#"skiff_requests_total{user="other",function="other",status="200"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"skiff_requests_total{user="alice",function="a",status="200"} 1"#));
        assert!(!text.contains(r#"user="bob""#), "{text}");
        // A deleted function frees its place.
        m.forget(1, "alice", "a");
        let e = m.function(5, "carol", "e");
        assert!(!Arc::ptr_eq(&e.series, &m.other));
        // The owners' statistics are per function, over the cap too.
        assert_eq!(c.stats.snapshot().invocations, 1);
        assert_eq!(d.stats.snapshot().invocations, 1);
    }

    #[test]
    fn a_recreated_function_continues_its_series() {
        let m = Metrics::new(true, 10);
        let old = m.function(1, "alice", "a");
        let new = m.function(2, "alice", "a");
        assert!(Arc::ptr_eq(&old.series, &new.series));
        m.forget(1, "alice", "a");
        assert!(Arc::ptr_eq(
            &new.series,
            &m.function(2, "alice", "a").series
        ));
        new.answered(ok(3));
        assert!(m.render().contains(r#"function="a",status="200"} 1"#));
    }

    #[test]
    fn in_flight_follows_the_guards() {
        let m = Metrics::new(true, 10);
        let f = m.function(1, "alice", "a");
        let g1 = f.in_flight();
        let g2 = f.in_flight();
        assert!(
            m.render()
                .contains(r#"skiff_in_flight_requests{user="alice",function="a"} 2"#)
        );
        drop(g1);
        drop(g2);
        assert!(
            m.render()
                .contains(r#"skiff_in_flight_requests{user="alice",function="a"} 0"#)
        );
    }
}
