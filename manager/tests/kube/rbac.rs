//! The manager's Role in k8s/ grants exactly the calls its code makes: the
//! calls observed across every kind of operation equal `API_CALLS`, and the
//! Role's rules expand to exactly `rbac_grants()` (derived from that list).

use std::collections::BTreeSet;

// YAML read into JSON values: the manifests use only what JSON can hold.
use serde_json::Value;
use skiff_manager::kube::api_calls::{API_CALLS, rbac_grants};
use skiff_testkit::TestBackend;

use skiff_manager::runtime::FunctionRuntime;

use skiff_manager::kube::KubeSettings;

use crate::harness::{HELLO_V1, Kind, Reply, env, settings};

const RBAC_YAML: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/rbac.yaml"));

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list, got {v:?}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// (apiGroup, resource, verb) granted by the Role `name` in `namespace`.
fn role_grants(name: &str, namespace: &str) -> BTreeSet<(String, String, String)> {
    let mut roles = Vec::new();
    for v in serde_saphyr::from_multiple::<Value>(RBAC_YAML).unwrap() {
        if v["kind"] == "Role"
            && v["metadata"]["name"] == name
            && v["metadata"]["namespace"] == namespace
        {
            roles.push(v);
        }
    }
    assert_eq!(
        roles.len(),
        1,
        "exactly one Role {namespace}/{name} in k8s/rbac.yaml"
    );
    let mut grants = BTreeSet::new();
    for rule in roles[0]["rules"].as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none());
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    assert!(
                        ![&group, &resource, &verb].iter().any(|s| s.contains('*')),
                        "no wildcards"
                    );
                    grants.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    grants
}

#[test]
fn the_role_grants_exactly_what_the_code_calls() {
    let granted = role_grants("skiff-manager", "skiff-functions");
    let needed = rbac_grants();
    let extra: Vec<_> = granted.difference(&needed).collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "Role grants too much: {extra:?}; too little: {missing:?}"
    );
}

#[test]
fn the_manager_has_no_cluster_wide_grant() {
    for v in serde_saphyr::from_multiple::<Value>(RBAC_YAML).unwrap() {
        let kind = v["kind"].as_str().unwrap_or_default();
        assert!(
            kind != "ClusterRole" && kind != "ClusterRoleBinding",
            "{kind}"
        );
        if kind == "RoleBinding" {
            assert_eq!(v["metadata"]["namespace"], "skiff-functions");
            assert_eq!(v["roleRef"]["kind"], "Role");
            assert_eq!(v["roleRef"]["name"], "skiff-manager");
            assert_eq!(v["subjects"][0]["name"], "skiff-manager");
            assert_eq!(v["subjects"][0]["namespace"], "skiff");
        }
    }
}

/// Create, update with a prune, a reconcile pass with an orphan, a delete,
/// reading a function's logs, the pod watch and scaling an idle function to
/// zero together make every call in `API_CALLS`, and nothing else (the
/// fake API panics on any unlisted call).
#[tokio::test]
async fn every_listed_call_is_made_by_the_code() {
    let idle = KubeSettings {
        idle_secs: 600,
        ..settings()
    };
    let mut env = env(TestBackend::Sqlite, idle).await;
    env.store_version("hello", HELLO_V1).await;
    let task = env.sync("hello", true);
    env.api.expect_version("alice", "hello", 1).await;
    task.await.unwrap();

    let runtime = env.runtime.clone();
    let pass = tokio::spawn(async move { runtime.reconcile_once().await });
    let both = vec![
        ("alice".to_owned(), "hello".to_owned()),
        ("alice".to_owned(), "old".to_owned()),
    ];
    for kind in [
        Kind::Deployment,
        Kind::Service,
        Kind::Autoscaler,
        Kind::NetworkPolicy,
        Kind::ConfigMap,
    ] {
        env.api.expect_list(kind, both.clone()).await;
    }
    env.api.expect_version("alice", "hello", 1).await;
    env.api.expect_delete_all("alice", "old", false).await;
    pass.await.unwrap();

    // Reading a function's output: its pods, then each pod's log.
    let logs = env.runtime.log_source().unwrap();
    let read = tokio::spawn(async move {
        let (user, name) = (
            skiff_core::names::UserName::parse("alice").unwrap(),
            skiff_core::names::FunctionName::parse("hello").unwrap(),
        );
        let function = skiff_manager::functions::logs::LoggedFunction {
            id: 1,
            user: &user,
            name: &name,
        };
        logs.tail(function, 10).await.map(|_| ())
    });
    env.api.answer(Reply::Pods(vec!["hello-a".into()])).await;
    env.api
        .answer(Reply::Text(200, "2026-01-01T00:00:00Z hi\n".into()))
        .await;
    read.await.unwrap().unwrap();

    // The pod watch behind each function's runtime state: a list, a watch.
    let watch = skiff_manager::kube::state_watch::spawn(env.runtime.clone());
    env.api.expect_pod_listing(Vec::new()).await;
    let _held = env.api.expect_pod_watch().await;
    watch.abort();

    // Ten minutes and a second later, nobody having called it: scaled to 0.
    let runtime = env.runtime.clone();
    let later = skiff_core::time::now_millis() + 601_000;
    let scale = tokio::spawn(async move {
        let mut report = skiff_manager::kube::ReconcileReport::default();
        runtime.scale_idle(later, &mut report).await;
        report
    });
    env.api.expect_scale("hello", 0, None).await;
    assert_eq!(scale.await.unwrap().scaled_to_zero, 1);

    let listed: BTreeSet<_> = API_CALLS.iter().copied().collect();
    assert_eq!(env.api.calls(), listed);
}
