use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use skiff_testkit::{Launch, TestBackend};

use crate::helpers::{Opts, stack, stack_with};

skiff_testkit::on_both_backends!(multi_thread;
    methods_paths_queries_headers_and_binary_bodies,
    fifty_megabytes_stream_both_ways,
    redirects_pass_through_and_no_compression_is_added,
    oversized_bodies_and_concurrency_limits,
    unknown_and_malformed_paths_are_404,
);

const ECHO: &str = r#"export default async (req: Request) => {
  const u = new URL(req.url);
  if (u.pathname === "/raw") return new Response(await req.arrayBuffer());
  const headers: Record<string, string> = {};
  req.headers.forEach((v, k) => { headers[k] = v; });
  const body = req.method === "GET" || req.method === "HEAD" ? "" : await req.text();
  return new Response(JSON.stringify({ method: req.method, path: u.pathname, query: u.search, headers, body }), {
    headers: { "content-type": "application/json", "x-reply": "yes" },
  });
};
"#;

async fn methods_paths_queries_headers_and_binary_bodies(b: TestBackend) {
    let s = stack(b).await;
    let t = s.token("alice").await;
    s.deploy(&t, "echo", ECHO).await;
    s.until("alice", "echo", |st, _| st == 200).await;
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let r = s
            .client
            .request(
                method.parse().unwrap(),
                s.url("alice", "echo", "/a/b%20c?x=1&y=%C3%A9"),
            )
            .header("x-custom", "kept")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "must-go")
            .body(if method == "GET" {
                String::new()
            } else {
                format!("body of {method}")
            })
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        assert_eq!(r.headers()["x-reply"], "yes");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["method"], method);
        assert_eq!(v["path"], "/a/b%20c");
        assert_eq!(v["query"], "?x=1&y=%C3%A9");
        assert_eq!(v["headers"]["x-custom"], "kept");
        assert!(
            v["headers"].get("x-hop").is_none(),
            "hop-by-hop header leaked: {v}"
        );
        assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.1");
        assert_eq!(v["headers"]["x-forwarded-proto"], "http");
        assert_eq!(v["headers"]["x-forwarded-host"], s.router_addr.to_string());
        if method != "GET" {
            assert_eq!(v["body"], format!("body of {method}"));
        }
    }
    let head = s
        .client
        .head(s.url("alice", "echo", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    // every byte value survives the round trip
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let r = s
        .client
        .post(s.url("alice", "echo", "/raw"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
}

const BIG: &str = r#"export default async (req: Request) => {
  const u = new URL(req.url);
  if (u.pathname === "/count") {
    let n = 0;
    for await (const chunk of req.body!) n += chunk.length;
    return new Response(String(n));
  }
  const total = Number(u.searchParams.get("bytes"));
  const chunk = new Uint8Array(64 * 1024).fill(120);
  let sent = 0;
  return new Response(new ReadableStream({
    pull(c) {
      if (sent >= total) { c.close(); return; }
      const n = Math.min(chunk.length, total - sent);
      c.enqueue(n === chunk.length ? chunk : chunk.slice(0, n));
      sent += n;
    },
  }));
};
"#;

fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// 50 MB each way through a separate `skiff-router` process, whose peak memory
/// must stay far below the body size: the bodies are streamed, not buffered.
async fn fifty_megabytes_stream_both_ways(b: TestBackend) {
    const SIZE: usize = 50 * 1024 * 1024;
    let s = stack(b).await;
    let t = s.token("alice").await;
    s.deploy(&t, "big", BIG).await;
    s.until("alice", "big", |st, _| st == 200).await;
    let router = Launch::router(
        env!("CARGO_BIN_EXE_skiff-router"),
        &s.db.url,
        &s.data_dir.join("second-router"),
    )
    .env("RUST_LOG", "warn")
    .start()
    .await;
    let pid = router.pid();
    let base = format!("{}/fn/alice/big", router.url());
    // It learns of the function from the database at start.
    let mut up = false;
    for _ in 0..200 {
        if let Ok(r) = s.client.get(format!("{base}/?bytes=1")).send().await
            && r.status() == 200
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the router process did not serve the function");
    let before = rss_kb(pid, "VmRSS:");

    // upload, chunked (no Content-Length), generated on the fly
    let chunks = futures_util::stream::iter(
        (0..SIZE / 65536).map(|_| Ok::<_, std::io::Error>(vec![7u8; 65536])),
    );
    let r = s
        .client
        .post(format!("{base}/count"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), SIZE.to_string());

    // download, counted as it arrives
    let r = s
        .client
        .get(format!("{base}/?bytes={SIZE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut n = 0usize;
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        n += chunk.unwrap().len();
    }
    assert_eq!(n, SIZE);
    let peak = rss_kb(pid, "VmHWM:");
    eprintln!("router RSS before {before} kB, peak {peak} kB for 2 x {SIZE} bytes");
    // Streaming means the transfers add little to what the idle router holds.
    assert!(
        peak.saturating_sub(before) < 8 * 1024 && peak < (SIZE as u64 / 1024) / 2,
        "router RSS grew from {before} kB to {peak} kB: bodies were buffered"
    );
    // SIGTERM, so it stops its instances before exiting
    router.stop().await;
}

async fn redirects_pass_through_and_no_compression_is_added(b: TestBackend) {
    let s = stack(b).await;
    let t = s.token("alice").await;
    let src = r#"export default (req: Request) => {
  if (new URL(req.url).pathname === "/go") return new Response(null, { status: 302, headers: { location: "/elsewhere" } });
  return new Response("a".repeat(10000), { headers: { "x-accept-encoding-seen": req.headers.get("accept-encoding") ?? "none" } });
};
"#;
    s.deploy(&t, "redir", src).await;
    s.until("alice", "redir", |st, _| st == 200).await;
    let r = s.get("alice", "redir", "/go").await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/elsewhere");
    let r = s
        .client
        .get(s.url("alice", "redir", "/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().get("content-encoding").is_none(),
        "the router compressed"
    );
    assert_eq!(r.headers()["x-accept-encoding-seen"], "gzip");
    assert_eq!(r.bytes().await.unwrap().len(), 10000);
}

async fn oversized_bodies_and_concurrency_limits(b: TestBackend) {
    let s = stack_with(
        b,
        Opts {
            max_body_bytes: 1000,
            concurrency: 1,
            queue_wait: Duration::from_millis(200),
            ..Opts::default()
        },
    )
    .await;
    let t = s.token("alice").await;
    let src = "export default async (req: Request) => {\n  if (new URL(req.url).pathname === '/slow') await new Promise((r) => setTimeout(r, 1500));\n  return new Response(String((await req.arrayBuffer()).byteLength));\n};\n";
    s.deploy(&t, "lim", src).await;
    s.until("alice", "lim", |st, _| st == 200).await;
    let r = s
        .client
        .post(s.url("alice", "lim", "/"))
        .body(vec![1u8; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // without a Content-Length the limit still holds
    let chunks =
        futures_util::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(vec![1u8; 400])));
    let r = s
        .client
        .post(s.url("alice", "lim", "/"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let ok = s
        .client
        .post(s.url("alice", "lim", "/"))
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.text().await.unwrap(), "1000");
    // one slot: a second request while the first runs waits 200 ms, then 429
    let slow = tokio::spawn({
        let (c, u) = (s.client.clone(), s.url("alice", "lim", "/slow"));
        async move { c.get(u).send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = s.get("alice", "lim", "/").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(slow.await.unwrap(), 200);
}

async fn unknown_and_malformed_paths_are_404(b: TestBackend) {
    let s = stack(b).await;
    let t = s.token("alice").await;
    s.deploy(&t, "real", &crate::helpers::replies("real")).await;
    s.until("alice", "real", |st, _| st == 200).await;
    for path in [
        "/fn/nobody/real",
        "/fn/alice/nothing",
        "/fn/alice",
        "/fn/ALICE/real",
        "/fn/alice/real%2F..",
        "/fn/..%2Falice/real",
        "/elsewhere",
    ] {
        let r = s
            .client
            .get(format!("{}{path}", s.router))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_found");
    }
    let r = s
        .client
        .get(format!("{}/healthz", s.router))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
