//! Pure builders of a function's Kubernetes objects: the same input gives the
//! same objects, byte for byte, so they are tested by value and applied
//! idempotently. No I/O here (that is `kube::apply`).

mod autoscaler;
mod code;
mod config;
mod deployment;
mod network_policy;
mod secret;
mod service;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use autoscaler::autoscaler;
pub use code::code_config_map;
pub use config::{PodShape, VersionConfig};
pub use deployment::{
    CODE_DIR, CONFIG_HASH_ANNOTATION, DENO_DIR, ENV_DIR, ENV_FILE, RUN_SH, RUNTIME_UID, TMP_DIR,
    deployment,
};
pub use network_policy::{PRIVATE_V4, PRIVATE_V6, network_policy};
pub use secret::{ENV_FILE_KEY, env_secret};
pub use service::service;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
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
    /// The version's env, secrets and settings.
    pub config: &'a VersionConfig,
}

/// Every object of one function version, in the order they are applied:
/// the NetworkPolicy first so no pod ever runs unfenced, the code and the env
/// Secret before the Deployment that mounts them, the Deployment before its
/// autoscaler. No `Debug`: the Secret holds plaintext values.
#[derive(Clone, PartialEq)]
pub struct FunctionObjects {
    pub network_policy: NetworkPolicy,
    pub config_map: ConfigMap,
    pub secret: Secret,
    pub service: Service,
    pub deployment: Deployment,
    pub autoscaler: HorizontalPodAutoscaler,
}

pub fn build(settings: &KubeSettings, spec: &FunctionSpec<'_>) -> FunctionObjects {
    FunctionObjects {
        network_policy: network_policy(settings, spec),
        config_map: code_config_map(settings, spec),
        secret: env_secret(settings, spec),
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
    use std::sync::LazyLock;

    use skiff_core::fnconfig::FunctionSettings;

    use super::{FunctionSpec, VersionConfig};

    pub const SOURCE: &str = "export default () => new Response('hi');\n";

    /// No env, no secrets, no settings.
    static EMPTY: LazyLock<VersionConfig> = LazyLock::new(|| {
        VersionConfig::new(
            &[],
            FunctionSettings::default(),
            &super::config::tests::policy(),
            b"",
        )
    });

    pub fn spec() -> FunctionSpec<'static> {
        FunctionSpec {
            user: "alice",
            function: "hello",
            version: 3,
            source: SOURCE,
            module_file: "fn.js",
            config: &EMPTY,
        }
    }

    /// An env var and a secret (`s3cr3t-value`), with `settings`.
    pub fn configured_with(settings: FunctionSettings, identity: &[u8]) -> VersionConfig {
        let vars = [
            ("GREETING".to_owned(), "plain-env-value".to_owned()),
            ("API_KEY".to_owned(), "s3cr3t-value".to_owned()),
        ];
        VersionConfig::new(&vars, settings, &super::config::tests::policy(), identity)
    }

    pub fn configured() -> VersionConfig {
        configured_with(FunctionSettings::default(), b"configured")
    }

    /// The extremes the names must handle: a 32-char user, a 40-char function.
    pub fn longest() -> (String, String) {
        ("u".repeat(32), "f".repeat(40))
    }
}
