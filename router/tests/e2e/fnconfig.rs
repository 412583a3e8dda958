//! Per-function configuration in the process runtime: env and secrets reach
//! the function and nothing else does; settings (timeout, concurrency) apply
//! per function; a config change or a rollback is a new live version served
//! without a failed request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_core::fnconfig::FunctionConfig;
use skiff_core::names::{FunctionName, UserName};
use skiff_core::store::StoreError;
use skiff_testkit::TestBackend;

use crate::helpers::{Opts, Stack, replies, secrets_key, stack, stack_with};

const SECRET: &str = "s3cr3t-Value-7f1c9e";

/// Shows everything a function can learn of its environment, by every route.
const ENV_PROBE: &str = r#"
import process from "node:process";
function attempt(f: () => unknown) {
  try { return f(); } catch (e) { return `throws ${(e as Error).name}`; }
}
export default {
  fetch(_req: Request, env: Record<string, unknown>) {
    return Response.json({
      greeting: Deno.env.get("GREETING"),
      token: Deno.env.get("API_TOKEN"),
      others: ["PATH", "HOME", "DENO_DIR", "TMPDIR", "SKIFF_DATABASE_URL", "SKIFF_SECRETS_KEY"]
        .map((k) => attempt(() => Deno.env.get(k)) ?? null),
      hasPath: attempt(() => Deno.env.has("PATH")),
      toObject: attempt(() => Deno.env.toObject()),
      process: attempt(() => ({ ...process.env })),
      processKeys: attempt(() => Object.keys(process.env)),
      processToken: process.env.API_TOKEN,
      cf: { ...env },
      environ: attempt(() => Deno.readTextFileSync("/proc/self/environ")),
    });
  },
};
"#;

async fn owner(s: &Stack, user: &str) -> (skiff_core::store::Store, i64, UserName) {
    let store = s.db.store().await;
    let u = store
        .find_user(user)
        .await
        .unwrap()
        .expect("the user exists");
    (store, u.id, UserName::parse(user).unwrap())
}

/// Changes `user/name`'s live configuration (a new version), as the manager's
/// PATCH /config does.
async fn change(
    s: &Stack,
    user: &str,
    name: &str,
    f: impl Fn(&mut FunctionConfig) + Send + Sync,
) -> i64 {
    let (store, id, u) = owner(s, user).await;
    let change = |c: &mut FunctionConfig| -> Result<(), StoreError> {
        f(c);
        Ok(())
    };
    store
        .change_config(id, &u, &FunctionName::parse(name).unwrap(), change)
        .await
        .unwrap()
        .version
}

async fn put_secret(s: &Stack, user: &str, name: &str, key: &str, value: &str) -> i64 {
    let (store, id, u) = owner(s, user).await;
    store
        .put_secret(
            id,
            &u,
            &FunctionName::parse(name).unwrap(),
            key,
            value.as_bytes(),
            &secrets_key(),
        )
        .await
        .unwrap()
        .version
}

async fn json(s: &Stack, user: &str, name: &str) -> serde_json::Value {
    let r = s.get(user, name, "/").await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Everything the router logs while it runs on this (current-thread) test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            found.extend(files_containing(&p, needle));
        } else if kind.is_file()
            && let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(p);
        }
    }
    found
}

#[tokio::test]
async fn env_and_secrets_reach_their_function_by_every_route_and_nothing_else_does() {
    let log = Captured::default();
    let writer = log.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let s = stack(TestBackend::Sqlite).await;
    let t = s.token("alice").await;
    s.deploy_live(&t, "alice", "probe", ENV_PROBE, "others")
        .await;
    // Nothing set: an empty env, and the host's is not readable.
    let body = json(&s, "alice", "probe").await;
    assert_eq!(body["toObject"], serde_json::json!({}), "{body}");
    assert_eq!(body["process"], serde_json::json!({}), "{body}");

    change(&s, "alice", "probe", |c| {
        c.env.insert("GREETING".into(), "hello\nworld".into());
    })
    .await;
    put_secret(&s, "alice", "probe", "API_TOKEN", SECRET).await;
    let (_, text) = s
        .until("alice", "probe", |st, b| st == 200 && b.contains(SECRET))
        .await;
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mine = serde_json::json!({"API_TOKEN": SECRET, "GREETING": "hello\nworld"});
    assert_eq!(body["greeting"], "hello\nworld");
    assert_eq!(body["token"], SECRET);
    assert_eq!(body["toObject"], mine, "exactly its own names");
    assert_eq!(body["process"], mine, "process.env: exactly its own names");
    assert_eq!(
        body["processKeys"],
        serde_json::json!(["API_TOKEN", "GREETING"])
    );
    assert_eq!(body["processToken"], SECRET);
    assert_eq!(body["cf"], mine, "the Cloudflare env argument");
    assert_eq!(
        body["others"],
        serde_json::json!([null, null, null, null, null, null]),
        "nothing of the host's environment: {body}"
    );
    assert_eq!(body["hasPath"], false);
    let environ = body["environ"].as_str().unwrap_or_default();
    assert!(
        environ.starts_with("throws") || !environ.contains(SECRET),
        "/proc/self/environ: {environ}"
    );

    // Another user's function sees none of it.
    let tb = s.token("bobby").await;
    s.deploy_live(&tb, "bobby", "probe", ENV_PROBE, "others")
        .await;
    let other = json(&s, "bobby", "probe").await;
    assert_eq!(other["toObject"], serde_json::json!({}), "{other}");
    assert!(other["token"].is_null());

    // The value is in no process's environment or command line, no file of
    // the data dir (code, logs, instance dirs), and no log line of the router.
    let fid = s.function_id("alice", "probe");
    let instance = s
        .handle
        .process_runtime()
        .unwrap()
        .running()
        .into_iter()
        .find(|i| i.function.function_id == fid)
        .expect("alice's instance runs");
    let pid = instance.pid.unwrap();
    let mut pids = vec![pid];
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    for p in pids {
        for what in ["environ", "cmdline"] {
            let bytes = std::fs::read(format!("/proc/{p}/{what}")).unwrap_or_default();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "the secret is in /proc/{p}/{what}"
            );
        }
    }
    assert_eq!(
        files_containing(&s.data_dir, SECRET.as_bytes()),
        Vec::<std::path::PathBuf>::new(),
        "files holding the secret"
    );
    let logged = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    // (Debug lines may be missed while other tests run: tracing caches which
    // callsites are enabled across threads.)
    assert!(
        logged.contains("skiff_router"),
        "the capture works: {logged}"
    );
    assert!(!logged.contains(SECRET), "the router logged the secret");

    // A config change is a new version: the new value is served.
    change(&s, "alice", "probe", |c| {
        c.env.insert("GREETING".into(), "bonjour".into());
    })
    .await;
    s.until("alice", "probe", |st, b| st == 200 && b.contains("bonjour"))
        .await;
}

const SLOW: &str = r#"
export default async (req: Request) => {
  const url = new URL(req.url);
  if (url.pathname === "/slow") await new Promise((r) => setTimeout(r, 4000));
  return new Response("ok");
};
"#;

#[tokio::test]
async fn a_function_s_own_timeout_and_concurrency_apply_to_it_alone() {
    let s = stack_with(
        TestBackend::Sqlite,
        Opts {
            queue_wait: Duration::from_millis(100),
            ..Opts::default()
        },
    )
    .await;
    let t = s.token("alice").await;
    s.deploy_live(&t, "alice", "slow", SLOW, "ok").await;
    s.deploy_live(&t, "alice", "other", SLOW, "ok").await;
    change(&s, "alice", "slow", |c| {
        c.settings.timeout_secs = Some(1);
        c.settings.concurrency = Some(1);
    })
    .await;
    // Until the router has the new version (a request to it answers 504).
    let start = std::time::Instant::now();
    loop {
        let r = s.get("alice", "slow", "/slow").await;
        if r.status() == 504 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "function_timeout", "{body}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no 504: {}",
            r.status()
        );
    }
    // Concurrency 1: while one request is held, the next one is refused (429).
    let held = {
        let url = s.url("alice", "slow", "/slow");
        let c = s.client.clone();
        tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    let mut refused = false;
    for _ in 0..100 {
        let st = s.get("alice", "slow", "/").await.status().as_u16();
        if st == 429 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "a second request was admitted beside the held one");
    assert_eq!(held.await.unwrap().unwrap(), 504);
    // The other function keeps the defaults: its slow request is answered.
    let r = s.get("alice", "other", "/slow").await;
    assert_eq!(r.status(), 200);
}

/// 200 clients call a function without pause while it is rolled back and
/// forward three times: no request fails, and every answer comes from one of
/// the two versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_under_load_fails_no_request() {
    let s = stack_with(
        TestBackend::Sqlite,
        Opts {
            tune_router: |r| {
                r.client_share_percent = 100;
                // The load is what this test measures, not the per-user rate.
                r.quotas.rps = 1_000_000;
            },
            ..Opts::default()
        },
    )
    .await;
    let t = s.token("alice").await;
    s.deploy_live(&t, "alice", "flip", &replies("version one"), "version one")
        .await;
    s.deploy_live(&t, "alice", "flip", &replies("version two"), "version two")
        .await;
    let s = Arc::new(s);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let (s, stop) = (s.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut bad) = (0u64, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match s.client.get(s.url("alice", "flip", "/")).send().await {
                        Ok(r) => {
                            let st = r.status().as_u16();
                            let body = r.text().await.unwrap_or_default();
                            if st == 200 && (body == "version one" || body == "version two") {
                                ok += 1;
                            } else {
                                bad.push(format!("{st} {body}"));
                            }
                        }
                        Err(e) => bad.push(format!("transport: {e}")),
                    }
                }
                (ok, bad)
            })
        })
        .collect();
    let (store, id, u) = owner(&s, "alice").await;
    let name = FunctionName::parse("flip").unwrap();
    for _ in 0..3 {
        for (to, marker) in [(1, "version one"), (2, "version two")] {
            store.rollback(id, &u, &name, Some(to)).await.unwrap();
            s.until("alice", "flip", |st, b| st == 200 && b == marker)
                .await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut bad) = (0, Vec::new());
    for c in clients {
        let (o, b) = c.await.unwrap();
        ok += o;
        bad.extend(b);
    }
    assert!(
        bad.is_empty(),
        "{} failed of {}: {:?}",
        bad.len(),
        ok + bad.len() as u64,
        &bad[..bad.len().min(5)]
    );
    assert!(ok > 200, "the load ran: {ok}");
}

const HOLDS: &str = r#"
export default async (req: Request) => {
  if (new URL(req.url).pathname === "/hold") await new Promise((r) => setTimeout(r, 3000));
  return new Response("here");
};
"#;

fn instance_of(s: &Stack, user: &str, name: &str) -> Option<u64> {
    let fid = s.function_id(user, name);
    s.handle
        .process_runtime()?
        .running()
        .into_iter()
        .find(|i| i.function.function_id == fid)
        .map(|i| i.id)
}

/// A user at the instance quota: the least recently used idle instance makes
/// room; with none idle, the start is refused with 403 quota_exceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_quota_stops_the_lru_idle_instance_or_refuses() {
    let s = stack(TestBackend::Sqlite).await;
    let t = s.token("alice").await;
    // An operator's override for alice, which the router reloads by itself.
    let store = s.db.store().await;
    store
        .set_user_limits(
            &UserName::parse("alice").unwrap(),
            &skiff_core::fnconfig::UserLimits {
                max_instances: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let start = std::time::Instant::now();
    while s.handle.state.user_limits.max_instances("alice") != 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "limits not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each is called as it is deployed: c's start stops a, the least
    // recently used of the two idle ones.
    for n in ["a", "b", "c"] {
        s.deploy_live(&t, "alice", n, HOLDS, "here").await;
    }
    assert!(instance_of(&s, "alice", "a").is_none(), "a made room for c");
    assert!(instance_of(&s, "alice", "b").is_some());
    assert!(instance_of(&s, "alice", "c").is_some());
    // b and c both busy: a cannot start.
    let hold = |n: &'static str| {
        let (c, url) = (s.client.clone(), s.url("alice", n, "/hold"));
        tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    let (hb, hc) = (hold("b"), hold("c"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = s.get("alice", "a", "/").await;
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert_eq!(
        body["error"]["message"],
        "quota exceeded: running instances per user is 2"
    );
    // Another user is not affected.
    let tb = s.token("bobby").await;
    s.deploy_live(&tb, "bobby", "a", HOLDS, "here").await;
    assert_eq!(hb.await.unwrap().unwrap(), 200);
    assert_eq!(hc.await.unwrap().unwrap(), 200);
    // Once they are idle, a gets room again.
    s.until("alice", "a", |st, _| st == 200).await;
}

/// A function's own idle timeout stops its instance; min_instances keeps one
/// running (started as soon as that version is live, without a request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_and_min_instances_are_per_function() {
    let s = stack(TestBackend::Sqlite).await;
    let t = s.token("alice").await;
    s.deploy_live(&t, "alice", "cool", HOLDS, "here").await;
    s.deploy(&t, "warm", HOLDS).await;
    change(&s, "alice", "cool", |c| {
        c.settings.idle_timeout_secs = Some(1)
    })
    .await;
    change(&s, "alice", "warm", |c| {
        c.settings.idle_timeout_secs = Some(1);
        c.settings.min_instances = Some(1);
    })
    .await;
    let start = std::time::Instant::now();
    while s.try_function_id("alice", "warm").is_none() || instance_of(&s, "alice", "warm").is_none()
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "warm never started by itself"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.get("alice", "cool", "/").await.status(), 200);
    while instance_of(&s, "alice", "cool").is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "cool's instance was never stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        instance_of(&s, "alice", "warm").is_some(),
        "the warm instance was stopped"
    );
}

/// A router given another key than the one the secrets are sealed with
/// refuses to start, saying so, and prints neither key.
#[tokio::test]
async fn a_wrong_secrets_key_stops_the_router_at_start() {
    let s = stack(TestBackend::Sqlite).await;
    let t = s.token("alice").await;
    s.deploy_live(&t, "alice", "f", &replies("f"), "f").await;
    put_secret(&s, "alice", "f", "TOKEN", SECRET).await;
    let other = "00".repeat(32);
    let dir = crate::helpers::test_dir();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff-router"))
        .env("SKIFF_DATABASE_URL", &s.db.url)
        .env("SKIFF_SECRETS_KEY", &other)
        .env("SKIFF_LISTEN", "127.0.0.1:0")
        .env("SKIFF_DATA_DIR", dir.path())
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SKIFF_SECRETS_KEY"), "no clear message: {err}");
    let all = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
    assert!(!all.contains(&other) && !all.contains(crate::helpers::SECRETS_KEY));
}
