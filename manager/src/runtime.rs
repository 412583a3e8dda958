//! The seam between the function API and where functions run. After the store
//! committed a deploy or a delete, the handlers tell the runtime; the runtime
//! also reports its per-function state for `GET /func/<name>`.
//!
//! `AppState::runtime` is `None` for the process runtime: there the router
//! starts instances on demand and the manager has nothing to do, except tell
//! routers of changes when `SKIFF_ROUTER_NOTIFY` names them
//! (`router_notify::RouterNotifier`). `SKIFF_RUNTIME=kubernetes` installs
//! `kube::KubeRuntime`.
//!
//! A runtime never fails a deploy: the version is stored, the database is the
//! desired state, and the runtime records its own errors and retries them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use skiff_core::names::FunctionName;
use skiff_core::store::StoreError;
use utoipa::ToSchema;

pub type RuntimeFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the function's instances stand, as `GET /func/<name>` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RuntimeStatus {
    /// `pending` (being applied), `ready` (applied) or `error` (retried)
    pub state: String,
    /// The version this state is about
    pub version: i64,
    /// Why the last attempt failed, when `state` is `error`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the state was recorded (RFC 3339), absent before the first attempt
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

pub trait FunctionRuntime: Send + Sync {
    /// A new version of `user`/`function` was committed.
    fn deployed<'a>(&'a self, user: &'a str, function: &'a str) -> RuntimeFuture<'a, ()>;

    /// `user`/`function` was deleted.
    fn deleted<'a>(&'a self, user: &'a str, function: &'a str) -> RuntimeFuture<'a, ()>;

    /// The state of a function whose live version is `live_version`.
    fn status<'a>(
        &'a self,
        user_id: i64,
        function: &'a FunctionName,
        live_version: i64,
    ) -> RuntimeFuture<'a, Result<Option<RuntimeStatus>, StoreError>>;

    /// Where this runtime keeps functions' output, when not in the data dir's
    /// files (which the process runtime's router writes).
    fn log_source(&self) -> Option<crate::functions::logs::SharedLogs> {
        None
    }
}

pub type SharedRuntime = Arc<dyn FunctionRuntime>;

enum Event {
    Deployed,
    Deleted,
}

/// Tells the runtime (if any) on its own task, so a client hanging up cannot
/// cancel an apply half-way, and waits for it so the answer follows the apply.
async fn notify(runtime: Option<&SharedRuntime>, event: Event, user: &str, function: &str) {
    let Some(runtime) = runtime.cloned() else {
        return;
    };
    let (user, function) = (user.to_owned(), function.to_owned());
    let task = tokio::spawn(async move {
        match event {
            Event::Deployed => runtime.deployed(&user, &function).await,
            Event::Deleted => runtime.deleted(&user, &function).await,
        }
    });
    if let Err(e) = task.await {
        tracing::error!(error = %e, "the runtime notification task failed");
    }
}

pub async fn after_deploy(runtime: Option<&SharedRuntime>, user: &str, function: &str) {
    notify(runtime, Event::Deployed, user, function).await;
}

pub async fn after_delete(runtime: Option<&SharedRuntime>, user: &str, function: &str) {
    notify(runtime, Event::Deleted, user, function).await;
}

/// The runtime `config` asks for: for the process runtime, `None`, or the
/// routers to tell of each change (`SKIFF_ROUTER_NOTIFY`); for Kubernetes, a
/// connected runtime with its reconcile loop started.
pub async fn from_config(
    config: &crate::config::ManagerConfig,
    store: &skiff_core::store::Store,
    metrics: &Arc<crate::metrics::Metrics>,
) -> anyhow::Result<Option<SharedRuntime>> {
    if config.runtime != crate::config::RuntimeKind::Kubernetes {
        if config.router_notify.0.is_empty() {
            return Ok(None);
        }
        let notifier = crate::router_notify::RouterNotifier::new(&config.router_notify);
        return Ok(Some(Arc::new(notifier)));
    }
    kubernetes(config, store, metrics).await.map(Some)
}

#[cfg(feature = "kubernetes")]
async fn kubernetes(
    config: &crate::config::ManagerConfig,
    store: &skiff_core::store::Store,
    metrics: &Arc<crate::metrics::Metrics>,
) -> anyhow::Result<SharedRuntime> {
    // The key opens each version's secrets into its pod Secret; the policy
    // turns its settings into resources and replica bounds.
    let runtime = Arc::new(
        crate::kube::KubeRuntime::connect(store.clone(), config.kubernetes.clone())
            .await?
            .with_function_config(Some(config.secrets_key.clone()), config.policy.clone()),
    );
    tracing::info!(
        namespace = %config.kubernetes.namespace,
        every_secs = config.kubernetes.reconcile_secs,
        "Kubernetes runtime: reconciling functions"
    );
    crate::kube::reconcile::spawn_observed(runtime.clone(), Some(metrics.clone()));
    crate::kube::state_watch::spawn(runtime.clone());
    if let Some(addr) = config.kubernetes.wake_listen {
        let (server, bound) = crate::kube::wake_listener::serve(addr, runtime.clone())?;
        tracing::info!(%bound, "wake endpoint at http://{bound}/wake/<user>/<function>");
        tokio::spawn(server);
    }
    Ok(runtime)
}

#[cfg(not(feature = "kubernetes"))]
async fn kubernetes(
    _config: &crate::config::ManagerConfig,
    _store: &skiff_core::store::Store,
    _metrics: &Arc<crate::metrics::Metrics>,
) -> anyhow::Result<SharedRuntime> {
    anyhow::bail!(
        "SKIFF_RUNTIME=kubernetes: this build has no Kubernetes runtime (the `kubernetes` feature)"
    )
}
