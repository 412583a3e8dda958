//! Versions as code + configuration, sealed secrets, rollback and quotas:
//! one suite, run unchanged on SQLite and on MariaDB/MySQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use skiff_core::fnconfig::{FunctionSettings, Quotas, UserLimits};
use skiff_core::names::{FunctionName, UserName};
use skiff_core::secrets::SecretsKey;
use skiff_core::store::{Store, StoreError};
use skiff_testkit::{TestBackend, TestDb};

skiff_testkit::on_both_backends!(
    config_changes_make_versions_with_the_same_code,
    a_deploy_keeps_the_live_config,
    secrets_are_sealed_per_function_and_listed_by_name,
    rollback_moves_the_live_version_and_restores_its_config,
    the_key_check_refuses_another_key_and_rotation_keeps_secrets,
    function_quota_refuses_and_writes_nothing,
    old_versions_are_pruned_but_never_the_live_one,
    stored_bytes_quota_refuses_and_writes_nothing,
    user_limits_round_trip_and_feed_the_routers,
);

fn user(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}
fn func(s: &str) -> FunctionName {
    FunctionName::parse(s).unwrap()
}
fn key(b: u8) -> SecretsKey {
    SecretsKey::from_bytes(&[b; 32]).unwrap()
}

async fn fresh(b: TestBackend) -> (TestDb, Store, i64) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let a = store.create_user(&user("alice"), "h").await.unwrap();
    (db, store, a.id)
}

async fn config_changes_make_versions_with_the_same_code(b: TestBackend) {
    let (_db, s, a) = fresh(b).await;
    let d = s
        .deploy(a, &user("alice"), &func("f"), b"code-1")
        .await
        .unwrap();
    let v = s
        .change_config(a, &user("alice"), &func("f"), |c| {
            c.env.insert("GREETING".into(), "hi".into());
            c.settings.timeout_secs = Some(5);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(v.version, d.version + 1);
    let live = s.live_config(a, &func("f")).await.unwrap();
    assert_eq!(live.version, v.version);
    assert_eq!(
        live.config.env.get("GREETING").map(String::as_str),
        Some("hi")
    );
    let info = s.get_function(a, &func("f")).await.unwrap().unwrap();
    assert_eq!(
        (info.version, info.sha256.as_str()),
        (v.version, d.sha256.as_str())
    );
    let lf = s.live_function("alice", "f").await.unwrap().unwrap();
    assert_eq!(lf.settings.timeout_secs, Some(5));
    // A refused change writes nothing.
    let bad = s
        .change_config(a, &user("alice"), &func("f"), |c| {
            c.env.insert("SKIFF_X".into(), "1".into());
            Ok(())
        })
        .await;
    assert!(matches!(bad, Err(StoreError::BadConfig(_))), "{bad:?}");
    assert_eq!(
        s.live_config(a, &func("f")).await.unwrap().version,
        v.version
    );
    let missing = s
        .change_config(a, &user("alice"), &func("nope"), |_| Ok(()))
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

async fn a_deploy_keeps_the_live_config(b: TestBackend) {
    let (_db, s, a) = fresh(b).await;
    s.deploy(a, &user("alice"), &func("f"), b"code-1")
        .await
        .unwrap();
    s.change_config(a, &user("alice"), &func("f"), |c| {
        c.env.insert("A".into(), "1".into());
        Ok(())
    })
    .await
    .unwrap();
    let d = s
        .deploy(a, &user("alice"), &func("f"), b"code-2")
        .await
        .unwrap();
    let live = s.live_config(a, &func("f")).await.unwrap();
    assert_eq!(live.version, d.version);
    assert_eq!(live.config.env.get("A").map(String::as_str), Some("1"));
}

async fn secrets_are_sealed_per_function_and_listed_by_name(b: TestBackend) {
    let (_db, s, a) = fresh(b).await;
    let k = key(1);
    s.deploy(a, &user("alice"), &func("f"), b"code")
        .await
        .unwrap();
    s.deploy(a, &user("alice"), &func("g"), b"code")
        .await
        .unwrap();
    let v = s
        .put_secret(
            a,
            &user("alice"),
            &func("f"),
            "API_KEY",
            b"plain-value-123",
            &k,
        )
        .await
        .unwrap();
    let live = s.live_config(a, &func("f")).await.unwrap();
    assert_eq!(live.secrets_set, vec!["API_KEY".to_owned()]);
    let inst = s
        .instance_config(v.function_id, v.version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inst.sealed.len(), 1);
    assert!(!inst.sealed[0].1.windows(11).any(|w| w == b"plain-value"));
    let env = inst.open(&k, v.function_id).unwrap();
    assert_eq!(
        env,
        vec![("API_KEY".to_owned(), "plain-value-123".to_owned())]
    );
    // Another function's id does not open it.
    let g = s.live_config(a, &func("g")).await.unwrap();
    assert!(inst.open(&k, g.function_id).is_err());
    // Deleting removes the name and the value.
    let d = s
        .delete_secret(a, &user("alice"), &func("f"), "API_KEY")
        .await
        .unwrap();
    let inst = s
        .instance_config(d.function_id, d.version)
        .await
        .unwrap()
        .unwrap();
    assert!(inst.sealed.is_empty() && inst.config.secrets.is_empty());
    let again = s
        .delete_secret(a, &user("alice"), &func("f"), "API_KEY")
        .await;
    assert!(matches!(again, Err(StoreError::NotFound(_))));
}

async fn rollback_moves_the_live_version_and_restores_its_config(b: TestBackend) {
    let (_db, s, a) = fresh(b).await;
    let k = key(1);
    s.deploy(a, &user("alice"), &func("f"), b"code-1")
        .await
        .unwrap(); // v1
    s.put_secret(a, &user("alice"), &func("f"), "TOKEN", b"old", &k)
        .await
        .unwrap(); // v2
    s.change_config(a, &user("alice"), &func("f"), |c| {
        c.env.insert("MODE".into(), "new".into());
        c.secrets.clear();
        Ok(())
    })
    .await
    .unwrap(); // v3
    s.put_secret(a, &user("alice"), &func("f"), "TOKEN", b"current", &k)
        .await
        .unwrap(); // v4
    s.change_config(a, &user("alice"), &func("f"), |c| {
        c.secrets.clear();
        Ok(())
    })
    .await
    .unwrap(); // v5
    let feed = s.last_change_id().await.unwrap();
    let back = s
        .rollback(a, &user("alice"), &func("f"), None)
        .await
        .unwrap();
    assert_eq!(back.version, 4);
    assert!(
        s.last_change_id().await.unwrap() > feed,
        "a rollback must reach the change feed"
    );
    let to2 = s
        .rollback(a, &user("alice"), &func("f"), Some(2))
        .await
        .unwrap();
    assert_eq!(to2.version, 2);
    let live = s.live_config(a, &func("f")).await.unwrap();
    assert!(live.config.env.is_empty());
    // Version 2's secret name, with the current value.
    let inst = s
        .instance_config(to2.function_id, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        inst.open(&k, to2.function_id).unwrap(),
        vec![("TOKEN".to_owned(), "current".to_owned())]
    );
    let info = s.get_function(a, &func("f")).await.unwrap().unwrap();
    assert_eq!((info.version, info.latest_version), (2, 5));
    // Forward again, and the version number of the next change follows the latest.
    s.rollback(a, &user("alice"), &func("f"), Some(5))
        .await
        .unwrap();
    let d = s
        .deploy(a, &user("alice"), &func("f"), b"code-6")
        .await
        .unwrap();
    assert_eq!(d.version, 6);
    assert!(matches!(
        s.rollback(a, &user("alice"), &func("f"), Some(99)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.version_upload(a, &func("f"), 1)
            .await
            .unwrap()
            .unwrap()
            .source,
        b"code-1"
    );
    assert!(s.version_upload(a, &func("f"), 77).await.unwrap().is_none());
    // Nothing before version 1.
    s.deploy(a, &user("alice"), &func("solo"), b"x")
        .await
        .unwrap();
    assert!(matches!(
        s.rollback(a, &user("alice"), &func("solo"), None).await,
        Err(StoreError::NoRollbackTarget(_))
    ));
}

async fn the_key_check_refuses_another_key_and_rotation_keeps_secrets(b: TestBackend) {
    let (_db, s, a) = fresh(b).await;
    let (k1, k2) = (key(1), key(2));
    s.check_secrets_key(&k1, true).await.unwrap();
    s.check_secrets_key(&k1, true).await.unwrap();
    assert!(matches!(
        s.check_secrets_key(&k2, true).await,
        Err(StoreError::WrongSecretsKey { .. })
    ));
    s.deploy(a, &user("alice"), &func("f"), b"code")
        .await
        .unwrap();
    let v = s
        .put_secret(a, &user("alice"), &func("f"), "K", b"v1", &k1)
        .await
        .unwrap();
    assert!(matches!(
        s.rotate_secrets_key(&k2, &k1).await,
        Err(StoreError::WrongSecretsKey { .. })
    ));
    assert_eq!(s.rotate_secrets_key(&k1, &k2).await.unwrap(), 1);
    s.check_secrets_key(&k2, false).await.unwrap();
    assert!(s.check_secrets_key(&k1, false).await.is_err());
    let inst = s
        .instance_config(v.function_id, v.version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inst.open(&k2, v.function_id).unwrap()[0].1, "v1");
    assert!(inst.open(&k1, v.function_id).is_err());
}

async fn function_quota_refuses_and_writes_nothing(b: TestBackend) {
    let (_db, s, a) = fresh(b).await;
    s.set_user_limits(
        &user("alice"),
        &UserLimits {
            max_functions: Some(2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.deploy(a, &user("alice"), &func("f1"), b"x")
        .await
        .unwrap();
    s.deploy(a, &user("alice"), &func("f2"), b"x")
        .await
        .unwrap();
    let third = s.deploy(a, &user("alice"), &func("f3"), b"x").await;
    assert!(
        matches!(third, Err(StoreError::QuotaExceeded { limit: 2, .. })),
        "{third:?}"
    );
    assert_eq!(s.list_functions(a).await.unwrap().len(), 2);
    // Updating an existing one is not a new function.
    s.deploy(a, &user("alice"), &func("f1"), b"y")
        .await
        .unwrap();
}

async fn old_versions_are_pruned_but_never_the_live_one(b: TestBackend) {
    let (_db, s, a) = fresh(b).await;
    s.set_user_limits(
        &user("alice"),
        &UserLimits {
            max_versions: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in 1..=3 {
        s.deploy(a, &user("alice"), &func("f"), format!("v{i}").as_bytes())
            .await
            .unwrap();
    }
    s.rollback(a, &user("alice"), &func("f"), Some(1))
        .await
        .unwrap();
    // A config change after the rollback stores v4 from v1's code; v1 is no
    // longer live and falls out of the window.
    s.change_config(a, &user("alice"), &func("f"), |c| {
        c.settings = FunctionSettings {
            concurrency: Some(4),
            ..Default::default()
        };
        Ok(())
    })
    .await
    .unwrap();
    let info = s.get_function(a, &func("f")).await.unwrap().unwrap();
    let kept: Vec<i64> = info.versions.iter().map(|v| v.version).collect();
    assert_eq!(kept, vec![2, 3, 4]);
    assert_eq!(
        s.version_upload(a, &func("f"), 4)
            .await
            .unwrap()
            .unwrap()
            .source,
        b"v1"
    );
    // The live version survives however far behind it is.
    s.rollback(a, &user("alice"), &func("f"), Some(2))
        .await
        .unwrap();
    for i in 5..=8 {
        s.deploy(a, &user("alice"), &func("g"), format!("g{i}").as_bytes())
            .await
            .unwrap();
    }
    let info = s.get_function(a, &func("f")).await.unwrap().unwrap();
    assert_eq!(info.version, 2);
}

async fn stored_bytes_quota_refuses_and_writes_nothing(b: TestBackend) {
    let (_db, s, a) = fresh(b).await;
    s.set_user_limits(
        &user("alice"),
        &UserLimits {
            max_artifact_bytes: Some(1000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.deploy(a, &user("alice"), &func("f"), &[b'a'; 600])
        .await
        .unwrap();
    // Config versions share the code: they cost nothing more.
    s.change_config(a, &user("alice"), &func("f"), |c| {
        c.env.insert("A".into(), "1".into());
        Ok(())
    })
    .await
    .unwrap();
    let over = s.deploy(a, &user("alice"), &func("g"), &[b'b'; 600]).await;
    assert!(
        matches!(over, Err(StoreError::QuotaExceeded { limit: 1000, .. })),
        "{over:?}"
    );
    assert!(s.get_function(a, &func("g")).await.unwrap().is_none());
    let feed_before = s.last_change_id().await.unwrap();
    let over = s.deploy(a, &user("alice"), &func("f"), &[b'c'; 600]).await;
    assert!(matches!(over, Err(StoreError::QuotaExceeded { .. })));
    assert_eq!(
        s.get_function(a, &func("f"))
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    assert_eq!(s.last_change_id().await.unwrap(), feed_before);
}

async fn user_limits_round_trip_and_feed_the_routers(b: TestBackend) {
    let (_db, s, a) = fresh(b).await;
    assert_eq!(s.user_limits(a).await.unwrap(), UserLimits::default());
    let l = UserLimits {
        rps: Some(5),
        max_instances: Some(1),
        ..Default::default()
    };
    let before = s.last_change_id().await.unwrap();
    s.set_user_limits(&user("alice"), &l).await.unwrap();
    assert_eq!(s.user_limits(a).await.unwrap(), l);
    assert_eq!(s.all_user_limits().await.unwrap().get("alice"), Some(&l));
    let q = s.user_quotas(a).await.unwrap();
    assert_eq!((q.rps, q.max_instances), (5, 1));
    assert_eq!(q.max_functions, Quotas::clone(s.quotas()).max_functions);
    let changes = s.changes_since(before, 10).await.unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.user == "alice" && c.function.is_empty())
    );
    assert!(matches!(
        s.set_user_limits(&user("nobody"), &l).await,
        Err(StoreError::NotFound(_))
    ));
}
