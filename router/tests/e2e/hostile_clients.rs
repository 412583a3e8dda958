//! Hostile requests on the wire (raw bytes, so no client library tidies them up):
//! tricky paths never reach another tenant's function, conflicting framing and
//! oversized headers are refused, and slow clients are cut off without tying up
//! the router.

use std::time::{Duration, Instant};

use skiff_testkit::TestBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Opts, stack_with};
use crate::wire::{connect_from, exchange_from, read_head, read_to_close};

const WHO: &str = "export default (req: Request) => new Response('owner=OWNER path=' + new URL(req.url).pathname);\n";

/// Sends `raw`, reads until the server closes (or 10 s), returns the status and text.
async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(raw).await.unwrap();
    let a = crate::wire::read_to_close(&mut c, Duration::from_secs(10)).await;
    (a.status, a.text)
}

fn get(path: &[u8]) -> Vec<u8> {
    [
        b"GET ".as_slice(),
        path,
        b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_are_refused_and_never_cross_tenants() {
    let s = stack_with(
        TestBackend::Sqlite,
        Opts {
            request_timeout: Duration::from_secs(3),
            ..Opts::default()
        },
    )
    .await;
    let a = s.token("alice").await;
    let b = s.token("bob").await;
    s.deploy(&a, "f", &WHO.replace("OWNER", "alice")).await;
    s.deploy(&b, "secret", &WHO.replace("OWNER", "bob")).await;
    s.until("alice", "f", |st, _| st == 200).await;
    s.until("bob", "secret", |st, _| st == 200).await;
    let addr = s.router_addr;

    // every one of these names alice (or nobody) first: none may reach bob
    let tricky: [&[u8]; 12] = [
        b"/fn/alice/f/../../bob/secret",
        b"/fn/alice/../bob/secret",
        b"/fn/alice/%2e%2e/bob/secret",
        b"/fn/alice/%2E%2E%2Fbob%2Fsecret",
        b"/fn/alice%2Fbob/secret",
        b"/fn/alice/f%2F..%2F..%2Fbob%2Fsecret",
        b"//fn/bob/secret",
        b"/fn//bob/secret",
        b"/fn/alice/./../bob/secret",
        b"/fn/alice/f\\..\\..\\bob\\secret",
        b"/fn/ALICE/../bob/secret",
        b"/fn/alice/f;/../../bob/secret",
    ];
    for path in tricky {
        let (st, text) = exchange(addr, &get(path)).await;
        let shown = String::from_utf8_lossy(path);
        assert!(!text.contains("owner=bob"), "{shown} reached bob: {text}");
        assert!([200, 400, 404].contains(&st), "{shown}: {st} {text}");
        if st == 200 {
            assert!(text.contains("owner=alice"), "{shown}: {text}");
        }
    }
    // 64 KiB path, invalid UTF-8, a NUL
    let long = [b"/fn/alice/f/".as_slice(), &vec![b'a'; 64 * 1024]].concat();
    let (st, _) = exchange(addr, &get(&long)).await;
    assert!([400, 414, 431].contains(&st), "64 KiB path: {st}");
    let (st, _) = exchange(addr, &get(b"/fn/alice/f/\xff\xfe")).await;
    assert_eq!(st, 400);
    let (st, _) = exchange(addr, &get(b"/fn/al\0ice/f")).await;
    assert_eq!(st, 400);

    // conflicting framing: hyper follows RFC 9112 (Transfer-Encoding wins, the
    // Content-Length is dropped, the connection is closed after the answer), and
    // the router re-frames the body for the instance, so nothing can be smuggled
    // behind it: the second request in the same packet is never answered.
    let (st, text) = exchange(
        addr,
        b"POST /fn/alice/f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /fn/bob/secret HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!([200, 400].contains(&st), "{text}");
    assert!(
        !text.contains("owner=bob"),
        "a smuggled request was answered: {text}"
    );
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    let (st, _) = exchange(
        addr,
        b"POST /fn/alice/f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabcde",
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = exchange(
        addr,
        b"POST /fn/alice/f HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(st, 400);
    // an answer given before the body was read says the connection ends
    let (st, text) = exchange(
        addr,
        b"POST /fn/nobody/x/p HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n",
    )
    .await;
    assert_eq!(st, 404);
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    // oversized headers
    let big = [
        b"GET /fn/alice/f HTTP/1.1\r\nHost: x\r\nX-Big: ".as_slice(),
        &vec![b'b'; 100 * 1024],
        b"\r\nConnection: close\r\n\r\n",
    ]
    .concat();
    let (st, _) = exchange(addr, &big).await;
    assert!([400, 431].contains(&st), "oversized header: {st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off_without_blocking_others() {
    let s = stack_with(
        TestBackend::Sqlite,
        Opts {
            request_timeout: Duration::from_secs(3),
            ..Opts::default()
        },
    )
    .await;
    let a = s.token("alice").await;
    s.deploy(&a, "f", "export default async (req: Request) => new Response('read ' + (await req.arrayBuffer()).byteLength);\n")
        .await;
    s.until("alice", "f", |st, _| st == 200).await;
    let addr = s.router_addr;

    // 200 clients that never finish their headers
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /fn/alice/f HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(c);
    }
    // a client that sends its body one byte a second
    let trickle = tokio::spawn(async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"POST /fn/alice/f HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let start = Instant::now();
        let mut buf = Vec::new();
        loop {
            if c.write_all(b"x").await.is_err() {
                break;
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(Duration::from_secs(1), c.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
            if start.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    });
    // everyone else is served meanwhile
    for _ in 0..20 {
        let r = s.get("alice", "f", "/").await;
        assert_eq!(r.status(), 200);
    }
    let answer = trickle.await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 504"),
        "trickling body: {answer}"
    );
    // the header-less clients are disconnected (header timeout, 10 s)
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut closed = 0;
    for c in &mut slow {
        let mut b = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), c.read(&mut b)).await {
            // hyper answers 408 or just closes; either ends the connection
            if n == 0 || String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 408") {
                closed += 1;
            }
        }
    }
    assert_eq!(closed, 200, "slow clients still hold connections");
}

/// Reads its whole body; says which instance answered, so a test can tell
/// whether the router blamed (and replaced) it.
const READER: &str = r#"const instance = crypto.randomUUID();
export default async (req: Request) => {
  const n = (await req.arrayBuffer()).byteLength;
  return new Response(`read ${n} on ${instance}`);
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_request_bodies_are_the_callers_400_not_the_functions_502() {
    let s = stack_with(TestBackend::Sqlite, Opts::default()).await;
    let a = s.token("alice").await;
    s.deploy(&a, "reader", READER).await;
    let (_, first) = s.until("alice", "reader", |st, _| st == 200).await;
    let addr = s.router_addr;
    let head = "POST /fn/alice/reader HTTP/1.1\r\nHost: x\r\n";
    let chunked = format!("{head}Transfer-Encoding: chunked\r\n\r\n");
    let long_extension = format!("{chunked}3;{}\r\nabc\r\n0\r\n\r\n", "e".repeat(20 * 1024));
    let cases: Vec<(&str, String)> = vec![
        (
            "chunk size not hex",
            format!("{chunked}zz\r\nabc\r\n0\r\n\r\n"),
        ),
        (
            "chunk size overflows",
            format!("{chunked}fffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
        ),
        (
            "no CRLF after the chunk data",
            format!("{chunked}3\r\nabcXY0\r\n\r\n"),
        ),
        (
            "bare LF in a chunk extension",
            format!("{chunked}3;ext\nabc\r\n0\r\n\r\n"),
        ),
        ("chunk extensions over hyper's limit", long_extension),
        (
            "chunk longer than its size",
            format!("{chunked}3\r\nabcdef\r\n0\r\n\r\n"),
        ),
    ];
    for (what, raw) in &cases {
        let answer = exchange_from(1, addr, raw.as_bytes()).await;
        assert_eq!(answer.status, 400, "{what}: {}", answer.text);
        assert_eq!(answer.error_code(), "bad_request", "{what}");
    }
    // Bodies cut short: the caller closes its sending side (and keeps reading).
    for (what, raw) in [
        (
            "shorter than Content-Length",
            format!("{head}Content-Length: 100\r\n\r\nonly this"),
        ),
        (
            "chunked without its last chunk",
            format!("{chunked}3\r\nabc\r\n"),
        ),
        ("inside a chunk", format!("{chunked}10\r\nabc")),
    ] {
        let mut c = connect_from(1, addr).await;
        c.write_all(raw.as_bytes()).await.unwrap();
        c.shutdown().await.unwrap();
        let answer = read_to_close(&mut c, Duration::from_secs(20)).await;
        assert_eq!(answer.status, 400, "{what}: {}", answer.text);
        assert_eq!(answer.error_code(), "bad_request", "{what}");
    }
    // None of it was held against the function: the same instance still serves.
    let r = s.get("alice", "reader", "/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), first);
}

/// Answers `101 Switching Protocols` to a request that never asked to switch:
/// Deno refuses `new Response(null, {status: 101})`, but `Deno.upgradeWebSocket`
/// believes whatever `req.headers` says, and an own property shadows the getter.
const SWITCHER: &str = r#"export default (req: Request) => {
  if (new URL(req.url).pathname !== "/switch") return new Response("plain");
  const headers = new Headers(req.headers);
  headers.set("upgrade", "websocket");
  headers.set("connection", "Upgrade");
  headers.set("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
  headers.set("sec-websocket-version", "13");
  Object.defineProperty(req, "headers", { value: headers });
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.onopen = () => socket.send("you are talking to the function now");
  return response;
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unsolicited_101_from_a_function_is_a_502() {
    let s = stack_with(TestBackend::Sqlite, Opts::default()).await;
    let a = s.token("alice").await;
    s.deploy(&a, "switcher", SWITCHER).await;
    s.until("alice", "switcher", |st, t| st == 200 && t == "plain")
        .await;
    let r = s.get("alice", "switcher", "/switch").await;
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_gateway");

    // On the wire: a 502, and the connection still speaks HTTP to the router:
    // the next request on it is answered by the function.
    let mut c = connect_from(1, s.router_addr).await;
    c.write_all(b"GET /fn/alice/switcher/switch HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_head(&mut c, Duration::from_secs(20)).await.unwrap();
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert!(
        !answer.text.contains("talking to the function"),
        "{}",
        answer.text
    );
    assert_eq!(answer.error_code(), "bad_gateway");
    c.write_all(b"GET /fn/alice/switcher/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let second = read_to_close(&mut c, Duration::from_secs(20)).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert!(second.text.ends_with("plain"), "{}", second.text);

    // A caller that asks for a WebSocket gets its switch (websockets.rs).
    let mut c = connect_from(1, s.router_addr).await;
    c.write_all(
        b"GET /fn/alice/switcher/switch HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_head(&mut c, Duration::from_secs(20)).await.unwrap();
    assert_eq!(answer.status, 101, "{}", answer.text);
    assert!(
        answer
            .text
            .to_ascii_lowercase()
            .contains("upgrade: websocket"),
        "{}",
        answer.text
    );
}
