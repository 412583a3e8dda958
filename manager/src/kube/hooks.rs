//! The Kubernetes runtime behind the manager's runtime seam (`crate::runtime`).

use skiff_core::names::FunctionName;
use skiff_core::store::{RuntimePhase, StoreError};
use skiff_core::time::rfc3339;

use super::controller::KubeRuntime;
use super::pod_logs::PodLogs;
use crate::functions::logs::SharedLogs;
use crate::runtime::{FunctionRuntime, RuntimeFuture, RuntimeStatus};

impl FunctionRuntime for KubeRuntime {
    fn deployed<'a>(&'a self, user: &'a str, function: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            let outcome = self.sync(user, function, true).await;
            tracing::info!(user, function, ?outcome, "applied after deploy");
        })
    }

    fn deleted<'a>(&'a self, user: &'a str, function: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            let outcome = self.sync(user, function, false).await;
            tracing::info!(user, function, ?outcome, "deleted objects after delete");
        })
    }

    fn status<'a>(
        &'a self,
        user_id: i64,
        function: &'a FunctionName,
        live_version: i64,
    ) -> RuntimeFuture<'a, Result<Option<RuntimeStatus>, StoreError>> {
        Box::pin(async move {
            let recorded = self.store().runtime_state(user_id, function).await?;
            Ok(Some(match recorded {
                Some(s) if s.version == live_version => RuntimeStatus {
                    state: s.phase.as_str().to_owned(),
                    version: s.version,
                    error: s.error,
                    updated_at: Some(rfc3339(s.updated_at)),
                },
                // Nothing recorded for the live version yet (say, the manager
                // stopped between commit and apply): the reconcile loop will.
                _ => RuntimeStatus {
                    state: RuntimePhase::Pending.as_str().to_owned(),
                    version: live_version,
                    error: None,
                    updated_at: None,
                },
            }))
        })
    }
    /// Functions' output is in their pods' logs.
    fn log_source(&self) -> Option<SharedLogs> {
        Some(std::sync::Arc::new(PodLogs::new(self.api().clone())))
    }
}
