//! Warm type checkers (`SKIFF_CHECK_WARM`): a deploy checked by a tenant's
//! long-lived `deno lsp` answers exactly as one checked by `deno check`, and
//! the warm checker of one tenant can read nothing of another's.

use std::time::Duration;

use serde_json::Value;
use skiff_manager::typecheck::settings::CheckerSettings;
use skiff_manager::typecheck::warm::Status;
use skiff_testkit::TestBackend;

use crate::helpers::{Options, TestApp, spawn_app_with};
use crate::uploads::{deploy_archive, tar_gz};

fn opts(warm: usize) -> Options {
    Options {
        checker: CheckerSettings {
            check_warm: warm,
            ..CheckerSettings::default()
        },
        ..Options::default()
    }
}

fn status(app: &TestApp) -> Status {
    app.state.checker.warm_status().expect("a local checker")
}

/// Waits (bounded) until the pool holds a warm spare.
async fn wait_for_spare(app: &TestApp) {
    for _ in 0..600 {
        if status(app).spare > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no warm checker within 60 s: {:?}", status(app));
}

enum Upload {
    Module(&'static str, &'static str),
    Archive(Vec<(&'static str, &'static [u8])>),
}

async fn deploy(app: &TestApp, token: &str, name: &str, up: &Upload) -> (u16, Value) {
    let r = match up {
        Upload::Module(entry, src) => app
            .client
            .post(app.url(&format!("/func?name={name}&entry={entry}")))
            .bearer_auth(token)
            .body(*src)
            .send()
            .await
            .unwrap(),
        Upload::Archive(files) => deploy_archive(app, token, name, tar_gz(files)).await,
    };
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_checks_answer_as_deno_check_does() {
    let cold = spawn_app_with(TestBackend::Sqlite, opts(0)).await;
    let warm = spawn_app_with(TestBackend::Sqlite, opts(2)).await;
    let (tc, tw) = (cold.token("alice").await, warm.token("alice").await);
    wait_for_spare(&warm).await;
    let cases: Vec<(&str, Upload)> = vec![
        (
            "clean",
            Upload::Module(
                "main.ts",
                "export default (req: Request) => new Response(new URL(req.url).pathname);\n",
            ),
        ),
        (
            "mistyped",
            Upload::Module(
                "main.ts",
                "const n: number = \"seven\";\nexport default () => new Response(String(n));\n",
            ),
        ),
        (
            "caught",
            Upload::Module(
                "main.ts",
                "export default () => {\n  try { return new Response(JSON.parse(\"{\")); }\n  catch (err) { return new Response(err.message, { status: 500 }); }\n};\n",
            ),
        ),
        (
            "loose-js",
            Upload::Module(
                "main.js",
                "export default function (req) { return new Response(req.headers.get(\"x\") * 2); }\n",
            ),
        ),
        (
            "svrless",
            Upload::Module(
                "main.ts",
                "export default async function handler({ req }: { req: Deno.RequestEvent }) {\n  await req.respondWith(new Response(\"hi é 😀\" + 1 * \"2\"));\n}\n",
            ),
        ),
        (
            "two-files",
            Upload::Archive(vec![
                (
                    "main.ts",
                    b"import { page } from \"./lib/page.ts\";\nimport data from \"./data.json\" with { type: \"json\" };\nexport default () => new Response(page(data.title));\n",
                ),
                (
                    "lib/page.ts",
                    b"export const page = (t: string): string => { const x: boolean = t; return `<h1>${x}</h1>`; };\n",
                ),
                ("data.json", b"{\"title\":\"hello\"}\n"),
            ]),
        ),
    ];
    let mut warm_answers = 0;
    for (name, up) in &cases {
        let served = status(&warm).served;
        let (sc, bc) = deploy(&cold, &tc, name, up).await;
        let (sw, bw) = deploy(&warm, &tw, name, up).await;
        assert_eq!(sc, sw, "{name}: cold {bc} / warm {bw}");
        assert_eq!(
            bc["warnings"], bw["warnings"],
            "{name}: the warm checker's warnings differ from deno check's"
        );
        assert!(sc < 300, "{name}: {sc} {bc}");
        warm_answers += status(&warm).served - served;
    }
    let s = status(&warm);
    assert_eq!(s.failed, 0, "{s:?}");
    assert_eq!(
        warm_answers,
        cases.len() as u64,
        "each deploy was checked warm: {s:?}"
    );
    assert_eq!(
        s.idle
            .iter()
            .filter(|w| w.tenant.as_deref() == Some("alice"))
            .count(),
        1,
        "alice's deploys all went to her one worker: {s:?}"
    );
    // the answers a user sees do differ between cases: the test compares something
    let mistyped = deploy(&warm, &tw, "mistyped", &cases[1].1).await.1;
    assert!(
        mistyped["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("TS2322") && w.contains("main.ts:1:7")),
        "{mistyped}"
    );
}

const SECRET: &str = "alice-secret-7731";

/// The pid of the process whose working directory is `dir` (a worker's).
fn process_in(dir: &std::path::Path) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        (std::fs::read_link(e.path().join("cwd")).ok()? == dir).then_some(pid)
    })
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_warm_checker_is_its_own_and_sandboxed() {
    let app = spawn_app_with(TestBackend::Sqlite, opts(2)).await;
    let (ta, tb) = (app.token("alice").await, app.token("bob").await);
    wait_for_spare(&app).await;
    let clean = Upload::Module("main.ts", "export default () => new Response(\"a\");\n");
    let (st, body) = deploy(&app, &ta, "mine", &clean).await;
    assert_eq!(st, 201, "{body}");
    wait_for_spare(&app).await;
    let s = status(&app);
    let alice_dir = s
        .idle
        .iter()
        .find(|w| w.tenant.as_deref() == Some("alice"))
        .map(|w| w.dir.clone())
        .unwrap_or_else(|| panic!("alice's worker: {s:?}"));

    // What alice's worker holds, planted where a type error would quote it.
    let planted = alice_dir.join("planted.d.ts");
    std::fs::write(&planted, format!("declare const LEAK: \"{SECRET}\";\n")).unwrap();
    let reads = format!(
        "/// <reference path=\"{p}\" />\nconst x: boolean = LEAK;\nexport default () => new Response(String(x));\n",
        p = planted.display()
    );
    // Without the platform's layers the check would quote the planted file.
    let plain = tempfile::tempdir().unwrap();
    std::fs::write(plain.path().join("main.ts"), &reads).unwrap();
    let deno = std::env::var("SKIFF_DENO").unwrap_or_else(|_| "deno".into());
    let out = std::process::Command::new(deno)
        .args(["check", "--no-lock", "main.ts"])
        .current_dir(plain.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(SECRET),
        "the attack needs the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = app
        .client
        .post(app.url("/func?name=probe"))
        .bearer_auth(&tb)
        .body(reads)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert!(
        !body.to_string().contains(SECRET),
        "bob read alice's file: {body}"
    );
    assert_eq!(st, 400, "the graph names a file outside the upload: {body}");

    // Bob's own deploy is checked warm, by a worker that never served alice.
    let before = status(&app).served;
    let (st, body) = deploy(&app, &tb, "bobs", &clean).await;
    assert_eq!(st, 201, "{body}");
    let s = status(&app);
    assert_eq!(s.served, before + 1, "bob's deploy was checked warm: {s:?}");
    let bobs: Vec<_> = s
        .idle
        .iter()
        .filter(|w| w.tenant.as_deref() == Some("bob"))
        .collect();
    assert_eq!(bobs.len(), 1, "{s:?}");
    assert_ne!(bobs[0].dir, alice_dir, "bob got a worker of his own");

    // Each worker runs confined: not as the manager's uid when it can
    // switch, under seccomp, unable to gain privileges.
    for w in &s.idle {
        let pid = process_in(&w.dir).unwrap_or_else(|| panic!("no process in {}", w.dir.display()));
        assert_eq!(status_field(pid, "Seccomp"), "2", "{w:?}");
        assert_eq!(status_field(pid, "NoNewPrivs"), "1", "{w:?}");
        let me = status_field(std::process::id(), "Uid");
        if me.starts_with("0\t") {
            let uid = status_field(pid, "Uid");
            assert!(uid.starts_with("199999\t"), "a worker runs as {uid}");
        }
    }
}

/// A source whose types take longer than the operator's check timeout gets
/// the same answer from a warm checker as from `deno check` (the warm
/// timeout is the verdict: no second, cold try), and the worker is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_check_keeps_the_operators_timeout() {
    let app = spawn_app_with(
        TestBackend::Sqlite,
        Options {
            checker: CheckerSettings {
                check_warm: 2,
                check_timeout_secs: 2,
                ..CheckerSettings::default()
            },
            ..Options::default()
        },
    )
    .await;
    let t = app.token("alice").await;
    wait_for_spare(&app).await;
    let r = app
        .client
        .post(app.url("/func?name=slow"))
        .bearer_auth(&t)
        .body(crate::checker_sandbox::slow_types())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "type_check_failed", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("longer than 2 s")),
        "{body}"
    );
    let s = status(&app);
    assert_eq!(
        s.failed, 1,
        "the warm worker was the one that timed out: {s:?}"
    );
    assert!(
        !s.idle.iter().any(|w| w.tenant.as_deref() == Some("alice")),
        "the timed-out worker is not kept: {s:?}"
    );
    // The next deploy is checked by a fresh worker (the spare started meanwhile),
    // within the same 2 s — a cold `deno check` may not be, on a loaded machine.
    wait_for_spare(&app).await;
    let (st, body) = deploy(
        &app,
        &t,
        "fine",
        &Upload::Module("main.ts", "export default () => new Response(\"ok\");\n"),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(status(&app).served, 1, "{:?}", status(&app));
}
