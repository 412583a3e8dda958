//! The proxy against a fake upstream: a plain HTTP server on loopback behind a
//! `Runtime` of the test's own, so the request path (routing, rewriting,
//! errors, timeouts) is tested without Deno, processes or a database.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, Error as ClientError, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo};
use skiff_core::store::LiveFunction;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{ProxyBody, full};
use crate::config::RouterConfig;
use crate::directory::{Directory, FunctionRef};
use crate::error::{RouterError, StartError};
use crate::metrics::Metrics;
use crate::runtime::{BoxFuture, Runtime, Upstream};
use crate::state::RouterState;

#[derive(Default)]
struct Seen {
    timed_out: AtomicUsize,
    failed: AtomicUsize,
    acquired: AtomicUsize,
    /// What the upstream received: method, path and query, headers, body.
    requests: Mutex<Vec<(String, String, http::HeaderMap, String)>>,
}

struct FakeRuntime {
    upstream: SocketAddr,
    client: Client<HttpConnector, ProxyBody>,
    seen: Arc<Seen>,
    start_error: Option<StartError>,
}

struct FakeUpstream {
    authority: Authority,
    client: Client<HttpConnector, ProxyBody>,
    seen: Arc<Seen>,
}

impl Upstream for FakeUpstream {
    fn authority(&self) -> Authority {
        self.authority.clone()
    }
    fn send(&self, req: Request<ProxyBody>) -> ResponseFuture {
        self.client.request(req)
    }
    fn timed_out(&self) {
        self.seen.timed_out.fetch_add(1, Ordering::SeqCst);
    }
    fn failed<'a>(&'a self, _e: &'a ClientError) -> BoxFuture<'a, ()> {
        self.seen.failed.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

impl Runtime for FakeRuntime {
    fn upstream<'a>(
        &'a self,
        _f: &'a Arc<FunctionRef>,
    ) -> BoxFuture<'a, Result<Box<dyn Upstream>, RouterError>> {
        Box::pin(async move {
            self.seen.acquired.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = &self.start_error {
                return Err(e.clone().into());
            }
            let up: Box<dyn Upstream> = Box::new(FakeUpstream {
                authority: Authority::try_from(self.upstream.to_string())
                    .map_err(|_| RouterError::BadGateway)?,
                client: self.client.clone(),
                seen: self.seen.clone(),
            });
            Ok(up)
        })
    }
}

/// An upstream that records each request and answers by path: `/slow`
/// never answers in time, `/close` drops the connection, anything else echoes.
async fn fake_upstream(seen: Arc<Seen>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let pq = parts
                            .uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        seen.requests.lock().unwrap().push((
                            parts.method.to_string(),
                            pq.clone(),
                            parts.headers.clone(),
                            String::from_utf8_lossy(&body).into_owned(),
                        ));
                        match pq.as_str() {
                            "/slow" => tokio::time::sleep(Duration::from_secs(30)).await,
                            "/close" => return Err("dropped"),
                            _ => {}
                        }
                        let mut r =
                            Response::new(full(format!("{} {pq} {}", parts.method, body.len())));
                        r.headers_mut()
                            .insert("connection", "x-hop".parse().unwrap());
                        r.headers_mut().insert("x-hop", "1".parse().unwrap());
                        r.headers_mut().insert("x-kept", "1".parse().unwrap());
                        if pq == "/timed" {
                            r.headers_mut()
                                .insert("server-timing", "db;dur=5".parse().unwrap());
                        }
                        Ok::<_, &str>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

struct Router {
    url: String,
    seen: Arc<Seen>,
    metrics: Arc<Metrics>,
    _stop: watch::Sender<bool>,
}

async fn router(start_error: Option<StartError>) -> Router {
    let seen = Arc::new(Seen::default());
    let upstream = fake_upstream(seen.clone()).await;
    let mut cfg = RouterConfig::new(std::env::temp_dir());
    cfg.request_timeout = Duration::from_millis(500);
    let directory = Arc::new(Directory::default());
    directory.replace_all(vec![(
        "alice".into(),
        "hello".into(),
        LiveFunction {
            settings: Default::default(),
            function_id: 1,
            version: 1,
            sha256: String::new(),
            bundled: true,
        },
    )]);
    let runtime = Arc::new(FakeRuntime {
        upstream,
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        seen: seen.clone(),
        start_error,
    });
    let metrics = Arc::new(Metrics::new(true, 100));
    let state = Arc::new(RouterState::new(
        &cfg,
        directory,
        runtime,
        Arc::new(crate::user_limits::UserLimitsTable::new(cfg.quotas.clone())),
        metrics.clone(),
        None,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(crate::server::serve(
        listener,
        state,
        stop_rx,
        Duration::from_secs(1),
    ));
    Router {
        url,
        seen,
        metrics,
        _stop: stop_tx,
    }
}

async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap();
    (status, v["error"]["code"].as_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn a_request_reaches_the_upstream_rewritten_and_its_answer_comes_back() {
    let r = router(None).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/fn/alice/hello/a/b?x=1&y", r.url))
        .header("connection", "x-secret-hop")
        .header("x-secret-hop", "1")
        .header("x-forwarded-for", "203.0.113.9")
        .body("four")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("x-hop").is_none(),
        "hop-by-hop went through"
    );
    assert_eq!(resp.headers()["x-kept"], "1");
    assert_eq!(resp.text().await.unwrap(), "POST /a/b?x=1&y 4");
    let requests = r.seen.requests.lock().unwrap();
    let (method, pq, headers, body) = &requests[0];
    assert_eq!(
        (method.as_str(), pq.as_str(), body.as_str()),
        ("POST", "/a/b?x=1&y", "four")
    );
    assert!(headers.get("x-secret-hop").is_none());
    // an untrusted peer's forwarding header is replaced, not believed
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn an_unknown_function_is_404_without_asking_the_runtime() {
    let r = router(None).await;
    for path in ["/fn/alice/nope", "/fn/bob/hello", "/fn/alice", "/elsewhere"] {
        let resp = reqwest::get(format!("{}{path}", r.url)).await.unwrap();
        assert_eq!(error_code(resp).await, (404, "not_found".into()), "{path}");
    }
    assert_eq!(r.seen.acquired.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_and_the_runtime_hears_of_it() {
    let r = router(None).await;
    let resp = reqwest::get(format!("{}/fn/alice/hello/slow", r.url))
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (504, "function_timeout".into()));
    assert_eq!(r.seen.timed_out.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_exchange_is_a_502_and_the_runtime_hears_of_it() {
    let r = router(None).await;
    let resp = reqwest::get(format!("{}/fn/alice/hello/close", r.url))
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (502, "bad_gateway".into()));
    assert_eq!(r.seen.failed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn start_errors_map_to_503_and_a_deleted_function_to_404() {
    let r = router(Some(StartError::Timeout)).await;
    let resp = reqwest::get(format!("{}/fn/alice/hello/", r.url))
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (503, "function_unavailable".into()));
    let r = router(Some(StartError::Gone)).await;
    let resp = reqwest::get(format!("{}/fn/alice/hello/", r.url))
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (404, "not_found".into()));
}

#[tokio::test]
async fn answers_are_counted_and_timed() {
    let r = router(None).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let resp = client
            .post(format!("{}/fn/alice/hello/timed", r.url))
            .body("12345")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // The function's own Server-Timing stays; the router's is appended.
        let timings: Vec<&str> = resp
            .headers()
            .get_all("server-timing")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(timings.len(), 2, "{timings:?}");
        assert_eq!(timings[0], "db;dur=5");
        assert!(timings[1].starts_with("fn;dur="), "{timings:?}");
        assert!(!timings[1].contains("cold"), "no cold start here");
        resp.text().await.unwrap();
    }
    let resp = client
        .get(format!("{}/fn/alice/hello/close", r.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    client
        .get(format!("{}/fn/alice/nope", r.url))
        .send()
        .await
        .unwrap();
    let text = r.metrics.render();
    for line in [
        r#"skiff_requests_total{user="alice",function="hello",status="200"} 3"#,
        r#"skiff_requests_total{user="alice",function="hello",status="502"} 1"#,
        r#"skiff_refusals_total{user="alice",function="hello",reason="bad_gateway"} 1"#,
        r#"skiff_request_duration_seconds_count{user="alice",function="hello"} 4"#,
        r#"skiff_request_bytes_total{user="alice",function="hello"} 15"#,
        r#"skiff_in_flight_requests{user="alice",function="hello"} 0"#,
        r#"skiff_cold_starts_total{user="alice",function="hello"} 0"#,
        "skiff_unmatched_requests_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    // "POST /timed 5" three times.
    assert!(
        text.contains(r#"skiff_response_bytes_total{user="alice",function="hello"} 39"#),
        "{text}"
    );
}
