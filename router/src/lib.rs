//! The Skiff router: the public data plane (see README.md, "Router").

// Layers, lowest first; each imports only from those above it in this list:
// body, metrics → error, ws_frame, access_log → tunnel → user_limits → directory → runtime (trait)
// → wake → process, kubernetes (its implementations), replay → limits, user_rate, state → proxy → server,
// stats_flush → this file.
pub mod access_log;
pub mod body;
mod client_body;
pub mod config;
pub mod console_cors;
pub mod directory;
pub mod error;
pub mod forwarding;
pub mod kubernetes;
pub mod limits;
pub mod metrics;
pub mod private_listener;
pub mod process;
pub mod proxy;
pub mod replay;
pub mod runtime;
pub mod server;
pub mod state;
pub mod stats_flush;
pub mod tunnel;
mod uds;
pub mod user_limits;
pub mod user_rate;
pub mod wake;
pub mod ws_frame;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use skiff_core::store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use access_log::AccessLog;
use config::{RouterConfig, RuntimeKind};
use directory::{Directory, Syncer};
use kubernetes::KubernetesRuntime;
use metrics::Metrics;
use process::ProcessRuntime;
use runtime::Runtime;
use server::stopped;
use state::RouterState;
use stats_flush::StatsFlusher;
use user_limits::UserLimitsTable;

type SyncRequest = tokio::sync::oneshot::Sender<()>;

pub struct RouterApp {
    sync_rx: tokio::sync::mpsc::Receiver<SyncRequest>,
    sync_tx: tokio::sync::mpsc::Sender<SyncRequest>,
    listener: TcpListener,
    port: u16,
    state: Arc<RouterState>,
    syncer: Syncer,
    poll_interval: Duration,
    grace: Duration,
    stop_tx: watch::Sender<bool>,
    process: Option<Arc<ProcessRuntime>>,
    /// The metrics listener, if there is one (`SKIFF_METRICS_LISTEN`).
    metrics_listener: Option<TcpListener>,
    stats: StatsFlusher,
}

/// Stops a running router from elsewhere (signal handlers, tests).
#[derive(Clone)]
pub struct RouterHandle {
    stop_tx: watch::Sender<bool>,
    sync_tx: tokio::sync::mpsc::Sender<SyncRequest>,
    pub state: Arc<RouterState>,
    process: Option<Arc<ProcessRuntime>>,
}

impl RouterHandle {
    /// Polls the change feed now and returns once the directory has applied it
    /// (used when the manager runs in the same process, as in `skiff dev`).
    pub async fn sync_now(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.sync_tx.send(tx).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub fn stop(&self) {
        let _ = self.stop_tx.send(true);
    }

    pub fn process_runtime(&self) -> Option<&Arc<ProcessRuntime>> {
        self.process.as_ref()
    }

    /// What this router counts (e.g. to serve it beside other metrics).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.state.metrics
    }
}

impl RouterApp {
    /// Binds the listener and loads the function directory. `store` is only used
    /// off the request path: by the directory syncer and for code on cold starts.
    pub async fn build(cfg: RouterConfig, store: Store) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let port = listener.local_addr()?.port();
        // Its own listener, never the public one: the metrics name every
        // tenant's functions.
        let metrics_listener = match cfg.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics listener {addr}"))?,
            ),
            None => None,
        };
        let metrics = Arc::new(Metrics::new(cfg.request_metrics, cfg.metrics_max_functions));
        let user_limits = Arc::new(UserLimitsTable::new(cfg.quotas.clone()));
        let (runtime, process): (Arc<dyn Runtime>, _) = match cfg.runtime {
            RuntimeKind::Process => {
                let deno = skiff_core::deno::locate(cfg.deno.as_deref()).await?;
                let rt = ProcessRuntime::new(
                    &cfg,
                    store.clone(),
                    deno,
                    user_limits.clone(),
                    metrics.clone(),
                )
                .await?;
                (rt.clone(), Some(rt))
            }
            RuntimeKind::Kubernetes => {
                let wakes = cfg.k8s_wake_url.as_deref().map(|url| {
                    tracing::info!(
                        url,
                        wait_secs = cfg.k8s_wake_wait.as_secs(),
                        "functions scaled to zero are woken"
                    );
                    Arc::new(wake::Wakes::new(
                        Arc::new(wake::HttpWakeCall::new(url)),
                        cfg.k8s_wake_wait,
                        Some(metrics.clone()),
                    ))
                });
                (
                    Arc::new(KubernetesRuntime::new(
                        cfg.k8s_namespace.clone(),
                        wakes,
                        cfg.k8s_connect_to,
                    )),
                    None,
                )
            }
        };
        {
            // Weak: the runtime may hold the metrics itself.
            let rt = Arc::downgrade(&runtime);
            metrics.set_instance_source(Box::new(move || rt.upgrade()?.instance_counts()));
        }
        let access_log = match runtime.owner_logs() {
            Some(logs) if cfg.request_metrics && cfg.access_log => {
                Some(AccessLog::start(logs, metrics.clone()).context("starting the access log")?)
            }
            _ => None,
        };
        let stats = StatsFlusher::new(
            store.clone(),
            metrics.clone(),
            stats_flush::new_router_id(),
            cfg.stats_flush,
        );
        let directory = Arc::new(Directory::default());
        let (mut syncer, initial) = Syncer::load(store, directory.clone())
            .await
            .context("loading the function directory")?;
        syncer
            .keep_user_limits(user_limits.clone())
            .await
            .context("loading the users' limits")?;
        tracing::info!(functions = directory.len(), "function directory loaded");
        runtime.sweep(directory.live_ids()).await;
        // What is live now: functions kept warm (min_instances) start.
        for u in &initial {
            runtime.apply(u);
        }
        let state = Arc::new(RouterState::new(
            &cfg,
            directory,
            runtime,
            user_limits,
            metrics,
            access_log,
        ));
        let (stop_tx, _) = watch::channel(false);
        let (sync_tx, sync_rx) = tokio::sync::mpsc::channel(64);
        Ok(Self {
            sync_rx,
            sync_tx,
            listener,
            port,
            state,
            syncer,
            poll_interval: cfg.poll_interval,
            grace: cfg.request_timeout + Duration::from_secs(1),
            stop_tx,
            process,
            metrics_listener,
            stats,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where `/metrics` is served (`None`: nowhere).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn handle(&self) -> RouterHandle {
        RouterHandle {
            stop_tx: self.stop_tx.clone(),
            sync_tx: self.sync_tx.clone(),
            state: self.state.clone(),
            process: self.process.clone(),
        }
    }

    /// Serves until stopped, then drains connections and stops every instance.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            mut syncer,
            poll_interval,
            grace,
            stop_tx,
            sync_tx,
            mut sync_rx,
            metrics_listener,
            stats,
            ..
        } = self;
        let mut stop = stop_tx.subscribe();
        let metrics_server = metrics_listener.map(|l| {
            tokio::spawn(private_listener::serve(
                l,
                state.metrics.clone(),
                Some(sync_tx.clone()),
                stop.clone(),
            ))
        });
        // The stats' last flush comes after the last request is answered.
        let (last_call_tx, last_call) = watch::channel(false);
        let stats = tokio::spawn(stats.run(last_call));
        let sync_state = state.clone();
        let mut sync_stop = stop.clone();
        let sync = tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut waiters = Vec::new();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    Some(w) = sync_rx.recv() => waiters.push(w),
                    _ = stopped(&mut sync_stop) => break,
                }
                // Requests that came together share this one poll.
                while let Ok(w) = sync_rx.try_recv() {
                    waiters.push(w);
                }
                let mut someone_gone = false;
                for update in syncer.poll().await {
                    if let directory::Update::Gone {
                        function_id,
                        user,
                        name,
                    } = &update
                    {
                        sync_state.limits.forget(*function_id);
                        sync_state
                            .metrics
                            .forget(*function_id, user.as_str(), name.as_str());
                        someone_gone = true;
                    }
                    sync_state.runtime.apply(&update);
                }
                if someone_gone {
                    let directory = &sync_state.directory;
                    sync_state.user_rate.retain(|u| directory.has_user(u));
                }
                for w in waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        });
        let reaper = state.runtime.maintenance_interval().map(|every| {
            let rt = state.runtime.clone();
            let mut reap_stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => rt.maintain(),
                        _ = stopped(&mut reap_stop) => break,
                    }
                }
            })
        });
        server::serve(listener, state.clone(), stop.clone(), grace).await;
        stopped(&mut stop).await;
        let _ = last_call_tx.send(true);
        let _ = stats.await;
        if let Some(m) = metrics_server {
            let _ = m.await;
        }
        let _ = sync.await;
        if let Some(r) = reaper {
            let _ = r.await;
        }
        state.runtime.shutdown().await;
        Ok(())
    }
}

#[cfg(test)]
mod fake_upstream_tests;
