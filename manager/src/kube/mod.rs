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
//! - `render`: `skiff-manager render`.

pub mod api_calls;
pub mod apply;
pub mod controller;
pub mod deny_net;
pub mod errors;
mod hooks;
pub mod labels;
mod locks;
pub mod objects;
pub mod reconcile;
pub mod render;
pub mod settings;

pub use controller::{KubeRuntime, ReconcileReport, SyncOutcome};
pub use settings::KubeSettings;
