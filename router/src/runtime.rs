//! Where a function's instances are, as the proxy sees it: a `Runtime` yields
//! an `Upstream` for one request, and learns of directory changes. The process
//! runtime (sandboxed Deno processes on this machine) and the Kubernetes
//! runtime (the function's Service) implement it; tests implement it with a
//! fake upstream. The proxy never knows which one it talks to.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http::uri::Authority;
use hyper_util::client::legacy::{Error as ClientError, ResponseFuture};

use crate::access_log::OwnerLogs;
use crate::body::ProxyBody;
use crate::directory::{FunctionRef, Update};
use crate::error::RouterError;
use crate::metrics::{InstanceCounts, WakeOutcome};
use crate::tunnel::GoingAway;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Runtime: Send + Sync + 'static {
    /// An upstream for one request to `f`, starting an instance if needed.
    fn upstream<'a>(
        &'a self,
        f: &'a Arc<FunctionRef>,
    ) -> BoxFuture<'a, Result<Box<dyn Upstream>, RouterError>>;

    /// A directory change: a redeploy (pre-start), a delete (stop, clean up).
    fn apply(&self, _update: &Update) {}

    /// How often `maintain` should run, if the runtime has periodic work.
    fn maintenance_interval(&self) -> Option<Duration> {
        None
    }

    /// Periodic work (stopping idle instances).
    fn maintain(&self) {}

    /// Removes what belongs to no live function (at start, before serving).
    fn sweep<'a>(&'a self, _live: std::collections::HashSet<i64>) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Stops everything, at the router's shutdown.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// The owners' logs the access log writes to, if this runtime keeps them
    /// (in Kubernetes, functions' logs are their pods').
    fn owner_logs(&self) -> Option<Arc<dyn OwnerLogs>> {
        None
    }

    /// Instances by state, if this runtime runs them itself.
    fn instance_counts(&self) -> Option<InstanceCounts> {
        None
    }
}

/// One request's hold on an instance. While it lives (until the response's
/// last byte is sent), the instance is not drained from under the request.
pub trait Upstream: Send + 'static {
    /// The authority of the upstream URI (what a connection pool keys on).
    fn authority(&self) -> Authority;

    fn send(&self, req: Request<ProxyBody>) -> ResponseFuture;

    /// How many times a request that never reached the function (no
    /// connection made, body unread) is sent again (`replay.rs`). A runtime
    /// whose next attempt may reach another instance says more than 0.
    fn unsent_retries(&self) -> u32 {
        0
    }

    /// The instance did not answer in time (it may be stuck).
    fn timed_out(&self) {}

    /// The exchange failed before a response; `e` says how.
    fn failed<'a>(&'a self, _e: &'a ClientError) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Says when the instance goes away (drained, deleted), so an upgraded
    /// connection held on it is closed cleanly first; `None`: it cannot tell.
    fn going_away(&self) -> Option<GoingAway> {
        None
    }

    /// How long this request waited for its instance to start (a cold
    /// start); `None` when one was serving.
    fn cold_start(&self) -> Option<Duration> {
        None
    }

    /// Wakes the function when no connection to it could be made at all,
    /// its retries spent (it may be scaled to zero; `wake.rs`). `None`:
    /// this runtime has nothing to wake.
    fn wake(&self) -> Option<Wake> {
        None
    }
}

/// A wake of the function behind an upstream, as a request waits on it.
pub struct Wake {
    /// Resolves once the function is up or on its way up (`Ok`), or the
    /// wake failed (the manager's answer).
    pub call: BoxFuture<'static, Result<(), WakeOutcome>>,
    /// How long the request is held for the woken function (bounded by its
    /// own timeout).
    pub wait: Duration,
}
