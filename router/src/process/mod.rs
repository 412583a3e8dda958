//! The process runtime: sandboxed Deno processes on this machine, started on a
//! function's first request, stopped when idle, replaced after a crash, and
//! switched to a new version by starting the new instance before draining the
//! old. Each function's instance life is one state machine (`machine.rs`) run
//! by `driver.rs`; `spawner.rs` is what starts real instances.
//!
//! Per-function settings (issue #13), each the operator's default unless the
//! live version sets it: the request timeout and concurrency apply on the
//! request path (`proxy.rs`, `limits.rs`); here, the idle timeout, the memory
//! cgroup limit and V8 heap (a function's own `memory_mb` gets half of it as
//! heap, at least 32 MiB), and `min_instances` (≥ 1: started as soon as the
//! version is live, restarted if it exits, never stopped for idleness).
//! `max_instances` is honoured as an upper bound only: this runtime runs one
//! instance per function version (scaling out is issue #17); the Kubernetes
//! runtime enforces it with the HPA. Each user may run `SKIFF_QUOTA_INSTANCES`
//! instances (or their own limit, `user_limits.rs`): at the quota, a start
//! stops the user's least recently used idle instance, or is refused with
//! `403 quota_exceeded` when none is idle (that start then fails fast for the
//! one-second start back-off, like any failed start).

mod command;
pub mod driver;
mod files;
pub mod host_addrs;
pub mod instance;
pub mod machine;
mod owner_logs;
mod runtime_files;
pub mod sandbox;
mod spawner;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http::uri::Authority;
use hyper_util::client::legacy::{Error as ClientError, ResponseFuture};
use skiff_core::store::Store;

use crate::access_log::OwnerLogs;
use crate::body::ProxyBody;
use crate::config::RouterConfig;
use crate::directory::{FunctionRef, Update};
use crate::error::RouterError;
use crate::metrics::{InstanceCounts, Metrics};
use crate::runtime::{BoxFuture, Runtime, Upstream};
use crate::tunnel::GoingAway;
use crate::user_limits::UserLimitsTable;
use driver::{Functions, Settings};
pub use instance::{Instance, Lease};
use spawner::DenoSpawner;

pub struct ProcessRuntime {
    functions: Arc<Functions<DenoSpawner>>,
    reap_interval: Duration,
}

impl ProcessRuntime {
    pub async fn new(
        cfg: &RouterConfig,
        store: Store,
        deno: std::path::PathBuf,
        user_limits: Arc<UserLimitsTable>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let spawner = DenoSpawner::new(cfg, store, deno, metrics).await?;
        let functions = Functions::new(
            spawner,
            Settings {
                defaults: cfg.function_defaults(),
                user_limits,
                // At least this; longer for a function with a longer timeout.
                drain_grace: cfg.request_timeout + Duration::from_secs(5),
                // In-flight requests of a deleted function finish, but briefly.
                delete_grace: Duration::from_secs(2),
                start_wait: cfg.start_timeout + Duration::from_secs(5),
            },
        );
        Ok(Arc::new(Self {
            functions,
            // A function may set an idle timeout shorter than the default.
            reap_interval: (cfg.idle_timeout / 4)
                .clamp(Duration::from_millis(50), Duration::from_millis(500)),
        }))
    }

    /// Running instances (for tests, operators and shutdown).
    pub fn running(&self) -> Vec<Arc<Instance>> {
        self.functions.running()
    }
}

/// One request's lease on a process instance.
struct ProcessUpstream {
    lease: Lease,
    functions: Arc<Functions<DenoSpawner>>,
    /// How long this request waited for the instance to start.
    cold: Option<Duration>,
}

impl Upstream for ProcessUpstream {
    fn authority(&self) -> Authority {
        // A Unix socket ignores it; the pool keys on it.
        Authority::from_static("function")
    }

    fn send(&self, req: Request<ProxyBody>) -> ResponseFuture {
        self.lease.instance.client.request(req)
    }

    fn timed_out(&self) {
        let instance = self.lease.instance.clone();
        let functions = self.functions.clone();
        tokio::spawn(async move {
            if !instance.responsive().await {
                functions.unresponsive(instance.function.function_id, instance.id);
            }
        });
    }

    fn failed<'a>(&'a self, e: &'a ClientError) -> BoxFuture<'a, ()> {
        Box::pin(self.lease.instance.after_error(e.is_connect()))
    }

    fn going_away(&self) -> Option<GoingAway> {
        Some(self.lease.instance.going_away())
    }

    fn cold_start(&self) -> Option<Duration> {
        self.cold
    }
}

impl Runtime for ProcessRuntime {
    fn upstream<'a>(
        &'a self,
        f: &'a Arc<FunctionRef>,
    ) -> BoxFuture<'a, Result<Box<dyn Upstream>, RouterError>> {
        Box::pin(async move {
            let (lease, cold) = self.functions.acquire_timed(f, Instance::lease).await?;
            let up: Box<dyn Upstream> = Box::new(ProcessUpstream {
                lease,
                functions: self.functions.clone(),
                cold,
            });
            Ok(up)
        })
    }

    fn apply(&self, update: &Update) {
        self.functions.apply(update);
    }

    fn maintenance_interval(&self) -> Option<Duration> {
        Some(self.reap_interval)
    }

    fn maintain(&self) {
        self.functions.reap_idle();
    }

    fn sweep<'a>(&'a self, live: HashSet<i64>) -> BoxFuture<'a, ()> {
        Box::pin(self.functions.spawner().sweep_not_live(live))
    }

    fn owner_logs(&self) -> Option<Arc<dyn OwnerLogs>> {
        Some(self.functions.spawner().logs())
    }

    fn instance_counts(&self) -> Option<InstanceCounts> {
        let (starting, ready, draining) = self.functions.instance_counts();
        Some(InstanceCounts {
            starting,
            ready,
            draining,
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.functions.shutdown().await;
            self.functions.spawner().drop_spare_cgroups();
        })
    }
}
