//! Through the HTTP API: a deploy applies (and is answered normally even when
//! the apply fails), `GET /func/<name>` shows the runtime state, and a delete
//! removes the objects.

use actix_web::test as actix;
use serde_json::Value;
use skiff_core::naming::object_name;
use skiff_testkit::TestBackend;

use crate::harness::{HELLO_V1, HELLO_V2, Kind, Reply, env, settings};

#[actix_web::test]
async fn deploy_get_and_delete_drive_the_runtime() {
    let mut env = env(TestBackend::Sqlite, settings()).await;
    let data_dir = tempfile::tempdir().unwrap();
    let app = env.http_api(data_dir.path()).await;
    let token = env.token();
    let auth = ("Authorization", format!("Bearer {token}"));
    let deploy = |source: &'static str| {
        actix::TestRequest::post()
            .uri("/func?name=hello")
            .insert_header(auth.clone())
            .set_payload(source)
            .to_request()
    };
    let get = || {
        actix::TestRequest::get()
            .uri("/func/hello")
            .insert_header(auth.clone())
            .to_request()
    };

    // Deploy v1: applied before the answer.
    let (resp, _) = tokio::join!(
        actix::call_service(&app, deploy(HELLO_V1)),
        env.api.expect_version("alice", "hello", 1)
    );
    assert_eq!(resp.status(), 201);
    let info: Value = actix::read_body_json(actix::call_service(&app, get()).await).await;
    // Applied, but no pod of it seen ready (no pod watch runs here;
    // pod_state.rs has one).
    assert_eq!(info["runtime"]["state"], "pending", "{info}");
    assert_eq!(info["runtime"]["version"], 1);
    assert!(info["runtime"].get("error").is_none());

    // Deploy v2 while the API refuses the Deployment: still a normal 200.
    let name = object_name("alice", "hello");
    let refuse = async {
        env.api
            .expect_policy_and_code("alice", "hello", 2, Reply::Created)
            .await;
        env.api.expect_apply(Kind::Service, &name, Reply::Ok).await;
        env.api
            .expect_apply(
                Kind::Deployment,
                &name,
                Reply::Fail(
                    422,
                    "Invalid",
                    "spec.template.spec.containers[0].image: Required value",
                ),
            )
            .await;
    };
    let (resp, _) = tokio::join!(actix::call_service(&app, deploy(HELLO_V2)), refuse);
    assert_eq!(resp.status(), 200);
    let body: Value = actix::read_body_json(resp).await;
    assert_eq!(body["version"], 2);
    let info: Value = actix::read_body_json(actix::call_service(&app, get()).await).await;
    assert_eq!(info["version"], 2, "the version is stored");
    assert_eq!(info["runtime"]["state"], "error", "{info}");
    assert_eq!(info["runtime"]["version"], 2);
    let error = info["runtime"]["error"].as_str().unwrap();
    assert!(
        error.contains("applying Deployment") && error.contains("422 Invalid"),
        "{error}"
    );
    assert!(
        error.contains("containers[0].image: Required value"),
        "{error}"
    );

    // Delete: the objects go too.
    let del = actix::TestRequest::delete()
        .uri("/func/hello")
        .insert_header(auth.clone())
        .to_request();
    let (resp, _) = tokio::join!(
        actix::call_service(&app, del),
        env.api.expect_delete_all("alice", "hello", false)
    );
    assert_eq!(resp.status(), 204);
    env.api.expect_silence().await;
}

#[test]
fn the_api_document_describes_the_runtime_state() {
    use utoipa::OpenApi;
    let doc = skiff_manager::routes::docs::ApiDoc::openapi();
    let schemas = doc.components.map(|c| c.schemas).unwrap_or_default();
    assert!(
        schemas.contains_key("RuntimeStatus"),
        "{:?}",
        schemas.keys().collect::<Vec<_>>()
    );
}
