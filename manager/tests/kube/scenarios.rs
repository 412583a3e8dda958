//! Create, update (a new version rolls out) and delete, request by request.

use skiff_core::naming::{code_config_map_name, object_name};
use skiff_core::store::RuntimePhase;
use skiff_manager::kube::SyncOutcome;
use skiff_testkit::TestBackend;

use crate::harness::{HELLO_V1, HELLO_V2, env, settings};

skiff_testkit::on_both_backends!(
    create_applies_every_object_and_records_pending,
    update_rolls_out_a_new_configmap_and_points_the_deployment_at_it,
    delete_removes_every_object_by_name_and_label,
);

async fn create_applies_every_object_and_records_pending(b: TestBackend) {
    let mut env = env(b, settings()).await;
    assert_eq!(env.store_version("hello", HELLO_V1).await, 1);
    let task = env.sync("hello", true);
    let applied = env.api.expect_version("alice", "hello", 1).await;
    assert_eq!(task.await.unwrap(), SyncOutcome::Applied { version: 1 });
    env.api.expect_silence().await;

    // What was applied is what the builders make: spot-check the essentials.
    let cm = &applied[1].body;
    assert_eq!(cm["data"]["fn.ts"], HELLO_V1);
    let deploy = &applied[4].body;
    assert!(
        deploy["spec"].get("replicas").is_none(),
        "the HPA owns replicas"
    );
    assert_eq!(deploy["metadata"]["labels"]["skiff.dev/user"], "alice");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
        code_config_map_name("alice", "hello", 1)
    );
    assert_eq!(
        applied[5].body["spec"]["scaleTargetRef"]["name"],
        object_name("alice", "hello")
    );

    let state = env.state("hello").await.unwrap();
    assert_eq!(
        (state.version, state.phase, state.error),
        (1, RuntimePhase::Pending, None)
    );
}

async fn update_rolls_out_a_new_configmap_and_points_the_deployment_at_it(b: TestBackend) {
    let mut env = env(b, settings()).await;
    env.store_version("hello", HELLO_V1).await;
    let task = env.sync("hello", true);
    env.api.expect_version("alice", "hello", 1).await;
    task.await.unwrap();

    assert_eq!(env.store_version("hello", HELLO_V2).await, 2);
    let task = env.sync("hello", true);
    let applied = env.api.expect_version("alice", "hello", 2).await;
    assert_eq!(task.await.unwrap(), SyncOutcome::Applied { version: 2 });

    let cm = &applied[1].body;
    assert_eq!(
        cm["metadata"]["name"],
        code_config_map_name("alice", "hello", 2)
    );
    assert_eq!(cm["metadata"]["labels"]["skiff.dev/version"], "2");
    assert_eq!(cm["data"]["fn.ts"], HELLO_V2);
    let template = &applied[4].body["spec"]["template"];
    assert_eq!(
        template["spec"]["volumes"][0]["configMap"]["name"],
        code_config_map_name("alice", "hello", 2)
    );
    assert_eq!(template["metadata"]["labels"]["skiff.dev/version"], "2");
    // The Deployment keeps its name and selector: it is rolled, not replaced.
    assert_eq!(
        applied[4].body["metadata"]["name"],
        object_name("alice", "hello")
    );
    let state = env.state("hello").await.unwrap();
    assert_eq!((state.version, state.phase), (2, RuntimePhase::Pending));

    // A third version prunes version 1's code (2 and 3 are kept).
    env.store_version("hello", "export default () => new Response('3');\n")
        .await;
    let task = env.sync("hello", true);
    env.api.expect_version("alice", "hello", 3).await;
    task.await.unwrap();
}

async fn delete_removes_every_object_by_name_and_label(b: TestBackend) {
    let mut env = env(b, settings()).await;
    env.store_version("hello", HELLO_V1).await;
    let task = env.sync("hello", true);
    env.api.expect_version("alice", "hello", 1).await;
    task.await.unwrap();

    env.delete_stored("hello").await;
    let task = env.sync("hello", false);
    env.api.expect_delete_all("alice", "hello", false).await;
    assert_eq!(task.await.unwrap(), SyncOutcome::Deleted);
    env.api.expect_silence().await;
    // The state row went with the function.
    assert_eq!(env.state("hello").await, None);

    // Deleting again (objects already gone: 404s) is still a success.
    let task = env.sync("hello", false);
    env.api.expect_delete_all("alice", "hello", true).await;
    assert_eq!(task.await.unwrap(), SyncOutcome::Deleted);
}
