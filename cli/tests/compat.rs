//! The compatibility suite (issue #12): functions written the way users of other
//! platforms write them (tests/compat/functions/<nn>-<name>/, each with a `case.json`),
//! deployed and called through a real `skiff dev` (process runtime, SQLite, real Deno),
//! against local registries on loopback (tests/compat/servers.ts: Verdaccio for npm, a
//! JSR-like server, a TLS module server with a test CA).
//!
//! - `every_fixture_through_skiff_dev`: the acceptance test of the deploy pipeline.
//!   Deploys every fixture, runs its requests, checks that redeploys give the same
//!   artifact, then stops the registries, restarts `skiff dev` and calls the functions
//!   marked `offline` again (a running function never fetches a module).
//! - `every_fixture_on_plain_deno`: each fixture run by plain Deno through
//!   tests/compat/shim.ts against the same registries: proves the fixtures and the
//!   registries right on their own, so a failure of the first test is the platform's.
//!
//! Both report every failing case in one panic message and print a timing line.
//! `SKIFF_COMPAT_ONLY=<substring>` runs only the cases whose dir name contains it.
//! Needs Deno (`SKIFF_DENO` or on PATH), node + npm and openssl; tests/compat/prepare.sh
//! fills the cache (`SKIFF_COMPAT_CACHE`, default ~/.cache/skiff-compat) on first use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_testkit::{ApiClient, Launch, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// How many cases run at once (the machine has 2 cores; most time is waiting).
const PARALLEL: usize = 4;
const USER: &str = "compat";

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat")
}

fn deno() -> String {
    std::env::var("SKIFF_DENO").unwrap_or_else(|_| "deno".to_owned())
}

// ------------------------------------------------------------------ registries

/// The registries (one process group: the Deno script and its Verdaccio);
/// the whole group is killed when dropped.
struct Registries {
    child: Option<Child>,
    npm: String,
    jsr: String,
    https_port: u16,
    ca: PathBuf,
    _work: tempfile::TempDir,
}

impl Registries {
    fn start() -> Registries {
        let prepare = Command::new("bash")
            .arg(compat_dir().join("prepare.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running tests/compat/prepare.sh");
        assert!(
            prepare.status.success(),
            "tests/compat/prepare.sh failed (node, npm and the npm registry are needed once)"
        );
        let cache = String::from_utf8_lossy(&prepare.stdout).trim().to_owned();
        let work = tempfile::tempdir().unwrap();
        let mut child = Command::new(deno())
            .args(["run", "-A", "--no-config", "--no-lock"])
            .arg(compat_dir().join("servers.ts"))
            .args(["--cache", &cache, "--work"])
            .arg(work.path())
            .env_remove("NPM_CONFIG_REGISTRY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("spawning deno for tests/compat/servers.ts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut reg = Registries {
            child: Some(child),
            npm: String::new(),
            jsr: String::new(),
            https_port: 0,
            ca: PathBuf::new(),
            _work: work,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(240))
            .unwrap_or_default();
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the registries did not start (got {line:?})"));
        reg.npm = info["npm"].as_str().unwrap().to_owned();
        reg.jsr = info["jsr"].as_str().unwrap().to_owned();
        reg.https_port = info["https_port"].as_u64().unwrap() as u16;
        reg.ca = PathBuf::from(info["ca"].as_str().unwrap());
        reg
    }

    /// What Deno needs to resolve against these registries.
    fn deno_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NPM_CONFIG_REGISTRY", self.npm.clone()),
            ("JSR_URL", self.jsr.clone()),
            ("DENO_CERT", self.ca.display().to_string()),
        ]
    }

    /// The manager's settings the deploy pipeline reads.
    fn skiff_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SKIFF_NPM_REGISTRY", self.npm.clone()),
            ("SKIFF_JSR_URL", self.jsr.clone()),
            (
                "SKIFF_IMPORT_HOSTS",
                format!("localhost:{}", self.https_port),
            ),
            ("SKIFF_EGRESS_TRUST", "127.0.0.1,localhost".to_owned()),
            ("SKIFF_IMPORT_CA", self.ca.display().to_string()),
        ]
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The group: the Deno script and Verdaccio (node).
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registries {
    fn drop(&mut self) {
        self.stop();
    }
}

// ------------------------------------------------------------------ cases

struct Case {
    dir_name: String,
    dir: PathBuf,
    spec: Value,
}

impl Case {
    fn function_name(&self) -> String {
        format!("c{}", self.dir_name)
    }

    fn expects_deploy_ok(&self) -> bool {
        self.spec["deploy"]["ok"].as_bool().unwrap_or(false)
    }

    fn is_dir_upload(&self) -> bool {
        self.spec["upload"].as_str() == Some("dir")
    }

    /// The module file of a single-file upload, or the entry of a dir upload.
    fn entry(&self) -> String {
        if let Some(e) = self.spec["entry"].as_str() {
            return e.to_owned();
        }
        if let Some(f) = self.spec["file"].as_str() {
            return f.to_owned();
        }
        ["main.ts", "index.ts", "mod.ts", "main.js", "index.js"]
            .into_iter()
            .find(|f| self.dir.join(f).is_file())
            .unwrap_or("main.ts")
            .to_owned()
    }
}

fn load_cases() -> Vec<Case> {
    let only = std::env::var("SKIFF_COMPAT_ONLY").unwrap_or_default();
    let mut cases: Vec<Case> = std::fs::read_dir(compat_dir().join("functions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .map(|dir| {
            let dir_name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(dir.join("case.json")).unwrap();
            let spec =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{dir_name}/case.json: {e}"));
            Case {
                dir_name,
                dir,
                spec,
            }
        })
        .filter(|c| c.dir_name.contains(&only))
        .collect();
    cases.sort_by(|a, b| a.dir_name.cmp(&b.dir_name));
    cases
}

/// Placeholders fixtures may use in their sources.
struct Substitutions {
    https_port: u16,
    free_port: u16,
}

/// A copy of the case's files (without case.json) with the placeholders filled in.
fn materialize(case: &Case, subs: &Substitutions, into: &Path) {
    fn copy(from: &Path, to: &Path, subs: &Substitutions) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let name = e.file_name();
            if name == "case.json" {
                continue;
            }
            if p.is_dir() {
                copy(&p, &to.join(&name), subs);
            } else {
                let text = std::fs::read_to_string(&p).unwrap();
                let text = text
                    .replace("{{HTTPS_PORT}}", &subs.https_port.to_string())
                    .replace("{{FREE_PORT}}", &subs.free_port.to_string());
                std::fs::write(to.join(&name), text).unwrap();
            }
        }
    }
    copy(&case.dir, into, subs);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ------------------------------------------------------------------ expectations

/// Whether `actual` contains everything `expected` has (objects: a subset of
/// keys, recursively; arrays: same length, element-wise; scalars: equal).
fn json_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| json_subset(v, av))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| json_subset(x, y))
        }
        (e, a) => e == a,
    }
}

fn short(s: &str) -> String {
    let mut out: String = s.chars().take(300).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// What is wrong with an answer, given a request's `expect`.
fn check_answer(
    expect: &Value,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Vec<String> {
    let mut bad = Vec::new();
    let text = String::from_utf8_lossy(body);
    if let Some(s) = expect["status"].as_u64()
        && s != u64::from(status)
    {
        bad.push(format!(
            "status {status}, expected {s}; body: {}",
            short(&text)
        ));
        return bad;
    }
    if let Some(b) = expect["body"].as_str()
        && text != b
    {
        bad.push(format!("body {:?}, expected {b:?}", short(&text)));
    }
    if let Some(b) = expect["starts_with"].as_str()
        && !text.starts_with(b)
    {
        bad.push(format!("body {:?} does not start with {b:?}", short(&text)));
    }
    for c in expect["contains"].as_array().into_iter().flatten() {
        let c = c.as_str().unwrap_or_default();
        if !text.contains(c) {
            bad.push(format!("body {:?} lacks {c:?}", short(&text)));
        }
    }
    if let Some(n) = expect["body_len"].as_u64()
        && n != body.len() as u64
    {
        bad.push(format!("body is {} bytes, expected {n}", body.len()));
    }
    if expect.get("json").is_some() || expect.get("json_has").is_some() {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => {
                if let Some(e) = expect.get("json")
                    && !json_subset(e, &v)
                {
                    bad.push(format!("JSON {v} does not contain {e}"));
                }
                for path in expect["json_has"].as_array().into_iter().flatten() {
                    let path = path.as_str().unwrap_or_default();
                    let found = path
                        .split('.')
                        .try_fold(&v, |node, key| node.get(key))
                        .is_some();
                    if !found {
                        bad.push(format!("JSON {v} has no {path}"));
                    }
                }
            }
            Err(_) => bad.push(format!("body is not JSON: {}", short(&text))),
        }
    }
    if let Some(hs) = expect["headers"].as_object() {
        for (k, v) in hs {
            let got = headers.get(k).and_then(|h| h.to_str().ok());
            let want = v.as_str().unwrap_or_default();
            if !got.is_some_and(|g| g.starts_with(want)) {
                bad.push(format!("header {k}: {got:?}, expected {want:?}"));
            }
        }
    }
    bad
}

/// Where a case's requests go: `<base><path>`.
async fn run_requests(http: &reqwest::Client, base: &str, case: &Case) -> Vec<String> {
    let mut bad = Vec::new();
    for (i, r) in case.spec["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = r["path"].as_str().unwrap_or("/");
        let method = r["method"].as_str().unwrap_or("GET");
        let label = format!("request {} ({method} {path})", i + 1);
        if let Some(ws) = r.get("websocket") {
            if let Err(e) = websocket_exchange(base, path, ws).await {
                bad.push(format!("{label}: websocket: {e}"));
            }
            continue;
        }
        // `retry_until_ok`: work the function finishes after its response
        // (ctx.waitUntil) shows up eventually; a bounded wait, not a timing check.
        let attempts = if r["retry_until_ok"].as_bool() == Some(true) {
            50
        } else {
            1
        };
        let mut last = Vec::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut req = http.request(method.parse().unwrap(), format!("{base}{path}"));
            for (k, v) in r["headers"].as_object().into_iter().flatten() {
                req = req.header(k, v.as_str().unwrap_or_default());
            }
            if let Some(b) = r["body"].as_str() {
                req = req.body(b.to_owned());
            }
            last = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(body) => check_answer(&r["expect"], status, &headers, &body),
                        Err(e) => vec![format!("reading the body: {e}")],
                    }
                }
                Err(e) => vec![format!("no answer: {e}")],
            };
            if last.is_empty() {
                break;
            }
        }
        bad.extend(last.into_iter().map(|m| format!("{label}: {m}")));
    }
    bad
}

/// A WebSocket client, just enough for an echo test: the handshake, masked text
/// frames out, unmasked text frames in.
async fn websocket_exchange(base: &str, path: &str, spec: &Value) -> Result<(), String> {
    let fut = async {
        let hostport = base
            .strip_prefix("http://")
            .and_then(|r| r.split('/').next())
            .ok_or("bad base")?
            .to_owned();
        let prefix: String = base
            .strip_prefix("http://")
            .and_then(|r| r.find('/').map(|i| r[i..].to_owned()))
            .unwrap_or_default();
        let mut s = tokio::net::TcpStream::connect(&hostport)
            .await
            .map_err(|e| e.to_string())?;
        let hello = format!(
            "GET {prefix}{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(hello.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if s.read(&mut b).await.map_err(|e| e.to_string())? == 0 {
                return Err(format!(
                    "closed during the handshake: {}",
                    String::from_utf8_lossy(&head)
                ));
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            let status_line = head.lines().next().unwrap_or_default();
            return Err(format!("the handshake was answered {status_line}"));
        }
        let sends: Vec<&str> = spec["send"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let receives: Vec<&str> = spec["receive"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        // Messages the server sends first (on open), then one answer per message sent.
        let first = receives.len().saturating_sub(sends.len());
        let mut got = Vec::new();
        for _ in 0..first {
            got.push(read_text_frame(&mut s).await?);
        }
        for m in &sends {
            write_text_frame(&mut s, m).await?;
            got.push(read_text_frame(&mut s).await?);
        }
        if got != receives {
            return Err(format!("received {got:?}, expected {receives:?}"));
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .map_err(|_| "no answer within 20 s".to_owned())?
}

async fn write_text_frame(s: &mut tokio::net::TcpStream, text: &str) -> Result<(), String> {
    let payload = text.as_bytes();
    assert!(payload.len() < 126, "short messages only");
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.map_err(|e| e.to_string())
}

async fn read_text_frame(s: &mut tokio::net::TcpStream) -> Result<String, String> {
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.map_err(|e| e.to_string())?;
        let opcode = h[0] & 0x0f;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            len = u64::from_be_bytes(b);
        }
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload)
            .await
            .map_err(|e| e.to_string())?;
        match opcode {
            1 => return Ok(String::from_utf8_lossy(&payload).into_owned()),
            8 => return Err("the server closed the WebSocket".to_owned()),
            _ => continue, // ping/pong/binary: not part of the echo
        }
    }
}

// ------------------------------------------------------------------ skiff dev

struct Dev {
    service: Service,
    api: ApiClient,
    router: String,
    token: String,
}

fn dev_launch(data: &Path, reg: &Registries) -> Launch {
    // Info-level logs: the last lines are printed when cases fail.
    let mut l = Launch::dev(env!("CARGO_BIN_EXE_skiff"), data).env("RUST_LOG", "info");
    for (k, v) in reg.skiff_env() {
        l = l.env(k, v);
    }
    l
}

async fn start_dev(data: &Path, reg: &Registries, token: Option<String>) -> Dev {
    let service = dev_launch(data, reg).start().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let api = ApiClient::with_http(service.url_of("manager"), http);
    let token = match token {
        Some(t) => t,
        None => api.token(USER).await,
    };
    Dev {
        router: service.url_of("router"),
        service,
        api,
        token,
    }
}

/// The upload's body, content type and query for a case.
fn upload(case: &Case, files: &Path) -> (Vec<u8>, &'static str, String) {
    let mut query = format!("name={}", case.function_name());
    if case.spec["strict"].as_bool() == Some(true) {
        query.push_str("&check=strict");
    }
    if case.is_dir_upload() {
        if let Some(e) = case.spec["entry"].as_str() {
            query.push_str(&format!("&entry={e}"));
        }
        let out = Command::new("tar")
            .args(["-czf", "-", "-C"])
            .arg(files)
            .arg(".")
            .output()
            .unwrap();
        assert!(out.status.success(), "tar of {}", case.dir_name);
        (out.stdout, "application/gzip", query)
    } else {
        let body = std::fs::read(files.join(case.entry())).unwrap();
        (body, "application/typescript", query)
    }
}

async fn deploy(dev: &Dev, case: &Case, files: &Path) -> Result<(u16, Value), String> {
    let (body, ctype, query) = upload(case, files);
    let r = dev
        .api
        .http
        .post(dev.api.url(&format!("/func?{query}")))
        .bearer_auth(&dev.token)
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("deploy: no answer: {e}"))?;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// What is wrong with a deploy's answer.
fn check_deploy(case: &Case, status: u16, body: &Value) -> Vec<String> {
    let want = &case.spec["deploy"];
    let mut bad = Vec::new();
    if case.expects_deploy_ok() {
        if status != 200 && status != 201 {
            bad.push(format!("deploy: {status} {}", short(&body.to_string())));
            return bad;
        }
        let warnings: Vec<String> = body["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| w.as_str().map_or_else(|| w.to_string(), str::to_owned))
            .collect();
        match &want["warnings"] {
            Value::String(s) if s == "none" && !warnings.is_empty() => {
                bad.push(format!("deploy: expected no warnings, got {warnings:?}"));
            }
            Value::Array(needles) => {
                for n in needles.iter().filter_map(Value::as_str) {
                    if !warnings.iter().any(|w| w.contains(n)) {
                        bad.push(format!("deploy: no warning mentions {n}: {warnings:?}"));
                    }
                }
            }
            _ => {}
        }
    } else {
        let code = body["error"]["code"].as_str().unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        let want_status = want["status"].as_u64().unwrap_or(400);
        let want_code = want["code"].as_str().unwrap_or_default();
        if u64::from(status) != want_status || code != want_code {
            bad.push(format!(
                "deploy: {status} {code:?}, expected {want_status} {want_code:?} ({})",
                short(&body.to_string())
            ));
        }
        for n in want["message_contains"].as_array().into_iter().flatten() {
            let n = n.as_str().unwrap_or_default();
            if !message.contains(n) {
                bad.push(format!("deploy: message {message:?} lacks {n:?}"));
            }
        }
        for n in want["message_not_contains"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let n = n.as_str().unwrap_or_default();
            if body.to_string().contains(n) {
                bad.push(format!("deploy: the answer shows {n:?}"));
            }
        }
    }
    bad
}

/// The artifact's digest as `GET /func/<name>` reports it.
async fn artifact_sha(dev: &Dev, name: &str) -> Option<String> {
    let v: Value = dev.api.function(&dev.token, name).await.json().await.ok()?;
    v["artifact_sha256"]
        .as_str()
        .or_else(|| v["sha256"].as_str())
        .map(str::to_owned)
}

async fn logs_contain(dev: &Dev, name: &str, needles: &[&str]) -> Vec<String> {
    let mut text = String::new();
    // The router writes the function's lines as they come; bounded wait.
    for _ in 0..100 {
        text = dev
            .api
            .logs(&dev.token, name, "")
            .await
            .text()
            .await
            .unwrap_or_default();
        if needles.iter().all(|n| text.contains(n)) {
            return Vec::new();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    needles
        .iter()
        .filter(|n| !text.contains(*n))
        .map(|n| format!("logs lack {n:?}: {}", short(&text)))
        .collect()
}

/// One case against `skiff dev`: deploy, requests, logs, redeploy.
async fn skiff_case(dev: Arc<Dev>, case: Arc<Case>, subs: Arc<Substitutions>) -> Vec<String> {
    let files = tempfile::tempdir().unwrap();
    materialize(&case, &subs, files.path());
    let (status, body) = match deploy(&dev, &case, files.path()).await {
        Ok(x) => x,
        Err(e) => return vec![e],
    };
    let mut bad = check_deploy(&case, status, &body);
    if !bad.is_empty() || !case.expects_deploy_ok() {
        return bad;
    }
    let name = case.function_name();
    let base = format!("{}/fn/{USER}/{name}", dev.router);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    bad.extend(run_requests(&http, &base, &case).await);
    let needles: Vec<&str> = case.spec["logs_contain"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !needles.is_empty() {
        bad.extend(logs_contain(&dev, &name, &needles).await);
    }
    if case.spec["same_artifact_on_redeploy"].as_bool() == Some(true) {
        let first = artifact_sha(&dev, &name).await;
        match deploy(&dev, &case, files.path()).await {
            Ok((200 | 201, _)) => {
                let second = artifact_sha(&dev, &name).await;
                if first.is_none() || first != second {
                    bad.push(format!(
                        "redeploy: artifact digest {first:?} then {second:?}"
                    ));
                }
            }
            Ok((s, b)) => bad.push(format!("redeploy: {s} {}", short(&b.to_string()))),
            Err(e) => bad.push(format!("redeploy: {e}")),
        }
    }
    bad
}

// ------------------------------------------------------------------ plain Deno

/// One case with plain Deno and tests/compat/shim.ts (no Skiff).
async fn plain_case(
    case: Arc<Case>,
    reg_env: Arc<Vec<(&'static str, String)>>,
    subs: Arc<Substitutions>,
    deno_dir: PathBuf,
) -> Vec<String> {
    let files = tempfile::tempdir().unwrap();
    materialize(&case, &subs, files.path());
    for p in case.spec["tmp_paths"].as_array().into_iter().flatten() {
        let p = Path::new(p.as_str().unwrap_or_default());
        let _ = std::fs::remove_dir_all(p);
        let _ = std::fs::remove_file(p);
    }
    let mut args: Vec<String> = vec!["run".into(), "-A".into(), "--no-prompt".into()];
    if let Some(map) = case.spec["plain"]["imports"].as_object() {
        let path = files.path().join("import_map.json");
        std::fs::write(&path, json!({ "imports": map }).to_string()).unwrap();
        args.push(format!("--import-map={}", path.display()));
    }
    if files.path().join("package.json").is_file() {
        // A package.json project needs its node_modules first, as with any Deno project.
        let out = Command::new(deno())
            .arg("install")
            .current_dir(files.path())
            .envs(reg_env.iter().map(|(k, v)| (*k, v)))
            .env("DENO_DIR", &deno_dir)
            .output()
            .unwrap();
        if !out.status.success() {
            return vec![format!(
                "deno install: {}",
                short(&String::from_utf8_lossy(&out.stderr))
            )];
        }
    }
    let mut bad = plain_check(&case, files.path(), &args, &reg_env, &deno_dir).await;
    if !case.expects_deploy_ok() {
        return bad;
    }
    let port = free_port();
    // A static import of the fixture from its own dir (see shim.ts).
    let shim = std::fs::canonicalize(compat_dir().join("shim.ts")).unwrap();
    let starter = files.path().join("__compat_entry.ts");
    std::fs::write(
        &starter,
        format!(
            "import {{ serveModule }} from \"file://{}\";\nimport * as mod from \"./{}\";\nserveModule(mod);\n",
            shim.display(),
            case.entry()
        ),
    )
    .unwrap();
    args.push(starter.display().to_string());
    args.push(port.to_string());
    let mut child = tokio::process::Command::new(deno())
        .args(&args)
        .current_dir(files.path())
        .envs(reg_env.iter().map(|(k, v)| (*k, v)))
        .env("DENO_DIR", &deno_dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 9];
    let ready = tokio::time::timeout(Duration::from_secs(180), stdout.read_exact(&mut first)).await;
    if !matches!(ready, Ok(Ok(_))) || &first != b"listening" {
        let _ = child.start_kill();
        let out = child.wait_with_output().await.unwrap();
        return vec![format!(
            "did not start: {}",
            short(&String::from_utf8_lossy(&out.stderr))
        )];
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    bad.extend(run_requests(&http, &format!("http://127.0.0.1:{port}"), &case).await);
    let _ = child.start_kill();
    let _ = child.wait().await;
    bad
}

/// `deno check` of the fixture agrees with what its case expects of the deploy's
/// type check: no diagnostics for `"warnings": "none"`, each listed code for a list,
/// a failure for `type_check_failed` and `syntax_error`.
async fn plain_check(
    case: &Case,
    files: &Path,
    run_args: &[String],
    reg_env: &[(&'static str, String)],
    deno_dir: &Path,
) -> Vec<String> {
    let want = &case.spec["deploy"];
    let (must_pass, codes): (bool, Vec<&str>) = match (&want["warnings"], want["code"].as_str()) {
        (Value::String(s), _) if s == "none" => (true, Vec::new()),
        (Value::Array(a), _) => (false, a.iter().filter_map(Value::as_str).collect()),
        (_, Some("type_check_failed")) => (
            false,
            want["message_contains"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect(),
        ),
        (_, Some("syntax_error")) => (false, Vec::new()),
        _ => return Vec::new(),
    };
    // The run's import map, if any, applies to the check too.
    let mut args = vec!["check".to_owned(), "--allow-import".to_owned()];
    args.extend(
        run_args
            .iter()
            .filter(|a| a.starts_with("--import-map="))
            .cloned(),
    );
    args.push(case.entry());
    let out = tokio::process::Command::new(deno())
        .args(&args)
        .current_dir(files)
        .envs(reg_env.iter().map(|(k, v)| (*k, v)))
        .env("DENO_DIR", deno_dir)
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let mut bad = Vec::new();
    if must_pass && !out.status.success() {
        bad.push(format!("deno check fails: {}", short(&text)));
    }
    if !must_pass && out.status.success() {
        bad.push("deno check passes, but the case expects diagnostics".to_owned());
    }
    for c in codes {
        if !text.contains(c) {
            bad.push(format!("deno check does not report {c}: {}", short(&text)));
        }
    }
    bad
}

// ------------------------------------------------------------------ the tests

/// Runs `f` over `cases` at most [`PARALLEL`] at a time; returns each failing
/// case's lines.
async fn run_all<F, Fut>(cases: &[Arc<Case>], f: F) -> BTreeMap<String, Vec<String>>
where
    F: Fn(Arc<Case>) -> Fut,
    Fut: std::future::Future<Output = Vec<String>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = Vec::new();
    for case in cases {
        let gate = gate.clone();
        let fut = f(case.clone());
        tasks.push((
            case.dir_name.clone(),
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                fut.await
            }),
        ));
    }
    let mut failures = BTreeMap::new();
    for (name, task) in tasks {
        let bad = task
            .await
            .unwrap_or_else(|e| vec![format!("the case panicked: {e}")]);
        if !bad.is_empty() {
            failures.insert(name, bad);
        }
    }
    failures
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn report(title: &str, total: usize, failures: &BTreeMap<String, Vec<String>>, started: Instant) {
    println!(
        "compat ({title}): {} of {total} cases passed in {:.1} s",
        total - failures.len(),
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        return;
    }
    let mut msg = format!("{} of {total} cases failed ({title}):\n", failures.len());
    for (name, lines) in failures {
        msg.push_str(&format!("- {name}\n"));
        for l in lines {
            msg.push_str(&format!("    {l}\n"));
        }
    }
    panic!("{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fixture_on_plain_deno() {
    let started = Instant::now();
    let reg = tokio::task::spawn_blocking(Registries::start)
        .await
        .unwrap();
    let cases: Vec<Arc<Case>> = load_cases()
        .into_iter()
        .filter(|c| {
            let code = c.spec["deploy"]["code"].as_str();
            c.expects_deploy_ok() || matches!(code, Some("type_check_failed" | "syntax_error"))
        })
        .map(Arc::new)
        .collect();
    let subs = Arc::new(Substitutions {
        https_port: reg.https_port,
        free_port: free_port(),
    });
    let env = Arc::new(reg.deno_env());
    let deno_dir = tempfile::tempdir().unwrap();
    let dd = deno_dir.path().to_owned();
    let failures = run_all(&cases, |c| {
        plain_case(c, env.clone(), subs.clone(), dd.clone())
    })
    .await;
    report("plain Deno", cases.len(), &failures, started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fixture_through_skiff_dev() {
    let started = Instant::now();
    let mut reg = tokio::task::spawn_blocking(Registries::start)
        .await
        .unwrap();
    // Not under /tmp: a data dir there turns the instances' private /tmp off.
    // Traversable: functions run as their own uids (tempdir makes it 0700).
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dev = Arc::new(start_dev(&data.path().join("data"), &reg, None).await);
    let cases: Vec<Arc<Case>> = load_cases().into_iter().map(Arc::new).collect();
    let subs = Arc::new(Substitutions {
        https_port: reg.https_port,
        free_port: free_port(),
    });
    let mut failures = run_all(&cases, |c| skiff_case(dev.clone(), c, subs.clone())).await;

    // A running function never fetches a module: with the registries gone and a
    // fresh `skiff dev` (every instance cold), the deployed functions still answer.
    let offline: Vec<Arc<Case>> = cases
        .iter()
        .filter(|c| c.spec["offline"].as_bool() == Some(true))
        .filter(|c| !failures.contains_key(&c.dir_name))
        .cloned()
        .collect();
    if !failures.is_empty() {
        eprintln!(
            "skiff dev's output (last lines):\n{}",
            tail(&dev.service.log(), 300)
        );
    }
    reg.stop();
    let token = dev.token.clone();
    let Ok(mut dev) = Arc::try_unwrap(dev) else {
        panic!("the cases still hold skiff dev");
    };
    dev.service.kill().await;
    let dev = Arc::new(start_dev(&data.path().join("data"), &reg, Some(token)).await);
    let offline_failures = run_all(&offline, |c| {
        let dev = dev.clone();
        async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap();
            let base = format!("{}/fn/{USER}/{}", dev.router, c.function_name());
            run_requests(&http, &base, &c).await
        }
    })
    .await;
    for (name, lines) in offline_failures {
        failures.insert(
            format!("{name} (after the registries stopped and a restart)"),
            lines,
        );
    }
    report("skiff dev", cases.len() + offline.len(), &failures, started);
}
