//! Observability against known traffic through the real stack: the metrics
//! listener's counters, `Server-Timing`, the access log in the owner's log,
//! and the per-minute stats two routers write to one database.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use skiff_core::logs::is_neutralised;
use skiff_core::names::FunctionName;
use skiff_router::RouterHandle;
use skiff_testkit::TestBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Opts, Stack, stack_with};

skiff_testkit::on_both_backends!(multi_thread;
    known_traffic_is_counted_on_the_metrics_listener_only,
    server_timing_can_be_switched_off,
    the_owners_log_has_one_access_line_per_request,
    two_routers_stats_add_up_in_the_database,
);

/// Answers 500 on `/fail`, its own text on `/metrics`, 200 otherwise.
const FUNCTION: &str = r#"export default (req: Request) => {
  const path = new URL(req.url).pathname;
  if (path === "/fail") return new Response("failed on purpose", { status: 500 });
  if (path === "/metrics") return new Response("the function's own /metrics");
  return new Response("ok " + path);
};
"#;

/// Waits until `router` knows `user/name` (without calling it, so the
/// traffic stays exactly what a test sends).
async fn known_to(router: &RouterHandle, user: &str, name: &str) {
    let start = Instant::now();
    while router.state.directory.lookup(user, name).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the router never learned of {user}/{name}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scrape(client: &reqwest::Client, addr: SocketAddr) -> String {
    let r = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn server_timing(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("server-timing")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Waits until the process runtime has no instance running.
async fn until_idle(s: &Stack) {
    let start = Instant::now();
    while s.running_instances() > 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "never went idle");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn short_idle() -> Opts {
    Opts {
        idle_timeout: Duration::from_secs(2),
        ..Opts::default()
    }
}

async fn known_traffic_is_counted_on_the_metrics_listener_only(b: TestBackend) {
    let s = stack_with(b, short_idle()).await;
    let t = s.token("alice").await;
    s.deploy(&t, "f", FUNCTION).await;
    known_to(&s.handle, "alice", "f").await;
    let metrics = s.metrics_addr.expect("a metrics listener");

    // K = 2 cold starts: the first call, and the first after the instance
    // went idle. N = 10 calls, M = 3 of them errors.
    let first = s.get("alice", "f", "/a?token=secret").await;
    assert_eq!(first.status(), 200);
    let timing = server_timing(&first);
    assert_eq!(timing.len(), 1, "{timing:?}");
    assert!(
        timing[0].starts_with("cold;dur=") && timing[0].contains(", fn;dur="),
        "{timing:?}"
    );
    let warm = s.get("alice", "f", "/b").await;
    assert_eq!(warm.status(), 200);
    let timing = server_timing(&warm);
    assert!(
        timing.len() == 1 && timing[0].starts_with("fn;dur="),
        "a warm call has only the function's time: {timing:?}"
    );
    for _ in 0..3 {
        assert_eq!(s.get("alice", "f", "/fail").await.status(), 500);
    }
    for _ in 0..2 {
        assert_eq!(s.get("alice", "f", "/c").await.status(), 200);
    }
    until_idle(&s).await;
    let again = s.get("alice", "f", "/d").await;
    assert_eq!(again.status(), 200);
    assert!(server_timing(&again)[0].starts_with("cold;dur="));
    for _ in 0..2 {
        assert_eq!(s.get("alice", "f", "/e").await.status(), 200);
    }
    // Not a function: counted apart.
    assert_eq!(s.get("alice", "nope", "/").await.status(), 404);

    let text = scrape(&s.client, metrics).await;
    let f = r#"user="alice",function="f""#;
    assert_eq!(
        must(
            &text,
            &format!(r#"skiff_requests_total{{{f},status="200"}}"#)
        ),
        7.0
    );
    assert_eq!(
        must(
            &text,
            &format!(r#"skiff_requests_total{{{f},status="500"}}"#)
        ),
        3.0
    );
    assert_eq!(
        must(
            &text,
            &format!("skiff_request_duration_seconds_count{{{f}}}")
        ),
        10.0
    );
    assert_eq!(must(&text, &format!("skiff_cold_starts_total{{{f}}}")), 2.0);
    assert_eq!(must(&text, "skiff_cold_start_duration_seconds_count"), 2.0);
    assert_eq!(
        must(&text, &format!("skiff_in_flight_requests{{{f}}}")),
        0.0
    );
    assert_eq!(
        must(
            &text,
            &format!("skiff_instance_start_failures_total{{{f}}}")
        ),
        0.0
    );
    assert_eq!(must(&text, r#"skiff_instances{state="ready"}"#), 1.0);
    assert_eq!(must(&text, "skiff_unmatched_requests_total"), 1.0);
    assert!(must(&text, &format!("skiff_response_bytes_total{{{f}}}")) > 0.0);
    assert!(!text.contains("nope"), "{text}");

    // The public port has no metrics: /metrics there is no function (404),
    // and a function's own /metrics path is the function's.
    let r = s
        .client
        .get(format!("{}/metrics", s.router))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.text().await.unwrap().contains("skiff_requests_total"));
    let r = s.get("alice", "f", "/metrics").await;
    assert_eq!(r.text().await.unwrap(), "the function's own /metrics");
    // And the metrics listener serves nothing else, functions included.
    let r = s
        .client
        .get(format!("http://{metrics}/fn/alice/f/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

async fn server_timing_can_be_switched_off(b: TestBackend) {
    let s = stack_with(
        b,
        Opts {
            tune_router: |r| r.server_timing = false,
            ..Opts::default()
        },
    )
    .await;
    let t = s.token("alice").await;
    s.deploy(&t, "f", FUNCTION).await;
    known_to(&s.handle, "alice", "f").await;
    for path in ["/cold", "/warm"] {
        let r = s.get("alice", "f", path).await;
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("server-timing").is_none(),
            "{path}: {:?}",
            server_timing(&r)
        );
    }
    // Still counted.
    let text = scrape(&s.client, s.metrics_addr.unwrap()).await;
    assert_eq!(
        must(
            &text,
            r#"skiff_cold_starts_total{user="alice",function="f"}"#
        ),
        1.0
    );
}

/// Sends `head` (a request line and headers) as raw bytes; returns the
/// status line.
async fn raw(addr: SocketAddr, head: &[u8]) -> String {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(head).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The owner's log once it has `n` access lines (the writer is a queue).
async fn access_lines(s: &Stack, token: &str, name: &str, n: usize) -> (String, Vec<String>) {
    let start = Instant::now();
    loop {
        let r = s.manager.logs(token, name, "?tail=10000").await;
        assert_eq!(r.status(), 200);
        let log = r.text().await.unwrap();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains(" access | "))
            .map(str::to_owned)
            .collect();
        if lines.len() >= n {
            return (log, lines);
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} access lines, not {n}:\n{log}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn the_owners_log_has_one_access_line_per_request(b: TestBackend) {
    let s = stack_with(b, Opts::default()).await;
    let t = s.token("alice").await;
    s.deploy(&t, "f", FUNCTION).await;
    known_to(&s.handle, "alice", "f").await;
    assert_eq!(
        s.get("alice", "f", "/hello?token=s3cret&x=1")
            .await
            .status(),
        200
    );
    assert_eq!(
        s.get("alice", "f", "/fail?token=s3cret").await.status(),
        500
    );
    let r = s
        .client
        .post(s.url("alice", "f", "/form"))
        .body("b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A path trying to forge a line and drive a terminal, percent-encoded
    // (what a valid request line can carry)...
    let forged = "/x%0D%0A2026-01-01T00:00:00.000Z%20access%20|%20GET%20/forged%1B[2J";
    let status = raw(
        s.router_addr,
        format!("GET /fn/alice/f{forged} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(status.contains(" 200 "), "{status}");
    // ... raw UTF-8 (a right-to-left override) passes and is neutralised in
    // the log...
    let status = raw(
        s.router_addr,
        "GET /fn/alice/f/rlo\u{202e}fdp.exe HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
            .as_bytes(),
    )
    .await;
    assert!(status.contains(" 200 "), "{status}");
    // ... and raw controls are refused before they reach the function.
    for hostile in [
        &b"GET /fn/alice/f/a\x1b[2Jb HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"[..],
        b"GET /fn/alice/f/a\rb HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    ] {
        let status = raw(s.router_addr, hostile).await;
        assert!(
            status.is_empty() || status.contains(" 400 "),
            "{status:?} for {:?}",
            String::from_utf8_lossy(hostile)
        );
    }

    let (log, lines) = access_lines(&s, &t, "f", 5).await;
    assert_eq!(lines.len(), 5, "{log}");
    assert!(
        !log.contains("s3cret"),
        "a query string reached the log:\n{log}"
    );
    let text = |l: &str| l.split_once(" access | ").unwrap().1.to_owned();
    let first = text(&lines[0]);
    assert!(
        first.starts_with("GET /hello 200 ") && first.ends_with("ms cold"),
        "{first}"
    );
    let fail = text(&lines[1]);
    assert!(
        fail.starts_with("GET /fail 500 ") && fail.ends_with("ms warm"),
        "{fail}"
    );
    assert!(text(&lines[2]).starts_with("POST /form 200 "), "{lines:?}");
    // The forged path is one line, shown as sent (still percent-encoded).
    assert_eq!(
        lines.iter().filter(|l| l.contains("forged")).count(),
        1,
        "{log}"
    );
    assert!(
        text(&lines[3]).starts_with(&format!("GET {forged} 200 ")),
        "{lines:?}"
    );
    assert!(
        text(&lines[4]).starts_with("GET /rlo\\u{202e}fdp.exe 200 "),
        "{lines:?}"
    );
    for line in log.lines() {
        let (time, _) = line.split_once(' ').unwrap();
        chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(
            !line.chars().any(|c| c != '\t' && is_neutralised(c)),
            "{line:?}"
        );
    }
}

async fn two_routers_stats_add_up_in_the_database(b: TestBackend) {
    let s = stack_with(
        b,
        Opts {
            tune_router: |r| r.stats_flush = Duration::from_millis(200),
            ..Opts::default()
        },
    )
    .await;
    let other = s
        .another_router(|r| r.stats_flush = Duration::from_millis(200))
        .await;
    let t = s.token("alice").await;
    s.deploy(&t, "f", FUNCTION).await;
    known_to(&s.handle, "alice", "f").await;
    known_to(&other.handle, "alice", "f").await;

    // Router A: 5 calls, 1 error. Router B: 4 calls, 2 errors. One cold
    // start on each.
    for path in ["/a", "/b", "/fail", "/c", "/d"] {
        s.get("alice", "f", path).await;
    }
    for path in ["/a", "/fail", "/fail", "/b"] {
        let r = s
            .client
            .get(format!("{}/fn/alice/f{path}", other.url))
            .send()
            .await
            .unwrap();
        assert!(r.status() == 200 || r.status() == 500);
    }

    let store = s.db.store().await;
    let owner = store.find_user("alice").await.unwrap().unwrap();
    let name = FunctionName::parse("f").unwrap();
    let start = Instant::now();
    let stats = loop {
        let st = store
            .function_stats(owner.id, &name, Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap();
        if st.invocations >= 9 || start.elapsed() > Duration::from_secs(20) {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (stats.invocations, stats.errors, stats.cold_starts),
        (9, 3, 2),
        "{stats:?}"
    );
    let (p50, p95, p99) = (
        stats.p50_ms.unwrap(),
        stats.p95_ms.unwrap(),
        stats.p99_ms.unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p95 && p95 <= p99, "{stats:?}");
    assert_eq!(stats.series.len(), 60);
    let in_series: u64 = stats.series.iter().map(|p| p.invocations).sum();
    let errors_in_series: u64 = stats.series.iter().map(|p| p.errors).sum();
    assert_eq!((in_series, errors_in_series), (9, 3));

    // The owner reads the same through the API; nobody else reads anything.
    let r = s.manager.get(&t, "/func/f/stats?window=1h").await;
    assert_eq!(r.status(), 200);
    let api: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (&api["invocations"], &api["errors"], &api["cold_starts"]),
        (
            &serde_json::json!(9),
            &serde_json::json!(3),
            &serde_json::json!(2)
        ),
        "{api}"
    );
    assert_eq!(api["series"].as_array().map(Vec::len), Some(60), "{api}");
    assert!(api["p99_ms"].as_f64().is_some_and(|p| p >= p50), "{api}");
    let r = s.manager.get(&t, "/func/f/stats?window=15m").await;
    let short: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        short["series"].as_array().map(Vec::len),
        Some(15),
        "{short}"
    );
    assert_eq!(short["invocations"], 9, "{short}");
    let bob = s.token("bob").await;
    assert_eq!(s.manager.get(&bob, "/func/f/stats").await.status(), 404);
    for bad in ["8d", "0m", "1w", "%E2%80%AEh"] {
        let r = s
            .manager
            .get(&t, &format!("/func/f/stats?window={bad}"))
            .await;
        assert_eq!(r.status(), 400, "{bad}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_window", "{bad}: {e}");
    }
}
