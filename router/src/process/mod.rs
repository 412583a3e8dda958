//! The process runtime: sandboxed Deno processes on this machine, started on a
//! function's first request, stopped when idle, replaced after a crash, and
//! switched to a new version by starting the new instance before draining the old.

mod command;
mod files;
pub mod host_addrs;
pub mod instance;
mod runtime_files;
pub mod sandbox;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_core::layout::Layout;
use skiff_core::logs::{DEFAULT_MAX_BYTES, LogWriter};
use skiff_core::store::Store;

use crate::config::RouterConfig;
use crate::directory::{FunctionRef, Update};
use instance::SpawnSpec;
pub use instance::{Instance, Lease, StartError};
use runtime_files::RuntimeFiles;
use sandbox::Sandbox;

/// After a failed start, requests for that version fail fast for this long
/// instead of each spawning a process that will fail the same way.
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Slot {
    /// Leases are taken under this lock, and the instance is swapped under it,
    /// so a drained instance never gains a request after the swap.
    current: Mutex<Option<Arc<Instance>>>,
    /// Serialises starts: concurrent first requests share one cold start.
    starting: tokio::sync::Mutex<()>,
    failure: Mutex<Option<(i64, Instant, StartError)>>,
}

impl Slot {
    fn try_lease(&self, version: i64) -> Option<Lease> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match cur.as_ref() {
            // A newer version than the caller saw is fine: it is what is live now.
            Some(i) if i.alive() && i.function.version >= version => Some(i.lease()),
            _ => None,
        }
    }

    /// Installs `new` and leases it; returns the instance it replaced.
    fn install(&self, new: Arc<Instance>) -> (Lease, Option<Arc<Instance>>) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let lease = new.lease();
        let old = cur.replace(new);
        (lease, old)
    }

    fn recent_failure(&self, version: i64) -> Option<StartError> {
        let f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match f.as_ref() {
            Some((v, at, e)) if *v == version && at.elapsed() < FAILURE_BACKOFF => Some(e.clone()),
            _ => None,
        }
    }
}

pub struct ProcessRuntime {
    sandbox: Arc<Sandbox>,
    layout: Layout,
    store: Store,
    instances_dir: PathBuf,
    heap_mb: u32,
    deny_net: String,
    runtime_files: RuntimeFiles,
    start_timeout: Duration,
    idle_timeout: Duration,
    drain_grace: Duration,
    slots: Mutex<HashMap<i64, Arc<Slot>>>,
    /// Functions deleted while this router ran (ids are never reused): a request
    /// that raced the delete must not start them again.
    deleted: Mutex<std::collections::HashSet<i64>>,
    logs: Mutex<HashMap<i64, Arc<LogWriter>>>,
    next_id: AtomicU64,
}

impl ProcessRuntime {
    pub async fn new(cfg: &RouterConfig, store: Store, deno: PathBuf) -> anyhow::Result<Arc<Self>> {
        let sandbox = Arc::new(Sandbox::detect(cfg, deno)?);
        {
            let s = sandbox.clone();
            tokio::task::spawn_blocking(move || s.refill_cgroups());
        }
        let instances_dir = instance::instances_dir(&cfg.data_dir)?;
        // Unix socket paths are limited to 108 bytes.
        let longest = instances_dir.join("18446744073709551615").join("s");
        if longest.as_os_str().len() > 100 {
            anyhow::bail!(
                "SKIFF_DATA_DIR is too long for instance sockets ({}): use a shorter path",
                instances_dir.display()
            );
        }
        // Leftovers of an earlier run (its processes are gone).
        if let Ok(entries) = std::fs::read_dir(&instances_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        // Instance ids only need to be unique among this router's instances;
        // starting from the clock keeps them unique across restarts too.
        let first_id = u64::try_from(skiff_core::time::now_millis()).unwrap_or(1) * 1000;
        let deny_net = host_addrs::with_host_addresses(&cfg.deny_net);
        tracing::info!(deny_net = %deny_net, "functions may not reach these hosts");
        let mut runtime_files = RuntimeFiles::install(&cfg.data_dir)?;
        runtime_files
            .warm(&sandbox.deno, cfg.heap_mb, &deny_net)
            .await;
        Ok(Arc::new(Self {
            sandbox,
            layout: Layout::new(&cfg.data_dir),
            store,
            instances_dir,
            heap_mb: cfg.heap_mb,
            deny_net,
            runtime_files,
            start_timeout: cfg.start_timeout,
            idle_timeout: cfg.idle_timeout,
            drain_grace: cfg.request_timeout + Duration::from_secs(5),
            slots: Mutex::new(HashMap::new()),
            deleted: Mutex::new(std::collections::HashSet::new()),
            logs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(first_id),
        }))
    }

    fn slot(&self, function_id: i64) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(function_id).or_default().clone()
    }

    fn log_for(&self, f: &FunctionRef) -> Arc<LogWriter> {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.entry(f.function_id)
            .or_insert_with(|| {
                Arc::new(LogWriter::new(
                    &self.layout,
                    f.function_id,
                    DEFAULT_MAX_BYTES,
                ))
            })
            .clone()
    }

    /// A lease on a ready instance of `f`'s live version, starting one if needed.
    fn forget_slot(&self, function_id: i64) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&function_id);
    }

    fn is_deleted(&self, function_id: i64) -> bool {
        self.deleted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&function_id)
    }

    pub async fn acquire(self: &Arc<Self>, f: &Arc<FunctionRef>) -> Result<Lease, StartError> {
        if self.is_deleted(f.function_id) {
            return Err(StartError::Gone);
        }
        let slot = self.slot(f.function_id);
        if let Some(l) = slot.try_lease(f.version) {
            return Ok(l);
        }
        let _starting = slot.starting.lock().await;
        if let Some(l) = slot.try_lease(f.version) {
            return Ok(l);
        }
        if let Some(e) = slot.recent_failure(f.version) {
            return Err(e);
        }
        if self.is_deleted(f.function_id) {
            return Err(StartError::Gone);
        }
        match self.start(f).await {
            Ok(new) if self.is_deleted(f.function_id) => {
                // Deleted while it was starting.
                new.kill();
                self.forget_slot(f.function_id);
                Err(StartError::Gone)
            }
            Ok(new) => {
                let (lease, old) = slot.install(new);
                if let Some(old) = old {
                    self.retire(old);
                }
                // Code of earlier versions is no longer served (an instance still
                // draining has its module loaded already).
                files::remove_old_versions(&self.layout, f.function_id, &[f.version]);
                Ok(lease)
            }
            Err(StartError::Gone) => Err(StartError::Gone),
            Err(_) if self.is_deleted(f.function_id) => {
                self.forget_slot(f.function_id);
                Err(StartError::Gone)
            }
            Err(e) => {
                tracing::warn!(user = %f.user, function = %f.name, version = f.version, error = %e, "start failed");
                let log = self.log_for(f);
                let _ = log.line(
                    "skiff",
                    &format!("version {} could not start: {e}", f.version),
                );
                *slot.failure.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((f.version, Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    async fn start(&self, f: &Arc<FunctionRef>) -> Result<Arc<Instance>, StartError> {
        let gid = self.sandbox.ids_for(f.function_id).map(|(_, g)| g);
        let code_dir = files::ensure_code(&self.layout, &self.store, f, gid)
            .await
            .map_err(|e| StartError::Host(format!("{e:#}")))?
            .ok_or(StartError::Gone)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let spec = SpawnSpec {
            sandbox: &self.sandbox,
            instances_dir: &self.instances_dir,
            heap_mb: self.heap_mb,
            deny_net: &self.deny_net,
            runtime: &self.runtime_files,
            start_timeout: self.start_timeout,
            log: self.log_for(f),
        };
        let started = Instant::now();
        let inst = instance::spawn(&spec, f.clone(), id, &code_dir).await?;
        tracing::debug!(user = %f.user, function = %f.name, version = f.version, instance = id,
            ms = started.elapsed().as_secs_f64() * 1e3, "instance ready");
        Ok(inst)
    }

    /// Drains and stops a replaced instance.
    fn retire(self: &Arc<Self>, old: Arc<Instance>) {
        let grace = self.drain_grace;
        tokio::spawn(async move { old.drain_and_stop(grace).await });
    }

    /// Acts on a directory change: pre-start a redeployed function that is
    /// running (start new, then drain old), stop and remove a deleted one.
    pub fn apply(self: &Arc<Self>, update: Update) {
        match update {
            Update::Live(f) => {
                let running = {
                    let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
                    slots.get(&f.function_id).is_some_and(|s| {
                        s.current
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .as_ref()
                            .is_some_and(|i| i.alive() && i.function.version < f.version)
                    })
                };
                if running {
                    let this = self.clone();
                    tokio::spawn(async move {
                        let _ = this.acquire(&f).await;
                    });
                }
            }
            Update::Gone { function_id, .. } => {
                self.deleted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(function_id);
                let slot = self
                    .slots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&function_id);
                self.logs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&function_id);
                let old =
                    slot.and_then(|s| s.current.lock().unwrap_or_else(|p| p.into_inner()).take());
                let layout = self.layout.clone();
                tokio::spawn(async move {
                    if let Some(old) = old {
                        // In-flight requests finish, but briefly: the function is gone.
                        old.drain_and_stop(Duration::from_secs(2)).await;
                    }
                    files::remove_function(&layout, function_id);
                });
            }
        }
    }

    /// Removes the code and logs of functions that are not live (deleted while
    /// this router was down), before anything is served.
    pub async fn sweep_not_live(&self, live: std::collections::HashSet<i64>) {
        let layout = self.layout.clone();
        let removed = tokio::task::spawn_blocking(move || files::sweep_not_live(&layout, &live))
            .await
            .unwrap_or(0);
        if removed > 0 {
            tracing::info!(
                removed,
                "removed the files of functions that are no longer live"
            );
        }
    }

    /// Stops instances idle for longer than the idle timeout.
    pub fn reap_idle(&self) {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for slot in slots {
            let mut cur = slot.current.lock().unwrap_or_else(|p| p.into_inner());
            let idle = cur.as_ref().is_some_and(|i| {
                !i.alive() || (i.in_flight() == 0 && i.idle_for() >= self.idle_timeout)
            });
            if idle && let Some(i) = cur.take() {
                if i.alive() {
                    tracing::debug!(instance = i.id, function = %i.function.name, "stopping idle instance");
                }
                i.kill();
            }
        }
    }

    pub fn reap_interval(&self) -> Duration {
        (self.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// Running instances (for tests, metrics and shutdown).
    pub fn running(&self) -> Vec<Arc<Instance>> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|s| s.current.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .filter(|i| i.alive())
            .collect()
    }

    /// Stops every instance and waits for them to exit.
    pub async fn shutdown(&self) {
        let all: Vec<Arc<Instance>> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .filter_map(|(_, s)| s.current.lock().unwrap_or_else(|p| p.into_inner()).take())
            .collect();
        for i in &all {
            i.kill();
        }
        for i in all {
            let _ = tokio::time::timeout(Duration::from_secs(5), i.wait_exit()).await;
        }
        self.sandbox.drop_spare_cgroups();
    }
}
