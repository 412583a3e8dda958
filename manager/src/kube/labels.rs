//! Labels and label selectors of function objects. Names come from
//! `skiff_core::naming`; this module only decides which labels go where.

use std::collections::BTreeMap;

use skiff_core::naming::{LABEL_FUNCTION, LABEL_USER, LABEL_VERSION, MANAGED_BY, object_name};

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";

/// `app.kubernetes.io/name` of every function pod.
pub const FUNCTION_APP: &str = "skiff-function";
/// `app.kubernetes.io/name` of the router pods (k8s/router.yaml): the only
/// pods a function's NetworkPolicy lets in.
pub const ROUTER_APP: &str = "skiff-router";

pub type Labels = BTreeMap<String, String>;

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// On every object of a function.
pub fn common(user: &str, function: &str) -> Labels {
    let instance = object_name(user, function);
    labels([
        (NAME, FUNCTION_APP),
        (INSTANCE, &instance),
        (COMPONENT, "function"),
        (PART_OF, "skiff"),
        (MANAGED_BY_KEY, MANAGED_BY),
        (LABEL_USER, user),
        (LABEL_FUNCTION, function),
    ])
}

/// `common` plus the version, for the ConfigMap of one version and the pods
/// running it.
pub fn versioned(user: &str, function: &str, version: i64) -> Labels {
    let mut l = common(user, function);
    l.insert(LABEL_VERSION.to_owned(), version.to_string());
    l
}

/// Selects the function's pods. Stable across versions: a Deployment's
/// selector is immutable.
pub fn pod_selector(user: &str, function: &str) -> Labels {
    let instance = object_name(user, function);
    labels([(NAME, FUNCTION_APP), (INSTANCE, &instance)])
}

/// `labels` in API selector syntax (`k=v,k=v`).
pub fn selector(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Selects the router's pods (in the router's namespace).
pub fn router_pods() -> Labels {
    labels([(NAME, ROUTER_APP)])
}

/// Everything the manager applied, in API selector syntax.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_KEY}={MANAGED_BY}")
}

/// Every object of one function, in API selector syntax.
pub fn function_selector(user: &str, function: &str) -> String {
    format!("{MANAGED_BY_KEY}={MANAGED_BY},{LABEL_USER}={user},{LABEL_FUNCTION}={function}")
}

/// The function's code ConfigMaps except those of the versions kept.
pub fn stale_code_selector(user: &str, function: &str, keep: &[i64]) -> String {
    let kept: Vec<String> = keep.iter().map(i64::to_string).collect();
    format!(
        "{},{LABEL_VERSION} notin ({})",
        function_selector(user, function),
        kept.join(",")
    )
}

/// The (user, function) an object belongs to, read from its labels.
pub fn owner(labels: &Labels) -> Option<(String, String)> {
    Some((
        labels.get(LABEL_USER)?.clone(),
        labels.get(LABEL_FUNCTION)?.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_name_the_function_exactly() {
        assert_eq!(
            function_selector("alice", "hello"),
            "app.kubernetes.io/managed-by=skiff-manager,skiff.dev/user=alice,skiff.dev/function=hello"
        );
        assert!(
            stale_code_selector("alice", "hello", &[3, 2])
                .ends_with(",skiff.dev/version notin (3,2)")
        );
        let c = common("alice", "hello");
        assert_eq!(owner(&c), Some(("alice".into(), "hello".into())));
        // The pod selector is a subset of the labels every pod carries.
        let pods = versioned("alice", "hello", 7);
        assert!(
            pod_selector("alice", "hello")
                .iter()
                .all(|(k, v)| pods.get(k) == Some(v))
        );
        assert_eq!(pods.get(LABEL_VERSION).map(String::as_str), Some("7"));
        assert_eq!(
            selector(&pod_selector("alice", "hello")),
            format!(
                "app.kubernetes.io/instance={},app.kubernetes.io/name=skiff-function",
                object_name("alice", "hello")
            )
        );
    }

    #[test]
    fn label_values_are_valid_for_the_longest_names() {
        let user = "u".repeat(32);
        let function = "f".repeat(40);
        for (k, v) in versioned(&user, &function, i64::MAX) {
            assert!(v.len() <= 63, "{k}={v}");
            assert!(
                v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{k}={v}"
            );
        }
    }
}
