//! Starts real instances: the function's code on disk (checked against its
//! sha256), its log, and a sandboxed Deno process (`instance.rs`). Also owns
//! the files: removing a deleted function's, sweeping what is not live.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use skiff_core::layout::Layout;
use skiff_core::logs::LogWriter;
use skiff_core::secrets::SecretsKey;
use skiff_core::store::{InstanceConfig, Store};

use super::driver::Spawner;
use super::instance::{self, Instance, SpawnSpec};
use super::owner_logs::FunctionLogs;
use super::runtime_files::RuntimeFiles;
use super::sandbox::Sandbox;
use super::{files, host_addrs};
use crate::config::{FunctionDefaults, RouterConfig};
use crate::directory::FunctionRef;
use crate::error::StartError;
use crate::metrics::Metrics;
use crate::runtime::BoxFuture;

pub struct DenoSpawner {
    sandbox: Arc<Sandbox>,
    layout: Layout,
    store: Store,
    instances_dir: PathBuf,
    defaults: FunctionDefaults,
    /// Opens the secrets an instance starts with.
    key: SecretsKey,
    deny_net: String,
    runtime_files: RuntimeFiles,
    start_timeout: std::time::Duration,
    logs: Arc<FunctionLogs>,
    metrics: Arc<Metrics>,
    /// The last configuration read per (function, version), still sealed: a
    /// cold start while the database is down uses it (the code is on disk).
    /// Read from the database first, since a version's secret values can
    /// change (a rollback restores names with their current values). Memory
    /// only: secrets never reach the disk.
    configs: Mutex<HashMap<(i64, i64), Arc<InstanceConfig>>>,
    next_id: AtomicU64,
}

impl DenoSpawner {
    pub async fn new(
        cfg: &RouterConfig,
        store: Store,
        deno: PathBuf,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let key = cfg.secrets_key.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "SKIFF_SECRETS_KEY is required with the process runtime (the key the manager seals secrets with)"
            )
        })?;
        // A wrong key would only show when a function with secrets starts:
        // refuse to run instead (the error names the key's fingerprint only).
        store
            .check_secrets_key(&key, false)
            .await
            .map_err(|e| anyhow::anyhow!("SKIFF_SECRETS_KEY: {e}"))?;
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
        Ok(Self {
            sandbox,
            layout: Layout::new(&cfg.data_dir),
            store,
            instances_dir,
            defaults: cfg.function_defaults(),
            key,
            deny_net,
            runtime_files,
            start_timeout: cfg.start_timeout,
            logs: Arc::new(FunctionLogs::new(Layout::new(&cfg.data_dir))),
            metrics,
            configs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(first_id),
        })
    }

    fn log_for(&self, function_id: i64) -> Arc<LogWriter> {
        self.logs.writer(function_id)
    }

    /// The owners' logs (shared with the access log).
    pub fn logs(&self) -> Arc<FunctionLogs> {
        self.logs.clone()
    }

    async fn start(&self, f: &Arc<FunctionRef>) -> Result<Arc<Instance>, StartError> {
        let gid = self.sandbox.ids_for(f.function_id).map(|(_, g)| g);
        let code_dir = files::ensure_code(&self.layout, &self.store, f, gid)
            .await
            .map_err(|e| StartError::Host(format!("{e:#}")))?
            .ok_or(StartError::Gone)?;
        // The version's env and secrets, read with its code on a cold start
        // (never on a warm request's path).
        let config = self.instance_config(f).await?;
        let mut env = config
            .open(&self.key, f.function_id)
            .map_err(StartError::Host)?;
        // The manager checks names; a row written by other means must not
        // widen the --allow-env list (a comma) or name a reserved variable.
        env.retain(|(name, _)| {
            let ok = skiff_core::fnconfig::check_env_name(name).is_ok();
            if !ok {
                tracing::warn!(
                    function_id = f.function_id,
                    version = f.version,
                    "a stored env name breaks the name rules; not given to the function"
                );
            }
            ok
        });
        let settings = self.defaults.effective(&f.settings);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let spec = SpawnSpec {
            sandbox: &self.sandbox,
            instances_dir: &self.instances_dir,
            heap_mb: settings.heap_mb,
            memory_mb: settings.memory_mb,
            deny_net: &self.deny_net,
            runtime: &self.runtime_files,
            start_timeout: self.start_timeout,
            log: self.log_for(f.function_id),
        };
        let started = Instant::now();
        let inst = instance::spawn(&spec, f.clone(), id, &code_dir, env).await?;
        tracing::debug!(user = %f.user, function = %f.name, version = f.version, instance = id,
            ms = started.elapsed().as_secs_f64() * 1e3, "instance ready");
        Ok(inst)
    }

    /// `f`'s version's configuration, from the database or (when it cannot be
    /// reached) as last read.
    async fn instance_config(&self, f: &FunctionRef) -> Result<Arc<InstanceConfig>, StartError> {
        let key = (f.function_id, f.version);
        match self.store.instance_config(f.function_id, f.version).await {
            Ok(Some(c)) => {
                let c = Arc::new(c);
                let mut configs = self.configs.lock().unwrap_or_else(|p| p.into_inner());
                configs.retain(|(fid, _), _| *fid != f.function_id);
                configs.insert(key, c.clone());
                Ok(c)
            }
            Ok(None) => Err(StartError::Gone),
            Err(e) => self
                .configs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned()
                .ok_or_else(|| StartError::Host(format!("reading the configuration: {e}"))),
        }
    }

    /// Removes the code and logs of functions that are not live (deleted while
    /// this router was down), before anything is served.
    pub async fn sweep_not_live(&self, live: HashSet<i64>) {
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

    pub fn drop_spare_cgroups(&self) {
        self.sandbox.drop_spare_cgroups();
    }
}

impl Spawner for DenoSpawner {
    type Instance = Instance;

    fn spawn(&self, f: Arc<FunctionRef>) -> BoxFuture<'_, Result<Arc<Instance>, StartError>> {
        Box::pin(async move {
            let result = self.start(&f).await;
            if let Err(e) = &result
                && *e != StartError::Gone
            {
                tracing::warn!(user = %f.user, function = %f.name, version = f.version, error = %e, "start failed");
                if self.metrics.enabled() {
                    self.metrics
                        .function(f.function_id, f.user.as_str(), f.name.as_str())
                        .start_failed();
                }
                let _ = self.log_for(f.function_id).line(
                    "skiff",
                    &format!("version {} could not start: {e}", f.version),
                );
            }
            result
        })
    }

    fn remove_function(&self, function_id: i64) -> BoxFuture<'_, ()> {
        self.logs.forget(function_id);
        self.configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(fid, _), _| *fid != function_id);
        let layout = self.layout.clone();
        Box::pin(async move {
            let _ = tokio::task::spawn_blocking(move || {
                files::remove_function(&layout, function_id);
            })
            .await;
        })
    }
}
