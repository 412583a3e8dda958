use serde_json::Value;
use skiff_testkit::TestBackend;

use crate::helpers::{HELLO, error_code, spawn_app};

skiff_testkit::on_both_backends!(
    lifecycle_versions_list_code_delete,
    tenants_are_isolated,
    svrless_handlers_type_check,
    concurrent_deletes_all_succeed,
);

async fn lifecycle_versions_list_code_delete(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = app.token("alice").await;
    let sources = [
        HELLO.to_owned(),
        "// v2: grüße, 日本語, emoji 🚀\nexport default { fetch(_req: Request) { return new Response('zwei ✓'); } };\n"
            .to_owned(),
        "export default async (req: Request): Promise<Response> => new Response(await req.text());\r\n"
            .to_owned(),
    ];
    for (i, src) in sources.iter().enumerate() {
        let r = app.deploy(&t, "hello", src).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, if i == 0 { 201 } else { 200 }, "{body}");
        assert_eq!(body["name"], "hello");
        assert_eq!(body["version"], i as i64 + 1);
        assert_eq!(body["url"], "http://fn.example.test/fn/alice/hello");
        // the code reads back byte for byte
        let code = app.get(&t, "/func/hello/code").await;
        assert_eq!(code.status(), 200);
        assert_eq!(code.bytes().await.unwrap().as_ref(), src.as_bytes());
    }
    let info: Value = app.get(&t, "/func/hello").await.json().await.unwrap();
    assert_eq!(info["version"], 3);
    assert_eq!(info["versions"].as_array().unwrap().len(), 3);
    assert_eq!(info["size"], sources[2].len());
    for k in ["created_at", "updated_at"] {
        chrono::DateTime::parse_from_rfc3339(info[k].as_str().unwrap()).unwrap();
    }
    app.deploy(&t, "second", HELLO).await;
    let list: Value = app.get(&t, "/func").await.json().await.unwrap();
    let names: Vec<_> = list["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["version"].as_i64().unwrap()))
        .collect();
    assert_eq!(names, vec![("hello", 3), ("second", 1)]);
    assert!(list["functions"][0]["url"].is_string());
    assert!(list["functions"][0]["updated_at"].is_string());

    assert_eq!(app.delete(&t, "/func/hello").await.status(), 204);
    for path in ["/func/hello", "/func/hello/code"] {
        assert_eq!(error_code(app.get(&t, path).await, 404).await, "not_found");
    }
    assert_eq!(
        error_code(app.delete(&t, "/func/hello").await, 404).await,
        "not_found"
    );
    let list: Value = app.get(&t, "/func").await.json().await.unwrap();
    assert_eq!(list["functions"].as_array().unwrap().len(), 1);
}

async fn tenants_are_isolated(b: TestBackend) {
    let app = spawn_app(b).await;
    let a = app.token("alice").await;
    let bob = app.token("bob").await;
    assert_eq!(app.deploy(&a, "shared", HELLO).await.status(), 201);
    let missing = error_code(app.get(&bob, "/func/nothing").await, 404).await;
    // bob sees alice's function exactly as a missing one
    for path in ["/func/shared", "/func/shared/code"] {
        let r = app.get(&bob, path).await;
        assert_eq!(error_code(r, 404).await, missing);
    }
    assert_eq!(
        error_code(app.delete(&bob, "/func/shared").await, 404).await,
        missing
    );
    let list: Value = app.get(&bob, "/func").await.json().await.unwrap();
    assert!(list["functions"].as_array().unwrap().is_empty());
    // bob's deploy of the same name creates his own function, leaving alice's alone
    let r = app
        .deploy(
            &bob,
            "shared",
            "export default () => new Response('bob');\n",
        )
        .await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["version"], 1);
    assert_eq!(body["url"], "http://fn.example.test/fn/bob/shared");
    let code = app.get(&a, "/func/shared/code").await.text().await.unwrap();
    assert_eq!(code, HELLO);
    let info: Value = app.get(&a, "/func/shared").await.json().await.unwrap();
    assert_eq!(info["version"], 1);
    assert_eq!(app.delete(&bob, "/func/shared").await.status(), 204);
    assert_eq!(app.get(&a, "/func/shared/code").await.status(), 200);
}

async fn svrless_handlers_type_check(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = app.token("alice").await;
    let svrless = "export default async function handler({ req }: { req: Deno.RequestEvent; conn?: Deno.Conn }) {\n  await req.respondWith(new Response('legacy'));\n}\n";
    let r = app.deploy(&t, "legacy", svrless).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let node = "import { Buffer } from 'node:buffer';\nexport default () => new Response(Buffer.from('hi').toString('hex'));\n";
    assert_eq!(app.deploy(&t, "nodey", node).await.status(), 201);
}

/// Deletes of different functions at the same moment. On SQLite each delete's
/// read-then-write transaction used to lose the race to the others' commits
/// (SQLITE_BUSY_SNAPSHOT), and the losers answered 500.
async fn concurrent_deletes_all_succeed(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = app.token("alice").await;
    let names: Vec<String> = (0..8).map(|i| format!("f{i}")).collect();
    for n in &names {
        assert_eq!(app.deploy(&t, n, HELLO).await.status(), 201);
    }
    for round in 0..2 {
        let deletes = names.iter().map(|n| {
            let (app, t) = (&app, &t);
            async move { app.delete(t, &format!("/func/{n}")).await.status() }
        });
        let statuses = futures_util::future::join_all(deletes).await;
        assert!(
            statuses.iter().all(|s| *s == 204),
            "round {round}: {statuses:?}"
        );
        let list: Value = app.get(&t, "/func").await.json().await.unwrap();
        assert_eq!(list["functions"].as_array().unwrap().len(), 0);
        if round == 0 {
            for n in &names {
                assert_eq!(app.deploy(&t, n, HELLO).await.status(), 201);
            }
        }
    }
}
