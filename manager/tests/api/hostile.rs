//! Bad input: each case asserts its status and that the database is unchanged.

use serde_json::json;
use skiff_core::secret::Secret;
use skiff_core::store::testing::TestBackend;
use skiff_core::tokens::{Claims, TokenKeys};

use crate::helpers::{HELLO, Options, SECRET, TestApp, error_code, spawn_app, spawn_app_with};

crate::on_both_backends!(
    malformed_account_requests,
    bad_function_names,
    bad_sources,
    forbidden_imports_are_refused_without_reading_files,
    bad_tokens,
);

/// Alice with one deployed function: the state every hostile case must leave as it was.
async fn seeded(app: &TestApp) -> String {
    let t = app.user_token("alice").await;
    assert_eq!(app.deploy(&t, "keep", HELLO).await.status(), 201);
    t
}

async fn malformed_account_requests(b: TestBackend) {
    let app = spawn_app(b).await;
    seeded(&app).await;
    let before = app.snapshot().await;
    for path in ["/register", "/login"] {
        for body in [
            "{",
            "not json",
            "",
            "[]",
            "{\"username\": 5, \"password\": \"x\"}",
        ] {
            let r = app
                .client
                .post(app.url(path))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(error_code(r, 400).await, "invalid_json", "{path} {body:?}");
        }
        let r = app.post_json(path, &json!({"username": "carol"})).await;
        assert_eq!(r.status(), 400, "missing password on {path}");
    }
    for name in [
        "../x",
        "A",
        "-ab",
        "ab-",
        "ab",
        &"a".repeat(33),
        "bö-b",
        "car ol",
    ] {
        let r = app
            .post_json(
                "/register",
                &json!({"username": name, "password": "long enough pw"}),
            )
            .await;
        assert_eq!(error_code(r, 400).await, "invalid_name", "{name:?}");
    }
    let r = app
        .post_json(
            "/register",
            &json!({"username": "carol", "password": "short"}),
        )
        .await;
    assert_eq!(error_code(r, 400).await, "weak_password");
    let r = app
        .client
        .post(app.url("/register"))
        .body(format!(
            r#"{{"username":"carol","password":"{}"}}"#,
            "x".repeat(20_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "oversized JSON");
    assert_eq!(app.snapshot().await, before);
}

async fn bad_function_names(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = seeded(&app).await;
    let before = app.snapshot().await;
    let r = app
        .client
        .post(app.url("/func"))
        .bearer_auth(&t)
        .body(HELLO)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "missing_name");
    assert_eq!(
        error_code(app.deploy(&t, "", HELLO).await, 400).await,
        "missing_name"
    );
    let long = "a".repeat(41);
    for name in [
        "..%2Fx",
        "A",
        "-a",
        "a-",
        long.as_str(),
        "%C3%A9t%C3%A9",
        "a%20b",
        "a_b",
    ] {
        let r = app.deploy(&t, name, HELLO).await;
        assert_eq!(error_code(r, 400).await, "invalid_name", "{name}");
    }
    for name in ["A", "a-", "-a", long.as_str(), "%C3%A9"] {
        let r = app.get(&t, &format!("/func/{name}")).await;
        assert_eq!(error_code(r, 400).await, "invalid_name", "{name}");
        let r = app.delete(&t, &format!("/func/{name}")).await;
        assert_eq!(error_code(r, 400).await, "invalid_name", "{name}");
    }
    assert_eq!(app.snapshot().await, before);
}

async fn bad_sources(b: TestBackend) {
    let app = spawn_app_with(
        b,
        Options {
            max_source_bytes: 4096,
            ..Options::default()
        },
    )
    .await;
    let t = seeded(&app).await;
    let before = app.snapshot().await;
    for empty in ["", "  \n\t"] {
        assert_eq!(
            error_code(app.deploy(&t, "keep", empty).await, 400).await,
            "empty_source"
        );
    }
    let big = format!("export default () => new Response('{}');", "x".repeat(5000));
    assert_eq!(
        error_code(app.deploy(&t, "keep", &big).await, 413).await,
        "payload_too_large"
    );
    // the same, streamed without a Content-Length
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b' '; 1000])).collect();
    let r = app
        .client
        .post(app.url("/func?name=keep"))
        .bearer_auth(&t)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 413).await, "payload_too_large");
    let r = app
        .client
        .post(app.url("/func?name=keep"))
        .bearer_auth(&t)
        .body(vec![0xff, 0xfe, 0x00, 0x41])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_source");
    let r = app
        .deploy(
            &t,
            "keep",
            "const n: number = 'nope';\nexport default () => new Response(String(n));\n",
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "type_check_failed");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("TS2322"), "diagnostics missing: {msg}");
    assert!(!msg.contains("/checks/"), "scratch paths leak: {msg}");
    let r = app.deploy(&t, "keep", "export default (((;").await;
    assert_eq!(error_code(r, 400).await, "type_check_failed");
    assert_eq!(app.snapshot().await, before);
}

async fn forbidden_imports_are_refused_without_reading_files(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = seeded(&app).await;
    let before = app.snapshot().await;
    // a file whose content would show up in type errors if the checker read it
    let secret_file = app.data_dir.path().join("secret.ts");
    std::fs::write(&secret_file, "export const token = 'TOPSECRET-42';\n").unwrap();
    let sources = [
        format!(
            "import {{ token }} from '{}';\nconst n: number = token;\nexport default () => new Response(String(n));\n",
            secret_file.display()
        ),
        "import x from 'https://example.com/mod.ts';\nexport default x;\n".to_owned(),
        "import x from 'npm:left-pad';\nexport default x;\n".to_owned(),
        "import x from 'jsr:@std/path';\nexport default x;\n".to_owned(),
        "import x from './other.ts';\nexport default x;\n".to_owned(),
    ];
    for src in &sources {
        let r = app.deploy(&t, "keep", src).await;
        assert_eq!(r.status(), 400);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "type_check_failed");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("self-contained"), "{msg}");
        assert!(!msg.contains("TOPSECRET"), "file content leaked: {msg}");
    }
    assert_eq!(app.snapshot().await, before);
}

async fn bad_tokens(b: TestBackend) {
    let app = spawn_app(b).await;
    let good = seeded(&app).await;
    let before = app.snapshot().await;
    let alice = app.store.find_user("alice").await.unwrap().unwrap();
    let now = chrono::Utc::now().timestamp();
    let ours = TokenKeys::new(&Secret::new(SECRET), 3600).unwrap();
    let theirs =
        TokenKeys::new(&Secret::new("another-secret-that-is-also-32-bytes!!"), 3600).unwrap();
    let claims = |iat: i64, exp: i64| Claims {
        sub: "alice".into(),
        uid: alice.id,
        r#gen: alice.token_generation,
        iat,
        exp,
    };
    let expired = ours.sign(&claims(now - 7200, now - 3600)).unwrap();
    let foreign = theirs.sign(&claims(now, now + 3600)).unwrap();
    let b64 = |s: &str| {
        use std::fmt::Write;
        // base64url without padding, enough for a forged token
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for c in s.as_bytes().chunks(3) {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |a, (i, &x)| a | (u32::from(x) << (16 - 8 * i)));
            for i in 0..=c.len() {
                let _ = write!(out, "{}", T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    };
    let payload = b64(&serde_json::to_string(&claims(now, now + 3600)).unwrap());
    let alg_none = format!("{}.{payload}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
    // a valid token with its payload swapped for bob's identity keeps alice's signature
    let parts: Vec<&str> = good.split('.').collect();
    let tampered_claims = Claims {
        sub: "bob".into(),
        ..claims(now, now + 3600)
    };
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_string(&tampered_claims).unwrap()),
        parts[2]
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("garbage", Some("Bearer not.a.jwt".into())),
        ("empty bearer", Some("Bearer ".into())),
        ("basic auth", Some("Basic YWxpY2U6cHc=".into())),
        ("expired", Some(format!("Bearer {expired}"))),
        ("other secret", Some(format!("Bearer {foreign}"))),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        ("tampered", Some(format!("Bearer {tampered}"))),
    ];
    for (what, header) in cases {
        for (method, path) in [
            ("GET", "/func"),
            ("GET", "/func/keep"),
            ("GET", "/func/keep/code"),
            ("DELETE", "/func/keep"),
            ("POST", "/func?name=keep"),
        ] {
            let mut req = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .body(HELLO);
            if let Some(h) = &header {
                req = req.header("authorization", h);
            }
            let r = req.send().await.unwrap();
            assert_eq!(
                error_code(r, 401).await,
                "unauthorized",
                "{what} {method} {path}"
            );
        }
    }
    assert_eq!(app.snapshot().await, before);
    // and the good token still works
    assert_eq!(app.get(&good, "/func/keep").await.status(), 200);
}
