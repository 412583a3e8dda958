//! WebSockets and Server-Sent Events through the router to real Deno
//! functions. Only on SQLite: nothing here touches the store beyond deploys,
//! which the other suites run on both backends.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use skiff_router::config::RouterConfig;
use skiff_testkit::TestBackend;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::helpers::{Opts, Stack, stack_with};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Says which version answers, then echoes every message back as it came.
fn echo(version: &str) -> String {
    format!(
        r#"export default (req: Request) => {{
  if (req.headers.get("upgrade") !== "websocket") return new Response("plain {version}");
  const {{ socket, response }} = Deno.upgradeWebSocket(req);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => socket.send("hello from {version}");
  socket.onmessage = (e) => socket.send(e.data);
  return response;
}};
"#
    )
}

/// A hang guard only: every wait in these tests ends on an event.
const PATIENCE: Duration = Duration::from_secs(60);

async fn deployed(o: Opts) -> (Stack, String) {
    let s = stack_with(TestBackend::Sqlite, o).await;
    let t = s.token("alice").await;
    s.deploy_live(&t, "alice", "ws", &echo("v1"), "plain v1")
        .await;
    (s, t)
}

async fn open(s: &Stack) -> Ws {
    let url = format!("ws://{}/fn/alice/ws/chat", s.router_addr);
    let (ws, resp) = tokio::time::timeout(PATIENCE, connect_async(url))
        .await
        .expect("connect in time")
        .expect("the upgrade goes through");
    assert_eq!(resp.status(), 101);
    ws
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("a message in time")
        .expect("the connection is open")
        .expect("a valid frame")
}

/// The next message must be the router's Close: its code and reason.
async fn closed(ws: &mut Ws) -> (u16, String) {
    match next(ws).await {
        Message::Close(Some(f)) => (f.code.into(), f.reason.to_string()),
        other => panic!("expected a Close frame, got {other:?}"),
    }
}

fn tune(f: fn(&mut RouterConfig)) -> Opts {
    Opts {
        tune_router: f,
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_echo_both_ways_text_and_binary() {
    let (s, _) = deployed(Opts::default()).await;
    let mut ws = open(&s).await;
    assert_eq!(next(&mut ws).await, Message::text("hello from v1"));
    ws.send(Message::text("ünïcode ✓")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("ünïcode ✓"));
    // larger than 64 KiB: many reads, a 64-bit frame length
    let big: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(big));
    for i in 0..20 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    for i in 0..20 {
        assert_eq!(next(&mut ws).await, Message::text(format!("m{i}")));
    }
    // the caller closes: the function's Close comes back, then the end
    ws.close(None).await.unwrap();
    assert!(matches!(next(&mut ws).await, Message::Close(_)));
    assert!(ws.next().await.is_none());
    // plain requests still work alongside
    assert_eq!(
        s.get("alice", "ws", "/").await.text().await.unwrap(),
        "plain v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_socket_holds_a_concurrency_slot_and_its_instance() {
    let (s, _) = deployed(Opts {
        concurrency: 1,
        queue_wait: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(1),
        ..Opts::default()
    })
    .await;
    let mut ws = open(&s).await;
    assert_eq!(next(&mut ws).await, Message::text("hello from v1"));
    let pids: Vec<_> = s
        .handle
        .process_runtime()
        .unwrap()
        .running()
        .iter()
        .map(|i| i.pid)
        .collect();
    assert_eq!(pids.len(), 1);
    // the socket is the one request in flight: another caller gets the
    // router's usual over-limit answer after its queue wait
    let r = s.get("alice", "ws", "/").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    // well past the instance idle timeout, the instance behind the socket
    // is still the same one, and still answers
    tokio::time::sleep(Duration::from_secs(3)).await;
    ws.send(Message::text("still there?")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("still there?"));
    let now: Vec<_> = s
        .handle
        .process_runtime()
        .unwrap()
        .running()
        .iter()
        .map(|i| i.pid)
        .collect();
    assert_eq!(now, pids, "the instance was not stopped as idle");
    // closing the socket gives the slot back
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    s.until("alice", "ws", |st, t| st == 200 && t == "plain v1")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_socket_is_closed_with_a_close_frame() {
    let (s, _) = deployed(tune(|r| r.ws_idle = Duration::from_secs(1))).await;
    let mut ws = open(&s).await;
    assert_eq!(next(&mut ws).await, Message::text("hello from v1"));
    assert_eq!(closed(&mut ws).await, (1001, "idle timeout".into()));
    assert!(ws.next().await.is_none(), "then the connection ends");
    // the instance is fine: a new socket works
    let mut again = open(&s).await;
    assert_eq!(next(&mut again).await, Message::text("hello from v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_socket_is_closed_at_its_maximum_lifetime() {
    let (s, _) = deployed(tune(|r| r.ws_max = Duration::from_secs(2))).await;
    let mut ws = open(&s).await;
    assert_eq!(next(&mut ws).await, Message::text("hello from v1"));
    // traffic does not extend a lifetime: echo until the Close arrives
    let mut echoed = 0;
    let why = loop {
        ws.send(Message::text("tick")).await.unwrap();
        match next(&mut ws).await {
            Message::Text(t) => {
                assert_eq!(t.as_str(), "tick");
                echoed += 1;
            }
            Message::Close(Some(f)) => break (u16::from(f.code), f.reason.to_string()),
            other => panic!("unexpected {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(why, (1001, "connection time limit".into()));
    assert!(echoed > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redeploy_closes_old_sockets_cleanly_and_new_ones_reach_the_new_version() {
    // drain grace = request timeout + 5 s
    let (s, t) = deployed(Opts {
        request_timeout: Duration::from_secs(1),
        ..Opts::default()
    })
    .await;
    let mut old = open(&s).await;
    assert_eq!(next(&mut old).await, Message::text("hello from v1"));
    s.deploy_live(&t, "alice", "ws", &echo("v2"), "plain v2")
        .await;
    let mut new = open(&s).await;
    assert_eq!(next(&mut new).await, Message::text("hello from v2"));
    assert_eq!(closed(&mut old).await, (1001, "function redeployed".into()));
    assert!(old.next().await.is_none());
    // the new version's socket is untouched by the old one's drain
    new.send(Message::text("after")).await.unwrap();
    assert_eq!(next(&mut new).await, Message::text("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_closes_sockets_at_once() {
    let (s, t) = deployed(Opts::default()).await;
    let mut ws = open(&s).await;
    assert_eq!(next(&mut ws).await, Message::text("hello from v1"));
    s.delete(&t, "ws").await;
    assert_eq!(closed(&mut ws).await, (1001, "function deleted".into()));
    assert!(ws.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_router_shutdown_closes_sockets_with_a_close_frame() {
    let (s, _) = deployed(Opts::default()).await;
    let mut ws = open(&s).await;
    assert_eq!(next(&mut ws).await, Message::text("hello from v1"));
    s.handle.stop();
    // its instance is stopped with the router: the caller hears it as a Close
    assert_eq!(
        closed(&mut ws).await,
        (1001, "the function's instance went away".into())
    );
}

const SSE: &str = r#"let release = () => {};
const gate = new Promise<void>((r) => { release = r; });
export default (req: Request) => {
  const path = new URL(req.url).pathname;
  if (path === "/go") { release(); return new Response("released"); }
  if (path !== "/events") return new Response("sse");
  const enc = new TextEncoder();
  const body = new ReadableStream({
    async start(c) {
      c.enqueue(enc.encode("id: 1\ndata: one\n\n"));
      await gate;
      c.enqueue(enc.encode("id: 2\ndata: two\n\n"));
      c.close();
    },
  });
  return new Response(body, { headers: { "content-type": "text/event-stream" } });
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_sent_events_stream_as_they_are_sent() {
    let s = stack_with(TestBackend::Sqlite, Opts::default()).await;
    let t = s.token("alice").await;
    s.deploy_live(&t, "alice", "sse", SSE, "sse").await;
    let r = s
        .client
        .get(s.url("alice", "sse", "/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = r.bytes_stream();
    let mut seen = String::new();
    // event 2 is only sent after /go, which is called only once event 1 is here
    while !seen.contains("data: one\n\n") {
        let chunk = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("event 1 in time")
            .expect("the stream is open")
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(!seen.contains("two"));
    let go = s.get("alice", "sse", "/go").await;
    assert_eq!(go.text().await.unwrap(), "released");
    while let Some(chunk) = tokio::time::timeout(PATIENCE, stream.next()).await.unwrap() {
        seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert_eq!(seen, "id: 1\ndata: one\n\nid: 2\ndata: two\n\n");
}
