//! Pure builders of a function's Kubernetes objects: the same input gives the
//! same objects, byte for byte, so they are tested by value and applied
//! idempotently. No I/O here (that is `kube::apply`).

mod autoscaler;
mod code;
mod deployment;
mod network_policy;
mod service;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use autoscaler::autoscaler;
pub use code::code_config_map;
pub use deployment::{CODE_DIR, DENO_DIR, RUN_SH, RUNTIME_UID, TMP_DIR, deployment};
pub use network_policy::{PRIVATE_V4, PRIVATE_V6, network_policy};
pub use service::service;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::labels::{self, Labels};
use super::settings::KubeSettings;

/// What a function's objects are built from: one version of one function.
#[derive(Debug, Clone, Copy)]
pub struct FunctionSpec<'a> {
    pub user: &'a str,
    pub function: &'a str,
    pub version: i64,
    /// The module the runtime serves: the version's artifact (JavaScript),
    /// or the source of a version stored before artifacts existed.
    pub source: &'a str,
    /// Its file name in the code volume (`fn.js` or `fn.ts`, which tells
    /// Deno the language).
    pub module_file: &'a str,
}

/// Every object of one function version, in the order they are applied:
/// the NetworkPolicy first so no pod ever runs unfenced, the code before the
/// Deployment that mounts it, the Deployment before its autoscaler.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionObjects {
    pub network_policy: NetworkPolicy,
    pub config_map: ConfigMap,
    pub service: Service,
    pub deployment: Deployment,
    pub autoscaler: HorizontalPodAutoscaler,
}

pub fn build(settings: &KubeSettings, spec: &FunctionSpec<'_>) -> FunctionObjects {
    FunctionObjects {
        network_policy: network_policy(settings, spec),
        config_map: code_config_map(settings, spec),
        service: service(settings, spec),
        deployment: deployment(settings, spec),
        autoscaler: autoscaler(settings, spec),
    }
}

/// Metadata of a namespaced object of this function.
fn metadata(settings: &KubeSettings, name: String, labels: Labels) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(settings.namespace.clone()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

fn common_metadata(settings: &KubeSettings, spec: &FunctionSpec<'_>) -> ObjectMeta {
    metadata(
        settings,
        skiff_core::naming::object_name(spec.user, spec.function),
        labels::common(spec.user, spec.function),
    )
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::FunctionSpec;

    pub const SOURCE: &str = "export default () => new Response('hi');\n";

    pub fn spec() -> FunctionSpec<'static> {
        FunctionSpec {
            user: "alice",
            function: "hello",
            version: 3,
            source: SOURCE,
            module_file: "fn.js",
        }
    }

    /// The extremes the names must handle: a 32-char user, a 40-char function.
    pub fn longest() -> (String, String) {
        ("u".repeat(32), "f".repeat(40))
    }
}
