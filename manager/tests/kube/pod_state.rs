//! A function's runtime state comes from its pods, watched: `pending` until a
//! pod of the live version is ready, `ready` then, `error` with the pod's
//! reason (a crash loop with the runtime's load error), and never `ready`
//! just because the objects were applied.

use skiff_core::store::RuntimePhase;
use skiff_manager::kube::state_watch;
use skiff_testkit::TestBackend;

use skiff_core::naming::object_name;

use crate::harness::{
    HELLO_V1, HELLO_V2, Kind, Reply, env, pod, pod_crashing, pod_ready, send_watch_events,
    settings, watch_event,
};

skiff_testkit::on_both_backends!(the_pod_watch_drives_pending_ready_and_error);

async fn the_pod_watch_drives_pending_ready_and_error(b: TestBackend) {
    let mut env = env(b, settings()).await;
    env.store_version("hello", HELLO_V1).await;
    let task = env.sync("hello", true);
    env.api.expect_version("alice", "hello", 1).await;
    task.await.unwrap();
    // Applied, no pod yet: pending, not ready.
    let s = env.state("hello").await.unwrap();
    assert_eq!((s.version, s.phase), (1, RuntimePhase::Pending));

    let watch = state_watch::spawn(env.runtime.clone());
    // The listing finds v1's pod starting: still pending.
    env.api
        .expect_pod_listing(vec![pod("hello-a", "hello", 1, pod_ready(false))])
        .await;
    let held = env.api.expect_pod_watch().await;
    assert_eq!(
        env.state("hello").await.unwrap().phase,
        RuntimePhase::Pending
    );

    // Its readiness probe passes: ready.
    send_watch_events(
        held,
        &[watch_event(
            "MODIFIED",
            pod("hello-a", "hello", 1, pod_ready(true)),
        )],
    );
    let s = env
        .state_when("hello", |s| s.phase == RuntimePhase::Ready)
        .await;
    assert_eq!((s.version, s.error), (1, None));

    // Version 2 is deployed while the watch waits: v1's ready pod does not
    // make v2 ready.
    let held = env.api.expect_pod_watch().await;
    env.store_version("hello", HELLO_V2).await;
    let task = env.sync("hello", true);
    env.api.expect_version("alice", "hello", 2).await;
    task.await.unwrap();
    let s = env.state("hello").await.unwrap();
    assert_eq!((s.version, s.phase), (2, RuntimePhase::Pending));

    // v2's pod cannot load its module and crash-loops: error, with the
    // runtime's own line (the pod's termination message).
    let line =
        "skiff-runtime: cannot load function module /code/fn.ts: SyntaxError: Unexpected token";
    send_watch_events(
        held,
        &[watch_event(
            "ADDED",
            pod("hello-b", "hello", 2, pod_crashing(line)),
        )],
    );
    let s = env
        .state_when("hello", |s| s.phase == RuntimePhase::Error)
        .await;
    assert_eq!(s.version, 2);
    assert_eq!(
        s.error.as_deref(),
        Some(format!("CrashLoopBackOff: exit code 78: {line}").as_str())
    );

    // The crashing pod goes and a fixed one is ready: ready again.
    let held = env.api.expect_pod_watch().await;
    send_watch_events(
        held,
        &[
            watch_event("DELETED", pod("hello-b", "hello", 2, pod_crashing(line))),
            watch_event("ADDED", pod("hello-c", "hello", 2, pod_ready(true))),
        ],
    );
    let s = env
        .state_when("hello", |s| s.phase == RuntimePhase::Ready)
        .await;
    assert_eq!((s.version, s.error), (2, None));

    // Every pod gone (say, deleted by hand): pending, not ready.
    let held = env.api.expect_pod_watch().await;
    send_watch_events(
        held,
        &[
            watch_event("DELETED", pod("hello-a", "hello", 1, pod_ready(true))),
            watch_event("DELETED", pod("hello-c", "hello", 2, pod_ready(true))),
        ],
    );
    let s = env
        .state_when("hello", |s| s.phase == RuntimePhase::Pending)
        .await;
    assert_eq!(s.version, 2);
    let _held = env.api.expect_pod_watch().await;
    watch.abort();
}

/// (One macro per module: it names its tests by backend.)
mod apply_error {
    use super::*;

    skiff_testkit::on_both_backends!(an_apply_error_is_not_cleared_by_the_old_versions_pods);

    async fn an_apply_error_is_not_cleared_by_the_old_versions_pods(b: TestBackend) {
        let mut env = env(b, settings()).await;
        env.store_version("hello", HELLO_V1).await;
        let watch = state_watch::spawn(env.runtime.clone());
        env.api
            .expect_pod_listing(vec![pod("hello-a", "hello", 1, pod_ready(true))])
            .await;
        let held = env.api.expect_pod_watch().await;

        // The apply is refused by the API server.
        let task = env.sync("hello", true);
        env.api
            .expect_apply(
                Kind::NetworkPolicy,
                &object_name("alice", "hello"),
                Reply::Fail(422, "Invalid", "refused by an admission webhook"),
            )
            .await;
        task.await.unwrap();
        let s = env.state("hello").await.unwrap();
        assert_eq!(s.phase, RuntimePhase::Error);
        let error = s.error.clone().unwrap();
        assert!(error.contains("refused by an admission webhook"), "{error}");

        // A pod event follows: the error stays (the apply's, not the pods').
        send_watch_events(
            held,
            &[watch_event(
                "MODIFIED",
                pod("hello-a", "hello", 1, pod_ready(true)),
            )],
        );
        let _held = env.api.expect_pod_watch().await;
        let s = env.state("hello").await.unwrap();
        assert_eq!((s.phase, s.error), (RuntimePhase::Error, Some(error)));
        watch.abort();
    }
}
