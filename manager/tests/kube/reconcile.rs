//! The reconcile loop: the database is the desired state. A missing object is
//! put back, objects of functions that are gone are deleted, and a deploy the
//! manager never applied (killed after the commit) converges.

use std::sync::Arc;
use std::time::Duration;

use skiff_core::names::FunctionName;
use skiff_core::naming::object_name;
use skiff_core::store::RuntimePhase;
use skiff_manager::kube::{KubeSettings, ReconcileReport, reconcile};
use skiff_manager::metrics::Metrics;
use skiff_manager::runtime::FunctionRuntime;
use skiff_testkit::TestBackend;

use crate::harness::{Env, HELLO_V1, HELLO_V2, Kind, Reply, env, settings};

skiff_testkit::on_both_backends!(
    a_missing_deployment_is_repaired,
    objects_of_deleted_functions_are_removed,
    a_deploy_never_applied_converges_on_the_next_pass,
);

fn alice(f: &str) -> (String, String) {
    ("alice".to_owned(), f.to_owned())
}

/// Answers the five listings of one pass; `deployments` is what the
/// Deployment listing holds, every other kind holds `others`.
async fn expect_listings(
    env: &mut Env,
    deployments: Vec<(String, String)>,
    others: Vec<(String, String)>,
) {
    env.api.expect_list(Kind::Deployment, deployments).await;
    for kind in [
        Kind::Service,
        Kind::Autoscaler,
        Kind::NetworkPolicy,
        Kind::ConfigMap,
    ] {
        env.api.expect_list(kind, others.clone()).await;
    }
}

fn pass(env: &Env) -> tokio::task::JoinHandle<ReconcileReport> {
    let runtime = env.runtime.clone();
    tokio::spawn(async move { runtime.reconcile_once().await })
}

async fn applied_once(env: &mut Env) {
    let task = env.sync("hello", true);
    env.api.expect_version("alice", "hello", 1).await;
    task.await.unwrap();
}

async fn a_missing_deployment_is_repaired(b: TestBackend) {
    let mut env = env(b, settings()).await;
    env.store_version("hello", HELLO_V1).await;
    applied_once(&mut env).await;

    // Someone ran `kubectl delete deploy`: the listing has no Deployment.
    let task = pass(&env);
    expect_listings(&mut env, vec![], vec![alice("hello")]).await;
    let name = object_name("alice", "hello");
    env.api
        .expect_policy_and_code("alice", "hello", 1, Reply::Ok)
        .await;
    env.api.expect_apply(Kind::Service, &name, Reply::Ok).await;
    // The Deployment is created again (201), whole, with its code mounted.
    let deploy = env
        .api
        .expect_apply(Kind::Deployment, &name, Reply::Created)
        .await;
    assert_eq!(
        deploy.body["spec"]["template"]["metadata"]["labels"]["skiff.dev/version"],
        "1"
    );
    assert!(deploy.body["spec"].get("replicas").is_none());
    env.api
        .expect_apply(Kind::Autoscaler, &name, Reply::Ok)
        .await;
    env.api.expect_prune("alice", "hello", 1).await;
    let report = task.await.unwrap();
    assert_eq!(
        report,
        ReconcileReport {
            applied: 1,
            ..ReconcileReport::default()
        }
    );
    env.api.expect_silence().await;
    let state = env.state("hello").await.unwrap();
    assert_eq!((state.version, state.phase), (1, RuntimePhase::Pending));
}

async fn objects_of_deleted_functions_are_removed(b: TestBackend) {
    let mut env = env(b, settings()).await;
    env.store_version("hello", HELLO_V1).await;
    applied_once(&mut env).await;

    // "gone" was deleted while the manager was down; only its ConfigMaps and
    // Service are left. "bob" does not exist at all.
    let task = pass(&env);
    env.api
        .expect_list(Kind::Deployment, vec![alice("hello")])
        .await;
    env.api
        .expect_list(Kind::Service, vec![alice("hello"), alice("gone")])
        .await;
    env.api
        .expect_list(Kind::Autoscaler, vec![alice("hello")])
        .await;
    env.api
        .expect_list(Kind::NetworkPolicy, vec![alice("hello")])
        .await;
    env.api
        .expect_list(
            Kind::ConfigMap,
            vec![alice("hello"), alice("gone"), ("bob".into(), "x".into())],
        )
        .await;
    env.api.expect_version("alice", "hello", 1).await;
    env.api.expect_delete_all("alice", "gone", true).await;
    env.api.expect_delete_all("bob", "x", true).await;
    let report = task.await.unwrap();
    assert_eq!(
        report,
        ReconcileReport {
            applied: 1,
            deleted: 2,
            ..ReconcileReport::default()
        }
    );
    env.api.expect_silence().await;
}

async fn a_deploy_never_applied_converges_on_the_next_pass(b: TestBackend) {
    let mut env = env(b, settings()).await;
    env.store_version("hello", HELLO_V1).await;
    applied_once(&mut env).await;
    // Version 2 is committed, and the manager dies before applying it.
    assert_eq!(env.store_version("hello", HELLO_V2).await, 2);
    let name = FunctionName::parse("hello").unwrap();
    let status = env
        .runtime
        .status(env.user_id, &name, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status.state.as_str(), status.version), ("pending", 2));

    // A new manager starts: the loop's first pass runs at once and applies v2.
    let runner = reconcile::spawn(env.runtime.clone());
    expect_listings(&mut env, vec![alice("hello")], vec![alice("hello")]).await;
    let applied = env.api.expect_version("alice", "hello", 2).await;
    assert_eq!(applied[1].body["data"]["fn.ts"], HELLO_V2);
    // Let the pass record its state, then stop the loop.
    for _ in 0..50 {
        if env.state("hello").await.is_some_and(|s| s.version == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runner.abort();
    let state = env.state("hello").await.unwrap();
    assert_eq!((state.version, state.phase), (2, RuntimePhase::Pending));
    let status = env
        .runtime
        .status(env.user_id, &name, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status.state.as_str(), status.error), ("pending", None));
}

/// The value of `series` in the metrics' text (`None`: absent).
fn series(metrics: &Metrics, series: &str) -> Option<f64> {
    metrics.encode_text().lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

/// Waits (bounded) until `series` reaches `value`.
async fn until(metrics: &Metrics, name: &str, value: f64) {
    for _ in 0..250 {
        if series(metrics, name) == Some(value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} never reached {value}:\n{}", metrics.encode_text());
}

#[tokio::test]
async fn each_pass_is_in_the_metrics() {
    let mut env = env(
        TestBackend::Sqlite,
        KubeSettings {
            reconcile_secs: 1,
            ..settings()
        },
    )
    .await;
    env.store_version("hello", HELLO_V1).await;
    let metrics = Arc::new(Metrics::new(true));
    let runner = reconcile::spawn_observed(env.runtime.clone(), Some(metrics.clone()));

    // First pass: the API refuses the listing; the function is applied all the
    // same, but the pass did not reconcile everything (orphans are unknown).
    let seen = env
        .api
        .answer(Reply::Fail(403, "Forbidden", "deployments is forbidden"))
        .await;
    assert_eq!(seen.path, Kind::Deployment.collection());
    env.api.expect_version("alice", "hello", 1).await;
    until(
        &metrics,
        "skiff_reconcile_runs_total{result=\"failed\"}",
        1.0,
    )
    .await;
    assert_eq!(
        series(&metrics, "skiff_reconcile_functions{outcome=\"applied\"}"),
        Some(1.0)
    );
    assert_eq!(
        series(&metrics, "skiff_reconcile_last_success_timestamp_seconds"),
        Some(0.0)
    );

    // The next pass goes through.
    expect_listings(&mut env, vec![alice("hello")], vec![alice("hello")]).await;
    env.api.expect_version("alice", "hello", 1).await;
    until(&metrics, "skiff_reconcile_runs_total{result=\"ok\"}", 1.0).await;
    runner.abort();
    let last = series(&metrics, "skiff_reconcile_last_success_timestamp_seconds").unwrap();
    assert!(last > 1.7e9, "{last}");
    assert_eq!(
        series(&metrics, "skiff_reconcile_duration_seconds_count"),
        Some(2.0)
    );
}
