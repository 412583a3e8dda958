//! Per-function configuration through the API: env, secrets and settings as
//! new versions, rollback, old versions' code, quotas, and the secrets key
//! (refused when wrong, rotated with the real binary).

use std::net::SocketAddr;

use serde_json::{Value, json};
use skiff_core::fnconfig::{Quotas, UserLimits};
use skiff_core::names::{FunctionName, UserName};
use skiff_core::secret::Secret;
use skiff_core::secrets::SecretsKey;
use skiff_manager::config::ManagerConfig;
use skiff_manager::startup::Application;
use skiff_testkit::TestBackend;

use crate::helpers::{
    HELLO, Options, SECRET, SECRETS_KEY, TestApp, error_code, secrets_key, spawn_app,
    spawn_app_with,
};

skiff_testkit::on_both_backends!(
    env_secrets_and_settings_round_trip,
    bad_patches_write_nothing,
    rollback_and_old_versions,
    another_users_function_is_missing_on_every_route,
    quotas_are_refused_with_their_value,
    a_wrong_key_stops_the_start,
    rotate_key_with_the_binary,
    no_log_holds_a_secret_and_limits_come_from_the_shell,
);

/// Never appears in an answer, a log line or a database file.
const PLAINTEXT: &str = "s3cr3t-plaintext-4f1d9a";

/// Every answer body a test received, to look for the plaintext in.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    async fn take(&mut self, r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        self.0.push(text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn assert_clean(&self) {
        for body in &self.0 {
            assert!(
                !body.contains(PLAINTEXT),
                "the secret's value in an answer: {body}"
            );
        }
        assert!(!self.0.is_empty());
    }
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    token: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.body(b);
    }
    req.send().await.unwrap()
}

async fn patch(app: &TestApp, token: &str, name: &str, body: &str) -> reqwest::Response {
    send(
        app,
        reqwest::Method::PATCH,
        token,
        &format!("/func/{name}/config"),
        Some(body.as_bytes().to_vec()),
    )
    .await
}

async fn put_secret(
    app: &TestApp,
    token: &str,
    name: &str,
    key: &str,
    value: &[u8],
) -> reqwest::Response {
    send(
        app,
        reqwest::Method::PUT,
        token,
        &format!("/func/{name}/secrets/{key}"),
        Some(value.to_vec()),
    )
    .await
}

async fn post(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    send(app, reqwest::Method::POST, token, path, None).await
}

async fn config(app: &TestApp, token: &str, name: &str) -> Value {
    let r = app.get(token, &format!("/func/{name}/config")).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn function_id(app: &TestApp, user: &str, name: &str) -> i64 {
    let u = app.store.find_user(user).await.unwrap().unwrap();
    let name = FunctionName::parse(name).unwrap();
    app.store
        .get_function(u.id, &name)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// What an instance of `version` would be given: env and opened secrets.
async fn instance_env(
    app: &TestApp,
    key: &SecretsKey,
    fid: i64,
    version: i64,
) -> Vec<(String, String)> {
    let ic = app
        .store
        .instance_config(fid, version)
        .await
        .unwrap()
        .unwrap();
    let mut env = ic.open(key, fid).unwrap();
    env.sort();
    env
}

async fn env_secrets_and_settings_round_trip(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = app.token("alice").await;
    let mut seen = Seen::default();
    app.deploy_ok(&t, "hello", HELLO).await;

    let c = config(&app, &t, "hello").await;
    assert_eq!(c["version"], 1);
    assert_eq!(c["env"], json!({}));
    assert_eq!(c["secrets"], json!([]));
    // The operator's defaults (SettingsPolicy's declared ones).
    assert_eq!(
        [&c["memory_mb"], &c["timeout_secs"], &c["max_instances"]],
        [&json!(256), &json!(30), &json!(1)]
    );
    assert_eq!(c["overrides"], json!({}));

    let (s, v) = seen
        .take(
            patch(
                &app,
                &t,
                "hello",
                r#"{"env":{"GREETING":"hi there","MODE":"x"},"memory_mb":512,"max_instances":3}"#,
            )
            .await,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"name":"hello","version":2,"url":"http://fn.example.test/fn/alice/hello"})
    );
    let c = config(&app, &t, "hello").await;
    assert_eq!(c["version"], 2);
    assert_eq!(c["env"], json!({"GREETING":"hi there","MODE":"x"}));
    assert_eq!(
        (c["memory_mb"].clone(), c["max_instances"].clone()),
        (json!(512), json!(3))
    );
    assert_eq!(c["overrides"], json!({"memory_mb":512,"max_instances":3}));

    // null unsets a var and returns a setting to the default.
    let (s, _) = seen
        .take(
            patch(
                &app,
                &t,
                "hello",
                r#"{"env":{"MODE":null},"memory_mb":null}"#,
            )
            .await,
        )
        .await;
    assert_eq!(s, 200);
    let c = config(&app, &t, "hello").await;
    assert_eq!(c["version"], 3);
    assert_eq!(c["env"], json!({"GREETING":"hi there"}));
    assert_eq!(c["memory_mb"], 256);
    assert_eq!(c["overrides"], json!({"max_instances":3}));

    // A secret: write-only, a new version, sealed in the database.
    let (s, v) = seen
        .take(put_secret(&app, &t, "hello", "API_KEY", PLAINTEXT.as_bytes()).await)
        .await;
    assert_eq!((s, v["version"].clone()), (200, json!(4)), "{v}");
    let (_, c) = seen.take(app.get(&t, "/func/hello/config").await).await;
    assert_eq!(c["secrets"], json!(["API_KEY"]));
    assert_eq!(c["env"], json!({"GREETING":"hi there"}));
    let fid = function_id(&app, "alice", "hello").await;
    assert_eq!(
        instance_env(&app, &secrets_key(), fid, 4).await,
        vec![
            ("API_KEY".to_owned(), PLAINTEXT.to_owned()),
            ("GREETING".to_owned(), "hi there".to_owned())
        ]
    );
    // The code is the deployed code, byte for byte.
    let code = app.get(&t, "/func/hello/code").await;
    assert_eq!(code.bytes().await.unwrap().as_ref(), HELLO.as_bytes());

    // Refused secrets: each says why, none is written.
    let big = vec![b'x'; 32 * 1024 + 1];
    for (key, value, status, code) in [
        ("bad-name", &b"v"[..], 400, "invalid_secret_name"),
        ("SKIFF_TOKEN", b"v", 400, "invalid_secret_name"),
        ("LD_PRELOAD", b"v", 400, "invalid_secret_name"),
        (
            "OTHER",
            b"\xff\xfe s3cr3t-plaintext-4f1d9a",
            400,
            "invalid_secret_value",
        ),
        ("OTHER", b"", 400, "invalid_secret_value"),
        ("OTHER", &big, 413, "payload_too_large"),
    ] {
        let r = put_secret(&app, &t, "hello", key, value).await;
        let (got, body) = seen.take(r).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{key}: {body}"
        );
    }
    assert_eq!(config(&app, &t, "hello").await["version"], 4);
    // Exactly 32 KiB is fine.
    let (s, _) = seen
        .take(put_secret(&app, &t, "hello", "BIG", &vec![b'y'; 32 * 1024]).await)
        .await;
    assert_eq!(s, 200);

    // Setting it again replaces the value; deleting it is a new version.
    let (s, _) = seen
        .take(put_secret(&app, &t, "hello", "API_KEY", b"second value").await)
        .await;
    assert_eq!(s, 200);
    let env = instance_env(&app, &secrets_key(), fid, 6).await;
    assert!(env.contains(&("API_KEY".to_owned(), "second value".to_owned())));
    let (s, v) = seen
        .take(app.delete(&t, "/func/hello/secrets/API_KEY").await)
        .await;
    assert_eq!((s, v["version"].clone()), (200, json!(7)));
    let (s, v) = seen
        .take(app.delete(&t, "/func/hello/secrets/API_KEY").await)
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (404, json!("secret_not_found"))
    );
    let c = config(&app, &t, "hello").await;
    assert_eq!(c["secrets"], json!(["BIG"]));

    // Everything a user can read about the function.
    for path in [
        "/func",
        "/func/hello",
        "/func/hello/config",
        "/func/hello/code",
        "/func/hello/versions/4/code",
        "/openapi.json",
    ] {
        seen.take(app.get(&t, path).await).await;
    }
    seen.assert_clean();
    if b == TestBackend::MySql {
        // The MariaDB server's data dir, when the test set-up names it
        // (tables, redo and undo logs): the value is only ever stored sealed.
        if let Some(dir) = std::env::var_os("SKIFF_TEST_MYSQL_DATADIR") {
            assert_not_in_files(std::path::Path::new(&dir), PLAINTEXT);
        }
    }
    if b == TestBackend::Sqlite {
        assert_not_in_files(app.data_dir.path(), PLAINTEXT);
        assert_not_in_files(
            std::path::Path::new(app.db_url.trim_start_matches("sqlite://"))
                .parent()
                .unwrap(),
            PLAINTEXT,
        );
    }
}

/// No file under `dir` holds `needle` (database files, WAL included).
fn assert_not_in_files(dir: &std::path::Path, needle: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            assert_not_in_files(&p, needle);
        } else if p.is_file() {
            let bytes = std::fs::read(&p).unwrap_or_default();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds the plaintext",
                p.display()
            );
        }
    }
}

async fn bad_patches_write_nothing(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = app.token("alice").await;
    app.deploy_ok(&t, "hello", HELLO).await;
    let ok = patch(
        &app,
        &t,
        "hello",
        r#"{"env":{"KEEP":"1"},"timeout_secs":60}"#,
    )
    .await;
    assert_eq!(ok.status(), 200);
    let before = config(&app, &t, "hello").await;
    let long = format!(r#"{{"env":{{"LONG":"{}"}}}}"#, "x".repeat(32 * 1024 + 1));
    let cases: Vec<(&str, String, &str)> = vec![
        ("bad name", r#"{"env":{"bad-name":"x"}}"#.into(), "bad-name"),
        ("digit first", r#"{"env":{"1A":"x"}}"#.into(), "1A"),
        (
            "reserved SKIFF_",
            r#"{"env":{"SKIFF_X":"x"}}"#.into(),
            "SKIFF_X",
        ),
        (
            "reserved LD_",
            r#"{"env":{"LD_PRELOAD":"/x.so"}}"#.into(),
            "LD_PRELOAD",
        ),
        (
            "reserved proxy",
            r#"{"env":{"HTTPS_PROXY":"http://x"}}"#.into(),
            "HTTPS_PROXY",
        ),
        ("value too long", long, "LONG"),
        ("value not a string", r#"{"env":{"A":1}}"#.into(), "env.A"),
        (
            "over the maximum",
            r#"{"memory_mb":999999}"#.into(),
            "memory_mb",
        ),
        (
            "zero timeout",
            r#"{"timeout_secs":0}"#.into(),
            "timeout_secs",
        ),
        ("negative", r#"{"concurrency":-1}"#.into(), "concurrency"),
        (
            "min above max",
            r#"{"min_instances":3,"max_instances":2}"#.into(),
            "min_instances",
        ),
        ("unknown field", r#"{"memroy_mb":512}"#.into(), "memroy_mb"),
        (
            "secrets field",
            r#"{"secrets":{"K":"v"}}"#.into(),
            "secrets",
        ),
        ("nothing to change", "{}".into(), "changes nothing"),
        ("not an object", "[1]".into(), "JSON object"),
    ];
    for (what, body, named) in cases {
        let r = patch(&app, &t, "hello", &body).await;
        assert_eq!(r.status(), 400, "{what}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_config", "{what}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{what}: {message}");
    }
    for malformed in ["{", "", "{\"env\":", "nul"] {
        let r = patch(&app, &t, "hello", malformed).await;
        assert_eq!(error_code(r, 400).await, "invalid_json", "{malformed:?}");
    }
    let huge = format!(r#"{{"env":{{"A":"{}"}}}}"#, "x".repeat(600 * 1024));
    assert_eq!(
        error_code(patch(&app, &t, "hello", &huge).await, 413).await,
        "payload_too_large"
    );
    // Nothing was written: same live version, same configuration, no new version.
    assert_eq!(config(&app, &t, "hello").await, before);
    let info: Value = app.function(&t, "hello").await.json().await.unwrap();
    assert_eq!(info["latest_version"], 2);
    assert_eq!(before["env"], json!({"KEEP":"1"}));
    assert_eq!(before["timeout_secs"], 60);
}

const V2: &str = "export default (req: Request) => new Response('two');\n";

async fn rollback_and_old_versions(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = app.token("alice").await;
    app.deploy_ok(&t, "hello", HELLO).await;
    app.deploy_ok(&t, "hello", V2).await;

    // Default: the one before the live one.
    let r = post(&app, &t, "/func/hello/rollback").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"name":"hello","version":1,"url":"http://fn.example.test/fn/alice/hello"})
    );
    let info: Value = app.function(&t, "hello").await.json().await.unwrap();
    assert_eq!(info["version"], 1);
    assert_eq!(info["latest_version"], 2);
    let live: Vec<(i64, bool)> = info["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_i64().unwrap(), v["live"].as_bool().unwrap()))
        .collect();
    assert_eq!(live, vec![(1, true), (2, false)]);
    let code = app.get(&t, "/func/hello/code").await.bytes().await.unwrap();
    assert_eq!(code.as_ref(), HELLO.as_bytes());
    // Nothing before version 1.
    let r = post(&app, &t, "/func/hello/rollback").await;
    assert_eq!(error_code(r, 409).await, "no_previous_version");

    // Forward again by number.
    let r = post(&app, &t, "/func/hello/rollback?version=2").await;
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);
    for bad in ["0", "-1", "abc", "1.5", ""] {
        let r = post(&app, &t, &format!("/func/hello/rollback?version={bad}")).await;
        assert_eq!(error_code(r, 400).await, "invalid_version", "{bad:?}");
    }
    let r = post(&app, &t, "/func/hello/rollback?version=99").await;
    assert_eq!(error_code(r, 404).await, "version_not_found");

    // Any version's code, byte for byte, with its type.
    for (n, src) in [(1, HELLO), (2, V2)] {
        let r = app.get(&t, &format!("/func/hello/versions/{n}/code")).await;
        assert_eq!(r.status(), 200);
        let ctype = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ctype.starts_with("application/typescript"), "{ctype}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), src.as_bytes());
    }
    let r = app.get(&t, "/func/hello/versions/3/code").await;
    assert_eq!(error_code(r, 404).await, "version_not_found");
    let r = app.get(&t, "/func/hello/versions/x/code").await;
    assert_eq!(error_code(r, 400).await, "invalid_version");

    // A configuration change after a rollback carries the rolled-back code.
    assert_eq!(
        post(&app, &t, "/func/hello/rollback?version=1")
            .await
            .status(),
        200
    );
    let r = patch(&app, &t, "hello", r#"{"env":{"A":"1"}}"#).await;
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 3);
    let code = app
        .get(&t, "/func/hello/versions/3/code")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(code.as_ref(), HELLO.as_bytes());
    // Rolling back from 3 goes to 2 (the newest before it), not 1.
    let r = post(&app, &t, "/func/hello/rollback").await;
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);
}

async fn another_users_function_is_missing_on_every_route(b: TestBackend) {
    let app = spawn_app(b).await;
    let alice = app.token("alice").await;
    let bob = app.token("bob").await;
    app.deploy_ok(&alice, "hello", HELLO).await;
    assert_eq!(
        put_secret(&app, &alice, "hello", "K", b"v").await.status(),
        200
    );
    use reqwest::Method as M;
    let routes: Vec<(M, &str, Option<&[u8]>)> = vec![
        (M::GET, "config", None),
        (M::PATCH, "config", Some(br#"{"env":{"A":"1"}}"#)),
        (M::PUT, "secrets/K", Some(b"stolen")),
        (M::DELETE, "secrets/K", None),
        (M::POST, "rollback", None),
        (M::POST, "rollback?version=1", None),
        (M::GET, "versions/1/code", None),
    ];
    for (method, rest, body) in routes {
        let mut answers = Vec::new();
        for name in ["hello", "nothing"] {
            let r = send(
                &app,
                method.clone(),
                &bob,
                &format!("/func/{name}/{rest}"),
                body.map(<[u8]>::to_vec),
            )
            .await;
            assert_eq!(r.status(), 404, "{method} {name}/{rest}");
            answers.push(r.text().await.unwrap());
        }
        // Alice's function answers exactly like a missing one.
        assert_eq!(answers[0], answers[1], "{method} {rest}");
        assert!(answers[0].contains("\"not_found\""), "{}", answers[0]);
    }
    // Alice's function is untouched.
    let c = config(&app, &alice, "hello").await;
    assert_eq!(
        (c["version"].clone(), c["secrets"].clone()),
        (json!(2), json!(["K"]))
    );
}

async fn quotas_are_refused_with_their_value(b: TestBackend) {
    let quotas = Quotas {
        max_functions: 2,
        max_versions: 3,
        ..skiff_core::settings::defaults().unwrap()
    };
    let app = spawn_app_with(
        b,
        Options {
            quotas,
            ..Options::default()
        },
    )
    .await;
    let t = app.token("alice").await;
    app.deploy_ok(&t, "one", HELLO).await;
    app.deploy_ok(&t, "two", HELLO).await;
    let r = app.deploy(&t, "three", HELLO).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "quota_exceeded");
    assert_eq!(
        v["error"]["message"],
        "quota exceeded: functions per user is 2"
    );
    let list: Value = app.get(&t, "/func").await.json().await.unwrap();
    assert_eq!(list["functions"].as_array().unwrap().len(), 2);
    assert_eq!(
        error_code(app.function(&t, "three").await, 404).await,
        "not_found"
    );

    // Versions: the oldest are pruned, the kept window is visible.
    for i in 0..4 {
        let r = patch(&app, &t, "one", &format!(r#"{{"env":{{"N":"{i}"}}}}"#)).await;
        assert_eq!(r.status(), 200);
    }
    let info: Value = app.function(&t, "one").await.json().await.unwrap();
    let kept: Vec<i64> = info["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(kept, vec![3, 4, 5]);
    let r = post(&app, &t, "/func/one/rollback?version=1").await;
    assert_eq!(error_code(r, 404).await, "version_not_found");
    let r = app.get(&t, "/func/one/versions/2/code").await;
    assert_eq!(error_code(r, 404).await, "version_not_found");

    // Stored bytes, through a per-user override: refused, nothing stored.
    let bob = app.token("bob").await;
    let limits = UserLimits {
        max_artifact_bytes: Some(10),
        ..UserLimits::default()
    };
    app.store
        .set_user_limits(&UserName::parse("bob").unwrap(), &limits)
        .await
        .unwrap();
    let r = app.deploy(&bob, "big", HELLO).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "quota_exceeded");
    assert_eq!(
        v["error"]["message"],
        "quota exceeded: stored bytes per user is 10"
    );
    let list: Value = app.get(&bob, "/func").await.json().await.unwrap();
    assert_eq!(list["functions"], json!([]));
}

fn config_on(url: &str, key: &str, data_dir: &std::path::Path) -> ManagerConfig {
    let mut c = ManagerConfig::new(url, Secret::new(SECRET), data_dir.to_path_buf());
    c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.secrets_key = SecretsKey::parse(key).unwrap();
    c
}

const OTHER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Runs the manager binary on `db_url` with `key` (None: no key) and `args`.
fn manager_bin(db_url: &str, key: Option<&str>, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_skiff-manager"));
    cmd.args(args)
        .env_remove("SKIFF_SECRETS_KEY")
        .env_remove("SKIFF_NEW_SECRETS_KEY")
        .env("SKIFF_DATABASE_URL", db_url)
        .env("SKIFF_JWT_SECRET", SECRET)
        .env("SKIFF_LISTEN", "127.0.0.1:0")
        .env("SKIFF_DATA_DIR", dir.path())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    if let Some(k) = key {
        cmd.env("SKIFF_SECRETS_KEY", k);
    }
    cmd.output().unwrap()
}

async fn a_wrong_key_stops_the_start(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = app.token("alice").await;
    app.deploy_ok(&t, "hello", HELLO).await;
    assert_eq!(
        put_secret(&app, &t, "hello", "K", PLAINTEXT.as_bytes())
            .await
            .status(),
        200
    );

    // Embedded: building the application fails with the key's fingerprint.
    let dir = tempfile::tempdir().unwrap();
    let other = config_on(&app.db_url, OTHER_KEY, dir.path());
    let fingerprint = other.secrets_key.fingerprint();
    let e = match Application::build(other).await {
        Ok(_) => panic!("a manager started with the wrong secrets key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("not the key this database's secrets were sealed with"),
        "{e}"
    );
    assert!(e.contains(&fingerprint), "{e}");
    // The right key still starts.
    let same = config_on(&app.db_url, SECRETS_KEY, dir.path());
    assert!(Application::build(same).await.is_ok());

    // The binary: non-zero exit, one clear line, never the key.
    let out = tokio::task::spawn_blocking({
        let url = app.db_url.clone();
        move || manager_bin(&url, Some(OTHER_KEY), &[])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("SKIFF_SECRETS_KEY is not the key"),
        "{stderr}"
    );
    assert!(!stderr.contains(OTHER_KEY), "{stderr}");
    for (key, says) in [
        (None, "SKIFF_SECRETS_KEY is required"),
        (
            Some("hunter2-is-not-a-key"),
            "SKIFF_SECRETS_KEY must be 32 bytes",
        ),
    ] {
        let url = app.db_url.clone();
        let out = tokio::task::spawn_blocking(move || manager_bin(&url, key, &[]))
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

async fn rotate_key_with_the_binary(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = app.token("alice").await;
    app.deploy_ok(&t, "hello", HELLO).await;
    assert_eq!(
        put_secret(&app, &t, "hello", "API_KEY", PLAINTEXT.as_bytes())
            .await
            .status(),
        200
    );
    let fid = function_id(&app, "alice", "hello").await;
    let new = SecretsKey::parse(OTHER_KEY).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("new-key");
    std::fs::write(&key_file, format!("{OTHER_KEY}\n")).unwrap();
    let args = [
        "secrets",
        "rotate-key",
        "--new-key-file",
        key_file.to_str().unwrap(),
    ];
    // With the wrong current key: refused, nothing changed.
    let url = app.db_url.clone();
    let refused = tokio::task::spawn_blocking({
        let url = url.clone();
        let args = args.map(str::to_owned);
        move || manager_bin(&url, Some(OTHER_KEY), &args.each_ref().map(String::as_str))
    })
    .await
    .unwrap();
    assert!(!refused.status.success());
    app.store
        .check_secrets_key(&secrets_key(), false)
        .await
        .unwrap();

    let out = tokio::task::spawn_blocking({
        let args = args.map(str::to_owned);
        move || {
            manager_bin(
                &url,
                Some(SECRETS_KEY),
                &args.each_ref().map(String::as_str),
            )
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("re-sealed 1 secret"), "{stdout}");
    assert!(stdout.contains(&new.fingerprint()), "{stdout}");
    assert!(stdout.contains("Restart"), "{stdout}");
    assert!(
        !stdout.contains(OTHER_KEY) && !stdout.contains(SECRETS_KEY),
        "{stdout}"
    );

    // The function's secret opens under the new key only.
    let env = instance_env(&app, &new, fid, 2).await;
    assert_eq!(env, vec![("API_KEY".to_owned(), PLAINTEXT.to_owned())]);
    let ic = app.store.instance_config(fid, 2).await.unwrap().unwrap();
    assert!(ic.open(&secrets_key(), fid).is_err());
    assert!(
        app.store
            .check_secrets_key(&secrets_key(), false)
            .await
            .is_err()
    );
    app.store.check_secrets_key(&new, false).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(
        Application::build(config_on(&app.db_url, SECRETS_KEY, dir.path()))
            .await
            .is_err()
    );
    assert!(
        Application::build(config_on(&app.db_url, OTHER_KEY, dir.path()))
            .await
            .is_ok()
    );
}

async fn no_log_holds_a_secret_and_limits_come_from_the_shell(b: TestBackend) {
    let db = skiff_testkit::TestDb::new(b).await;
    let data_dir = tempfile::tempdir().unwrap();
    let service = skiff_testkit::Launch::manager(
        env!("CARGO_BIN_EXE_skiff-manager"),
        &db.url,
        data_dir.path(),
    )
    .clean_env()
    .env("RUST_LOG", "debug")
    .start()
    .await;
    let api = skiff_testkit::ApiClient::new(service.url());
    let t = api.token("alice").await;
    api.deploy_ok(&t, "hello", HELLO).await;
    let http = reqwest::Client::new();
    let put = |key: &str, body: Vec<u8>| {
        http.put(api.url(&format!("/func/hello/secrets/{key}")))
            .bearer_auth(&t)
            .body(body)
            .send()
    };
    assert_eq!(
        put("API_KEY", PLAINTEXT.into()).await.unwrap().status(),
        200
    );
    // Refused values that hold it: not UTF-8, too large; and a bad name.
    let mut not_utf8 = PLAINTEXT.as_bytes().to_vec();
    not_utf8.push(0xff);
    assert_eq!(put("A", not_utf8).await.unwrap().status(), 400);
    let mut big = PLAINTEXT.repeat(2000).into_bytes();
    big.truncate(40 * 1024);
    assert_eq!(put("B", big).await.unwrap().status(), 413);
    assert_eq!(
        put("bad-name", PLAINTEXT.into()).await.unwrap().status(),
        400
    );
    let r = http
        .patch(api.url("/func/hello/config"))
        .bearer_auth(&t)
        .body(format!(r#"{{"secrets":{{"K":"{PLAINTEXT}"}}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(!body.contains(PLAINTEXT), "{body}");
    let r = http
        .post(api.url("/func/hello/rollback"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log = service.log();
    assert!(log.contains("secret set"), "{log}");
    assert!(
        !log.contains(PLAINTEXT),
        "the secret's value in the log:\n{log}"
    );

    // Per-user quotas from the shell, seen by the running manager at once.
    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        manager_bin(
            &url,
            None,
            &["user", "limits", "alice", "--functions", "1", "--rps", "5"],
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("functions       1 (set for this user)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("requests/s      5 (set for this user)"),
        "{stdout}"
    );
    assert!(stdout.contains("versions kept   20\n"), "{stdout}");
    let r = api.deploy(&t, "second", HELLO).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["error"]["message"],
        "quota exceeded: functions per user is 1"
    );
    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        manager_bin(
            &url,
            None,
            &["user", "limits", "alice", "--functions", "default"],
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("functions       100\n"), "{stdout}");
    assert!(
        stdout.contains("requests/s      5 (set for this user)"),
        "{stdout}"
    );
    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        manager_bin(&url, None, &["user", "limits", "nobody", "--clear"])
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user nobody"));
    service.stop().await;
}
