//! The checker as its own process (`skiff-manager checker`), as the manager's
//! pod runs it: the manager sends each source over the socket and maps the
//! answer exactly as a local check; a checker that is down makes deploys `503`,
//! never a `5xx` that blames the user or a half-written function.

use std::time::{Duration, Instant};

use skiff_manager::typecheck::settings::CheckerSettings;
use skiff_testkit::TestBackend;

use crate::helpers::{Options, spawn_app_with};

async fn code_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn deploys_are_checked_by_a_separate_checker_process() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("checker.sock");
    let checker_data = dir.path().join("checker-data");
    let mut checker = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff-manager"))
        .args(["checker", "--listen"])
        .arg(&socket)
        .env("SKIFF_DATA_DIR", &checker_data)
        // The checker needs none of the manager's secrets.
        .env_remove("SKIFF_JWT_SECRET")
        .env_remove("SKIFF_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the checker never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let app = spawn_app_with(
        TestBackend::Sqlite,
        Options {
            checker: CheckerSettings {
                checker_socket: Some(socket.clone()),
                ..CheckerSettings::default()
            },
            ..Options::default()
        },
    )
    .await;
    let t = app.token("alice").await;
    let r = app
        .deploy(
            &t,
            "ok",
            "export default (_r: Request) => new Response(\"hi\");\n",
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = app
        .deploy(
            &t,
            "warned",
            "export default (_r: Request) => new Response(1 + \"\" - 1);\n",
        )
        .await;
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["warnings"][0].as_str().unwrap().contains("TS2362"),
        "{body}"
    );
    assert_eq!(body["artifact_sha256"].as_str().map(str::len), Some(64));
    let r = app.deploy(&t, "bad", "export const x = 1;\n").await;
    assert_eq!(code_of(r).await, (400, "no_handler".into()));
    let r = app
        .deploy(
            &t,
            "bad",
            "import x from \"/etc/passwd\";\nexport default x;\n",
        )
        .await;
    assert_eq!(code_of(r).await, (400, "import_not_allowed".into()));
    // The checker timed its steps and sent the times back: the manager's
    // metrics have every build (two built, one without a handler, one refused
    // import), and the probes of the three that got that far.
    let m = skiff_testkit::Scrape::get(&app.metrics_url).await;
    assert_eq!(m.value("skiff_check_duration_seconds_count"), 4.0);
    assert_eq!(
        m.value("skiff_check_step_duration_seconds_count{step=\"graph\"}"),
        4.0
    );
    assert_eq!(
        m.value("skiff_check_step_duration_seconds_count{step=\"probe\"}"),
        3.0
    );
    // The checks ran in the checker's data dir, not the manager's.
    assert!(checker_data.join("deno-cache").exists());
    assert!(!app.data_dir.path().join("deno-cache").exists());

    // Checker gone: deploys are unavailable, nothing is written.
    checker.start_kill().unwrap();
    checker.wait().await.unwrap();
    let before = app.snapshot().await;
    let r = app
        .deploy(
            &t,
            "later",
            "export default (_r: Request) => new Response(\"x\");\n",
        )
        .await;
    assert_eq!(code_of(r).await, (503, "checker_unavailable".into()));
    assert_eq!(app.snapshot().await, before);
}
