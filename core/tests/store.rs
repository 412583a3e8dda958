//! One store suite, run unchanged on SQLite and on MariaDB/MySQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use skiff_core::names::{FunctionName, UserName};
use skiff_core::store::{Store, StoreError};
use skiff_testkit::{TestBackend, TestDb};

skiff_testkit::on_both_backends!(
    users_are_unique_and_found,
    versions_grow_and_sources_are_byte_exact,
    functions_are_per_user,
    delete_removes_function_and_versions,
    concurrent_deploys_get_distinct_versions,
    change_feed_records_deploys_and_deletes,
    revoke_and_delete_user,
    migrations_are_idempotent,
);

fn user(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}
fn func(s: &str) -> FunctionName {
    FunctionName::parse(s).unwrap()
}

async fn fresh(b: TestBackend) -> (TestDb, Store) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    (db, store)
}

async fn users_are_unique_and_found(b: TestBackend) {
    let (_db, s) = fresh(b).await;
    let alice = s.create_user(&user("alice"), "hash-a").await.unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.token_generation, 0);
    assert!(matches!(
        s.create_user(&user("alice"), "other").await,
        Err(StoreError::Conflict)
    ));
    let found = s.find_user("alice").await.unwrap().unwrap();
    assert_eq!(
        (found.id, found.password_hash.as_str()),
        (alice.id, "hash-a")
    );
    assert!(s.find_user("bob").await.unwrap().is_none());
}

async fn versions_grow_and_sources_are_byte_exact(b: TestBackend) {
    let (_db, s) = fresh(b).await;
    let a = s.create_user(&user("alice"), "h").await.unwrap();
    let sources: [&[u8]; 3] = [
        b"export default () => new Response('v1')",
        "export default () => new Response('v2 \u{2014} gr\u{fc}\u{df}e, \u{65e5}\u{672c}, \u{1f680}')"
            .as_bytes(),
        b"export default () => new Response('v3')\r\n\t",
    ];
    for (i, src) in sources.iter().enumerate() {
        let d = s
            .deploy(a.id, &user("alice"), &func("hello"), src)
            .await
            .unwrap();
        assert_eq!(d.version, i as i64 + 1);
        assert_eq!(d.created, i == 0);
        let live = s.live_source(a.id, &func("hello")).await.unwrap().unwrap();
        assert_eq!(live, *src);
    }
    let info = s.get_function(a.id, &func("hello")).await.unwrap().unwrap();
    assert_eq!(info.version, 3);
    assert_eq!(info.latest_version, 3);
    assert_eq!(info.versions.len(), 3);
    assert_eq!(info.size, sources[2].len() as i64);
    assert_eq!(info.sha256, skiff_core::store::sha256_hex(sources[2]));
    // every earlier version is still there, unchanged
    let fid = s
        .live_function("alice", "hello")
        .await
        .unwrap()
        .unwrap()
        .function_id;
    for (i, src) in sources.iter().enumerate() {
        let old = s.version_source(fid, i as i64 + 1).await.unwrap().unwrap();
        assert_eq!(old, *src);
    }
}

async fn functions_are_per_user(b: TestBackend) {
    let (_db, s) = fresh(b).await;
    let a = s.create_user(&user("alice"), "h").await.unwrap();
    let bob = s.create_user(&user("bob"), "h").await.unwrap();
    s.deploy(a.id, &user("alice"), &func("same"), b"a1")
        .await
        .unwrap();
    s.deploy(a.id, &user("alice"), &func("same"), b"a2")
        .await
        .unwrap();
    let d = s
        .deploy(bob.id, &user("bob"), &func("same"), b"b1")
        .await
        .unwrap();
    assert_eq!(d.version, 1, "bob's function has its own version count");
    assert_eq!(
        s.live_source(bob.id, &func("same")).await.unwrap().unwrap(),
        b"b1"
    );
    assert!(
        s.get_function(bob.id, &func("other"))
            .await
            .unwrap()
            .is_none()
    );
    s.deploy(a.id, &user("alice"), &func("zeta"), b"z")
        .await
        .unwrap();
    let names: Vec<_> = s
        .list_functions(a.id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.name, f.version))
        .collect();
    assert_eq!(names, vec![("same".into(), 2), ("zeta".into(), 1)]);
    assert_eq!(s.list_functions(bob.id).await.unwrap().len(), 1);
}

async fn delete_removes_function_and_versions(b: TestBackend) {
    let (_db, s) = fresh(b).await;
    let a = s.create_user(&user("alice"), "h").await.unwrap();
    s.deploy(a.id, &user("alice"), &func("f"), b"1")
        .await
        .unwrap();
    s.deploy(a.id, &user("alice"), &func("f"), b"2")
        .await
        .unwrap();
    let fid = s
        .live_function("alice", "f")
        .await
        .unwrap()
        .unwrap()
        .function_id;
    assert!(
        s.delete_function(a.id, &user("alice"), &func("f"))
            .await
            .unwrap()
    );
    assert!(
        !s.delete_function(a.id, &user("alice"), &func("f"))
            .await
            .unwrap()
    );
    assert!(s.get_function(a.id, &func("f")).await.unwrap().is_none());
    assert!(s.live_function("alice", "f").await.unwrap().is_none());
    assert!(s.version_source(fid, 1).await.unwrap().is_none());
    // a new function of the same name starts again at version 1
    let d = s
        .deploy(a.id, &user("alice"), &func("f"), b"new")
        .await
        .unwrap();
    assert_eq!((d.version, d.created), (1, true));
}

async fn concurrent_deploys_get_distinct_versions(b: TestBackend) {
    let (_db, s) = fresh(b).await;
    let a = s.create_user(&user("alice"), "h").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.deploy(
                a.id,
                &user("alice"),
                &func("race"),
                format!("v{i}").as_bytes(),
            )
            .await
            .unwrap()
            .version
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<i64>>());
}

async fn change_feed_records_deploys_and_deletes(b: TestBackend) {
    let (_db, s) = fresh(b).await;
    let start = s.last_change_id().await.unwrap();
    let a = s.create_user(&user("alice"), "h").await.unwrap();
    s.deploy(a.id, &user("alice"), &func("f"), b"1")
        .await
        .unwrap();
    s.delete_function(a.id, &user("alice"), &func("f"))
        .await
        .unwrap();
    let ch = s.changes_since(start, 100).await.unwrap();
    assert_eq!(ch.len(), 2);
    assert!(ch.iter().all(|c| c.user == "alice" && c.function == "f"));
    assert!(ch[0].id < ch[1].id);
    assert!(s.changes_since(ch[1].id, 100).await.unwrap().is_empty());
    // The window a router checks before reading rows: size and newest id.
    assert_eq!(s.change_window(start).await.unwrap(), (2, ch[1].id));
    assert_eq!(s.change_window(ch[0].id).await.unwrap(), (1, ch[1].id));
    assert_eq!(s.change_window(ch[1].id).await.unwrap(), (0, 0));
    assert_eq!(s.prune_changes(i64::MAX).await.unwrap(), 2);
}

async fn revoke_and_delete_user(b: TestBackend) {
    let (_db, s) = fresh(b).await;
    let a = s.create_user(&user("alice"), "h").await.unwrap();
    assert!(s.revoke_tokens(&user("alice")).await.unwrap());
    assert!(!s.revoke_tokens(&user("nobody")).await.unwrap());
    assert_eq!(
        s.find_user("alice")
            .await
            .unwrap()
            .unwrap()
            .token_generation,
        1
    );
    s.deploy(a.id, &user("alice"), &func("f"), b"1")
        .await
        .unwrap();
    assert!(s.delete_user(&user("alice")).await.unwrap());
    assert!(s.find_user("alice").await.unwrap().is_none());
    assert!(s.live_function("alice", "f").await.unwrap().is_none());
    // a re-created user gets a new id, so old tokens (which carry the id) cannot match
    let again = s.create_user(&user("alice"), "h2").await.unwrap();
    assert_ne!(again.id, a.id);
}

async fn migrations_are_idempotent(b: TestBackend) {
    let (_db, s) = fresh(b).await;
    s.migrate().await.unwrap();
    s.ping().await.unwrap();
}
