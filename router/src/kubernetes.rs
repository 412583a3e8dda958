//! The Kubernetes runtime: a function's instances are the pods behind its
//! Service, which the manager creates; the router only sends requests there.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http::uri::Authority;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;

use crate::body::ProxyBody;
use crate::directory::FunctionRef;
use crate::error::RouterError;
use crate::runtime::{BoxFuture, Runtime, Upstream};

pub struct KubernetesRuntime {
    client: Client<HttpConnector, ProxyBody>,
    namespace: String,
}

impl KubernetesRuntime {
    pub fn new(namespace: String) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(http),
            namespace,
        }
    }
}

struct ServiceUpstream {
    client: Client<HttpConnector, ProxyBody>,
    authority: Authority,
}

impl Upstream for ServiceUpstream {
    fn authority(&self) -> Authority {
        self.authority.clone()
    }

    fn send(&self, req: Request<ProxyBody>) -> ResponseFuture {
        self.client.request(req)
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
