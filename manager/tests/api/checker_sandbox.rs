//! Attacks on the deploy-time checker through the deploy API: sources that try
//! to make `deno info`/`deno check` read host files and print them, through
//! every import form we could find (including ones a lexer misreads), and
//! sources that try to exhaust the host's memory or time. The checker's sandbox
//! must hold whatever the import policy says: the same sources run through a
//! bare `deno check` (no sandbox) do leak, which the first test shows too.
//!
//! These do not depend on the database: they run on SQLite only.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_manager::typecheck::settings::CheckerSettings;
use skiff_testkit::TestBackend;

use crate::helpers::{Options, TestApp, spawn_app_with};

/// A world-readable file outside the data dir: file permissions would let
/// any uid read it, so only the sandbox's own rules keep it out.
struct Planted {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    marker: String,
}

fn plant(name: &str) -> Planted {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    for a in dir.path().ancestors() {
        if let Ok(m) = std::fs::metadata(a) {
            let mode = m.permissions().mode();
            let _ = std::fs::set_permissions(a, std::fs::Permissions::from_mode(mode | 0o005));
        }
    }
    let marker = format!("TOPSECRET-{name}-{}", std::process::id());
    let path = dir.path().join(name);
    std::fs::write(&path, format!("{marker} = 1\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Planted {
        _dir: dir,
        path,
        marker,
    }
}

/// Every way we know for a TypeScript source to make Deno's checker load a
/// file, with `{P}` standing for its path.
const FORMS: &[&str] = &[
    "import x from \"{P}\";\nexport default () => new Response(String(x));\n",
    "import \"{P}\";\nexport default () => new Response(\"x\");\n",
    "export * from \"{P}\";\nexport default () => new Response(\"x\");\n",
    "import x from \"file://{P}\";\nexport default () => new Response(String(x));\n",
    "const m = await import(\"{P}\");\nexport default () => new Response(String(m));\n",
    "/// <reference path=\"{P}\" />\nexport default () => new Response(\"x\");\n",
    "///<reference   path = \"{P}\"/>\nexport default () => new Response(\"x\");\n",
    "/// <reference types=\"{P}\" />\nexport default () => new Response(\"x\");\n",
    "// @deno-types=\"{P}\"\nimport * as p from \"node:path\";\nexport default () => new Response(String(p));\n",
    "// @ts-types=\"{P}\"\nimport * as p from \"node:path\";\nexport default () => new Response(String(p));\n",
    "import j from \"{P}\" with { type: \"json\" };\nexport default () => new Response(String(j));\n",
    "import t from \"{P}\" with { type: \"text\" };\nexport default () => new Response(String(t));\n",
    // A lexer that takes the `/` after `)` for a division sees a string here
    // and misses the import; JavaScript sees a regular expression.
    "declare const y: string;\nif (y) /\"/.test(y); import s from \"{P}\"; // \"\nexport default () => new Response(String(s));\n",
    // Climbing out of the scratch dir with a relative path.
    "import r from \"../../../../../../../../../..{P}\";\nexport default () => new Response(String(r));\n",
];

async fn app(opts: Options) -> (TestApp, String) {
    let app = spawn_app_with(TestBackend::Sqlite, opts).await;
    let token = app.token("mallory").await;
    (app, token)
}

async fn deploy_text(app: &TestApp, token: &str, source: &str) -> (u16, Value) {
    let r = app.deploy(token, "probe", source).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_checker_cannot_read_or_print_host_files_through_any_import_form() {
    let (app, token) = app(Options::default()).await;
    let planted = plant("planted.ts");
    // The manager's own secrets: its signing-key file (as skiff dev keeps
    // it) and its process environment.
    let jwt_file = app.data_dir.path().join("jwt-secret");
    std::fs::write(&jwt_file, "TOPSECRET-JWT-FILE\n").unwrap();
    let environ = format!("/proc/{}/environ", std::process::id());
    let targets = [
        (planted.path.display().to_string(), planted.marker.clone()),
        (
            jwt_file.display().to_string(),
            "TOPSECRET-JWT-FILE".to_owned(),
        ),
        (environ, "CARGO".to_owned()),
        ("/etc/shadow".to_owned(), "root:".to_owned()),
        ("/etc/passwd".to_owned(), "root:".to_owned()),
    ];
    let before = app.snapshot().await;
    for (path, secret) in &targets {
        for form in FORMS {
            let source = form.replace("{P}", path);
            let (status, body) = deploy_text(&app, &token, &source).await;
            assert_eq!(status, 400, "{source}\n{body}");
            let text = body.to_string();
            assert!(
                !text.contains(secret.as_str()),
                "{path} leaked through\n{source}\n{text}"
            );
        }
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused deploy wrote something"
    );

    // The same attack on a bare `deno check`, without the sandbox: the
    // planted file's content comes back. This is what the sandbox stops.
    let deno = skiff_core::deno::locate(None).await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(
        scratch.path().join("fn.ts"),
        FORMS[0].replace("{P}", &planted.path.display().to_string()),
    )
    .unwrap();
    let out = std::process::Command::new(deno)
        .args(["check", "--no-remote", "--no-npm", "--no-lock", "fn.ts"])
        .current_dir(scratch.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let bare = String::from_utf8_lossy(&out.stderr);
    assert!(
        bare.contains(&planted.marker),
        "a bare deno check no longer shows the file (the test proves nothing then): {bare}"
    );
}

/// A time bomb: types that take minutes to check.
pub(crate) fn slow_types() -> String {
    let mut s = String::from(
        "type Deep<T, N extends unknown[] = []> = N[\"length\"] extends 30 ? T : Deep<{ a: T; b: [T, N] }, [...N, 1]>;\n",
    );
    for i in 0..4000 {
        s.push_str(&format!(
            "declare const v{i}: Deep<{{ k{i}: {i} }}>; export const u{i} = v{i}.a.b[0].a.b[0].a.a.a.b[0].a;\n"
        ));
    }
    s.push_str("export default () => new Response(\"x\");\n");
    s
}

/// A memory bomb: a string literal type that doubles 13 times (800 MB).
fn huge_types() -> String {
    let mut s = format!("type L0 = \"{}\";\n", "a".repeat(100_000));
    for i in 1..14 {
        s.push_str(&format!("type L{i} = `${{L{}}}${{L{}}}`;\n", i - 1, i - 1));
    }
    s.push_str("export const x: L13 = \"\" as L13;\nexport default () => new Response(\"x\");\n");
    s
}

/// Set in the process [`in_a_process_of_its_own`] starts.
const ALONE: &str = "SKIFF_TEST_ALONE";

/// Whether to run the test's body here: in the test binary's own process
/// other tests allocate too, so a test that measures the manager's memory
/// (the process's RSS) runs again in a child process of this binary holding
/// only that test, and the parent asserts the child passed.
async fn in_a_process_of_its_own(test: &str) -> bool {
    if std::env::var_os(ALONE).is_some() {
        return true;
    }
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ALONE, "1")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{test} alone: {text}");
    assert!(
        text.contains("1 passed"),
        "{test} did not run alone: {text}"
    );
    false
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap()
}

#[tokio::test]
async fn memory_and_time_bombs_fail_the_deploy_and_spare_the_host() {
    if !in_a_process_of_its_own(
        "checker_sandbox::memory_and_time_bombs_fail_the_deploy_and_spare_the_host",
    )
    .await
    {
        return;
    }
    let (app, token) = app(Options {
        checker: CheckerSettings {
            // Room for an ordinary check on a loaded machine; the bomb takes minutes.
            check_timeout_secs: 10,
            // Room for the time bomb to run into the time limit: its check holds
            // ~420 MB after 5 s and ~570 MB after 12 s on a quiet 2-CPU machine
            // (384 MB ran it out of memory first there, which is not this test).
            check_memory_mb: 1024,
            ..CheckerSettings::default()
        },
        ..Options::default()
    })
    .await;
    let rss_before = rss_kb();

    // Endless files: once a 1.6 GB/s memory bomb in the checker.
    for source in [
        "import z from \"/dev/zero\";\nexport default () => new Response(String(z));\n",
        "import u from \"/dev/urandom\";\nexport default () => new Response(String(u));\n",
        "import u from \"/proc/self/fd/0\";\nexport default () => new Response(String(u));\n",
    ] {
        let (status, body) = deploy_text(&app, &token, source).await;
        assert_eq!(status, 400, "{source}: {body}");
        // Refused for what it is, not cut off by the time limit.
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(!msg.contains("longer than"), "{source}: {msg}");
    }

    let start = Instant::now();
    let (status, body) = deploy_text(&app, &token, &slow_types()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "type_check_failed");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("longer than 10 s"), "{msg}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );

    // The manager itself did not grow with the bombs, and still deploys.
    let grown = rss_kb().saturating_sub(rss_before);
    assert!(grown < 100 * 1024, "the manager grew by {grown} kB");
    let (status, body) = deploy_text(
        &app,
        &token,
        "export default () => new Response(\"fine\");\n",
    )
    .await;
    assert!(status == 201 || status == 200, "{body}");
}

#[tokio::test]
async fn a_memory_bomb_runs_the_check_out_of_memory_not_the_host() {
    if !in_a_process_of_its_own(
        "checker_sandbox::a_memory_bomb_runs_the_check_out_of_memory_not_the_host",
    )
    .await
    {
        return;
    }
    let (app, token) = app(Options {
        checker: CheckerSettings {
            check_timeout_secs: 120,
            check_memory_mb: 256,
            ..CheckerSettings::default()
        },
        ..Options::default()
    })
    .await;
    let rss_before = rss_kb();
    let (status, body) = deploy_text(&app, &token, &huge_types()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "type_check_failed");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("out of memory"), "{msg}");
    let grown = rss_kb().saturating_sub(rss_before);
    assert!(grown < 100 * 1024, "the manager grew by {grown} kB");
}

#[tokio::test]
async fn no_checker_process_outlives_its_deploy() {
    let (app, token) = app(Options {
        checker: CheckerSettings {
            check_timeout_secs: 2,
            ..CheckerSettings::default()
        },
        ..Options::default()
    })
    .await;
    let (status, _) = deploy_text(&app, &token, &slow_types()).await;
    assert_eq!(status, 400);
    let scratch = app.data_dir.path().join("checks");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
            .filter_map(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .ok()
                    .map(|c| (pid, c))
            })
            // A warm type checker (`checks/warm-*`) lives on by design;
            // a build's processes run in a build dir, wherever it is.
            .filter(|(_, cwd)| {
                cwd.starts_with(&scratch)
                    && !(cwd.parent() == Some(scratch.as_path())
                        && cwd
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("warm-")))
            })
            .map(|(pid, cwd)| format!("{pid} in {}", cwd.display()))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "checker processes left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
