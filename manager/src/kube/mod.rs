//! The Kubernetes runtime (`SKIFF_RUNTIME=kubernetes`): per function, a
//! NetworkPolicy, a code ConfigMap per version, a Service, a Deployment of the
//! client-runtime image and a HorizontalPodAutoscaler, kept equal to the
//! database by server-side apply and a reconcile loop.
//!
//! - `settings`, `labels`, `deny_net`, `objects`: pure, tested by value;
//!   names come from `skiff_core::naming`.
//! - `api_calls`: the one list of API calls (and so of RBAC grants).
//! - `apply`: the only module doing Kubernetes I/O.
//! - `controller`, `reconcile`, `hooks`: when to apply, state in the database.
//! - `state_watch` (the pod watch) and `observed` (pure): each function's
//!   runtime state from its pods.
//! - `pod_logs`: functions' output, read from their pods.
//! - `idle` (pure): when an idle function is scaled to zero (the reconcile
//!   loop does it, through the Deployment's `scale` subresource).
//! - `render`: `skiff-manager render`.
//! - `wake_listener`: `POST /wake/<user>/<function>` for the routers, on a
//!   private listener.
//!
//! All but `settings` (plain flags) build only with the `kubernetes` feature
//! (on by default; the CLI's `skiff dev` leaves it off).

#[cfg(feature = "kubernetes")]
pub mod api_calls;
#[cfg(feature = "kubernetes")]
pub mod apply;
#[cfg(feature = "kubernetes")]
pub mod controller;
#[cfg(feature = "kubernetes")]
pub mod deny_net;
#[cfg(feature = "kubernetes")]
pub mod errors;
#[cfg(feature = "kubernetes")]
mod hooks;
#[cfg(feature = "kubernetes")]
pub mod idle;
#[cfg(feature = "kubernetes")]
pub mod labels;
#[cfg(feature = "kubernetes")]
mod locks;
#[cfg(feature = "kubernetes")]
pub mod objects;
#[cfg(feature = "kubernetes")]
pub mod observed;
#[cfg(feature = "kubernetes")]
pub mod pod_logs;
#[cfg(feature = "kubernetes")]
pub mod reconcile;
#[cfg(feature = "kubernetes")]
pub mod render;
pub mod settings;
#[cfg(feature = "kubernetes")]
pub mod state_watch;
#[cfg(feature = "kubernetes")]
pub mod wake_listener;

#[cfg(feature = "kubernetes")]
pub use controller::{KubeRuntime, ReconcileReport, SyncOutcome, WakeError, WakeOutcome};
pub use settings::KubeSettings;
