//! API answers 409, 422, 500 and a timeout: each becomes a clear error in the
//! function's runtime state, the stored function stays exactly as deployed,
//! and the next sync repairs it.

use skiff_core::names::FunctionName;
use skiff_core::naming::object_name;
use skiff_core::store::RuntimePhase;
use skiff_manager::kube::{KubeSettings, SyncOutcome};
use skiff_testkit::TestBackend;

use crate::harness::{Env, HELLO_V1, Kind, Reply, env, settings};

skiff_testkit::on_both_backends!(
    conflict_409_is_recorded_and_retried,
    invalid_422_is_recorded_with_the_api_message,
    server_error_500_is_recorded,
    timeout_is_recorded,
);

/// Applies the NetworkPolicy and ConfigMap, then answers the Service apply
/// with `reply`; returns the recorded error.
async fn fail_at_service(env: &mut Env, reply: Reply) -> String {
    env.store_version("hello", HELLO_V1).await;
    let before = snapshot(env).await;
    let task = env.sync("hello", true);
    let name = object_name("alice", "hello");
    env.api
        .expect_policy_and_code("alice", "hello", 1, Reply::Ok)
        .await;
    env.api.expect_apply(Kind::Service, &name, reply).await;
    // It stops at the first failure: no Deployment without its Service.
    let outcome = task.await.unwrap();
    env.api.expect_silence().await;
    let SyncOutcome::Failed { version: 1, error } = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    // The function itself is untouched; the state says what went wrong.
    assert_eq!(snapshot(env).await, before);
    let state = env.state("hello").await.unwrap();
    assert_eq!((state.version, state.phase), (1, RuntimePhase::Error));
    assert_eq!(state.error.as_deref(), Some(error.as_str()));
    error
}

async fn snapshot(env: &Env) -> String {
    let f = env
        .store
        .get_function(env.user_id, &FunctionName::parse("hello").unwrap())
        .await
        .unwrap()
        .unwrap();
    let source = env
        .store
        .live_source(env.user_id, &FunctionName::parse("hello").unwrap())
        .await
        .unwrap()
        .unwrap();
    format!(
        "v{} of {} {} {}",
        f.version,
        f.latest_version,
        f.sha256,
        source.len()
    )
}

/// A later sync with a healthy API clears the error.
async fn recovers(env: &mut Env) {
    let task = env.sync("hello", false);
    env.api.expect_version("alice", "hello", 1).await;
    assert_eq!(task.await.unwrap(), SyncOutcome::Applied { version: 1 });
    let state = env.state("hello").await.unwrap();
    assert_eq!((state.phase, state.error), (RuntimePhase::Pending, None));
}

async fn conflict_409_is_recorded_and_retried(b: TestBackend) {
    let mut env = env(b, settings()).await;
    let error = fail_at_service(
        &mut env,
        Reply::Fail(
            409,
            "Conflict",
            "Apply failed with 1 conflict: conflict with \"kubectl\"",
        ),
    )
    .await;
    assert!(
        error.starts_with(&format!(
            "applying Service skiff-functions/{}: conflict (409 Conflict)",
            object_name("alice", "hello")
        )),
        "{error}"
    );
    assert!(error.contains("conflict with \"kubectl\""), "{error}");
    recovers(&mut env).await;
}

async fn invalid_422_is_recorded_with_the_api_message(b: TestBackend) {
    let mut env = env(b, settings()).await;
    let error = fail_at_service(
        &mut env,
        Reply::Fail(
            422,
            "Invalid",
            "Service \"x\" is invalid: spec.ports[0].port: Invalid value: 0",
        ),
    )
    .await;
    assert!(
        error.contains("Kubernetes found the object invalid (422 Invalid)"),
        "{error}"
    );
    assert!(
        error.contains("spec.ports[0].port: Invalid value: 0"),
        "{error}"
    );
    recovers(&mut env).await;
}

async fn server_error_500_is_recorded(b: TestBackend) {
    let mut env = env(b, settings()).await;
    let error = fail_at_service(
        &mut env,
        Reply::Fail(500, "InternalError", "etcdserver: leader changed"),
    )
    .await;
    assert!(
        error.contains("the Kubernetes API failed (500 InternalError): etcdserver: leader changed"),
        "{error}"
    );
    recovers(&mut env).await;
}

async fn timeout_is_recorded(b: TestBackend) {
    let quick = KubeSettings {
        api_timeout_secs: 1,
        ..settings()
    };
    let mut env = env(b, quick).await;
    let started = std::time::Instant::now();
    let error = fail_at_service(&mut env, Reply::Hang).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        error.ends_with("the Kubernetes API did not answer within 1 s"),
        "{error}"
    );
    assert!(error.starts_with("applying Service"), "{error}");
    recovers(&mut env).await;
}
