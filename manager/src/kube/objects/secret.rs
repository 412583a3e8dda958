//! The function's Secret: one key, `env.json`, the JSON object of the live
//! version's env and opened secrets, which the runtime reads from a file
//! (`--env-file`). One per function, re-applied for each live version.
//!
//! A file, not container `env:`: values never enter the process's exec
//! environment (so no name can reach the loader) nor `kubectl describe`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use skiff_core::naming::env_secret_name;

use super::{FunctionSpec, metadata};
use crate::kube::labels;
use crate::kube::settings::KubeSettings;

/// The Secret's one key, and the file's name in the mounted volume.
pub const ENV_FILE_KEY: &str = "env.json";

pub fn env_secret(settings: &KubeSettings, spec: &FunctionSpec<'_>) -> Secret {
    Secret {
        metadata: metadata(
            settings,
            env_secret_name(spec.user, spec.function),
            labels::common(spec.user, spec.function),
        ),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            ENV_FILE_KEY.to_owned(),
            ByteString(spec.config.env_json().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::objects::test_support::{configured, longest, spec};

    #[test]
    fn holds_exactly_the_env_file() {
        let config = configured();
        let s = env_secret(
            &KubeSettings::default(),
            &FunctionSpec {
                config: &config,
                ..spec()
            },
        );
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(s.string_data, None);
        let data = s.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), [ENV_FILE_KEY]);
        let file: serde_json::Value = serde_json::from_slice(&data[ENV_FILE_KEY].0).unwrap();
        assert_eq!(
            file,
            serde_json::json!({"GREETING": "plain-env-value", "API_KEY": "s3cr3t-value"})
        );
        let name = s.metadata.name.unwrap();
        assert!(name.starts_with("fn-alice-hello-") && name.ends_with("-env"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("skiff-functions"));
        let l = s.metadata.labels.unwrap();
        assert_eq!(l["skiff.dev/user"], "alice");
        assert_eq!(l["app.kubernetes.io/managed-by"], "skiff-manager");
        // Per function, not per version: a new version updates it in place.
        assert!(!l.contains_key("skiff.dev/version"));
        // The API carries data base64-encoded.
        let json = serde_json::to_value(env_secret(&KubeSettings::default(), &spec())).unwrap();
        assert_eq!(json["data"]["env.json"], "e30=", "{{}} in base64");
        assert_eq!(
            (json["apiVersion"].as_str(), json["kind"].as_str()),
            (Some("v1"), Some("Secret"))
        );
    }

    #[test]
    fn a_function_with_no_env_still_gets_an_empty_object() {
        let s = env_secret(&KubeSettings::default(), &spec());
        assert_eq!(s.data.unwrap()[ENV_FILE_KEY].0, b"{}");
    }

    #[test]
    fn names_fit_for_the_longest_names() {
        let (user, function) = longest();
        let s = FunctionSpec {
            user: &user,
            function: &function,
            ..spec()
        };
        let name = env_secret(&KubeSettings::default(), &s)
            .metadata
            .name
            .unwrap();
        assert!(skiff_core::naming::is_dns_label(&name), "{name}");
    }
}
