//! The Kubernetes runtime: keeps each function's objects equal to what the
//! database says. One operation does it all, [`KubeRuntime::sync`]: under the
//! function's lock it re-reads the function from the database, then applies
//! its live version or, when it is gone, deletes its objects. Deploys, deletes
//! and the reconcile loop all go through it, so whichever runs last leaves the
//! newest state. Apply failures are recorded in the database (never returned
//! to the deploy) and retried by the reconcile loop.
//!
//! A configuration change or a rollback is a new live version like a deploy,
//! so it goes through the same sync: the env Secret and the Deployment are
//! re-rendered from that version's configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use kube::Client;
use skiff_core::fnconfig::SettingsPolicy;
use skiff_core::secrets::SecretsKey;
use skiff_core::store::{RuntimePhase, RuntimeState, RuntimeTarget, Store};

use super::apply::KubeApi;
use super::errors::KubeError;
use super::idle::{IdleAction, LastUse, decide};
use super::locks::KeyedLocks;
use super::objects::{FunctionSpec, VersionConfig, build};
use super::observed::Observed;
use super::settings::KubeSettings;
use super::state_watch::PodsSeen;

/// Versions whose code ConfigMap is kept: the live one, and the one before it
/// so pods of the previous version keep their code while a rollout replaces them.
const KEEP_VERSIONS: i64 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The live version's objects are applied.
    Applied { version: i64 },
    /// The apply failed; the error is recorded in the function's state.
    Failed { version: i64, error: String },
    /// The function is gone and so are its objects.
    Deleted,
    /// The function is gone but deleting its objects failed (retried by the
    /// reconcile loop, which finds them by label).
    DeleteFailed { error: String },
    /// The database could not be read or written; nothing was decided.
    StoreFailed { error: String },
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub applied: usize,
    pub failed: usize,
    pub deleted: usize,
    /// Functions scaled to zero for being idle (`SKIFF_K8S_IDLE_SECS`).
    pub scaled_to_zero: usize,
    pub errors: Vec<String>,
}

pub struct KubeRuntime {
    api: KubeApi,
    store: Store,
    settings: KubeSettings,
    locks: KeyedLocks,
    /// Opens the secrets that go into each function's env Secret.
    secrets_key: Option<SecretsKey>,
    /// The operator's per-function defaults (timeout, concurrency).
    policy: SettingsPolicy,
    /// The function pods the pod watch has reported (`state_watch`).
    pods: Mutex<PodsSeen>,
    /// Functions whose last apply failed: their state is that error, which
    /// the pods cannot clear (they may be the previous version's).
    apply_failed: Mutex<BTreeSet<i64>>,
    /// Scale to zero: the manager's start, and each function's last deploy
    /// or wake it saw (ms since the epoch), by function id.
    started: i64,
    touched: Mutex<BTreeMap<i64, i64>>,
    /// Functions this manager scaled to zero (and nothing started since),
    /// with the version live then.
    at_zero: Mutex<BTreeMap<i64, i64>>,
    /// Wake-ups done, by "user/function": a wake asked before one was done
    /// shares it instead of scaling again.
    wakes: Mutex<BTreeMap<String, u64>>,
}

/// What a wake did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeOutcome {
    /// This wake scaled the function to one replica.
    Scaled,
    /// Another wake, asked at the same time, did it.
    Shared,
    /// The pod watch sees a pod of the function: nothing to do.
    AlreadyUp,
}

#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    #[error("no such function")]
    NoSuchFunction,
    #[error("reading the function: {0}")]
    Store(String),
    #[error(transparent)]
    Kube(#[from] KubeError),
}

fn default_policy() -> SettingsPolicy {
    match skiff_core::settings::defaults() {
        Ok(p) => p,
        // Constants of core's fnconfig; its tests parse them.
        Err(e) => unreachable!("the settings policy's defaults do not parse: {e}"),
    }
}

impl KubeRuntime {
    /// A runtime with no secrets key (a version with secrets then fails to
    /// apply, loudly) and the default policy: see [`Self::with_function_config`].
    pub fn new(client: Client, store: Store, settings: KubeSettings) -> Self {
        Self {
            api: KubeApi::new(client, &settings.namespace, settings.api_timeout()),
            store,
            settings,
            locks: KeyedLocks::default(),
            secrets_key: None,
            policy: default_policy(),
            pods: Mutex::default(),
            apply_failed: Mutex::default(),
            started: skiff_core::time::now_millis(),
            touched: Mutex::default(),
            at_zero: Mutex::default(),
            wakes: Mutex::default(),
        }
    }

    /// The manager's `SKIFF_SECRETS_KEY` and its flattened `SettingsPolicy`.
    pub fn with_function_config(mut self, key: Option<SecretsKey>, policy: SettingsPolicy) -> Self {
        self.secrets_key = key;
        self.policy = policy;
        self
    }

    /// Connects with the in-cluster service account (or the local kubeconfig).
    pub async fn connect(store: Store, settings: KubeSettings) -> anyhow::Result<Self> {
        let client = Client::try_default()
            .await
            .map_err(|e| anyhow::anyhow!("connecting to the Kubernetes API: {e}"))?;
        Ok(Self::new(client, store, settings))
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(super) fn api(&self) -> &KubeApi {
        &self.api
    }

    /// Runs `f` on the pods the watch has reported.
    pub(super) fn pods_seen<R>(&self, f: impl FnOnce(&mut PodsSeen) -> R) -> R {
        f(&mut self.pods.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn mark_apply_failed(&self, function_id: i64, failed: bool) {
        let mut set = self
            .apply_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if failed {
            set.insert(function_id);
        } else {
            set.remove(&function_id);
        }
    }

    /// Records what the function's pods say of its live version (after a pod
    /// change the watch reported), unless its last apply failed. Under the
    /// function's lock, so it never interleaves with an apply.
    pub async fn record_observed(&self, user: &str, function: &str) {
        let _guard = self.locks.lock(&format!("{user}/{function}")).await;
        let target = match self.store.runtime_target(user, function).await {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(user, function, error = %e, "reading a function for its pod state failed");
                return;
            }
        };
        let failed = self
            .apply_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&target.function_id);
        if failed {
            return;
        }
        let observed = self.pods_seen(|p| p.observe(user, function, target.version));
        if let Err(e) = self.write_state(&target, &observed, false).await {
            tracing::warn!(user, function, error = %e, "recording a function's pod state failed");
        }
    }

    /// Writes `observed` for `t`'s version, only on change (unless `always`),
    /// so an idle reconcile pass or a pod event that changes nothing writes
    /// nothing.
    async fn write_state(
        &self,
        t: &RuntimeTarget,
        observed: &Observed,
        always: bool,
    ) -> Result<(), skiff_core::store::StoreError> {
        let before = self.store.runtime_state_by_id(t.function_id).await?;
        let unchanged = !always
            && before.as_ref().is_some_and(|s: &RuntimeState| {
                s.version == t.version && s.phase == observed.phase && s.error == observed.error
            });
        if unchanged {
            return Ok(());
        }
        self.store
            .set_runtime_state(
                t.function_id,
                t.version,
                observed.phase,
                observed.error.as_deref(),
            )
            .await
    }

    /// Brings one function's objects to what the database holds now.
    /// `announce` records "pending" before applying (after a deploy, so
    /// `GET /func/<name>` shows the new version is on its way).
    pub async fn sync(&self, user: &str, function: &str, announce: bool) -> SyncOutcome {
        let _guard = self.locks.lock(&format!("{user}/{function}")).await;
        match self.store.runtime_target(user, function).await {
            Err(e) => SyncOutcome::StoreFailed {
                error: e.to_string(),
            },
            Ok(None) => match self.api.delete_function(user, function).await {
                Ok(()) => SyncOutcome::Deleted,
                Err(e) => {
                    tracing::warn!(user, function, error = %e, "deleting a function's objects failed; will retry");
                    SyncOutcome::DeleteFailed {
                        error: e.to_string(),
                    }
                }
            },
            Ok(Some(target)) => self.apply_target(&target, announce).await,
        }
    }

    async fn apply_target(&self, t: &RuntimeTarget, announce: bool) -> SyncOutcome {
        if announce {
            // A deploy is a use: the idle clock starts again.
            self.touch(t.function_id);
        }
        if announce
            && let Err(e) = self
                .store
                .set_runtime_state(t.function_id, t.version, RuntimePhase::Pending, None)
                .await
        {
            return SyncOutcome::StoreFailed {
                error: e.to_string(),
            };
        }
        // A new version of a function at zero (a deploy, a rollback) starts
        // one pod of it, so its state says whether it loads: known from the
        // deploy and the Deployment's replicas (whoever scaled it down, this
        // manager before a restart included), or, for a pass retrying a
        // failed deploy, from what this manager scaled down. A failed
        // scale-up is retried with the apply by the next pass.
        let at_zero_before = |replicas: Option<i32>| {
            (announce && replicas == Some(0))
                || self
                    .zeroed_at(t.function_id)
                    .is_some_and(|v| v != t.version)
        };
        let result = match self.apply_version(t).await {
            Ok(replicas) if at_zero_before(replicas) => {
                let scaled = self.api.scale(&t.user, &t.name, 1).await;
                if scaled.is_ok() {
                    self.set_at_zero(t.function_id, None);
                }
                scaled
            }
            other => other.map(|_| ()),
        };
        self.mark_apply_failed(t.function_id, result.is_err());
        // Applied is not running: the pods say whether the version serves.
        let observed = match &result {
            Ok(()) => self.pods_seen(|p| p.observe(&t.user, &t.name, t.version)),
            Err(e) => {
                tracing::warn!(user = %t.user, function = %t.name, version = t.version, error = %e, "applying a function failed; will retry");
                Observed {
                    phase: RuntimePhase::Error,
                    error: Some(e.to_string()),
                }
            }
        };
        if let Err(e) = self.write_state(t, &observed, announce).await {
            return SyncOutcome::StoreFailed {
                error: e.to_string(),
            };
        }
        match observed.error {
            Some(error) if result.is_err() => SyncOutcome::Failed {
                version: t.version,
                error,
            },
            _ => SyncOutcome::Applied { version: t.version },
        }
    }

    /// Applies the version's objects and prunes old code; the Deployment's
    /// replicas as the server holds them (`None`: not known).
    async fn apply_version(&self, t: &RuntimeTarget) -> Result<Option<i32>, KubeError> {
        let Some(module) = self
            .store
            .version_module(t.function_id, t.version)
            .await
            .map_err(|e| KubeError::Store {
                version: t.version,
                detail: e.to_string(),
            })?
        else {
            // Deleted between the two reads; the next sync deletes the objects.
            return Ok(None);
        };
        let source = String::from_utf8(module.code)
            .map_err(|_| KubeError::SourceNotText { version: t.version })?;
        let Some(config) = self.version_config(t).await? else {
            return Ok(None);
        };
        let spec = FunctionSpec {
            user: &t.user,
            function: &t.name,
            version: t.version,
            source: &source,
            module_file: skiff_core::layout::Layout::module_file(module.bundled),
            config: &config,
        };
        let replicas = self
            .api
            .apply_function(&build(&self.settings, &spec))
            .await?;
        let keep: Vec<i64> = (0..KEEP_VERSIONS)
            .map(|back| t.version - back)
            .filter(|v| *v >= 1)
            .collect();
        self.api.prune_code(&t.user, &t.name, &keep).await?;
        Ok(replicas)
    }

    /// The version's env, opened secrets and settings; `None` when the
    /// version is gone (deleted between reads).
    async fn version_config(&self, t: &RuntimeTarget) -> Result<Option<VersionConfig>, KubeError> {
        let stored = self
            .store
            .instance_config(t.function_id, t.version)
            .await
            .map_err(|e| KubeError::Store {
                version: t.version,
                detail: e.to_string(),
            })?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let vars = match (&self.secrets_key, stored.sealed.is_empty()) {
            (_, true) => stored
                .config
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            (Some(key), false) => {
                stored
                    .open(key, t.function_id)
                    .map_err(|detail| KubeError::Secrets {
                        version: t.version,
                        detail,
                    })?
            }
            (None, false) => return Err(KubeError::NoSecretsKey { version: t.version }),
        };
        // What changes whenever the env file or the settings do, without a
        // value in clear: the stored config (env, secret names, settings) and
        // the sealed secrets (a new value is a new ciphertext).
        let mut identity = stored.config.to_stored().unwrap_or_default().into_bytes();
        for (name, sealed) in &stored.sealed {
            identity.push(0);
            identity.extend_from_slice(name.as_bytes());
            identity.push(0);
            identity.extend_from_slice(sealed);
        }
        Ok(Some(VersionConfig::new(
            &vars,
            stored.config.settings,
            &self.policy,
            &identity,
        )))
    }

    fn touch(&self, function_id: i64) {
        self.touched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(function_id, skiff_core::time::now_millis());
    }

    /// The version live when this manager scaled the function to zero, if
    /// it is at zero.
    fn zeroed_at(&self, function_id: i64) -> Option<i64> {
        self.at_zero
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&function_id)
            .copied()
    }

    fn set_at_zero(&self, function_id: i64, version: Option<i64>) {
        let mut map = self.at_zero.lock().unwrap_or_else(PoisonError::into_inner);
        match version {
            Some(v) => map.insert(function_id, v),
            None => map.remove(&function_id),
        };
    }

    /// Wakes `user`/`function` (a call came for it while it may be at zero):
    /// scales its Deployment to 1 unless the pod watch sees a pod of it.
    /// Wakes asked before one is done share it: the count of wakes done is
    /// read now, when asked, and the one that takes the function's lock first
    /// scales; the others find the count moved and do nothing. A wake is a
    /// use: the idle clock starts again.
    pub fn wake(
        self: &Arc<Self>,
        user: &str,
        function: &str,
    ) -> impl Future<Output = Result<WakeOutcome, WakeError>> + Send + 'static + use<> {
        let key = format!("{user}/{function}");
        let asked = self.wakes_done(&key);
        let (runtime, user, function) = (self.clone(), user.to_owned(), function.to_owned());
        async move {
            let _guard = runtime.locks.lock(&key).await;
            if runtime.wakes_done(&key) != asked {
                return Ok(WakeOutcome::Shared);
            }
            let target = match runtime.store.runtime_target(&user, &function).await {
                Ok(Some(t)) => t,
                Ok(None) => return Err(WakeError::NoSuchFunction),
                Err(e) => return Err(WakeError::Store(e.to_string())),
            };
            runtime.touch(target.function_id);
            let up = runtime.pods_seen(|p| p.has_pods(&user, &function));
            let outcome = if up == Some(true) {
                WakeOutcome::AlreadyUp
            } else {
                runtime.api.scale(&user, &function, 1).await?;
                tracing::info!(user, function, "woken: scaled to one");
                WakeOutcome::Scaled
            };
            runtime.set_at_zero(target.function_id, None);
            *runtime
                .wakes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key)
                .or_default() += 1;
            Ok(outcome)
        }
    }

    fn wakes_done(&self, key: &str) -> u64 {
        self.wakes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Scales to zero every function idle at `now` (ms since the epoch; see
    /// `idle::decide`), each under its lock; adds what it did to `report`.
    /// Nothing when scale to zero is off.
    pub async fn scale_idle(&self, now: i64, report: &mut ReconcileReport) {
        let Some(idle) = self.settings.idle_after() else {
            return;
        };
        let (targets, called) = match (
            self.store.runtime_targets().await,
            self.store.last_called_minutes().await,
        ) {
            (Ok(t), Ok(c)) => (t, c),
            (Err(e), _) | (_, Err(e)) => {
                report.errors.push(format!("reading last uses: {e}"));
                return;
            }
        };
        for t in targets {
            let _guard = self.locks.lock(&format!("{}/{}", t.user, t.name)).await;
            let touched = self
                .touched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&t.function_id)
                .copied()
                .unwrap_or(self.started);
            let last = LastUse {
                called_minute: called.get(&t.function_id).copied(),
                touched: touched.max(self.started),
            };
            let at_zero = self.zeroed_at(t.function_id).is_some();
            if decide(now, Some(idle), last, at_zero) != IdleAction::ScaleToZero {
                continue;
            }
            match self.api.scale(&t.user, &t.name, 0).await {
                Ok(()) => {
                    tracing::info!(user = %t.user, function = %t.name, "scaled to zero: idle");
                    self.set_at_zero(t.function_id, Some(t.version));
                    report.scaled_to_zero += 1;
                }
                // Its Deployment is not there (yet): the next pass tries again.
                Err(e) if e.code() == Some(404) => {}
                Err(e) => {
                    report.failed += 1;
                    report.errors.push(format!("{}/{}: {e}", t.user, t.name));
                }
            }
        }
    }

    /// One pass of the reconcile loop: applies every function in the database
    /// and deletes the objects of functions no longer there, then scales idle
    /// functions to zero.
    pub async fn reconcile_once(&self) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        // Listed BEFORE reading the database: a function created between the
        // two reads is then not in the listing, so it cannot look orphaned.
        let managed = match self.api.managed_functions().await {
            Ok(m) => Some(m),
            Err(e) => {
                report.errors.push(e.to_string());
                None
            }
        };
        let targets = match self.store.runtime_targets().await {
            Ok(t) => t,
            Err(e) => {
                report.errors.push(format!("reading the functions: {e}"));
                return report;
            }
        };
        let wanted: BTreeSet<(String, String)> = targets
            .iter()
            .map(|t| (t.user.clone(), t.name.clone()))
            .collect();
        let orphans = managed
            .unwrap_or_default()
            .into_iter()
            .filter(|pair| !wanted.contains(pair));
        let all = wanted.iter().cloned().chain(orphans);
        for (user, function) in all {
            match self.sync(&user, &function, false).await {
                SyncOutcome::Applied { .. } => report.applied += 1,
                SyncOutcome::Deleted => report.deleted += 1,
                SyncOutcome::Failed { error, .. }
                | SyncOutcome::DeleteFailed { error }
                | SyncOutcome::StoreFailed { error } => {
                    report.failed += 1;
                    report.errors.push(format!("{user}/{function}: {error}"));
                }
            }
        }
        self.scale_idle(skiff_core::time::now_millis(), &mut report)
            .await;
        report
    }
}
