//! What every handler can reach: the store, the token keys, the type checker,
//! the account rate limits, the configuration, the metrics, and the functions
//! service.

use std::sync::Arc;

use skiff_core::store::Store;
use skiff_core::tokens::TokenKeys;

use crate::config::ManagerConfig;
use crate::functions::Functions;
use crate::functions::logs::{FileLogs, SharedLogs};
use crate::metrics::Metrics;
use crate::rate_limit::AccountLimits;
use crate::runtime::SharedRuntime;
use crate::typecheck::TypeChecker;

pub struct AppState {
    pub store: Store,
    pub tokens: TokenKeys,
    pub checker: TypeChecker,
    pub config: ManagerConfig,
    pub limits: AccountLimits,
    /// Where functions run; `None` is the process runtime (the router starts
    /// instances itself). Told after every committed deploy and delete.
    pub runtime: Option<SharedRuntime>,
    /// Where functions' output is read: the data dir's files, unless the
    /// runtime keeps it elsewhere (Kubernetes: the pods).
    pub logs: SharedLogs,
    /// What `GET /metrics` shows (on its own listener).
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(
        store: Store,
        tokens: TokenKeys,
        checker: TypeChecker,
        config: ManagerConfig,
    ) -> Self {
        Self {
            metrics: Arc::new(Metrics::new(
                config.runtime == crate::config::RuntimeKind::Kubernetes,
            )),
            limits: AccountLimits::new(&config),
            logs: Arc::new(FileLogs::new(&config.data_dir)),
            store,
            tokens,
            checker,
            config,
            runtime: None,
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn with_runtime(mut self, runtime: Option<SharedRuntime>) -> Self {
        if let Some(logs) = runtime.as_ref().and_then(|rt| rt.log_source()) {
            self.logs = logs;
        }
        self.runtime = runtime;
        self
    }

    /// The functions service over this state.
    pub fn functions(&self) -> Functions<'_> {
        Functions {
            store: &self.store,
            checker: &self.checker,
            runtime: self.runtime.as_ref(),
            logs: self.logs.as_ref(),
            policy: &self.config.policy,
            secrets_key: &self.config.secrets_key,
        }
    }
}
