//! Bad input: each case asserts its status and that the database is unchanged.

use serde_json::json;
use skiff_core::secret::Secret;
use skiff_core::tokens::{Claims, TokenKeys};
use skiff_testkit::TestBackend;

use crate::helpers::{
    HELLO, Options, PASSWORD, SECRET, TestApp, error_code, spawn_app, spawn_app_with,
};

skiff_testkit::on_both_backends!(
    malformed_account_requests,
    bad_function_names,
    bad_sources,
    forbidden_imports_are_refused_without_reading_files,
    modules_without_a_servable_default_export_are_refused,
    bad_tokens,
    jwt_algorithm_confusion_and_header_injection,
    tokens_for_users_that_do_not_match_exactly,
    huge_tokens_get_a_clean_4xx,
    login_names_match_exactly,
    wrong_methods_answer_405_with_allow,
);

/// Alice with one deployed function: the state every hostile case must leave as it was.
async fn seeded(app: &TestApp) -> String {
    let t = app.token("alice").await;
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
    let type_error = "const n: number = 'nope';\nexport default () => new Response(String(n));\n";
    // A strict deploy refuses on a type error.
    let r = app
        .client
        .post(app.url("/func?name=keep&check=strict"))
        .bearer_auth(&t)
        .body(type_error)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "type_check_failed");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("TS2322"), "diagnostics missing: {msg}");
    assert!(!msg.contains("/checks/"), "scratch paths leak: {msg}");
    let r = app
        .client
        .post(app.url("/func?name=keep&check=loose"))
        .bearer_auth(&t)
        .body(type_error)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_query");
    // A syntax error is refused whatever the mode.
    let r = app.deploy(&t, "keep", "export default (((;").await;
    assert_eq!(error_code(r, 400).await, "syntax_error");
    assert_eq!(app.snapshot().await, before);
    // By default the type error is a warning at its line, and the deploy goes through.
    let r = app.deploy(&t, "keep", type_error).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{body}");
    let w = warnings[0].as_str().unwrap();
    assert!(w.contains("TS2322") && w.contains("main.ts:1:"), "{w}");
    assert!(!w.contains("/checks/"), "scratch paths leak: {w}");
}

async fn forbidden_imports_are_refused_without_reading_files(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = seeded(&app).await;
    let before = app.snapshot().await;
    // a file whose content would show up in type errors if the checker read it
    let secret_file = app.data_dir.path().join("secret.ts");
    std::fs::write(&secret_file, "export const token = 'TOPSECRET-42';\n").unwrap();
    let secret = secret_file.display();
    let sources = [
        format!(
            "import {{ token }} from '{secret}';\nconst n: number = token;\nexport default () => new Response(String(n));\n",
        ),
        format!(
            "import {{ token }} from 'file://{secret}';\nexport default () => new Response(token);\n"
        ),
        format!("export {{ token as default }} from '../../../../../../../../..{secret}';\n"),
        "import x from 'https://example.com/mod.ts';\nexport default x;\n".to_owned(),
        "import x from 'http://127.0.0.1:9/mod.ts';\nexport default x;\n".to_owned(),
        "import x from 'https://169.254.169.254/latest/meta-data';\nexport default x;\n".to_owned(),
        "import x from 'https://[::1]:8443/mod.ts';\nexport default x;\n".to_owned(),
        "import x from 'file:///etc/passwd';\nexport default x;\n".to_owned(),
        "const x = await import('/etc/shadow');\nexport default x;\n".to_owned(),
    ];
    for src in &sources {
        let r = app.deploy(&t, "keep", src).await;
        assert_eq!(r.status(), 400, "{src}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "import_not_allowed", "{src}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("not allowed"), "{msg}");
        assert!(!msg.contains("TOPSECRET"), "file content leaked: {msg}");
    }
    // A relative file the upload does not have.
    let r = app
        .deploy(
            &t,
            "keep",
            "import x from './other.ts';\nexport default x;\n",
        )
        .await;
    assert_eq!(error_code(r, 400).await, "dependency_unavailable");
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

async fn modules_without_a_servable_default_export_are_refused(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = seeded(&app).await;
    let before = app.snapshot().await;
    // Each builds, but the runtime could never serve it: before the fix these
    // were stored and every call answered 503.
    for src in [
        "{}",
        "0",
        "export const handler = (req: Request) => new Response('hi');\n",
        "export default 42;\n",
        "export default { fetsh() { return new Response('typo'); } };\n",
    ] {
        let r = app.deploy(&t, "keep", src).await;
        assert_eq!(r.status(), 400, "{src:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "no_handler", "{src:?}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("default export") && msg.contains("Deno.serve"),
            "{src:?}: {msg}"
        );
        assert!(!msg.contains("/checks/"), "scratch paths leak: {msg}");
    }
    assert_eq!(app.snapshot().await, before);
}

/// base64url without padding.
fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, &x)| a | (u32::from(x) << (16 - 8 * i)));
        for i in 0..=c.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A token with exactly this header and these claims, signed by `key` with `alg`
/// over `base64(header).base64(claims)`, whatever the header says.
fn forge(
    header: &serde_json::Value,
    claims: &Claims,
    key: &jsonwebtoken::EncodingKey,
    alg: jsonwebtoken::Algorithm,
) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(serde_json::to_string(claims).unwrap().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

/// An attacker's own keys (PKCS#1 DER for RSA, PKCS#8 DER for P-256).
const ATTACKER_RSA: &[u8] = include_bytes!("keys/attacker-rsa.der");
const ATTACKER_RSA_PUBLIC: &str = include_str!("keys/attacker-rsa.pub.pem");
const ATTACKER_EC: &[u8] = include_bytes!("keys/attacker-ec.der");

/// Asserts that `token` is refused with 401 on a read and on a write.
async fn assert_refused(app: &TestApp, what: &str, token: &str) {
    for (method, path) in [("GET", "/func/keep"), ("POST", "/func?name=keep")] {
        let r = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(token)
            .body(HELLO)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r, 401).await,
            "unauthorized",
            "{what}: {method} {path}"
        );
    }
}

async fn jwt_algorithm_confusion_and_header_injection(b: TestBackend) {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let app = spawn_app(b).await;
    let good = seeded(&app).await;
    let before = app.snapshot().await;
    let alice = app.store.find_user("alice").await.unwrap().unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: "alice".into(),
        uid: alice.id,
        r#gen: alice.token_generation,
        iat: now,
        exp: now + 3600,
    };
    let secret = EncodingKey::from_secret(SECRET.as_bytes());
    let rsa = EncodingKey::from_rsa_der(ATTACKER_RSA);
    let ec = EncodingKey::from_ec_der(ATTACKER_EC);
    let rsa_jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap(),
    )
    .unwrap();
    // Something that would notice if the server fetched a key from a URL in the token.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_url = format!("http://{}/jwks.json", trap.local_addr().unwrap());
    let h = |v: serde_json::Value| v;
    let cases: Vec<(&str, String)> = vec![
        // HS/RS confusion: the header names an asymmetric algorithm, the signature
        // is an HMAC with the server's secret, as a confused verifier would check it.
        (
            "RS256 header, HMAC with the server secret",
            forge(
                &h(json!({"alg": "RS256", "typ": "JWT"})),
                &claims,
                &secret,
                Algorithm::HS256,
            ),
        ),
        (
            "ES256 header, HMAC with the server secret",
            forge(
                &h(json!({"alg": "ES256", "typ": "JWT"})),
                &claims,
                &secret,
                Algorithm::HS256,
            ),
        ),
        (
            "PS256 header, HMAC with the server secret",
            forge(
                &h(json!({"alg": "PS256", "typ": "JWT"})),
                &claims,
                &secret,
                Algorithm::HS256,
            ),
        ),
        (
            "RS256 signed with the attacker's RSA key",
            forge(
                &h(json!({"alg": "RS256", "typ": "JWT"})),
                &claims,
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "ES256 signed with the attacker's EC key",
            forge(
                &h(json!({"alg": "ES256", "typ": "JWT"})),
                &claims,
                &ec,
                Algorithm::ES256,
            ),
        ),
        (
            "HS256 with an RSA public key as the HMAC secret",
            forge(
                &h(json!({"alg": "HS256", "typ": "JWT"})),
                &claims,
                &EncodingKey::from_secret(ATTACKER_RSA_PUBLIC.as_bytes()),
                Algorithm::HS256,
            ),
        ),
        // Only HS256 is accepted, even with the right secret.
        (
            "HS512 with the server secret",
            forge(
                &h(json!({"alg": "HS512", "typ": "JWT"})),
                &claims,
                &secret,
                Algorithm::HS512,
            ),
        ),
        (
            "HS384 with the server secret",
            forge(
                &h(json!({"alg": "HS384", "typ": "JWT"})),
                &claims,
                &secret,
                Algorithm::HS384,
            ),
        ),
        // Key-selection headers pointing at the attacker's key material.
        (
            "kid naming /dev/null, HMAC with an empty key",
            forge(
                &h(json!({"alg": "HS256", "kid": "../../../../../../dev/null"})),
                &claims,
                &EncodingKey::from_secret(b""),
                Algorithm::HS256,
            ),
        ),
        (
            "kid with SQL, HMAC with the injected value",
            forge(
                &h(json!({"alg": "HS256", "kid": "x' UNION SELECT 'attacker"})),
                &claims,
                &EncodingKey::from_secret(b"attacker"),
                Algorithm::HS256,
            ),
        ),
        (
            "jku to an attacker JWKS, RS256 with the attacker key",
            forge(
                &h(json!({"alg": "RS256", "jku": trap_url, "kid": "attacker"})),
                &claims,
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "x5u to an attacker certificate, RS256 with the attacker key",
            forge(
                &h(json!({"alg": "RS256", "x5u": trap_url})),
                &claims,
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "embedded jwk of the attacker key, RS256 with that key",
            forge(
                &h(json!({"alg": "RS256", "jwk": rsa_jwk})),
                &claims,
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "embedded jwk, HS256 header, HMAC with the attacker key",
            forge(
                &h(json!({"alg": "HS256", "jwk": rsa_jwk})),
                &claims,
                &EncodingKey::from_secret(ATTACKER_RSA_PUBLIC.as_bytes()),
                Algorithm::HS256,
            ),
        ),
    ];
    for (what, token) in &cases {
        assert_refused(&app, what, token).await;
    }
    // A genuine token stays genuine whatever key-selection headers it carries:
    // they are ignored, never followed.
    let decorated = forge(
        &json!({"alg": "HS256", "typ": "JWT", "kid": "../../etc/passwd", "jku": trap_url,
                "x5u": trap_url, "jwk": rsa_jwk}),
        &claims,
        &secret,
        Algorithm::HS256,
    );
    let r = app.get(&decorated, "/func/keep").await;
    assert_eq!(r.status(), 200);
    let info: serde_json::Value = r.json().await.unwrap();
    assert_eq!(info["url"], "http://fn.example.test/fn/alice/keep");
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the server fetched a URL named in a token header"
    );
    assert_eq!(app.snapshot().await, before);
    assert_eq!(app.get(&good, "/func/keep").await.status(), 200);
}

async fn tokens_for_users_that_do_not_match_exactly(b: TestBackend) {
    let app = spawn_app(b).await;
    let good = seeded(&app).await;
    app.token("bob").await;
    let before = app.snapshot().await;
    let alice = app.store.find_user("alice").await.unwrap().unwrap();
    let bob = app.store.find_user("bob").await.unwrap().unwrap();
    let ours = TokenKeys::new(&Secret::new(SECRET), 3600).unwrap();
    let now = chrono::Utc::now().timestamp();
    let token = |sub: &str, uid: i64| {
        ours.sign(&Claims {
            sub: sub.into(),
            uid,
            r#gen: alice.token_generation,
            iat: now,
            exp: now + 3600,
        })
        .unwrap()
    };
    let never = alice.id.max(bob.id) + 1_000_000;
    // Signed with the real secret: only the database can tell these apart.
    let cases = [
        (
            "a user id that never existed, unknown name",
            token("ghost", never),
        ),
        (
            "a user id that never existed, alice's name",
            token("alice", never),
        ),
        ("alice's name with bob's id", token("alice", bob.id)),
        ("alice's id, name in capitals", token("ALICE", alice.id)),
        ("alice's id, name with a capital", token("Alice", alice.id)),
        (
            "alice's id, name with a trailing space",
            token("alice ", alice.id),
        ),
        ("alice's id, empty name", token("", alice.id)),
    ];
    for (what, t) in &cases {
        assert_refused(&app, what, t).await;
    }
    assert_eq!(app.snapshot().await, before);
    assert_eq!(app.get(&good, "/func/keep").await.status(), 200);
}

async fn huge_tokens_get_a_clean_4xx(b: TestBackend) {
    let app = spawn_app(b).await;
    let good = seeded(&app).await;
    let before = app.snapshot().await;
    let now = chrono::Utc::now().timestamp();
    let payload = b64(serde_json::to_string(
        &json!({"sub": "alice", "uid": 1, "gen": 0, "iat": now,
            "exp": now + 3600}),
    )
    .unwrap()
    .as_bytes());
    let token_of = |n: usize| {
        let header = format!(r#"{{"alg":"HS256","pad":"{}"}}"#, "x".repeat(n));
        format!("{}.{payload}.c2ln", b64(header.as_bytes()))
    };
    // Within the server's request-head limit (128 KiB) the token is read,
    // verified and refused.
    for (what, size) in [("16 KiB", 16 << 10), ("64 KiB", 64 << 10)] {
        let token = token_of(size);
        for (method, path) in [("GET", "/func/keep"), ("POST", "/func?name=keep")] {
            let r = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .header("authorization", format!("Bearer {token}"))
                .body(HELLO)
                .send()
                .await
                .unwrap();
            assert_eq!(
                error_code(r, 401).await,
                "unauthorized",
                "{what} token on {method} {path}"
            );
        }
    }
    // Past it, the whole request is refused before any handler runs: 431, then
    // the connection is closed. (A client that stops reading once its write
    // fails, like hyper, sees the close instead of the answer; this one reads.)
    let addr = app.base.trim_start_matches("http://").to_owned();
    for (method, path) in [("GET", "/func/keep"), ("POST", "/func?name=keep")] {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
             content-length: {}\r\n\r\n{HELLO}",
            token_of(1 << 20),
            HELLO.len()
        );
        let status = raw_status(&addr, request.into_bytes()).await;
        assert!(
            status.starts_with("HTTP/1.1 431"),
            "1 MiB token on {method} {path}: {status:?}"
        );
    }
    // A 1 MiB login body is refused as malformed (over the JSON limit), too.
    let r = app
        .post_json(
            "/login",
            &json!({"username": "alice", "password": "x".repeat(1 << 20)}),
        )
        .await;
    assert_eq!(error_code(r, 400).await, "invalid_json");
    // The server is unharmed and nothing changed.
    assert_eq!(app.get(&good, "/func/keep").await.status(), 200);
    assert_eq!(app.snapshot().await, before);
}

/// Sends `request` on a fresh connection (ignoring a write cut short by the
/// server) and returns the status line of the answer.
async fn raw_status(addr: &str, request: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while !got.windows(2).any(|w| w == b"\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 60 s");
    writer.abort();
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn login_names_match_exactly(b: TestBackend) {
    let app = spawn_app(b).await;
    seeded(&app).await;
    // MariaDB's default collation compares these equal to `alice`; SQLite does
    // not. Either way a login names the account exactly or fails.
    for name in ["ALICE", "Alice", "alice ", " alice", "alice\t"] {
        let r = app.login(name, PASSWORD).await;
        assert_eq!(error_code(r, 401).await, "unauthorized", "{name:?}");
    }
    assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
}

/// Found by schemathesis: 405 answers had no `Allow` header (RFC 9110 requires
/// one), and on most paths no JSON error body either.
async fn wrong_methods_answer_405_with_allow(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = seeded(&app).await;
    let before = app.snapshot().await;
    for (method, path, allow) in [
        ("PUT", "/func", "GET, POST"),
        ("TRACE", "/func", "GET, POST"),
        ("PATCH", "/func/keep", "GET, DELETE"),
        ("POST", "/func/keep", "GET, DELETE"),
        ("DELETE", "/func/keep/code", "GET"),
        ("POST", "/func/keep/logs", "GET"),
        ("GET", "/register", "POST"),
        ("PUT", "/login", "POST"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/readyz", "GET"),
        ("POST", "/openapi.json", "GET"),
        ("PUT", "/docs", "GET"),
    ] {
        let r = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        assert_eq!(
            error_code(r, 405).await,
            "method_not_allowed",
            "{method} {path}"
        );
    }
    assert_eq!(app.snapshot().await, before);
}
