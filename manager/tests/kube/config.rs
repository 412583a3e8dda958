//! A version's env, secrets and settings in Kubernetes: the env Secret holds
//! them (and only it), the Deployment mounts it and rolls when the
//! configuration changes, settings become resources and autoscaler bounds,
//! rollback re-renders the older configuration, and a secret that cannot be
//! opened fails the apply loudly, naming the secret and never its value.

use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};
use skiff_core::fnconfig::FunctionSettings;
use skiff_core::names::{FunctionName, UserName};
use skiff_core::naming::env_secret_name;
use skiff_core::secrets::SecretsKey;
use skiff_core::store::RuntimePhase;
use skiff_manager::kube::SyncOutcome;
use skiff_testkit::TestBackend;

use crate::harness::{
    Env, HELLO_V1, HELLO_V2, Kind, Reply, env, env_with_key, secrets_key, settings,
};

const SECRET_VALUE: &str = "s3cr3t-value-never-shown";
const ENV_VALUE: &str = "plain-env-value";

skiff_testkit::on_both_backends!(
    env_and_secrets_go_into_the_secret_and_nowhere_else,
    a_config_change_rolls_the_pods_and_a_code_deploy_keeps_the_hash,
    rollback_re_renders_the_older_configuration,
    settings_become_resources_and_autoscaler_bounds,
    a_secret_without_the_key_fails_loudly_without_its_value,
    a_refused_secret_apply_stops_before_the_deployment,
);

fn alice() -> UserName {
    UserName::parse("alice").unwrap()
}

fn hello() -> FunctionName {
    FunctionName::parse("hello").unwrap()
}

/// Sets GREETING in the env and API_KEY as a secret: versions 2 and 3.
async fn configure(env: &Env, key: &SecretsKey) -> i64 {
    env.store
        .change_config(env.user_id, &alice(), &hello(), |c| {
            c.env.insert("GREETING".into(), ENV_VALUE.into());
            Ok(())
        })
        .await
        .unwrap();
    env.store
        .put_secret(
            env.user_id,
            &alice(),
            &hello(),
            "API_KEY",
            SECRET_VALUE.as_bytes(),
            key,
        )
        .await
        .unwrap()
        .version
}

/// The env file in an applied Secret.
fn env_file(applied: &Value) -> Value {
    let secret: Secret = serde_json::from_value(applied.clone()).unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data.len(), 1, "one key");
    serde_json::from_slice(&data["env.json"].0).unwrap()
}

fn pod_env(deployment: &Value, name: &str) -> Value {
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    env.as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].clone())
        .unwrap_or(Value::Null)
}

fn config_hash(deployment: &Value) -> String {
    deployment["spec"]["template"]["metadata"]["annotations"]["skiff.dev/config-hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Syncs alice/hello, expecting version `v` applied; returns the bodies.
async fn apply(env: &mut Env, v: i64) -> Vec<Value> {
    let task = env.sync("hello", true);
    let applied = env.api.expect_version("alice", "hello", v).await;
    assert_eq!(task.await.unwrap(), SyncOutcome::Applied { version: v });
    applied.into_iter().map(|s| s.body).collect()
}

async fn env_and_secrets_go_into_the_secret_and_nowhere_else(b: TestBackend) {
    let key = secrets_key(7);
    let mut env = env_with_key(b, settings(), Some(key.clone())).await;
    env.store_version("hello", HELLO_V1).await;
    let v = configure(&env, &key).await;
    assert_eq!(v, 3);
    let applied = apply(&mut env, v).await;

    let secret = &applied[2];
    assert_eq!(
        secret["metadata"]["name"],
        env_secret_name("alice", "hello")
    );
    assert_eq!(
        env_file(secret),
        json!({"GREETING": ENV_VALUE, "API_KEY": SECRET_VALUE})
    );
    // Only the Secret carries a value: every other request body is clean.
    for (i, body) in applied.iter().enumerate().filter(|(i, _)| *i != 2) {
        let text = body.to_string();
        assert!(
            !text.contains(SECRET_VALUE) && !text.contains(ENV_VALUE),
            "request {i}: {text}"
        );
    }
    let deployment = &applied[4];
    assert_eq!(pod_env(deployment, "SKIFF_ENV_NAMES"), "API_KEY,GREETING");
    assert_eq!(pod_env(deployment, "API_KEY"), Value::Null);
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let mounted = volumes.iter().find(|v| v["name"] == "env").unwrap();
    assert_eq!(
        mounted["secret"]["secretName"],
        env_secret_name("alice", "hello")
    );
    let state = env.state("hello").await.unwrap();
    assert_eq!((state.version, state.phase), (3, RuntimePhase::Pending));

    // Deleting the function deletes its Secret (expect_delete_all checks it).
    env.delete_stored("hello").await;
    let task = env.sync("hello", false);
    env.api.expect_delete_all("alice", "hello", false).await;
    assert_eq!(task.await.unwrap(), SyncOutcome::Deleted);
    env.api.expect_silence().await;
}

async fn a_config_change_rolls_the_pods_and_a_code_deploy_keeps_the_hash(b: TestBackend) {
    let key = secrets_key(7);
    let mut env = env_with_key(b, settings(), Some(key.clone())).await;
    env.store_version("hello", HELLO_V1).await;
    let first = config_hash(&apply(&mut env, 1).await[4]);

    let v = configure(&env, &key).await;
    let configured = apply(&mut env, v).await;
    let with_secret = config_hash(&configured[4]);
    assert_ne!(first, with_secret);

    // New code, same configuration (a deploy keeps the live config).
    assert_eq!(env.store_version("hello", HELLO_V2).await, 4);
    let redeployed = apply(&mut env, 4).await;
    assert_eq!(config_hash(&redeployed[4]), with_secret);
    assert_eq!(
        env_file(&redeployed[2]),
        json!({"GREETING": ENV_VALUE, "API_KEY": SECRET_VALUE})
    );
    // A reconcile of the same version renders the same hash again.
    let again = apply(&mut env, 4).await;
    assert_eq!(config_hash(&again[4]), with_secret);

    // A new secret value alone is a new configuration.
    let v = env
        .store
        .put_secret(env.user_id, &alice(), &hello(), "API_KEY", b"another", &key)
        .await
        .unwrap()
        .version;
    let rotated = apply(&mut env, v).await;
    assert_ne!(config_hash(&rotated[4]), with_secret);
    assert_eq!(env_file(&rotated[2])["API_KEY"], "another");
}

async fn rollback_re_renders_the_older_configuration(b: TestBackend) {
    let key = secrets_key(7);
    let mut env = env_with_key(b, settings(), Some(key.clone())).await;
    env.store_version("hello", HELLO_V1).await;
    let v = configure(&env, &key).await;
    apply(&mut env, v).await;

    // Back to version 2: GREETING only (no secret name yet).
    let back = env
        .store
        .rollback(env.user_id, &alice(), &hello(), Some(2))
        .await
        .unwrap();
    let applied = apply(&mut env, back.version).await;
    assert_eq!(env_file(&applied[2]), json!({"GREETING": ENV_VALUE}));
    assert_eq!(pod_env(&applied[4], "SKIFF_ENV_NAMES"), "GREETING");

    // Back to version 1: nothing at all.
    let back = env
        .store
        .rollback(env.user_id, &alice(), &hello(), Some(1))
        .await
        .unwrap();
    let applied = apply(&mut env, back.version).await;
    assert_eq!(env_file(&applied[2]), json!({}));
    assert_eq!(pod_env(&applied[4], "SKIFF_ENV_NAMES"), "");
}

async fn settings_become_resources_and_autoscaler_bounds(b: TestBackend) {
    let mut env = env(b, settings()).await;
    env.store_version("hello", HELLO_V1).await;
    let v = env
        .store
        .change_config(env.user_id, &alice(), &hello(), |c| {
            c.settings = FunctionSettings {
                memory_mb: Some(512),
                timeout_secs: Some(60),
                min_instances: Some(2),
                max_instances: Some(4),
                ..FunctionSettings::default()
            };
            Ok(())
        })
        .await
        .unwrap()
        .version;
    let applied = apply(&mut env, v).await;
    let pod = &applied[4]["spec"]["template"]["spec"];
    let resources = &pod["containers"][0]["resources"];
    assert_eq!(resources["limits"]["memory"], "512Mi");
    assert_eq!(resources["requests"]["memory"], "512Mi");
    assert_eq!(pod_env(&applied[4], "SKIFF_HEAP_MB"), "256");
    assert_eq!(pod["terminationGracePeriodSeconds"], 75);
    let hpa = &applied[5]["spec"];
    assert_eq!(
        (&hpa["minReplicas"], &hpa["maxReplicas"]),
        (&json!(2), &json!(4))
    );
}

async fn a_secret_without_the_key_fails_loudly_without_its_value(b: TestBackend) {
    // The manager has no key: nothing is applied, the state says why.
    let key = secrets_key(7);
    let mut env = env(b, settings()).await;
    env.store_version("hello", HELLO_V1).await;
    let v = configure(&env, &key).await;
    let outcome = env.sync("hello", true).await.unwrap();
    env.api.expect_silence().await;
    let SyncOutcome::Failed { version, error } = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert_eq!(version, v);
    assert!(error.contains("SKIFF_SECRETS_KEY"), "{error}");
    let state = env.state("hello").await.unwrap();
    assert_eq!((state.version, state.phase), (v, RuntimePhase::Error));

    // Another manager with the wrong key: the secret's name, not its value.
    let mut wrong = env_with_key(b, settings(), Some(secrets_key(9))).await;
    wrong.store_version("hello", HELLO_V1).await;
    let v = configure(&wrong, &key).await;
    let outcome = wrong.sync("hello", true).await.unwrap();
    wrong.api.expect_silence().await;
    let SyncOutcome::Failed { error, .. } = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert!(error.contains("API_KEY"), "{error}");
    assert!(!error.contains(SECRET_VALUE), "{error}");
    let state = wrong.state("hello").await.unwrap();
    assert_eq!((state.version, state.phase), (v, RuntimePhase::Error));
}

async fn a_refused_secret_apply_stops_before_the_deployment(b: TestBackend) {
    let key = secrets_key(7);
    let mut env = env_with_key(b, settings(), Some(key.clone())).await;
    env.store_version("hello", HELLO_V1).await;
    let task = env.sync("hello", true);
    let name = skiff_core::naming::object_name("alice", "hello");
    env.api
        .expect_apply(Kind::NetworkPolicy, &name, Reply::Ok)
        .await;
    env.api
        .expect_apply(
            Kind::ConfigMap,
            &skiff_core::naming::code_config_map_name("alice", "hello", 1),
            Reply::Ok,
        )
        .await;
    env.api
        .expect_apply(
            Kind::Secret,
            &env_secret_name("alice", "hello"),
            Reply::Fail(403, "Forbidden", "secrets is forbidden"),
        )
        .await;
    // No Deployment whose pods would wait on a Secret that is not there.
    let outcome = task.await.unwrap();
    env.api.expect_silence().await;
    let SyncOutcome::Failed { error, .. } = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert!(error.contains("applying Secret"), "{error}");
    assert!(error.contains("k8s/rbac.yaml"), "{error}");

    // The next pass applies everything.
    let applied = apply(&mut env, 1).await;
    assert_eq!(env_file(&applied[2]), json!({}));
}
