//! The runtime state rows (migration 0002) on both backends.

use skiff_core::store::RuntimePhase;
use skiff_testkit::TestBackend;

use crate::harness::{HELLO_V1, env, settings};

skiff_testkit::on_both_backends!(state_is_replaced_listed_and_deleted_with_the_function);

async fn state_is_replaced_listed_and_deleted_with_the_function(b: TestBackend) {
    let env = env(b, settings()).await;
    env.store_version("hello", HELLO_V1).await;
    env.store_version("other", HELLO_V1).await;
    let targets = env.store.runtime_targets().await.unwrap();
    let names: Vec<_> = targets
        .iter()
        .map(|t| (t.user.as_str(), t.name.as_str(), t.version))
        .collect();
    assert_eq!(names, [("alice", "hello", 1), ("alice", "other", 1)]);
    let id = targets[0].function_id;
    assert_eq!(
        env.store.runtime_target("alice", "hello").await.unwrap(),
        Some(targets[0].clone())
    );
    assert_eq!(
        env.store.runtime_target("alice", "nope").await.unwrap(),
        None
    );

    assert_eq!(env.state("hello").await, None);
    env.store
        .set_runtime_state(id, 1, RuntimePhase::Pending, None)
        .await
        .unwrap();
    assert_eq!(
        env.state("hello").await.unwrap().phase,
        RuntimePhase::Pending
    );
    let long = "é".repeat(5000);
    env.store
        .set_runtime_state(id, 1, RuntimePhase::Error, Some(&long))
        .await
        .unwrap();
    let s = env.state("hello").await.unwrap();
    assert_eq!(s.phase, RuntimePhase::Error);
    assert_eq!(
        s.error.unwrap().chars().count(),
        2000,
        "long errors are cut"
    );
    assert_eq!(
        env.store
            .runtime_state_by_id(id)
            .await
            .unwrap()
            .unwrap()
            .phase,
        RuntimePhase::Error
    );
    env.store
        .set_runtime_state(id, 1, RuntimePhase::Ready, None)
        .await
        .unwrap();
    assert_eq!(env.state("hello").await.unwrap().error, None);

    env.delete_stored("hello").await;
    assert_eq!(env.store.runtime_state_by_id(id).await.unwrap(), None);
    // Recording for a deleted function is a no-op, not an error.
    env.store
        .set_runtime_state(id, 1, RuntimePhase::Ready, None)
        .await
        .unwrap();
    assert_eq!(env.store.runtime_state_by_id(id).await.unwrap(), None);
}
