//! Every Kubernetes API call the manager makes, as one list. The I/O module
//! (`apply`) refuses any call missing here, and a test checks the RBAC Role in
//! k8s/ grants exactly the verbs this list expands to: the Role can never drift
//! from the code, in either direction.

use std::collections::BTreeSet;

use kube::Resource;

use super::errors::KubeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// Server-side apply: a PATCH that creates the object when it is missing.
    Apply,
    List,
    /// Reading one object (here only a pod's log, a subresource).
    Get,
    Delete,
    DeleteCollection,
    /// A merge patch (here only a Deployment's `scale` subresource).
    Patch,
    /// A list followed by a watch of the collection (kube's `watcher`).
    Watch,
}

impl Verb {
    /// The RBAC verbs a call needs. Apply is a `patch`, and Kubernetes also
    /// checks `create` when the apply creates the object.
    pub fn rbac_verbs(self) -> &'static [&'static str] {
        match self {
            Self::Apply => &["create", "patch"],
            Self::List => &["list"],
            Self::Get => &["get"],
            Self::Delete => &["delete"],
            Self::DeleteCollection => &["deletecollection"],
            Self::Patch => &["patch"],
            Self::Watch => &["watch"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiCall {
    /// API group; "" is the core group.
    pub group: &'static str,
    /// Plural resource name, as in a URL and an RBAC rule; a subresource is
    /// `resource/subresource` (`pods/log`), as RBAC names it.
    pub resource: &'static str,
    pub verb: Verb,
}

const fn call(group: &'static str, resource: &'static str, verb: Verb) -> ApiCall {
    ApiCall {
        group,
        resource,
        verb,
    }
}

/// Apply and list every kind; delete the single objects by name and a
/// function's code ConfigMaps (one per version) by label; for
/// `GET /func/<name>/logs`, list a function's pods and read their logs;
/// watch the pods (a list, then a watch) for each function's runtime state;
/// patch a Deployment's `scale` (to zero when idle, to one on a wake).
/// Secrets (one per function, its env file) are only applied and deleted by
/// name: never listed, watched or read back, so the manager's token cannot
/// read other Secrets of the namespace.
pub const API_CALLS: &[ApiCall] = &[
    call("", "configmaps", Verb::Apply),
    call("", "configmaps", Verb::List),
    call("", "configmaps", Verb::DeleteCollection),
    call("", "secrets", Verb::Apply),
    call("", "secrets", Verb::Delete),
    call("", "services", Verb::Apply),
    call("", "services", Verb::List),
    call("", "services", Verb::Delete),
    call("apps", "deployments", Verb::Apply),
    call("apps", "deployments", Verb::List),
    call("apps", "deployments", Verb::Delete),
    call("apps", "deployments/scale", Verb::Patch),
    call("autoscaling", "horizontalpodautoscalers", Verb::Apply),
    call("autoscaling", "horizontalpodautoscalers", Verb::List),
    call("autoscaling", "horizontalpodautoscalers", Verb::Delete),
    call("networking.k8s.io", "networkpolicies", Verb::Apply),
    call("networking.k8s.io", "networkpolicies", Verb::List),
    call("networking.k8s.io", "networkpolicies", Verb::Delete),
    call("", "pods", Verb::List),
    call("", "pods", Verb::Watch),
    call("", "pods/log", Verb::Get),
];

/// The (group, resource) of a typed Kubernetes object.
pub fn resource_of<K: Resource<DynamicType = ()>>() -> (String, String) {
    (K::group(&()).into_owned(), K::plural(&()).into_owned())
}

/// Ok when `verb` on `K` is in [`API_CALLS`].
pub fn permitted<K: Resource<DynamicType = ()>>(verb: Verb) -> Result<(), KubeError> {
    let (group, resource) = resource_of::<K>();
    listed(&group, &resource, verb)
}

/// Ok when `verb` on the subresource `sub` of `K` (`pods` `log`) is in [`API_CALLS`].
pub fn permitted_sub<K: Resource<DynamicType = ()>>(
    sub: &str,
    verb: Verb,
) -> Result<(), KubeError> {
    let (group, resource) = resource_of::<K>();
    listed(&group, &format!("{resource}/{sub}"), verb)
}

fn listed(group: &str, resource: &str, verb: Verb) -> Result<(), KubeError> {
    if API_CALLS
        .iter()
        .any(|c| c.group == group && c.resource == resource && c.verb == verb)
    {
        Ok(())
    } else {
        Err(KubeError::NotListed {
            call: format!("{verb:?} {resource}.{group}"),
        })
    }
}

/// (apiGroup, resource, RBAC verb) triples the manager's Role must grant.
pub fn rbac_grants() -> BTreeSet<(String, String, String)> {
    API_CALLS
        .iter()
        .flat_map(|c| {
            c.verb
                .rbac_verbs()
                .iter()
                .map(|v| (c.group.to_owned(), c.resource.to_owned(), (*v).to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
    use k8s_openapi::api::networking::v1::NetworkPolicy;

    use super::*;

    #[test]
    fn every_applied_kind_is_listed_with_its_real_resource_name() {
        for (group, resource) in [
            resource_of::<ConfigMap>(),
            resource_of::<Secret>(),
            resource_of::<Service>(),
            resource_of::<Deployment>(),
            resource_of::<HorizontalPodAutoscaler>(),
            resource_of::<NetworkPolicy>(),
        ] {
            assert!(
                API_CALLS
                    .iter()
                    .any(|c| c.group == group && c.resource == resource),
                "{group}/{resource}"
            );
        }
        assert!(permitted::<Deployment>(Verb::Apply).is_ok());
        assert!(permitted::<ConfigMap>(Verb::DeleteCollection).is_ok());
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(permitted::<Secret>(Verb::List).is_err());
        assert!(permitted::<Secret>(Verb::Watch).is_err());
        assert!(permitted::<Pod>(Verb::Watch).is_ok());
        assert!(permitted::<Secret>(Verb::Get).is_err());
        assert!(permitted::<Secret>(Verb::DeleteCollection).is_err());
        assert!(permitted::<Secret>(Verb::Apply).is_ok());
        assert!(permitted::<Secret>(Verb::Delete).is_ok());
        assert!(permitted::<Pod>(Verb::Delete).is_err());
        assert!(permitted::<Pod>(Verb::Get).is_err());
        assert!(permitted_sub::<Pod>("exec", Verb::Get).is_err());
        assert!(permitted_sub::<Pod>("log", Verb::Get).is_ok());
        assert!(permitted::<ConfigMap>(Verb::Delete).is_err());
        assert!(permitted::<Deployment>(Verb::DeleteCollection).is_err());
        // Replicas are patched only through `scale`, never the Deployment.
        assert!(permitted_sub::<Deployment>("scale", Verb::Patch).is_ok());
        assert!(permitted::<Deployment>(Verb::Patch).is_err());
        assert!(permitted_sub::<Deployment>("scale", Verb::Get).is_err());
    }

    #[test]
    fn apply_needs_create_and_patch() {
        let grants = rbac_grants();
        assert!(grants.contains(&("apps".into(), "deployments".into(), "create".into())));
        assert!(grants.contains(&("apps".into(), "deployments".into(), "patch".into())));
        assert!(!grants.iter().any(|(_, _, v)| v == "update"));
        // `watch` only on pods (each function's runtime state); never on
        // Secrets.
        assert!(
            grants
                .iter()
                .filter(|(_, _, v)| v == "watch")
                .all(|(g, r, _)| g.is_empty() && r == "pods")
        );
        // `get` only on pods' logs: no object is read whole.
        assert!(
            grants
                .iter()
                .filter(|(_, _, v)| v == "get")
                .all(|(g, r, _)| g.is_empty() && r == "pods/log")
        );
    }
}
