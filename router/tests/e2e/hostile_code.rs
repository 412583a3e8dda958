//! The hostile-function corpus (`router/tests/hostile/*.ts`): each file attacks
//! the sandbox or the platform in one way; each must be refused or contained,
//! its caller must get the documented status, and a neighbour function must keep
//! answering throughout. Run on SQLite only: the database plays no part here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use skiff_testkit::TestBackend;

use crate::helpers::{Opts, Stack, replies, stack_with};

fn corpus(name: &str) -> String {
    let path = format!("{}/tests/hostile/{name}.ts", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every value of the JSON object (or of its "attempts" member) must say refused.
fn assert_all_refused(case: &str, v: &Value) {
    let obj = v.get("attempts").unwrap_or(v).as_object().unwrap();
    assert!(!obj.is_empty(), "{case}: no attempts reported");
    let escaped: Vec<_> = obj
        .iter()
        .filter(|(_, r)| !r.as_str().unwrap_or("").starts_with("refused"))
        .collect();
    assert!(
        escaped.is_empty(),
        "{case} escaped the sandbox: {escaped:#?}"
    );
}

async fn json_of(s: &Stack, name: &str, rest: &str) -> Value {
    let r = s.get("alice", name, rest).await;
    assert_eq!(r.status(), 200, "{name}{rest}");
    r.json().await.unwrap()
}

async fn status_of(s: &Stack, name: &str, rest: &str) -> (u16, String) {
    let r = s.get("alice", name, rest).await;
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (st, v["error"]["code"].as_str().unwrap_or("").to_owned())
}

/// Calls `/` until it answers 200 "alive": the function recovered.
async fn recovers(s: &Stack, name: &str) {
    let start = Instant::now();
    loop {
        let r = s.get("alice", name, "/").await;
        if r.status() == 200 && r.text().await.unwrap_or_default() == "alive" {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{name} did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Hosts in /etc/hosts that resolve to loopback (DNS names pointing home).
fn loopback_names() -> Vec<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut names: Vec<String> = hosts
        .lines()
        .filter(|l| l.starts_with("127.") || l.starts_with("::1"))
        .flat_map(|l| {
            l.split_whitespace()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    names.push("localhost.".into());
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_functions_are_refused_or_contained() {
    let s = Arc::new(
        stack_with(
            TestBackend::Sqlite,
            Opts {
                // Long enough for the heap bomb to reach V8's cap (502) on a
                // loaded 2-core machine, not a 504 first.
                request_timeout: Duration::from_secs(6),
                ..Opts::default()
            },
        )
        .await,
    );
    let bob = s.token("bob").await;
    s.deploy(&bob, "secret", &replies("bob's secret")).await;
    let alice = s.token("alice").await;
    s.deploy(&alice, "neighbour", &replies("fine")).await;
    for case in [
        "escape-files",
        "escape-process",
        "escape-net",
        "escape-imports",
        "cpu-spin",
        "heap-bomb",
        "floods",
        "big-responses",
        "bad-responses",
    ] {
        s.deploy(&alice, case, &corpus(case)).await;
    }
    s.until("bob", "secret", |st, _| st == 200).await;
    s.until("alice", "neighbour", |st, _| st == 200).await;

    // the neighbour is called every 20 ms throughout
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let (s, stop) = (s.clone(), stop.clone());
        async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = s.get("alice", "neighbour", "/").await;
                assert_eq!(r.status(), 200, "the neighbour failed during an attack");
                assert_eq!(r.text().await.unwrap(), "fine");
                lat.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lat
        }
    });

    // files: host files, another tenant's code, the database, a secret file
    let secret_file = s.data_dir.join("jwt-secret");
    std::fs::write(&secret_file, "not-for-functions").unwrap();
    let db_file = s.db.url.trim_start_matches("sqlite://").to_owned();
    let bob_id = s.function_id("bob", "secret");
    let paths = serde_json::json!([
        s.code_dir(bob_id, 1).join("fn.js"),
        db_file,
        secret_file,
        s.log_file(bob_id),
    ]);
    let q = format!("/?paths={}", urlencode(&paths.to_string()));
    let v = json_of(&s, "escape-files", &q).await;
    assert_all_refused("escape-files", &v);
    assert_eq!(
        v["own"], "mine",
        "a function must be able to use its own temp dir"
    );

    assert_all_refused("escape-process", &json_of(&s, "escape-process", "/").await);

    let mut targets = Vec::new();
    let mut ports = vec![s.manager_port, s.router_addr.port()];
    if let Ok(url) = std::env::var(skiff_testkit::MYSQL_ENV)
        && let Some(p) = url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
    {
        ports.push(p);
    }
    let mut hosts: Vec<String> = [
        "127.0.0.1",
        "0.0.0.0",
        "[::1]",
        "[::]",
        "[::ffff:127.0.0.1]",
        "127.1",
        "2130706433",
        "0x7f000001",
    ]
    .iter()
    .map(|h| (*h).to_owned())
    .collect();
    hosts.extend(loopback_names());
    for port in &ports {
        for h in &hosts {
            targets.push(format!("{h}:{port}"));
        }
    }
    let own = skiff_router::process::host_addrs::host_addresses();
    assert!(!own.is_empty());
    let q = format!(
        "/?targets={}&own={}",
        urlencode(&serde_json::to_string(&targets).unwrap()),
        urlencode(&serde_json::to_string(&own).unwrap())
    );
    let v = json_of(&s, "escape-net", &q).await;
    assert_all_refused("escape-net", &v);
    assert_eq!(
        v.as_object().unwrap().len(),
        targets.len() * 2 + 7 + own.len()
    );

    assert_all_refused("escape-imports", &json_of(&s, "escape-imports", "/").await);

    // an endless loop: 504, and the stuck instance is replaced
    assert_eq!(
        status_of(&s, "cpu-spin", "/spin").await,
        (504, "function_timeout".into())
    );
    recovers(&s, "cpu-spin").await;

    assert_eq!(
        status_of(&s, "heap-bomb", "/bomb").await,
        (502, "bad_gateway".into())
    );
    recovers(&s, "heap-bomb").await;

    for flood in ["/timers", "/promises", "/workers"] {
        let (st, _) = status_of(&s, "floods", flood).await;
        assert!([200, 500, 502, 503, 504].contains(&st), "{flood}: {st}");
        recovers(&s, "floods").await;
    }

    // 1 GiB streams through
    let r = s.get("alice", "big-responses", "/gb").await;
    assert_eq!(r.status(), 200);
    let mut n = 0usize;
    let mut body = r.bytes_stream();
    while let Some(c) = body.next().await {
        n += c.unwrap().len();
    }
    assert_eq!(n, 1024 * 1024 * 1024);
    // an endless one: the caller hangs up after 8 MiB and the instance is released
    let r = s.get("alice", "big-responses", "/endless").await;
    let mut n = 0usize;
    let mut body = r.bytes_stream();
    while let Some(c) = body.next().await {
        n += c.unwrap().len();
        if n > 8 * 1024 * 1024 {
            break;
        }
    }
    drop(body);
    let released = async {
        for _ in 0..100 {
            let busy = s
                .handle
                .process_runtime()
                .unwrap()
                .running()
                .iter()
                .any(|i| i.function.name == "big-responses" && i.in_flight() > 0);
            if !busy {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(
        released.await,
        "the endless response kept its instance busy after the caller left"
    );
    recovers(&s, "big-responses").await;

    for bad in [
        "/status999",
        "/status101",
        "/badheader",
        "/badvalue",
        "/number",
    ] {
        assert_eq!(
            status_of(&s, "bad-responses", bad).await,
            (500, "function_error".into()),
            "{bad}"
        );
    }
    recovers(&s, "bad-responses").await;

    stop.store(true, Ordering::Relaxed);
    let mut lat = watcher.await.unwrap();
    lat.sort();
    let p50 = lat[lat.len() / 2];
    let max = lat[lat.len() - 1];
    eprintln!(
        "neighbour during the attacks: {} calls, p50 {p50:?}, max {max:?}",
        lat.len()
    );
    // A sanity bound, far above normal (ms) and far below the attacks' timeouts.
    assert!(
        max < Duration::from_secs(2),
        "the neighbour stalled for {max:?}"
    );
    // bob's function never noticed
    assert_eq!(
        s.get("bob", "secret", "/").await.text().await.unwrap(),
        "bob's secret"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
