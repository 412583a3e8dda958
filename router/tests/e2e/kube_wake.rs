//! Waking a function scaled to zero, in Kubernetes mode, offline: the real
//! router (`SKIFF_RUNTIME=kubernetes`) in front of a function with no pod,
//! and stand-ins for the cluster's parts, named:
//! - the manager's wake endpoint (`SKIFF_K8S_WAKE_LISTEN`): a small HTTP
//!   server on loopback that counts its calls and, as told, starts the pod
//!   after a delay, or fails;
//! - the pod: a real client runtime (Deno, `client-runtime/run.sh`, as the
//!   function Deployment starts it), started by the wake;
//! - kube-proxy and the Service's DNS name: the router reaches every Service
//!   at the pod's address (`RouterConfig::k8s_connect_to`); with no pod
//!   there, connecting is refused, as kube-proxy refuses a Service with no
//!   ready endpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use skiff_router::RouterApp;
use skiff_router::config::{RouterConfig, RuntimeKind};
use skiff_testkit::TestBackend;
use tokio::net::TcpListener;

use crate::helpers::{Stack, stack, test_dir};
use crate::kube_drain::{Pod, free_port, start_pod_on};

/// What the stand-in wake endpoint does when called.
#[derive(Clone, Copy)]
enum Manager {
    /// Answers `scaled` and starts the pod after this delay.
    StartsThePod(Duration),
    /// Answers `scaled`; the pod never comes up.
    NeverStarts,
    /// Answers `503 wake_failed` (the Kubernetes API failed).
    Fails,
}

struct WakeEndpoint {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    pod: Arc<Mutex<Option<Pod>>>,
}

impl WakeEndpoint {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for WakeEndpoint {
    fn drop(&mut self) {
        if let Some(mut pod) = self.pod.lock().unwrap().take() {
            let _ = pod.child.start_kill();
        }
    }
}

async fn wake_endpoint(manager: Manager, pod_port: u16) -> WakeEndpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let paths = Arc::new(Mutex::new(Vec::new()));
    let pod = Arc::new(Mutex::new(None));
    let (c, p, slot) = (calls.clone(), paths.clone(), pod.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (c, p, slot) = (c.clone(), p.clone(), slot.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (c, p, slot) = (c.clone(), p.clone(), slot.clone());
                    async move {
                        p.lock()
                            .unwrap()
                            .push(format!("{} {}", req.method(), req.uri().path()));
                        c.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = match manager {
                            Manager::StartsThePod(delay) => {
                                tokio::spawn(async move {
                                    tokio::time::sleep(delay).await;
                                    let started = start_pod_on(&repo(), 2, pod_port).await;
                                    *slot.lock().unwrap() = Some(started);
                                });
                                (200, r#"{"outcome":"scaled"}"#)
                            }
                            Manager::NeverStarts => (200, r#"{"outcome":"scaled"}"#),
                            Manager::Fails => (
                                503,
                                r#"{"error":{"code":"wake_failed","message":"the function could not be woken"}}"#,
                            ),
                        };
                        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                        *r.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    WakeEndpoint {
        addr,
        calls,
        paths,
        pod,
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A router in Kubernetes mode on the stack's database, its Services at
/// 127.0.0.1:`pod_port`, waking through `wake` (if any), holding requests
/// `wait` for a woken function.
struct KubeRouter {
    url: String,
    handle: skiff_router::RouterHandle,
    _tmp: tempfile::TempDir,
}

impl Drop for KubeRouter {
    fn drop(&mut self) {
        self.handle.stop();
    }
}

async fn kube_router(
    s: &Stack,
    pod_port: u16,
    wake: Option<SocketAddr>,
    wait: Duration,
) -> KubeRouter {
    let tmp = test_dir();
    let mut r = RouterConfig::new(tmp.path().join("d"));
    r.runtime = RuntimeKind::Kubernetes;
    r.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    r.metrics_listen = None;
    r.k8s_connect_to = Some(SocketAddr::from(([127, 0, 0, 1], pod_port)));
    r.k8s_wake_url = wake.map(|a| format!("http://{a}"));
    r.k8s_wake_wait = wait;
    r.request_timeout = Duration::from_secs(30);
    let store = skiff_core::store::Store::connect(&s.db.url, 2)
        .await
        .unwrap();
    let router = RouterApp::build(r, store).await.expect("router");
    let url = format!("http://{}", router.local_addr().unwrap());
    let handle = router.handle();
    tokio::spawn(router.run_until_stopped());
    KubeRouter {
        url,
        handle,
        _tmp: tmp,
    }
}

/// A stack with alice's function `hello` stored (the Kubernetes router
/// never runs its code: the pod does).
async fn with_function() -> Stack {
    let s = stack(TestBackend::Sqlite).await;
    s.token("alice").await;
    s.deploy_unbuilt(
        "alice",
        "hello",
        "export default () => new Response('x');\n",
    )
    .await;
    s
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn call(url: &str, body: String) -> (u16, Option<String>, String) {
    let (status, headers, body) = call_with_headers(url, body).await;
    let retry_after = headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, body)
}

async fn call_with_headers(url: &str, body: String) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .post(format!("{url}/fn/alice/hello/echo"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn server_timing(h: &reqwest::header::HeaderMap) -> String {
    h.get_all("server-timing")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn concurrent_calls_to_a_sleeping_function_share_one_wake_and_all_get_its_answer() {
    let s = with_function().await;
    let pod_port = free_port();
    let wake = wake_endpoint(Manager::StartsThePod(Duration::from_millis(300)), pod_port).await;
    // Held as long as the request timeout: the pod's start (Deno) takes
    // its time on a loaded machine.
    let router = kube_router(&s, pod_port, Some(wake.addr), Duration::from_secs(30)).await;

    let mut calls = Vec::new();
    for i in 0..20 {
        let url = router.url.clone();
        calls.push(tokio::spawn(async move {
            (i, call_with_headers(&url, format!("call-{i}")).await)
        }));
    }
    for c in calls {
        let (i, (status, headers, body)) = c.await.unwrap();
        assert_eq!((status, body.as_str()), (200, format!("call-{i}").as_str()));
        // Each waited for the pod: a cold start, said as the process runtime says it.
        let timing = server_timing(&headers);
        assert!(timing.contains("cold;dur="), "{timing}");
    }
    assert_eq!(
        wake.calls(),
        1,
        "one wake for all: {:?}",
        wake.paths.lock().unwrap()
    );
    assert_eq!(
        wake.paths.lock().unwrap().as_slice(),
        ["POST /wake/alice/hello"]
    );
    // Up now: the next call goes straight through, no wake.
    let (status, headers, body) = call_with_headers(&router.url, "again".into()).await;
    assert_eq!((status, body.as_str()), (200, "again"));
    assert!(!server_timing(&headers).contains("cold"));
    assert_eq!(wake.calls(), 1);
    let metrics = router.handle.metrics().render();
    assert!(
        metrics.contains(r#"skiff_wakes_total{outcome="scaled"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"skiff_cold_starts_total{user="alice",function="hello"} 20"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_failed_wake_is_a_503_with_retry_after_and_the_next_call_tries_again() {
    let s = with_function().await;
    let pod_port = free_port();
    let wake = wake_endpoint(Manager::Fails, pod_port).await;
    let router = kube_router(&s, pod_port, Some(wake.addr), Duration::from_secs(2)).await;
    let (status, retry_after, body) = call(&router.url, "x".into()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_code(&body), "function_unavailable", "{body}");
    assert!(retry_after.is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n > 0)));
    assert_eq!(wake.calls(), 1);
    // A failed wake is not remembered: the next call asks again.
    let (status, _, _) = call(&router.url, "y".into()).await;
    assert_eq!(status, 503);
    assert_eq!(wake.calls(), 2);
    let metrics = router.handle.metrics().render();
    assert!(
        metrics.contains(r#"skiff_wakes_total{outcome="failed"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_pod_that_never_comes_up_is_a_503_with_retry_after_once_the_wait_ends() {
    let s = with_function().await;
    let pod_port = free_port();
    let wake = wake_endpoint(Manager::NeverStarts, pod_port).await;
    // SKIFF_K8S_WAKE_WAIT_SECS=2.
    let router = kube_router(&s, pod_port, Some(wake.addr), Duration::from_secs(2)).await;
    let mut calls = Vec::new();
    for i in 0..3 {
        let url = router.url.clone();
        calls.push(tokio::spawn(
            async move { call(&url, format!("c{i}")).await },
        ));
    }
    for c in calls {
        let (status, retry_after, body) = c.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(error_code(&body), "function_waking", "{body}");
        assert!(retry_after.is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n > 0)));
    }
    assert_eq!(wake.calls(), 1);
}

#[tokio::test]
async fn without_a_wake_url_a_function_with_no_pod_fails_as_before() {
    let s = with_function().await;
    let pod_port = free_port();
    let wake = wake_endpoint(Manager::StartsThePod(Duration::ZERO), pod_port).await;
    let router = kube_router(&s, pod_port, None, Duration::from_secs(2)).await;
    let (status, retry_after, body) = call(&router.url, "x".into()).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(error_code(&body), "bad_gateway", "{body}");
    assert_eq!(retry_after, None);
    assert_eq!(wake.calls(), 0, "no wake without SKIFF_K8S_WAKE_URL");
    assert!(
        !router
            .handle
            .metrics()
            .render()
            .contains("skiff_wakes_total")
    );
}
