use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use skiff_testkit::{TestBackend, TestDb};

use crate::harness::{Manager, ManagerEnv, source, status_and_code};

#[tokio::test]
async fn missing_deno_is_reported_at_start_and_deploys_answer_503_until_it_appears() {
    let db = TestDb::new(TestBackend::Sqlite).await;
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("tools/deno");
    let env = ManagerEnv {
        database_url: db.url.clone(),
        data_dir: data.path().join("data"),
        extra: vec![("SKIFF_DENO", missing.display().to_string())],
    };
    let mgr = Manager::start(&env).await;

    // A clear error at start, naming the setting and what to do.
    let log = mgr.log();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("Deno is missing"))
        .unwrap_or_else(|| panic!("no clear error about Deno in the log:\n{log}"));
    assert!(
        line.contains(&format!("SKIFF_DENO is {}", missing.display())),
        "{line}"
    );
    assert!(
        line.contains("POST /func") && line.contains("503"),
        "{line}"
    );

    // Everything else works.
    let r = mgr.http.get(mgr.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = mgr.http.get(mgr.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token = mgr.token("alice").await;
    let r = mgr.try_get(&token, "/func").await.unwrap();
    assert_eq!(r.status(), 200);

    // A deploy answers 503 with a clear JSON message that does not leak paths.
    let r = mgr
        .try_deploy(&token, "hello", &source("v1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "checker_unavailable");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("Deno is missing"), "{msg}");
    assert!(!msg.contains(&data.path().display().to_string()), "{msg}");
    // The import policy reads the module graph Deno reports (no hand-written
    // scanner any more): without Deno, a forbidden import cannot be judged
    // either, and is unavailable too — never a wrong 2xx.
    let r = mgr
        .try_deploy(
            &token,
            "hello",
            "import x from 'npm:left-pad';\nexport default x;\n",
        )
        .await
        .unwrap();
    assert_eq!(
        status_and_code(r).await,
        (503, "checker_unavailable".into())
    );
    // Nothing was stored.
    let list: Value = mgr
        .try_get(&token, "/func")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["functions"], Value::Array(vec![]));

    // Deno appears where SKIFF_DENO points: deploys work again, no restart needed.
    let real =
        skiff_core::deno::locate(std::env::var_os("SKIFF_DENO").map(PathBuf::from).as_deref())
            .await
            .expect("these tests need Deno (PATH or SKIFF_DENO)");
    std::fs::create_dir_all(missing.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&real, &missing).unwrap();
    let mut last = (0, String::new());
    for _ in 0..60 {
        let r = mgr
            .try_deploy(&token, "hello", &source("v1"))
            .await
            .unwrap();
        last = status_and_code(r).await;
        if last.0 != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(last, (201, String::new()), "deploys did not recover");
    let r = mgr.try_get(&token, "/func/hello/code").await.unwrap();
    assert_eq!(r.text().await.unwrap(), source("v1"));
    assert!(mgr.log().contains("Deno found"), "{}", mgr.log());
}

/// Deno removed while the manager runs (an upgrade, an uninstall): deploys
/// answered 500 `internal` before; now 503 `checker_unavailable`, and they
/// work again once Deno is back.
#[tokio::test]
async fn deno_vanishing_after_start_answers_503_then_recovers() {
    let db = TestDb::new(TestBackend::Sqlite).await;
    let data = tempfile::tempdir().unwrap();
    let tools = data.path().join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    let ours = tools.join("deno");
    let real =
        skiff_core::deno::locate(std::env::var_os("SKIFF_DENO").map(PathBuf::from).as_deref())
            .await
            .expect("these tests need Deno (PATH or SKIFF_DENO)");
    // A binary of our own, so removing it is what the manager sees.
    let install = || {
        if std::fs::hard_link(&real, &ours).is_err() {
            std::fs::copy(&real, &ours).unwrap();
        }
    };
    install();
    let env = ManagerEnv {
        database_url: db.url.clone(),
        data_dir: data.path().join("data"),
        extra: vec![("SKIFF_DENO", ours.display().to_string())],
    };
    let mgr = Manager::start(&env).await;
    let token = mgr.token("alice").await;
    let r = mgr
        .try_deploy(&token, "hello", &source("v1"))
        .await
        .unwrap();
    assert_eq!(
        status_and_code(r).await,
        (201, String::new()),
        "{}",
        mgr.log()
    );

    std::fs::remove_file(&ours).unwrap();
    let r = mgr
        .try_deploy(&token, "hello", &source("v2"))
        .await
        .unwrap();
    assert_eq!(
        status_and_code(r).await,
        (503, "checker_unavailable".into())
    );
    let r = mgr.try_get(&token, "/func/hello/code").await.unwrap();
    assert_eq!(r.text().await.unwrap(), source("v1"), "v1 stays live");

    install();
    let mut last = (0, String::new());
    for _ in 0..60 {
        let r = mgr
            .try_deploy(&token, "hello", &source("v2"))
            .await
            .unwrap();
        last = status_and_code(r).await;
        if last.0 != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(last, (200, String::new()), "deploys did not recover");
    let info: Value = mgr
        .try_get(&token, "/func/hello")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["version"], 2);
}
