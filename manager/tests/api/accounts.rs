use serde_json::{Value, json};
use skiff_manager::users_cli::{UserCommand, run};
use skiff_testkit::TestBackend;

use crate::helpers::{Options, PASSWORD, error_code, spawn_app, spawn_app_with};

skiff_testkit::on_both_backends!(
    health_openapi_and_docs_answer,
    register_then_duplicate_is_409,
    login_good_and_bad,
    closed_signup_is_403_and_admin_can_add_users,
    revoked_tokens_are_refused,
    a_user_revokes_their_own_tokens_and_no_one_else_s,
    the_console_is_served_with_a_strict_policy,
    deleted_user_token_is_refused,
    login_attempts_are_rate_limited,
);

async fn health_openapi_and_docs_answer(b: TestBackend) {
    let app = spawn_app(b).await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/register",
        "/login",
        "/func",
        "/func/{name}",
        "/func/{name}/code",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing from OpenAPI");
    }
    let page = app
        .client
        .get(app.url("/docs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<code>/func/{name}/code</code>"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "page must work offline"
    );
    let r = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
}

async fn register_then_duplicate_is_409(b: TestBackend) {
    let app = spawn_app(b).await;
    let r = app.register("alice").await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"username": "alice"})
    );
    let before = app.snapshot().await;
    assert_eq!(
        error_code(app.register("alice").await, 409).await,
        "username_taken"
    );
    assert_eq!(app.snapshot().await, before);
    // the stored password is an argon2id hash, never the password
    let u = app.store.find_user("alice").await.unwrap().unwrap();
    assert!(u.password_hash.starts_with("$argon2id$"));
    assert!(!u.password_hash.contains(PASSWORD));
}

async fn login_good_and_bad(b: TestBackend) {
    let app = spawn_app(b).await;
    app.register("alice").await;
    let r = app.login("alice", PASSWORD).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3);
    let exp = body["expires_at"].as_str().unwrap();
    let exp = chrono::DateTime::parse_from_rfc3339(exp).expect("RFC 3339");
    assert!(exp > chrono::Utc::now());
    assert_eq!(app.get(token, "/func").await.status(), 200);
    for (user, pw) in [
        ("alice", "wrong password"),
        ("nobody", PASSWORD),
        ("NOT VALID", "x"),
    ] {
        assert_eq!(
            error_code(app.login(user, pw).await, 401).await,
            "unauthorized"
        );
    }
}

async fn closed_signup_is_403_and_admin_can_add_users(b: TestBackend) {
    let app = spawn_app_with(
        b,
        Options {
            allow_signup: false,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(
        error_code(app.register("alice").await, 403).await,
        "signup_closed"
    );
    assert!(app.store.find_user("alice").await.unwrap().is_none());
    // `skiff-manager user add` is the way in; here its code runs against the same database
    let store = app.store.clone();
    let hash = skiff_manager::passwords::hash(PASSWORD.into())
        .await
        .unwrap();
    store
        .create_user(&skiff_core::names::UserName::parse("alice").unwrap(), &hash)
        .await
        .unwrap();
    assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
    let out = run(
        &app.store,
        UserCommand::Rm {
            username: "alice".into(),
        },
    )
    .await
    .unwrap();
    assert!(out.contains("deleted"));
    assert_eq!(app.login("alice", PASSWORD).await.status(), 401);
}

async fn revoked_tokens_are_refused(b: TestBackend) {
    let app = spawn_app(b).await;
    let old = app.token("alice").await;
    assert_eq!(app.get(&old, "/func").await.status(), 200);
    run(
        &app.store,
        UserCommand::RevokeTokens {
            username: "alice".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        error_code(app.get(&old, "/func").await, 401).await,
        "unauthorized"
    );
    // a login after the revocation works
    let r = app.login("alice", PASSWORD).await;
    let new = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get(&new, "/func").await.status(), 200);
    assert_eq!(app.get(&old, "/func").await.status(), 401);
}

async fn a_user_revokes_their_own_tokens_and_no_one_else_s(b: TestBackend) {
    let app = spawn_app(b).await;
    let alice = app.token("alice").await;
    let r = app.login("alice", PASSWORD).await;
    let alice_cli = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob = app.token("bob").await;
    // Anonymous or with a bad token: refused, nothing revoked.
    let anon = app
        .client
        .post(app.url("/tokens/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(anon, 401).await, "unauthorized");
    let forged = app
        .client
        .post(app.url("/tokens/revoke"))
        .bearer_auth(format!("{alice}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert_eq!(app.get(&alice, "/func").await.status(), 200);
    let r = app
        .client
        .post(app.url("/tokens/revoke"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Every token of alice's (the CLI's too), not bob's.
    assert_eq!(app.get(&alice, "/func").await.status(), 401);
    assert_eq!(app.get(&alice_cli, "/func").await.status(), 401);
    assert_eq!(app.get(&bob, "/func").await.status(), 200);
    // A wrong method is a 405 with Allow.
    let r = app
        .client
        .get(app.url("/tokens/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
}

async fn the_console_is_served_with_a_strict_policy(b: TestBackend) {
    let app = spawn_app(b).await;
    let mut nonces = Vec::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let body = r.text().await.unwrap();
        if path == "/" {
            // The page carries the nonce its policy names, and nothing inline.
            let nonce = csp
                .split("'nonce-")
                .nth(1)
                .and_then(|n| n.split('\'').next())
                .unwrap()
                .to_owned();
            assert!(body.contains(&format!("content=\"{nonce}\"")), "{body}");
            assert!(
                !body.contains("<script>") && !body.contains("style="),
                "{body}"
            );
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "offline: {body}"
            );
            nonces.push(nonce);
        }
    }
    let again = app.client.get(app.url("/")).send().await.unwrap();
    let csp = again.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!csp.contains(&nonces[0]), "a nonce was reused: {csp}");
    let r = app
        .client
        .get(app.url("/console/../Cargo.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .client
        .get(app.url("/console/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
}

async fn deleted_user_token_is_refused(b: TestBackend) {
    let app = spawn_app(b).await;
    let old = app.token("alice").await;
    run(
        &app.store,
        UserCommand::Rm {
            username: "alice".into(),
        },
    )
    .await
    .unwrap();
    // a new account of the same name does not inherit the old token
    app.register("alice").await;
    assert_eq!(app.get(&old, "/func").await.status(), 401);
}

async fn login_attempts_are_rate_limited(b: TestBackend) {
    let app = spawn_app_with(
        b,
        Options {
            login_limit_per_user_addr: 3,
            ..Options::default()
        },
    )
    .await;
    app.register("alice").await;
    for _ in 0..3 {
        assert_eq!(app.login("alice", "wrong password").await.status(), 401);
    }
    let r = app.login("alice", PASSWORD).await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(error_code(r, 429).await, "rate_limited");
    // another user is not locked out by alice's attempts
    app.register("bob").await;
    assert_eq!(app.login("bob", PASSWORD).await.status(), 200);
}
