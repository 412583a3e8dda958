//! The Kubernetes runtime: a function's instances are the pods behind its
//! Service, which the manager creates; the router only sends requests there.
//! A function scaled to zero is woken through the manager (`wake.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::body::{BoxError, ProxyBody};
use crate::directory::FunctionRef;
use crate::error::RouterError;
use crate::runtime::{BoxFuture, Runtime, Upstream, Wake};
use crate::wake::Wakes;

pub struct KubernetesRuntime {
    client: Client<ServiceConnector, ProxyBody>,
    namespace: String,
    /// Set with `SKIFF_K8S_WAKE_URL`: functions at zero are woken.
    wakes: Option<Arc<Wakes>>,
}

/// Connects to a Service by its name, as kube-proxy and the cluster DNS
/// make it reachable; or, in tests without a cluster, every Service to one
/// address (`RouterConfig::k8s_connect_to`, like curl's `--connect-to`).
#[derive(Clone)]
pub struct ServiceConnector {
    http: HttpConnector,
    connect_to: Option<SocketAddr>,
}

impl tower::Service<Uri> for ServiceConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let dst = match self.connect_to {
            Some(addr) => match Uri::try_from(format!("http://{addr}")) {
                Ok(u) => u,
                Err(e) => return Box::pin(async move { Err(e.into()) }),
            },
            None => dst,
        };
        let connecting = self.http.call(dst);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

/// A refused connection goes to the Service again, where kube-proxy picks
/// an endpoint anew: a stopping pod's listener, or an endpoint list
/// changing, costs a retry instead of a 502.
pub const UNSENT_RETRIES: u32 = 3;

/// An idle pooled connection is dropped before a draining pod would close
/// it: a pod drains `POD_DRAIN_SECS` after SIGTERM, answering each request
/// with `connection: close`, so a connection used during the drain closes
/// with its answer and one idle through it has expired here. Without this a
/// request could be written to a connection the pod is closing at that very
/// moment, which is neither refused nor safe to send again.
pub fn pool_idle_timeout() -> Duration {
    Duration::from_secs(skiff_core::naming::POD_DRAIN_SECS.saturating_sub(1).max(1))
}

impl KubernetesRuntime {
    /// `wakes`: how functions at zero are woken (`None`: they are not).
    /// `connect_to`: tests only (see [`ServiceConnector`]).
    pub fn new(
        namespace: String,
        wakes: Option<Arc<Wakes>>,
        connect_to: Option<SocketAddr>,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(pool_idle_timeout())
                .build(ServiceConnector { http, connect_to }),
            namespace,
            wakes,
        }
    }
}

struct ServiceUpstream {
    client: Client<ServiceConnector, ProxyBody>,
    authority: Authority,
    function: Arc<FunctionRef>,
    wakes: Option<Arc<Wakes>>,
}

impl Upstream for ServiceUpstream {
    fn authority(&self) -> Authority {
        self.authority.clone()
    }

    fn send(&self, req: Request<ProxyBody>) -> ResponseFuture {
        self.client.request(req)
    }

    fn unsent_retries(&self) -> u32 {
        UNSENT_RETRIES
    }

    fn wake(&self) -> Option<Wake> {
        let wakes = self.wakes.clone()?;
        let f = self.function.clone();
        Some(Wake {
            wait: wakes.wait(),
            call: Box::pin(async move { wakes.wake(f.user.as_str(), f.name.as_str()).await }),
        })
    }
}

impl Runtime for KubernetesRuntime {
    fn upstream<'a>(
        &'a self,
        f: &'a Arc<FunctionRef>,
    ) -> BoxFuture<'a, Result<Box<dyn Upstream>, RouterError>> {
        Box::pin(async move {
            let up: Box<dyn Upstream> = Box::new(ServiceUpstream {
                client: self.client.clone(),
                authority: service_authority(&self.namespace, f)?,
                function: f.clone(),
                wakes: self.wakes.clone(),
            });
            Ok(up)
        })
    }
}

/// The function's Service, named by the one module that owns Kubernetes names.
pub fn service_authority(namespace: &str, f: &FunctionRef) -> Result<Authority, RouterError> {
    Authority::try_from(skiff_core::naming::service_authority(
        namespace,
        f.user.as_str(),
        f.name.as_str(),
    ))
    .map_err(|_| RouterError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_expires_before_a_draining_pod_closes_it() {
        let drain = Duration::from_secs(skiff_core::naming::POD_DRAIN_SECS);
        assert!(pool_idle_timeout() < drain);
        assert!(!pool_idle_timeout().is_zero());
    }

    #[test]
    fn the_upstream_is_the_managers_service_name() {
        let f = FunctionRef {
            user: skiff_core::names::UserName::parse("alice").unwrap(),
            name: skiff_core::names::FunctionName::parse("hello").unwrap(),
            function_id: 1,
            version: 1,
            sha256: String::new(),
            bundled: true,
            settings: Default::default(),
            generation: 1,
            metrics: Default::default(),
        };
        let authority = service_authority("skiff-functions", &f).map(|a| a.to_string());
        let service = skiff_core::naming::object_name("alice", "hello");
        assert_eq!(
            authority.ok(),
            Some(format!(
                "{service}.skiff-functions.svc:{}",
                skiff_core::naming::SERVICE_PORT
            ))
        );
    }
}
