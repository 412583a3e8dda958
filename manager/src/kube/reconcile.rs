//! The reconcile loop: every interval, re-apply what the database holds and
//! delete what it no longer holds. Its first pass runs at start, so a manager
//! killed half-way through a deploy converges as soon as it is back.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::controller::KubeRuntime;

pub async fn run(runtime: Arc<KubeRuntime>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    // A slow pass delays the next one instead of causing a burst.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let report = runtime.reconcile_once().await;
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
    let every = runtime.settings().reconcile_interval();
    tokio::spawn(run(runtime, every))
}
