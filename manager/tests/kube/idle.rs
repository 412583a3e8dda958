//! Scale to zero: the reconcile loop scales a function nobody has called for
//! `SKIFF_K8S_IDLE_SECS` to 0 through its Deployment's `scale` subresource
//! (never the Deployment or the autoscaler), once; calls counted by the
//! routers keep a function up; a deploy of a function at zero starts it
//! again; a failed scale is retried by the next pass.

use skiff_core::store::RuntimePhase;
use skiff_core::store::{LatencyHistogram, MINUTE_MS, MinuteStats, StatsRow, minute_of};
use skiff_core::time::now_millis;
use skiff_manager::kube::{KubeSettings, ReconcileReport, SyncOutcome};
use skiff_testkit::TestBackend;

use crate::harness::{Env, HELLO_V1, HELLO_V2, env, settings};

skiff_testkit::on_both_backends!(idle_functions_go_to_zero_once_and_a_deploy_starts_them);

const IDLE_SECS: u64 = 600;
const IDLE_MS: i64 = 600_000;

fn idle_settings() -> KubeSettings {
    KubeSettings {
        idle_secs: IDLE_SECS,
        ..settings()
    }
}

/// Runs `scale_idle` at `now` on its own task (the test plays the API).
fn scale_idle(env: &Env, now: i64) -> tokio::task::JoinHandle<ReconcileReport> {
    let runtime = env.runtime.clone();
    tokio::spawn(async move {
        let mut report = ReconcileReport::default();
        runtime.scale_idle(now, &mut report).await;
        report
    })
}

async fn deploy(env: &mut Env, function: &str, source: &str) -> i64 {
    let version = env.store_version(function, source).await;
    let task = env.sync(function, true);
    env.api.expect_version("alice", function, version).await;
    task.await.unwrap();
    version
}

/// One call to alice's `function`, counted by router 7 in `minute`.
async fn called(env: &Env, function: &str, minute: i64) {
    let id = env
        .store
        .live_function("alice", function)
        .await
        .unwrap()
        .unwrap()
        .function_id;
    let mut latency = LatencyHistogram::default();
    latency.record_ms(1.0);
    let stats = MinuteStats {
        invocations: 1,
        errors: 0,
        cold_starts: 0,
        latency,
    };
    env.store
        .write_stats(
            7,
            &[StatsRow {
                function_id: id,
                minute,
                stats,
            }],
        )
        .await
        .unwrap();
}

async fn idle_functions_go_to_zero_once_and_a_deploy_starts_them(b: TestBackend) {
    let mut env = env(b, idle_settings()).await;
    deploy(&mut env, "hello", HELLO_V1).await;
    deploy(&mut env, "busy", HELLO_V1).await;
    let deployed = now_millis();
    let t1 = deployed + IDLE_MS + 1_000;
    // busy was called five minutes before t1 (its counted minute is what
    // matters, not this test's clock); hello never.
    let busy_minute = minute_of(t1) - 5 * MINUTE_MS;
    called(&env, "busy", busy_minute).await;

    // Just short of the idle time after the deploy: nothing moves.
    let report = scale_idle(&env, deployed + IDLE_MS - 60_000);
    env.api.expect_silence().await;
    assert_eq!(report.await.unwrap(), ReconcileReport::default());

    // Past it: hello (never called) goes to zero; busy, called within the
    // idle time, stays.
    let report = scale_idle(&env, t1);
    env.api.expect_scale("hello", 0, None).await;
    env.api.expect_silence().await;
    assert_eq!(report.await.unwrap().scaled_to_zero, 1);

    // The next pass does not scale it again.
    let report = scale_idle(&env, t1 + 30_000);
    env.api.expect_silence().await;
    assert_eq!(report.await.unwrap().scaled_to_zero, 0);

    // Once busy's last call is the idle time old, it goes too; the API
    // refuses the first time, and the next pass tries again.
    let t2 = busy_minute + MINUTE_MS + IDLE_MS;
    let report = scale_idle(&env, t2 - 1);
    env.api.expect_silence().await;
    assert_eq!(report.await.unwrap().scaled_to_zero, 0);
    let report = scale_idle(&env, t2);
    env.api.expect_scale("busy", 0, Some(500)).await;
    let report = report.await.unwrap();
    assert_eq!((report.scaled_to_zero, report.failed), (0, 1));
    assert!(report.errors[0].contains("alice/busy"), "{report:?}");
    let report = scale_idle(&env, t2);
    env.api.expect_scale("busy", 0, None).await;
    assert_eq!(report.await.unwrap().scaled_to_zero, 1);

    // A deploy of hello (at zero) applies the new version and starts one pod
    // of it, so its state says whether it loads.
    env.store_version("hello", HELLO_V2).await;
    let task = env.sync("hello", true);
    env.api.expect_version("alice", "hello", 2).await;
    env.api.expect_scale("hello", 1, None).await;
    task.await.unwrap();
    env.api.expect_silence().await;

    // The deploy restarted its idle clock: the next pass leaves it up.
    let report = scale_idle(&env, now_millis() + IDLE_MS - 60_000);
    env.api.expect_silence().await;
    assert_eq!(report.await.unwrap().scaled_to_zero, 0);

    // A deploy of busy (at zero) whose scale-up fails: the error is the
    // function's state, and the reconcile loop's next apply starts it.
    env.store_version("busy", HELLO_V2).await;
    let task = env.sync("busy", true);
    env.api.expect_version("alice", "busy", 2).await;
    env.api.expect_scale("busy", 1, Some(500)).await;
    let outcome = task.await.unwrap();
    assert!(
        matches!(outcome, SyncOutcome::Failed { version: 2, .. }),
        "{outcome:?}"
    );
    let s = env.state("busy").await.unwrap();
    assert_eq!(s.phase, RuntimePhase::Error);
    assert!(s.error.unwrap().contains("etcd is down"));
    let task = env.sync("busy", false);
    env.api.expect_version("alice", "busy", 2).await;
    env.api.expect_scale("busy", 1, None).await;
    assert_eq!(task.await.unwrap(), SyncOutcome::Applied { version: 2 });
    // Started: a further pass does not scale it again.
    let task = env.sync("busy", false);
    env.api.expect_version("alice", "busy", 2).await;
    assert_eq!(task.await.unwrap(), SyncOutcome::Applied { version: 2 });
    env.api.expect_silence().await;
}

/// A manager that did not scale the function down itself (it restarted
/// since, or another one did): the Deployment's replicas tell.
mod restarted {
    use super::*;
    use crate::harness::Reply;

    skiff_testkit::on_both_backends!(a_deploy_starts_a_function_found_at_zero);

    async fn a_deploy_starts_a_function_found_at_zero(b: TestBackend) {
        let mut env = env(b, idle_settings()).await;
        deploy(&mut env, "hello", HELLO_V1).await;
        // A reconcile pass finds the Deployment at 0: nothing woke it, it
        // stays there (a pass is not a use).
        let task = env.sync("hello", false);
        env.api
            .expect_version_deployed("alice", "hello", 1, Reply::AtReplicas(0))
            .await;
        assert_eq!(task.await.unwrap(), SyncOutcome::Applied { version: 1 });
        env.api.expect_silence().await;
        // A deploy onto it starts one pod of the new version.
        env.store_version("hello", HELLO_V2).await;
        let task = env.sync("hello", true);
        env.api
            .expect_version_deployed("alice", "hello", 2, Reply::AtReplicas(0))
            .await;
        env.api.expect_scale("hello", 1, None).await;
        assert_eq!(task.await.unwrap(), SyncOutcome::Applied { version: 2 });
        env.api.expect_silence().await;
        // Up with the autoscaler's 3: a deploy leaves its replicas alone.
        env.store_version("hello", HELLO_V1).await;
        let task = env.sync("hello", true);
        env.api
            .expect_version_deployed("alice", "hello", 3, Reply::AtReplicas(3))
            .await;
        assert_eq!(task.await.unwrap(), SyncOutcome::Applied { version: 3 });
        env.api.expect_silence().await;
    }
}

/// (One macro per module: it names its tests by backend.)
mod wake {
    use serde_json::json;
    use skiff_manager::kube::{WakeError, WakeOutcome, state_watch};

    use super::*;
    use crate::harness::{pod, pod_ready, send_watch_events, watch_event};

    skiff_testkit::on_both_backends!(concurrent_wakes_share_one_scale_up);

    async fn concurrent_wakes_share_one_scale_up(b: TestBackend) {
        let mut env = env(b, idle_settings()).await;
        deploy(&mut env, "hello", HELLO_V1).await;
        let report = scale_idle(&env, now_millis() + IDLE_MS + 1_000);
        env.api.expect_scale("hello", 0, None).await;
        assert_eq!(report.await.unwrap().scaled_to_zero, 1);

        // Five calls arrive at once: five wakes asked (`wake` is called)
        // before any is done, however their tasks are then scheduled.
        let wakes: Vec<_> = (0..5)
            .map(|_| tokio::spawn(env.runtime.wake("alice", "hello")))
            .collect();
        let (seen, send) = env.api.next().await;
        assert_eq!(seen.body, json!({"spec": {"replicas": 1}}));
        assert!(seen.path.ends_with("/scale"), "{seen:?}");
        let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                           "metadata": {"name": "x"}, "spec": {"replicas": 1}});
        let resp = http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(kube::client::Body::from(
                serde_json::to_vec(&scale).unwrap(),
            ))
            .unwrap();
        send.send_response(resp);
        let mut outcomes = Vec::new();
        for w in wakes {
            outcomes.push(w.await.unwrap().unwrap());
        }
        outcomes.sort_by_key(|o| *o != WakeOutcome::Scaled);
        assert_eq!(
            outcomes,
            [
                WakeOutcome::Scaled,
                WakeOutcome::Shared,
                WakeOutcome::Shared,
                WakeOutcome::Shared,
                WakeOutcome::Shared
            ]
        );
        env.api.expect_silence().await;

        // Woken: the idle clock restarted, so the next pass leaves it up.
        let report = scale_idle(&env, now_millis() + IDLE_MS - 60_000);
        env.api.expect_silence().await;
        assert_eq!(report.await.unwrap().scaled_to_zero, 0);

        // A later wake, once the pod watch sees its pod starting, scales
        // nothing (a patch to 1 could undo the autoscaler's 3).
        let watch = state_watch::spawn(env.runtime.clone());
        env.api
            .expect_pod_listing(vec![pod("hello-a", "hello", 1, pod_ready(false))])
            .await;
        let held = env.api.expect_pod_watch().await;
        let outcome = env.runtime.wake("alice", "hello").await.unwrap();
        assert_eq!(outcome, WakeOutcome::AlreadyUp);
        env.api.expect_silence().await;

        // A pod that is stopping (after a scale to zero) does not count: a
        // wake then scales up.
        let mut stopping = pod("hello-a", "hello", 1, pod_ready(true));
        stopping["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        send_watch_events(held, &[watch_event("MODIFIED", stopping)]);
        let _held = env.api.expect_pod_watch().await;
        let wake = tokio::spawn(env.runtime.wake("alice", "hello"));
        env.api.expect_scale("hello", 1, None).await;
        assert_eq!(wake.await.unwrap().unwrap(), WakeOutcome::Scaled);
        watch.abort();

        // A wake of a function that does not exist calls nothing.
        let gone = env.runtime.wake("alice", "nope").await;
        assert!(matches!(gone, Err(WakeError::NoSuchFunction)), "{gone:?}");
        env.api.expect_silence().await;
    }
}

/// (One macro per module: it names its tests by backend.)
mod wake_endpoint {
    use serde_json::{Value, json};
    use skiff_manager::kube::wake_listener;

    use super::*;

    skiff_testkit::on_both_backends!(the_wake_endpoint_wakes_and_refuses_what_it_should);

    /// POSTs to the wake listener at `addr`; returns (status, JSON body).
    async fn post(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
        let res = reqwest::Client::new()
            .post(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap())
    }

    async fn the_wake_endpoint_wakes_and_refuses_what_it_should(b: TestBackend) {
        let mut env = env(b, idle_settings()).await;
        deploy(&mut env, "hello", HELLO_V1).await;
        let (server, addr) =
            wake_listener::serve("127.0.0.1:0".parse().unwrap(), env.runtime.clone()).unwrap();
        let handle = server.handle();
        tokio::spawn(server);

        // A router's wake: one scale to 1.
        let call = tokio::spawn(async move { post(addr, "/wake/alice/hello").await });
        env.api.expect_scale("hello", 1, None).await;
        assert_eq!(call.await.unwrap(), (200, json!({"outcome": "scaled"})));

        // The API failing: 503, and nothing of the API's answer leaks.
        let call = tokio::spawn(async move { post(addr, "/wake/alice/hello").await });
        env.api.expect_scale("hello", 1, Some(500)).await;
        let (status, body) = call.await.unwrap();
        assert_eq!((status, body["error"].as_str()), (503, Some("wake_failed")));
        assert!(!body.to_string().contains("etcd"), "{body}");

        // Hostile or wrong input: a clear 4xx, and no API call.
        for (path, status, code) in [
            ("/wake/alice/nope", 404, "not_found"),
            ("/wake/bob/hello", 404, "not_found"),
            ("/wake/alice/..%2Fetc", 400, "invalid_name"),
            ("/wake/Alice/hello", 400, "invalid_name"),
            ("/wake/alice", 404, "not_found"),
            ("/func/hello", 404, "not_found"),
        ] {
            let (got, body) = post(addr, path).await;
            assert_eq!(
                (got, body["error"].as_str()),
                (status, Some(code)),
                "{path}"
            );
        }
        // Only POST wakes.
        let res = reqwest::get(format!("http://{addr}/wake/alice/hello"))
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 404);
        env.api.expect_silence().await;
        handle.stop(false).await;
    }
}
