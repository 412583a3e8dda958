//! The reconcile loop: every interval, re-apply what the database holds and
//! delete what it no longer holds. Its first pass runs at start, so a manager
//! killed half-way through a deploy converges as soon as it is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;

use super::controller::KubeRuntime;
use crate::metrics::Metrics;

pub async fn run(runtime: Arc<KubeRuntime>, every: Duration) {
    run_observed(runtime, every, None).await;
}

/// [`run`], recording each pass in `metrics` (`skiff_reconcile_*`).
pub async fn run_observed(
    runtime: Arc<KubeRuntime>,
    every: Duration,
    metrics: Option<Arc<Metrics>>,
) {
    let mut tick = tokio::time::interval(every);
    // A slow pass delays the next one instead of causing a burst.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = Instant::now();
        let report = runtime.reconcile_once().await;
        if let Some(m) = metrics.as_ref().and_then(|m| m.reconcile()) {
            m.pass(
                report.applied,
                report.deleted,
                report.failed,
                !report.errors.is_empty(),
                started.elapsed(),
            );
        }
        match report.errors.first() {
            None => tracing::debug!(
                applied = report.applied,
                deleted = report.deleted,
                "reconciled"
            ),
            Some(first) => tracing::warn!(
                applied = report.applied,
                deleted = report.deleted,
                failed = report.failed,
                first_error = %first,
                "reconcile pass had failures; retrying next pass"
            ),
        }
    }
}

/// Starts the loop on the current runtime.
pub fn spawn(runtime: Arc<KubeRuntime>) -> tokio::task::JoinHandle<()> {
    spawn_observed(runtime, None)
}

/// [`spawn`], recording each pass in `metrics`.
pub fn spawn_observed(
    runtime: Arc<KubeRuntime>,
    metrics: Option<Arc<Metrics>>,
) -> tokio::task::JoinHandle<()> {
    let every = runtime.settings().reconcile_interval();
    tokio::spawn(run_observed(runtime, every, metrics))
}
