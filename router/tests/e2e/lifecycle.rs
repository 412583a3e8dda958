use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use skiff_testkit::TestBackend;

use crate::helpers::{Opts, replies, stack, stack_with};

skiff_testkit::on_both_backends!(multi_thread;
    deploy_call_update_delete,
    three_handler_shapes,
    tenants_with_the_same_name_are_isolated,
    idle_instances_stop_and_start_again,
    logs_show_function_output,
    redeploy_under_200_concurrent_requests_fails_none,
);

async fn deploy_call_update_delete(b: TestBackend) {
    let s = stack(b).await;
    let t = s.token("alice").await;
    // unknown before the deploy
    assert_eq!(s.get("alice", "hello", "/").await.status(), 404);
    s.deploy_live(&t, "alice", "hello", &replies("version one"), "version one")
        .await;
    s.deploy_live(&t, "alice", "hello", &replies("version two"), "version two")
        .await;
    // every later call sees the new version
    for _ in 0..5 {
        let body = s.get("alice", "hello", "/").await.text().await.unwrap();
        assert_eq!(body, "version two");
    }
    let id = s.function_id("alice", "hello");
    s.delete(&t, "hello").await;
    let (status, body) = s.until("alice", "hello", |st, _| st == 404).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    // its instance stops and its files go
    let gone = s.data_dir.join(format!("functions/{id}"));
    for _ in 0..100 {
        if s.running_instances() == 0 && !gone.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.running_instances(), 0);
    assert!(!gone.exists(), "code of a deleted function is left on disk");
}

async fn three_handler_shapes(b: TestBackend) {
    let s = stack(b).await;
    let t = s.token("alice").await;
    let object = "export default { fetch(req: Request) { return new Response('object ' + req.method); } };\n";
    let func = "export default async (req: Request) => new Response('function ' + new URL(req.url).pathname);\n";
    let svrless = "export default async function handler({ req }: { req: Deno.RequestEvent; conn?: Deno.Conn }) {\n  await req.respondWith(new Response('svrless ' + req.request.method));\n}\n";
    s.deploy_live(&t, "alice", "obj", object, "object GET")
        .await;
    s.deploy_live(&t, "alice", "fun", func, "function /").await;
    s.deploy_live(&t, "alice", "old", svrless, "svrless GET")
        .await;
    let r = s
        .client
        .post(s.url("alice", "old", "/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "svrless POST");
}

async fn tenants_with_the_same_name_are_isolated(b: TestBackend) {
    let s = stack(b).await;
    let a = s.token("alice").await;
    let bob = s.token("bob").await;
    s.deploy_live(&a, "alice", "same", &replies("alice's"), "alice's")
        .await;
    s.deploy_live(&bob, "bob", "same", &replies("bob's"), "bob's")
        .await;
    for _ in 0..3 {
        assert_eq!(
            s.get("alice", "same", "/").await.text().await.unwrap(),
            "alice's"
        );
        assert_eq!(
            s.get("bob", "same", "/").await.text().await.unwrap(),
            "bob's"
        );
    }
    // bob deleting his does not touch alice's
    s.delete(&bob, "same").await;
    s.until("bob", "same", |st, _| st == 404).await;
    assert_eq!(
        s.get("alice", "same", "/").await.text().await.unwrap(),
        "alice's"
    );
}

async fn idle_instances_stop_and_start_again(b: TestBackend) {
    let s = stack_with(
        b,
        Opts {
            idle_timeout: Duration::from_millis(800),
            ..Opts::default()
        },
    )
    .await;
    let t = s.token("alice").await;
    s.deploy_live(&t, "alice", "nap", &replies("awake"), "awake")
        .await;
    assert_eq!(s.running_instances(), 1);
    let mut stopped = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.running_instances() == 0 {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "the idle instance was not stopped");
    // the next request starts one again
    let r = s.get("alice", "nap", "/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "awake");
    assert_eq!(s.running_instances(), 1);
    // a new version, started after the old one went idle, leaves no old code behind
    for _ in 0..60 {
        if s.running_instances() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.deploy_live(&t, "alice", "nap", &replies("refreshed"), "refreshed")
        .await;
    let id = s.function_id("alice", "nap");
    let versions: Vec<String> = std::fs::read_dir(s.data_dir.join(format!("functions/{id}")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(versions, ["v2"]);
}

async fn logs_show_function_output(b: TestBackend) {
    let s = stack(b).await;
    let t = s.token("alice").await;
    let src = "export default (req: Request) => {\n  const p = new URL(req.url).pathname;\n  console.log('seen ' + p);\n  console.error('warned ' + p);\n  return new Response('logged');\n};\n";
    s.deploy_live(&t, "alice", "talk", src, "logged").await;
    s.get("alice", "talk", "/first").await;
    s.get("alice", "talk", "/second").await;
    let mut text = String::new();
    for _ in 0..50 {
        text = s.manager.logs(&t, "talk", "").await.text().await.unwrap();
        if text.contains("warned /second") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(text.contains("stdout | seen /first"), "{text}");
    assert!(text.contains("stderr | warned /second"), "{text}");
    let first = text.lines().find(|l| l.contains("seen /first")).unwrap();
    chrono::DateTime::parse_from_rfc3339(first.split(' ').next().unwrap()).expect("timestamp");
    let tail = s
        .manager
        .logs(&t, "talk", "?tail=1")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(tail.lines().count(), 1);
    // another user cannot read them
    let bob = s.token("bob").await;
    let r = s.manager.logs(&bob, "talk", "").await;
    assert_eq!(r.status(), 404);
}

async fn redeploy_under_200_concurrent_requests_fails_none(b: TestBackend) {
    // 200 callers from one address stand for 200 clients: no per-client share.
    let opts = Opts {
        tune_router: |r| {
            r.client_share_percent = 100;
            // The load is what this test measures, not the per-user rate.
            r.quotas.rps = 1_000_000;
        },
        ..Opts::default()
    };
    let s = Arc::new(stack_with(b, opts).await);
    let t = s.token("alice").await;
    s.deploy_live(&t, "alice", "busy", &replies("old"), "old")
        .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let saw_new = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..200 {
        let (s, stop, done, saw_new) = (s.clone(), stop.clone(), done.clone(), saw_new.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match s.client.get(s.url("alice", "busy", "/")).send().await {
                    Ok(r) if r.status() == 200 => {
                        let body = r.text().await.unwrap_or_default();
                        if body == "new" {
                            saw_new.fetch_add(1, Ordering::Relaxed);
                        } else if body != "old" {
                            failures.push(format!("body {body:?}"));
                        }
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("error {e}")),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.deploy(&t, "busy", &replies("new")).await;
    for _ in 0..100 {
        if saw_new.load(Ordering::Relaxed) > 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    let total = done.load(Ordering::Relaxed);
    assert!(total > 1000, "only {total} requests ran");
    assert!(
        saw_new.load(Ordering::Relaxed) > 0,
        "the new version never answered"
    );
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // the old instance was drained and stopped: one instance remains
    for _ in 0..100 {
        if s.running_instances() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.running_instances(), 1);
}
