//! A function secret, end to end through `skiff dev` and the `skiff` command,
//! on SQLite and on MariaDB: the function reads it, and its plaintext is found
//! nowhere else — not in the database's files, the services' logs, the
//! function's log, or any answer of the API or the CLI. Another tenant's
//! function cannot read it; a wrong key stops the services at start; a key
//! rotation keeps the function working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use skiff_testkit::{Launch, PrivateMariaDb, Service};

/// The function: it proves it got the secret by answering its hash, and
/// reports which names its environment holds by every route.
const READER: &str = r#"
import process from "node:process";
async function sha(s: string | undefined): Promise<string> {
  if (s === undefined) return "unset";
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}
export default {
  async fetch(_req: Request, env: Record<string, string>): Promise<Response> {
    console.log("reader called");
    return Response.json({
      get: await sha(Deno.env.get("API_TOKEN")),
      arg: await sha(env.API_TOKEN),
      node: await sha(process.env.API_TOKEN),
      plain: Deno.env.get("PLAIN_NOTE"),
      keys: Object.keys(Deno.env.toObject()).sort(),
    });
  },
};
"#;

/// Another tenant's function, looking for the secret wherever it could be.
const SNOOP: &str = r#"
export default async (): Promise<Response> => {
  const seen: Record<string, unknown> = {};
  try { seen.get = Deno.env.get("API_TOKEN") ?? null; } catch (e) { seen.get = String(e.name); }
  try { seen.all = Deno.env.toObject(); } catch (e) { seen.all = String(e.name); }
  try { seen.environ = await Deno.readTextFile("/proc/1/environ"); } catch (e) { seen.environ = String(e.name); }
  return Response.json(seen);
};
"#;

fn sha_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn bin(name: &str) -> PathBuf {
    let skiff = PathBuf::from(env!("CARGO_BIN_EXE_skiff"));
    let path = skiff.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p skiff-manager)",
        path.display()
    );
    path
}

/// Everything a user or an operator saw: CLI output and API answers.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn output(&mut self, o: &Output) -> String {
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        self.0.push(out.clone());
        self.0.push(String::from_utf8_lossy(&o.stderr).into_owned());
        assert!(
            o.status.success(),
            "failed: {out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }
}

struct Dev {
    service: Service,
    api: String,
    router: String,
}

fn launch(data: &Path, database_url: Option<&str>) -> Launch {
    let mut l = Launch::dev(env!("CARGO_BIN_EXE_skiff"), data);
    if let Some(url) = database_url {
        l = l.env("SKIFF_DATABASE_URL", url);
    }
    l
}

async fn start(data: &Path, database_url: Option<&str>) -> Dev {
    let service = launch(data, database_url).start().await;
    Dev {
        api: service.url_of("manager"),
        router: service.url_of("router"),
        service,
    }
}

fn skiff(dev: &Dev, cfg: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(args)
        .env("SKIFF_SERVER", &dev.api)
        .env("SKIFF_CONFIG", cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

async fn call(router: &str, path: &str, seen: &mut Seen) -> Value {
    let body = reqwest::get(format!("{router}{path}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    seen.0.push(body.clone());
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(p);
            }
        }
    }
    found
}

/// The whole story on one database. `db_files`: the directories holding the
/// database's files; `url`: `None` for `skiff dev`'s SQLite.
async fn secret_stays_inside_the_function(
    url: Option<&str>,
    db_files: &dyn Fn(&Path) -> Vec<PathBuf>,
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (alice, mallory) = (
        dir.path().join("alice.json"),
        dir.path().join("mallory.json"),
    );
    let secret = format!("sk-live-{}", hex::encode(rand_bytes()));
    let note = format!("plain-note-{}", hex::encode(rand_bytes()));
    let mut seen = Seen::default();
    let dev = start(&data, url).await;
    let pw = "a long password\n";
    for (cfg, user) in [(&alice, "alice"), (&mallory, "mallory")] {
        seen.output(&skiff(
            &dev,
            cfg,
            &["register", "--username", user, "--password-stdin"],
            pw,
        ));
        seen.output(&skiff(
            &dev,
            cfg,
            &["login", "--username", user, "--password-stdin"],
            pw,
        ));
    }
    let reader = dir.path().join("reader.ts");
    std::fs::write(&reader, READER).unwrap();
    let snoop = dir.path().join("snoop.ts");
    std::fs::write(&snoop, SNOOP).unwrap();
    seen.output(&skiff(
        &dev,
        &alice,
        &["deploy", reader.to_str().unwrap()],
        "",
    ));
    seen.output(&skiff(
        &dev,
        &mallory,
        &["deploy", snoop.to_str().unwrap()],
        "",
    ));
    seen.output(&skiff(
        &dev,
        &alice,
        &["env", "set", &format!("PLAIN_NOTE={note}"), "reader"],
        "",
    ));
    seen.output(&skiff(
        &dev,
        &alice,
        &["secret", "set", "reader", "API_TOKEN"],
        &format!("{secret}\n"),
    ));
    // What the owner can see of it: its name.
    let ls = seen.output(&skiff(&dev, &alice, &["secret", "ls", "reader"], ""));
    assert!(ls.contains("API_TOKEN"), "{ls}");
    seen.output(&skiff(&dev, &alice, &["env", "ls", "reader"], ""));
    seen.output(&skiff(&dev, &alice, &["info", "reader"], ""));
    seen.output(&skiff(&dev, &alice, &["versions", "reader"], ""));
    let config = reqwest::Client::new();
    let token: Value = serde_json::from_str(&std::fs::read_to_string(&alice).unwrap()).unwrap();
    let bearer = token["token"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    for path in [
        "/func/reader",
        "/func/reader/config",
        "/func/reader/code",
        "/func",
        "/func/reader/logs",
    ] {
        let body = config
            .get(format!("{}{path}", dev.api))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        seen.0.push(body);
    }

    let want = sha_hex(&secret);
    let got = call(&dev.router, "/fn/alice/reader", &mut seen).await;
    assert_eq!(got["get"], want.as_str(), "{got}");
    assert_eq!(got["arg"], want.as_str(), "{got}");
    assert_eq!(got["node"], want.as_str(), "{got}");
    assert_eq!(got["plain"], note.as_str(), "{got}");
    assert_eq!(
        got["keys"],
        serde_json::json!(["API_TOKEN", "PLAIN_NOTE"]),
        "{got}"
    );
    let snooped = call(&dev.router, "/fn/mallory/snoop", &mut seen).await;
    assert!(!snooped.to_string().contains(&secret), "{snooped}");
    assert!(
        snooped["get"].is_null() || snooped["get"].is_string(),
        "{snooped}"
    );
    assert_ne!(snooped["get"], secret.as_str());
    // The function's own log line made it to the owner.
    let logs = seen.output(&skiff(&dev, &alice, &["logs", "reader"], ""));
    assert!(logs.contains("reader called"), "{logs}");

    // Nowhere else: answers, the services' output, any file of the data dir
    // (logs, code, caches, the SQLite files) or of the database server.
    for (i, text) in seen.0.iter().enumerate() {
        assert!(
            !text.contains(&secret),
            "answer {i} shows the secret: {text}"
        );
    }
    assert!(
        !dev.service.log().contains(&secret),
        "the services' log shows the secret"
    );
    let dirs = db_files(&data);
    let mut everywhere = files_containing(&data, secret.as_bytes());
    for d in &dirs {
        everywhere.extend(files_containing(d, secret.as_bytes()));
    }
    assert!(
        everywhere.is_empty(),
        "the plaintext is stored in {everywhere:?}"
    );
    // The same search finds what IS stored in clear (the env value), so an
    // empty result above means something.
    let control: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| files_containing(d, note.as_bytes()))
        .collect();
    assert!(
        !control.is_empty(),
        "the search did not find the plain env value in {dirs:?}"
    );

    // A wrong key stops the services at start, loudly.
    let Dev { mut service, .. } = dev;
    service.kill().await;
    let wrong = "cd".repeat(32);
    let out = tokio::time::timeout(Duration::from_secs(60), async {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff"));
        cmd.args([
            "dev",
            "--data-dir",
            data.to_str().unwrap(),
            "--api-addr",
            "127.0.0.1:0",
        ])
        .args(["--router-addr", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("SKIFF_SECRETS_KEY", &wrong)
        .stdin(Stdio::null());
        if let Some(url) = url {
            cmd.env("SKIFF_DATABASE_URL", url);
        }
        cmd.output().await.unwrap()
    })
    .await
    .expect("skiff dev with a wrong key must exit, not run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SKIFF_SECRETS_KEY"), "{err}");
    assert!(
        !err.contains(&wrong),
        "the key itself must not be printed: {err}"
    );

    // Rotation: re-seal under a new key, start with it, the function still
    // reads its secret; the old key is now the wrong one.
    let key_file = data.join("secrets-key");
    let old = std::fs::read_to_string(&key_file).unwrap();
    let new_key = "ef".repeat(32);
    let db_url = url.map_or_else(
        || format!("sqlite://{}", data.join("skiff.db").display()),
        str::to_owned,
    );
    let rotated = Command::new(bin("skiff-manager"))
        .args(["secrets", "rotate-key"])
        .env("SKIFF_DATABASE_URL", &db_url)
        .env("SKIFF_SECRETS_KEY", old.trim())
        .env("SKIFF_NEW_SECRETS_KEY", &new_key)
        .output()
        .unwrap();
    let printed = seen.output(&rotated);
    assert!(
        !printed.contains(&new_key) && !printed.contains(old.trim()),
        "{printed}"
    );
    std::fs::write(&key_file, &new_key).unwrap();
    let dev = start(&data, url).await;
    let got = call(&dev.router, "/fn/alice/reader", &mut seen).await;
    assert_eq!(got["get"], want.as_str(), "after rotation: {got}");
    assert!(!dev.service.log().contains(&secret));
}

fn rand_bytes() -> [u8; 12] {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sqlite() {
    secret_stays_inside_the_function(None, &|data| vec![data.to_path_buf()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_mariadb() {
    let db = PrivateMariaDb::start().await;
    let files = db.dir().to_path_buf();
    secret_stays_inside_the_function(Some(&db.url()), &move |_| vec![files.clone()]).await;
    db.stop().await;
}
