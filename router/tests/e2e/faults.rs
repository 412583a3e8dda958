use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use skiff_core::store::testing::TestBackend;

use crate::helpers::{Opts, replies, stack_with};

crate::on_both_backends!(failing_functions_get_their_status_and_spare_the_neighbour,);

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
    s.deploy(
        &t,
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
    let logs = s
        .client
        .get(format!("{}/func/broken/logs", s.api))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(logs.contains("fails at load"), "{logs}");
}
