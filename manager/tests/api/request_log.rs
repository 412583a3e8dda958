//! What the manager logs, read from the real `skiff-manager` binary's output
//! (its own logging set-up, at `RUST_LOG=debug`): secrets a client put in a
//! query string, a header or a body never appear; paths and the real client
//! address do. With `SKIFF_LOG_FORMAT=json` every line is one JSON object,
//! and a function's secrets, the password and the token are in none.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_testkit::{ApiClient, Launch, Scrape, Service, TestBackend, TestDb};

use crate::helpers::{SECRET, client_from};

skiff_testkit::on_both_backends!(
    secrets_in_urls_headers_and_bodies_never_reach_the_log,
    json_logs_are_one_object_per_line_and_hold_no_secret,
);

/// The running binary (killed when dropped) and everything it printed.
struct LoggedManager {
    service: Service,
}

impl LoggedManager {
    async fn start(db: &TestDb, data_dir: &std::path::Path) -> LoggedManager {
        Self::start_in(db, data_dir, "text").await
    }

    /// With `SKIFF_LOG_FORMAT=format`.
    async fn start_in(db: &TestDb, data_dir: &std::path::Path, format: &str) -> LoggedManager {
        let service = Launch::manager(env!("CARGO_BIN_EXE_skiff-manager"), &db.url, data_dir)
            .clean_env()
            .env("SKIFF_JWT_SECRET", SECRET)
            .env("SKIFF_TRUSTED_PROXIES", "127.0.0.1/32")
            .env("RUST_LOG", "debug")
            .env("SKIFF_LOG_FORMAT", format)
            .start()
            .await;
        LoggedManager { service }
    }

    fn log(&self) -> String {
        self.service.log()
    }

    /// Waits (bounded) until `found` finds something in the log.
    async fn wait_for<T>(&self, found: impl Fn(&str) -> Option<T>) -> T {
        for _ in 0..1200 {
            if let Some(t) = found(&self.log()) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("not found in the manager's log:\n{}", self.log());
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.service.url())
    }
}

async fn secrets_in_urls_headers_and_bodies_never_reach_the_log(b: TestBackend) {
    let db = TestDb::new(b).await;
    let data_dir = tempfile::tempdir().unwrap();
    let m = LoggedManager::start(&db, data_dir.path()).await;
    let proxy = client_from("127.0.0.1");
    let other_machine = client_from("127.0.0.2");
    let mut secrets: Vec<String> = (1..=20).map(|i| format!("s3cr3t{i:02}x")).collect();
    let s = |i: usize| secrets[i - 1].clone();
    let password = format!("password {}", s(1));

    let r = proxy
        .post(m.url(&format!("/register?password={}", s(2))))
        .json(&json!({"username": "alice", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = proxy
        .post(m.url(&format!("/login?password={}&user=alice", s(3))))
        .header("x-forwarded-for", "198.51.100.77")
        .json(&json!({"username": "alice", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = proxy
        .post(m.url(&format!("/login?password={}", s(4))))
        .json(&json!({"username": "alice", "password": s(5)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A body that is not JSON: the parser's error goes back to the client only.
    let r = proxy
        .post(m.url("/login"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"username\":\"alice\",\"password\":\"{}\"",
            s(6)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A deploy whose source holds a secret and is refused (its diagnostics
    // quote the source), with a valid token and secrets in other headers.
    let source = format!(
        "import k from \"file:///{}\";\nconst key: number = \"{}\";\nexport default () => new Response(key + k);\n",
        s(7),
        s(8)
    );
    let r = proxy
        .post(m.url(&format!("/func?name=hello&token={}", s(9))))
        .bearer_auth(&token)
        .header("cookie", format!("session={}", s(10)))
        .header("x-api-key", s(11))
        .body(source)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_client_error() || r.status() == 503,
        "{}",
        r.status()
    );
    let r = proxy
        .get(m.url(&format!("/func?access_token={}", s(12))))
        .bearer_auth(s(13))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = proxy
        .get(m.url(&format!("/func/hello/code?sig={}", s(14))))
        .header("proxy-authorization", format!("Basic {}", s(15)))
        .header("authorization", format!("Basic {}", s(16)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = proxy
        .delete(m.url(&format!("/login?password={}", s(17))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = proxy
        .get(m.url(&format!("/nope?secret={}", s(18))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = proxy
        .get(m.url(&format!("/healthz?probe={}", s(19))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A machine that is not a proxy claims to be someone else.
    let r = other_machine
        .get(m.url(&format!("/forged-client?x={}", s(20))))
        .header("x-forwarded-for", "203.0.113.66")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = proxy.get(m.url("/the-end")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // The last request's line (in any format) says the log is complete.
    let log = m
        .wait_for(|log| log.contains("/the-end").then(|| log.to_owned()))
        .await;

    secrets.push(token.clone());
    secrets.push(password.clone());
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "{secret:?} is in the manager's log:\n{log}"
        );
    }
    // The token's signature alone is a secret too (the JWT parts are logged nowhere).
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "the token's signature is logged");
    for (path, status) in [
        ("/register", 201),
        ("/login", 200),
        ("/login", 401),
        ("/login", 400),
        ("/func", 401),
        ("/func/hello/code", 401),
        ("/login", 405),
        ("/nope", 404),
        ("/healthz", 200),
    ] {
        let line = format!("path={path} ");
        assert!(
            log.lines()
                .any(|l| l.contains(&line) && l.contains(&format!("status={status}"))),
            "no log line for {path} answered {status}:\n{log}"
        );
    }
    // The client is the real one: behind the proxy, the address it forwarded;
    // a direct client, its own address whatever header it sends.
    assert!(log.contains("client=198.51.100.77"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("path=/forged-client") && l.contains("client=127.0.0.2")),
        "{log}"
    );
    assert!(!log.contains("203.0.113.66"), "a forged address is logged");
}

async fn json_logs_are_one_object_per_line_and_hold_no_secret(b: TestBackend) {
    let db = TestDb::new(b).await;
    let data_dir = tempfile::tempdir().unwrap();
    let m = LoggedManager::start_in(&db, data_dir.path(), "json").await;
    let api = ApiClient::new(m.service.url());
    let password = "json log password 7f3a9c";
    let secret = "sk-live-5e3c8f0a9b1d2e4f";
    let token = api.token_as("alice", password).await;
    let source = "export default () => new Response(Deno.env.get('API_KEY') ? 'set' : 'unset');\n";
    api.deploy_ok(&token, "hello", source).await;
    let http = reqwest::Client::new();
    let r = http
        .put(m.url("/func/hello/secrets/API_KEY"))
        .bearer_auth(&token)
        .body(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .patch(m.url("/func/hello/config"))
        .bearer_auth(&token)
        .json(&json!({"env": {"MODE": "production"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let config: Value = api
        .get(&token, "/func/hello/config")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(config["secrets"], json!(["API_KEY"]));
    let r = http.get(m.url("/the-end")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let log = m
        .wait_for(|log| log.contains("/the-end").then(|| log.to_owned()))
        .await;

    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect();
    for e in &events {
        assert!(e["timestamp"].is_string() && e["level"].is_string(), "{e}");
    }
    for kept in [secret, password, &token, token.rsplit('.').next().unwrap()] {
        assert!(
            !log.contains(kept),
            "{kept:?} is in the manager's log:\n{log}"
        );
    }
    // The request lines are there, as fields a log pipeline can filter on.
    assert!(
        events
            .iter()
            .any(|e| e.to_string().contains("/func/hello/secrets/API_KEY")),
        "{log}"
    );
    // The binary's metrics listener (SKIFF_METRICS_LISTEN, port 0 here)
    // counted the deploy; its address is in the start-up event.
    let addr = events
        .iter()
        .find_map(|e| {
            let message = e["fields"]["message"].as_str()?;
            message
                .starts_with("metrics at")
                .then(|| e["fields"]["addr"].as_str())?
        })
        .unwrap_or_else(|| panic!("no metrics address in:\n{log}"));
    let metrics = Scrape::get(&format!("http://{addr}/metrics")).await;
    assert_eq!(metrics.value("skiff_deploys_total{result=\"ok\"}"), 1.0);
    assert_eq!(metrics.value("skiff_logins_total{result=\"ok\"}"), 1.0);
}
