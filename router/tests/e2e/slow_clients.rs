//! Clients that pin a function's in-flight capacity (`SKIFF_FUNCTION_CONCURRENCY`)
//! by never reading their response or never finishing their upload: the router
//! cuts them off (write and body-read timeouts) and one address can hold only
//! its share, so a neighbour from another address keeps being served.

use std::time::Duration;

use skiff_router::config::RouterConfig;
use skiff_testkit::TestBackend;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::{Opts, Stack, stack_with};
use crate::wire::{Answer, connect_from, exchange_from, read_head, read_to_close, request};

/// `/stream`: an endless response. `/upload`: reads the whole body first.
/// Anything else: `ok`.
const SLOW: &str = r#"export default async (req: Request) => {
  const path = new URL(req.url).pathname;
  if (path === "/stream") {
    const chunk = new Uint8Array(64 * 1024).fill(120);
    return new Response(new ReadableStream({ pull(c) { c.enqueue(chunk); } }));
  }
  if (path === "/upload") return new Response("read " + (await req.arrayBuffer()).byteLength);
  return new Response("ok");
};
"#;

const NEIGHBOUR: u8 = 2;

async fn slow_stack(concurrency: usize, tune_router: fn(&mut RouterConfig)) -> Stack {
    let s = stack_with(
        TestBackend::Sqlite,
        Opts {
            concurrency,
            queue_wait: Duration::from_millis(300),
            tune_router,
            ..Opts::default()
        },
    )
    .await;
    let t = s.token("alice").await;
    s.deploy(&t, "slow", SLOW).await;
    s.deploy(&t, "other", SLOW).await;
    s.until("alice", "slow", |st, _| st == 200).await;
    s.until("alice", "other", |st, _| st == 200).await;
    s
}

/// A client from `127.0.0.<octet>` that asks for the endless stream and stops
/// reading once the answer has started: it holds a slot from then on.
async fn stalled_reader(s: &Stack, octet: u8, extra: &[&str]) -> (TcpStream, Answer) {
    let mut c = connect_from(octet, s.router_addr).await;
    let mut raw = "GET /fn/alice/slow/stream HTTP/1.1\r\nHost: x\r\n".to_owned();
    for h in extra {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    c.write_all(raw.as_bytes()).await.unwrap();
    let head = read_head(&mut c, Duration::from_secs(20))
        .await
        .expect("an answer to the stalled reader");
    (c, head)
}

/// A neighbour's call from another address: the status it got.
async fn neighbour_call(s: &Stack, path: &str) -> u16 {
    exchange_from(NEIGHBOUR, s.router_addr, &request("GET", path, &[], b""))
        .await
        .status
}

/// Calls as the neighbour until a `200`; panics after 60 s.
async fn neighbour_is_served(s: &Stack) {
    let start = std::time::Instant::now();
    loop {
        let st = neighbour_call(s, "/fn/alice/slow/").await;
        if st == 200 {
            return;
        }
        assert!([429].contains(&st), "neighbour got {st}");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the neighbour was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn no_client_share(r: &mut RouterConfig) {
    r.client_share_percent = 100;
    r.response_write_timeout = Duration::from_secs(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_stop_reading_are_dropped_and_free_their_slots() {
    // Three slots, three non-reading clients from three addresses: only the
    // write timeout can free the function.
    let s = slow_stack(3, no_client_share).await;
    let mut stalled = Vec::new();
    for octet in [11, 12, 13] {
        let (c, head) = stalled_reader(&s, octet, &[]).await;
        assert_eq!(head.status, 200, "{}", head.text);
        stalled.push(c);
    }
    neighbour_is_served(&s).await;
    // Reading a client the router has not cut off yet would unstall it, so
    // first wait until the router holds no request of `slow` (every stalled
    // answer dropped, the neighbour's finished)…
    s.until_in_flight("alice", "slow", 0, Duration::from_secs(60))
        .await;
    // …then each stalled client finds its endless answer cut off: what the
    // socket buffers held, then the close.
    for c in &mut stalled {
        let rest = read_to_close(c, Duration::from_secs(60)).await;
        assert!(
            rest.closed,
            "a client that stopped reading is still connected ({} bytes read)",
            rest.text.len()
        );
    }
}

fn short_body_timeout(r: &mut RouterConfig) {
    r.client_share_percent = 100;
    r.body_read_timeout = Duration::from_secs(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_stop_sending_their_body_get_408_and_free_their_slots() {
    let s = slow_stack(3, short_body_timeout).await;
    let stalls: [(u8, &str); 3] = [
        (
            21,
            "POST /fn/alice/slow/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nthe first bytes",
        ),
        (
            22,
            "POST /fn/alice/slow/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n400\r\nhalf a chunk",
        ),
        (
            23,
            "POST /fn/alice/slow/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
        ),
    ];
    let mut waiting = Vec::new();
    for (octet, raw) in stalls {
        let addr = s.router_addr;
        waiting.push(tokio::spawn(async move {
            let mut c = connect_from(octet, addr).await;
            c.write_all(raw.as_bytes()).await.unwrap();
            // never sends the rest; keeps the connection open meanwhile
            read_to_close(&mut c, Duration::from_secs(60)).await
        }));
    }
    for w in waiting {
        let answer = w.await.unwrap();
        assert_eq!(answer.status, 408, "{}", answer.text);
        assert_eq!(answer.error_code(), "request_timeout");
        assert_eq!(answer.header("connection").as_deref(), Some("close"));
    }
    neighbour_is_served(&s).await;
    let a = exchange_from(
        NEIGHBOUR,
        s.router_addr,
        &request("POST", "/fn/alice/slow/upload", &[], b"a whole body"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(a.text.ends_with("read 12"), "{}", a.text);
}

/// Eight slots, at most four per client; timeouts long enough that only the
/// share protects the neighbour. 127.0.0.3 is a trusted proxy.
fn shares_only(r: &mut RouterConfig) {
    r.client_share_percent = 25;
    r.body_read_timeout = Duration::from_secs(120);
    r.response_write_timeout = Duration::from_secs(120);
    r.trusted_proxies = "127.0.0.3".parse().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_cannot_hold_a_function_from_its_neighbours() {
    let s = slow_stack(8, shares_only).await;
    let addr = s.router_addr;

    // One address tries to fill the function: six readers that stop reading
    // and six uploads that never finish, all at once.
    let mut attempts = Vec::new();
    for i in 0..12 {
        attempts.push(tokio::spawn(async move {
            let mut c = connect_from(1, addr).await;
            let raw = if i % 2 == 0 {
                "GET /fn/alice/slow/stream HTTP/1.1\r\nHost: x\r\n\r\n"
            } else {
                "POST /fn/alice/slow/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nsome"
            };
            c.write_all(raw.as_bytes()).await.unwrap();
            // an admitted upload never answers; everything else does
            let head = read_head(&mut c, Duration::from_secs(5)).await;
            (c, head)
        }));
    }
    let mut held = Vec::new();
    let mut refused = 0;
    for a in attempts {
        let (c, head) = a.await.unwrap();
        match head {
            Some(h) if h.status == 429 => {
                assert_eq!(h.header("retry-after").as_deref(), Some("1"), "{}", h.text);
                refused += 1;
                assert_eq!(h.error_code(), "rate_limited", "{}", h.text);
                drop(c);
            }
            Some(h) => {
                assert_eq!(h.status, 200, "{}", h.text);
                held.push(c);
            }
            None => held.push(c),
        }
    }
    assert_eq!(held.len(), 4, "one address holds exactly its share");
    assert_eq!(refused, 8);

    // The neighbour is served, again and again, while those four are held.
    for _ in 0..10 {
        assert_eq!(neighbour_call(&s, "/fn/alice/slow/").await, 200);
    }

    // Changing the claimed origin does not give an untrusted address more.
    let mut spoofers = Vec::new();
    for i in 0..5 {
        let xff = format!("X-Forwarded-For: 203.0.113.{i}");
        spoofers.push(stalled_reader(&s, 4, &[&xff]).await);
    }
    let statuses: Vec<u16> = spoofers.iter().map(|(_, h)| h.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 429], "spoofed origins");
    drop(spoofers);

    // Behind a trusted proxy each real client has its own share (on a second
    // function, so the first one's full slots do not interfere).
    let mut behind = Vec::new();
    for _ in 0..4 {
        let (c, h) = stalled_other(&s, "X-Forwarded-For: 198.51.100.1").await;
        assert_eq!(h.status, 200, "{}", h.text);
        behind.push(c);
    }
    let (_, h) = stalled_other(&s, "X-Forwarded-For: 198.51.100.1").await;
    assert_eq!(
        h.status, 429,
        "a fifth for the same real client: {}",
        h.text
    );
    let (_, h) = stalled_other(&s, "X-Forwarded-For: 198.51.100.2").await;
    assert_eq!(h.status, 200, "another real client: {}", h.text);
    drop(held);
}

/// Like `stalled_reader`, on the second function, through the trusted proxy.
async fn stalled_other(s: &Stack, xff: &str) -> (TcpStream, Answer) {
    let mut c = connect_from(3, s.router_addr).await;
    let raw = format!("GET /fn/alice/other/stream HTTP/1.1\r\nHost: x\r\n{xff}\r\n\r\n");
    c.write_all(raw.as_bytes()).await.unwrap();
    let head = read_head(&mut c, Duration::from_secs(20)).await.unwrap();
    (c, head)
}
