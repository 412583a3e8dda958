//! The ConfigMap holding one version's source: a new version is a new
//! ConfigMap, and the Deployment switches to it.
//!
//! Deliberately not `immutable`: if the objects of a deleted function could
//! not be removed (API down) and a function of the same name is created
//! again, its `-v1` must overwrite the leftover, or it would never converge.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use skiff_core::naming::code_config_map_name;

use super::{FunctionSpec, metadata};
use crate::kube::labels;
use crate::kube::settings::KubeSettings;

pub fn code_config_map(settings: &KubeSettings, spec: &FunctionSpec<'_>) -> ConfigMap {
    ConfigMap {
        metadata: metadata(
            settings,
            code_config_map_name(spec.user, spec.function, spec.version),
            labels::versioned(spec.user, spec.function, spec.version),
        ),
        data: Some(BTreeMap::from([(
            spec.module_file.to_owned(),
            spec.source.to_owned(),
        )])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::objects::test_support::{SOURCE, longest, spec};

    #[test]
    fn holds_the_source_under_a_versioned_name() {
        let cm = code_config_map(&KubeSettings::default(), &spec());
        let name = cm.metadata.name.clone().unwrap_or_default();
        assert!(
            name.starts_with("fn-alice-hello-") && name.ends_with("-v3"),
            "{name}"
        );
        assert_eq!(cm.metadata.namespace.as_deref(), Some("skiff-functions"));
        assert_eq!(cm.data.unwrap()["fn.js"], SOURCE);
        assert_eq!(cm.immutable, None, "a leftover must stay overwritable");
        let l = cm.metadata.labels.unwrap();
        assert_eq!(l["skiff.dev/version"], "3");
        assert_eq!(l["skiff.dev/user"], "alice");
        assert_eq!(l["skiff.dev/function"], "hello");
    }

    #[test]
    fn names_fit_for_the_longest_names() {
        let (user, function) = longest();
        let mut s = spec();
        s.user = &user;
        s.function = &function;
        s.version = i64::MAX;
        let name = code_config_map(&KubeSettings::default(), &s)
            .metadata
            .name
            .unwrap();
        assert!(skiff_core::naming::is_dns_label(&name), "{name}");
    }
}
