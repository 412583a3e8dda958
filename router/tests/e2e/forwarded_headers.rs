//! What a function learns about its caller: a direct caller cannot forge where
//! a request came from (in any spelling, any number of header lines), a trusted
//! proxy's forwarding headers are kept and appended to, and requests whose
//! framing could make the router and the function disagree are refused.

use serde_json::Value;
use skiff_router::config::RouterConfig;
use skiff_testkit::TestBackend;

use crate::helpers::{Opts, Stack, stack_with};
use crate::wire::{Answer, exchange_from, request};

/// Echoes every header it received, and the body's length.
const ECHO: &str = r#"export default async (req: Request) => {
  const headers: Record<string, string> = {};
  req.headers.forEach((v, k) => { headers[k] = v; });
  const body = req.method === "GET" ? "" : await req.text();
  return Response.json({ headers, length: body.length });
};
"#;

/// 127.0.0.3 is the trusted proxy; 10.0.0.0/8 stands for the proxies behind it.
fn trust_one_proxy(r: &mut RouterConfig) {
    r.trusted_proxies = "127.0.0.3/32, 10.0.0.0/8".parse().unwrap();
}

async fn echo_stack() -> Stack {
    let s = stack_with(
        TestBackend::Sqlite,
        Opts {
            tune_router: trust_one_proxy,
            ..Opts::default()
        },
    )
    .await;
    let t = s.token("alice").await;
    s.deploy(&t, "echo", ECHO).await;
    s.until("alice", "echo", |st, _| st == 200).await;
    s
}

/// The headers the function saw, for a request sent from `127.0.0.<octet>`.
async fn seen_from(s: &Stack, octet: u8, raw: &[u8]) -> Value {
    let a = exchange_from(octet, s.router_addr, raw).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()["headers"].clone()
}

/// Every way a caller might claim another origin: the dashed names over
/// several lines, other letter cases, `_` spellings, RFC 7239, the CDN names.
const FORGED: [&str; 19] = [
    "X-Forwarded-For: 6.6.6.6",
    "X-Forwarded-For: 7.7.7.7, 8.8.8.8",
    "X-FORWARDED-FOR: 9.9.9.9",
    "X-Forwarded-Host: evil.example",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Port: 443",
    "X-Forwarded-Ssl: on",
    "X-Forwarded-Prefix: /admin",
    "Forwarded: for=6.6.6.6;proto=https;host=evil.example",
    "Forwarded: for=\"[2001:db8::6]\"",
    "X-Real-IP: 6.6.6.6",
    "X_Forwarded_For: 6.6.6.6",
    "X-Forwarded_Host: evil.example",
    "x_real_ip: 6.6.6.6",
    "True-Client-IP: 6.6.6.6",
    "CF-Connecting-IP: 6.6.6.6",
    "X-Client-IP: 6.6.6.6",
    "Front-End-Https: on",
    "X-Kept: yes",
];

fn assert_only_the_routers_own(seen: &Value, client: &str) {
    assert_eq!(seen["x-forwarded-for"], client, "{seen}");
    assert_eq!(seen["x-real-ip"], client, "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http", "{seen}");
    assert_eq!(seen["x-forwarded-host"], "x", "{seen}");
    assert_eq!(seen["host"], "x", "{seen}");
    let text = seen.to_string();
    for forged in [
        "6.6.6.6", "7.7.7.7", "8.8.8.8", "9.9.9.9", "evil", "2001:db8", "https",
    ] {
        assert!(
            !text.contains(forged),
            "{forged} reached the function: {seen}"
        );
    }
    for name in [
        "forwarded",
        "x-forwarded-port",
        "x-forwarded-ssl",
        "x-forwarded-prefix",
        "x_forwarded_for",
        "x-forwarded_host",
        "x_real_ip",
        "true-client-ip",
        "cf-connecting-ip",
        "x-client-ip",
        "front-end-https",
    ] {
        assert!(
            seen.get(name).is_none(),
            "{name} reached the function: {seen}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_direct_caller_cannot_forge_where_a_request_came_from() {
    let s = echo_stack().await;

    // From two untrusted addresses: each is told to the function as itself.
    for octet in [1, 2] {
        let seen = seen_from(&s, octet, &request("GET", "/fn/alice/echo", &FORGED, b"")).await;
        assert_only_the_routers_own(&seen, &format!("127.0.0.{octet}"));
        assert_eq!(seen["x-kept"], "yes");
    }
    // A body, chunked, with forwarding headers in its trailers.
    let chunked = request(
        "POST",
        "/fn/alice/echo",
        &[
            &FORGED[..],
            &["Transfer-Encoding: chunked", "Trailer: X-Forwarded-For"],
        ]
        .concat(),
        b"",
    );
    let raw = [
        chunked.as_slice(),
        b"5\r\nhello\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
    ]
    .concat();
    let a = exchange_from(1, s.router_addr, &raw).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["length"], 5);
    assert_only_the_routers_own(&a.json()["headers"], "127.0.0.1");

    // Thousands of entries in one line, and as many lines as hyper takes.
    let long = format!("X-Forwarded-For: {}", vec!["6.6.6.6"; 5000].join(", "));
    let seen = seen_from(&s, 1, &request("GET", "/fn/alice/echo", &[&long], b"")).await;
    assert_only_the_routers_own(&seen, "127.0.0.1");
    let lines = vec!["X-Forwarded-For: 6.6.6.6"; 90];
    let seen = seen_from(&s, 1, &request("GET", "/fn/alice/echo", &lines, b"")).await;
    assert_only_the_routers_own(&seen, "127.0.0.1");
    let lines = vec!["X-Forwarded-For: 6.6.6.6"; 500];
    let a = exchange_from(
        1,
        s.router_addr,
        &request("GET", "/fn/alice/echo", &lines, b""),
    )
    .await;
    assert_eq!(a.status, 431, "500 header lines: {}", a.text);

    // Naming a forwarding header in `Connection` does not keep the caller's
    // value or remove the router's; naming Host does not remove Host.
    let seen = seen_from(
        &s,
        1,
        &request(
            "GET",
            "/fn/alice/echo",
            &[
                "X-Forwarded-For: 6.6.6.6",
                "Connection: x-forwarded-for, x-real-ip, host",
            ],
            b"",
        ),
    )
    .await;
    assert_only_the_routers_own(&seen, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trusted_proxys_forwarding_is_kept_and_names_the_real_client() {
    let s = echo_stack().await;

    // An ingress at 127.0.0.3 behind another proxy (10.1.1.1): the client-written
    // 6.6.6.6 is left of the real client 203.0.113.7.
    let seen = seen_from(
        &s,
        3,
        &request(
            "GET",
            "/fn/alice/echo",
            &[
                "X-Forwarded-For: 6.6.6.6, 203.0.113.7",
                "X-Forwarded-For: 10.1.1.1",
                "X-Forwarded-Proto: https",
                "X-Forwarded-Host: public.example",
                "Forwarded: for=203.0.113.7;proto=https",
                "X-Real-IP: 6.6.6.6",
                "X_Forwarded_For: 9.9.9.9",
            ],
            b"",
        ),
    )
    .await;
    assert_eq!(
        seen["x-forwarded-for"], "6.6.6.6, 203.0.113.7, 10.1.1.1, 127.0.0.3",
        "{seen}"
    );
    assert_eq!(seen["x-real-ip"], "203.0.113.7", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-forwarded-host"], "public.example");
    assert_eq!(
        seen["forwarded"],
        "for=203.0.113.7;proto=https, for=127.0.0.3"
    );
    assert!(seen.get("x_forwarded_for").is_none(), "{seen}");

    // Thousands of entries from the proxy: appended to, the real client found.
    let long = format!(
        "X-Forwarded-For: {}, 203.0.113.8",
        vec!["6.6.6.6"; 3000].join(", ")
    );
    let seen = seen_from(&s, 3, &request("GET", "/fn/alice/echo", &[&long], b"")).await;
    assert_eq!(seen["x-real-ip"], "203.0.113.8");
    let xff = seen["x-forwarded-for"].as_str().unwrap();
    assert!(xff.ends_with("6.6.6.6, 203.0.113.8, 127.0.0.3"), "{xff}");

    // The proxy sent nothing: the router fills in its own.
    let seen = seen_from(&s, 3, &request("GET", "/fn/alice/echo", &[], b"")).await;
    assert_eq!(seen["x-forwarded-for"], "127.0.0.3");
    assert_eq!(seen["x-real-ip"], "127.0.0.3");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "x");

    // Garbage from the proxy's side stops the walk at the proxy itself.
    let seen = seen_from(
        &s,
        3,
        &request(
            "GET",
            "/fn/alice/echo",
            &["X-Forwarded-For: 6.6.6.6, not-an-ip"],
            b"",
        ),
    )
    .await;
    assert_eq!(seen["x-real-ip"], "127.0.0.3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn framing_that_could_split_router_and_function_is_refused() {
    let s = echo_stack().await;
    let addr = s.router_addr;
    let refused = |a: &Answer, what: &str| {
        assert_eq!(a.status, 400, "{what}: {}", a.text);
        assert!(
            !a.text.contains("x-forwarded-for"),
            "{what} reached the function"
        );
    };

    // Two Host headers: the router and the function could each believe another.
    let a = exchange_from(
        1,
        addr,
        b"GET /fn/alice/echo HTTP/1.1\r\nHost: x\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    refused(&a, "two Host headers");
    assert_eq!(a.error_code(), "bad_request");
    // HTTP/1.1 without Host (HTTP/1.0 may omit it).
    let a = exchange_from(
        1,
        addr,
        b"GET /fn/alice/echo HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    refused(&a, "no Host");
    let a = exchange_from(1, addr, b"GET /fn/alice/echo HTTP/1.0\r\n\r\n").await;
    assert_eq!(a.status, 200, "HTTP/1.0 without Host: {}", a.text);
    // obs-fold continuing a forwarding header, whitespace before the colon,
    // a bare CR inside a value, a non-final chunked coding.
    for (what, raw) in [
        (
            "obs-fold",
            &b"GET /fn/alice/echo HTTP/1.1\r\nHost: x\r\nX-Real-IP: 1.2.3.4\r\n 6.6.6.6\r\nConnection: close\r\n\r\n"[..],
        ),
        (
            "space before colon",
            b"GET /fn/alice/echo HTTP/1.1\r\nHost: x\r\nX-Forwarded-For : 6.6.6.6\r\nConnection: close\r\n\r\n",
        ),
        (
            "bare CR",
            b"GET /fn/alice/echo HTTP/1.1\r\nHost: x\r\nX-A: a\rX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n",
        ),
        (
            "chunked not last",
            b"POST /fn/alice/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\nConnection: close\r\n\r\n0\r\n\r\n",
        ),
    ] {
        let a = exchange_from(1, addr, raw).await;
        refused(&a, what);
    }
    // An absolute-form target names the host (RFC 9112 §3.2.2): the function is
    // told that one, not the Host header, and never the target's userinfo.
    let a = exchange_from(
        1,
        addr,
        b"GET http://user:pw@real.example:8000/fn/alice/echo HTTP/1.1\r\nHost: spoofed.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let seen = &a.json()["headers"];
    assert_eq!(seen["host"], "real.example:8000", "{seen}");
    assert_eq!(seen["x-forwarded-host"], "real.example:8000", "{seen}");
    assert!(!seen.to_string().contains("spoofed"), "{seen}");
    assert!(!seen.to_string().contains("pw"), "{seen}");
}
