//! A rolling update in Kubernetes mode, offline: real client runtimes (Deno,
//! `client-runtime/run.sh`, `--listen tcp:[::]:<port> --drain-secs`, as the
//! function Deployment starts them) behind the router's Kubernetes client
//! settings and its replay of unsent requests, under load, while a pod is
//! stopped. No request may fail.
//!
//! Stand-ins for cluster parts, named:
//! - kube-proxy and the Service's DNS name: a resolver that answers the
//!   Service's name with the current endpoints, rotated (a new connection
//!   picks an endpoint; a pooled one stays on its pod, as conntrack keeps it);
//! - the endpoint controller: the stopping pod leaves the endpoint list
//!   `ENDPOINT_LAG` after it got SIGTERM (the worst case: no preStop pause);
//! - the kubelet: starts the container's command, sends SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use skiff_router::body::{ProxyBody, full};
use skiff_router::kubernetes::{UNSENT_RETRIES, pool_idle_timeout};
use skiff_router::runtime::Upstream;
use tokio::process::{Child, Command};

/// The Service's name, without its port: the stand-in resolver gives each
/// endpoint's own port (an explicit port in the URI would replace it).
const SERVICE: &str = "fn-alice-hello-b2cd876d36.skiff-functions.svc";
/// How late the endpoint list drops a pod that got SIGTERM.
const ENDPOINT_LAG: Duration = Duration::from_millis(500);
const WORKERS: usize = 4;

type Endpoints = Arc<Mutex<Vec<SocketAddr>>>;

/// kube-proxy + DNS stand-in: the Service name resolves to the live
/// endpoints, rotated on each lookup.
#[derive(Clone)]
struct ServiceResolver {
    endpoints: Endpoints,
    turn: Arc<AtomicUsize>,
}

impl tower::Service<Name> for ServiceResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _name: Name) -> Self::Future {
        let mut list = self.endpoints.lock().unwrap().clone();
        if !list.is_empty() {
            let n = self.turn.fetch_add(1, Ordering::SeqCst) % list.len();
            list.rotate_left(n);
        }
        Box::pin(async move { Ok(list.into_iter()) })
    }
}

/// The router's upstream in Kubernetes mode, over the stand-in resolver.
struct ServiceUpstream {
    client: Client<HttpConnector<ServiceResolver>, ProxyBody>,
}

impl Upstream for ServiceUpstream {
    fn authority(&self) -> Authority {
        Authority::from_static(SERVICE)
    }
    fn send(&self, req: Request<ProxyBody>) -> ResponseFuture {
        self.client.request(req)
    }
    fn unsent_retries(&self) -> u32 {
        UNSENT_RETRIES
    }
}

pub(crate) struct Pod {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    _dirs: tempfile::TempDir,
}

pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn deno() -> PathBuf {
    std::env::var_os("SKIFF_DENO").map_or_else(|| PathBuf::from("deno"), PathBuf::from)
}

/// The container's command (run.sh with the Deployment's runtime arguments).
pub(crate) async fn start_pod(repo: &Path, drain_secs: u64) -> Pod {
    start_pod_on(repo, drain_secs, free_port()).await
}

/// The same, listening on `port`.
pub(crate) async fn start_pod_on(repo: &Path, drain_secs: u64, port: u16) -> Pod {
    let dirs = tempfile::tempdir().unwrap();
    for d in ["code", "tmp", "deno-dir"] {
        std::fs::create_dir(dirs.path().join(d)).unwrap();
    }
    let module = dirs.path().join("code/fn.js");
    std::fs::write(
        &module,
        "export default async (req) => new Response(await req.text());\n",
    )
    .unwrap();
    let child = Command::new(repo.join("client-runtime/run.sh"))
        .args(["--module", module.to_str().unwrap(), "--listen"])
        .arg(format!("tcp:[::]:{port}"))
        .arg("--drain-secs")
        .arg(drain_secs.to_string())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SKIFF_CODE_DIR", dirs.path().join("code"))
        .env("SKIFF_TMP_DIR", dirs.path().join("tmp"))
        .env("DENO_DIR", dirs.path().join("deno-dir"))
        .env("SKIFF_DENY_NET", "169.254.0.0/16")
        .env("SKIFF_DENO", deno())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The kubelet's readiness: the listener answers (bounded).
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Pod {
                child,
                addr,
                _dirs: dirs,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the runtime did not listen within 30 s");
}

fn post(body: &str) -> (http::request::Parts, ProxyBody) {
    let (parts, ()) = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{SERVICE}/echo"))
        .header("content-length", body.len())
        .body(())
        .unwrap()
        .into_parts();
    (parts, full(body.to_owned()))
}

#[tokio::test]
async fn a_rolling_update_under_load_fails_no_request() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let drain = skiff_core::naming::POD_DRAIN_SECS;
    let old = start_pod(&repo, drain).await;
    let endpoints: Endpoints = Arc::new(Mutex::new(vec![old.addr]));
    let resolver = ServiceResolver {
        endpoints: endpoints.clone(),
        turn: Arc::default(),
    };
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(pool_idle_timeout())
        .build(http);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (client, stop, sent, failures) =
            (client.clone(), stop.clone(), sent.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            let mut up = ServiceUpstream { client };
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let body = format!("w{w}-{i}");
                let (parts, b) = post(&body);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                let answer = tokio::time::timeout_at(
                    deadline,
                    skiff_router::replay::send(&mut up, parts, b, deadline, &mut None),
                )
                .await;
                match answer {
                    Ok(Ok(r)) if r.status() == 200 => {
                        let got = r.into_body().collect().await.map(|b| b.to_bytes());
                        match got {
                            Ok(b) if b == body.as_bytes() => {}
                            other => failures.lock().unwrap().push(format!("{body}: {other:?}")),
                        }
                    }
                    Ok(Ok(r)) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{body}: {}", r.status())),
                    Ok(Err(e)) => failures.lock().unwrap().push(format!("{body}: {e:?}")),
                    Err(_) => failures.lock().unwrap().push(format!("{body}: timed out")),
                }
                sent.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    // The rollout: the new pod comes up and joins the Service...
    let new = start_pod(&repo, drain).await;
    endpoints.lock().unwrap().push(new.addr);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...then the old one gets SIGTERM, and leaves the endpoints late.
    let mut old = old;
    let pid = old.child.id().unwrap();
    let sigterm = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sigterm.success());
    tokio::time::sleep(ENDPOINT_LAG).await;
    endpoints.lock().unwrap().retain(|a| *a != old.addr);
    let exit = tokio::time::timeout(Duration::from_secs(drain + 20), old.child.wait())
        .await
        .expect("the old pod drained and exited within its grace period")
        .unwrap();
    assert_eq!(
        exit.code(),
        Some(0),
        "the old pod exits cleanly after its drain"
    );
    let during = sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(
        sent.load(Ordering::SeqCst) > during && during > WORKERS,
        "calls went on through the rollout"
    );
    drop(new);
}
