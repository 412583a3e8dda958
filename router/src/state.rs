//! What the request path shares: the function directory, the per-function
//! concurrency limits and the backend that yields an upstream for a function.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::Authority;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::directory::{Directory, FunctionRef};
use crate::error::RouterError;
use crate::process::{Lease, ProcessRuntime, StartError};
use crate::proxy::ProxyBody;

/// Where a function's instances are.
pub enum Backend {
    Process(Arc<ProcessRuntime>),
    /// Kubernetes: the function's Service, reached over the cluster network.
    Kubernetes {
        client: Client<HttpConnector, ProxyBody>,
        namespace: String,
    },
}

/// An instance to send one request to.
pub enum Upstream {
    Process {
        lease: Lease,
    },
    Tcp {
        client: Client<HttpConnector, ProxyBody>,
        authority: Authority,
    },
}

impl Upstream {
    /// Authority of the upstream URI (a Unix socket ignores it; the pool keys on it).
    pub fn authority(&self) -> Authority {
        match self {
            Self::Process { .. } => Authority::from_static("function"),
            Self::Tcp { authority, .. } => authority.clone(),
        }
    }
}

/// Per-function in-flight limits: up to `max` requests run, the rest wait up to
/// `wait` for a slot and then get 429.
pub struct Limits {
    max: usize,
    wait: Duration,
    by_function: Mutex<HashMap<i64, Arc<Semaphore>>>,
}

impl Limits {
    pub fn new(max: usize, wait: Duration) -> Self {
        Self {
            max,
            wait,
            by_function: Mutex::new(HashMap::new()),
        }
    }

    pub async fn acquire(&self, function_id: i64) -> Result<OwnedSemaphorePermit, RouterError> {
        let sem = {
            let mut m = self.by_function.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(function_id)
                .or_insert_with(|| Arc::new(Semaphore::new(self.max)))
                .clone()
        };
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(p);
        }
        match tokio::time::timeout(self.wait, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(RouterError::Busy),
        }
    }

    pub fn forget(&self, function_id: i64) {
        self.by_function
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&function_id);
    }
}

pub struct RouterState {
    pub directory: Arc<Directory>,
    pub limits: Limits,
    pub backend: Backend,
    pub request_timeout: Duration,
    pub max_body_bytes: u64,
}

impl RouterState {
    pub async fn upstream(&self, f: &Arc<FunctionRef>) -> Result<Upstream, RouterError> {
        match &self.backend {
            Backend::Process(rt) => match rt.acquire(f).await {
                Ok(lease) => Ok(Upstream::Process { lease }),
                Err(StartError::Gone) => Err(RouterError::NotFound),
                Err(e) => Err(RouterError::StartFailed(e)),
            },
            Backend::Kubernetes { client, namespace } => Ok(Upstream::Tcp {
                client: client.clone(),
                authority: k8s_authority(namespace, f)?,
            }),
        }
    }
}

/// The function's Service, named by the one module that owns Kubernetes names.
pub fn k8s_authority(namespace: &str, f: &FunctionRef) -> Result<Authority, RouterError> {
    Authority::try_from(skiff_core::naming::service_authority(
        namespace, &f.user, &f.name,
    ))
    .map_err(|_| RouterError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_upstream_is_the_managers_service_name() {
        let f = FunctionRef {
            user: "alice".into(),
            name: "hello".into(),
            function_id: 1,
            version: 1,
            sha256: String::new(),
        };
        let authority = k8s_authority("skiff-functions", &f).map(|a| a.to_string());
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
