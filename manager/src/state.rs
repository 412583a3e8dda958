//! What every handler can reach: the store, the token keys, the type checker,
//! the login limiters and the configuration.

use std::time::Duration;

use skiff_core::store::Store;
use skiff_core::tokens::TokenKeys;

use crate::config::ManagerConfig;
use crate::rate_limit::Limiter;
use crate::runtime::SharedRuntime;
use crate::typecheck::TypeChecker;

pub struct AppState {
    pub store: Store,
    pub tokens: TokenKeys,
    pub checker: TypeChecker,
    pub config: ManagerConfig,
    pub login_by_user: Limiter,
    pub login_by_addr: Limiter,
    /// Where functions run; `None` is the process runtime (the router starts
    /// instances itself). Told after every committed deploy and delete.
    pub runtime: Option<SharedRuntime>,
}

impl AppState {
    pub fn new(
        store: Store,
        tokens: TokenKeys,
        checker: TypeChecker,
        config: ManagerConfig,
    ) -> Self {
        let window = Duration::from_secs(config.login_window_secs);
        Self {
            login_by_user: Limiter::new(config.login_limit_per_user, window),
            login_by_addr: Limiter::new(config.login_limit_per_addr, window),
            store,
            tokens,
            checker,
            config,
            runtime: None,
        }
    }

    pub fn with_runtime(mut self, runtime: Option<SharedRuntime>) -> Self {
        self.runtime = runtime;
        self
    }
}
