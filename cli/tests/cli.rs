//! The `skiff` command against a real manager and router: what a user types.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use skiff_testkit::{ApiClient, Launch, Scrape, Service};

/// `skiff dev` (manager and router on SQLite) on port 0, and a scratch dir
/// for the command's config and files.
struct Env {
    api: String,
    dir: tempfile::TempDir,
    _dev: Service,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let dev = Launch::dev(env!("CARGO_BIN_EXE_skiff"), &dir.path().join("data"))
        .start()
        .await;
    Env {
        api: dev.url_of("manager"),
        dir,
        _dev: dev,
    }
}

impl Env {
    /// Runs `skiff ARGS` with `stdin`, in its own config file, off the async workers.
    async fn skiff(&self, args: &[&str], stdin: &str) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
        cmd.args(args)
            .env("SKIFF_SERVER", &self.api)
            .env("SKIFF_CONFIG", self.config())
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let input = stdin.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap()
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("cfg/skiff.json")
    }
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_session_from_register_to_rm() {
    let env = start().await;
    let pw = "a long password\n";
    ok(&env
        .skiff(&["register", "--username", "alice", "--password-stdin"], pw)
        .await);
    let out = ok(&env
        .skiff(&["login", "--username", "alice", "--password-stdin"], pw)
        .await);
    assert!(out.contains("logged in as alice"), "{out}");
    let mode = std::fs::metadata(env.config())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the token file must be private");
    let saved: Value = serde_json::from_slice(&std::fs::read(env.config()).unwrap()).unwrap();
    assert!(saved["token"].as_str().unwrap().len() > 20);

    // a wrong password is an error with the server's message, and keeps the saved token
    let bad = env
        .skiff(
            &["login", "--username", "alice", "--password-stdin"],
            "wrong password\n",
        )
        .await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("wrong username or password"));

    let file = env.dir.path().join("greet.ts");
    std::fs::write(
        &file,
        "export default async (req: Request) => { console.log('called'); return new Response('hi ' + req.method + ' ' + new URL(req.url).pathname + ' ' + await req.text()); };\n",
    )
    .unwrap();
    let out = ok(&env.skiff(&["deploy", file.to_str().unwrap()], "").await);
    assert!(out.contains("created greet version 1"), "{out}");
    let out = ok(&env
        .skiff(
            &[
                "deploy",
                file.to_str().unwrap(),
                "--name",
                "other",
                "--json",
            ],
            "",
        )
        .await);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["version"].as_i64()),
        (Some("other"), Some(1))
    );

    let out = ok(&env.skiff(&["ls", "--json"], "").await);
    let v: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<_> = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["greet", "other"]);
    let out = ok(&env.skiff(&["ls"], "").await);
    assert!(out.starts_with("NAME") && out.contains("greet"), "{out}");
    let out = ok(&env.skiff(&["info", "greet"], "").await);
    assert!(
        out.contains("version:  1") && out.contains("/fn/alice/greet"),
        "{out}"
    );

    // the router learns of the deploy within a poll; invoke until it answers
    let mut answer = String::new();
    for _ in 0..100 {
        let o = env
            .skiff(
                &["invoke", "greet", "/path", "-X", "POST", "-d", "data"],
                "",
            )
            .await;
        if o.status.success() {
            answer = String::from_utf8_lossy(&o.stdout).into_owned();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(answer, "hi POST /path data");
    let mut logs = String::new();
    for _ in 0..50 {
        logs = ok(&env.skiff(&["logs", "greet"], "").await);
        if logs.contains("called") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(logs.contains("stdout | called"), "{logs}");

    let out = ok(&env.skiff(&["rm", "greet"], "").await);
    assert!(out.contains("deleted greet"));
    let gone = env.skiff(&["info", "greet"], "").await;
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("404"));
    // a type error is a warning with the compiler's words; --strict refuses it
    let bad = env.dir.path().join("bad.ts");
    std::fs::write(
        &bad,
        "const n: number = 'x';\nexport default () => new Response(String(n));\n",
    )
    .unwrap();
    let o = env.skiff(&["deploy", bad.to_str().unwrap()], "").await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("warning") && err.contains("TS2322"), "{err}");
    let o = env
        .skiff(
            &[
                "deploy",
                "--strict",
                "--name",
                "strict",
                bad.to_str().unwrap(),
            ],
            "",
        )
        .await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("TS2322"));
    assert!(Path::new(&env.config()).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn env_secrets_versions_and_rollback() {
    let env = start().await;
    let pw = "a long password\n";
    ok(&env
        .skiff(&["register", "--username", "carol", "--password-stdin"], pw)
        .await);
    ok(&env
        .skiff(&["login", "--username", "carol", "--password-stdin"], pw)
        .await);
    let file = env.dir.path().join("cfg.ts");
    std::fs::write(&file, "export default () => new Response('one');\n").unwrap();
    ok(&env.skiff(&["deploy", file.to_str().unwrap()], "").await);

    // SPEC's order: the function's name comes last for `env set|unset`.
    let out = ok(&env
        .skiff(&["env", "set", "GREETING=hello world", "EMPTY=", "cfg"], "")
        .await);
    assert!(out.contains("cfg is now at version 2"), "{out}");
    let out = ok(&env.skiff(&["env", "ls", "cfg"], "").await);
    assert!(
        out.contains("GREETING=hello world") && out.contains("EMPTY="),
        "{out}"
    );
    assert!(out.contains("secrets:  (none)"), "{out}");
    assert!(
        out.contains("memory_mb") && out.contains("(default)"),
        "{out}"
    );
    ok(&env.skiff(&["env", "unset", "EMPTY", "cfg"], "").await);
    let v: Value =
        serde_json::from_str(&ok(&env.skiff(&["env", "ls", "cfg", "--json"], "").await)).unwrap();
    assert_eq!(v["env"], serde_json::json!({"GREETING": "hello world"}));
    assert_eq!(v["version"], 3);
    let bad = env.skiff(&["env", "set", "SKIFF_X=1", "cfg"], "").await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("reserved"));
    let bad = env.skiff(&["env", "set", "NOEQUALS", "cfg"], "").await;
    assert!(!bad.status.success());

    // A secret from stdin: one trailing newline dropped, never printed.
    let value = "pipe-secret-value-81b2";
    let out = env
        .skiff(&["secret", "set", "cfg", "API_KEY"], &format!("{value}\n"))
        .await;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(!printed.contains(value), "{printed}");
    let out = ok(&env.skiff(&["secret", "ls", "cfg"], "").await);
    assert_eq!(out.trim(), "API_KEY");
    let empty = env.skiff(&["secret", "set", "cfg", "OTHER"], "").await;
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("empty"));
    // The function reads it (and only its own names).
    std::fs::write(
        &file,
        "export default () => new Response(`${Deno.env.get('API_KEY')}|${Deno.env.get('GREETING')}`);\n",
    )
    .unwrap();
    ok(&env.skiff(&["deploy", file.to_str().unwrap()], "").await);
    let out = ok(&env.skiff(&["info", "cfg"], "").await);
    assert!(!out.contains(value), "{out}");

    // Versions: the live one is marked; rollback moves it back.
    let out = ok(&env.skiff(&["versions", "cfg"], "").await);
    let live: Vec<&str> = out.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(live.len(), 1, "{out}");
    assert!(live[0].contains(" 5 "), "{out}");
    let out = ok(&env.skiff(&["rollback", "cfg"], "").await);
    assert!(out.contains("version 4"), "{out}");
    let out = ok(&env.skiff(&["rollback", "cfg", "2"], "").await);
    assert!(out.contains("version 2"), "{out}");
    let v: Value =
        serde_json::from_str(&ok(&env.skiff(&["env", "ls", "cfg", "--json"], "").await)).unwrap();
    assert_eq!(
        v["env"],
        serde_json::json!({"GREETING": "hello world", "EMPTY": ""})
    );
    let gone = env.skiff(&["rollback", "cfg", "99"], "").await;
    assert!(String::from_utf8_lossy(&gone.stderr).contains("version_not_found"));
    ok(&env.skiff(&["rollback", "cfg", "5"], "").await);
    ok(&env.skiff(&["secret", "rm", "cfg", "API_KEY"], "").await);
    let out = ok(&env.skiff(&["secret", "ls", "cfg"], "").await);
    assert!(out.contains("has no secrets"), "{out}");
    let missing = env.skiff(&["secret", "rm", "cfg", "API_KEY"], "").await;
    assert!(String::from_utf8_lossy(&missing.stderr).contains("secret_not_found"));

    // skiff dev keeps its secrets key private in the data dir.
    let key = env.dir.path().join("data/secrets-key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 64);
}

/// `skiff dev` with a deploy and two calls behind it, and its metrics scraped.
async fn dev_after_traffic() -> (Service, tempfile::TempDir, Scrape) {
    let dir = tempfile::tempdir().unwrap();
    let dev = Launch::dev(env!("CARGO_BIN_EXE_skiff"), &dir.path().join("data"))
        .start()
        .await;
    let api = ApiClient::new(dev.url_of("manager"));
    let token = api.token("alice").await;
    api.deploy_ok(
        &token,
        "hello",
        "export default () => new Response('hi');\n",
    )
    .await;
    for _ in 0..2 {
        let r = api.call(&dev.url_of("router"), "alice", "hello", "/").await;
        assert_eq!(r.status(), 200);
    }
    let metrics = Scrape::get(&format!("{}/metrics", dev.url_of("metrics"))).await;
    (dev, dir, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_serves_the_metrics_on_its_own_address() {
    let (dev, _dir, m) = dev_after_traffic().await;
    assert_eq!(m.value("skiff_deploys_total{result=\"ok\"}"), 1.0);
    assert_eq!(m.value("skiff_logins_total{result=\"ok\"}"), 1.0);
    assert_eq!(m.value("skiff_deploy_duration_seconds_count"), 1.0);
    // The address is printed with the others.
    let printed = format!("Metrics: {}/metrics", dev.url_of("metrics"));
    assert!(dev.log().contains(&printed), "{}", dev.log());
    // Neither public port serves them.
    let client = reqwest::Client::new();
    for url in [
        format!("{}/metrics", dev.url_of("manager")),
        format!("{}/metrics", dev.url_of("router")),
    ] {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 404, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_metrics_hold_the_routers_families_too() {
    let (_dev, _dir, m) = dev_after_traffic().await;
    assert!(m.has_family("skiff_deploys_total"), "{}", m.text);
    assert!(m.has_family("skiff_requests_total"), "{}", m.text);
    assert_eq!(
        m.value("skiff_requests_total{user=\"alice\",function=\"hello\",status=\"200\"}"),
        2.0
    );
    assert_eq!(
        m.value("skiff_cold_starts_total{user=\"alice\",function=\"hello\"}"),
        1.0
    );
}

/// A free loopback port (for Prometheus's own listener).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Prometheus (Debian's `prometheus`) scraping `skiff dev`'s metrics
/// address every second; stopped with the returned guard.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: skiff\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let bin = std::env::var("SKIFF_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e} (the test suite installs Debian's prometheus)"));
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The value of an instant PromQL query with one result, if it has one.
    async fn query(&self, promql: &str) -> Option<f64> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            [("query", promql)],
        )
        .ok()?;
        let r = reqwest::get(url).await.ok()?;
        let v: Value = r.json().await.ok()?;
        let result = v["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits (bounded) until `promql` gives `want`; returns what it gave last.
    async fn until(&self, promql: &str, want: f64) -> Option<f64> {
        let mut last = None;
        for _ in 0..120 {
            last = self.query(promql).await;
            if last == Some(want) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        last
    }
}

/// Known traffic through `skiff dev` — 10 calls, 3 of them errors, 2 cold
/// starts, 2 good deploys and 1 refused — read back through a real
/// Prometheus with PromQL, and through `skiff stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_sees_the_known_traffic_and_skiff_stats_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Launch::dev(env!("CARGO_BIN_EXE_skiff"), &dir.path().join("data"))
        .env("SKIFF_STATS_FLUSH_MS", "200")
        .start()
        .await;
    let metrics = dev.url_of("metrics");
    let prom = Prometheus::start(metrics.trim_start_matches("http://"));
    let api = ApiClient::new(dev.url_of("manager"));
    let token = api.token("alice").await;
    let source = "export default (req: Request) => new URL(req.url).pathname === \"/fail\"\n  ? new Response(\"no\", { status: 500 })\n  : new Response(\"ok\");\n";
    api.deploy_ok(&token, "one", source).await;
    api.deploy_ok(&token, "two", source).await;
    assert_eq!(
        api.deploy(&token, "bad", "export default (").await.status(),
        400
    );
    let router = dev.url_of("router");
    for (name, path) in [
        ("one", "/"),
        ("one", "/fail"),
        ("one", "/"),
        ("one", "/"),
        ("one", "/fail"),
        ("two", "/"),
        ("two", "/"),
        ("two", "/fail"),
        ("two", "/"),
        ("two", "/"),
    ] {
        api.call(&router, "alice", name, path).await;
    }

    let up = prom.until("up{job=\"skiff\"}", 1.0).await;
    assert_eq!(up, Some(1.0), "Prometheus never scraped {metrics}");
    let checks = [
        ("sum(skiff_requests_total{user=\"alice\"})", 10.0),
        (
            "sum(skiff_requests_total{user=\"alice\",status=\"500\"})",
            3.0,
        ),
        (
            "sum(skiff_requests_total{user=\"alice\",function=\"two\",status=\"200\"})",
            4.0,
        ),
        ("sum(skiff_cold_starts_total{user=\"alice\"})", 2.0),
        (
            "sum(skiff_request_duration_seconds_count{user=\"alice\"})",
            10.0,
        ),
        ("skiff_cold_start_duration_seconds_count", 2.0),
        ("skiff_deploys_total{result=\"ok\"}", 2.0),
        ("sum(skiff_deploys_total{result!=\"ok\"})", 1.0),
        ("skiff_instances{state=\"ready\"}", 2.0),
    ];
    for (promql, want) in checks {
        assert_eq!(prom.until(promql, want).await, Some(want), "{promql}");
    }

    // The owner's view: the same calls through the stats the routers flush.
    let env = Env {
        api: dev.url_of("manager"),
        dir: tempfile::tempdir().unwrap(),
        _dev: dev,
    };
    let out = env
        .skiff(
            &["login", "--username", "alice", "--password-stdin"],
            &format!("{}\n", skiff_testkit::PASSWORD),
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut shown = String::new();
    for _ in 0..50 {
        let out = env.skiff(&["stats", "one"], "").await;
        shown = String::from_utf8_lossy(&out.stdout).into_owned();
        if shown.contains("invocations  5") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(shown.contains("invocations  5"), "{shown}");
    assert!(shown.contains("errors       2"), "{shown}");
    assert!(shown.contains("cold starts  1"), "{shown}");
}
