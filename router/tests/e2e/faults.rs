use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use skiff_testkit::TestBackend;

use crate::helpers::{Opts, replies, stack_with};

skiff_testkit::on_both_backends!(multi_thread; failing_functions_get_their_status_and_spare_the_neighbour,);

const FAULTY: &str = r#"export default async (req: Request) => {
  switch (new URL(req.url).pathname) {
    case "/throw": throw new Error("kaboom");
    case "/exit": Deno.exit(3);
    case "/hang": return await new Promise<Response>(() => {});
    case "/heap": {
      const hog: string[][] = [];
      for (;;) hog.push(new Array(1_000_000).fill("x".repeat(16)));
    }
    default: return new Response("fine");
  }
};
"#;

async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["error"]["code"].as_str().unwrap_or("").to_owned())
}

async fn failing_functions_get_their_status_and_spare_the_neighbour(b: TestBackend) {
    let s = Arc::new(
        stack_with(
            b,
            Opts {
                request_timeout: Duration::from_secs(6),
                ..Opts::default()
            },
        )
        .await,
    );
    let t = s.token("alice").await;
    s.deploy(&t, "faulty", FAULTY).await;
    s.deploy(&t, "neighbour", &replies("still here")).await;
    s.until("alice", "faulty", |st, _| st == 200).await;
    s.until("alice", "neighbour", |st, _| st == 200).await;

    // the neighbour is called throughout; every call must succeed
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let (s, stop) = (s.clone(), stop.clone());
        async move {
            let mut calls = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = s.get("alice", "neighbour", "/").await;
                assert_eq!(r.status(), 200, "the neighbour failed");
                assert_eq!(r.text().await.unwrap(), "still here");
                calls += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            calls
        }
    });

    assert_eq!(
        error_code(s.get("alice", "faulty", "/throw").await).await,
        (500, "function_error".into())
    );
    // an exception spares the instance: the next call is answered by it
    assert_eq!(s.get("alice", "faulty", "/").await.status(), 200);

    assert_eq!(
        error_code(s.get("alice", "faulty", "/exit").await).await,
        (502, "bad_gateway".into())
    );
    // a crashed instance is replaced on the next call
    assert_eq!(s.get("alice", "faulty", "/").await.status(), 200);

    assert_eq!(
        error_code(s.get("alice", "faulty", "/hang").await).await,
        (504, "function_timeout".into())
    );
    assert_eq!(s.get("alice", "faulty", "/").await.status(), 200);

    assert_eq!(
        error_code(s.get("alice", "faulty", "/heap").await).await,
        (502, "bad_gateway".into())
    );
    assert_eq!(s.get("alice", "faulty", "/").await.status(), 200);

    stop.store(true, Ordering::Relaxed);
    let calls = watcher.await.unwrap();
    assert!(calls > 10, "the neighbour was called only {calls} times");

    // a module that fails while loading cannot be started: 503, and its owner's log says why
    // (The deploy's probe refuses such a module; one that fails only where it
    // runs, or a version stored before the probe existed, gets here.)
    s.deploy_unbuilt(
        "alice",
        "broken",
        "throw new Error('fails at load');\nexport default () => new Response('never');\n",
    )
    .await;
    let (status, code) = loop {
        let r = s.get("alice", "broken", "/").await;
        if r.status() != 404 {
            break error_code(r).await;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!((status, code.as_str()), (503, "function_unavailable"));
    let logs = s.manager.logs(&t, "broken", "").await.text().await.unwrap();
    assert!(logs.contains("fails at load"), "{logs}");
}

const SLOW: &str = r#"export default async (req: Request) => {
  const p = new URL(req.url).pathname;
  if (p === "/slow") await new Promise((r) => setTimeout(r, 3000));
  if (p === "/talk") for (let i = 0; i < 200; i++) console.log("line " + i + " " + "x".repeat(200));
  return new Response("done " + p);
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_killed_mid_request_gives_502_and_is_replaced() {
    let s = crate::helpers::stack(TestBackend::Sqlite).await;
    let t = s.token("alice").await;
    s.deploy(&t, "slow", SLOW).await;
    s.until("alice", "slow", |st, _| st == 200).await;
    let pid = s.handle.process_runtime().unwrap().running()[0]
        .pid
        .unwrap();
    let call = tokio::spawn({
        let (c, u) = (s.client.clone(), s.url("alice", "slow", "/slow"));
        async move { c.get(u).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let (st, code) = error_code(call.await.unwrap()).await;
    assert_eq!((st, code.as_str()), (502, "bad_gateway"));
    let r = s.get("alice", "slow", "/again").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "done /again");
    let new_pid = s.handle.process_runtime().unwrap().running()[0]
        .pid
        .unwrap();
    assert_ne!(new_pid, pid);
}

/// The log directory on a full (64 KiB) file system: the function's output is
/// dropped, the function keeps answering, and the logs endpoint still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_log_disk_does_not_stop_a_function() {
    let s = crate::helpers::stack(TestBackend::Sqlite).await;
    let logs = s.data_dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&logs)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "this test needs root to mount a small tmpfs"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            // Lazy: the router may still hold the log file open.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(logs.clone());
    std::fs::write(logs.join("filler"), vec![0u8; 64 * 1024]).ok();
    let t = s.token("alice").await;
    s.deploy(&t, "talker", SLOW).await;
    s.until("alice", "talker", |st, _| st == 200).await;
    for i in 0..5 {
        let r = s.get("alice", "talker", "/talk").await;
        assert_eq!(r.status(), 200, "call {i}");
        assert_eq!(r.text().await.unwrap(), "done /talk");
    }
    let r = s.manager.logs(&t, "talker", "").await;
    assert!(
        r.status().is_success() || r.status() == 503,
        "logs answered {}",
        r.status()
    );
}

/// The database goes away and comes back: the router keeps serving the
/// functions it knows (warm and cold), and sees deploys again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_router_keeps_serving_while_the_database_is_down() {
    let server = skiff_testkit::PrivateMariaDb::start().await;
    let db = skiff_testkit::TestDb::on_mysql_server(&server.server_url()).await;
    let s = crate::helpers::stack_on(
        db,
        Opts {
            idle_timeout: Duration::from_millis(500),
            ..Opts::default()
        },
    )
    .await;
    let t = s.token("alice").await;
    s.deploy(&t, "steady", &replies("steady v1")).await;
    s.deploy(&t, "cold", &replies("cold v1")).await;
    s.until("alice", "steady", |st, b| st == 200 && b == "steady v1")
        .await;
    s.until("alice", "cold", |st, b| st == 200 && b == "cold v1")
        .await;

    server.stop().await;
    // both keep answering, the idle one after a cold start without the database
    for _ in 0..20 {
        let r = s.get("alice", "steady", "/").await;
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        s.running_instances(),
        1,
        "the idle instance should have stopped by now"
    );
    assert_eq!(
        s.get("alice", "cold", "/").await.text().await.unwrap(),
        "cold v1"
    );
    assert_eq!(s.get("alice", "nothing", "/").await.status(), 404);

    server.up().await;
    // the manager recovers by itself; a deploy after the outage reaches the router
    let mut deployed = false;
    for _ in 0..100 {
        let r = s.manager.deploy(&t, "steady", &replies("steady v2")).await;
        if r.status().is_success() {
            deployed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        deployed,
        "the manager did not recover after the database came back"
    );
    s.until("alice", "steady", |st, b| st == 200 && b == "steady v2")
        .await;
}

#[tokio::test]
async fn a_router_without_deno_says_so_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff-router"))
        .env(
            "SKIFF_DATABASE_URL",
            format!("sqlite://{}/db", dir.path().display()),
        )
        .env("SKIFF_DENO", dir.path().join("no-such-deno"))
        .env("SKIFF_SECRETS_KEY", crate::helpers::SECRETS_KEY)
        .env("SKIFF_LISTEN", "127.0.0.1:0")
        .env("SKIFF_DATA_DIR", dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Deno"), "no clear message: {err}");
}

/// Calls racing deletes: each call gets the function or a 404, never a 503, and
/// nothing of the deleted functions stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_racing_deletes_get_200_or_404_and_leave_nothing() {
    let s = crate::helpers::stack(TestBackend::Sqlite).await;
    let t = s.token("alice").await;
    let names: Vec<String> = (1..=8).map(|i| format!("gone{i}")).collect();
    for n in &names {
        s.deploy(&t, n, &replies("here")).await;
    }
    for n in &names {
        s.until("alice", n, |st, _| st == 200).await;
    }
    let ids: Vec<i64> = names.iter().map(|n| s.function_id("alice", n)).collect();
    for n in &names {
        let call = tokio::spawn({
            let (c, u) = (s.client.clone(), s.url("alice", n, "/"));
            async move { c.get(u).send().await.unwrap().status().as_u16() }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.delete(&t, n).await;
        let st = call.await.unwrap();
        assert!(st == 200 || st == 404, "{n}: {st}");
    }
    for n in &names {
        s.until("alice", n, |st, _| st == 404).await;
    }
    let mut clean = false;
    for _ in 0..100 {
        let left = ids
            .iter()
            .filter(|id| {
                s.data_dir.join(format!("functions/{id}")).exists() || s.log_file(**id).exists()
            })
            .count();
        if left == 0 && s.running_instances() == 0 {
            clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(clean, "deleted functions left files or instances behind");
}
