//! `GET /func/<name>/logs` in Kubernetes mode: the function's pods are found by
//! their labels, each pod's last lines read (with times), merged oldest first
//! and neutralised; a pod not started yet is skipped; an API that cannot be
//! asked is a `503 logs_unavailable`, not an empty log.

use actix_web::test as actix;
use http::Method;
use skiff_core::names::{FunctionName, UserName};
use skiff_core::naming::object_name;
use skiff_manager::functions::logs::LoggedFunction;
use skiff_manager::runtime::FunctionRuntime;
use skiff_testkit::TestBackend;

use crate::harness::{FakeApi, HELLO_V1, NS, Reply, Seen, env, settings};

/// Expects the list of alice's `hello` pods, answered with `pods`.
async fn expect_pod_list(api: &mut FakeApi, pods: &[&str]) -> Seen {
    let seen = api
        .answer(Reply::Pods(pods.iter().map(|p| (*p).to_owned()).collect()))
        .await;
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.path, format!("/api/v1/namespaces/{NS}/pods"));
    assert_eq!(
        seen.query_value("labelSelector").unwrap(),
        format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/name=skiff-function",
            object_name("alice", "hello")
        )
    );
    seen
}

/// Expects the read of `pod`'s last `lines` lines, answered with `reply`.
async fn expect_pod_log(api: &mut FakeApi, pod: &str, lines: usize, reply: Reply) -> Seen {
    let seen = api.answer(reply).await;
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.path, format!("/api/v1/namespaces/{NS}/pods/{pod}/log"));
    assert_eq!(seen.query_value("tailLines"), Some(lines.to_string()));
    assert_eq!(seen.query_value("timestamps").as_deref(), Some("true"));
    assert!(
        seen.query_value("limitBytes").is_some(),
        "bounded: {seen:?}"
    );
    seen
}

#[tokio::test]
async fn the_pods_logs_are_merged_oldest_first() {
    let mut env = env(TestBackend::Sqlite, settings()).await;
    env.store_version("hello", HELLO_V1).await;
    let logs = env
        .runtime
        .log_source()
        .expect("Kubernetes keeps logs in pods");
    let task = tokio::spawn(async move {
        let (user, name) = (
            UserName::parse("alice").unwrap(),
            FunctionName::parse("hello").unwrap(),
        );
        let function = LoggedFunction {
            id: 1,
            user: &user,
            name: &name,
        };
        logs.tail(function, 3).await
    });
    expect_pod_list(&mut env.api, &["hello-b", "hello-a", "hello-new"]).await;
    expect_pod_log(
        &mut env.api,
        "hello-a",
        3,
        Reply::Text(
            200,
            "2026-01-01T00:00:01.5Z one\n2026-01-01T00:00:03Z three \u{1b}[2J\n".into(),
        ),
    )
    .await;
    expect_pod_log(
        &mut env.api,
        "hello-b",
        3,
        Reply::Text(
            200,
            "2026-01-01T00:00:02Z two\n2026-01-01T00:00:04Z four\n".into(),
        ),
    )
    .await;
    // Still starting: the API refuses its log with 400; it has nothing to show.
    expect_pod_log(
        &mut env.api,
        "hello-new",
        3,
        Reply::Fail(
            400,
            "BadRequest",
            "container \"function\" in pod \"hello-new\" is waiting to start: ContainerCreating",
        ),
    )
    .await;
    let lines = task.await.unwrap().unwrap();
    assert_eq!(
        lines,
        [
            "2026-01-01T00:00:02.000Z hello-b | two",
            "2026-01-01T00:00:03.000Z hello-a | three \\u{1b}[2J",
            "2026-01-01T00:00:04.000Z hello-b | four",
        ]
    );
    env.api.expect_silence().await;
}

#[actix_web::test]
async fn the_logs_endpoint_reads_the_pods_and_says_when_it_cannot() {
    let mut env = env(TestBackend::Sqlite, settings()).await;
    env.store_version("hello", HELLO_V1).await;
    let data_dir = tempfile::tempdir().unwrap();
    let app = env.http_api(data_dir.path()).await;
    let token = env.token();
    let get = |uri: &str| {
        actix::TestRequest::get()
            .uri(uri)
            .insert_header(("Authorization", format!("Bearer {token}")))
            .to_request()
    };

    let api = async {
        expect_pod_list(&mut env.api, &["hello-a"]).await;
        expect_pod_log(
            &mut env.api,
            "hello-a",
            2,
            Reply::Text(
                200,
                "2026-01-01T00:00:01Z a\n2026-01-01T00:00:02Z b\n".into(),
            ),
        )
        .await;
    };
    let (resp, _) = tokio::join!(
        actix::call_service(&app, get("/func/hello/logs?tail=2")),
        api
    );
    assert_eq!(resp.status(), 200);
    let body = actix::read_body(resp).await;
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "2026-01-01T00:00:01.000Z hello-a | a\n2026-01-01T00:00:02.000Z hello-a | b\n"
    );

    // The API refuses the list (say, the Role lacks it): 503, not an empty 200.
    let (resp, _) = tokio::join!(
        actix::call_service(&app, get("/func/hello/logs")),
        env.api
            .answer(Reply::Fail(403, "Forbidden", "pods is forbidden"))
    );
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = actix::read_body_json(resp).await;
    assert_eq!(body["error"]["code"], "logs_unavailable");
    assert!(
        !body.to_string().contains("forbidden"),
        "the API's words stay in the log: {body}"
    );

    // No such function: 404 before any API call.
    let resp = actix::call_service(&app, get("/func/nope/logs")).await;
    assert_eq!(resp.status(), 404);
    env.api.expect_silence().await;
}
